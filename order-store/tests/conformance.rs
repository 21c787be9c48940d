//! One contract, every backend: what the services rely on from a store, written once and run
//! against the in-memory backend and the real PostgreSQL (a fresh database per test).
//!
//! A new backend passes this suite before anything else; `conformance!` below adds it. What only
//! one backend has (group commit, LISTEN/NOTIFY, TLS, migrations, a user's own cqrs-es query) is
//! tested in that backend's own file (`postgres.rs`, `group_commit.rs`, `memory.rs`).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::AggregateError;
use order_domain::testing::order;
use order_domain::*;
use order_store::memory::{MemEventStore, MemReadModel};
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::*;

/// What a backend is, for this suite: an event store the writer runs on, with its log and
/// ledger, and a read table.
trait Store: NewAggregate + Ledger + EventLog + Clone + 'static {}
impl<S: NewAggregate + Ledger + EventLog + Clone + 'static> Store for S {}

/// A backend under test: its store, its read table, and whatever must outlive them (the test's
/// database).
struct Backend<S, M> {
    store: S,
    model: M,
    _db: Option<TestDb>,
}

async fn memory(cap: BtcCap) -> Backend<MemEventStore, MemReadModel> {
    Backend {
        store: MemEventStore::new(cap),
        model: MemReadModel::new(),
        _db: None,
    }
}

async fn postgres(cap: BtcCap) -> Backend<PgEventStore, PgReadModel> {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    Backend {
        store: PgEventStore::open(&settings, cap).await.unwrap(),
        model: PgReadModel::open(&settings).await.unwrap(),
        _db: Some(db),
    }
}

fn writer<S: Store>(store: &S, rate: &str) -> Arc<CqrsOrderWriter<S>>
where
    S::AC: Send,
{
    let prices = FixedSource::uniform(BtcRate::parse(rate).unwrap());
    Arc::new(CqrsOrderWriter::new(
        store.clone(),
        BuyOrderServices::new(Arc::new(prices)),
    ))
}

async fn sold<S: Store>(store: &S) -> Satoshis {
    let (cap, remaining) = (store.cap().await.unwrap(), store.remaining().await.unwrap());
    assert!(
        remaining <= cap,
        "{remaining} remaining under a cap of {cap}"
    );
    cap.saturating_sub(remaining)
}

async fn positions<S: Store>(store: &S) -> Vec<u64> {
    let log = store.read_after(Position::ZERO, 10_000).await.unwrap();
    log.iter().map(|e| e.position.0).collect()
}

/// A commit on an aggregate loaded before another commit is a conflict, and adds nothing.
async fn a_commit_on_a_stale_aggregate_is_a_conflict<S: Store>(store: S)
where
    S::AC: Send,
{
    let cmd = order("1");
    let id = cmd.order_id().to_string();
    let stale = store.load_aggregate(&id).await.unwrap();
    writer(&store, "100").place(cmd).await.unwrap();
    let stored = store.load_events(&id).await.unwrap();
    let lost = store
        .commit(vec![stored[0].payload.clone()], stale, Default::default())
        .await;
    assert!(
        matches!(lost, Err(AggregateError::AggregateConflict)),
        "{lost:?}"
    );
    assert_eq!(store.load_events(&id).await.unwrap().len(), 1);
    assert_eq!(
        sold(&store).await,
        Satoshis::new(1_000_000),
        "nothing added"
    );
    assert_eq!(positions(&store).await, [1]);
}

/// An order over the cap is refused with what remains, stores nothing and takes no position;
/// reaching the cap exactly is allowed.
async fn the_cap_refuses_says_what_remains_and_stores_nothing<S: Store>(store: S)
where
    S::AC: Send,
{
    // 1 BTC cap; at rate 100, 1 USD = 0.01 BTC.
    let writer = writer(&store, "100");
    writer.place(order("60")).await.unwrap();
    match writer.place(order("41")).await {
        Err(PlaceError::Refused(BuyOrderError::CapExceeded {
            requested,
            remaining,
        })) => {
            assert_eq!(requested, Satoshis::new(41_000_000));
            assert_eq!(remaining, Satoshis::new(40_000_000));
        }
        other => panic!("expected CapExceeded, got {other:?}"),
    }
    assert_eq!(
        positions(&store).await,
        [1],
        "nothing of the refusal stored"
    );
    writer.place(order("40")).await.unwrap();
    assert_eq!(store.remaining().await.unwrap(), Satoshis::ZERO);
    assert_eq!(
        positions(&store).await,
        [1, 2],
        "gap-free across the refusal"
    );
}

