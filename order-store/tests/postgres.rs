//! The PostgreSQL backend against the real server of this machine, one fresh database per test.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use order_domain::*;
use order_store::postgres::CapError;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::*;
use price_feed::FixedSource;

fn rate(r: &str) -> Arc<FixedSource> {
    Arc::new(format!("USD={r},EUR={r},GBP={r}").parse().unwrap())
}

fn place(amount: &str) -> PlaceBuyOrder {
    place_for("pg-test", amount)
}

fn place_for(client: &str, amount: &str) -> PlaceBuyOrder {
    order_domain::testing::order_for(client, amount)
}

async fn store(db: &TestDb, cap: &str) -> PgEventStore {
    PgEventStore::open(
        &PgSettings::for_url(db.url()),
        cap.parse::<BtcCap>().unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn migrations_are_idempotent_and_safe_to_run_concurrently() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let opens: Vec<_> = (0..4)
        .map(|_| {
            let settings = settings.clone();
            tokio::spawn(async move {
                PgEventStore::open(&settings, BtcCap::DEFAULT)
                    .await
                    .unwrap();
                PgReadModel::open(&settings).await.unwrap();
            })
        })
        .collect();
    for open in opens {
        open.await.unwrap();
    }
    PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
}

/// MAX_TOTAL_BTC only seeds a new store: a process started with another value uses the stored
/// cap; only `set_cap` moves it, never below what is sold, and every change is recorded.
#[tokio::test]
async fn the_cap_is_seeded_once_and_changed_only_explicitly() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, "1".parse::<BtcCap>().unwrap())
        .await
        .unwrap();
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("100")));
    writer.place(place("60")).await.unwrap(); // 0.6 BTC
    let ledger = || async { store.ledger().await.unwrap() };
    // Two processes started with other values, concurrently: the stored cap stands.
    let (a, b) = tokio::join!(
        PgEventStore::open(&settings, "500".parse::<BtcCap>().unwrap()),
        PgEventStore::open(&settings, None)
    );
    a.unwrap();
    b.unwrap();
    assert_eq!(ledger().await.cap().limit(), Satoshis::from_btc(1));
    // Below what is sold: refused, nothing changes.
    let refused = store.set_cap("0.5".parse().unwrap(), "too low").await;
    assert!(
        matches!(refused, Err(CapError::BelowSold { sold, .. }) if sold == Satoshis::new(60_000_000)),
        "{refused:?}"
    );
    let change = store
        .set_cap("2".parse().unwrap(), "raised by the treasury, ticket 42")
        .await
        .unwrap();
    assert_eq!(change.previous, Some(Satoshis::from_btc(1)));
    assert_eq!(ledger().await.cap().limit(), Satoshis::from_btc(2));
    let history = store.cap_history().await.unwrap();
    let caps: Vec<_> = history.iter().map(|c| (c.previous, c.cap)).collect();
    assert_eq!(
        caps,
        [
            (None, Satoshis::from_btc(1)),
            (Some(Satoshis::from_btc(1)), Satoshis::from_btc(2))
        ]
    );
    assert!(history[0].reason.contains("MAX_TOTAL_BTC"));
    // The caller's own words, not a command it did not run.
    assert_eq!(history[1].reason, "raised by the treasury, ticket 42");
}

