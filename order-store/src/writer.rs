//! The write side: placing an order through cqrs-es, idempotently.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::{AggregateError, CqrsFramework, EventEnvelope, EventStore, Query};
use order_domain::{
    BuyOrder, BuyOrderError, BuyOrderEvent, BuyOrderPlaced, PlaceBuyOrder, Satoshis,
};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::{Cause, CommitInDoubt, PlaceError, StoreError};
use crate::log::Position;

/// A placed order, and whether this request placed it or replayed an earlier request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The order as stored.
    pub order: BuyOrderPlaced,
    /// `true` when an earlier request with the same key placed it.
    pub replayed: bool,
    /// Where the order stands in the log: what a read must have applied to show it (the
    /// consistency token, [`crate::ConsistencyToken::at`]). `None` only from an event store of
    /// your own that does not give [`POSITION_METADATA`] on commit and load; both of this
    /// crate's stores do.
    pub position: Option<Position>,
}

/// The metadata key under which this crate's event stores give each committed or loaded
/// event's log position (as decimal text) to the framework: cqrs-es `Query`s dispatched after a
/// commit see it too. Never stored in the event's metadata: the log holds it.
pub const POSITION_METADATA: &str = "position";

/// The position an event store gave `metadata` ([`POSITION_METADATA`]), if any.
fn position_in(metadata: &HashMap<String, String>) -> Option<Position> {
    metadata
        .get(POSITION_METADATA)
        .and_then(|text| text.parse().ok())
        .map(Position)
}

/// What the writer asks of an event store besides its events: the BTC cap as the store sees it,
/// and whether the store answers at all.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// Asks the backend itself (a round trip to the database, never a remembered answer), for a
    /// readiness probe: `Ok` only if it answered now.
    async fn ping(&self) -> Result<(), StoreError>;

    /// BTC that can still be sold, as committed.
    async fn remaining(&self) -> Result<Satoshis, StoreError>;

    /// The cap itself (for the `btc_cap` gauge, against which alerts measure what remains).
    async fn cap(&self) -> Result<Satoshis, StoreError>;
}

/// Places buy orders: what `api-write` needs from a store.
#[async_trait]
pub trait OrderWriter: Send + Sync {
    /// Places the order, or replays the stored one for a repeated key. Concurrent identical
    /// requests all get the same order; exactly one of them has `replayed == false`.
    async fn place(&self, command: PlaceBuyOrder) -> Result<Placement, PlaceError>;

    /// As [`OrderWriter::place`], recording `request_id` (the request that asked, e.g. the HTTP
    /// request id) with the order, so its log lines and its stored event can be matched.
    async fn place_for(
        &self,
        command: PlaceBuyOrder,
        request_id: Option<String>,
    ) -> Result<Placement, PlaceError> {
        let _ = request_id;
        self.place(command).await
    }

    /// Whether the backend answers (for readiness checks).
    async fn ping(&self) -> Result<(), StoreError>;

    /// BTC that can still be sold (for the `btc_remaining` gauge).
    async fn remaining_btc(&self) -> Result<Satoshis, StoreError>;

    /// The BTC cap (for the `btc_cap` gauge). A writer that cannot tell says so.
    async fn btc_cap(&self) -> Result<Satoshis, StoreError> {
        Err(StoreError::Unavailable(
            "this writer does not know its cap".into(),
        ))
    }
}

/// An event store that can give the context of an order never placed without reading anything:
/// what [`CqrsOrderWriter`]'s first attempt at an order starts from.
///
/// Why: almost every key is new, so loading its aggregate first (one read of the store per
/// order, half the PostgreSQL statements of the write path) almost always finds nothing. The
/// first attempt assumes that; when it is wrong, the commit meets the stored event at sequence 1
/// as a conflict (checked before the cap, so a replay is never refused for the cap), and the
/// writer runs the command again from a real load, which answers the stored order.
pub trait NewAggregate: EventStore<BuyOrder> {
    /// The context of `aggregate_id` as if it had no events: the default aggregate at sequence 0.
    fn new_aggregate(&self, aggregate_id: &str) -> Self::AC;
}

/// `ES` whose loads assume the aggregate is new (see [`NewAggregate`]); commits go to `ES`.
#[derive(Clone)]
struct AssumeNew<ES>(ES);

impl<ES: NewAggregate> EventStore<BuyOrder> for AssumeNew<ES> {
    type AC = ES::AC;