/// Identical requests, concurrently: one order, one original, every answer the same. A
/// duplicate is found before the cap is checked, so with a cap that fits the order once but not
/// twice (0.002469 BTC under 0.003) they all still answer it.
async fn identical_places_give_one_order<S: Store>(store: S)
where
    S::AC: Send,
{
    let writer = writer(&store, "50000");
    let cmd = order("123.45");
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let (writer, cmd) = (writer.clone(), cmd.clone());
            tokio::spawn(async move { writer.place(cmd).await })
        })
        .collect();
    let mut originals = 0;
    let mut orders = HashSet::new();
    for task in tasks {
        let placement = task.await.unwrap().unwrap();
        originals += usize::from(!placement.replayed);
        assert_eq!(
            placement.position,
            Some(Position(1)),
            "placed or replayed, the order's own position"
        );
        orders.insert(serde_json::to_string(&placement.order).unwrap());
    }
    assert_eq!(originals, 1);
    assert_eq!(orders.len(), 1, "every request sees the same stored order");
    assert_eq!(positions(&store).await, [1]);
}

/// The same key with another amount is refused, not replayed.
async fn a_reused_key_with_another_amount_is_refused<S: Store>(store: S)
where
    S::AC: Send,
{
    let writer = writer(&store, "50000");
    let cmd = order("10");
    writer.place(cmd.clone()).await.unwrap();
    assert!(writer.place(cmd.clone()).await.unwrap().replayed);
    let reuse = PlaceBuyOrder {
        amount: FiatAmount::parse("11").unwrap(),
        ..cmd
    };
    assert!(matches!(
        writer.place(reuse).await,
        Err(PlaceError::Refused(
            BuyOrderError::IdempotencyKeyReused { .. }
        ))
    ));
}

/// Sixty orders of 1..=9 % of a 1 BTC cap at once: the stored total never exceeds the cap,
/// the ledger equals the log, and an order is refused only when it did not fit.
async fn concurrent_orders_never_cross_the_cap<S: Store>(store: S)
where
    S::AC: Send,
{
    let writer = writer(&store, "100");
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let writer = writer.clone();
            let amount = format!("{}", i % 9 + 1);
            tokio::spawn(async move { writer.place(order(&amount)).await })
        })
        .collect();
    let mut refused = Vec::new();
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(PlaceError::Refused(BuyOrderError::CapExceeded { requested, .. })) => {
                refused.push(requested)
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let log = store.read_after(Position::ZERO, 1000).await.unwrap();
    let total: u64 = log.iter().map(|e| e.event.satoshis().count()).sum();
    assert!(total <= Satoshis::from_btc(1).count());
    assert_eq!(sold(&store).await.count(), total, "the ledger is the log");
    let remaining = Satoshis::from_btc(1).count() - total;
    assert!(!refused.is_empty());
    for size in refused {
        assert!(
            size.count() > remaining,
            "refused {size} while {remaining} remained"
        );
    }
}

/// Positions are 1..N in commit order; a reader waiting for events is woken; reads after any
/// position, including the largest, answer.
async fn the_log_is_gap_free_and_wakes_waiting_readers<S: Store>(store: S)
where
    S::AC: Send,
{
    let writer = writer(&store, "50000");
    assert!(!store
        .wait_for_events_after(Position::ZERO, Duration::from_millis(10))
        .await
        .unwrap());
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_events_after(Position::ZERO, Duration::from_secs(20))
                .await
        })
    };
    let places: Vec<_> = (0..50)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.place(order("1")).await.unwrap() })
        })
        .collect();
    futures::future::join_all(places).await;
    assert!(tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("woken")
        .unwrap()
        .unwrap());
    assert_eq!(positions(&store).await, (1..=50).collect::<Vec<_>>());
    let tail = store.read_after(Position(45), 3).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        [46, 47, 48]
    );
    assert_eq!(store.head().await.unwrap(), Position(50));
    assert!(store.read_after(Position(50), 10).await.unwrap().is_empty());
    assert!(store
        .read_after(Position(u64::MAX), 10)
        .await
        .unwrap()
        .is_empty());
}

/// Applying overlapping batches applies each event once; pages walk every order newest first,
/// exactly once; a row is the event; an unknown reference is an error, an unknown order none.
async fn the_read_table_is_idempotent_and_pages_newest_first<S, M>(store: S, model: M)
where
    S: Store,
    S::AC: Send,
    M: ReadModel + ReadModelWriter,
{
    let writer = writer(&store, "48478.80");
    for _ in 0..25 {
        writer.place(order("123.45")).await.unwrap();
    }
    let log = store.read_after(Position::ZERO, 1000).await.unwrap();
    model.apply(&log[..10]).await.unwrap();
    model.apply(&log[5..]).await.unwrap(); // overlaps: applied once
    model.apply(&log).await.unwrap(); // all again: nothing changes
    assert_eq!(model.checkpoint().await.unwrap(), Position(25));

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let request = PageRequest {
            after,
            size: PageSize::new(10).unwrap(),
        };
        let page = model.page(request, &Scope::All).await.unwrap();
        if page.rows.is_empty() {
            assert_eq!(page.last_reference, None);
            break;
        }
        after = page.last_reference;
        seen.extend(page.rows);
    }
    let newest_first: Vec<OrderId> = log.iter().rev().map(|e| e.aggregate_id).collect();
    assert_eq!(
        seen.iter().map(|row| row.id).collect::<Vec<_>>(),
        newest_first
    );
    let oldest = seen.last().unwrap();
    assert_eq!(oldest, &OrderView::from(log[0].event.as_placed().unwrap()));
    assert_eq!(
        oldest.btc_rate.to_string(),
        "48478.80",
        "the source's decimals kept"
    );
    assert_eq!(oldest.currency_amount.to_string(), "123.45");

    let unknown = OrderId::parse("00000000-0000-4000-8000-000000000001").unwrap();
    let request = PageRequest {
        after: Some(unknown),
        size: PageSize::DEFAULT,
    };
    assert!(matches!(
        model.page(request, &Scope::All).await,
        Err(ReadError::UnknownReference(_))
    ));
    assert!(model.get(unknown, &Scope::All).await.unwrap().is_none());
    let third = seen[3].id;
    assert_eq!(
        model.get(third, &Scope::All).await.unwrap().unwrap().id,
        third
    );
}

