//! An in-memory `EventStore<BuyOrder>` that reports conflicts and enforces the cap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateContext, AggregateError, EventEnvelope, EventStore};
use order_domain::{
    BtcCap, BtcLedger, BtcRate, BuyOrder, BuyOrderError, BuyOrderEvent, BuyOrderPlaced, ClientId,
    Clock, Currency, FiatAmount, IdempotencyKey, OrderId, Satoshis, SystemClock,
};
use parking_lot::Mutex;
use tokio::sync::watch;
use uuid::Uuid;

use super::compact::{Chunked, Names, TooManyNames};

use crate::error::StoreError;
use crate::log::{EventLog, LoggedEvent, Position};
use crate::writer::{Ledger, COMMIT_ID, POSITION_METADATA, REQUEST_ID};

/// An in-memory event store for `BuyOrder`.
///
/// Unlike cqrs-es's `MemStore`, a commit whose aggregate moved on since it was loaded fails with
/// `AggregateConflict`, and an order that would take the BTC sold over the cap fails with
/// `BuyOrderError::CapExceeded`, with nothing appended. An event's `placed_at` is stamped as it
/// is appended, so it never goes back along the log. Cloning shares the store.
#[derive(Clone)]
pub struct MemEventStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: Mutex<State>,
    /// The position of the newest event, for readers waiting on the log.
    head: watch::Sender<Position>,
}

/// The log and what indexes it, kept small (see [`super::compact`]): each event once, in a
/// compact form, its strings interned; the position is the index, not stored.
struct State {
    /// Every event in commit order: position `p` at index `p - 1`.
    log: Chunked<Stored>,
    /// Each stream's newest event; older ones are reached through [`Stored::previous`].
    streams: HashMap<OrderId, Position>,
    clients: Names<ClientId>,
    rate_sources: Names<String>,
    ledger: BtcLedger,
    /// The newest `placed_at` stamped: no later event is stamped earlier.
    last_placed_at: DateTime<Utc>,
}

/// One event of the log as kept in memory.
struct Stored {
    aggregate: OrderId,
    /// The stream's event before this one ([`Position::ZERO`]: none).
    previous: Position,
    sequence: u64,
    event: CompactEvent,
    metadata: CompactMetadata,
}

/// An event, its strings interned. Kinds of events other than a placement (none today) are kept
/// as they are.
enum CompactEvent {
    Placed(CompactPlaced),
    Other(Box<BuyOrderEvent>),
}

/// [`BuyOrderPlaced`] with its client id and rate source interned.
struct CompactPlaced {
    order_id: OrderId,
    client: u32,
    idempotency_key: IdempotencyKey,
    currency: Currency,
    amount: FiatAmount,
    rate: BtcRate,
    rate_source: u32,
    rate_quoted_at: DateTime<Utc>,
    satoshis: Satoshis,
    placed_at: DateTime<Utc>,
}

/// A commit's metadata: what [`crate::CqrsOrderWriter`] writes (a commit id and a request id,
/// both UUIDs unless a client sent its own request id) as 32 bytes, anything else as given.
#[derive(Clone)]
enum CompactMetadata {
    Ids {
        commit: Uuid,
        request: Uuid,
    },
    // Boxed: 8 bytes in every event rather than a map's 48, for the rare commit that has one.
    #[allow(clippy::box_collection)]
    Map(Box<HashMap<String, String>>),
}

impl CompactMetadata {
    fn new(metadata: &HashMap<String, String>) -> Self {
        let uuid = |key: &str| metadata.get(key).and_then(|v| Uuid::try_parse(v).ok());
        match (uuid(COMMIT_ID), uuid(REQUEST_ID)) {
            // Only the hyphenated lower-case form round-trips; anything else is kept as text.
            (Some(commit), Some(request))
                if metadata.len() == 2
                    && metadata.get(COMMIT_ID) == Some(&commit.to_string())
                    && metadata.get(REQUEST_ID) == Some(&request.to_string()) =>
            {
                CompactMetadata::Ids { commit, request }
            }
            _ => CompactMetadata::Map(Box::new(metadata.clone())),
        }
    }

