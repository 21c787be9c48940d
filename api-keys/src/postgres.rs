//! The client registry in the write database: the tables `api_clients` and `api_keys`, created
//! by order-store's write migrations `1003_clients.sql` and `1011_api_keys.sql` (applied
//! migrations never move) and migrated with the rest of the write store.
//!
//! Every change notifies `api_keys` (`api_keys.<schema>` outside `public`) in its transaction,
//! so each service's [`crate::KeyDirectory`] reloads at once; its poll stays the fallback for a
//! notification lost while its session was down. Each change also keeps `api_clients`' key
//! columns the mirror of the client's newest key in force, which is all a service of the
//! previous version reads during a rolling upgrade (see the migration).

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use order_domain::ClientId;
use sqlx::postgres::PgPoolOptions;
use sqlx::{PgPool, Row};

use order_store::postgres::{migrate_write, PgSettings};
use order_store::StoreError;

use crate::key::{ApiKey, KeyHash};
use crate::registry::{ClientError, ClientRecord, ClientRegistry, Credential, KeyRecord};

/// Connections the registry keeps: it is read every few seconds, written by operators.
const POOL_SIZE: u32 = 2;

/// The longest grace `rotate` takes: far below what a timestamp can hold.
pub const MAX_GRACE: std::time::Duration = std::time::Duration::from_secs(366 * 24 * 3600);

/// [`ClientRegistry`] on PostgreSQL (`DATABASE_URL`), shared by every process.
#[derive(Clone)]
pub struct PgClientRegistry {
    pool: PgPool,
    answer_within: std::time::Duration,
    /// Ticks at each notification; the listening session starts with the first subscriber.
    changes: std::sync::Arc<std::sync::OnceLock<tokio::sync::watch::Sender<u64>>>,
    /// On a hot standby: read-only, and deaf to notifications (a standby delivers none), so
    /// keys are reloaded by the poll alone and last uses are recorded by the primary's services.
    standby: bool,
}

/// The channel changes of `schema`'s keys are notified on.
fn channel(schema: &str) -> String {
    order_store::postgres::schema_channel("api_keys", schema)
}

/// Tells every listening service that the keys changed, when `tx` commits.
async fn notify(tx: &mut sqlx::PgConnection) -> Result<(), StoreError> {
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(channel_of_session(tx).await?)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_database)?;
    Ok(())
}

async fn channel_of_session(tx: &mut sqlx::PgConnection) -> Result<String, StoreError> {
    let schema: String = sqlx::query_scalar("SELECT current_schema()")
        .fetch_one(&mut *tx)
        .await
        .map_err(StoreError::from_database)?;
    Ok(channel(&schema))
}

/// Gives `name` the key `key` (its hash).
async fn insert_key(
    tx: &mut sqlx::PgConnection,
    name: &ClientId,
    key: &ApiKey,
) -> Result<(), StoreError> {
    sqlx::query("INSERT INTO api_keys (key_id, client, key_hash) VALUES ($1, $2, $3)")
        .bind(key.id())
        .bind(name.as_str())
        .bind(key.hash().as_slice())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_database)?;
    Ok(())
}

/// Keeps `api_clients`' key columns the mirror of the client's newest key in force.
async fn mirror(tx: &mut sqlx::PgConnection, name: &ClientId) -> Result<(), StoreError> {
    sqlx::query("SELECT api_clients_mirror_keys($1)")
        .bind(name.as_str())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_database)?;
    Ok(())
}

/// Locks the client's row (so two operators' changes to one client are taken in turn) and
/// says whether it is revoked.
async fn lock_client(tx: &mut sqlx::PgConnection, name: &ClientId) -> Result<bool, ClientError> {
    let revoked: Option<bool> = sqlx::query_scalar(
        "SELECT revoked_at IS NOT NULL FROM api_clients WHERE name = $1 FOR UPDATE",
    )
    .bind(name.as_str())
    .fetch_optional(&mut *tx)
    .await
    .map_err(StoreError::from_database)?;
    revoked.ok_or_else(|| ClientError::NotFound(name.clone()))
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
        let standby = order_store::postgres::is_standby(&pool).await?;
        Ok(PgClientRegistry {
            pool,
            answer_within: settings.answer_deadline(),
            changes: Default::default(),
            standby,
        })
    }

    /// A registry on an already migrated pool.
    pub fn with_pool(pool: PgPool) -> Self {
        PgClientRegistry {
            pool,
            answer_within: std::time::Duration::from_secs(10),
            changes: Default::default(),
            standby: false,
        }
    }

    async fn begin(&self) -> Result<sqlx::Transaction<'static, sqlx::Postgres>, StoreError> {
        self.pool.begin().await.map_err(StoreError::from_database)
    }
}