#[tokio::test]
async fn a_reader_tailing_during_concurrent_commits_sees_every_event_once_in_order() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = Arc::new(CqrsOrderWriter::new(
        store.clone(),
        BuyOrderServices::new(rate("50000")),
    ));
    const TASKS: usize = 16;
    const PER_TASK: usize = 40;
    let reader = {
        let store = store.clone();
        tokio::spawn(async move {
            let mut cursor = Position::ZERO;
            let mut seen = Vec::new();
            while seen.len() < TASKS * PER_TASK {
                let batch = store.read_after(cursor, 7).await.unwrap();
                for event in &batch {
                    assert_eq!(event.position, cursor.next(), "no gap, no reordering");
                    cursor = event.position;
                    seen.push(event.aggregate_id);
                }
                if batch.is_empty() {
                    store
                        .wait_for_events_after(cursor, Duration::from_millis(200))
                        .await
                        .unwrap();
                }
            }
            seen
        })
    };
    let writers: Vec<_> = (0..TASKS)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move {
                let mut placed = Vec::new();
                for _ in 0..PER_TASK {
                    placed.push(writer.place(place("1")).await.unwrap().order.order_id);
                }
                placed
            })
        })
        .collect();
    let mut placed = HashSet::new();
    for w in writers {
        placed.extend(w.await.unwrap());
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), reader)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen.len(), TASKS * PER_TASK);
    assert_eq!(
        seen.iter().copied().collect::<HashSet<_>>(),
        placed,
        "each exactly once"
    );
}

#[tokio::test]
async fn ten_thousand_orders_page_exactly_once_newest_first_on_the_index() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = Arc::new(CqrsOrderWriter::new(
        store.clone(),
        BuyOrderServices::new(rate("1000000")),
    ));
    let tasks: Vec<_> = (0..16)
        .map(|task| {
            let writer = writer.clone();
            // one task in sixteen places orders for a client with a small share of the table
            let client = if task == 0 { "pg-rare" } else { "pg-test" };
            tokio::spawn(async move {
                for _ in 0..625 {
                    writer.place(place_for(client, "1")).await.unwrap();
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.unwrap();
    }
    let model = PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    let mut cursor = model.checkpoint().await.unwrap();
    loop {
        let batch = store.read_after(cursor, 1000).await.unwrap();
        let Some(last) = batch.last() else { break };
        cursor = last.position;
        model.apply(&batch).await.unwrap();
    }
    assert_eq!(model.checkpoint().await.unwrap(), Position(10_000));

    let log = store.read_after(Position::ZERO, 20_000).await.unwrap();
    let newest_first: Vec<OrderId> = log.iter().rev().map(|e| e.aggregate_id).collect();
    let seen = walk(&model, &Scope::All).await;
    assert_eq!(seen, newest_first, "every order exactly once, newest first");

    // One client's walk: exactly its own orders, newest first.
    let mine = Scope::Client(ClientId::parse("pg-test").unwrap());
    let own: Vec<OrderId> = log
        .iter()
        .rev()
        .filter(|e| {
            let placed = e.event.as_placed().unwrap();
            placed.client_id.as_str() == "pg-test"
        })
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(own.len(), 15 * 625);
    let seen = walk(&model, &mine).await;
    assert_eq!(seen, own, "the client's orders exactly once, newest first");

    // Every page query is planned once per session (with `auto`, the page size as a parameter
    // had PostgreSQL plan each page afresh); the plans checked below are the ones it keeps.
    assert_eq!(model.plan_cache_mode().await.unwrap(), "force_generic_plan");

    // A deep page is a bounded backward range scan of the primary key.
    sqlx::query("ANALYZE buy_order_view")
        .execute(store.pool())
        .await
        .unwrap();
    let deep = newest_first[newest_first.len() - 150];
    let plan = model
        .explain_page_after(deep, 100, &order_store::Scope::All)
        .await
        .unwrap();
    assert!(
        plan.contains("Index Scan Backward using buy_order_view_pkey"),
        "{plan}"
    );
    assert!(plan.contains("InitPlan"), "{plan}");
    assert!(
        plan.contains("Index Scan using buy_order_view_id_key"),
        "{plan}"
    );
    assert!(
        plan.contains("Index Cond: (\"position\" < $0)"),
        "bound from the InitPlan: {plan}"
    );
    for bad in ["Sort", "Seq Scan", "Join Filter"] {
        assert!(!plan.contains(bad), "{bad} in {plan}");
    }

    // A deep page of a client, even one with a small share, is a bounded range scan of the
    // client's index (the only index that gives its order).
    let rare: Vec<OrderId> = log
        .iter()
        .filter(|e| {
            let placed = e.event.as_placed().unwrap();
            placed.client_id.as_str() == "pg-rare"
        })
        .map(|e| e.aggregate_id)
        .collect();
    let rare_scope = Scope::Client(ClientId::parse("pg-rare").unwrap());
    let plan = model
        .explain_page_after(rare[150], 100, &rare_scope)
        .await
        .unwrap();
    assert!(
        plan.contains("Index Scan using buy_order_view_client_id_expr_idx"),
        "{plan}"
    );
    assert!(plan.contains("InitPlan"), "{plan}");
    assert!(
        plan.contains(
            "Index Cond: ((client_id = 'pg-rare'::text) AND ((- \"position\") > (- $0)))"
        ),
        "bound from the InitPlan: {plan}"
    );
    for bad in ["Sort", "Seq Scan", "Join Filter", "Bitmap"] {
        assert!(!plan.contains(bad), "{bad} in {plan}");
    }
}

#[tokio::test]
async fn the_read_table_is_idempotent_and_rebuildable() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("48478.80")));
    for _ in 0..12 {
        writer.place(place("123.45")).await.unwrap();
    }
    let model = PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    let log = store.read_after(Position::ZERO, 100).await.unwrap();
    model.apply(&log[..5]).await.unwrap();
    model.apply(&log[3..]).await.unwrap();
    model.apply(&log).await.unwrap();
    let all = model
        .page(
            PageRequest {
                after: None,
                size: PageSize::new(100).unwrap(),
            },
            &order_store::Scope::All,
        )
        .await
        .unwrap();
    assert_eq!(all.rows.len(), 12);
    let first = &all.rows[11];
    assert_eq!(
        first.btc_rate.to_string(),
        "48478.80",
        "NUMERIC keeps the source's decimals"
    );
    assert_eq!(first.currency_amount.to_string(), "123.45");
    let placed = log[0].event.as_placed().unwrap();
    assert_eq!(
        first,
        &OrderView::from(placed),
        "row equals the event exactly"
    );
    let unknown = OrderId::parse("00000000-0000-4000-8000-000000000000").unwrap();
    assert!(matches!(
        model
            .page(
                PageRequest {
                    after: Some(unknown),
                    size: PageSize::DEFAULT
                },
                &order_store::Scope::All
            )
            .await,
        Err(ReadError::UnknownReference(_))
    ));
    assert_eq!(
        model.rebuild(&store, 5, &|_, _| {}).await.unwrap(),
        Position(12)
    );
    assert_eq!(model.checkpoint().await.unwrap(), Position(12));
    model.apply(&log).await.unwrap(); // after a rebuild, applying again changes nothing
    let again = model
        .page(
            PageRequest {
                after: None,
                size: PageSize::new(100).unwrap(),
            },
            &order_store::Scope::All,
        )
        .await
        .unwrap();
    assert_eq!(again, all);
}