    /// The metadata as given, with the event's position ([`crate::writer::POSITION_METADATA`]).
    fn expand(&self, position: Position) -> HashMap<String, String> {
        let mut metadata = match self {
            CompactMetadata::Ids { commit, request } => HashMap::from([
                (COMMIT_ID.to_owned(), commit.to_string()),
                (REQUEST_ID.to_owned(), request.to_string()),
            ]),
            CompactMetadata::Map(map) => (**map).clone(),
        };
        metadata.insert(POSITION_METADATA.to_owned(), position.0.to_string());
        metadata
    }
}

/// A store whose names cannot be read back: a bug of this module, reported, never a panic.
fn lost_name(what: &str) -> StoreError {
    StoreError::corrupt(format!("the in-memory store lost a {what}"))
}

impl State {
    fn compact(&mut self, event: &BuyOrderEvent) -> Result<CompactEvent, TooManyNames> {
        let Some(placed) = event.as_placed() else {
            return Ok(CompactEvent::Other(Box::new(event.clone())));
        };
        Ok(CompactEvent::Placed(CompactPlaced {
            order_id: placed.order_id,
            client: self.clients.intern(&placed.client_id)?,
            idempotency_key: placed.idempotency_key,
            currency: placed.currency,
            amount: placed.amount,
            rate: placed.rate,
            rate_source: self.rate_sources.intern(&placed.rate_source)?,
            rate_quoted_at: placed.rate_quoted_at,
            satoshis: placed.satoshis,
            placed_at: placed.placed_at,
        }))
    }

    fn event(&self, event: &CompactEvent) -> Result<BuyOrderEvent, StoreError> {
        match event {
            CompactEvent::Placed(placed) => Ok(BuyOrderEvent::BuyOrderPlaced(BuyOrderPlaced {
                order_id: placed.order_id,
                client_id: self
                    .clients
                    .value(placed.client)
                    .ok_or_else(|| lost_name("client id"))?
                    .clone(),
                idempotency_key: placed.idempotency_key,
                currency: placed.currency,
                amount: placed.amount,
                rate: placed.rate,
                rate_source: self
                    .rate_sources
                    .value(placed.rate_source)
                    .ok_or_else(|| lost_name("rate source"))?
                    .clone(),
                rate_quoted_at: placed.rate_quoted_at,
                satoshis: placed.satoshis,
                placed_at: placed.placed_at,
            })),
            CompactEvent::Other(event) => Ok((**event).clone()),
        }
    }

    /// The event at `position` (1-based).
    fn stored(&self, position: Position) -> Option<&Stored> {
        let index = usize::try_from(position.0.checked_sub(1)?).ok()?;
        self.log.get(index)
    }

    fn logged(&self, position: Position, stored: &Stored) -> Result<LoggedEvent, StoreError> {
        Ok(LoggedEvent {
            position,
            aggregate_id: stored.aggregate,
            sequence: stored.sequence,
            event: self.event(&stored.event)?,
        })
    }

    /// The stream of `aggregate`, oldest first, with each event's position.
    fn stream(&self, aggregate: &OrderId) -> Result<Vec<(Position, &Stored)>, StoreError> {
        let mut events = Vec::new();
        let mut at = self
            .streams
            .get(aggregate)
            .copied()
            .unwrap_or(Position::ZERO);
        while at > Position::ZERO {
            let stored = self.stored(at).ok_or_else(|| lost_name("stream's event"))?;
            events.push((at, stored));
            at = stored.previous;
        }
        events.reverse();
        Ok(events)
    }

    fn envelope(
        &self,
        aggregate_id: &str,
        position: Position,
        stored: &Stored,
    ) -> Result<EventEnvelope<BuyOrder>, StoreError> {
        Ok(EventEnvelope {
            aggregate_id: aggregate_id.to_owned(),
            sequence: usize::try_from(stored.sequence)
                .map_err(|_| StoreError::corrupt("a sequence past usize"))?,
            payload: self.event(&stored.event)?,
            metadata: stored.metadata.expand(position),
        })
    }
}

