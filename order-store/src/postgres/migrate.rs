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

/// Applies the write store's migrations (`migrations/write`).
pub async fn migrate_write(pool: &PgPool) -> Result<(), StoreError> {
    run(sqlx::migrate!("./migrations/write"), pool).await
}

/// Applies the read table's migrations (`migrations/read`) to the database at `url`.
pub async fn migrate_read(url: &str) -> Result<(), StoreError> {
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(url)
        .await
        .map_err(super::unavailable)?;
    let result = run(sqlx::migrate!("./migrations/read"), &pool).await;
    pool.close().await;
    result
}