/// Every order `scope` sees, page by page (100 a page), newest first.
async fn walk(model: &PgReadModel, scope: &Scope) -> Vec<OrderId> {
    order_store::testing::every_row(model, scope)
        .await
        .into_iter()
        .map(|row| row.id)
        .collect()
}

/// A writer whose connections go through `proxy`, resolving in-doubt commits within `within`.
async fn writer_through(
    db: &TestDb,
    proxy: &order_store::testing::OutageProxy,
    within: Duration,
) -> (PgEventStore, CqrsOrderWriter<PgEventStore>) {
    let mut settings = PgSettings::for_url(&proxy.url_for(db.url()));
    settings.acquire_timeout = Duration::from_millis(300);
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("100")))
        .with_resolve_within(within);
    (store, writer)
}

/// Waits until the proxy has caught the armed COMMIT, then brings the database back shortly after.
async fn restore_once_caught(proxy: &order_store::testing::OutageProxy) {
    while !proxy.commit_caught() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    proxy.restore();
}

fn pg_addr() -> std::net::SocketAddr {
    "127.0.0.1:5432".parse().unwrap()
}

/// How many events the store holds, read directly (not through the proxy).
async fn stored_events(db: &TestDb) -> usize {
    let direct = store(db, "100").await;
    direct.read_after(Position::ZERO, 100).await.unwrap().len()
}