impl MemEventStore {
    /// An empty store enforcing `cap`.
    pub fn new(cap: BtcCap) -> Self {
        MemEventStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    log: Chunked::default(),
                    streams: HashMap::new(),
                    clients: Names::default(),
                    rate_sources: Names::default(),
                    ledger: BtcLedger::new(cap),
                    last_placed_at: DateTime::<Utc>::MIN_UTC,
                }),
                head: watch::Sender::new(Position::ZERO),
            }),
        }
    }

    /// The ledger as it stands: BTC sold and remaining.
    pub fn ledger(&self) -> BtcLedger {
        self.shared.state.lock().ledger
    }
}

/// An aggregate loaded from a [`MemEventStore`], with the sequence it was loaded at.
pub struct MemAggregateContext {
    aggregate_id: String,
    aggregate: BuyOrder,
    sequence: usize,
}

impl AggregateContext<BuyOrder> for MemAggregateContext {
    fn aggregate(&mut self) -> &mut BuyOrder {
        &mut self.aggregate
    }
}

impl crate::NewAggregate for MemEventStore {
    fn new_aggregate(&self, aggregate_id: &str) -> MemAggregateContext {
        MemAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: BuyOrder::default(),
            sequence: 0,
        }
    }
}

fn unexpected(
    error: impl std::error::Error + Send + Sync + 'static,
) -> AggregateError<BuyOrderError> {
    AggregateError::UnexpectedError(Box::new(error))
}

impl EventStore<BuyOrder> for MemEventStore {
    type AC = MemAggregateContext;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        // Every stream's id is an order id: any other id names no stream.
        let Ok(id) = OrderId::parse(aggregate_id) else {
            return Ok(Vec::new());
        };
        let state = self.shared.state.lock();
        state
            .stream(&id)
            .map_err(unexpected)?
            .into_iter()
            .map(|(position, stored)| state.envelope(aggregate_id, position, stored))
            .collect::<Result<_, _>>()
            .map_err(unexpected)
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<MemAggregateContext, AggregateError<BuyOrderError>> {
        let events = self.load_events(aggregate_id).await?;
        let mut context = crate::NewAggregate::new_aggregate(self, aggregate_id);
        context.sequence = events.len();
        for envelope in events {
            cqrs_es::Aggregate::apply(&mut context.aggregate, envelope.payload);
        }
        Ok(context)
    }

    async fn commit(
        &self,
        events: Vec<BuyOrderEvent>,
        context: MemAggregateContext,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        if events.is_empty() {
            return Ok(Vec::new());
        }
        let order_id = OrderId::parse(&context.aggregate_id).map_err(unexpected)?;
        let mut state = self.shared.state.lock();
        let state = &mut *state;
        let newest = state
            .streams
            .get(&order_id)
            .copied()
            .unwrap_or(Position::ZERO);
        let length = match state.stored(newest) {
            Some(stored) => usize::try_from(stored.sequence)
                .map_err(|_| unexpected(StoreError::corrupt("a sequence past usize")))?,
            None => 0,
        };
        if length != context.sequence {
            return Err(AggregateError::AggregateConflict);
        }
        // The cap, under the same lock as the append: reserve on a copy, keep it only if all fit.
        let mut ledger = state.ledger;
        for event in &events {
            ledger.reserve(event.satoshis()).map_err(|refused| {
                AggregateError::UserError(BuyOrderError::CapExceeded {
                    requested: refused.requested,
                    remaining: refused.remaining,
                })
            })?;
        }
        let compact_metadata = CompactMetadata::new(&metadata);
        let mut committed = Vec::with_capacity(events.len());
        let mut compacted = Vec::with_capacity(events.len());
        for (offset, mut payload) in events.into_iter().enumerate() {
            // Stamped here, where the position is assigned: `placed_at` never goes back along
            // the log (microseconds, as every store keeps).
            let placed_at = state.last_placed_at.max(SystemClock.now());
            payload.set_placed_at(placed_at);
            let sequence = context.sequence + offset + 1;
            compacted.push((
                u64::try_from(sequence).map_err(unexpected)?,
                state.compact(&payload).map_err(unexpected)?,
            ));
            committed.push(EventEnvelope {
                aggregate_id: context.aggregate_id.clone(),
                sequence,
                payload,
                metadata: HashMap::new(),
            });
            state.last_placed_at = placed_at;
        }
        // Nothing can fail from here on: the ledger and the log change together.
        state.ledger = ledger;
        let mut previous = newest;
        for ((sequence, event), envelope) in compacted.into_iter().zip(&mut committed) {
            let position = Position(state.log.len() as u64 + 1);
            state.log.push(Stored {
                aggregate: order_id,
                previous,
                sequence,
                event,
                metadata: compact_metadata.clone(),
            });
            let mut metadata = metadata.clone();
            metadata.insert(POSITION_METADATA.to_owned(), position.0.to_string());
            envelope.metadata = metadata;
            previous = position;
        }
        state.streams.insert(order_id, previous);
        self.shared
            .head
            .send_replace(Position(state.log.len() as u64));
        Ok(committed)
    }
}

