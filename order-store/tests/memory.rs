//! The in-memory backend keeps the promises the PostgreSQL one will: conflicts, the cap under
//! the append's lock, gap-free commit-ordered positions, an idempotent read table.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::{AggregateError, EventStore};
use order_domain::*;
use order_store::memory::{MemEventStore, MemReadModel};
use order_store::testing::placed_event;
use order_store::*;

/// One rate for every currency.
fn one_rate(rate: &str) -> Arc<FixedSource> {
    Arc::new(FixedSource::uniform(BtcRate::parse(rate).unwrap()))
}

fn writer(store: &MemEventStore, rate: &'static str) -> CqrsOrderWriter<MemEventStore> {
    CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(one_rate(rate)))
}

fn command(amount: &str) -> PlaceBuyOrder {
    command_with_key(amount, IdempotencyKey::from_uuid(uuid::Uuid::new_v4()))
}

fn command_with_key(amount: &str, key: IdempotencyKey) -> PlaceBuyOrder {
    PlaceBuyOrder {
        idempotency_key: key,
        ..order_domain::testing::order_for("tester", amount)
    }
}

#[tokio::test]
async fn a_commit_on_a_stale_aggregate_is_a_conflict() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let cmd = command("1");
    let id = cmd.order_id().to_string();
    let first = store.load_aggregate(&id).await.unwrap();
    let second = store.load_aggregate(&id).await.unwrap();
    store
        .commit(vec![placed_event(&cmd, 1)], first, Default::default())
        .await
        .unwrap();
    let lost = store
        .commit(vec![placed_event(&cmd, 1)], second, Default::default())
        .await;
    assert!(matches!(lost, Err(AggregateError::AggregateConflict)));
    assert_eq!(store.load_events(&id).await.unwrap().len(), 1);
    assert_eq!(store.ledger().sold(), Satoshis::new(1));
}

#[tokio::test]
async fn a_commit_over_the_cap_stores_nothing_and_says_what_remains() {
    let store = MemEventStore::new(BtcCap::new(Satoshis::new(100)));
    let a = command("1");
    let ctx = store
        .load_aggregate(&a.order_id().to_string())
        .await
        .unwrap();
    store
        .commit(vec![placed_event(&a, 60)], ctx, Default::default())
        .await
        .unwrap();
    let b = command("2");
    let ctx = store
        .load_aggregate(&b.order_id().to_string())
        .await
        .unwrap();
    let refused = store
        .commit(vec![placed_event(&b, 41)], ctx, Default::default())
        .await;
    match refused {
        Err(AggregateError::UserError(BuyOrderError::CapExceeded {
            requested,
            remaining,
        })) => {
            assert_eq!(requested, Satoshis::new(41));
            assert_eq!(remaining, Satoshis::new(40));
        }
        other => panic!("expected CapExceeded, got {other:?}"),
    }
    assert!(store
        .load_events(&b.order_id().to_string())
        .await
        .unwrap()
        .is_empty());
    assert_eq!(store.read_after(Position::ZERO, 10).await.unwrap().len(), 1);
    // exactly reaching the cap is fine
    let ctx = store
        .load_aggregate(&b.order_id().to_string())
        .await
        .unwrap();
    store
        .commit(vec![placed_event(&b, 40)], ctx, Default::default())
        .await
        .unwrap();
    assert_eq!(store.ledger().remaining(), Satoshis::ZERO);
}

#[tokio::test]
async fn concurrent_identical_places_give_one_order_and_one_original() {
    identical_places_give_one_order(BtcCap::DEFAULT).await;
}

/// As on PostgreSQL: a duplicate is found before the cap is checked, so identical requests for
/// an order that fits the cap once but not twice (0.002469 BTC under 0.003) all answer it.
#[tokio::test(flavor = "multi_thread")]
async fn identical_places_of_an_order_that_fits_the_cap_once_all_answer_it() {
    identical_places_give_one_order("0.003".parse().unwrap()).await;
}

async fn identical_places_give_one_order(cap: BtcCap) {
    let store = MemEventStore::new(cap);
    let writer = Arc::new(writer(&store, "50000"));
    let cmd = command("123.45");
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
        orders.insert(serde_json::to_string(&placement.order).unwrap());
    }
    assert_eq!(originals, 1);
    assert_eq!(orders.len(), 1, "every request sees the same stored order");
    assert_eq!(
        store.read_after(Position::ZERO, 100).await.unwrap().len(),
        1
    );
}

#[tokio::test]
async fn a_reused_key_with_another_amount_is_refused() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = writer(&store, "50000");
    let cmd = command("10");
    writer.place(cmd.clone()).await.unwrap();
    let again = writer.place(cmd.clone()).await.unwrap();
    assert!(again.replayed);
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

