//! The projector fed by RabbitMQ, against the real broker and PostgreSQL of this machine (a
//! database and a topology of its own per test): poison messages are dead-lettered while the
//! rest is applied; SIGKILL mid-stream and restart lose and double nothing; a rebuild while
//! orders keep arriving ends equal to the event store.

mod common;

use std::time::Duration;

use common::*;
use event_bus::publisher::Publisher;
use event_bus::relay::Relay;
use event_bus::testing::TestTopology;
use order_domain::BtcCap;
use order_store::postgres::{PgEventStore, PgSettings};
use order_store::*;
use service_kit::CancellationToken;

fn publish_raw(topology: &TestTopology, body: &[u8]) {
    topology.publish_raw(body, "poison-1");
}

/// The projector process on the setup's database and queue, serving its ops on a free port.
fn spawn_projector(s: &Setup) -> std::process::Child {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    projector(&s.db, Some(&s.topology), &[])
        .env("PROJECTOR_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap()
}

#[tokio::test]
async fn a_poison_message_is_dead_lettered_and_the_rest_applied() {
    let s = setup().await;
    let mut running = spawn_projector(&s);
    let writer = writer(&s.store);
    place(&writer, 10).await;
    publish_raw(&s.topology, b"{not an event");
    place(&writer, 10).await;
    wait_for_checkpoint(&s.model, Position(20)).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s
        .topology
        .message_count(&s.topology.topology.dead_letter_queue)
        < 1
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "poison not dead-lettered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        s.topology
            .message_count(&s.topology.topology.dead_letter_queue),
        1
    );
    assert_eq!(table(&s.model).await, expected(&s.store).await);
    signal(&running, libc::SIGTERM);
    assert!(running.wait().unwrap().success());
}

#[tokio::test]
async fn killed_mid_stream_and_restarted_via_the_queue_nothing_is_lost_or_doubled() {
    let s = setup().await;
    let writer = writer(&s.store);
    let mut running = projector(&s.db, Some(&s.topology), &["run"])
        .spawn()
        .unwrap();
    let writers: Vec<_> = (0..6)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move { place(&writer, 80).await })
        })
        .collect();
    wait_for_checkpoint(&s.model, Position(60)).await;
    signal(&running, libc::SIGKILL);
    running.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        s.model.checkpoint().await.unwrap() < Position(480),
        "killed before the end"
    );
    let mut restarted = projector(&s.db, Some(&s.topology), &[]).spawn().unwrap();
    wait_for_checkpoint(&s.model, Position(480)).await;
    assert_eq!(
        table(&s.model).await,
        expected(&s.store).await,
        "row by row"
    );
    signal(&restarted, libc::SIGTERM);
    assert!(restarted.wait().unwrap().success());
}