async fn commit(tx: sqlx::Transaction<'static, sqlx::Postgres>) -> Result<(), StoreError> {
    tx.commit().await.map_err(StoreError::from_database)
}

fn key_record(row: &sqlx::postgres::PgRow) -> Result<KeyRecord, StoreError> {
    let time = |column: &str| {
        row.try_get::<Option<DateTime<Utc>>, _>(column)
            .map_err(|e| corrupt(column, e))
    };
    Ok(KeyRecord {
        key_id: row.try_get("key_id").map_err(|e| corrupt("key_id", e))?,
        created_at: row
            .try_get::<DateTime<Utc>, _>("created_at")
            .map_err(|e| corrupt("created_at", e))?,
        expires_at: time("expires_at")?,
        revoked_at: time("revoked_at")?,
        last_used_at: time("last_used_at")?,
    })
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> StoreError {
    StoreError::corrupt(format!("API clients' {what}: {e}"))
}

fn name_of(row: &sqlx::postgres::PgRow) -> Result<ClientId, StoreError> {
    let name: String = row.try_get("name").map_err(|e| corrupt("name", e))?;
    ClientId::parse(&name).map_err(|e| corrupt("name", e))
}

#[async_trait]
impl ClientRegistry for PgClientRegistry {
    async fn add(&self, name: &ClientId, admin: bool) -> Result<ApiKey, ClientError> {
        let key = ApiKey::generate();
        let mut tx = self.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO api_clients (name, admin, key_id, key_hash) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name) DO NOTHING",
        )
        .bind(name.as_str())
        .bind(admin)
        .bind(key.id())
        .bind(key.hash().as_slice())
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_database)?;
        if inserted.rows_affected() == 0 {
            return Err(ClientError::Exists(name.clone()));
        }
        insert_key(&mut tx, name, &key).await?;
        notify(&mut tx).await?;
        commit(tx).await?;
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
        let mut tx = self.begin().await?;
        if lock_client(&mut tx, name).await? {
            return Ok(false);
        }
        for statement in [
            "UPDATE api_clients SET revoked_at = now() WHERE name = $1",
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) WHERE client = $1",
        ] {
            sqlx::query(statement)
                .bind(name.as_str())
                .execute(&mut *tx)
                .await
                .map_err(StoreError::from_database)?;
        }
        notify(&mut tx).await?;
        commit(tx).await?;
        Ok(true)
    }

    async fn rotate(
        &self,
        name: &ClientId,
        grace: std::time::Duration,
    ) -> Result<ApiKey, ClientError> {
        if grace > MAX_GRACE {
            return Err(ClientError::GraceTooLong(grace));
        }
        let grace_ms =
            i64::try_from(grace.as_millis()).map_err(|_| ClientError::GraceTooLong(grace))?;
        let key = ApiKey::generate();
        let mut tx = self.begin().await?;
        if lock_client(&mut tx, name).await? {
            return Err(ClientError::Revoked(name.clone()));
        }
        // The keys in force now stop: at once, or at the end of the grace (a key already
        // expiring sooner keeps its sooner end).
        sqlx::query(
            "UPDATE api_keys \
                SET revoked_at = CASE WHEN $2 = 0 THEN now() END, \
                    expires_at = CASE WHEN $2 = 0 THEN expires_at \
                                      ELSE least(coalesce(expires_at, 'infinity'), \
                                                 now() + $2 * interval '1 millisecond') END \
              WHERE client = $1 AND revoked_at IS NULL \
                AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(name.as_str())
        .bind(grace_ms)
        .execute(&mut *tx)
        .await
        .map_err(StoreError::from_database)?;
        insert_key(&mut tx, name, &key).await?;
        mirror(&mut tx, name).await?;
        notify(&mut tx).await?;
        commit(tx).await?;
        Ok(key)
    }

    async fn keys(&self, name: &ClientId) -> Result<Vec<KeyRecord>, ClientError> {
        let mut tx = self.begin().await?;
        lock_client(&mut tx, name).await?;
        let rows = sqlx::query(
            "SELECT key_id, created_at, expires_at, revoked_at, last_used_at FROM api_keys \
              WHERE client = $1 ORDER BY created_at, key_id",
        )
        .bind(name.as_str())
        .fetch_all(&mut *tx)
        .await
        .map_err(StoreError::from_database)?;
        Ok(rows.iter().map(key_record).collect::<Result<_, _>>()?)
    }

    async fn revoke_key(&self, name: &ClientId, key_id: &str) -> Result<bool, ClientError> {
        let mut tx = self.begin().await?;
        lock_client(&mut tx, name).await?;
        let revoked_now: Option<bool> = sqlx::query_scalar(
            "UPDATE api_keys SET revoked_at = coalesce(revoked_at, now()) \
              WHERE client = $1 AND key_id = $2 RETURNING revoked_at = now()",
        )
        .bind(name.as_str())
        .bind(key_id)
        .fetch_optional(&mut *tx)
        .await
        .map_err(StoreError::from_database)?;
        let revoked_now = revoked_now.ok_or_else(|| ClientError::KeyNotFound {
            client: name.clone(),
            key_id: key_id.to_owned(),
        })?;
        if revoked_now {
            mirror(&mut tx, name).await?;
            notify(&mut tx).await?;
        }
        commit(tx).await?;
        Ok(revoked_now)
    }

    async fn record_use(&self, uses: &[(String, DateTime<Utc>)]) -> Result<(), StoreError> {
        if uses.is_empty() || self.standby {
            return Ok(());
        }
        let (ids, times): (Vec<&str>, Vec<DateTime<Utc>>) =
            uses.iter().map(|(id, at)| (id.as_str(), *at)).unzip();
        sqlx::query(
            "UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.at) \
               FROM unnest($1::text[], $2::timestamptz[]) AS u(key_id, at) \
              WHERE k.key_id = u.key_id",
        )
        .bind(&ids)
        .bind(&times)
        .execute(&self.pool)
        .await
        .map_err(StoreError::from_database)?;
        Ok(())
    }

    fn changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        if self.standby {
            return None;
        }
        let sender = self.changes.get_or_init(|| {
            let (sender, _) = tokio::sync::watch::channel(0_u64);
            let (pool, answer_within, ticks) =
                (self.pool.clone(), self.answer_within, sender.clone());
            tokio::spawn(async move {
                let closed = {
                    let ticks = ticks.clone();
                    async move { ticks.closed().await }
                };
                order_store::postgres::listen(
                    pool,
                    channel,
                    answer_within,
                    // A notification, or a (re)connection after which one may have been
                    // missed: either way, reload.
                    |_| ticks.send_modify(|n| *n = n.wrapping_add(1)),
                    closed,
                )
                .await
            });
            sender
        });
        Some(sender.subscribe())
    }

    async fn credentials(&self) -> Result<Vec<Credential>, StoreError> {
        let rows = sqlx::query(
            "SELECT c.name, c.admin, k.key_id, k.key_hash, k.expires_at \
               FROM api_keys k JOIN api_clients c ON c.name = k.client \
              WHERE c.revoked_at IS NULL AND k.revoked_at IS NULL \
                AND (k.expires_at IS NULL OR k.expires_at > now())",
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
                    expires_at: row
                        .try_get("expires_at")
                        .map_err(|e| corrupt("expires_at", e))?,
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
/// on `DATABASE_URL`, kept as fresh as `freshness` says until `stop`; with
/// `off`, [`crate::Identity::Off`], warned about. The one start-up path of every service.
pub async fn start_identity(
    required: bool,
    settings: &PgSettings,
    freshness: crate::directory::Freshness,
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
    Ok(crate::Identity::from_registry(registry, freshness, stop).await?)
}