    fn load_events(
        &self,
        aggregate_id: &str,
    ) -> impl std::future::Future<
        Output = Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>>,
    > + Send {
        self.0.load_events(aggregate_id)
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<BuyOrderError>> {
        Ok(self.0.new_aggregate(aggregate_id))
    }

    fn commit(
        &self,
        events: Vec<BuyOrderEvent>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> impl std::future::Future<
        Output = Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>>,
    > + Send {
        self.0.commit(events, context, metadata)
    }
}

/// One query dispatched by both of the writer's frameworks.
struct SharedQuery(Arc<dyn Query<BuyOrder>>);

#[async_trait]
impl Query<BuyOrder> for SharedQuery {
    async fn dispatch(&self, aggregate_id: &str, events: &[EventEnvelope<BuyOrder>]) {
        self.0.dispatch(aggregate_id, events).await
    }
}

/// The metadata key under which each commit records the request that asked for it (the HTTP
/// request id when there is one): what ties the stored event to the request's log lines.
pub(crate) const REQUEST_ID: &str = "request_id";
/// The metadata key of the commit's own id, unique per call, so that a call can tell its own
/// commit from an earlier one (a client may send the same request id twice). Events stored
/// before it existed carry only `request_id`, which was then this unique id.
pub(crate) const COMMIT_ID: &str = "commit_id";

/// How often a command is retried after an optimistic-concurrency conflict. A `BuyOrder` has one
/// event, so the second attempt always sees the winner's order; the bound is a safety net (past
/// it, the conflict is reported as the store's failure).
const MAX_ATTEMPTS: usize = 3;

/// [`OrderWriter`] on the stock cqrs-es framework over any event store: in memory, PostgreSQL.
///
/// The order id is derived from (client, key), so a concurrent duplicate meets the winner in the
/// event store as an `AggregateConflict`. The loser runs the command again: the aggregate now
/// exists, emits nothing, and the loser answers with the stored order, as a replay.
///
/// A request that commits gets its order back from the framework's query dispatch (keyed by its
/// request id), so answering it costs no second read of the store; only replays read it back.
///
/// A commit whose connection broke midway (its outcome unknown: [`CommitInDoubt`]) is resolved
/// here, not passed on: the same command is sent again, under the same commit id, until an
/// attempt ends definitely or [`CqrsOrderWriter::with_resolve_within`] passes. That retry is
/// exact: if the first attempt committed, the aggregate exists and the retry answers its order
/// (the commit id in its metadata says it was this call's); if it did not, the retry places
/// the order once. Only if the store stays away is the answer `StoreError::OutcomeUnknown`.
///
/// ```
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// use order_domain::*;
/// use order_store::memory::MemEventStore;
/// use order_store::{CqrsOrderWriter, OrderWriter};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemEventStore::new(BtcCap::new(Satoshis::from_btc(1)));
/// let prices = FixedSource::uniform(BtcRate::parse("100")?);
/// let writer = CqrsOrderWriter::new(store, BuyOrderServices::new(Arc::new(prices)))
///     .with_resolve_within(Duration::from_secs(5)); // how long an unknown outcome is pursued
/// let order = PlaceBuyOrder {
///     client_id: ClientId::parse("shop-1")?,
///     idempotency_key: IdempotencyKey::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301")?,
///     currency: Currency::GBP,
///     amount: FiatAmount::parse("60")?,
/// };
/// writer.place(order.clone()).await?;
/// assert_eq!(writer.remaining_btc().await?, Satoshis::new(40_000_000));
/// let too_much = PlaceBuyOrder {
///     idempotency_key: IdempotencyKey::parse("9a0c0305-4f89-11d3-9a0c-0305e82c3301")?,
///     amount: FiatAmount::parse("50")?, // 0.5 BTC: more than the 0.4 left
///     ..order
/// };
/// assert!(writer.place(too_much).await.is_err(), "over the cap: refused, nothing stored");
/// assert_eq!(writer.remaining_btc().await?, Satoshis::new(40_000_000));
/// # Ok(())
/// # }
/// ```
pub struct CqrsOrderWriter<ES: NewAggregate + Ledger + Clone> {
    /// Every attempt after the first: the aggregate loaded from the store.
    cqrs: CqrsFramework<BuyOrder, ES>,
    /// The first attempt: the aggregate assumed new, no read ([`NewAggregate`]).
    first: CqrsFramework<BuyOrder, AssumeNew<ES>>,
    store: ES,
    committed: Arc<Committed>,
    resolve_within: Duration,
}

/// Orders committed by requests of this process that have not collected them yet, by request id.
#[derive(Default)]
struct Committed(Mutex<HashMap<String, (BuyOrderPlaced, Option<Position>)>>);

/// The cqrs-es query that fills [`Committed`]: it runs right after each commit, before
/// `execute` returns.
struct CaptureCommitted(Arc<Committed>);

#[async_trait]
impl Query<BuyOrder> for CaptureCommitted {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<BuyOrder>]) {
        let mut committed = self.0 .0.lock();
        for envelope in events {
            if let (Some(request), BuyOrderEvent::BuyOrderPlaced(placed)) =
                (envelope.metadata.get(COMMIT_ID), &envelope.payload)
            {
                committed.insert(
                    request.clone(),
                    (placed.clone(), position_in(&envelope.metadata)),
                );
            }
        }
    }
}

