//! Who calls: `AUTH=required` checks the bearer key against the [`KeyDirectory`]; `AUTH=off`
//! takes the client `X-Client-Id` names. The service's HTTP filter (`service_kit::caller`)
//! reads the two headers and hands them here.

use std::sync::Arc;
use std::time::Duration;

use order_domain::{ClientId, ValueError};
use order_store::{Scope, StoreError};

use crate::directory::KeyDirectory;
use crate::registry::ClientRegistry;

/// Who is calling, once their key (or, with authentication off, their `X-Client-Id`) is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client: orders placed are theirs, idempotence keys are scoped to them.
    pub client: ClientId,
    /// An admin sees every client's orders.
    pub admin: bool,
}

/// What a caller may read: an admin every client's orders, anyone else their own.
impl From<&Caller> for Scope {
    fn from(caller: &Caller) -> Self {
        if caller.admin {
            Scope::All
        } else {
            Scope::Client(caller.client.clone())
        }
    }
}

/// How a service learns who calls it (`AUTH`).
#[derive(Clone)]
pub enum Identity {
    /// `AUTH=required`: `Authorization: Bearer <key>`, checked against the directory.
    Keys(Arc<KeyDirectory>),
    /// `AUTH=off`: no keys; the caller is whoever `X-Client-Id` names (`anonymous` if absent),
    /// and sees every order. For local use only.
    Off,
}

/// Why a caller could not be identified.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityError {
    /// No key, or a key that is malformed, unknown or revoked.
    #[error("a valid API key is required: Authorization: Bearer <key>")]
    Unauthenticated,
    /// With authentication off: an `X-Client-Id` that is not a valid client id.
    #[error("X-Client-Id: {0}")]
    BadClientId(ValueError),
    /// The keys could not be refreshed from the registry for longer than the staleness limit:
    /// no key is accepted until they are (a revoked key must not keep working).
    #[error("API keys cannot be checked right now (the key registry has not been read for {}s); retry later", .0.as_secs())]
    KeysStale(Duration),
}

impl Identity {
    /// The client every order belongs to, with authentication off, when `X-Client-Id` is absent.
    pub const ANONYMOUS: &'static str = "anonymous";

    /// Keys from `registry`, loaded now and kept as fresh as `freshness` says in the
    /// background until `stop`.
    pub async fn from_registry(
        registry: Arc<dyn ClientRegistry>,
        freshness: crate::directory::Freshness,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Identity, StoreError> {
        let directory = KeyDirectory::load_with(registry, freshness).await?;
        tokio::spawn(directory.clone().keep_fresh(stop));
        Ok(Identity::Keys(directory))
    }

    /// Who calls, from the bearer token and the `X-Client-Id` header (read only when off).
    pub fn resolve(
        &self,
        bearer: Option<&str>,
        client_header: Option<&str>,
    ) -> Result<Caller, IdentityError> {
        match self {
            Identity::Keys(directory) => {
                let age = directory.age();
                if age > directory.max_staleness {
                    return Err(IdentityError::KeysStale(age));
                }
                bearer
                    .and_then(|key| directory.authenticate(key))
                    .ok_or(IdentityError::Unauthenticated)
            }
            Identity::Off => {
                let client = ClientId::parse(client_header.unwrap_or(Self::ANONYMOUS))
                    .map_err(IdentityError::BadClientId)?;
                Ok(Caller {
                    client,
                    admin: true,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::ApiKey;
    use crate::registry::{ClientError, MemClientRegistry};

    #[test]
    fn keys_round_trip_and_hide_their_secret() {
        let key = ApiKey::generate();
        let text = key.reveal();
        assert!(text.starts_with("bo_"));
        assert_eq!(text.len(), 3 + 16 + 1 + 64);
        assert_eq!(ApiKey::parse(&text), Some(key.clone()));
        assert!(!format!("{key:?}").contains(&text[20..]));
        assert_ne!(ApiKey::generate(), key);
        for bad in [
            "",
            "bo_",
            &text[..text.len() - 1],
            &text.replace("bo_", "xx_"),
            &text.to_uppercase(),
            &format!("{text}0"),
        ] {
            assert_eq!(ApiKey::parse(bad), None, "{bad}");
        }
    }

    #[tokio::test]
    async fn the_directory_knows_active_keys_only() {
        let registry = Arc::new(MemClientRegistry::new());
        let shop = ClientId::parse("shop-1").unwrap();
        let key = registry.add(&shop, false).await.unwrap().reveal();
        let admin = registry
            .add(&ClientId::parse("ops").unwrap(), true)
            .await
            .unwrap()
            .reveal();
        assert!(matches!(
            registry.add(&shop, true).await,
            Err(ClientError::Exists(_))
        ));
        let directory = KeyDirectory::load(registry.clone()).await.unwrap();
        let identity = Identity::Keys(directory.clone());
        assert_eq!(
            identity.resolve(Some(&key), Some("someone-else")),
            Ok(Caller {
                client: shop.clone(),
                admin: false
            }),
            "X-Client-Id is ignored when keys are required"
        );
        assert!(identity.resolve(Some(&admin), None).unwrap().admin);
        assert_eq!(
            identity.resolve(None, Some("shop-1")),
            Err(IdentityError::Unauthenticated)
        );
        // Same id, another secret: refused.
        let forged = format!(
            "{}{}",
            &key[..key.len() - 1],
            if key.ends_with('0') { '1' } else { '0' }
        );
        assert_eq!(
            identity.resolve(Some(&forged), None),
            Err(IdentityError::Unauthenticated)
        );
        assert_eq!(registry.revoke(&shop).await, Ok(true));
        assert_eq!(registry.revoke(&shop).await, Ok(false));
        assert!(
            identity.resolve(Some(&key), None).is_ok(),
            "until refreshed"
        );
        directory.refresh().await.unwrap();
        assert_eq!(
            identity.resolve(Some(&key), None),
            Err(IdentityError::Unauthenticated)
        );
    }

    #[test]
    fn with_auth_off_the_header_names_the_client() {
        let caller = Identity::Off.resolve(Some("bo_junk"), None).unwrap();
        assert_eq!(caller.client.as_str(), Identity::ANONYMOUS);
        let caller = Identity::Off.resolve(None, Some("team-7")).unwrap();
        assert_eq!(caller.client.as_str(), "team-7");
        assert!(matches!(
            Identity::Off.resolve(None, Some("bad id")),
            Err(IdentityError::BadClientId(_))
        ));
    }
}