/// The connection dies right after the server got COMMIT: the order is placed, its answer lost.
/// The store is back at once, so the writer resolves it itself and answers the order (placed by
/// this request, not a replay), with exactly one order stored.
#[tokio::test]
async fn a_commit_whose_answer_is_lost_is_resolved_to_the_placed_order() {
    let db = TestDb::create().await;
    let proxy = order_store::testing::OutageProxy::start(pg_addr()).await;
    let (_store, writer) = writer_through(&db, &proxy, Duration::from_secs(5)).await;
    proxy.cut_at_next_commit(order_store::testing::AtCommit::Deliver);
    let (placed, ()) = tokio::join!(writer.place(place("10")), restore_once_caught(&proxy));
    let placed = placed.expect("resolved, not an error");
    assert!(!placed.replayed, "this request placed it");
    assert_eq!(placed.order.amount, FiatAmount::parse("10").unwrap());
    assert_eq!(stored_events(&db).await, 1);
}

/// The connection dies before the server got COMMIT: nothing was placed; the writer's retry
/// places the order once.
#[tokio::test]
async fn a_commit_that_never_arrived_is_resolved_by_placing_the_order_once() {
    let db = TestDb::create().await;
    let proxy = order_store::testing::OutageProxy::start(pg_addr()).await;
    let (_store, writer) = writer_through(&db, &proxy, Duration::from_secs(5)).await;
    proxy.cut_at_next_commit(order_store::testing::AtCommit::Drop);
    let (placed, ()) = tokio::join!(writer.place(place("10")), restore_once_caught(&proxy));
    assert!(!placed.expect("placed by the retry").replayed);
    assert_eq!(stored_events(&db).await, 1);
}

/// The store stays away past the writer's window: the answer is "outcome unknown", never
/// "nothing stored". Once it is back, a retry with the same key answers the stored order.
#[tokio::test]
async fn a_commit_still_unknown_at_the_deadline_says_so_and_a_retry_is_exact() {
    let db = TestDb::create().await;
    let proxy = order_store::testing::OutageProxy::start(pg_addr()).await;
    let (_store, writer) = writer_through(&db, &proxy, Duration::from_millis(800)).await;
    proxy.cut_at_next_commit(order_store::testing::AtCommit::Deliver);
    let command = place("10");
    let unknown = writer.place(command.clone()).await;
    assert!(
        matches!(
            unknown,
            Err(PlaceError::Store(StoreError::OutcomeUnknown(_)))
        ),
        "{unknown:?}"
    );
    proxy.restore();
    let retry = writer.place(command).await.unwrap();
    assert!(retry.replayed, "the first request placed it");
    assert_eq!(retry.order.amount, FiatAmount::parse("10").unwrap());
    assert_eq!(stored_events(&db).await, 1);
}

