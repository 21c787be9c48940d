//! The PostgreSQL backend against the real server of this machine, one fresh database per test.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use cqrs_es::{AggregateError, EventStore};
use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::*;
use price_feed::FixedSource;

fn rate(r: &str) -> Arc<FixedSource> {
    Arc::new(format!("USD={r},EUR={r},GBP={r}").parse().unwrap())
}

fn place(amount: &str) -> PlaceBuyOrder {
    PlaceBuyOrder {
        client_id: ClientId::parse("pg-test").unwrap(),
        idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
        currency: Currency::USD,
        amount: FiatAmount::parse(amount).unwrap(),
    }
}

async fn store(db: &TestDb, cap: &str) -> PgEventStore {
    PgEventStore::open(&PgSettings::for_url(db.url()), cap.parse().unwrap())
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

#[tokio::test]
async fn a_commit_on_a_stale_aggregate_is_a_conflict_and_counts_nothing() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("100")));
    let cmd = place("1");
    let id = cmd.order_id().to_string();
    let stale = store.load_aggregate(&id).await.unwrap();
    writer.place(cmd.clone()).await.unwrap();
    let stored = store.load_events(&id).await.unwrap();
    let lost = store
        .commit(vec![stored[0].payload.clone()], stale, Default::default())
        .await;
    assert!(
        matches!(lost, Err(AggregateError::AggregateConflict)),
        "{lost:?}"
    );
    let (sold, _) = store.ledger().await.unwrap();
    assert_eq!(
        sold,
        Satoshis::new(1_000_000),
        "the lost commit added nothing"
    );
    assert_eq!(store.read_after(Position::ZERO, 10).await.unwrap().len(), 1);
}

#[tokio::test]
async fn the_cap_refuses_in_the_transaction_and_says_what_remains() {
    let db = TestDb::create().await;
    let store = store(&db, "1").await; // 1 BTC; at rate 100, 1 USD = 0.01 BTC
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("100")));
    writer.place(place("60")).await.unwrap();
    let refused = writer.place(place("41")).await;
    match refused {
        Err(PlaceError::Refused(BuyOrderError::CapExceeded {
            requested,
            remaining,
        })) => {
            assert_eq!(requested, Satoshis::new(41_000_000));
            assert_eq!(remaining, Satoshis::new(40_000_000));
        }
        other => panic!("expected CapExceeded, got {other:?}"),
    }
    let log = store.read_after(Position::ZERO, 10).await.unwrap();
    assert_eq!(log.len(), 1, "nothing of the refused order is stored");
    writer.place(place("40")).await.unwrap(); // exactly the cap
    assert_eq!(
        store.ledger().await.unwrap(),
        (Satoshis::from_btc(1), Satoshis::from_btc(1))
    );
    // positions stay gap-free across the refusal
    let positions: Vec<u64> = store
        .read_after(Position::ZERO, 10)
        .await
        .unwrap()
        .iter()
        .map(|e| e.position.0)
        .collect();
    assert_eq!(positions, [1, 2]);
    // a cap below what is sold is refused at start-up
    let lowered = PgEventStore::open(&PgSettings::for_url(db.url()), "0.5".parse().unwrap()).await;
    assert!(matches!(lowered, Err(StoreError::Unavailable(msg)) if msg.contains("MAX_TOTAL_BTC")));
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
async fn the_listener_wakes_a_waiting_reader() {
    let db = TestDb::create().await;
    let store = store(&db, "100").await;
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rate("50000")));
    assert!(!store
        .wait_for_events_after(Position::ZERO, Duration::from_millis(50))
        .await
        .unwrap());
    let waiting = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_events_after(Position::ZERO, Duration::from_secs(20))
                .await
        })
    };
    tokio::time::sleep(Duration::from_millis(100)).await;
    writer.place(place("1")).await.unwrap();
    assert!(tokio::time::timeout(Duration::from_secs(5), waiting)
        .await
        .unwrap()
        .unwrap()
        .unwrap());
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
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for _ in 0..625 {
                    writer.place(place("1")).await.unwrap();
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
    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = model
            .page(PageRequest {
                after,
                size: PageSize::new(100).unwrap(),
            })
            .await
            .unwrap();
        if page.rows.is_empty() {
            break;
        }
        after = page.last_reference;
        seen.extend(page.rows.iter().map(|row| row.id));
    }
    assert_eq!(seen, newest_first, "every order exactly once, newest first");

    // A deep page is a bounded backward range scan of the primary key.
    sqlx::query("ANALYZE buy_order_view")
        .execute(store.pool())
        .await
        .unwrap();
    let deep = newest_first[newest_first.len() - 150];
    let plan = model.explain_page_after(deep, 100).await.unwrap();
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
        .page(PageRequest {
            after: None,
            size: PageSize::new(100).unwrap(),
        })
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
    let BuyOrderEvent::BuyOrderPlaced(placed) = &log[0].event;
    assert_eq!(
        first,
        &OrderView::from(placed),
        "row equals the event exactly"
    );
    let unknown = OrderId::parse("00000000-0000-4000-8000-000000000000").unwrap();
    assert!(matches!(
        model
            .page(PageRequest {
                after: Some(unknown),
                size: PageSize::DEFAULT
            })
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
        .page(PageRequest {
            after: None,
            size: PageSize::new(100).unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(again, all);
}
