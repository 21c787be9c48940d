//! Who may call the APIs: API keys, the registry where clients live, and the in-process
//! [`KeyDirectory`] that checks a key with no database round trip.
//!
//! A key reads `bo_<key id>_<secret>`: the `bo_` prefix lets secret scanners recognise it, the
//! key id (64 random bits, public) finds the client, and the secret (256 random bits) proves the
//! caller holds the key. Only the SHA-256 of the secret is stored, and it is compared in constant
//! time. A key is shown once, when its client is created.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use order_domain::{ClientId, ValueError};
use parking_lot::{Mutex, RwLock};
use rand::RngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::error::StoreError;

/// Bytes of randomness in a key's public id.
const ID_BYTES: usize = 8;
/// Bytes of randomness in a key's secret.
const SECRET_BYTES: usize = 32;

/// An API key. `Debug` shows only its public id; [`ApiKey::reveal`] gives the whole text, once,
/// to the operator who created it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: String,
    secret: [u8; SECRET_BYTES],
}

/// The SHA-256 of a key's secret: what the registry stores.
pub type KeyHash = [u8; 32];

impl ApiKey {
    /// What every key starts with.
    pub const PREFIX: &'static str = "bo_";

    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        ApiKey {
            id: hex(&id),
            secret,
        }
    }

    /// Reads `bo_<16 hex>_<64 hex>`; anything else is no key.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(Self::PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let is_hex = |s: &str, bytes: usize| {
            s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !is_hex(id, ID_BYTES) || !is_hex(secret, SECRET_BYTES) {
            return None;
        }
        let mut bytes = [0u8; SECRET_BYTES];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&secret[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ApiKey {
            id: id.to_owned(),
            secret: bytes,
        })
    }

    /// The public part that finds the client.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The SHA-256 of the secret part.
    pub fn hash(&self) -> KeyHash {
        Sha256::digest(self.secret).into()
    }

    /// The whole key, to hand to the client once. Never log it.
    pub fn reveal(&self) -> String {
        format!("{}{}_{}", Self::PREFIX, self.id, hex(&self.secret))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}{}_***)", Self::PREFIX, self.id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Who is calling, once their key (or, with authentication off, their `X-Client-Id`) is known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The client: orders placed are theirs, idempotence keys are scoped to them.
    pub client: ClientId,
    /// An admin sees every client's orders.
    pub admin: bool,
}

/// What the directory needs to check a key: the active key of one client.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    /// The key's public id.
    pub key_id: String,
    /// The SHA-256 of its secret.
    pub key_hash: KeyHash,
    /// Whose key it is.
    pub client: ClientId,
    /// Whether that client is an admin.
    pub admin: bool,
}

/// A client as `clients list` shows it: never its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRecord {
    /// Its name, which its orders carry.
    pub name: ClientId,
    /// Whether it sees every client's orders.
    pub admin: bool,
    /// When it was created.
    pub created_at: DateTime<Utc>,
    /// When its key was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// Why a registry operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// A client of that name exists (names are never reused, even once revoked).
    #[error("a client named {0} exists already (names are never reused)")]
    Exists(ClientId),
    /// No client of that name.
    #[error("no client named {0}")]
    NotFound(ClientId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Where clients and their key hashes live.
#[async_trait]
pub trait ClientRegistry: Send + Sync {
    /// Creates a client with a fresh key and returns the key (the only time it is known).
    async fn add(&self, name: &ClientId, admin: bool) -> Result<ApiKey, ClientError>;
    /// Every client, oldest first.
    async fn list(&self) -> Result<Vec<ClientRecord>, ClientError>;
    /// Revokes a client's key; `Ok(false)` if it was revoked already.
    async fn revoke(&self, name: &ClientId) -> Result<bool, ClientError>;
    /// The keys that are not revoked.
    async fn credentials(&self) -> Result<Vec<Credential>, StoreError>;
}

/// A registry in memory (tests, and embedding without a database).
#[derive(Default)]
pub struct MemClientRegistry {
    clients: Mutex<Vec<(ClientRecord, Credential)>>,
}

impl MemClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }
}

#[async_trait]
impl ClientRegistry for MemClientRegistry {
    async fn add(&self, name: &ClientId, admin: bool) -> Result<ApiKey, ClientError> {
        let mut clients = self.clients.lock();
        if clients.iter().any(|(record, _)| &record.name == name) {
            return Err(ClientError::Exists(name.clone()));
        }
        let key = ApiKey::generate();
        let record = ClientRecord {
            name: name.clone(),
            admin,
            created_at: Utc::now(),
            revoked_at: None,
        };
        let credential = Credential {
            key_id: key.id().to_owned(),
            key_hash: key.hash(),
            client: name.clone(),
            admin,
        };
        clients.push((record, credential));
        Ok(key)
    }

    async fn list(&self) -> Result<Vec<ClientRecord>, ClientError> {
        Ok(self.clients.lock().iter().map(|(r, _)| r.clone()).collect())
    }

