//! Where clients and their key hashes live: the [`ClientRegistry`] trait, and a registry in
//! memory. The PostgreSQL one is [`crate::postgres::PgClientRegistry`] (feature `postgres`).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use order_domain::ClientId;
use order_store::StoreError;
use parking_lot::Mutex;

use crate::key::{ApiKey, KeyHash};

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