#[tokio::test]
async fn concurrent_orders_never_cross_the_cap() {
    // 1 BTC cap, 1 USD = 0.01 BTC at rate 100: orders of 1..=9 USD (1..=9 % of the cap).
    let store = MemEventStore::new(BtcCap::new(Satoshis::from_btc(1)));
    let writer = Arc::new(writer(&store, "100"));
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let writer = writer.clone();
            let amount = format!("{}", i % 9 + 1);
            tokio::spawn(async move { (amount.clone(), writer.place(command(&amount)).await) })
        })
        .collect();
    let mut refused_sizes = Vec::new();
    for task in tasks {
        let (amount, result) = task.await.unwrap();
        match result {
            Ok(_) => {}
            Err(PlaceError::Refused(BuyOrderError::CapExceeded { requested, .. })) => {
                assert_eq!(
                    requested,
                    Satoshis::new(amount.parse::<u64>().unwrap() * 1_000_000)
                );
                refused_sizes.push(requested);
            }
            Err(other) => panic!("unexpected {other:?}"),
        }
    }
    let log = store.read_after(Position::ZERO, 1000).await.unwrap();
    let sold: u64 = log.iter().map(|e| e.event.satoshis().count()).sum();
    assert!(sold <= Satoshis::from_btc(1).count());
    assert_eq!(store.ledger().sold().count(), sold);
    let remaining = Satoshis::from_btc(1).count() - sold;
    assert!(!refused_sizes.is_empty());
    for size in refused_sizes {
        assert!(
            size.count() > remaining,
            "refused {size} while {remaining} remained"
        );
    }
}

#[tokio::test]
async fn the_log_is_gap_free_and_wakes_waiting_readers() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = Arc::new(writer(&store, "50000"));
    assert!(!store
        .wait_for_events_after(Position::ZERO, Duration::from_millis(10))
        .await
        .unwrap());
    let waiter = {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .wait_for_events_after(Position::ZERO, Duration::from_secs(10))
                .await
        })
    };
    let places: Vec<_> = (0..50)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move { writer.place(command("1")).await.unwrap() })
        })
        .collect();
    futures::future::join_all(places).await;
    assert!(waiter.await.unwrap().unwrap());
    let all = store.read_after(Position::ZERO, 1000).await.unwrap();
    let positions: Vec<u64> = all.iter().map(|e| e.position.0).collect();
    assert_eq!(positions, (1..=50).collect::<Vec<_>>());
    let tail = store.read_after(Position(45), 3).await.unwrap();
    assert_eq!(
        tail.iter().map(|e| e.position.0).collect::<Vec<_>>(),
        [46, 47, 48]
    );
    assert!(store.read_after(Position(50), 10).await.unwrap().is_empty());
    assert!(store
        .read_after(Position(u64::MAX), 10)
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn the_read_table_is_idempotent_and_pages_newest_first() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = writer(&store, "50000");
    for _ in 0..25 {
        writer.place(command("1")).await.unwrap();
    }
    let log = store.read_after(Position::ZERO, 1000).await.unwrap();
    let model = MemReadModel::new();
    model.apply(&log[..10]).await.unwrap();
    model.apply(&log[5..]).await.unwrap(); // overlaps: applied once
    model.apply(&log).await.unwrap(); // all again: nothing changes
    assert_eq!(model.len(), 25);
    assert_eq!(model.checkpoint().await.unwrap(), Position(25));

    let mut seen = Vec::new();
    let mut after = None;
    loop {
        let page = model
            .page(
                PageRequest {
                    after,
                    size: PageSize::new(10).unwrap(),
                },
                &order_store::Scope::All,
            )
            .await
            .unwrap();
        if page.rows.is_empty() {
            assert_eq!(page.last_reference, None);
            break;
        }
        after = page.last_reference;
        seen.extend(page.rows.into_iter().map(|row| row.id));
    }
    let newest_first: Vec<OrderId> = log.iter().rev().map(|e| e.aggregate_id).collect();
    assert_eq!(seen, newest_first);

    let unknown = OrderId::parse("00000000-0000-0000-0000-000000000001").unwrap();
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
    assert!(model
        .get(unknown, &order_store::Scope::All)
        .await
        .unwrap()
        .is_none());
    assert_eq!(
        model
            .get(seen[3], &order_store::Scope::All)
            .await
            .unwrap()
            .unwrap()
            .id,
        seen[3]
    );
}

/// A user's own cqrs-es query attached to the writer sees each placed order once, with the
/// stored event; a replay of the same key dispatches nothing.
#[tokio::test]
async fn a_users_own_query_sees_each_placed_order() {
    #[derive(Default)]
    struct Seen(parking_lot::Mutex<Vec<(String, Satoshis)>>);
    struct Record(Arc<Seen>);
    #[async_trait]
    impl cqrs_es::Query<BuyOrder> for Record {
        async fn dispatch(&self, aggregate_id: &str, events: &[cqrs_es::EventEnvelope<BuyOrder>]) {
            for event in events {
                self.0
                     .0
                    .lock()
                    .push((aggregate_id.to_owned(), event.payload.satoshis()));
            }
        }
    }
    let seen = Arc::new(Seen::default());
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = CqrsOrderWriter::with_queries(
        store,
        BuyOrderServices::new(Arc::new(
            "USD=100,EUR=100,GBP=100"
                .parse::<price_feed::FixedSource>()
                .unwrap(),
        )),
        vec![Box::new(Record(seen.clone()))],
    );
    let cmd = command("2");
    let placed = writer.place(cmd.clone()).await.unwrap();
    assert!(writer.place(cmd.clone()).await.unwrap().replayed);
    assert_eq!(
        *seen.0.lock(),
        [(cmd.order_id().to_string(), placed.order.satoshis)]
    );
}

