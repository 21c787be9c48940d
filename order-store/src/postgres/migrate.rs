//! Versioned migrations, applied under sqlx's advisory lock.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

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

/// Applies the write store's migrations (`migrations/write`) to the database at `url`.
pub async fn migrate_write(url: &str) -> Result<(), StoreError> {
    on_own_connection(url, sqlx::migrate!("./migrations/write")).await
}

/// Applies the read table's migrations (`migrations/read`) to the database at `url`.
pub async fn migrate_read(url: &str) -> Result<(), StoreError> {
    on_own_connection(url, sqlx::migrate!("./migrations/read")).await
}

/// Runs `migrator` on a connection of its own, without the services' statement and lock
/// timeouts: an index over a large table may take longer, and the migrator waits on its advisory
/// lock while another process migrates.
async fn on_own_connection(url: &str, migrator: Migrator) -> Result<(), StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(super::unavailable)?;
    let result = run(migrator, &pool).await;
    pool.close().await;
    result
}
