//! The registry on the real PostgreSQL: what every service relies on when `AUTH=required`.
//! Each test gets a database of its own (`TestDb`).

use std::sync::Arc;

use api_keys::{
    ClientError, ClientRegistry, Identity, IdentityError, KeyDirectory, PgClientRegistry,
};
use order_domain::ClientId;
use order_store::postgres::{PgSchema, PgSettings};
use order_store::testing::TestDb;

fn name(text: &str) -> ClientId {
    ClientId::parse(text).unwrap()
}

#[tokio::test]
async fn clients_are_added_listed_and_revoked_and_the_directory_follows() {
    let db = TestDb::create().await;
    let registry = Arc::new(
        PgClientRegistry::open(&PgSettings::for_url(db.url()))
            .await
            .unwrap(),
    );
    let key = registry.add(&name("shop-1"), false).await.unwrap().reveal();
    registry.add(&name("ops"), true).await.unwrap();
    assert_eq!(
        registry.add(&name("shop-1"), true).await,
        Err(ClientError::Exists(name("shop-1")))
    );
    let listed = registry.list().await.unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|c| (c.name.as_str(), c.admin))
            .collect::<Vec<_>>(),
        [("shop-1", false), ("ops", true)]
    );
    let directory = KeyDirectory::load(registry.clone()).await.unwrap();
    let identity = Identity::Keys(directory.clone());
    assert_eq!(
        identity.resolve(Some(&key), None).unwrap().client,
        name("shop-1")
    );

    assert_eq!(registry.revoke(&name("shop-1")).await, Ok(true));
    assert_eq!(registry.revoke(&name("shop-1")).await, Ok(false));
    assert_eq!(
        registry.revoke(&name("nobody")).await,
        Err(ClientError::NotFound(name("nobody")))
    );
    directory.refresh().await.unwrap();
    assert_eq!(
        identity.resolve(Some(&key), None),
        Err(IdentityError::Unauthenticated)
    );
    assert!(
        registry.list().await.unwrap()[0].revoked_at.is_some(),
        "a revoked client is still listed, with when"
    );
    // Names are never reused, even once revoked.
    assert!(matches!(
        registry.add(&name("shop-1"), false).await,
        Err(ClientError::Exists(_))
    ));
}

#[tokio::test]
async fn the_registry_lives_in_the_stores_schema_and_speaks_tls_when_asked() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(&format!("{}?sslmode=require", db.url()))
        .in_schema(PgSchema::parse("shop_a").unwrap());
    let registry = PgClientRegistry::open(&settings).await.unwrap();
    registry.add(&name("over-tls"), false).await.unwrap();

    let pool = sqlx::PgPool::connect(&format!("{}?sslmode=disable", db.url()))
        .await
        .unwrap();
    let (schema, plain): (String, i64) = sqlx::query_as(
        "SELECT (SELECT table_schema::text FROM information_schema.tables \
                  WHERE table_name = 'api_clients'), \
                (SELECT count(*) FROM pg_stat_activity a JOIN pg_stat_ssl s USING (pid) \
                  WHERE a.datname = current_database() AND a.pid <> pg_backend_pid() \
                    AND NOT s.ssl)",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(
        schema, "shop_a",
        "api_clients sits beside the store's tables"
    );
    assert_eq!(plain, 0, "the registry's sessions are encrypted");
    pool.close().await;
}
