//! The relay against the real PostgreSQL and RabbitMQ of this machine: every event published in
//! order, exactly as stored, with its position; one active relay at a time, and a standby that
//! takes over.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use event_bus::consumer::{self, Verdict};
use event_bus::message::decode;
use event_bus::publisher::Publisher;
use event_bus::relay::Relay;
use event_bus::testing::TestTopology;
use order_domain::*;
use order_store::postgres::{PgEventStore, PgSettings};
use order_store::testing::TestDb;
use order_store::{CqrsOrderWriter, EventLog, LoggedEvent, OrderWriter, Position};
use price_feed::FixedSource;
use service_kit::CancellationToken;

fn writer(store: &PgEventStore) -> Arc<dyn OrderWriter> {
    let prices: FixedSource = "USD=50000".parse().unwrap();
    Arc::new(CqrsOrderWriter::new(
        store.clone(),
        BuyOrderServices::new(Arc::new(prices)),
    ))
}

async fn place(writer: &Arc<dyn OrderWriter>, n: usize) {
    for _ in 0..n {
        writer
            .place(PlaceBuyOrder {
                client_id: ClientId::parse("relay-test").unwrap(),
                idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
                currency: Currency::USD,
                amount: FiatAmount::parse("5").unwrap(),
            })
            .await
            .unwrap();
    }
}

fn relay(
    store: &PgEventStore,
    topology: &TestTopology,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let stop = CancellationToken::new();
    let publisher = Publisher::start(topology.address(), topology.topology.clone());
    let running = tokio::spawn(Relay::new(store.clone(), publisher).run(stop.clone()));
    (stop, running)
}

/// Reads the queue (acking) until `want` distinct positions have arrived; returns every message.
async fn drain(topology: &TestTopology, want: usize) -> Vec<LoggedEvent> {
    let mut batches = consumer::start(topology.address(), topology.topology.clone(), 50);
    let mut all = Vec::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while all
        .iter()
        .map(|e: &LoggedEvent| e.position)
        .collect::<BTreeSet<_>>()
        .len()
        < want
    {
        let batch = tokio::time::timeout_at(deadline, batches.recv())
            .await
            .expect("messages in time")
            .expect("consumer running");
        for message in &batch.messages {
            all.push(decode(&message.body).expect("a well-formed message"));
        }
        let n = batch.messages.len();
        batch.answer(vec![Verdict::Ack; n]);
    }
    all
}

#[tokio::test]
async fn every_event_is_published_in_order_exactly_as_stored() {
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let store = PgEventStore::open(&PgSettings::for_url(db.url()), BtcCap::DEFAULT)
        .await
        .unwrap();
    let writer = writer(&store);
    place(&writer, 30).await; // before the relay starts: the backlog
    let (stop, running) = relay(&store, &topology);
    place(&writer, 30).await; // while it runs
    let published = drain(&topology, 60).await;
    let stored = store.read_after(Position::ZERO, 1000).await.unwrap();
    assert_eq!(published, stored, "in order, exactly as stored, none twice");
    // the checkpoint moves once confirmed
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.relay_checkpoint().await.unwrap() < Position(60) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn two_relays_publish_every_event_and_a_standby_takes_over() {
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let settings = PgSettings::for_url(db.url());
    let store_a = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let store_b = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let (stop_a, running_a) = relay(&store_a, &topology);
    let (stop_b, running_b) = relay(&store_b, &topology);
    let (writer_a, writer_b) = (writer(&store_a), writer(&store_b));
    tokio::join!(place(&writer_a, 40), place(&writer_b, 40));
    let first = drain(&topology, 80).await;
    let positions: BTreeSet<u64> = first.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, (1..=80).collect(), "every event published");

    // stop both in turn: whichever was active, the other must carry on
    stop_a.cancel();
    running_a.await.unwrap();
    place(&writer_b, 20).await;
    let second = drain(&topology, 20).await;
    let positions: BTreeSet<u64> = second.iter().map(|e| e.position.0).collect();
    assert!(
        positions.is_superset(&(81..=100).collect()),
        "{positions:?}"
    );
    stop_b.cancel();
    running_b.await.unwrap();
}