/// A [`MemEventStore`] that counts the aggregates it loads and whose price source can fail:
/// what the writer's first attempt (the key assumed new) reads, and what a replay needs.
#[derive(Clone)]
struct Counting {
    inner: MemEventStore,
    loads: Arc<std::sync::atomic::AtomicUsize>,
}

impl Counting {
    fn loads(&self) -> usize {
        self.loads.load(std::sync::atomic::Ordering::SeqCst)
    }
}

impl EventStore<BuyOrder> for Counting {
    type AC = <MemEventStore as EventStore<BuyOrder>>::AC;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<cqrs_es::EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        self.inner.load_events(aggregate_id).await
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<BuyOrderError>> {
        self.loads.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.inner.load_aggregate(aggregate_id).await
    }

    async fn commit(
        &self,
        events: Vec<BuyOrderEvent>,
        context: Self::AC,
        metadata: std::collections::HashMap<String, String>,
    ) -> Result<Vec<cqrs_es::EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        self.inner.commit(events, context, metadata).await
    }
}

impl NewAggregate for Counting {
    fn new_aggregate(&self, aggregate_id: &str) -> Self::AC {
        self.inner.new_aggregate(aggregate_id)
    }
}

#[async_trait]
impl Ledger for Counting {
    async fn remaining(&self) -> Result<Satoshis, StoreError> {
        self.inner.remaining().await
    }
    async fn cap(&self) -> Result<Satoshis, StoreError> {
        self.inner.cap().await
    }
}

/// A price source that can be switched off.
struct Switch {
    on: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl PriceSource for Switch {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        if !self.on.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(PriceError::new("switched off"));
        }
        one_rate("50000").quote(currency).await
    }
}

fn counting(cap: BtcCap) -> (Counting, Arc<Switch>, CqrsOrderWriter<Counting>) {
    let store = Counting {
        inner: MemEventStore::new(cap),
        loads: Arc::default(),
    };
    let prices = Arc::new(Switch {
        on: std::sync::atomic::AtomicBool::new(true),
    });
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(prices.clone()));
    (store, prices, writer)
}

#[tokio::test]
async fn a_new_key_is_placed_without_a_load_and_a_repeated_one_loads_once() {
    let (store, _, writer) = counting(BtcCap::DEFAULT);
    let cmd = command("10");
    let placed = writer.place(cmd.clone()).await.unwrap();
    assert!(!placed.replayed);
    assert_eq!(
        store.loads(),
        0,
        "a new key needs no read before its commit"
    );
    let again = writer.place(cmd).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.order, placed.order);
    assert_eq!(
        store.loads(),
        1,
        "the conflict at sequence 1 sends it to a real load"
    );
    assert_eq!(store.inner.ledger().sold(), placed.order.satoshis);
}

#[tokio::test]
async fn a_replay_is_answered_while_the_price_feed_is_down() {
    let (store, prices, writer) = counting(BtcCap::DEFAULT);
    let cmd = command("10");
    let placed = writer.place(cmd.clone()).await.unwrap();
    prices.on.store(false, std::sync::atomic::Ordering::SeqCst);
    // The first attempt needs a price and fails; the stored order needs none.
    let again = writer.place(cmd).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.order, placed.order);
    // A new key cannot be placed without a price.
    assert!(matches!(
        writer.place(command("10")).await,
        Err(PlaceError::Refused(BuyOrderError::PriceUnavailable(_)))
    ));
    assert_eq!(
        store
            .inner
            .read_after(Position::ZERO, 10)
            .await
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_replay_of_the_order_that_filled_the_cap_is_answered_not_refused() {
    // 10 USD at 50,000 = 0.0002 BTC: the whole cap.
    let (store, _, writer) = counting("0.0002".parse().unwrap());
    let cmd = command("10");
    let placed = writer.place(cmd.clone()).await.unwrap();
    assert_eq!(store.inner.ledger().remaining(), Satoshis::ZERO);
    let again = writer.place(cmd).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.order, placed.order);
    // Another order is refused for the cap, decided by its first attempt alone.
    let loads = store.loads();
    assert!(matches!(
        writer.place(command("10")).await,
        Err(PlaceError::Refused(BuyOrderError::CapExceeded { .. }))
    ));
    assert_eq!(store.loads(), loads);
}