/// Two operators run `projector rebuild` at once: the second is refused at once, the first ends
/// with every row (overlapping rebuilds used to empty each other's table and lose rows for good).
#[tokio::test(flavor = "multi_thread")]
async fn a_second_concurrent_rebuild_is_refused_and_the_first_loses_nothing() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = Arc::new(CqrsOrderWriter::new(
        store.clone(),
        BuyOrderServices::new(rate("48478.80")),
    ));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for _ in 0..50 {
                    writer.place(place("1.23")).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let model = PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    let started = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let first = {
        let (model, store, started) = (model.clone(), store.clone(), started.clone());
        tokio::spawn(async move {
            // still running (and holding its lock) for a while after it signals it has started,
            // whatever the size of its steps: progress is reported with the lock held
            model
                .rebuild(&store, 1, &|_, _| {
                    started.store(true, std::sync::atomic::Ordering::SeqCst);
                    std::thread::sleep(Duration::from_millis(300));
                })
                .await
        })
    };
    while !started.load(std::sync::atomic::Ordering::SeqCst) {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let second = model.rebuild(&store, 100, &|_, _| {}).await;
    assert!(
        matches!(&second, Err(StoreError::Unavailable(m)) if m.message().contains("another")),
        "{second:?}"
    );
    assert_eq!(first.await.unwrap().unwrap(), Position(400));
    let rows = walk(&model, &Scope::All).await;
    assert_eq!(rows.len(), 400, "every order in the read table");
    // The lock is released: the next rebuild runs.
    assert_eq!(
        model.rebuild(&store, 100, &|_, _| {}).await.unwrap(),
        Position(400)
    );
}

/// A session frozen mid-transaction while it holds the ledger row's lock (here an operator's
/// `cap set` whose client host froze or was partitioned at COMMIT: the socket stays open,
/// nothing passes). PostgreSQL ends that session after DB_IDLE_IN_TRANSACTION_TIMEOUT_MS, so a
/// writer is held up for about that long, not until the server's keepalive gives up hours
/// later; the frozen change is rolled back.
#[tokio::test(flavor = "multi_thread")]
async fn a_session_frozen_holding_the_ledger_stalls_writers_only_briefly() {
    let db = TestDb::create().await;
    let proxy = order_store::testing::OutageProxy::start(pg_addr()).await;
    let timeouts = |url: &str| {
        let mut settings = PgSettings::for_url(url);
        settings.idle_in_transaction_timeout = Duration::from_secs(1);
        settings.lock_timeout = Duration::from_secs(5);
        settings
    };
    let frozen_store = PgEventStore::open(&timeouts(&proxy.url_for(db.url())), BtcCap::DEFAULT)
        .await
        .unwrap();
    let other_store = PgEventStore::open(&timeouts(db.url()), BtcCap::DEFAULT)
        .await
        .unwrap();
    let other = CqrsOrderWriter::new(other_store.clone(), BuyOrderServices::new(rate("100")));
    proxy.cut_at_next_commit(order_store::testing::AtCommit::Freeze);
    let stuck = tokio::spawn(async move {
        frozen_store
            .set_cap(BtcCap::new(Satoshis::from_btc(50)), "frozen operator")
            .await
    });
    while !proxy.commit_caught() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = std::time::Instant::now();
    let placed = tokio::time::timeout(Duration::from_secs(20), other.place(place("20")))
        .await
        .expect("the writer was stalled by the frozen transaction");
    assert!(placed.is_ok(), "{placed:?}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "stalled {:?}",
        started.elapsed()
    );
    let stored = other_store.read_after(Position::ZERO, 10).await.unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(
        other_store.ledger().await.unwrap().cap().limit(),
        Satoshis::from_btc(100),
        "the frozen cap change was rolled back"
    );
    stuck.abort();
}

/// A writer that freezes with its batch's statement in flight holds nothing: the statement is its
/// own transaction, run to its end by the server (or never started), so no lock waits on the
/// writer's host. Another writer is not held up at all, and the frozen order is not stored.
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_frozen_with_its_batch_in_flight_holds_nothing() {
    let db = TestDb::create().await;
    let proxy = order_store::testing::OutageProxy::start(pg_addr()).await;
    let (_frozen_store, frozen) = writer_through(&db, &proxy, Duration::from_secs(30)).await;
    let other_store = store(&db, "100").await;
    let other = CqrsOrderWriter::new(other_store.clone(), BuyOrderServices::new(rate("100")));
    proxy.cut_at_next_commit(order_store::testing::AtCommit::Freeze);
    let stuck = tokio::spawn(async move { frozen.place(place("10")).await });
    while !proxy.commit_caught() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let placed = tokio::time::timeout(Duration::from_secs(2), other.place(place("20")))
        .await
        .expect("a frozen writer held the others up");
    assert!(placed.is_ok(), "{placed:?}");
    let stored = other_store.read_after(Position::ZERO, 10).await.unwrap();
    assert_eq!(
        stored.len(),
        1,
        "the frozen statement never reached the server"
    );
    assert_eq!(stored[0].event.satoshis(), Satoshis::new(20_000_000));
    stuck.abort();
}

/// A store that only writes keeps no LISTEN session; one that waits for events opens it then.
#[tokio::test]
async fn only_a_store_that_waits_for_events_listens() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("100")));
    writer.place(place("10")).await.unwrap();
    let listening = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity \
             WHERE datname = current_database() AND query ILIKE 'LISTEN%'",
        )
        .fetch_one(store.pool())
        .await
        .unwrap()
    };
    assert_eq!(listening().await, 0, "the writer's store does not listen");
    store
        .wait_for_events_after(Position(1), Duration::from_millis(200))
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while listening().await == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "no LISTEN after waiting"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A rebuild over several bulk steps (COPY into the fresh table while the next step is read):
/// every event becomes exactly its row, and the checkpoint covers them all.
#[tokio::test(flavor = "multi_thread")]
async fn a_rebuild_over_many_steps_copies_every_event_exactly() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    order_store::testing::bulk_events(store.pool(), 12_345).await;
    let model = PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    let reached = model.rebuild(&store, 500, &|_, _| {}).await.unwrap();
    assert_eq!(reached, Position(12_345));
    assert_eq!(model.checkpoint().await.unwrap(), Position(12_345));
    let log = store.read_after(Position::ZERO, 20_000).await.unwrap();
    let newest_first: Vec<OrderId> = log.iter().rev().map(|e| e.aggregate_id).collect();
    assert_eq!(walk(&model, &Scope::All).await, newest_first);
    let bulk = Scope::Client(ClientId::parse("bulk").unwrap());
    assert_eq!(
        walk(&model, &bulk).await.len(),
        12_345,
        "every row has its client"
    );
    let one = model.get(newest_first[777], &bulk).await.unwrap().unwrap();
    let expected = log
        .iter()
        .find(|e| e.aggregate_id == newest_first[777])
        .unwrap();
    let placed = expected.event.as_placed().unwrap();
    assert_eq!(one, OrderView::from(placed), "every column exact");
}

