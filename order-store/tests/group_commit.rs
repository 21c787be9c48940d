//! Group commit on the real PostgreSQL: many orders in one transaction, each answered exactly as
//! if it had been committed alone at its turn. One fresh database per test.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::persist::EventStoreAggregateContext;
use cqrs_es::{AggregateError, EventStore};
use order_domain::*;
use order_store::postgres::{Batching, PgEventStore, PgReadModel, PgSettings};
use order_store::testing::{every_row, placed_event, AtCommit, OutageProxy, TestDb};
use order_store::*;
use price_feed::FixedSource;

/// At 100 USD per BTC, 1 USD buys 0.01 BTC.
fn services(clock: Option<DateTime<Utc>>) -> BuyOrderServices {
    let mut services = BuyOrderServices::new(Arc::new(
        "USD=100,EUR=100,GBP=100".parse::<FixedSource>().unwrap(),
    ));
    if let Some(at) = clock {
        services.clock = Arc::new(FixedClock(at));
    }
    services
}

fn command(key: IdempotencyKey, amount: &str) -> PlaceBuyOrder {
    PlaceBuyOrder {
        idempotency_key: key,
        ..order_domain::testing::order_for("batcher", amount)
    }
}

fn fresh(amount: &str) -> PlaceBuyOrder {
    command(IdempotencyKey::from_uuid(uuid::Uuid::new_v4()), amount)
}

/// Batches that wait up to `linger` for `max_orders`, one in flight: what arrives together is
/// committed together.
fn gathering(max_orders: usize, linger: Duration) -> Batching {
    Batching {
        max_orders,
        linger,
        in_flight: 1,
    }
}

async fn store(db: &TestDb, cap: &str, batching: Batching) -> PgEventStore {
    PgEventStore::open(
        &PgSettings::for_url(db.url()),
        cap.parse::<BtcCap>().unwrap(),
    )
    .await
    .unwrap()
    .with_batching(batching)
}

/// A context for the first event of `aggregate_id`.
fn new_aggregate(aggregate_id: &str) -> EventStoreAggregateContext<BuyOrder> {
    EventStoreAggregateContext {
        aggregate_id: aggregate_id.to_owned(),
        aggregate: BuyOrder::default(),
        current_sequence: 0,
        current_snapshot: None,
    }
}

/// How many transactions wrote the stored events (distinct `xmin`s).
async fn transactions(store: &PgEventStore) -> i64 {
    sqlx::query_scalar("SELECT count(DISTINCT xmin::text) FROM events")
        .fetch_one(store.pool())
        .await
        .unwrap()
}

const BTC: u64 = 100_000_000;

