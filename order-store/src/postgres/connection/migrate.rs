//! Versioned migrations, applied under sqlx's advisory lock, in the store's schema.

use sqlx::migrate::Migrator;
use sqlx::postgres::PgPoolOptions;
use sqlx::PgPool;

use crate::error::StoreError;
use crate::postgres::PgSettings;

/// Runs `migrator`, ignoring the other set's versions: the write (1xxx) and read (2xxx) sets may
/// share one database, and so one `_sqlx_migrations` table.
async fn run(mut migrator: Migrator, pool: &PgPool) -> Result<(), StoreError> {
    migrator.set_ignore_missing(true);
    migrator
        .run(pool)
        .await
        .map_err(|e| StoreError::from_database(e).context("migration failed"))
}

/// Applies the write store's migrations (`migrations/write`) to `DATABASE_URL`, in `PG_SCHEMA`
/// (created if missing), after bringing any migration applied in a superseded text up to date
/// (the three edited before their checksums were pinned).
pub async fn migrate_write(settings: &PgSettings) -> Result<(), StoreError> {
    let url = settings
        .write_url()
        .ok_or_else(|| StoreError::misconfigured("DATABASE_URL is not set"))?;
    on_own_connection(settings, url, sqlx::migrate!("./migrations/write")).await
}

/// A migration whose text was edited after it had been released (before the checksums were
/// pinned in `migration-checksums.txt`): a database migrated with that text has its checksum
/// in `_sqlx_migrations`, and sqlx would refuse to start on it. Such a database is brought to
/// what the current text gives (`repair`, run once, in the transaction that records the
/// current checksum), then migrated as usual.
struct Superseded {
    /// The migration's version.
    version: i64,
    /// The sqlx checksum (hex SHA-384) of the text it had, and the release that had it.
    checksum: &'static str,
    /// SQL that makes a database migrated with that text equal to one migrated with the
    /// current text (`None`: the texts differ in comments only).
    repair: Option<fn() -> String>,
}

/// Every released text of a write migration that is not its current one. Migrations are never
/// edited again (a test pins their checksums); this list only shrinks with the oldest releases
/// supported.
const SUPERSEDED: &[Superseded] = &[
    // 63c521d and 94be0bb: the trigger checked the satoshis before stepping aside inside a batch,
    // and knew no other aggregates (1007 relies on the current text).
    Superseded {
        version: 1005,
        checksum: "e30875058a20ac3e540ecf36591e9d29e0e358a1367b8c4e750de0cd5bfe2046b053fb9538216fa426b41afd3f623c07",
        repair: Some(repair_1005),
    },
    Superseded {
        version: 1005,
        checksum: "c16087d38b13a541b76604cc1472038082f5fd9d2bb8fe7295beaae35730d4164f320b7cc0c78aca1381aa4f930bce87",
        repair: Some(repair_1005),
    },
    // ea53bb2: loads planned afresh at each call (EXECUTE) instead of a cached lookup per id.
    Superseded {
        version: 1006,
        checksum: "6c641a69f8727a574a3fde43861731601cd2bb59024711e5868026b94d6d0fdad3974f23eee2fcac86b07d77f4c676b2",
        repair: Some(repair_1006),
    },
    // d371574: a comment, since measured.
    Superseded {
        version: 1009,
        checksum: "d7e97c15760325ac4076a6506f58a0146af126e3f961f4bcf81442d8c4327e4193b39c7e50a008ccc673a301b42676ef",
        repair: None,
    },
];

/// The current text of migration 1005 (pinned: it can no longer change).
const MIGRATION_1005: &str = include_str!("../../../migrations/write/1005_group_commit.sql");
/// The current text of migration 1006 (pinned).
const MIGRATION_1006: &str = include_str!("../../../migrations/write/1006_group_load.sql");

/// From `text`, the statement that starts with `start` and ends with the first `$$;` after it.
fn function_statement(text: &str, start: &str) -> String {
    let from = text
        .find(start)
        .expect("the pinned migration defines the function");
    let to = text[from..].find("$$;").expect("the function ends") + from + 3;
    text[from..to].to_owned()
}

/// 1005's trigger function as its current text defines it (the rest of 1005 is unchanged).
fn repair_1005() -> String {
    function_statement(
        MIGRATION_1005,
        "CREATE OR REPLACE FUNCTION buy_orders_event_inserted()",
    )
}

/// 1006's load function as its current text defines it.
fn repair_1006() -> String {
    function_statement(MIGRATION_1006, "CREATE FUNCTION buy_orders_load(").replacen(
        "CREATE FUNCTION",
        "CREATE OR REPLACE FUNCTION",
        1,
    )
}

