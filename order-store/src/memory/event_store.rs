//! An in-memory `EventStore<BuyOrder>` that reports conflicts and enforces the cap.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::{AggregateContext, AggregateError, EventEnvelope, EventStore};
use order_domain::{
    BtcCap, BtcLedger, BuyOrder, BuyOrderError, BuyOrderEvent, Clock, OrderId, Satoshis,
    SystemClock,
};
use parking_lot::Mutex;
use tokio::sync::watch;

use crate::error::StoreError;
use crate::log::{EventLog, LoggedEvent, Position};
use crate::writer::Ledger;

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

struct State {
    streams: HashMap<String, Vec<EventEnvelope<BuyOrder>>>,
    log: Vec<LoggedEvent>,
    ledger: BtcLedger,
    /// The newest `placed_at` stamped: no later event is stamped earlier.
    last_placed_at: DateTime<Utc>,
}

impl MemEventStore {
    /// An empty store enforcing `cap`.
    pub fn new(cap: BtcCap) -> Self {
        MemEventStore {
            shared: Arc::new(Shared {
                state: Mutex::new(State {
                    streams: HashMap::new(),
                    log: Vec::new(),
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

impl EventStore<BuyOrder> for MemEventStore {
    type AC = MemAggregateContext;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        let state = self.shared.state.lock();
        Ok(state.streams.get(aggregate_id).cloned().unwrap_or_default())
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
        let order_id = OrderId::parse(&context.aggregate_id)
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        let mut state = self.shared.state.lock();
        let state = &mut *state;
        let stream = state
            .streams
            .entry(context.aggregate_id.clone())
            .or_default();
        if stream.len() != context.sequence {
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
        state.ledger = ledger;
        let mut committed = Vec::with_capacity(events.len());
        for (offset, mut payload) in events.into_iter().enumerate() {
            // Stamped here, where the position is assigned: `placed_at` never goes back along
            // the log (microseconds, as every store keeps).
            state.last_placed_at = state.last_placed_at.max(SystemClock.now());
            payload.set_placed_at(state.last_placed_at);
            let sequence = context.sequence + offset + 1;
            let position = Position(state.log.len() as u64 + 1);
            state.log.push(LoggedEvent {
                position,
                aggregate_id: order_id,
                sequence: sequence as u64,
                event: payload.clone(),
            });
            let mut metadata = metadata.clone();
            metadata.insert(
                crate::writer::POSITION_METADATA.to_owned(),
                position.0.to_string(),
            );
            committed.push(EventEnvelope {
                aggregate_id: context.aggregate_id.clone(),
                sequence,
                payload,
                metadata,
            });
        }
        stream.extend(committed.iter().cloned());
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
        let start = usize::try_from(after.0)
            .unwrap_or(usize::MAX)
            .min(state.log.len());
        let end = start.saturating_add(limit).min(state.log.len());
        Ok(state.log[start..end].to_vec())
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
