//! What a production year brings, through the real service processes (`api-write`, `projector`)
//! against the real PostgreSQL and RabbitMQ: a database whose default isolation is not ours,
//! a forged message on the queue.

use std::time::Duration;

use order_store::testing::TestDb;
use support::{free_port, service, Running};

mod support;
use serde_json::json;

/// `api-write` on `db`, with `extra` environment.
fn api_write(db: &TestDb, extra: &[(&str, &str)]) -> Running {
    let port = free_port();
    let mut command = service("api-write");
    command
        .env("DATABASE_URL", db.url())
        .env("WRITE_ADDR", format!("127.0.0.1:{port}"))
        .envs(extra.iter().copied());
    Running::spawn(command, "api-write", port)
}

/// `PUT` an order of `amount` `currency` under `idempotence_key` to `url` with the API key `key`.
async fn put(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    (currency, amount): (&str, &str),
    idempotence_key: &str,
) -> reqwest::Response {
    let body = json!({"currency": currency, "amount": amount, "idempotence_key": idempotence_key});
    client
        .put(url)
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

/// A new order of USD 10.00 to `writer`.
async fn put_order(client: &reqwest::Client, writer: &Running, key: &str) -> reqwest::Response {
    let fresh = uuid::Uuid::new_v4().to_string();
    put(
        client,
        &writer.url("/buy_order"),
        key,
        ("USD", "10.00"),
        &fresh,
    )
    .await
}

/// A database whose default isolation is `serializable` (some managed platforms and DBAs set
/// it): two writers started at once both come up, and 200 concurrent orders on them are all
/// placed, no commit failing on the way. Every session sets READ COMMITTED itself; before, the
/// second writer could exit at start-up, and contended batches failed with 40001 ("could not
/// serialize access", each batch's orders then retried: waves of 503 under load).
#[tokio::test]
async fn a_serializable_database_default_changes_nothing() {
    let db = TestDb::create().await;
    let key = api_keys::testing::client_key(db.url(), "isolated", false).await;
    let admin = sqlx::PgPool::connect(db.url()).await.unwrap();
    let name: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&admin)
        .await
        .unwrap();
    sqlx::raw_sql(&format!(
        "ALTER DATABASE {name} SET default_transaction_isolation = 'serializable'"
    ))
    .execute(&admin)
    .await
    .unwrap();
    admin.close().await;
    // a new session of the database's now runs serializable unless it says otherwise
    let plain = sqlx::PgPool::connect(db.url()).await.unwrap();
    let level: String = sqlx::query_scalar("SHOW transaction_isolation")
        .fetch_one(&plain)
        .await
        .unwrap();
    assert_eq!(level, "serializable");
    plain.close().await;

    let mut writers = [api_write(&db, &[]), api_write(&db, &[])];
    for writer in &mut writers {
        writer.ready().await;
    }
    let client = reqwest::Client::new();
    let orders = (0..200).map(|i| put_order(&client, &writers[i % 2], &key));
    let answers = futures::future::join_all(orders).await;
    for answer in answers {
        let status = answer.status();
        assert_eq!(status, 200, "{}", answer.text().await.unwrap());
    }
    for writer in &writers {
        let log = writer.log();
        assert!(!log.contains("could not serialize"), "{log}");
    }
}

