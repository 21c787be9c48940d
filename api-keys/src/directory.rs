//! The active keys in memory: checking a key costs a hash and a map lookup, never a database
//! round trip; a change anywhere reaches every process as soon as the registry notifies it, and
//! within [`KeyDirectory::REFRESH`] if that notification is lost.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use order_store::StoreError;
use parking_lot::RwLock;
use subtle::ConstantTimeEq;

use crate::identity::Caller;
use crate::key::ApiKey;
use crate::registry::{ClientRegistry, Credential};

/// The active keys, held in memory, so that checking a key costs a hash and a map lookup, never
/// a database round trip. They are reloaded when the registry says they changed (PostgreSQL's
/// `NOTIFY`: a key made, rotated or revoked anywhere takes effect here within a round trip),
/// and every [`KeyDirectory::REFRESH`] regardless, for a notification lost on the way. A key's
/// expiry (a rotation's grace) is checked at each request.
///
/// When each key was last presented is kept here (one atomic per key: memory bounded by the
/// keys, not the requests) and written to the registry at each reload.
///
/// When the registry cannot be read, the keys loaded last stay in force, but only for
/// `max_staleness`: past it every key is refused ([`crate::IdentityError::KeysStale`], 503), because a
/// key revoked meanwhile would otherwise keep working for as long as the outage lasts. It fails
/// closed, after a bound: a short blip of the registry's database costs nothing, a long one
/// stops the service from serving callers it can no longer vouch for.
pub struct KeyDirectory {
    registry: Arc<dyn ClientRegistry>,
    keys: RwLock<Arc<HashMap<String, Entry>>>,
    /// When the keys were last read from the registry.
    loaded_at: RwLock<std::time::Instant>,
    pub(crate) max_staleness: Duration,
    refresh: Duration,
}

/// How fresh a [`KeyDirectory`] keeps its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Freshness {
    /// How often the keys are reloaded without being told to (`AUTH_KEYS_REFRESH_MS`): the
    /// bound on a change whose notification was lost.
    pub refresh: Duration,
    /// How long the keys loaded last stay in force while the registry cannot be read
    /// (`AUTH_KEYS_MAX_STALENESS_MS`).
    pub max_staleness: Duration,
}

impl Default for Freshness {
    fn default() -> Self {
        Freshness {
            refresh: KeyDirectory::REFRESH,
            max_staleness: KeyDirectory::MAX_STALENESS,
        }
    }
}

/// A key in force, and when it was last presented here.
struct Entry {
    credential: Credential,
    /// Unix seconds of the last use here (0: none), and of the last one written to the registry.
    used: Arc<(AtomicI64, AtomicI64)>,
}

impl KeyDirectory {
    /// The default of `AUTH_KEYS_REFRESH_MS`: how often [`KeyDirectory::keep_fresh`] reloads
    /// the keys without being told to; a change whose notification was lost reaches every
    /// instance within this (plus one reload's time).
    pub const REFRESH: Duration = Duration::from_secs(2);

    /// The default of `AUTH_KEYS_MAX_STALENESS_MS`: how long keys loaded last stay in force
    /// while the registry cannot be read.
    pub const MAX_STALENESS: Duration = Duration::from_secs(30);

    /// Loads the active keys; fails if the registry cannot be read (a service should not start
    /// refusing everyone). Loaded keys stay in force for [`KeyDirectory::MAX_STALENESS`] without
    /// a successful refresh.
    pub async fn load(registry: Arc<dyn ClientRegistry>) -> Result<Arc<Self>, StoreError> {
        Self::load_with(registry, Freshness::default()).await
    }

    /// [`KeyDirectory::load`], kept as fresh as `freshness` says.
    pub async fn load_with(
        registry: Arc<dyn ClientRegistry>,
        freshness: Freshness,
    ) -> Result<Arc<Self>, StoreError> {
        let directory = Arc::new(KeyDirectory {
            registry,
            keys: RwLock::new(Arc::new(HashMap::new())),
            loaded_at: RwLock::new(std::time::Instant::now()),
            max_staleness: freshness.max_staleness,
            refresh: freshness.refresh,
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
        self.record_use().await;
        let credentials = self.registry.credentials().await?;
        let old = self.keys.read().clone();
        let keys = credentials
            .into_iter()
            .map(|credential| {
                // A key's use so far carries over from the previous load.
                let used = old
                    .get(&credential.key_id)
                    .map(|entry| entry.used.clone())
                    .unwrap_or_default();
                (credential.key_id.clone(), Entry { credential, used })
            })
            .collect();
        *self.keys.write() = Arc::new(keys);
        // As old as the read that produced them, not as the moment it returned.
        *self.loaded_at.write() = started;
        metrics::gauge!("auth_keys_age_seconds").set(0.0);
        Ok(())
    }

    /// Writes to the registry when keys were last presented here, if later than last written.
    /// A failure is logged and retried at the next reload.
    async fn record_use(&self) {
        let keys = self.keys.read().clone();
        let uses: Vec<(String, DateTime<Utc>)> = keys
            .values()
            .filter_map(|entry| {
                let (last, written) = &*entry.used;
                let last = last.load(Ordering::Relaxed);
                (last > written.load(Ordering::Relaxed))
                    .then(|| DateTime::from_timestamp(last, 0))
                    .flatten()
                    .map(|at| (entry.credential.key_id.clone(), at))
            })
            .collect();
        if uses.is_empty() {
            return;
        }
        match self.registry.record_use(&uses).await {
            Ok(()) => {
                for (id, at) in uses {
                    if let Some(entry) = keys.get(&id) {
                        entry.used.1.fetch_max(at.timestamp(), Ordering::Relaxed);
                    }
                }
            }
            Err(err) => tracing::warn!(%err, "when API keys were last used was not recorded"),
        }
    }

    /// Reloads when the registry says the keys changed, and every `refresh` (of its
    /// [`Freshness`]) regardless, until `stop` completes. When the registry cannot be read, the keys loaded
    /// last stay in force (logged), and the next reload tries again.
    pub async fn keep_fresh(self: Arc<Self>, stop: impl std::future::Future<Output = ()>) {
        let mut stop = std::pin::pin!(stop);
        let mut changes = self.registry.changes();
        loop {
            let changed = async {
                match changes.as_mut() {
                    Some(changes) => {
                        if changes.changed().await.is_err() {
                            std::future::pending::<()>().await
                        }
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(self.refresh) => {}
                _ = changed => {}
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

    /// The caller a presented key belongs to, or `None` (malformed, unknown, revoked,
    /// expired). The secret's hash is compared in constant time. Does not look at staleness
    /// ([`crate::Identity::resolve`] does).
    pub fn authenticate(&self, presented: &str) -> Option<Caller> {
        let key = ApiKey::parse(presented)?;
        let keys = self.keys.read().clone();
        let entry = keys.get(key.id())?;
        let credential = &entry.credential;
        if !bool::from(credential.key_hash.ct_eq(&key.hash())) {
            return None;
        }
        let now = Utc::now();
        if credential.expires_at.is_some_and(|at| at <= now) {
            return None;
        }
        let seconds = now.timestamp();
        if entry.used.0.load(Ordering::Relaxed) < seconds {
            entry.used.0.fetch_max(seconds, Ordering::Relaxed);
        }
        Some(Caller {
            client: credential.client.clone(),
            admin: credential.admin,
        })
    }
}
