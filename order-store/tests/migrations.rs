//! Released migrations never change, and a database migrated at any earlier release upgrades
//! cleanly, against the real PostgreSQL.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::*;
use sqlx::migrate::Migrator;

fn crate_dir() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `migration-checksums.txt`: name → pinned checksum.
fn pinned() -> BTreeMap<String, String> {
    std::fs::read_to_string(crate_dir().join("migration-checksums.txt"))
        .unwrap()
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, sum) = l.split_once(' ').unwrap();
            (name.to_owned(), sum.trim().to_owned())
        })
        .collect()
}

/// Every migration of the crate has the checksum it was released with: editing a released
/// migration (which makes every database migrated with it refuse to start) fails here, and so
/// does a new migration not yet pinned.
#[tokio::test]
async fn every_released_migration_keeps_its_checksum() {
    let pinned = pinned();
    let mut seen = 0;
    for set in ["write", "read"] {
        let migrator = Migrator::new(crate_dir().join("migrations").join(set))
            .await
            .unwrap();
        for migration in migrator.iter() {
            let name = format!(
                "{}_{}",
                migration.version,
                migration.description.replace(' ', "_")
            );
            let Some(sum) = pinned.get(&name) else {
                panic!("migration {name} is not pinned in migration-checksums.txt");
            };
            assert_eq!(
                &hex(&migration.checksum),
                sum,
                "migration {name} changed after its release: put the change in a new migration"
            );
            seen += 1;
        }
    }
    assert_eq!(seen, pinned.len(), "a pinned migration is missing");
}

/// The write migrations as a release had them: the current files up to `last`, with the
/// superseded texts (`tests/superseded/<name>.<release>.sql`) of `release` in place.
fn release(dir: &Path, last: i64, superseded: &[&str]) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    for entry in std::fs::read_dir(crate_dir().join("migrations/write")).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_str().unwrap().to_owned();
        let version: i64 = name.split('_').next().unwrap().parse().unwrap();
        if version <= last {
            std::fs::copy(&path, dir.join(&name)).unwrap();
        }
    }
    for old in superseded {
        let (name, _) = old.split_once('.').unwrap();
        std::fs::copy(
            crate_dir()
                .join("tests/superseded")
                .join(format!("{old}.sql")),
            dir.join(format!("{name}.sql")),
        )
        .unwrap();
    }
    dir.to_owned()
}