/// The value of an unlabelled metric in a `/metrics` page.
async fn metric(service: &Running, name: &str) -> Option<f64> {
    let page = reqwest::get(service.url("/metrics"))
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    page.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// A writer whose database peer goes silent (a forwarding proxy frozen mid-commit: it forwards
/// nothing and closes nothing, as a paused VM or a stalled middlebox does) while it holds the
/// relay's lease. The lease expires on the server (its session's `idle_session_timeout`), and
/// the other writer's standby relay takes over within the bound docs/operations.md gives, publishing what is
/// placed meanwhile; the frozen writer's requests, its in-flight batch's included, are
/// answered 503 within the answer deadline plus `ORDER_RESOLVE_TIMEOUT_MS`, never at the 30 s
/// request deadline; after the thaw it serves again, and every order answered 200 is stored
/// once. Before: the in-flight batch held every request to the 30 s deadline (503 `timeout`)
/// and the standby never became active while the peer was silent.
#[tokio::test(flavor = "multi_thread")]
async fn behind_a_silent_database_peer_the_lease_moves_and_requests_are_answered() {
    use event_bus::testing::{amqp_url, TestTopology};
    use order_store::testing::{AtCommit, OutageProxy};
    use order_store::EventLog;

    let db = TestDb::create().await;
    let key = api_keys::testing::client_key(db.url(), "silent", false).await;
    let topology = TestTopology::create();
    let proxy = OutageProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let through_proxy = proxy.url_for(db.url());
    let amqp = amqp_url();
    let bus = [
        ("AMQP_URL", amqp.as_str()),
        ("AMQP_EXCHANGE", topology.topology.exchange.as_str()),
        ("AMQP_QUEUE", topology.topology.queue.as_str()),
    ];
    let mut frozen_side = api_write(
        &db,
        &[&bus[..], &[("DATABASE_URL", &through_proxy)]].concat(),
    );
    frozen_side.ready().await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while metric(&frozen_side, "relay_active").await != Some(1.0) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the first writer never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut standby = api_write(&db, &bus);
    standby.ready().await;
    assert_eq!(metric(&standby, "relay_active").await, Some(0.0));
    let client = reqwest::Client::new();

    // A batch of the first writer is caught in flight, then its whole path freezes.
    proxy.cut_at_next_commit(AtCommit::Freeze);
    let mut in_flight = Vec::new();
    while !proxy.commit_caught() {
        let (client, key, url) = (client.clone(), key.clone(), frozen_side.url("/buy_order"));
        in_flight.push(tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let fresh = uuid::Uuid::new_v4().to_string();
            let answer = put(&client, &url, &key, ("USD", "10.00"), &fresh).await;
            let status = answer.status();
            (status, answer.text().await.unwrap(), started.elapsed())
        }));
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    proxy.freeze();
    let frozen_at = tokio::time::Instant::now();

    // The standby takes the lease within LEASE_TTL (10 s) + its 1 s poll + a lease call.
    while metric(&standby, "relay_active").await != Some(1.0) {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(16),
            "the standby relay never became active"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let took_over = frozen_at.elapsed();
    // ... and publishes what the healthy writer places meanwhile.
    for _ in 0..5 {
        let placed = put_order(&client, &standby, &key).await;
        assert_eq!(placed.status(), 200);
    }
    let store = order_store::postgres::PgEventStore::connect(
        &order_store::postgres::PgSettings::for_url(db.url()),
    )
    .await
    .unwrap();
    let head = store.head().await.unwrap();
    while store.relay_checkpoint().await.unwrap() < head {
        assert!(
            frozen_at.elapsed() < Duration::from_secs(25),
            "nothing published"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Every request of the frozen writer is answered well before the 30 s request deadline.
    let mut answered_200 = Vec::new();
    for request in in_flight {
        let (status, body, took) = request.await.unwrap();
        assert!(
            took < Duration::from_secs(22),
            "{status} after {took:?}: {body}"
        );
        match status.as_u16() {
            200 => answered_200.push(body),
            503 => assert!(
                body.contains("outcome_unknown") || body.contains("unavailable"),
                "{body}"
            ),
            other => panic!("{other}: {body}"),
        }
    }
    proxy.thaw();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        if put_order(&client, &frozen_side, &key).await.status() == 200 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the writer never recovered"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = store
        .read_after(order_store::Position::ZERO, 10_000)
        .await
        .unwrap();
    let ids: std::collections::HashSet<_> = log.iter().map(|e| e.aggregate_id).collect();
    assert_eq!(ids.len(), log.len(), "an order stored twice");
    for body in answered_200 {
        let order: serde_json::Value = serde_json::from_str(&body).unwrap();
        let id = order["buy_order"]["id"].as_str().unwrap().to_owned();
        assert!(
            log.iter().any(|e| e.aggregate_id.to_string() == id),
            "{id} answered, not stored"
        );
    }
    eprintln!("standby active {took_over:?} after the freeze");
}

/// Revocation fails closed after a bound: with the key registry (the write database)
/// unreachable while api-read's table lives elsewhere, a key revoked meanwhile keeps working
/// only until `AUTH_KEYS_MAX_STALENESS_MS`; past it every key is refused with 503
/// `keys_unavailable` and `Retry-After`; once the registry is back the revoked key is 401 and
/// the others work. Before, the keys loaded last stayed in force for as long as the outage.
#[tokio::test(flavor = "multi_thread")]
async fn keys_go_stale_when_the_registry_cannot_be_read() {
    use api_keys::ClientRegistry;
    use api_keys::PgClientRegistry;
    use order_store::postgres::PgSettings;
    use order_store::testing::OutageProxy;

    let db = TestDb::create().await;
    let revoked = api_keys::testing::client_key(db.url(), "leaked", false).await;
    let kept = api_keys::testing::client_key(db.url(), "kept", false).await;
    order_store::postgres::PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    let proxy = OutageProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let port = free_port();
    let mut command = service("api-read");
    command
        .env("DATABASE_URL", proxy.url_for(db.url()))
        .env("READ_DATABASE_URL", db.url())
        .env("READ_ADDR", format!("127.0.0.1:{port}"))
        .env("AUTH_KEYS_MAX_STALENESS_MS", "3000");
    let mut reader = Running::spawn(command, "api-read", port);
    reader.ready().await;
    let client = reqwest::Client::new();
    let list = |key: &str| {
        client
            .get(reader.url("/buy_orders"))
            .bearer_auth(key)
            .send()
    };
    assert_eq!(list(&revoked).await.unwrap().status(), 200);

    proxy.cut();
    let registry = PgClientRegistry::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    let leaked = order_domain::ClientId::parse("leaked").unwrap();
    assert_eq!(registry.revoke(&leaked).await, Ok(true));
    let cut_at = tokio::time::Instant::now();
    loop {
        let answer = list(&revoked).await.unwrap();
        match answer.status().as_u16() {
            200 => assert!(
                cut_at.elapsed() < Duration::from_secs(3) + Duration::from_secs(3),
                "a revoked key worked {:?} after the registry went away",
                cut_at.elapsed()
            ),
            503 => {
                assert!(answer.headers().contains_key("retry-after"));
                let body = answer.text().await.unwrap();
                assert!(body.contains("keys_unavailable"), "{body}");
                break;
            }
            other => panic!("{other}: {}", answer.text().await.unwrap()),
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(
        cut_at.elapsed() >= Duration::from_secs(2),
        "refused too early"
    );
    assert_eq!(
        list(&kept).await.unwrap().status(),
        503,
        "every key, not one"
    );

    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while list(&kept).await.unwrap().status() != 200 {
        assert!(tokio::time::Instant::now() < deadline, "never recovered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert_eq!(list(&revoked).await.unwrap().status(), 401);
}

/// The RabbitMQ node of this test restarts (the whole node: every connection dropped) while
/// orders arrive. Nothing is lost: a subscriber's own queue holds every position, published in
/// order with at most a rewind per restart (the batch in flight, published again), the relay's
/// checkpoint reaches the head, and the projector process's table holds every order. Run with
/// each `AMQP_QUEUE_TYPE`.
async fn a_broker_restart_mid_load_loses_nothing(queue_type: event_bus::QueueType) {
    use event_bus::consumer::{self, Verdict};
    use event_bus::testing::PrivateBroker;
    use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
    use order_store::{EventLog, ReadModelWriter};

    let broker = std::sync::Arc::new(
        tokio::task::spawn_blocking(PrivateBroker::start)
            .await
            .unwrap(),
    );
    let db = TestDb::create().await;
    let key = api_keys::testing::client_key(db.url(), "restarts", false).await;
    let type_name = match queue_type {
        event_bus::QueueType::Classic => "classic",
        event_bus::QueueType::Quorum => "quorum",
    };
    let topology = event_bus::Topology::new("bo_orders", "bo_view").with_queue_type(queue_type);
    // A subscriber's own durable queue on the exchange, there before anything is published.
    let subscriber =
        event_bus::Topology::new("bo_orders", "bo_subscriber").with_queue_type(queue_type);
    let address = event_bus::connection::parse(&broker.url()).unwrap();
    {
        let address = address.clone();
        let (topology, subscriber) = (topology.clone(), subscriber.clone());
        tokio::task::spawn_blocking(move || {
            let mut connection = event_bus::connection::open(&address).unwrap();
            topology.declare_all(&mut connection).unwrap();
            subscriber.declare_all(&mut connection).unwrap();
            let _ = connection.close();
        })
        .await
        .unwrap();
    }
    let url = broker.url();
    let bus = [
        ("AMQP_URL", url.as_str()),
        ("AMQP_EXCHANGE", "bo_orders"),
        ("AMQP_QUEUE", "bo_view"),
        ("AMQP_QUEUE_TYPE", type_name),
    ];
    let mut writer = api_write(&db, &bus);
    writer.ready().await;
    let port = free_port();
    let mut command = service("projector");
    command
        .arg("run")
        .env("DATABASE_URL", db.url())
        .env("PROJECTOR_ADDR", format!("127.0.0.1:{port}"))
        .envs(bus);
    let mut projector = Running::spawn(command, "projector", port);
    projector.ready().await;

    let client = reqwest::Client::new();
    let placing = {
        let (client, key, url) = (client.clone(), key.clone(), writer.url("/buy_order"));
        tokio::spawn(async move {
            for _ in 0..300 {
                let fresh = uuid::Uuid::new_v4().to_string();
                let answer = put(&client, &url, &key, ("EUR", "3.00"), &fresh).await;
                assert_eq!(
                    answer.status(),
                    200,
                    "orders are taken while the broker is down"
                );
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
    };
    tokio::time::sleep(Duration::from_millis(1200)).await;
    {
        let broker = broker.clone();
        tokio::task::spawn_blocking(move || broker.restart())
            .await
            .unwrap();
    }
    placing.await.unwrap();

    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::connect(&settings).await.unwrap();
    let head = store.head().await.unwrap();
    assert_eq!(head.0, 300);
    let model = PgReadModel::open(&settings).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while store.relay_checkpoint().await.unwrap() < head || model.checkpoint().await.unwrap() < head
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the pipeline did not resume"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = order_store::testing::every_row(&model, &order_store::Scope::All).await;
    assert_eq!(rows.len(), 300, "the projector's table holds every order");

    // Every position is in the subscriber's queue, in order but for the batch in flight.
    let mut batches = consumer::start(address, subscriber, 100);
    let mut positions = Vec::new();
    let mut distinct = std::collections::BTreeSet::new();
    while distinct.len() < 300 {
        let batch = tokio::time::timeout(Duration::from_secs(30), batches.recv())
            .await
            .expect("the subscriber's messages")
            .expect("consuming");
        for message in &batch.messages {
            let event = event_bus::message::decode(&message.body).unwrap();
            positions.push(event.position.0);
            distinct.insert(event.position.0);
        }
        let n = batch.messages.len();
        batch.answer(vec![Verdict::Ack; n]);
    }
    assert_eq!(distinct, (1..=300).collect());
    let rewinds = positions.windows(2).filter(|w| w[1] <= w[0]).count();
    assert!(rewinds <= 2, "{rewinds} rewinds: {positions:?}");
    eprintln!(
        "{type_name}: {} messages for 300 positions, {rewinds} rewinds",
        positions.len()
    );
    drop(batches);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_loses_nothing_with_classic_queues() {
    a_broker_restart_mid_load_loses_nothing(event_bus::QueueType::Classic).await;
}

#[tokio::test(flavor = "multi_thread")]
async fn a_broker_restart_loses_nothing_with_quorum_queues() {
    a_broker_restart_mid_load_loses_nothing(event_bus::QueueType::Quorum).await;
}

/// An asynchronous failover, through the real `api-write` (with its relay) and a private
/// primary and standby behind one endpoint (a proxy, as a managed service's): the standby's
/// replication is cut, the primary takes 10 more orders (answered 200, published), crashes,
/// the standby is promoted and the endpoint pointed at it. The promoted database lacks those
/// orders and hands their positions out again. What must hold: every message carries the log's
/// epoch (the database timeline), so (epoch, position) still names one event; the relay
/// detects that the log was rewound under it and says so (`relay_log_rewinds_total`, a row in
/// `log_rewinds`); `buy-orders audit` shows it. Before, the reused positions went out as if
/// nothing had happened, and readiness, audit and every metric stayed green.
#[tokio::test(flavor = "multi_thread")]
async fn an_asynchronous_failover_that_loses_orders_is_detected_and_epochs_tell_them_apart() {
    failover(false).await;
}

/// The same failover with a synchronous standby (`synchronous_standby_names`): nothing
/// acknowledged is lost, so nothing is rewound: the promoted database holds all 30 orders, the
/// new ones continue at 31 in epoch 2, no rewind is recorded and the audit passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_synchronous_failover_loses_nothing_and_rewinds_nothing() {
    failover(true).await;
}

/// `log_epochs`, oldest first.
async fn epochs(pool: &sqlx::PgPool) -> Vec<(i32, i64)> {
    sqlx::query_as("SELECT epoch, first_position FROM log_epochs ORDER BY first_position")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// `buy-orders audit` of the database at `url` (its read table created, as by a projector that
/// has not run yet).
async fn audit(url: &str) -> order_store::postgres::AuditReport {
    let settings = order_store::postgres::PgSettings::for_url(url);
    order_store::postgres::PgReadModel::open(&settings)
        .await
        .unwrap();
    order_store::postgres::audit(&settings).await.unwrap()
}

/// A primary, a standby, `api-write` through one endpoint; 20 orders, then 10 more that the
/// standby gets only if `synchronous`, then the primary crashes and the standby is promoted.
async fn failover(synchronous: bool) {
    use event_bus::consumer::{self, Verdict};
    use event_bus::testing::{amqp_url, TestTopology};
    use order_store::testing::{OutageProxy, PrivateServer};

    let primary = tokio::task::spawn_blocking(PrivateServer::primary)
        .await
        .unwrap();
    let replication = OutageProxy::start(primary.addr()).await;
    let standby = {
        let (primary_addr, via) = (primary.url(), replication.addr());
        let _ = primary_addr;
        let primary = &primary;
        // pg_basebackup and the standby's start block: run them here, briefly.
        tokio::task::block_in_place(|| PrivateServer::standby(primary, via))
    };
    let endpoint = OutageProxy::start(primary.addr()).await;
    let url = endpoint.url_for(&primary.url());
    let admin = sqlx::PgPool::connect(&primary.url()).await.unwrap();
    let key = {
        let registry = api_keys::PgClientRegistry::open(
            &order_store::postgres::PgSettings::for_url(&primary.url()),
        )
        .await
        .unwrap();
        use api_keys::ClientRegistry;
        registry
            .add(&order_domain::ClientId::parse("failover").unwrap(), false)
            .await
            .unwrap()
            .reveal()
    };
    let topology = TestTopology::create();
    let amqp = amqp_url();
    let mut writer = {
        let port = free_port();
        let mut command = service("api-write");
        command
            .env("DATABASE_URL", &url)
            .env("WRITE_ADDR", format!("127.0.0.1:{port}"))
            .env("AMQP_URL", &amqp)
            .env("AMQP_EXCHANGE", &topology.topology.exchange)
            .env("AMQP_QUEUE", &topology.topology.queue);
        Running::spawn(command, "api-write", port)
    };
    writer.ready().await;
    let client = reqwest::Client::new();
    let place = |n: usize| {
        let (client, key, url) = (client.clone(), key.clone(), writer.url("/buy_order"));
        async move {
            for _ in 0..n {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
                let key_of_order = uuid::Uuid::new_v4().to_string();
                loop {
                    let answer = put(&client, &url, &key, ("GBP", "7.00"), &key_of_order).await;
                    if answer.status() == 200 {
                        break;
                    }
                    assert!(
                        tokio::time::Instant::now() < deadline,
                        "writes never resumed"
                    );
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    };
    let relay_at = |pool: sqlx::PgPool| async move {
        sqlx::query_scalar::<_, i64>("SELECT position FROM relay_checkpoint")
            .fetch_one(&pool)
            .await
            .unwrap()
    };
    let until = |what: &'static str, pool: sqlx::PgPool, at_least: i64| async move {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        while relay_at(pool.clone()).await < at_least {
            assert!(tokio::time::Instant::now() < deadline, "{what}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };

    if synchronous {
        for statement in [
            "ALTER SYSTEM SET synchronous_standby_names = '*'",
            "SELECT pg_reload_conf()",
        ] {
            sqlx::raw_sql(statement).execute(&admin).await.unwrap();
        }
    }
    // 20 orders, replicated and published.
    place(20).await;
    until("20 published", admin.clone(), 20).await;
    let standby_pool = sqlx::PgPool::connect(&standby.url()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let replayed: Option<i64> = sqlx::query_scalar("SELECT last_position FROM btc_ledger")
            .fetch_optional(&standby_pool)
            .await
            .ok()
            .flatten();
        if replayed == Some(20) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the standby never caught up"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Asynchronous, the standby falls behind: 10 orders only the primary has, answered 200 and
    // published. Synchronous, each is answered only once the standby has it.
    if !synchronous {
        replication.cut();
    }
    place(10).await;
    until("30 published", admin.clone(), 30).await;
    admin.close().await;
    standby_pool.close().await;

    // Failover: the primary crashes, the standby is promoted, the endpoint follows it.
    tokio::task::block_in_place(|| {
        primary.crash();
        standby.promote();
    });
    endpoint.retarget(standby.addr());
    endpoint.cut();
    endpoint.restore();
    place(5).await;
    let promoted = sqlx::PgPool::connect(&standby.url()).await.unwrap();
    until("the new orders published", promoted.clone(), 25).await;

    if synchronous {
        until("the new orders published", promoted.clone(), 35).await;
        let rewinds: i64 = sqlx::query_scalar("SELECT count(*) FROM log_rewinds")
            .fetch_one(&promoted)
            .await
            .unwrap();
        assert_eq!(rewinds, 0);
        let epochs: Vec<(i32, i64)> =
            sqlx::query_as("SELECT epoch, first_position FROM log_epochs ORDER BY first_position")
                .fetch_all(&promoted)
                .await
                .unwrap();
        assert_eq!(epochs, vec![(1, 1), (2, 31)]);
        order_store::postgres::PgReadModel::open(&order_store::postgres::PgSettings::for_url(
            &standby.url(),
        ))
        .await
        .unwrap();
        let report = order_store::postgres::audit(&order_store::postgres::PgSettings::for_url(
            &standby.url(),
        ))
        .await
        .unwrap();
        assert!(report.passed(), "{}", report.render());
        return;
    }
    // The relay said so.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let rewinds: i64 = sqlx::query_scalar("SELECT count(*) FROM log_rewinds")
            .fetch_one(&promoted)
            .await
            .unwrap();
        if rewinds > 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the rewind was not recorded"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = writer.metrics().await;
    assert!(metrics.contains("relay_log_rewinds_total 1"), "{metrics}");
    let (first, up_to): (i64, i64) =
        sqlx::query_as("SELECT first_position, published_up_to FROM log_rewinds")
            .fetch_one(&promoted)
            .await
            .unwrap();
    assert_eq!((first, up_to), (21, 30));
    assert_eq!(epochs(&promoted).await, vec![(1, 1), (2, 21)]);

    // Audit shows it.
    let report = audit(&standby.url()).await;
    let epochs_finding = report
        .findings
        .iter()
        .find(|f| f.check == "epochs")
        .unwrap();
    assert!(!epochs_finding.ok, "{}", report.render());
    assert!(report.render().contains("21..=30"), "{}", report.render());

    // A subscriber tells the reused positions apart by their epoch.
    let mut batches = consumer::start(topology.address(), topology.topology.clone(), 100);
    let mut seen: Vec<(u64, u64, String)> = Vec::new();
    while seen.iter().filter(|(epoch, _, _)| *epoch == 2).count() < 5 {
        let batch = tokio::time::timeout(Duration::from_secs(30), batches.recv())
            .await
            .expect("messages")
            .expect("consuming");
        for message in &batch.messages {
            let body: serde_json::Value = serde_json::from_slice(&message.body).unwrap();
            seen.push((
                body["epoch"].as_u64().unwrap(),
                body["position"].as_u64().unwrap(),
                body["aggregate_id"].as_str().unwrap().to_owned(),
            ));
        }
        let n = batch.messages.len();
        batch.answer(vec![Verdict::Ack; n]);
    }
    for position in 21..=25 {
        let ids: std::collections::BTreeSet<_> = seen
            .iter()
            .filter(|(_, p, _)| *p == position)
            .map(|(epoch, _, id)| (*epoch, id.clone()))
            .collect();
        let epochs: std::collections::BTreeSet<_> = ids.iter().map(|(e, _)| *e).collect();
        assert_eq!(epochs, [1, 2].into(), "position {position}: {ids:?}");
        assert_eq!(
            ids.len(),
            2,
            "two orders at position {position}, one per epoch"
        );
    }
}
