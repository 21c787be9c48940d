//! # api-keys
//!
//! Who may call the buy-orders APIs: API keys, the registry clients live in, and the identity a
//! service resolves for each request. Everything about authentication is here, except the warp
//! filter that reads the two headers (`service_kit::caller`, HTTP plumbing with no domain).
//!
//! How it works, end to end:
//!
//! 1. An operator runs `buy-orders clients add shop-1`: the registry ([`ClientRegistry`]) stores
//!    the client with the SHA-256 of a fresh key's secret and prints the key ([`ApiKey`],
//!    `bo_<key id>_<secret>`) once.
//! 2. Each service loads the keys in force into a [`KeyDirectory`] at start-up and reloads them
//!    when the registry notifies a change (a key made, rotated or revoked reaches every
//!    process within a round trip), and every [`KeyDirectory::REFRESH`] regardless. A client
//!    may hold several keys (`clients rotate`, with a grace for the old ones); its orders are
//!    the client's, whichever key placed them. If the
//!    registry cannot be read for longer than `AUTH_KEYS_MAX_STALENESS_MS`, every key is refused
//!    (503 `keys_unavailable`): a revoked key never keeps working through an outage.
//! 3. For each request, `service_kit::caller` reads `Authorization: Bearer <key>` (and
//!    `X-Client-Id`) and asks [`Identity::resolve`] for the [`Caller`]: with `AUTH=required` the
//!    key's hash is compared in constant time, the header is ignored; with `AUTH=off` the
//!    header names the client.
//!
//! Modules: [`key`] (the key's format), [`registry`] (the trait and a registry in memory),
//! [`directory`] (the keys in memory), [`identity`] (a request's caller), [`postgres`] (the
//! registry on PostgreSQL, feature `postgres`), [`testing`] (feature `test-support`).
//!
//! ```
//! use std::sync::Arc;
//! use api_keys::{ClientRegistry, Identity, KeyDirectory, MemClientRegistry};
//! use order_domain::ClientId;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = Arc::new(MemClientRegistry::new());
//! let key = registry.add(&ClientId::parse("shop-1").unwrap(), false).await.unwrap();
//! let identity = Identity::Keys(KeyDirectory::load(registry).await.unwrap());
//! let caller = identity.resolve(Some(&key.reveal()), Some("someone-else")).unwrap();
//! assert_eq!(caller.client.as_str(), "shop-1"); // the key decides, never the header
//! assert!(identity.resolve(None, Some("shop-1")).is_err());
//! # }
//! ```

pub mod directory;
#[cfg(feature = "http")]
pub mod http;
pub mod identity;
pub mod key;
#[cfg(feature = "postgres")]
pub mod postgres;
pub mod registry;
#[cfg(feature = "test-support")]
pub mod testing;

pub use directory::{Freshness, KeyDirectory};
pub use identity::{Caller, Identity, IdentityError};
pub use key::{ApiKey, KeyHash};
#[cfg(feature = "postgres")]
pub use postgres::{start_identity, IdentityStartError, PgClientRegistry};
pub use registry::{
    ClientError, ClientRecord, ClientRegistry, Credential, KeyRecord, MemClientRegistry,
};

/// Describes api-keys' metric (`# HELP`).
pub fn describe_metrics() {
    metrics::describe_gauge!(
        "auth_keys_age_seconds",
        "Seconds since the API keys were last read from the registry (0 after each refresh)"
    );
}
