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
            .place(order_domain::testing::order_for("relay-test", "5"))
            .await
            .unwrap();
    }
}

/// Two stores on separate pools over one database: two api-write processes, as a relay sees them.
async fn two_stores(db: &TestDb) -> (PgEventStore, PgEventStore) {
    let settings = PgSettings::for_url(db.url());
    let open = || PgEventStore::open(&settings, BtcCap::DEFAULT);
    (open().await.unwrap(), open().await.unwrap())
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

/// A fresh database and topology, one store on it and a writer through it.
async fn one_store() -> (TestDb, TestTopology, PgEventStore, Arc<dyn OrderWriter>) {
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let store = PgEventStore::open(&PgSettings::for_url(db.url()), BtcCap::DEFAULT)
        .await
        .unwrap();
    let writer = writer(&store);
    (db, topology, store, writer)
}

#[tokio::test]
async fn every_event_is_published_in_order_exactly_as_stored() {
    let (_db, topology, store, writer) = one_store().await;
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

/// Orders committed by 16 writers while the relay runs, batch after batch: every event is
/// published once, in position order.
#[tokio::test(flavor = "multi_thread")]
async fn events_committed_while_batches_are_confirmed_are_published_once_in_order() {
    let (_db, topology, store, writer) = one_store().await;
    let (stop, running) = relay(&store, &topology);
    let writers: Vec<_> = (0..16)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move { place(&writer, 25).await })
        })
        .collect();
    let published = drain(&topology, 400).await;
    for w in writers {
        w.await.unwrap();
    }
    let stored = store.read_after(Position::ZERO, 1000).await.unwrap();
    assert_eq!(stored.len(), 400);
    assert_eq!(published, stored, "in order, exactly as stored, none twice");
    stop.cancel();
    running.await.unwrap();
}