/// Six commits reach the committer together and go in one transaction, in arrival order, each
/// decided on its own: a refusal for the cap is measured after every order before it, a
/// duplicate conflicts, and neither fails its neighbours. Nothing of a refused order is stored;
/// the ledger equals the sum of the stored orders; positions are 1..3 with no gap.
#[tokio::test]
async fn one_batch_decides_each_order_in_arrival_order() {
    let db = TestDb::create().await;
    let store = store(&db, "1", gathering(6, Duration::from_secs(2))).await;
    let (a, b, c, e, f) = (fresh("1"), fresh("2"), fresh("3"), fresh("4"), fresh("5"));
    let arrivals = vec![
        (a.order_id(), placed_event(&a, 30 * BTC / 100)),
        (b.order_id(), placed_event(&b, 80 * BTC / 100)), // 0.7 left: refused
        (c.order_id(), placed_event(&c, 50 * BTC / 100)),
        (a.order_id(), placed_event(&a, 10 * BTC / 100)), // a again, same sequence: conflict
        (e.order_id(), placed_event(&e, 20 * BTC / 100)), // exactly what is left
        (f.order_id(), placed_event(&f, 1)),              // nothing left
    ];
    // On this single-threaded runtime the tasks reach the committer in the order spawned.
    let tasks: Vec<_> = arrivals
        .into_iter()
        .map(|(id, event)| {
            let store = store.clone();
            tokio::spawn(async move {
                let context = new_aggregate(&id.to_string());
                store.commit(vec![event], context, HashMap::new()).await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    let refused = |outcome: &Result<_, AggregateError<BuyOrderError>>| match outcome {
        Err(AggregateError::UserError(BuyOrderError::CapExceeded {
            requested,
            remaining,
        })) => Some((requested.count(), remaining.count())),
        _ => None,
    };
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert_eq!(
        refused(&outcomes[1]),
        Some((80 * BTC / 100, 70 * BTC / 100))
    );
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    assert!(
        matches!(outcomes[3], Err(AggregateError::AggregateConflict)),
        "{:?}",
        outcomes[3]
    );
    assert!(outcomes[4].is_ok(), "{:?}", outcomes[4]);
    assert_eq!(refused(&outcomes[5]), Some((1, 0)));

    let log = store.read_after(Position::ZERO, 10).await.unwrap();
    let stored: Vec<(u64, OrderId, u64)> = log
        .iter()
        .map(|e| (e.position.0, e.aggregate_id, e.event.satoshis().count()))
        .collect();
    assert_eq!(
        stored,
        [
            (1, a.order_id(), 30 * BTC / 100),
            (2, c.order_id(), 50 * BTC / 100),
            (3, e.order_id(), 20 * BTC / 100)
        ]
    );
    assert_eq!(
        store.ledger().await.unwrap(),
        ledger_at_cap(Satoshis::from_btc(1)),
        "the ledger is the sum of the stored orders"
    );
    assert_eq!(
        transactions(&store).await,
        1,
        "one transaction for the batch"
    );
    // Each answer carries the placed_at that was stored with it.
    for (outcome, logged) in [&outcomes[0], &outcomes[2], &outcomes[4]]
        .into_iter()
        .zip(&log)
    {
        let answered = &outcome.as_ref().unwrap()[0].payload;
        assert_eq!(answered, &logged.event);
        assert!(answered.placed_at() > Utc::now() - chrono::Duration::minutes(1));
    }
}

/// Through the writer, one batch holding five identical requests, a reuse of their key with
/// another amount, and three other orders: one order for the key, every request for it answered
/// consistently with that one order, the reuse refused (or, had it arrived first, the other way
/// round), and the other orders placed, in the same transaction.
#[tokio::test]
async fn a_batch_with_duplicates_and_a_key_reuse_answers_each_exactly() {
    let db = TestDb::create().await;
    let store = store(&db, "100", gathering(9, Duration::from_millis(500))).await;
    let writer = Arc::new(CqrsOrderWriter::new(store.clone(), services(None)));
    let key = IdempotencyKey::from_uuid(uuid::Uuid::new_v4());
    let mut commands = vec![command(key, "10"); 5];
    commands.push(command(key, "11"));
    let others = [fresh("1"), fresh("2"), fresh("3")];
    commands.extend(others.iter().cloned());
    let answers = futures::future::join_all(commands.iter().map(|cmd| {
        let writer = writer.clone();
        let cmd = cmd.clone();
        async move { writer.place(cmd).await }
    }))
    .await;

    let events = store
        .load_events(&command(key, "10").order_id().to_string())
        .await
        .unwrap();
    assert_eq!(events.len(), 1, "one order for the key");
    let stored = events[0].payload.as_placed().unwrap();
    let mut fresh_placements = 0;
    for (cmd, answer) in commands[..6].iter().zip(&answers[..6]) {
        match answer {
            Ok(placement) => {
                assert_eq!(
                    cmd.amount, stored.amount,
                    "only the stored amount is answered"
                );
                assert_eq!(&placement.order, stored, "identical answers");
                fresh_placements += usize::from(!placement.replayed);
            }
            Err(PlaceError::Refused(BuyOrderError::IdempotencyKeyReused { .. })) => {
                assert_ne!(cmd.amount, stored.amount, "refused only for another amount");
            }
            Err(other) => panic!("{other:?}"),
        }
    }
    assert_eq!(fresh_placements, 1, "exactly one request placed it");
    for answer in &answers[6..] {
        let placement = answer.as_ref().unwrap();
        assert!(!placement.replayed);
    }
    assert_eq!(
        store.read_after(Position::ZERO, 100).await.unwrap().len(),
        4
    );
    assert_eq!(
        transactions(&store).await,
        1,
        "the four orders went in one batch"
    );
}

/// Two writers (two processes' stores, each with its own committer), one with its clock a year
/// behind and one a year ahead, under concurrent load: walking the list newest first,
/// `created_at` never increases, because it is stamped where the position is assigned.
#[tokio::test(flavor = "multi_thread")]
async fn created_at_never_increases_down_the_list_with_two_writers() {
    let db = TestDb::create().await;
    let skewed = [
        Utc.with_ymd_and_hms(2025, 11, 26, 0, 0, 0).unwrap(),
        Utc.with_ymd_and_hms(2027, 11, 26, 0, 0, 0).unwrap(),
    ];
    let mut tasks = Vec::new();
    for clock in skewed {
        let store = store(&db, "100", Batching::default()).await;
        let writer = Arc::new(CqrsOrderWriter::new(store, services(Some(clock))));
        for _ in 0..8 {
            let writer = writer.clone();
            tasks.push(tokio::spawn(async move {
                for _ in 0..40 {
                    writer.place(fresh("1")).await.unwrap();
                }
            }));
        }
    }
    for task in tasks {
        task.await.unwrap();
    }
    let log_reader = store(&db, "100", Batching::default()).await;
    let log = log_reader.read_after(Position::ZERO, 1_000).await.unwrap();
    assert_eq!(log.len(), 640);
    let model = PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    model.apply(&log).await.unwrap();
    let listed: Vec<DateTime<Utc>> = every_row(&model, &Scope::All)
        .await
        .into_iter()
        .map(|row| row.created_at)
        .collect();
    assert_eq!(listed.len(), 640);
    let inversions = listed.windows(2).filter(|w| w[0] < w[1]).count();
    assert_eq!(inversions, 0, "an older created_at above a newer one");
    let now = Utc::now();
    assert!(
        listed
            .iter()
            .all(|at| *at > now - chrono::Duration::minutes(5) && *at <= now),
        "stamped by the database's clock, not the writers' skewed ones"
    );
}

/// A batch that fails as a whole with an answer from the database (here: the ledger's lock held
/// past `lock_timeout`) answers each of its orders "unavailable" and stores none of them; the
/// same orders succeed once the lock is free.
#[tokio::test]
async fn a_failed_batch_answers_each_order_and_stores_none() {
    let db = TestDb::create().await;
    let mut settings = PgSettings::for_url(db.url());
    settings.lock_timeout = Duration::from_millis(300);
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap()
        .with_batching(gathering(4, Duration::from_millis(500)));
    let writer = Arc::new(CqrsOrderWriter::new(store.clone(), services(None)));
    let mut holder = store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM btc_ledger FOR UPDATE")
        .execute(&mut *holder)
        .await
        .unwrap();
    let commands: Vec<_> = (1..=4).map(|i| fresh(&i.to_string())).collect();
    let place_all = || {
        futures::future::join_all(commands.iter().map(|cmd| {
            let writer = writer.clone();
            let cmd = cmd.clone();
            async move { writer.place(cmd).await }
        }))
    };
    for answer in place_all().await {
        assert!(
            matches!(answer, Err(PlaceError::Store(StoreError::Unavailable(_)))),
            "{answer:?}"
        );
    }
    holder.rollback().await.unwrap();
    assert!(store
        .read_after(Position::ZERO, 10)
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.ledger().await.unwrap().sold(), Satoshis::ZERO);
    for answer in place_all().await {
        assert!(!answer.unwrap().replayed, "placed now, by these requests");
    }
    assert_eq!(store.read_after(Position::ZERO, 10).await.unwrap().len(), 4);
}

/// The batch's statement reaches the server and commits, and its answer is lost with the
/// connection: every order of the batch is in doubt, and each is resolved by its writer to the
/// order it placed (not a replay), each stored exactly once.
#[tokio::test]
async fn a_batch_whose_answer_is_lost_resolves_every_order_once() {
    let db = TestDb::create().await;
    let proxy = OutageProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut settings = PgSettings::for_url(&proxy.url_for(db.url()));
    settings.acquire_timeout = Duration::from_millis(300);
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap()
        .with_batching(gathering(5, Duration::from_millis(500)));
    let writer = Arc::new(
        CqrsOrderWriter::new(store.clone(), services(None))
            .with_resolve_within(Duration::from_secs(5)),
    );
    proxy.cut_at_next_commit(AtCommit::Deliver);
    let restore = async {
        while !proxy.commit_caught() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
        proxy.restore();
    };
    let commands: Vec<_> = (1..=5).map(|i| fresh(&i.to_string())).collect();
    let (answers, ()) = tokio::join!(
        futures::future::join_all(commands.iter().map(|cmd| {
            let writer = writer.clone();
            let cmd = cmd.clone();
            async move { writer.place(cmd).await }
        })),
        restore
    );
    for (cmd, answer) in commands.iter().zip(answers) {
        let placement = answer.expect("resolved, not an error");
        assert!(!placement.replayed, "each request placed its own order");
        assert_eq!(placement.order.amount, cmd.amount);
    }
    let direct = PgEventStore::open(&PgSettings::for_url(db.url()), BtcCap::DEFAULT)
        .await
        .unwrap();
    assert_eq!(
        direct.read_after(Position::ZERO, 10).await.unwrap().len(),
        5
    );
    assert_eq!(
        transactions(&direct).await,
        1,
        "all five in the delivered batch"
    );
}

/// A row the database cannot take at all (an aggregate id with a NUL byte, which no `text` can
/// hold) fails the batch's statement; the committer then commits the batch row by row, so that
/// row fails alone and its neighbours are placed.
#[tokio::test]
async fn a_row_the_database_refuses_fails_alone() {
    let db = TestDb::create().await;
    let store = store(&db, "100", gathering(3, Duration::from_secs(2))).await;
    let (a, b, c) = (fresh("1"), fresh("2"), fresh("3"));
    let ids = [
        a.order_id().to_string(),
        "not\0text".to_owned(),
        c.order_id().to_string(),
    ];
    let events = [
        placed_event(&a, 1_000),
        placed_event(&b, 2_000),
        placed_event(&c, 3_000),
    ];
    let tasks: Vec<_> = ids
        .into_iter()
        .zip(events)
        .map(|(id, event)| {
            let store = store.clone();
            tokio::spawn(async move {
                store
                    .commit(vec![event], new_aggregate(&id), HashMap::new())
                    .await
            })
        })
        .collect();
    let mut outcomes = Vec::new();
    for task in tasks {
        outcomes.push(task.await.unwrap());
    }
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    assert!(
        matches!(outcomes[1], Err(AggregateError::UnexpectedError(_))),
        "{:?}",
        outcomes[1]
    );
    assert!(outcomes[2].is_ok(), "{:?}", outcomes[2]);
    let stored: Vec<u64> = store
        .read_after(Position::ZERO, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.event.satoshis().count())
        .collect();
    assert_eq!(stored, [1_000, 3_000]);
    assert_eq!(store.ledger().await.unwrap().sold(), Satoshis::new(4_000));
}

/// Loads waiting together are read with one query: each gets exactly its own aggregate's
/// events, also when the same aggregate is asked for twice in one group, and an unknown one
/// gets none.
#[tokio::test]
async fn grouped_loads_answer_each_aggregate_its_own_events() {
    let db = TestDb::create().await;
    let store = store(&db, "100", Batching::default()).await;
    let writer = CqrsOrderWriter::new(store.clone(), services(None));
    let (a, b) = (fresh("1"), fresh("2"));
    writer.place(a.clone()).await.unwrap();
    writer.place(b.clone()).await.unwrap();
    let asked = [
        a.order_id(),
        b.order_id(),
        a.order_id(),
        fresh("3").order_id(),
    ];
    // On this single-threaded runtime the four loads reach the loader before it runs.
    let tasks: Vec<_> = asked
        .iter()
        .map(|id| {
            let (store, id) = (store.clone(), id.to_string());
            tokio::spawn(async move { store.load_events(&id).await.unwrap() })
        })
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    let amounts: Vec<Vec<FiatAmount>> = answers
        .iter()
        .map(|events| {
            events
                .iter()
                .map(|e| e.payload.as_placed().unwrap().amount)
                .collect()
        })
        .collect();
    assert_eq!(
        amounts,
        [vec![a.amount], vec![b.amount], vec![a.amount], vec![]]
    );
    let context = store
        .load_aggregate(&a.order_id().to_string())
        .await
        .unwrap();
    assert_eq!(context.current_sequence, 1);
}

/// A ledger whose cap, `btc`, is sold out.
fn ledger_at_cap(btc: Satoshis) -> BtcLedger {
    let mut ledger = BtcLedger::new(BtcCap::new(btc));
    ledger.reserve(btc).unwrap();
    ledger
}
