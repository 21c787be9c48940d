//! The projector keeps the read table equal to the log, live and across restarts.

use std::sync::Arc;
use std::time::Duration;

use order_domain::*;
use order_store::memory::{MemEventStore, MemReadModel};
use order_store::*;
use price_feed::FixedSource;
use projector::Projector;
use service_kit::CancellationToken;

fn rate() -> FixedSource {
    "USD=30000,EUR=30000,GBP=30000".parse().unwrap()
}

fn place() -> PlaceBuyOrder {
    PlaceBuyOrder {
        currency: Currency::EUR,
        ..order_domain::testing::order_for("projector-test", "12.34")
    }
}

async fn table(model: &MemReadModel) -> Vec<OrderId> {
    let page = model
        .page(
            PageRequest {
                after: None,
                size: PageSize::new(100).unwrap(),
            },
            &order_store::Scope::All,
        )
        .await
        .unwrap();
    page.rows.into_iter().map(|row| row.id).collect()
}

async fn log_ids(store: &MemEventStore) -> Vec<OrderId> {
    let log = store.read_after(Position::ZERO, 10_000).await.unwrap();
    log.iter().rev().map(|e| e.aggregate_id).collect()
}

#[tokio::test]
async fn projects_live_while_orders_arrive_and_stops_on_shutdown() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let model = Arc::new(MemReadModel::new());
    let projector = Projector::new(Arc::new(store.clone()), model.clone(), 7);
    let shutdown = CancellationToken::new();
    let running = tokio::spawn({
        let (projector, shutdown) = (projector.clone(), shutdown.clone());
        async move { projector.run(shutdown).await }
    });
    let writer = Arc::new(CqrsOrderWriter::new(
        store.clone(),
        BuyOrderServices::new(Arc::new(rate())),
    ));
    let places: Vec<_> = (0..60)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.place(place()).await.unwrap() })
        })
        .collect();
    for p in places {
        p.await.unwrap();
    }
    // eventually consistent: wait (bounded) for the table to catch up
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while model.checkpoint().await.unwrap() < Position(60) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "projector fell behind"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert_eq!(table(&model).await, log_ids(&store).await);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), running)
        .await
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn a_restarted_projector_resumes_from_the_checkpoint_without_doubles() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(rate())));
    for _ in 0..10 {
        writer.place(place()).await.unwrap();
    }
    let model = Arc::new(MemReadModel::new());
    let first = Projector::new(Arc::new(store.clone()), model.clone(), 3);
    assert_eq!(first.catch_up().await.unwrap(), Position(10));
    for _ in 0..5 {
        writer.place(place()).await.unwrap();
    }
    // a new projector over the same table: continues at 10, adds 5
    let second = Projector::new(Arc::new(store.clone()), model.clone(), 100);
    assert_eq!(second.catch_up().await.unwrap(), Position(15));
    assert_eq!(
        second.catch_up().await.unwrap(),
        Position(15),
        "nothing new, nothing done"
    );
    assert_eq!(model.len(), 15);
    assert_eq!(table(&model).await, log_ids(&store).await);
}

#[tokio::test]
async fn replaying_into_an_empty_table_rebuilds_it() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(rate())));
    for _ in 0..12 {
        writer.place(place()).await.unwrap();
    }
    let fresh = Arc::new(MemReadModel::new());
    Projector::new(Arc::new(store.clone()), fresh.clone(), 5)
        .catch_up()
        .await
        .unwrap();
    assert_eq!(table(&fresh).await, log_ids(&store).await);
}

/// The lag the projector reports on its timer comes from the store, not from its last batch:
/// events committed but not applied show as positions behind and seconds waited.
#[tokio::test]
async fn lag_is_measured_from_the_store() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(rate())));
    let model = Arc::new(MemReadModel::new());
    let projector = Projector::new(Arc::new(store.clone()), model.clone(), 100);
    assert_eq!(projector.lag().await.unwrap(), (0, 0.0));
    for _ in 0..3 {
        writer.place(place()).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    let (positions, seconds) = projector.lag().await.unwrap();
    assert_eq!(positions, 3);
    assert!(
        seconds >= 0.02,
        "the oldest unapplied order has waited: {seconds}"
    );
    projector.catch_up().await.unwrap();
    assert_eq!(projector.lag().await.unwrap(), (0, 0.0));
}