#[tokio::test]
async fn two_relays_publish_every_event_and_a_standby_takes_over() {
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let (store_a, store_b) = two_stores(&db).await;
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

async fn backlog(store: &PgEventStore, n: i64) {
    order_store::testing::bulk_events(store.pool(), n).await;
}

/// The active relay's lease session is killed while it works through a long backlog, with a
/// standby waiting. The old relay must stop at its next batch (it checks the lease before each
/// one, and moves the checkpoint only through the lease's own session), so a plain consumer of
/// the exchange sees every position, in order but for at most one rewind: the standby starting
/// again from the checkpoint over the one batch the old relay had in flight.
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_whose_lease_dies_mid_backlog_stops_and_publishing_stays_in_order() {
    const N: i64 = 60_000;
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let (store_a, store_b) = two_stores(&db).await;
    backlog(&store_a, N).await;
    let mut batches = consumer::start(topology.address(), topology.topology.clone(), 500);
    let (stop_a, running_a) = relay(&store_a, &topology);
    while store_a.relay_checkpoint().await.unwrap() < Position(1_000) {
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let (stop_b, running_b) = relay(&store_b, &topology); // the standby: the lease is taken
    tokio::time::sleep(Duration::from_millis(100)).await;
    let killed_at = store_a.relay_checkpoint().await.unwrap();
    let killed: Vec<i32> = sqlx::query_scalar(
        "SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted \
           AND database = (SELECT oid FROM pg_database WHERE datname = current_database())",
    )
    .fetch_all(store_a.pool())
    .await
    .unwrap();
    assert_eq!(killed.len(), 1, "one lease holder");
    sqlx::query("SELECT pg_terminate_backend($1)")
        .bind(killed[0])
        .execute(store_a.pool())
        .await
        .unwrap();
    assert!(
        killed_at.0 < N as u64 / 2,
        "the lease must die mid-backlog for this test to mean anything (at {killed_at})"
    );

    let (mut arrived, mut distinct) = (Vec::new(), std::collections::HashSet::new());
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while distinct.len() < N as usize {
        let batch = tokio::time::timeout_at(deadline, batches.recv())
            .await
            .expect("every position in time")
            .expect("consumer running");
        for message in &batch.messages {
            let position = decode(&message.body)
                .expect("a well-formed message")
                .position
                .0;
            arrived.push(position);
            distinct.insert(position);
        }
        let n = batch.messages.len();
        batch.answer(vec![Verdict::Ack; n]);
    }
    let rewinds = arrived.windows(2).filter(|w| w[1] < w[0]).count();
    assert!(
        rewinds <= 1,
        "{rewinds} rewinds: two relays published at once ({} messages for {N} events)",
        arrived.len()
    );
    assert_eq!(distinct.len(), N as usize);
    stop_a.cancel();
    stop_b.cancel();
    running_a.await.unwrap();
    running_b.await.unwrap();
}

/// A standby asks for the lease every second on one session of its own: no connection opened
/// and closed per attempt (it used to be one new PostgreSQL session a second, forever).
#[tokio::test(flavor = "multi_thread")]
async fn a_standby_waits_without_opening_connections() {
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let (store_a, store_b) = two_stores(&db).await;
    let (stop_a, running_a) = relay(&store_a, &topology);
    tokio::time::sleep(Duration::from_millis(500)).await; // a is active
    let (stop_b, running_b) = relay(&store_b, &topology); // b stands by
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Sessions established to this database so far (counted as each one starts).
    let sessions = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT sessions FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(store_a.pool())
        .await
        .unwrap()
    };
    // Churn is one session a second; the pools this test shares with the active relay may open
    // a connection or two when they are busy.
    let before = sessions().await;
    tokio::time::sleep(Duration::from_secs(8)).await;
    let new = sessions().await - before;
    assert!(new <= 3, "{new} sessions opened in 8 s of standing by");
    stop_a.cancel();
    stop_b.cancel();
    running_a.await.unwrap();
    running_b.await.unwrap();
}

/// The active relay's path to the broker is broken (its broker address is dead) while a standby
/// could publish: after its give-up window the active one gives the lease up, and the standby
/// publishes everything. (It used to keep the lease, and so the log unpublished, forever.)
#[tokio::test(flavor = "multi_thread")]
async fn an_active_relay_that_cannot_publish_gives_its_lease_to_a_standby_that_can() {
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let (store_a, store_b) = two_stores(&db).await;
    place(&writer(&store_a), 20).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = event_bus::connection::parse(&format!(
        "amqp://guest:guest@{}/%2f",
        closed.local_addr().unwrap()
    ))
    .unwrap();
    drop(closed);
    let stop = CancellationToken::new();
    let broken = Relay::new(
        store_a.clone(),
        Publisher::start(dead, topology.topology.clone()),
    )
    .with_give_up_after(Duration::from_secs(2));
    let running_a = tokio::spawn(broken.run(stop.clone()));
    tokio::time::sleep(Duration::from_millis(500)).await; // it holds the lease
    let (stop_b, running_b) = relay(&store_b, &topology);
    let published = drain(&topology, 20).await;
    let positions: BTreeSet<u64> = published.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, (1..=20).collect());
    stop.cancel();
    stop_b.cancel();
    running_a.await.unwrap();
    running_b.await.unwrap();
}

/// Drops every packet of one local TCP port, both ways, for as long as it lives: a host cut off
/// from the network (no reset, no FIN reaches anyone). Needs iptables (`.ci/run` installs it).
struct CutOff(u16);

impl CutOff {
    fn rule(action: &str, port: u16, direction: &str) -> std::process::Output {
        std::process::Command::new("iptables")
            .args([
                action,
                "INPUT",
                "-i",
                "lo",
                "-p",
                "tcp",
                direction,
                &port.to_string(),
            ])
            .args(["-j", "DROP"])
            .output()
            .unwrap_or_else(|e| {
                panic!("iptables is needed for this test ({e}); .ci/run installs it")
            })
    }

    fn new(port: u16) -> CutOff {
        for direction in ["--sport", "--dport"] {
            let added = Self::rule("-A", port, direction);
            assert!(
                added.status.success(),
                "iptables: {}",
                String::from_utf8_lossy(&added.stderr)
            );
        }
        CutOff(port)
    }
}