/// Another aggregate's events in the same `events` table (an application sharing the database):
/// inserted while the ledger row is locked, they do not wait for it; they take no position and
/// no satoshis; the log, the ledger and a rebuild see BuyOrder's events only, gap-free.
#[tokio::test]
async fn another_aggregates_events_neither_take_the_ledger_nor_enter_the_log() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("100")));
    writer.place(place("1")).await.unwrap();

    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM btc_ledger FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let mut other = store.pool().begin().await.unwrap();
    sqlx::query("SET LOCAL lock_timeout = '500ms'")
        .execute(&mut *other)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('Invoice', 'inv-1', 1, 'InvoiceIssued', '1.0', \
         '{\"InvoiceIssued\":{\"total\":12}}', '{}')",
    )
    .execute(&mut *other)
    .await
    .expect("another aggregate's insert does not wait for the ledger");
    other.commit().await.unwrap();
    holder.rollback().await.unwrap();

    writer.place(place("2")).await.unwrap();
    let log = store.read_after(Position::ZERO, 10).await.unwrap();
    let positions: Vec<u64> = log.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, [1, 2], "BuyOrder's events only, gap-free");
    assert_eq!(store.head().await.unwrap(), Position(2));
    assert_eq!(
        store.ledger().await.unwrap().sold(),
        Satoshis::new(3_000_000),
        "the invoice took nothing"
    );
    let foreign_position: Option<i64> =
        sqlx::query_scalar("SELECT position FROM events WHERE aggregate_type = 'Invoice'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(foreign_position, None);
    let model = PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    assert_eq!(
        model.rebuild(&store, 10, &|_, _| {}).await.unwrap(),
        Position(2)
    );
    assert_eq!(walk(&model, &Scope::All).await.len(), 2);
}

