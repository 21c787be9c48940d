//! `Follower` keeping a projection of the user's current on the real PostgreSQL, read back
//! through the projection's own session.

use std::sync::Arc;
use std::time::Duration;

use order_domain::*;
use order_store::postgres::{PgEventStore, PgProjection, PgSettings, Projection, Transaction};
use order_store::testing::{writer, TestDb};
use order_store::*;

/// BTC sold per currency, as a user would write it.
struct SoldPerCurrency;

#[async_trait]
impl Projection for SoldPerCurrency {
    fn name(&self) -> &str {
        "sold_per_currency"
    }
    fn tables(&self) -> Vec<String> {
        vec!["sold_per_currency".into()]
    }
    async fn create(&self, tx: &Transaction<'_>, _live: &str) -> Result<(), StoreError> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS sold_per_currency \
             (currency text PRIMARY KEY, satoshis bigint NOT NULL)",
        )
        .await
        .map_err(StoreError::from_database)
    }
    async fn apply(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
        for placed in events.iter().filter_map(|e| e.event.as_placed()) {
            let sats = i64::try_from(placed.satoshis.count())
                .map_err(|e| StoreError::corrupt(e.to_string()))?;
            tx.execute(
                "INSERT INTO sold_per_currency VALUES ($1, $2) ON CONFLICT (currency) \
                 DO UPDATE SET satoshis = sold_per_currency.satoshis + excluded.satoshis",
                &[&placed.currency.code(), &sats],
            )
            .await
            .map_err(StoreError::from_database)?;
        }
        Ok(())
    }
}

async fn sold(projection: &PgProjection<SoldPerCurrency>, currency: &str) -> i64 {
    let session = projection.session().await.unwrap();
    session
        .query_opt(
            "SELECT satoshis FROM sold_per_currency WHERE currency = $1",
            &[&currency],
        )
        .await
        .unwrap()
        .map_or(0, |row| row.get(0))
}

#[tokio::test]
async fn a_projection_of_yours_is_kept_current_while_orders_arrive() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let projection = Arc::new(
        PgProjection::open(&settings, SoldPerCurrency)
            .await
            .unwrap(),
    );
    let follower = Follower::new(Arc::new(store.clone()), projection.clone(), 2);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let running = tokio::spawn(async move {
        follower
            .run(async {
                stopped.await.ok();
            })
            .await
    });

    let writer = writer(&store);
    for amount in ["1.00", "2.00", "3.00", "4.00", "5.00"] {
        writer
            .place(order_domain::testing::order(amount))
            .await
            .unwrap();
    }
    // 15 USD at 100 per BTC: 0.15 BTC, applied in batches of 2 as they were committed.
    let mut seen = 0;
    for _ in 0..100 {
        seen = sold(&projection, "USD").await;
        if seen == 15_000_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(seen, 15_000_000);
    assert_eq!(projection.checkpoint().await.unwrap(), Position(5));

    stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .expect("run returns once stopped")
        .unwrap();
}

#[tokio::test]
async fn an_unreadable_event_is_parked_after_its_batch_is_applied() {
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
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    // Position 2: a shape from the future, which this build cannot read.
    order_store::testing::store_versioned(
        &pool,
        &order_domain::testing::order("9.00"),
        "2.0.0",
        |_| {},
    )
    .await;
    writer
        .place(order_domain::testing::order("2.00"))
        .await
        .unwrap();
    let projection = Arc::new(
        PgProjection::open(&settings, SoldPerCurrency)
            .await
            .unwrap(),
    );
    // One batch holds all three: applying first, then parking, keeps positions 1 and 3 (parking
    // first would move the checkpoint past them, and they would be skipped).
    let follower = Follower::new(Arc::new(store), projection.clone(), 10);

    assert_eq!(follower.catch_up().await.unwrap(), Position(3));

    assert_eq!(sold(&projection, "USD").await, 3_000_000);
    let parked = projection.parked().await.unwrap();
    assert_eq!(
        parked.iter().map(|p| p.position).collect::<Vec<_>>(),
        [Position(2)]
    );
    assert_eq!(
        follower.catch_up().await.unwrap(),
        Position(3),
        "idempotent"
    );
    assert_eq!(sold(&projection, "USD").await, 3_000_000);
}
