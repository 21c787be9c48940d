//! Where clients and their key hashes live: the [`ClientRegistry`] trait, and a registry in
//! memory. The PostgreSQL one is [`crate::postgres::PgClientRegistry`] (feature `postgres`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use order_domain::ClientId;
use order_store::StoreError;
use parking_lot::Mutex;

use crate::key::{ApiKey, KeyHash};

/// What the directory needs to check a key: one key in force of one client.
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
    /// When it stops working, if it is being rotated out (`clients rotate --grace`): checked
    /// at each request, not only when the keys are reloaded.
    pub expires_at: Option<DateTime<Utc>>,
}

/// One key of a client as `clients keys` shows it: never its secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRecord {
    /// Its public id (the part after `bo_`).
    pub key_id: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// When it stops (stopped) working, if it was rotated out with a grace.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
    /// When a request last presented it (recorded every few seconds, not per request).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl KeyRecord {
    /// Whether it is in force at `now`.
    pub fn in_force(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|at| at > now)
    }
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
    /// The client is revoked: it gets no new key.
    #[error("client {0} is revoked (a revoked client gets no new key)")]
    Revoked(ClientId),
    /// The client has no key of that id.
    #[error("client {client} has no key {key_id}")]
    KeyNotFound {
        /// The client.
        client: ClientId,
        /// The key id asked for.
        key_id: String,
    },
    /// The grace asked for cannot be represented (it is bounded well below that).
    #[error("grace of {0:?} is too long")]
    GraceTooLong(std::time::Duration),
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
    /// Revokes a client and every key it has; `Ok(false)` if it was revoked already.
    async fn revoke(&self, name: &ClientId) -> Result<bool, ClientError>;
    /// Gives the client a new key and returns it (the only time it is known). Its other keys
    /// in force stop working after `grace` (at once when zero: revoked). Two rotations at once
    /// are taken one after the other: the second rotates out the first's key.
    async fn rotate(
        &self,
        name: &ClientId,
        grace: std::time::Duration,
    ) -> Result<ApiKey, ClientError>;
    /// The client's keys, oldest first, never their secrets.
    async fn keys(&self, name: &ClientId) -> Result<Vec<KeyRecord>, ClientError>;
    /// Revokes one key of the client, the others unchanged; `Ok(false)` if it was revoked
    /// already.
    async fn revoke_key(&self, name: &ClientId, key_id: &str) -> Result<bool, ClientError>;
    /// The keys in force (their clients not revoked, the keys neither revoked nor expired).
    async fn credentials(&self) -> Result<Vec<Credential>, StoreError>;
    /// Records when keys were last presented (a batch, every few seconds); unknown ids are
    /// ignored, and a time older than the one recorded changes nothing.
    async fn record_use(&self, uses: &[(String, DateTime<Utc>)]) -> Result<(), StoreError>;
    /// A signal that the keys changed, where the registry can give one (PostgreSQL: `NOTIFY`):
    /// it ticks after each change, and after each reconnection of the session it listens on
    /// (notifications sent meanwhile were lost). `None`: the directory only polls.
    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        None
    }
}

/// A registry in memory (tests, and embedding without a database).
#[derive(Default)]
pub struct MemClientRegistry {
    state: Mutex<MemState>,
    changed: Option<tokio::sync::watch::Sender<u64>>,
}

#[derive(Default)]
struct MemState {
    clients: Vec<ClientRecord>,
    /// Every key ever made, with its client and hash.
    keys: Vec<(ClientId, KeyHash, KeyRecord)>,
}

impl MemClientRegistry {
    /// An empty registry.
    pub fn new() -> Self {
        MemClientRegistry {
            state: Mutex::default(),
            changed: Some(tokio::sync::watch::channel(0).0),
        }
    }

    fn changed(&self) {
        if let Some(changed) = &self.changed {
            changed.send_modify(|n| *n = n.wrapping_add(1));
        }
    }

    fn new_key(state: &mut MemState, name: &ClientId) -> ApiKey {
        let key = ApiKey::generate();
        state.keys.push((
            name.clone(),
            key.hash(),
            KeyRecord {
                key_id: key.id().to_owned(),
                created_at: Utc::now(),
                expires_at: None,
                revoked_at: None,
                last_used_at: None,
            },
        ));
        key
    }
}

impl MemState {
    fn client(&mut self, name: &ClientId) -> Result<&mut ClientRecord, ClientError> {
        self.clients
            .iter_mut()
            .find(|record| &record.name == name)
            .ok_or_else(|| ClientError::NotFound(name.clone()))
    }
}