    async fn revoke(&self, name: &ClientId) -> Result<bool, ClientError> {
        let mut clients = self.clients.lock();
        let (record, _) = clients
            .iter_mut()
            .find(|(record, _)| &record.name == name)
            .ok_or_else(|| ClientError::NotFound(name.clone()))?;
        if record.revoked_at.is_some() {
            return Ok(false);
        }
        record.revoked_at = Some(Utc::now());
        Ok(true)
    }

    async fn credentials(&self) -> Result<Vec<Credential>, StoreError> {
        Ok(self
            .clients
            .lock()
            .iter()
            .filter(|(record, _)| record.revoked_at.is_none())
            .map(|(_, credential)| credential.clone())
            .collect())
    }
}

/// The active keys, held in memory and refreshed from the registry every few seconds, so that
/// checking a key costs a hash and a map lookup, never a database round trip. A key created or
/// revoked elsewhere takes effect here at the next refresh.
///
/// When the registry cannot be read, the keys loaded last stay in force, but only for
/// `max_staleness`: past it every key is refused ([`IdentityError::KeysStale`], 503), because a
/// key revoked meanwhile would otherwise keep working for as long as the outage lasts. It fails
/// closed, after a bound: a short blip of the registry's database costs nothing, a long one
/// stops the service from serving callers it can no longer vouch for.
pub struct KeyDirectory {
    registry: Arc<dyn ClientRegistry>,
    keys: RwLock<Arc<HashMap<String, Credential>>>,
    /// When the keys were last read from the registry.
    loaded_at: RwLock<std::time::Instant>,
    max_staleness: Duration,
}

impl KeyDirectory {
    /// How often [`KeyDirectory::keep_fresh`] reloads the keys: a revocation reaches every
    /// instance within this (plus one reload's time).
    pub const REFRESH: Duration = Duration::from_secs(2);

    /// The default of `AUTH_KEYS_MAX_STALENESS_MS`: how long keys loaded last stay in force
    /// while the registry cannot be read.
    pub const MAX_STALENESS: Duration = Duration::from_secs(30);

    /// Loads the active keys; fails if the registry cannot be read (a service should not start
    /// refusing everyone). Loaded keys stay in force for [`KeyDirectory::MAX_STALENESS`] without
    /// a successful refresh.
    pub async fn load(registry: Arc<dyn ClientRegistry>) -> Result<Arc<Self>, StoreError> {
        Self::load_with(registry, Self::MAX_STALENESS).await
    }

    /// [`KeyDirectory::load`], the keys in force for `max_staleness` without a refresh.
    pub async fn load_with(
        registry: Arc<dyn ClientRegistry>,
        max_staleness: Duration,
    ) -> Result<Arc<Self>, StoreError> {
        let directory = Arc::new(KeyDirectory {
            registry,
            keys: RwLock::new(Arc::new(HashMap::new())),
            loaded_at: RwLock::new(std::time::Instant::now()),
            max_staleness,
        });
        directory.refresh().await?;
        Ok(directory)
    }

    /// How long ago the keys were last read from the registry.
    pub fn age(&self) -> Duration {
        self.loaded_at.read().elapsed()
    }

    /// Reloads the active keys.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let started = std::time::Instant::now();
        let keys = self
            .registry
            .credentials()
            .await?
            .into_iter()
            .map(|credential| (credential.key_id.clone(), credential))
            .collect();
        *self.keys.write() = Arc::new(keys);
        // As old as the read that produced them, not as the moment it returned.
        *self.loaded_at.write() = started;
        metrics::gauge!("auth_keys_age_seconds").set(0.0);
        Ok(())
    }

    /// Reloads every [`KeyDirectory::REFRESH`] until `stop` completes. When the registry cannot
    /// be read, the keys loaded last stay in force (logged), and the next reload tries again.
    pub async fn keep_fresh(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        loop {
            tokio::select! {
                _ = tokio::time::sleep(Self::REFRESH) => {}
                _ = &mut stop => return,
            }
            if let Err(err) = self.refresh().await {
                let age = self.age();
                metrics::gauge!("auth_keys_age_seconds").set(age.as_secs_f64());
                if age > self.max_staleness {
                    tracing::error!(%err, age_s = age.as_secs(), "API keys not refreshed for longer than AUTH_KEYS_MAX_STALENESS_MS; every key is refused");
                } else {
                    tracing::warn!(%err, age_s = age.as_secs(), "API keys not refreshed; the last loaded stay in force");
                }
            }
        }
    }

    /// The caller a presented key belongs to, or `None` (malformed, unknown, revoked). The
    /// secret's hash is compared in constant time. Does not look at staleness
    /// ([`Identity::resolve`] does).
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let key = ApiKey::parse(presented)?;
        let keys = self.keys.read().clone();
        let credential = keys.get(key.id())?;
        bool::from(credential.key_hash.ct_eq(&key.hash())).then(|| Caller {
            client: credential.client.clone(),
            admin: credential.admin,
        })
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

    /// Keys from `registry`, loaded now and refreshed in the background until `stop`; in force
    /// for `max_staleness` without a successful refresh.
    pub async fn from_registry(
        registry: Arc<dyn ClientRegistry>,
        max_staleness: Duration,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Result<Identity, StoreError> {
        let directory = KeyDirectory::load_with(registry, max_staleness).await?;
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
