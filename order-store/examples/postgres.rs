//! Orders on PostgreSQL, in a schema of their own, with a projection of the application's own
//! kept current and read back.
//!
//! `DATABASE_URL=postgres://postgres@127.0.0.1:5432/shop PG_SCHEMA=shop_orders \
//!  cargo run -p order-store --example postgres`

use std::sync::Arc;
use std::time::Duration;

use order_domain::*;
use order_store::postgres::{PgEventStore, PgProjection, PgSettings, Projection, Transaction};
use order_store::{
    async_trait, CqrsOrderWriter, Follower, LoggedEvent, OrderWriter, SqlState, StoreError,
};

/// Orders per client: the application's own table, kept from the log.
struct OrdersPerClient;

#[async_trait]
impl Projection for OrdersPerClient {
    fn name(&self) -> &str {
        "orders_per_client"
    }

    fn tables(&self) -> Vec<String> {
        vec!["orders_per_client".into()]
    }

    async fn create(&self, tx: &Transaction<'_>, _live: &str) -> Result<(), StoreError> {
        tx.batch_execute(
            "CREATE TABLE IF NOT EXISTS orders_per_client \
             (client_id text PRIMARY KEY, orders bigint NOT NULL)",
        )
        .await
        .map_err(StoreError::from_database)
    }

    async fn apply(&self, tx: &Transaction<'_>, events: &[LoggedEvent]) -> Result<(), StoreError> {
        for placed in events.iter().filter_map(|e| e.event.as_placed()) {
            tx.execute(
                "INSERT INTO orders_per_client VALUES ($1, 1) ON CONFLICT (client_id) \
                 DO UPDATE SET orders = orders_per_client.orders + 1",
                &[&placed.client_id.as_str()],
            )
            .await
            .map_err(StoreError::from_database)?;
        }
        Ok(())
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = PgSettings::from_env()?;
    let store = match PgEventStore::open(&settings, BtcCap::DEFAULT).await {
        Ok(store) => store,
        Err(err @ StoreError::Misconfigured(_)) => {
            eprintln!("fix the settings: {err}");
            std::process::exit(2);
        }
        Err(err) => return Err(err.into()),
    };
    let projection = Arc::new(PgProjection::open(&settings, OrdersPerClient).await?);
    let follower = Follower::new(Arc::new(store.clone()), projection.clone(), 500);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let following = tokio::spawn(async move {
        follower
            .run(async {
                stopped.await.ok();
            })
            .await
    });

    let prices = FixedSource::uniform(BtcRate::parse("60000")?);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(prices)));
    let client = ClientId::parse("example-shop")?;
    for _ in 0..3 {
        let order = PlaceBuyOrder {
            client_id: client.clone(),
            idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
            currency: Currency::USD,
            amount: FiatAmount::parse("12.34")?,
        };
        let placed = writer.place(order).await?;
        println!(
            "placed {} BTC as order {}",
            placed.order.satoshis, placed.order.order_id
        );
    }

    // Read back: the follower applies them within moments of their commit.
    let session = projection.session().await?;
    let mut orders = 0;
    for _ in 0..100 {
        orders = session
            .query_opt(
                "SELECT orders FROM orders_per_client WHERE client_id = $1",
                &[&client.as_str()],
            )
            .await
            .map_err(StoreError::from_database)?
            .map_or(0, |row| row.get::<_, i64>(0));
        if orders >= 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("{client} has {orders} orders in the projection");
    assert!(orders >= 3);

    // A statement of ours that breaks a constraint: matched on its SQLSTATE.
    let duplicate = session
        .execute(
            "INSERT INTO orders_per_client VALUES ($1, 0)",
            &[&client.as_str()],
        )
        .await
        .map_err(StoreError::from_database)
        .expect_err("the client has a row already");
    assert_eq!(duplicate.sql_state(), Some(SqlState::UNIQUE_VIOLATION));
    println!("refused as expected: {duplicate}");

    stop.send(()).ok();
    following.await?;
    Ok(())
}