#[async_trait]
impl ClientRegistry for MemClientRegistry {
    async fn add(&self, name: &ClientId, admin: bool) -> Result<ApiKey, ClientError> {
        let key = {
            let mut state = self.state.lock();
            if state.clients.iter().any(|record| &record.name == name) {
                return Err(ClientError::Exists(name.clone()));
            }
            state.clients.push(ClientRecord {
                name: name.clone(),
                admin,
                created_at: Utc::now(),
                revoked_at: None,
            });
            Self::new_key(&mut state, name)
        };
        self.changed();
        Ok(key)
    }

    async fn list(&self) -> Result<Vec<ClientRecord>, ClientError> {
        Ok(self.state.lock().clients.clone())
    }

    async fn revoke(&self, name: &ClientId) -> Result<bool, ClientError> {
        let now = Utc::now();
        let revoked = {
            let mut state = self.state.lock();
            let record = state.client(name)?;
            if record.revoked_at.is_some() {
                return Ok(false);
            }
            record.revoked_at = Some(now);
            for (_, _, key) in state.keys.iter_mut().filter(|(c, _, _)| c == name) {
                key.revoked_at.get_or_insert(now);
            }
            true
        };
        self.changed();
        Ok(revoked)
    }

    async fn rotate(
        &self,
        name: &ClientId,
        grace: std::time::Duration,
    ) -> Result<ApiKey, ClientError> {
        let grace =
            chrono::Duration::from_std(grace).map_err(|_| ClientError::GraceTooLong(grace))?;
        let now = Utc::now();
        let until = now
            .checked_add_signed(grace)
            .ok_or(ClientError::GraceTooLong(
                grace.to_std().unwrap_or_default(),
            ))?;
        let key = {
            let mut state = self.state.lock();
            if state.client(name)?.revoked_at.is_some() {
                return Err(ClientError::Revoked(name.clone()));
            }
            for (_, _, key) in state
                .keys
                .iter_mut()
                .filter(|(c, _, key)| c == name && key.in_force(now))
            {
                if grace.is_zero() {
                    key.revoked_at = Some(now);
                } else {
                    key.expires_at = Some(key.expires_at.map_or(until, |at| at.min(until)));
                }
            }
            Self::new_key(&mut state, name)
        };
        self.changed();
        Ok(key)
    }

    async fn keys(&self, name: &ClientId) -> Result<Vec<KeyRecord>, ClientError> {
        let mut state = self.state.lock();
        state.client(name)?;
        Ok(state
            .keys
            .iter()
            .filter(|(c, _, _)| c == name)
            .map(|(_, _, key)| key.clone())
            .collect())
    }

    async fn revoke_key(&self, name: &ClientId, key_id: &str) -> Result<bool, ClientError> {
        let revoked = {
            let mut state = self.state.lock();
            state.client(name)?;
            let (_, _, key) = state
                .keys
                .iter_mut()
                .find(|(c, _, key)| c == name && key.key_id == key_id)
                .ok_or_else(|| ClientError::KeyNotFound {
                    client: name.clone(),
                    key_id: key_id.to_owned(),
                })?;
            if key.revoked_at.is_some() {
                return Ok(false);
            }
            key.revoked_at = Some(Utc::now());
            true
        };
        self.changed();
        Ok(revoked)
    }

    async fn credentials(&self) -> Result<Vec<Credential>, StoreError> {
        let now = Utc::now();
        let state = self.state.lock();
        Ok(state
            .keys
            .iter()
            .filter(|(_, _, key)| key.in_force(now))
            .filter_map(|(client, hash, key)| {
                let record = state.clients.iter().find(|r| &r.name == client)?;
                record.revoked_at.is_none().then(|| Credential {
                    key_id: key.key_id.clone(),
                    key_hash: *hash,
                    client: client.clone(),
                    admin: record.admin,
                    expires_at: key.expires_at,
                })
            })
            .collect())
    }

    async fn record_use(&self, uses: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        let mut state = self.state.lock();
        for (key_id, at) in uses {
            if let Some((_, _, key)) = state.keys.iter_mut().find(|(_, _, k)| &k.key_id == key_id) {
                key.last_used_at = Some(key.last_used_at.map_or(*at, |last| last.max(*at)));
            }
        }
        Ok(())
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        self.changed
            .as_ref()
            .map(tokio::sync::watch::Sender::subscribe)
    }
}
