//! The client registry in the write database: the table `api_clients`, created by order-store's
//! write migration `1003_clients.sql` (applied migrations never move; that file also creates the
//! cap's history, `btc_cap_changes`) and migrated with the rest of the write store.

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use order_domain::ClientId;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use order_store::postgres::{migrate_write, PgSettings};
use order_store::StoreError;

use crate::key::{ApiKey, KeyHash};
use crate::registry::{ClientError, ClientRecord, ClientRegistry, Credential};

/// Connections the registry keeps: it is read every few seconds, written by operators.
const POOL_SIZE: u32 = 2;

/// [`ClientRegistry`] on PostgreSQL (`DATABASE_URL`), shared by every process.
#[derive(Clone)]
pub struct PgClientRegistry {
    pool: PgPool,
}

impl PgClientRegistry {
    /// Connects to `DATABASE_URL` and applies the write migrations (the table lives there).
    pub async fn open(settings: &PgSettings) -> Result<Self, StoreError> {
        let url = settings.write_url().ok_or_else(|| {
            StoreError::misconfigured("DATABASE_URL is not set (API clients live there)")
        })?;
        migrate_write(settings).await?;
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(settings.sqlx_options(url)?)
            .await
            .map_err(StoreError::from_database)?;
        Ok(PgClientRegistry { pool })
    }

    /// A registry on an already migrated pool.
    pub fn with_pool(pool: PgPool) -> Self {
        PgClientRegistry { pool }
    }
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(format!("api_clients.{what}: {e}"))
}

fn name_of(row: &sqlx::postgres::PgRow) -> Result<ClientId, StoreError> {
    let name: String = row.try_get("name").map_err(|e| corrupt("name", e))?;
    ClientId::parse(&name).map_err(|e| corrupt("name", e))
}

#[async_trait]
impl ClientRegistry for PgClientRegistry {
    async fn add(&self, name: &ClientId, admin: bool) -> Result<ApiKey, ClientError> {
        let key = ApiKey::generate();
        let inserted = sqlx::query(
            "INSERT INTO api_clients (name, admin, key_id, key_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.as_str())
        .bind(admin)
        .bind(key.id())
        .bind(key.hash().as_slice())
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_database)?;
        if inserted.rows_affected() == 0 {
            return Err(ClientError::Exists(name.clone()));
        }
        Ok(key)
    }

    async fn list(&self) -> Result<Vec<ClientRecord>, ClientError> {
        let rows = sqlx::query(
            "SELECT name, admin, created_at, revoked_at FROM api_clients ORDER BY created_at, name",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_database)?;
        let record = |row: &sqlx::postgres::PgRow| -> Result<ClientRecord, StoreError> {
            Ok(ClientRecord {
                name: name_of(row)?,
                admin: row.try_get("admin").map_err(|e| corrupt("admin", e))?,
                created_at: row
                    .try_get::<DateTime<Utc>, _>("created_at")
                    .map_err(|e| corrupt("created_at", e))?,
                revoked_at: row
                    .try_get::<Option<DateTime<Utc>>, _>("revoked_at")
                    .map_err(|e| corrupt("revoked_at", e))?,
            })
        };
        Ok(rows.iter().map(record).collect::<Result<_, _>>()?)
    }

    async fn revoke(&self, name: &ClientId) -> Result<bool, ClientError> {
        let row = sqlx::query(
            "UPDATE api_clients SET revoked_at = coalesce(revoked_at, now()) WHERE name = $1 \
             RETURNING revoked_at = now() AS revoked_now",
        )
        .bind(name.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(StoreError::from_database)?
        .ok_or_else(|| ClientError::NotFound(name.clone()))?;
        Ok(row
            .try_get("revoked_now")
            .map_err(|e| corrupt("revoked_at", e))?)
    }

    async fn credentials(&self) -> Result<Vec<Credential>, StoreError> {
        let rows = sqlx::query(
            "SELECT name, admin, key_id, key_hash FROM api_clients WHERE revoked_at IS NULL",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(StoreError::from_database)?;
        rows.iter()
            .map(|row| {
                let hash: Vec<u8> = row
                    .try_get("key_hash")
                    .map_err(|e| corrupt("key_hash", e))?;
                Ok(Credential {
                    key_id: row.try_get("key_id").map_err(|e| corrupt("key_id", e))?,
                    key_hash: KeyHash::try_from(hash.as_slice())
                        .map_err(|e| corrupt("key_hash", e))?,
                    client: name_of(row)?,
                    admin: row.try_get("admin").map_err(|e| corrupt("admin", e))?,
                })
            })
            .collect()
    }
}

/// Why a service could not learn who calls it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IdentityStartError {
    /// `AUTH=required` without `DATABASE_URL`, where the registry lives.
    #[error(
        "AUTH=required needs DATABASE_URL (API clients live there, see `buy-orders clients`); \
         AUTH=off runs without keys, for local use only"
    )]
    NoRegistry,
    /// The registry could not be read.
    #[error("cannot read the API clients (DATABASE_URL): {0}")]
    Registry(#[from] StoreError),
}

impl IdentityStartError {
    /// A setting is missing (exit status 2), rather than the registry unreachable (1).
    pub fn exit_status(&self) -> u8 {
        match self {
            IdentityStartError::NoRegistry => 2,
            IdentityStartError::Registry(err) => err.exit_status(),
        }
    }
}

/// How a service learns who calls it, as `AUTH` asks: with `required`, the keys of the registry
/// on `DATABASE_URL`, refreshed until `stop` and refused once stale for `max_staleness`; with
/// `off`, [`crate::Identity::Off`], warned about. The one start-up path of every service.
pub async fn start_identity(
    required: bool,
    settings: &PgSettings,
    max_staleness: std::time::Duration,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<crate::Identity, IdentityStartError> {
    if !required {
        tracing::warn!(
            "AUTH=off: no API keys; X-Client-Id names the client and every caller sees every \
             order (local use only)"
        );
        return Ok(crate::Identity::Off);
    }
    if settings.database_url.is_none() {
        return Err(IdentityStartError::NoRegistry);
    }
    let registry = std::sync::Arc::new(PgClientRegistry::open(settings).await?);
    Ok(crate::Identity::from_registry(registry, max_staleness, stop).await?)
}