impl<ES: NewAggregate + Ledger + Clone> CqrsOrderWriter<ES> {
    /// A writer over `store`, with the services (price source, clock) the aggregate needs.
    pub fn new(store: ES, services: order_domain::BuyOrderServices) -> Self {
        Self::with_queries(store, services, Vec::new())
    }

    /// As [`CqrsOrderWriter::new`], also dispatching every commit to `queries` (your own
    /// cqrs-es `Query`s), as `CqrsFramework` does: after the commit, in this process, not in
    /// its transaction (a crash in between loses the dispatch). For a view that must not miss an
    /// event, fold the log instead ([`crate::EventLog`], from a checkpoint).
    pub fn with_queries(
        store: ES,
        services: order_domain::BuyOrderServices,
        queries: Vec<Box<dyn Query<BuyOrder>>>,
    ) -> Self {
        let committed = Arc::new(Committed::default());
        let capture: Arc<dyn Query<BuyOrder>> = Arc::new(CaptureCommitted(committed.clone()));
        let mut all = vec![capture];
        all.extend(queries.into_iter().map(Arc::from));
        let queries = || -> Vec<Box<dyn Query<BuyOrder>>> {
            all.iter()
                .map(|q| Box::new(SharedQuery(q.clone())) as Box<dyn Query<BuyOrder>>)
                .collect()
        };
        CqrsOrderWriter {
            first: CqrsFramework::new(AssumeNew(store.clone()), queries(), services.clone()),
            cqrs: CqrsFramework::new(store.clone(), queries(), services),
            store,
            committed,
            resolve_within: Self::RESOLVE_WITHIN,
        }
    }

    /// How long a commit whose outcome is unknown is retried by default.
    pub const RESOLVE_WITHIN: Duration = Duration::from_secs(5);

    /// Sets how long a commit whose outcome is unknown is retried before answering
    /// `OutcomeUnknown` (keep it under the HTTP request deadline).
    pub fn with_resolve_within(mut self, resolve_within: Duration) -> Self {
        self.resolve_within = resolve_within;
        self
    }

    /// The stored order, as answered to the call whose commit id is `commit_id`: placed by it,
    /// or a replay of an earlier call's.
    async fn stored(&self, id: &str, commit_id: &str) -> Result<Placement, PlaceError> {
        let events = self.store.load_events(id).await.map_err(store_error)?;
        let first = events
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::corrupt(format!("order {id} committed but not found")))?;
        let Some(order) = first.payload.into_placed() else {
            return Err(StoreError::corrupt(format!("order {id} begins with no placement")).into());
        };
        let placed_by = first
            .metadata
            .get(COMMIT_ID)
            .or(first.metadata.get(REQUEST_ID));
        Ok(Placement {
            order,
            replayed: placed_by.map(String::as_str) != Some(commit_id),
            position: position_in(&first.metadata),
        })
    }
}

