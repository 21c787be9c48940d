//! Shared by the projector's PostgreSQL + RabbitMQ tests.
#![allow(dead_code)]

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use event_bus::publisher::Publisher;
use event_bus::relay::Relay;
use event_bus::testing::{amqp_url, TestTopology};
use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::*;
use price_feed::FixedSource;
use service_kit::CancellationToken;

/// The `projector` binary against `db` (and `topology`, when given).
pub fn projector(db: &TestDb, topology: Option<&TestTopology>, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_projector"));
    command
        .args(args)
        .env("DATABASE_URL", db.url())
        .env_remove("READ_DATABASE_URL")
        .env_remove("AMQP_URL")
        .env("PROJECTOR_BATCH", "25")
        .env("PROJECTOR_ADDR", "127.0.0.1:0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if let Some(topology) = topology {
        command
            .env("AMQP_URL", amqp_url())
            .env("AMQP_EXCHANGE", &topology.topology.exchange)
            .env("AMQP_QUEUE", &topology.topology.queue)
            .env("AMQP_PREFETCH", "20");
    }
    command
}

/// Sends `signal` to a child process.
pub fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// A writer on `store` with fixed prices.
pub fn writer(store: &PgEventStore) -> Arc<dyn OrderWriter> {
    let prices: FixedSource = "USD=60000,EUR=50000,GBP=40000".parse().unwrap();
    Arc::new(CqrsOrderWriter::new(
        store.clone(),
        BuyOrderServices::new(Arc::new(prices)),
    ))
}

/// Places `n` orders of varied currencies and amounts.
pub async fn place(writer: &Arc<dyn OrderWriter>, n: u64) {
    for i in 0..n {
        writer
            .place(PlaceBuyOrder {
                currency: Currency::ALL[i as usize % 3],
                amount: FiatAmount::from_cents(1 + i * 997 % 100_000).unwrap(),
                ..order_domain::testing::order_for("projector-test", "1")
            })
            .await
            .unwrap();
    }
}

/// Every row of the table, newest first.
pub async fn table(model: &PgReadModel) -> Vec<OrderView> {
    order_store::testing::every_row(model, &order_store::Scope::All).await
}

/// What the table must hold: every event of the store as a row, newest first.
pub async fn expected(store: &PgEventStore) -> Vec<OrderView> {
    let log = store.read_after(Position::ZERO, 100_000).await.unwrap();
    log.iter()
        .rev()
        .filter_map(|logged| logged.event.as_placed().map(OrderView::from))
        .collect()
}

/// Waits (bounded) until the checkpoint reaches `at_least`.
pub async fn wait_for_checkpoint(model: &PgReadModel, at_least: Position) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(90);
    while model.checkpoint().await.unwrap() < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "projector stuck before {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub struct Setup {
    pub db: TestDb,
    pub topology: TestTopology,
    pub store: PgEventStore,
    pub model: PgReadModel,
    pub relay_stop: CancellationToken,
}

impl Drop for Setup {
    fn drop(&mut self) {
        self.relay_stop.cancel();
    }
}

/// A fresh database with its event store and read table open.
pub async fn store_and_table() -> (TestDb, PgEventStore, PgReadModel) {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let model = PgReadModel::open(&settings).await.unwrap();
    (db, store, model)
}

/// A database, a topology, and a relay publishing the store to it.
pub async fn setup() -> Setup {
    let (db, store, model) = store_and_table().await;
    let topology = TestTopology::create();
    let relay_stop = CancellationToken::new();
    let publisher = Publisher::start(topology.address(), topology.topology.clone());
    tokio::spawn(Relay::new(store.clone(), publisher).run(relay_stop.clone()));
    Setup {
        db,
        topology,
        store,
        model,
        relay_stop,
    }
}
