//! Helpers for tests against the real PostgreSQL (feature `test-support`).

use crate::postgres::PgClientRegistry;
use crate::registry::ClientRegistry;

/// Creates an API client in the database at `url` (migrating it first) and returns its key:
/// the one line a service test needs before it can call with `Authorization: Bearer`.
pub async fn client_key(url: &str, name: &str, admin: bool) -> String {
    let registry = PgClientRegistry::open(&order_store::postgres::PgSettings::for_url(url))
        .await
        .unwrap_or_else(|e| panic!("cannot open the client registry: {e}"));
    let name = order_domain::ClientId::parse(name).expect("a valid client name");
    registry
        .add(&name, admin)
        .await
        .unwrap_or_else(|e| panic!("cannot add client {name}: {e}"))
        .reveal()
}