/// The log is read by its position index whatever PostgreSQL knows of the table. A fresh store
/// under load has no statistics until autovacuum's first ANALYZE; naming the aggregate type in
/// the query had PostgreSQL AND a bitmap of the primary key's every BuyOrder entry into each read
/// then (8 ms for the relay's ~60 events at 50,000 rows, growing with the table: half of
/// PostgreSQL's CPU in the benchmark). Only BuyOrder's events can have a position (migration
/// 1009), so the read names the position alone.
#[tokio::test]
async fn the_log_is_read_by_its_position_index_with_or_without_statistics() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    sqlx::query("ALTER TABLE events SET (autovacuum_enabled = false)")
        .execute(store.pool())
        .await
        .unwrap();
    order_store::testing::bulk_events(store.pool(), 50_000).await;
    let analyzed: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT greatest(last_analyze, last_autoanalyze) FROM pg_stat_user_tables \
         WHERE relname = 'events'",
    )
    .fetch_one(store.pool())
    .await
    .unwrap();
    assert_eq!(analyzed, None, "the table has no statistics yet");

    for stage in ["no statistics", "analyzed"] {
        let plan = store
            .explain_read_log_after(Position(49_000), 1000)
            .await
            .unwrap();
        assert!(
            plan.contains("Index Scan using events_position on events"),
            "{stage}: {plan}"
        );
        for bad in ["Bitmap", "events_pkey", "Sort", "Seq Scan"] {
            assert!(!plan.contains(bad), "{stage}: {bad} in {plan}");
        }
        sqlx::query("ANALYZE events")
            .execute(store.pool())
            .await
            .unwrap();
    }
    let read = store
        .read_after_with_unreadable(Position(49_990), 1000)
        .await
        .unwrap();
    let positions: Vec<u64> = read.events.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, (49_991..=50_000).collect::<Vec<_>>());
}

/// Only BuyOrder's events have positions, whatever path writes them (migration 1009), which is
/// what lets the log be read by position alone.
#[tokio::test]
async fn no_other_aggregates_event_can_take_a_position() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    sqlx::query(
        "INSERT INTO events (aggregate_type, aggregate_id, sequence, event_type, event_version, \
         payload, metadata) VALUES ('Invoice', 'inv-1', 1, 'InvoiceIssued', '1.0', \
         '{\"InvoiceIssued\":{\"total\":12}}', '{}')",
    )
    .execute(store.pool())
    .await
    .unwrap();
    let pool = store.pool();
    let refused = |sql: &'static str| async move {
        let err = sqlx::query(sql).execute(pool).await.unwrap_err();
        assert_eq!(
            err.as_database_error().and_then(|e| e.constraint()),
            Some("events_position_is_buy_order"),
            "{sql}: {err}"
        );
    };
    refused("UPDATE events SET position = 1 WHERE aggregate_type = 'Invoice'").await;
    // nor through the group committer's function, called with another aggregate's event: the
    // batch fails whole, nothing stored, the ledger unmoved
    refused(
        "SELECT * FROM buy_orders_append(ARRAY['Invoice'], ARRAY['inv-2'], ARRAY[1::bigint], \
         ARRAY['InvoiceIssued'], ARRAY['1.0'], ARRAY['{\"InvoiceIssued\":{}}'], ARRAY['{}'])",
    )
    .await;
    let stored: i64 =
        sqlx::query_scalar("SELECT count(*) FROM events WHERE aggregate_id = 'inv-2'")
            .fetch_one(store.pool())
            .await
            .unwrap();
    assert_eq!(stored, 0);
    assert_eq!(store.head().await.unwrap(), Position::ZERO);
}