#[async_trait]
impl Ledger for MemEventStore {
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(()) // in this process: it answers whenever the process does
    }

    async fn remaining(&self) -> Result<Satoshis, StoreError> {
        Ok(self.ledger().remaining())
    }

    async fn cap(&self) -> Result<Satoshis, StoreError> {
        Ok(self.ledger().cap().limit())
    }
}

#[async_trait]
impl EventLog for MemEventStore {
    async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let state = self.shared.state.lock();
        // Positions are 1-based and gap-free: position p is at index p - 1.
        let (Ok(start), Some(first)) = (usize::try_from(after.0), after.0.checked_add(1)) else {
            return Ok(Vec::new()); // after every position there can be
        };
        state
            .log
            .range(start, start.saturating_add(limit))
            .zip(first..)
            .map(|(stored, position)| state.logged(Position(position), stored))
            .collect()
    }

    async fn head(&self) -> Result<Position, StoreError> {
        Ok(*self.shared.head.borrow())
    }

    async fn wait_for_events_after(
        &self,
        after: Position,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        let mut head = self.shared.head.subscribe();
        let arrived = tokio::time::timeout(timeout, head.wait_for(|head| *head > after)).await;
        Ok(matches!(arrived, Ok(Ok(_))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The metadata kept compactly comes back exactly as committed, whatever its shape.
    #[test]
    fn metadata_comes_back_as_committed() {
        let commit = "3f2504e0-4f89-11d3-9a0c-0305e82c3301".to_owned();
        let shapes = [
            // What the writer sends: two UUIDs (kept as 32 bytes).
            HashMap::from([
                (COMMIT_ID.to_owned(), commit.clone()),
                (
                    REQUEST_ID.to_owned(),
                    "7c9e6679-7425-40de-944b-e07fc1f90ae7".to_owned(),
                ),
            ]),
            // A client's own request id, an upper-case UUID, extra keys, nothing: kept as text.
            HashMap::from([
                (COMMIT_ID.to_owned(), commit.clone()),
                (REQUEST_ID.to_owned(), "abc-123".to_owned()),
            ]),
            HashMap::from([
                (COMMIT_ID.to_owned(), commit.clone()),
                (
                    REQUEST_ID.to_owned(),
                    "7C9E6679-7425-40DE-944B-E07FC1F90AE7".to_owned(),
                ),
            ]),
            HashMap::from([
                (COMMIT_ID.to_owned(), commit.clone()),
                (REQUEST_ID.to_owned(), commit.clone()),
                ("tenant".to_owned(), "x".to_owned()),
            ]),
            HashMap::new(),
        ];
        for given in shapes {
            let kept = CompactMetadata::new(&given);
            if given.len() == 2 && given[REQUEST_ID].starts_with("7c9e") {
                assert!(matches!(kept, CompactMetadata::Ids { .. }), "{given:?}");
            }
            let mut expected = given.clone();
            expected.insert(POSITION_METADATA.to_owned(), "42".to_owned());
            assert_eq!(kept.expand(Position(42)), expected);
        }
    }

    /// An event is kept in about 200 bytes: what keeps a million orders under 600 bytes each
    /// with the read table (bench/run.sh reports the RSS).
    #[test]
    fn an_event_is_small() {
        assert!(
            std::mem::size_of::<Stored>() <= 200,
            "{}",
            std::mem::size_of::<Stored>()
        );
    }
}