/// The definitions of the store's functions, to compare two databases.
async fn functions(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as(
        "SELECT p.proname::text, pg_get_functiondef(p.oid) FROM pg_proc p \
         WHERE p.pronamespace = 'public'::regnamespace AND p.proname LIKE 'buy_orders%' \
         ORDER BY 1",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

/// A database migrated at each earlier release (the write migrations as they were then, edited
/// texts included) opens with this release's code: it is migrated, its functions are exactly
/// those of a fresh database, and it takes orders. Before, a database migrated with an earlier
/// text of 1005, 1006 or 1009 failed sqlx's checksum at every start.
#[tokio::test]
async fn a_database_migrated_at_each_earlier_release_upgrades_cleanly() {
    let fresh = TestDb::create().await;
    PgEventStore::open(&PgSettings::for_url(fresh.url()), BtcCap::DEFAULT)
        .await
        .unwrap();
    let fresh_pool = sqlx::PgPool::connect(fresh.url()).await.unwrap();
    let expected = functions(&fresh_pool).await;
    let releases: &[(&str, i64, &[&str])] = &[
        ("before group commit", 1004, &[]),
        ("63c521d", 1005, &["1005_group_commit.63c521d"]),
        (
            "ea53bb2",
            1006,
            &["1005_group_commit.63c521d", "1006_group_load.ea53bb2"],
        ),
        ("94be0bb", 1006, &["1005_group_commit.94be0bb"]),
        ("b4060de", 1007, &[]),
        ("b722b13", 1008, &[]),
        ("d371574", 1009, &["1009_positions_are_buy_orders.d371574"]),
    ];
    let scratch = std::env::temp_dir().join(format!("bo-releases-{}", uuid::Uuid::new_v4()));
    for (name, last, superseded) in releases {
        let db = TestDb::create().await;
        let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
        let dir = release(&scratch.join(name), *last, superseded);
        let mut then = Migrator::new(dir).await.unwrap();
        then.set_ignore_missing(true);
        then.run(&pool)
            .await
            .unwrap_or_else(|e| panic!("{name}: {e}"));

        let settings = PgSettings::for_url(db.url());
        let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
            .await
            .unwrap_or_else(|e| panic!("release {name} does not upgrade: {e}"));
        PgReadModel::open(&settings).await.unwrap();
        // again: nothing left to repair
        PgEventStore::open(&settings, BtcCap::DEFAULT)
            .await
            .unwrap();
        assert_eq!(functions(&pool).await, expected, "release {name}");
        let prices: price_feed::FixedSource = "USD=50000".parse().unwrap();
        let writer = CqrsOrderWriter::new(
            store.clone(),
            BuyOrderServices::new(std::sync::Arc::new(prices)),
        );
        writer
            .place(order_domain::testing::order_for("upgraded", "10"))
            .await
            .unwrap_or_else(|e| panic!("release {name}: {e}"));
        assert_eq!(store.head().await.unwrap(), Position(1), "release {name}");
        pool.close().await;
    }
    let _ = std::fs::remove_dir_all(scratch);
}

/// Where `schema/write.sql` comes from: the write database's constraints, indexes, functions
/// and triggers, each as PostgreSQL prints it, in a stable order.
const CURRENT_WRITE_SCHEMA: &str = "
SELECT string_agg(definition, E'\n\n' ORDER BY kind, name) FROM (
    SELECT 1 AS kind, c.relname || '.' || con.conname AS name,
           'ALTER TABLE ' || c.relname || ' ADD CONSTRAINT ' || con.conname || ' '
               || pg_get_constraintdef(con.oid) || ';' AS definition
      FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
     WHERE con.connamespace = 'public'::regnamespace AND con.contype IN ('c', 'p', 'u', 'x')
       AND c.relname <> '_sqlx_migrations'
    UNION ALL
    SELECT 2, tablename || '.' || indexname, indexdef || ';'
      FROM pg_indexes
     WHERE schemaname = 'public' AND tablename <> '_sqlx_migrations'
       AND indexname NOT IN (SELECT conname FROM pg_constraint
                              WHERE connamespace = 'public'::regnamespace)
    UNION ALL
    SELECT 3, p.proname, pg_get_functiondef(p.oid) || ';'
      FROM pg_proc p WHERE p.pronamespace = 'public'::regnamespace
    UNION ALL
    SELECT 4, t.tgname, pg_get_triggerdef(t.oid) || ';'
      FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
     WHERE NOT t.tgisinternal AND c.relnamespace = 'public'::regnamespace
) AS current_form";

/// `schema/write.sql` is the write store as the migrations leave it today: the append
/// function, the trigger, the ledger's `CHECK` (the cap) and every index, in one readable
/// file, rather than spread over the migrations that each redefined them. Generated from a
/// freshly migrated database; `UPDATE_SCHEMA=1 cargo test -p order-store --test migrations`
/// rewrites it, and this test fails whenever a migration changes it without the file following.
#[tokio::test]
async fn the_current_write_schema_file_is_what_the_migrations_make() {
    let db = TestDb::create().await;
    order_store::postgres::migrate_write(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let body: String = sqlx::query_scalar(CURRENT_WRITE_SCHEMA)
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    let text = format!(
        "-- The write store as the migrations in migrations/write leave it: constraints, indexes,\n\
         -- functions and triggers, as PostgreSQL prints them. Generated; do not edit. Change a\n\
         -- migration, then: UPDATE_SCHEMA=1 cargo test -p order-store --test migrations\n\n{body}\n"
    );
    let path = crate_dir().join("schema").join("write.sql");
    if std::env::var_os("UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} is not what the migrations make; run UPDATE_SCHEMA=1 cargo test -p order-store --test migrations",
        path.display()
    );
    for enforced in [
        "sold_sats <= cap_sats",
        "buy_orders_append",
        "events_position_and_cap",
    ] {
        assert!(
            text.contains(enforced),
            "{enforced} missing from schema/write.sql"
        );
    }
}