#[tokio::test]
async fn a_newer_minor_is_read_and_a_newer_major_is_passed_over_loudly_never_misread() {
    use order_store::testing::store_versioned;
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("100")));

    // 1.4.0 added a field this reader does not know: read, the field ignored (docs/events.md).
    let minor = place("1");
    store_versioned(store.pool(), &minor, "1.4.0", |fields| {
        fields.insert("fee_sats".into(), 12.into());
    })
    .await;
    let log = store.read_after(Position::ZERO, 10).await.unwrap();
    assert_eq!(log[0].event.as_placed().unwrap().order_id, minor.order_id());
    let replay = writer.place(minor.clone()).await.unwrap();
    assert!(
        replay.replayed,
        "the retry of its key answers the stored order"
    );

    // 2.0.0 changed the shape: not read into 1.x with what changed dropped. The log passes
    // it over and says so; the events after it still flow.
    let major = place("2");
    store_versioned(store.pool(), &major, "2.0.0", |_| {}).await;
    let after = writer.place(place("3")).await.unwrap();
    let read = store
        .read_after_with_unreadable(Position(1), 10)
        .await
        .unwrap();
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].event.as_placed().unwrap(), &after.order);
    assert_eq!(read.unreadable.len(), 1);
    let unreadable = &read.unreadable[0];
    assert_eq!(unreadable.position, Position(2));
    assert!(
        unreadable.reason.contains("2.0.0 is newer than 1.0.0"),
        "{}",
        unreadable.reason
    );
    assert_eq!(read.reached(), Some(Position(3)));
    assert_eq!(
        store.read_after(Position(1), 10).await.unwrap(),
        read.events
    );
    let retry = writer.place(major).await;
    assert!(
        matches!(retry, Err(PlaceError::Store(_))),
        "a retry of that key is not answered from a misread event: {retry:?}"
    );
}

/// A page after a reference is read in one snapshot: while the projector applies orders one by
/// one, a page after an order being projected is either 404 `unknown_reference` (not yet) or
/// the rows before it (now), never an empty last page. Before, the page and the reference's
/// existence were two statements, and an order projected between them made a 200 with an
/// empty page and no `last_reference`: the client thought it had reached the end.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_after_an_order_being_projected_is_404_or_its_rows_never_an_empty_end() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("50000")));
    for _ in 0..310 {
        writer.place(place("1.00")).await.unwrap();
    }
    let log = store.read_after(Position::ZERO, 1000).await.unwrap();
    let model = PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    model.apply(&log[..10]).await.unwrap();
    let applier = {
        let (model, log) = (model.clone(), log.clone());
        tokio::spawn(async move {
            for event in &log[10..] {
                model.apply(std::slice::from_ref(event)).await.unwrap();
            }
        })
    };
    let mut seen_unknown = 0;
    for (target, event) in log.iter().enumerate().skip(10) {
        for scope in [
            Scope::All,
            Scope::Client(ClientId::parse("pg-test").unwrap()),
        ] {
            loop {
                let page = model
                    .page(
                        PageRequest {
                            after: Some(event.aggregate_id),
                            size: PageSize::new(5).unwrap(),
                        },
                        &scope,
                    )
                    .await;
                match page {
                    Err(ReadError::UnknownReference(_)) => seen_unknown += 1,
                    Ok(page) => {
                        assert!(
                            !page.rows.is_empty(),
                            "order {target} of the log: an empty page after a known reference, \
                             with {target} rows before it"
                        );
                        break;
                    }
                    Err(other) => panic!("{other}"),
                }
                tokio::task::yield_now().await;
            }
        }
    }
    applier.await.unwrap();
    assert!(seen_unknown > 0, "the reads raced the projection");
}

/// Opening a store where nothing listens fails within the acquire timeout the settings give,
/// for the write store (whose migrations run on a pool of their own) and the read table alike.
#[tokio::test]
async fn opening_a_store_where_nothing_listens_fails_within_the_acquire_timeout() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut settings = PgSettings::for_url(&format!("postgres://postgres@127.0.0.1:{port}/none"));
    settings.acquire_timeout = Duration::from_millis(300);
    let opened = tokio::time::timeout(
        Duration::from_secs(10),
        PgEventStore::open(&settings, BtcCap::DEFAULT),
    )
    .await
    .expect("the write store's open gives up within its acquire timeout, not sqlx's 30 s");
    assert!(matches!(opened, Err(StoreError::Unavailable(_))));
    let read = tokio::time::timeout(Duration::from_secs(10), PgReadModel::open(&settings))
        .await
        .expect("the read table's open too");
    assert!(read.is_err());
}