impl Drop for CutOff {
    fn drop(&mut self) {
        for direction in ["--sport", "--dport"] {
            let _ = Self::rule("-D", self.0, direction);
        }
    }
}

/// The active relay's host is cut off from PostgreSQL: its lease session stops answering, with
/// no reset. PostgreSQL's keepalive on that session (DB_KEEPALIVE_S 10, then 3 probes 5 s
/// apart) ends it, the lease is free, and publishing resumes within about half a minute (with
/// the kernel's defaults it would be two hours and more).
#[tokio::test(flavor = "multi_thread")]
async fn a_relay_host_cut_off_loses_its_lease_within_seconds() {
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let (store_a, store_b) = two_stores(&db).await;
    let (stop_a, running_a) = relay(&store_a, &topology);
    let writer = writer(&store_a);
    place(&writer, 5).await;
    drain(&topology, 5).await; // a is active and publishing
    let port: i32 = sqlx::query_scalar(
        "SELECT a.client_port FROM pg_stat_activity a JOIN pg_locks l ON l.pid = a.pid \
         WHERE l.locktype = 'advisory' AND l.granted AND a.datname = current_database()",
    )
    .fetch_one(store_b.pool())
    .await
    .unwrap();
    let cut = CutOff::new(u16::try_from(port).unwrap());
    let (stop_b, running_b) = relay(&store_b, &topology);
    let started = std::time::Instant::now();
    place(&writer, 10).await;
    let published = drain(&topology, 10).await;
    let took = started.elapsed();
    let positions: BTreeSet<u64> = published.iter().map(|e| e.position.0).collect();
    assert!(positions.is_superset(&(6..=15).collect()), "{positions:?}");
    assert!(
        took < Duration::from_secs(50),
        "publishing resumed after {took:?}"
    );
    drop(cut);
    stop_a.cancel();
    stop_b.cancel();
    running_a.await.unwrap();
    running_b.await.unwrap();
}

/// The relay publishes every event as stored, byte for byte, whatever its version: an older
/// shape (0.9.0, which this store's readers upcast), a newer minor with a field this release
/// does not know, and a newer major are all passed on unchanged, in order, with their stored
/// version. (Before, it re-serialised each event in its own version: the newer minor lost its
/// field and went out as 1.0.0, the newer major was never published.) Upcasting is the
/// subscriber's job.
#[tokio::test]
async fn the_relay_publishes_every_event_as_stored_whatever_its_version() {
    use order_store::testing::{rate_source_upcaster, store_versioned, without_rate_source};
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let plain = PgEventStore::open(&PgSettings::for_url(db.url()), BtcCap::DEFAULT)
        .await
        .unwrap();
    let store = plain.clone().with_upcaster(rate_source_upcaster());
    let order = |key: u128| PlaceBuyOrder {
        idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::from_u128(key)),
        ..order_domain::testing::order_for("relay-test", "5")
    };
    store_versioned(store.pool(), &order(1), "0.9.0", without_rate_source).await;
    store_versioned(store.pool(), &order(2), "1.1.0", |fields| {
        fields.insert(
            "loyalty_tier".into(),
            serde_json::json!({"tier": "gold", "rank": 1.50}),
        );
    })
    .await;
    store_versioned(store.pool(), &order(3), "2.0.0", |_| {}).await;
    place(&writer(&store), 1).await;
    let (stop, running) = relay(&store, &topology);

    let mut batches = consumer::start(topology.address(), topology.topology.clone(), 50);
    let mut bodies = Vec::new();
    while bodies.len() < 4 {
        let batch = tokio::time::timeout(Duration::from_secs(30), batches.recv())
            .await
            .expect("messages in time")
            .expect("consumer running");
        bodies.extend(batch.messages.iter().map(|m| m.body.clone()));
        let n = batch.messages.len();
        batch.answer(vec![Verdict::Ack; n]);
    }
    let epoch: i32 = sqlx::query_scalar("SELECT epoch FROM log_epochs")
        .fetch_one(store.pool())
        .await
        .unwrap();
    let stored: Vec<(i64, String, String, String)> = sqlx::query_as(
        "SELECT position, aggregate_id, event_version, payload::text FROM events \
         ORDER BY position",
    )
    .fetch_all(store.pool())
    .await
    .unwrap();
    assert_eq!(stored.len(), 4);
    for (body, (position, aggregate_id, version, payload)) in bodies.iter().zip(&stored) {
        let text = String::from_utf8(body.clone()).unwrap();
        let expected = format!(
            r#"{{"epoch":{epoch},"position":{position},"aggregate_id":"{aggregate_id}","sequence":1,"event_version":"{version}","event":{payload}}}"#
        );
        assert_eq!(text, expected, "published exactly as stored");
    }
    assert!(stored[1].3.contains("loyalty_tier"), "{}", stored[1].3);
    // the current release's readers still read what they can: the older shape upcast
    let reader = EventReader::new().with_upcaster(rate_source_upcaster());
    let first = event_bus::message::decode_with(&bodies[0], &reader).unwrap();
    assert_eq!(first.event.as_placed().unwrap().rate_source, "unknown");
    assert!(decode(&bodies[2]).unwrap_err().contains("2.0.0 is newer"));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.relay_checkpoint().await.unwrap() < Position(4) {
        assert!(tokio::time::Instant::now() < deadline, "checkpoint stuck");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.cancel();
    running.await.unwrap();
}

