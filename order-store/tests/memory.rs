//! What only the in-memory backend and the writer over any store show: a user's own cqrs-es
//! query, the first attempt at a new key without a load, replays while prices are down. The
//! contract every backend keeps (conflicts, the cap, idempotency, the log, the read table) is
//! `conformance.rs`, run against this backend and PostgreSQL alike.

use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::{AggregateError, EventStore};
use order_domain::*;
use order_store::memory::MemEventStore;
use order_store::*;

/// One rate for every currency.
fn one_rate(rate: &str) -> Arc<FixedSource> {
    Arc::new(FixedSource::uniform(BtcRate::parse(rate).unwrap()))
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
    async fn ping(&self) -> Result<(), StoreError> {
        self.inner.ping().await
    }
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
