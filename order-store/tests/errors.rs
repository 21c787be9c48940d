//! What a store error tells its caller, against the real PostgreSQL: the class (retry, fix a
//! setting, fix a statement, look at the data), the database's SQLSTATE, and the driver's error
//! kept as the source.

use std::error::Error;
use std::time::Duration;

use async_trait::async_trait;
use order_domain::*;
use order_store::postgres::Transaction;
use order_store::postgres::{PgEventStore, PgProjection, PgReadModel, PgSettings, Projection};
use order_store::testing::{writer, OutageProxy, TestDb};
use order_store::*;

fn pg_addr() -> std::net::SocketAddr {
    "127.0.0.1:5432".parse().unwrap()
}

fn quick(url: &str) -> PgSettings {
    let mut settings = PgSettings::for_url(url);
    settings.acquire_timeout = Duration::from_millis(500);
    settings
}

/// Both sides' open, with `url`: the write store's and the read table's errors.
async fn open_both(url: &str) -> [StoreError; 2] {
    let settings = quick(url);
    let write = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .expect_err("the write store refuses to open");
    let read = PgReadModel::open(&settings)
        .await
        .expect_err("the read table refuses to open");
    [write, read]
}

#[tokio::test]
async fn a_missing_database_is_a_configuration_mistake_with_its_sqlstate() {
    let _up = TestDb::create().await; // the server is there; the database is not
    for err in open_both("postgres://postgres@127.0.0.1:5432/no_such_database_here").await {
        assert!(matches!(err, StoreError::Misconfigured(_)), "{err:?}");
        assert_eq!(
            err.sql_state(),
            Some(SqlState::INVALID_CATALOG_NAME),
            "{err:?}"
        );
        assert_eq!(err.sql_class(), Some(SqlClass::InvalidCatalogName));
        assert!(!err.is_retryable());
        assert!(
            err.source().is_some(),
            "the driver's error is kept: {err:?}"
        );
        assert!(err.to_string().contains("no_such_database_here"), "{err}");
    }
}

#[tokio::test]
async fn a_url_the_store_cannot_honour_is_a_configuration_mistake_on_both_sides() {
    let db = TestDb::create().await;
    let with = |query: &str| format!("{}?{query}", db.url());
    for (url, says) in [
        (with("sslmode=verify-ca"), "verify-ca"),
        (with("sslmode=bogus"), "sslmode"),
        ("mysql://root@127.0.0.1:3306/test".to_owned(), "postgres"),
    ] {
        for err in open_both(&url).await {
            assert!(
                matches!(err, StoreError::Misconfigured(_)),
                "{url}: {err:?}"
            );
            assert!(!err.is_retryable());
            assert!(err.to_string().contains(says), "{url}: {err}");
        }
    }
}

#[tokio::test]
async fn nothing_listening_is_an_outage_to_retry() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    for err in open_both(&format!("postgres://postgres@127.0.0.1:{port}/none")).await {
        assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
        assert!(err.is_retryable());
        assert_eq!(err.sql_state(), None);
    }
}

/// A projection of the user's that inserts the same key twice.
struct Twice;

#[async_trait]
impl Projection for Twice {
    fn name(&self) -> &str {
        "twice"
    }
    fn tables(&self) -> Vec<String> {
        vec!["twice".into()]
    }
    async fn create(&self, tx: &Transaction<'_>, _live: &str) -> Result<(), StoreError> {
        tx.batch_execute("CREATE TABLE IF NOT EXISTS twice (k text PRIMARY KEY)")
            .await
            .map_err(StoreError::from_database)
    }
    async fn apply(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
        for _ in events {
            tx.execute("INSERT INTO twice VALUES ('same')", &[])
                .await
                .map_err(StoreError::from_database)?;
        }
        Ok(())
    }
}

#[tokio::test]
async fn a_unique_violation_in_a_projection_of_yours_is_rejected_with_its_sqlstate() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let writer = writer(&store);
    writer
        .place(order_domain::testing::order("1.00"))
        .await
        .unwrap();
    writer
        .place(order_domain::testing::order("2.00"))
        .await
        .unwrap();
    let projection = PgProjection::open(&settings, Twice).await.unwrap();
    let events = store.read_after(Position::ZERO, 10).await.unwrap();

    let err = projection.apply(&events).await.unwrap_err();

    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert_eq!(err.sql_state(), Some(SqlState::UNIQUE_VIOLATION));
    assert_eq!(
        err.sql_class(),
        Some(SqlClass::IntegrityConstraintViolation)
    );
    assert!(!err.is_retryable());
    assert!(
        err.source()
            .is_some_and(|s| s.is::<tokio_postgres::Error>()),
        "the driver's own error is the source: {err:?}"
    );
    assert!(err.to_string().contains("twice_pkey"), "{err}");
    // Nothing of the batch was applied: the checkpoint did not move.
    assert_eq!(projection.checkpoint().await.unwrap(), Position::ZERO);
}