/// Brings every migration applied with a superseded text ([`SUPERSEDED`]) to its current text
/// and checksum. Safe for processes starting together: the row's update is the lock, and only
/// the process whose update found the old checksum runs the repair.
async fn repair_superseded(migrator: &Migrator, pool: &PgPool) -> Result<(), StoreError> {
    let applied: Option<String> =
        sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations')::text")
            .fetch_one(pool)
            .await
            .map_err(crate::postgres::db_error)?;
    if applied.is_none() {
        return Ok(());
    }
    for superseded in SUPERSEDED {
        let Some(current) = migrator.iter().find(|m| m.version == superseded.version) else {
            continue;
        };
        let old = hex_decode(superseded.checksum);
        let mut tx = pool.begin().await.map_err(crate::postgres::db_error)?;
        let updated = sqlx::query(
            "UPDATE _sqlx_migrations SET checksum = $1 WHERE version = $2 AND checksum = $3",
        )
        .bind(current.checksum.as_ref())
        .bind(superseded.version)
        .bind(&old)
        .execute(&mut *tx)
        .await
        .map_err(crate::postgres::db_error)?;
        if updated.rows_affected() == 0 {
            continue;
        }
        if let Some(repair) = superseded.repair {
            // One statement each (`sqlx::raw_sql` here would make the start-up future of every
            // store not `Send` for all lifetimes).
            sqlx::query(&repair())
                .execute(&mut *tx)
                .await
                .map_err(|e| {
                    StoreError::from_database(e).context(format_args!(
                        "migration {} applied with a superseded text could not be repaired",
                        superseded.version
                    ))
                })?;
        }
        tx.commit().await.map_err(crate::postgres::db_error)?;
        tracing::warn!(
            version = superseded.version,
            "a migration applied with a superseded text was brought to its current text"
        );
    }
    Ok(())
}

/// Whether the server behind `pool` is a hot standby (in recovery): read-only, replaying its
/// primary. Nothing of ours writes there: migrations are checked instead of applied, the key
/// registry records no last use and listens for no notification (a standby delivers none).
pub async fn is_standby(pool: &sqlx::PgPool) -> Result<bool, StoreError> {
    sqlx::query_scalar("SELECT pg_is_in_recovery()")
        .fetch_one(pool)
        .await
        .map_err(crate::postgres::db_error)
}

/// On a hot standby: `Ok` when every migration of `migrator` reached it from the primary.
async fn check_replicated(migrator: &Migrator, pool: &sqlx::PgPool) -> Result<(), StoreError> {
    let applied: Vec<i64> =
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .map_err(|err| {
                StoreError::misconfigured(format!(
                    "this server is a read-only standby and its primary has never been migrated \
             (run `buy-orders migrate` there): {err}"
                ))
            })?;
    match migrator
        .iter()
        .find(|m| !m.migration_type.is_down_migration() && !applied.contains(&m.version))
    {
        None => Ok(()),
        Some(missing) => Err(StoreError::misconfigured(format!(
            "this server is a read-only standby and migration {} ({}) has not reached it: \
             migrate the primary (`buy-orders migrate`) and let the standby catch up",
            missing.version, missing.description
        ))),
    }
}

fn hex_decode(hex: &str) -> Vec<u8> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).expect("a hex checksum"))
        .collect()
}

/// Applies the read table's migrations (`migrations/read`) to `READ_DATABASE_URL` (else
/// `DATABASE_URL`), in `PG_SCHEMA` (created if missing).
pub async fn migrate_read(settings: &PgSettings) -> Result<(), StoreError> {
    let url = settings.read_url().ok_or_else(|| {
        StoreError::misconfigured("neither READ_DATABASE_URL nor DATABASE_URL is set")
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
    // The caller's acquire timeout, like every other pool: sqlx's default (30 s) made opening a
    // store against a closed port take 30 s whatever DB_ACQUIRE_TIMEOUT_MS said.
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(settings.acquire_timeout)
        .connect_with(
            crate::postgres::connection::config::sqlx_url_options(url)?.options([
                ("search_path", schema),
                crate::postgres::connection::config::ISOLATION,
                // sqlx's `CREATE TABLE IF NOT EXISTS _sqlx_migrations` is answered with a
                // NOTICE on every run after the first, which sqlx logs at INFO: noise for an
                // operator running `migrate`, and for every service starting.
                ("client_min_messages", "warning"),
            ]),
        )
        .await
        .map_err(crate::postgres::db_error)?;
    let result = async {
        // A hot standby is read-only and replays its primary's schema: nothing to apply there,
        // but a standby whose primary was not migrated to this version is refused, by name.
        if is_standby(&pool).await? {
            return check_replicated(&migrator, &pool).await;
        }
        // Created only when missing: `CREATE SCHEMA IF NOT EXISTS` would still ask for the
        // CREATE privilege on the database, which a role that owns its schema may not have.
        let exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&pool)
                .await
                .map_err(crate::postgres::db_error)?;
        if !exists {
            // The name is a parsed `PgSchema`: nothing in it needs quoting.
            sqlx::raw_sql(&format!("CREATE SCHEMA IF NOT EXISTS {schema}"))
                .execute(&pool)
                .await
                .map_err(crate::postgres::db_error)?;
        }
        repair_superseded(&migrator, &pool).await?;
        run(migrator, &pool).await
    }
    .await;
    pool.close().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The repairs are the current migrations' own function statements, whole.
    #[test]
    fn repairs_are_the_current_function_definitions() {
        let r1005 = repair_1005();
        assert!(MIGRATION_1005.contains(&r1005));
        assert!(r1005.ends_with("$$;") && r1005.contains("NEW.aggregate_type <> 'BuyOrder'"));
        let r1006 = repair_1006();
        assert!(r1006.starts_with("CREATE OR REPLACE FUNCTION buy_orders_load("));
        assert!(MIGRATION_1006.contains(&r1006.replacen("CREATE OR REPLACE", "CREATE", 1)));
        assert_eq!(hex_decode("00ff10"), vec![0, 255, 16]);
    }
}