#[async_trait]
impl<ES> OrderWriter for CqrsOrderWriter<ES>
where
    ES: NewAggregate + Ledger + Clone + 'static,
    ES::AC: Send,
{
    async fn place(&self, command: PlaceBuyOrder) -> Result<Placement, PlaceError> {
        self.place_for(command, None).await
    }

    async fn place_for(
        &self,
        command: PlaceBuyOrder,
        asked_by: Option<String>,
    ) -> Result<Placement, PlaceError> {
        let id = command.order_id().to_string();
        let commit_id = Uuid::new_v4().to_string();
        let metadata = HashMap::from([
            (COMMIT_ID.to_owned(), commit_id.clone()),
            (
                REQUEST_ID.to_owned(),
                asked_by.unwrap_or_else(|| commit_id.clone()),
            ),
        ]);
        // Set once a commit's outcome is unknown: from then on, only an attempt that ends with
        // the order in the store, or a refusal decided after the first attempt settled, is an
        // answer; anything else is retried until `resolve_within` has passed since the doubt
        // arose (not since the request began: a commit that took its whole answer deadline
        // must still have its outcome sought).
        let mut in_doubt = false;
        let mut doubt_since: Option<tokio::time::Instant> = None;
        let mut conflicts = 0;
        let mut pause = Duration::from_millis(50);
        let mut first = true;
        loop {
            let outcome = if std::mem::take(&mut first) {
                let outcome = self
                    .first
                    .execute_with_metadata(&id, command.clone().into(), metadata.clone())
                    .await;
                // Assuming the key new decides only a placement, a cap refusal (decided under
                // the ledger's lock after the duplicate check) or a commit in doubt. Anything
                // else (a conflict: the key was not new; the price feed failing, which must not
                // stop a replay) is decided again from the stored aggregate.
                let decided = match &outcome {
                    Ok(()) => true,
                    Err(AggregateError::UserError(refusal)) => {
                        matches!(refusal, BuyOrderError::CapExceeded { .. })
                    }
                    Err(AggregateError::UnexpectedError(err)) => err.is::<CommitInDoubt>(),
                    // The store failed before anything was stored (no connection within the
                    // acquire timeout, say): a second attempt from a load would wait as long
                    // again for the same answer.
                    Err(AggregateError::DatabaseConnectionError(_)) => true,
                    Err(_) => false,
                };
                if !decided {
                    continue;
                }
                outcome
            } else {
                self.cqrs
                    .execute_with_metadata(&id, command.clone().into(), metadata.clone())
                    .await
            };
            let failure = match outcome {
                Ok(()) => {
                    // No await between `execute` returning and this: nothing can leave the entry.
                    if let Some((order, position)) = self.committed.0.lock().remove(&commit_id) {
                        return Ok(Placement {
                            order,
                            replayed: false,
                            position,
                        });
                    }
                    match self.stored(&id, &commit_id).await {
                        Ok(placement) => return Ok(placement),
                        Err(err) if !in_doubt => return Err(err),
                        Err(err) => err.to_string(),
                    }
                }
                Err(AggregateError::AggregateConflict) if conflicts < MAX_ATTEMPTS => {
                    conflicts += 1;
                    continue;
                }
                Err(AggregateError::UserError(refusal)) => {
                    // A cap refusal was decided under the ledger's lock, so after the first
                    // attempt settled: if that attempt committed, the order is there now.
                    let settled = matches!(refusal, BuyOrderError::CapExceeded { .. });
                    match (in_doubt, settled) {
                        (false, _) => return Err(refusal.into()),
                        (true, true) => {
                            return self.stored(&id, &commit_id).await.or(Err(refusal.into()));
                        }
                        (true, false) => refusal.to_string(),
                    }
                }
                Err(AggregateError::UnexpectedError(err)) if err.is::<CommitInDoubt>() => {
                    tracing::warn!(order_id = %id, %err, "commit outcome unknown; resolving");
                    in_doubt = true;
                    doubt_since.get_or_insert_with(tokio::time::Instant::now);
                    err.to_string()
                }
                Err(other) if !in_doubt => return Err(store_error(other).into()),
                Err(other) => other.to_string(),
            };
            // Only an attempt whose own commit's outcome is unknown, or one after it, gets here.
            let doubted_for = doubt_since.map_or(Duration::ZERO, |since| since.elapsed());
            if doubted_for + pause > self.resolve_within {
                return Err(StoreError::OutcomeUnknown(Cause::new(format!(
                    "order {id}: the store failed during its commit and did not come back within \
                     {} ms ({failure})",
                    self.resolve_within.as_millis()
                )))
                .into());
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(500));
        }
    }

    async fn remaining_btc(&self) -> Result<Satoshis, StoreError> {
        self.store.remaining().await
    }

    async fn btc_cap(&self) -> Result<Satoshis, StoreError> {
        self.store.cap().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        self.store.ping().await
    }
}

/// Maps a cqrs-es failure that is not the domain's to a store error.
fn store_error(err: AggregateError<BuyOrderError>) -> StoreError {
    match err {
        AggregateError::DeserializationError(e) => StoreError::Corrupt(Cause::because_boxed(e)),
        AggregateError::DatabaseConnectionError(e) | AggregateError::UnexpectedError(e) => {
            StoreError::from_boxed(e)
        }
        other => StoreError::unavailable(other.to_string()),
    }
}