#[tokio::test]
async fn an_event_of_a_newer_version_read_through_place_keeps_its_typed_cause() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let order = order_domain::testing::order("5.00");
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    order_store::testing::store_versioned(&pool, &order, "2.0.0", |_| {}).await;
    let writer = writer(&store);

    let err = writer.place(order).await.unwrap_err();

    let PlaceError::Store(err) = err else {
        panic!("a store error, not a refusal: {err:?}")
    };
    assert!(matches!(err, StoreError::Corrupt(_)), "{err:?}");
    let unreadable = err
        .source()
        .and_then(|s| s.downcast_ref::<UnreadableEvent>())
        .expect("the reader's typed error is the source");
    assert!(
        matches!(
            unreadable,
            UnreadableEvent::Version {
                source: VersionError::Newer { .. },
                ..
            }
        ),
        "{unreadable:?}"
    );
}

#[tokio::test]
async fn a_sqlx_error_of_yours_is_classed_by_its_sqlstate() {
    // The ledger's CHECK, broken by a bad manual repair through sqlx: class 23, named, and
    // sqlx's own error kept as the source.
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let _store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let err = sqlx::query("UPDATE btc_ledger SET sold_sats = cap_sats + 1")
        .execute(&pool)
        .await
        .map_err(StoreError::from_database)
        .unwrap_err();
    assert!(matches!(err, StoreError::Rejected(_)), "{err:?}");
    assert_eq!(err.sql_state(), Some(SqlState::CHECK_VIOLATION), "{err:?}");
    assert!(
        err.source().is_some_and(|s| s.is::<sqlx::Error>()),
        "{err:?}"
    );
}

#[tokio::test]
async fn ping_asks_the_database_now_not_the_last_commit() {
    let db = TestDb::create().await;
    let proxy = OutageProxy::start(pg_addr()).await;
    let mut settings = PgSettings::for_url(&proxy.url_for(db.url()));
    settings.acquire_timeout = Duration::from_millis(300);
    settings.statement_timeout = Duration::from_millis(700);
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let writer = writer(&store);
    writer
        .place(order_domain::testing::order("1.00"))
        .await
        .unwrap();
    writer.ping().await.expect("the database answers");

    proxy.freeze();
    let frozen = tokio::time::timeout(Duration::from_secs(10), writer.ping())
        .await
        .expect("the ping gives up within its deadline");
    assert!(
        matches!(frozen, Err(StoreError::Unavailable(_))),
        "a silent database fails the probe though the last commit succeeded: {frozen:?}"
    );
    proxy.thaw();

    proxy.cut();
    let cut = tokio::time::timeout(Duration::from_secs(10), writer.ping())
        .await
        .expect("the ping gives up within its deadline");
    assert!(matches!(cut, Err(StoreError::Unavailable(_))), "{cut:?}");
    proxy.restore();
    let mut back = writer.ping().await;
    for _ in 0..50 {
        if back.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        back = writer.ping().await;
    }
    back.expect("the database is back");
}

/// A peer that accepts connections and then says nothing (a frozen host): every way of
/// opening the store gives up within the acquire timeout the settings give, as an outage.
#[tokio::test]
async fn every_open_honours_the_acquire_timeout_against_a_silent_peer() {
    let db = TestDb::create().await;
    let proxy = OutageProxy::start(pg_addr()).await;
    let settings = quick(&proxy.url_for(db.url()));
    proxy.freeze();
    let within = Duration::from_secs(10);

    let write = tokio::time::timeout(within, PgEventStore::open(&settings, BtcCap::DEFAULT))
        .await
        .expect("the write store's open gives up");
    let read = tokio::time::timeout(within, PgReadModel::open(&settings))
        .await
        .expect("the read table's open gives up");
    let audit = tokio::time::timeout(within, order_store::postgres::audit(&settings))
        .await
        .expect("the audit's connection gives up");
    for err in [write.unwrap_err(), read.unwrap_err(), audit.unwrap_err()] {
        assert!(err.is_retryable(), "{err:?}");
    }
    proxy.thaw();
}