/// A batch queued while the broker's path hung, whose caller then stopped waiting (a relay that
/// timed out, and perhaps lost its lease meanwhile), is never published: it would interleave a
/// stale batch with the next relay's. Before, the publishing thread ran it once the path came
/// back. The broker here sits behind a proxy that freezes (forwards nothing, closes nothing).
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_nobody_waits_for_any_more_is_never_published() {
    use order_store::testing::OutageProxy;
    let (_db, topology, store, writer) = one_store().await;
    place(&writer, 4).await;
    let stored = store.read_stored_after(Position::ZERO, 10).await.unwrap();
    let mut url = url::Url::parse(&event_bus::testing::amqp_url()).unwrap();
    let broker = (url.host_str().unwrap(), url.port().unwrap_or(5672));
    let broker = tokio::net::lookup_host(broker)
        .await
        .unwrap()
        .next()
        .unwrap();
    let proxy = OutageProxy::start(broker).await;
    url.set_ip_host(proxy.addr().ip()).unwrap();
    url.set_port(Some(proxy.addr().port())).unwrap();
    let through = event_bus::connection::parse(url.as_str()).unwrap();
    let publisher = Publisher::start(through, topology.topology.clone());
    publisher.publish(stored[..1].to_vec()).await.unwrap();

    proxy.freeze();
    let wait = Duration::from_secs(1);
    // position 2: sent into the frozen path; its caller gives up
    assert!(
        tokio::time::timeout(wait, publisher.publish(stored[1..2].to_vec()))
            .await
            .is_err()
    );
    // position 3: queued behind it; its caller gives up before it is ever started
    assert!(
        tokio::time::timeout(wait, publisher.publish(stored[2..3].to_vec()))
            .await
            .is_err()
    );
    // longer than the thread's own confirm timeout: it gives position 2 up and takes the next
    tokio::time::sleep(Duration::from_secs(11)).await;
    proxy.thaw();
    // position 4: a caller that waits is served
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while publisher.publish(stored[3..4].to_vec()).await.is_err() {
        assert!(tokio::time::Instant::now() < deadline, "never published");
    }
    let received = drain(&topology, 2).await;
    let positions: BTreeSet<u64> = received.iter().map(|e| e.position.0).collect();
    assert!(
        positions.contains(&1) && positions.contains(&4),
        "{positions:?}"
    );
    // anything still on its way arrives within a second
    tokio::time::sleep(Duration::from_secs(1)).await;
    let count = topology.message_count(&topology.topology.queue);
    let late = if count > 0 {
        drain(&topology, 1).await
    } else {
        Vec::new()
    };
    let all: BTreeSet<u64> = positions
        .into_iter()
        .chain(late.iter().map(|e| e.position.0))
        .collect();
    assert!(
        !all.contains(&3),
        "a batch nobody waited for went out: {all:?}"
    );
}