#[tokio::test]
async fn a_rebuild_while_orders_keep_arriving_ends_equal_to_the_store() {
    let s = setup().await;
    let writer = writer(&s.store);
    place(&writer, 200).await;
    let mut running = projector(&s.db, Some(&s.topology), &[]).spawn().unwrap();
    wait_for_checkpoint(&s.model, Position(200)).await;
    // orders keep arriving before, during and after the rebuild
    let rebuilding = CancellationToken::new();
    let arriving = {
        let (writer, rebuilding) = (writer.clone(), rebuilding.clone());
        tokio::spawn(async move {
            let mut during = 0;
            while !rebuilding.is_cancelled() {
                place(&writer, 5).await;
                during += 5;
            }
            place(&writer, 20).await;
            during
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    let rebuild = tokio::task::spawn_blocking({
        let mut command = projector(&s.db, None, &["rebuild"]);
        move || command.status().unwrap()
    })
    .await
    .unwrap();
    rebuilding.cancel();
    assert!(rebuild.success());
    let during = arriving.await.unwrap();
    assert!(during > 0, "orders arrived during the rebuild");
    let head = s.store.head().await.unwrap();
    wait_for_checkpoint(&s.model, head).await;
    assert_eq!(
        table(&s.model).await,
        expected(&s.store).await,
        "row by row"
    );
    // the swapped-in table pages on its primary key like the original
    let rows = table(&s.model).await;
    let plan = s
        .model
        .explain_page_after(rows[rows.len() / 2].id, 10, &order_store::Scope::All)
        .await
        .unwrap();
    assert!(plan.contains("buy_order_view_pkey"), "{plan}");
    signal(&running, libc::SIGTERM);
    assert!(running.wait().unwrap().success());
}

#[tokio::test]
async fn two_relays_publish_everything_and_nothing_is_twice_in_the_table() {
    let s = setup().await; // relay one
    let second_store = PgEventStore::open(&PgSettings::for_url(s.db.url()), BtcCap::DEFAULT)
        .await
        .unwrap();
    let second_stop = CancellationToken::new();
    let publisher = Publisher::start(s.topology.address(), s.topology.topology.clone());
    tokio::spawn(Relay::new(second_store.clone(), publisher).run(second_stop.clone()));
    let mut running = projector(&s.db, Some(&s.topology), &[]).spawn().unwrap();
    let (a, b) = (writer(&s.store), writer(&second_store));
    tokio::join!(place(&a, 60), place(&b, 60));
    wait_for_checkpoint(&s.model, Position(120)).await;
    let rows = table(&s.model).await;
    assert_eq!(rows.len(), 120);
    assert_eq!(rows, expected(&s.store).await, "each once, row by row");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while s.store.relay_checkpoint().await.unwrap() < Position(120) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every event was published"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second_stop.cancel();
    signal(&running, libc::SIGTERM);
    assert!(running.wait().unwrap().success());
}

/// The relay stops publishing (its host died, say) while orders keep being committed: the
/// projector, fed by a queue that has gone silent, notices that the log moves without it and
/// catches up from the event store within a few seconds.
#[tokio::test]
async fn a_silent_queue_while_the_log_moves_is_caught_up_from_the_store() {
    let s = setup().await;
    s.relay_stop.cancel(); // nothing will reach the queue
    let mut running = spawn_projector(&s);
    tokio::time::sleep(Duration::from_millis(500)).await; // started, caught up with nothing
    let writer = writer(&s.store);
    place(&writer, 10).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while s.model.checkpoint().await.unwrap() < Position(10) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the read table stayed behind a silent queue"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(table(&s.model).await, expected(&s.store).await);
    signal(&running, libc::SIGTERM);
    assert!(running.wait().unwrap().success());
}

/// A projector in this process consuming the setup's queue over `log` (batches of 100), until
/// the returned token is cancelled.
fn consuming_in_process(
    s: &Setup,
    log: std::sync::Arc<dyn EventLog>,
) -> (CancellationToken, tokio::task::JoinHandle<()>) {
    let projector = projector::Projector::new(log, std::sync::Arc::new(s.model.clone()), 100);
    let batches =
        event_bus::consumer::start(s.topology.address(), s.topology.topology.clone(), 100);
    let stop = CancellationToken::new();
    let running = {
        let stop = stop.clone();
        tokio::spawn(async move { projector.consume(batches, stop).await })
    };
    (stop, running)
}

/// The relay's batches can reach the queue late (it waits for the broker's confirms before its
/// next one): the projector does not wait for them. Woken by the store's own notification, it
/// applies what the log holds once the queue has said nothing for a moment, well before the
/// silent-queue check (2 s) would: the late-queue catch-up is counted, the silent one never.
#[tokio::test(flavor = "multi_thread")]
async fn the_read_table_does_not_wait_for_a_late_queue() {
    let s = setup().await;
    s.relay_stop.cancel(); // the queue says nothing of these orders
    let metrics = service_kit::metrics_handle();
    let counter = |name: &str| -> u64 {
        metrics
            .render()
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().last())
            .map_or(0, |v| v.parse().unwrap())
    };
    let (stop, running) = consuming_in_process(&s, std::sync::Arc::new(s.store.clone()));
    tokio::time::sleep(Duration::from_millis(300)).await; // started: caught up with nothing
    let (late, silent) = (
        counter("projector_late_queue_catch_ups_total"),
        counter("projector_silent_queue_catch_ups_total"),
    );
    let writer = writer(&s.store);
    place(&writer, 10).await;
    wait_for_checkpoint(&s.model, Position(10)).await;
    assert_eq!(table(&s.model).await, expected(&s.store).await);
    assert!(
        counter("projector_late_queue_catch_ups_total") > late,
        "applied from the store ahead of the queue"
    );
    assert_eq!(
        counter("projector_silent_queue_catch_ups_total"),
        silent,
        "not by the silent-queue check"
    );
    stop.cancel();
    running.await.unwrap();
}

/// An event log that counts the batch reads made of it (a catch-up reads in batches; the lag
/// gauge's single-event read is not counted).
struct CountingLog {
    inner: PgEventStore,
    batch_reads: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl EventLog for CountingLog {
    async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        if limit > 1 {
            self.batch_reads
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
        self.inner.read_after(after, limit).await
    }
    async fn head(&self) -> Result<Position, StoreError> {
        self.inner.head().await
    }
    async fn wait_for_events_after(
        &self,
        after: Position,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        self.inner.wait_for_events_after(after, timeout).await
    }
}

/// The queue path wakes, the store supplies: once caught up at start, each batch of the relay's
/// messages has the projector read the store's log and apply what it holds (a projector that
/// applied the messages themselves would let anyone who can publish to the exchange write the
/// table: `forged_messages_are_never_applied_and_genuine_orders_always_are`).
#[tokio::test(flavor = "multi_thread")]
async fn messages_from_the_queue_wake_a_read_of_the_store() {
    let s = setup().await;
    let log = std::sync::Arc::new(CountingLog {
        inner: s.store.clone(),
        batch_reads: Default::default(),
    });
    let (stop, running) = consuming_in_process(&s, log.clone());
    tokio::time::sleep(Duration::from_millis(500)).await; // started: caught up with nothing
    let at_start = log.batch_reads.load(std::sync::atomic::Ordering::SeqCst);
    assert!(at_start >= 1, "the start-up catch-up reads the store");
    let writer = writer(&s.store);
    place(&writer, 30).await;
    wait_for_checkpoint(&s.model, Position(30)).await;
    assert!(
        log.batch_reads.load(std::sync::atomic::Ordering::SeqCst) > at_start,
        "applied from the store, woken by the queue"
    );
    assert_eq!(table(&s.model).await, expected(&s.store).await);
    stop.cancel();
    running.await.unwrap();
}

/// An event no reader can read (written by a newer major version, say) sits in the log between
/// orders: the relay publishes it as stored, the projector process parks it with why and applies
/// everything after it. Nothing stalls; the table equals the readable log.
#[tokio::test]
async fn an_unreadable_event_is_parked_and_everything_after_it_projected() {
    let s = setup().await;
    let mut running = spawn_projector(&s);
    let writer = writer(&s.store);
    place(&writer, 5).await;
    let newer = order_domain::PlaceBuyOrder {
        currency: order_domain::Currency::EUR,
        ..order_domain::testing::order_for("newer", "1")
    };
    order_store::testing::store_versioned(s.store.pool(), &newer, "2.0.0", |_| {}).await;
    place(&writer, 5).await;
    wait_for_checkpoint(&s.model, Position(11)).await;
    assert_eq!(table(&s.model).await, expected(&s.store).await);
    assert_eq!(table(&s.model).await.len(), 10);
    let parked = s.model.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].position, Position(6));
    assert!(
        parked[0].reason.contains("2.0.0 is newer"),
        "{}",
        parked[0].reason
    );
    signal(&running, libc::SIGTERM);
    assert!(running.wait().unwrap().success());
}

/// A message as anyone with the broker's account could publish it: the body of the stored
/// event at `position` of `store`'s log, rewritten by `edit` and moved to `at`.
async fn forged(
    store: &PgEventStore,
    position: u64,
    at: u64,
    edit: impl FnOnce(&mut order_domain::BuyOrderPlaced),
) -> Vec<u8> {
    let stored = store
        .read_after(Position(position - 1), 1)
        .await
        .unwrap()
        .remove(0);
    let mut placed = stored.event.as_placed().unwrap().clone();
    edit(&mut placed);
    let event = order_domain::BuyOrderEvent::BuyOrderPlaced(placed.clone());
    serde_json::to_vec(&serde_json::json!({
        "position": at, "aggregate_id": placed.order_id.to_string(), "sequence": 1,
        "event_version": "1.0.0", "event": serde_json::to_value(&event).unwrap()}))
    .unwrap()
}

/// Whoever can publish to the exchange cannot write the books. Forged messages, valid in every
/// field, at the next position (another client's USD 500,000.00 order), at a future position,
/// and at an old position rewritten, are not applied: each is counted in
/// `messages_rejected_total`, logged and dead-lettered, and the genuine orders around them are
/// all projected, the table equal to the store's log. Before, the first was applied at the
/// next position, the checkpoint moved, and the genuine order there was then dropped as
/// already applied: 404 to its owner for good.
#[tokio::test]
async fn forged_messages_are_never_applied_and_genuine_orders_always_are() {
    let s = setup().await;
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut running = projector(&s.db, Some(&s.topology), &[])
        .env("PROJECTOR_ADDR", format!("127.0.0.1:{port}"))
        .spawn()
        .unwrap();
    let writer = writer(&s.store);
    place(&writer, 10).await;
    wait_for_checkpoint(&s.model, Position(10)).await;

    let victim = order_domain::ClientId::parse("victim-shop").unwrap();
    let next = forged(&s.store, 3, 11, |placed| {
        placed.client_id = victim.clone();
        placed.idempotency_key = order_domain::IdempotencyKey::from_uuid(uuid::Uuid::new_v4());
        placed.order_id = order_domain::OrderId::derive(&victim, &placed.idempotency_key);
        placed.amount = order_domain::FiatAmount::parse("500000.00").unwrap();
    })
    .await;
    s.topology.publish_raw(&next, "forged-next");
    let future = forged(&s.store, 4, 1_000_000, |_| {}).await;
    s.topology.publish_raw(&future, "forged-future");
    let replayed = forged(&s.store, 5, 5, |placed| {
        placed.amount = order_domain::FiatAmount::parse("999999999.99").unwrap();
    })
    .await;
    s.topology.publish_raw(&replayed, "forged-replay");
    let dead = &s.topology.topology.dead_letter_queue;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while s.topology.message_count(dead) < 3 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "forgeries not dead-lettered: {}",
            s.topology.message_count(dead)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    place(&writer, 10).await;
    wait_for_checkpoint(&s.model, Position(20)).await;
    tokio::time::sleep(Duration::from_millis(500)).await; // anything late would show now
    assert_eq!(table(&s.model).await, expected(&s.store).await);
    assert_eq!(s.model.checkpoint().await.unwrap(), Position(20));
    let victims =
        order_store::testing::every_row(&s.model, &order_store::Scope::Client(victim.clone()))
            .await;
    assert!(victims.is_empty(), "{victims:?}");

    let metrics = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let rejected: f64 = metrics
        .lines()
        .filter(|l| l.starts_with("messages_rejected_total"))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum();
    assert_eq!(rejected, 3.0, "{metrics}");
    let report = order_store::postgres::audit(&PgSettings::for_url(s.db.url()))
        .await
        .unwrap();
    assert!(report.passed(), "{}", report.render());
    signal(&running, libc::SIGTERM);
    assert!(running.wait().unwrap().success());
}

/// A database outage longer than the consumer's retries (a failover of ~10 s): the messages
/// that arrive meanwhile are acked unchecked, nothing is dead-lettered, and once the database
/// is back the table holds every order, from the store. Before, each was retried five times and
/// then dead-lettered for good, although the table was complete after catching up.
#[tokio::test(flavor = "multi_thread")]
async fn a_long_database_outage_leaves_no_dead_letters() {
    use order_store::testing::OutageProxy;
    let s = setup().await;
    let proxy = OutageProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let through = PgSettings::for_url(&proxy.url_for(s.db.url()));
    let log = std::sync::Arc::new(PgEventStore::connect(&through).await.unwrap());
    let model = std::sync::Arc::new(
        order_store::postgres::PgReadModel::open(&through)
            .await
            .unwrap(),
    );
    let projector = projector::Projector::new(log, model, 100);
    let batches = event_bus::consumer::start(s.topology.address(), s.topology.topology.clone(), 20);
    let stop = CancellationToken::new();
    let running = {
        let stop = stop.clone();
        tokio::spawn(async move { projector.consume(batches, stop).await })
    };
    let writer = writer(&s.store);
    place(&writer, 10).await;
    wait_for_checkpoint(&s.model, Position(10)).await;

    proxy.cut();
    place(&writer, 40).await; // published by the relay (direct), while the projector's path is cut
    tokio::time::sleep(Duration::from_secs(10)).await;
    proxy.restore();
    wait_for_checkpoint(&s.model, Position(50)).await;
    assert_eq!(table(&s.model).await, expected(&s.store).await);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        s.topology
            .message_count(&s.topology.topology.dead_letter_queue),
        0,
        "dead letters left by an outage"
    );
    stop.cancel();
    running.await.unwrap();
}
