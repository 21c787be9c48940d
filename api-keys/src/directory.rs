//! The active keys in memory: checking a key costs a hash and a map lookup, never a database
//! round trip; a revocation anywhere reaches every process within [`KeyDirectory::REFRESH`].

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use order_store::StoreError;
use parking_lot::RwLock;
use subtle::ConstantTimeEq;

use crate::identity::Caller;
use crate::key::ApiKey;
use crate::registry::{ClientRegistry, Credential};

/// The active keys, held in memory and refreshed from the registry every few seconds, so that
/// checking a key costs a hash and a map lookup, never a database round trip. A key created or
/// revoked elsewhere takes effect here at the next refresh.
///
/// When the registry cannot be read, the keys loaded last stay in force, but only for
/// `max_staleness`: past it every key is refused ([`crate::IdentityError::KeysStale`], 503), because a
/// key revoked meanwhile would otherwise keep working for as long as the outage lasts. It fails
/// closed, after a bound: a short blip of the registry's database costs nothing, a long one
/// stops the service from serving callers it can no longer vouch for.
pub struct KeyDirectory {
    registry: Arc<dyn ClientRegistry>,
    keys: RwLock<Arc<HashMap<String, Credential>>>,
    /// When the keys were last read from the registry.
    loaded_at: RwLock<std::time::Instant>,
    pub(crate) max_staleness: Duration,
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
    /// ([`crate::Identity::resolve`] does).
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