/// Every answer says where its order stands in the log (a replay too, read back from the
/// store), and a read table waits for a position until it has applied it, or until its bound.
async fn answers_carry_positions_and_reads_wait_for_them<S, M>(store: S, model: M)
where
    S: Store,
    S::AC: Send,
    M: ReadModel + ReadModelWriter + 'static,
{
    let writer = writer(&store, "50000");
    let orders: Vec<_> = (0..3).map(|_| order("10")).collect();
    for (at, order) in orders.iter().enumerate() {
        let placed = writer.place(order.clone()).await.unwrap();
        assert_eq!(
            (placed.replayed, placed.position),
            (false, Some(Position(at as u64 + 1)))
        );
    }
    // A fresh writer holds nothing in memory: the replay's position comes from the store.
    let replay = self::writer(&store, "50000")
        .place(orders[1].clone())
        .await
        .unwrap();
    assert_eq!(
        (replay.replayed, replay.position),
        (true, Some(Position(2)))
    );

    let model = Arc::new(model);
    let log = store.read_after(Position::ZERO, 10).await.unwrap();
    model.apply(&log[..1]).await.unwrap();
    assert!(model
        .wait_applied(Position(1), Duration::ZERO)
        .await
        .unwrap());
    assert!(
        !model
            .wait_applied(Position(3), Duration::from_millis(50))
            .await
            .unwrap(),
        "not applied: the bound passes"
    );
    let applier = {
        let model = model.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            model.apply(&log[1..]).await.unwrap();
        })
    };
    let waited = std::time::Instant::now();
    assert!(model
        .wait_applied(Position(3), Duration::from_secs(20))
        .await
        .unwrap());
    assert!(waited.elapsed() < Duration::from_secs(20));
    applier.await.unwrap();
    let third = orders[2].order_id();
    assert!(model.get(third, &Scope::All).await.unwrap().is_some());
}

/// The suite for one backend: `$make(cap)` gives a fresh one.
macro_rules! conformance {
    ($backend:ident, $make:path) => {
        mod $backend {
            use super::*;

            fn cap(btc: &str) -> BtcCap {
                btc.parse().unwrap()
            }

            #[tokio::test]
            async fn a_commit_on_a_stale_aggregate_is_a_conflict() {
                let backend = $make(BtcCap::DEFAULT).await;
                super::a_commit_on_a_stale_aggregate_is_a_conflict(backend.store).await;
            }

            #[tokio::test]
            async fn the_cap_refuses_says_what_remains_and_stores_nothing() {
                let backend = $make(cap("1")).await;
                super::the_cap_refuses_says_what_remains_and_stores_nothing(backend.store).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn identical_places_give_one_order() {
                let backend = $make(BtcCap::DEFAULT).await;
                super::identical_places_give_one_order(backend.store).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn identical_places_of_an_order_that_fits_the_cap_once_all_answer_it() {
                let backend = $make(cap("0.003")).await;
                super::identical_places_give_one_order(backend.store).await;
            }

            #[tokio::test]
            async fn a_reused_key_with_another_amount_is_refused() {
                let backend = $make(BtcCap::DEFAULT).await;
                super::a_reused_key_with_another_amount_is_refused(backend.store).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn concurrent_orders_never_cross_the_cap() {
                let backend = $make(cap("1")).await;
                super::concurrent_orders_never_cross_the_cap(backend.store).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn the_log_is_gap_free_and_wakes_waiting_readers() {
                let backend = $make(BtcCap::DEFAULT).await;
                super::the_log_is_gap_free_and_wakes_waiting_readers(backend.store).await;
            }

            #[tokio::test(flavor = "multi_thread")]
            async fn answers_carry_positions_and_reads_wait_for_them() {
                let backend = $make(BtcCap::DEFAULT).await;
                super::answers_carry_positions_and_reads_wait_for_them(
                    backend.store,
                    backend.model,
                )
                .await;
            }

            #[tokio::test]
            async fn the_read_table_is_idempotent_and_pages_newest_first() {
                let backend = $make(BtcCap::DEFAULT).await;
                super::the_read_table_is_idempotent_and_pages_newest_first(
                    backend.store,
                    backend.model,
                )
                .await;
            }
        }
    };
}

conformance!(in_memory, memory);
conformance!(on_postgres, postgres);
