//! Versioned migrations, applied under sqlx's advisory lock, in the store's schema.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use super::PgSettings;
use crate::error::StoreError;

/// Runs `migrator`, ignoring the other set's versions: the write (1xxx) and read (2xxx) sets may
/// share one database, and so one `_sqlx_migrations` table.
async fn run(mut migrator: Migrator, pool: &PgPool) -> Result<(), StoreError> {
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))
}

/// Applies the write store's migrations (`migrations/write`) to `DATABASE_URL`, in `PG_SCHEMA`
/// (created if missing).
pub async fn migrate_write(settings: &PgSettings) -> Result<(), StoreError> {
    let url = settings
        .database_url
        .as_deref()
        .ok_or_else(|| StoreError::Unavailable("DATABASE_URL is not set".into()))?;
    on_own_connection(settings, url, sqlx::migrate!("./migrations/write")).await
}

/// Applies the read table's migrations (`migrations/read`) to `READ_DATABASE_URL` (else
/// `DATABASE_URL`), in `PG_SCHEMA` (created if missing).
pub async fn migrate_read(settings: &PgSettings) -> Result<(), StoreError> {
    let url = settings.read_url().ok_or_else(|| {
        StoreError::Unavailable("neither READ_DATABASE_URL nor DATABASE_URL is set".into())
    })?;
    on_own_connection(settings, url, sqlx::migrate!("./migrations/read")).await
}

/// Runs `migrator` on a connection of its own, without the services' statement and lock
/// timeouts (an index over a large table may take longer, and the migrator waits on its advisory
/// lock while another process migrates), with `search_path` set to the schema, so the
/// migrations, and sqlx's own `_sqlx_migrations`, land there: each schema has its own history.
/// It runs at READ COMMITTED like every other session: two processes migrating a database whose
/// default is `serializable` must not fail each other's start-up.
async fn on_own_connection(
    settings: &PgSettings,
    url: &str,
    migrator: Migrator,
) -> Result<(), StoreError> {
    let schema = settings.schema.as_str();
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(
            super::config::sqlx_url_options(url)?
                .options([("search_path", schema), super::config::ISOLATION]),
        )
        .await
        .map_err(super::unavailable)?;
    let result = async {
        // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` would still ask for the
        // CREATE privilege on the database, which a role that owns its schema may not have.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&pool)
                .await
                .map_err(super::unavailable)?;
        if !exists {
            // The name is a parsed `PgSchema`: nothing in it needs quoting.
            sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&pool)
                .await
                .map_err(super::unavailable)?;
        }
        run(migrator, &pool).await
    }
    .await;
    pool.close().await;
    result
}
