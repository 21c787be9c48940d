//! The write side: placing an order through cqrs-es, idempotently.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use cqrs_es::{AggregateError, CqrsFramework, EventEnvelope, EventStore, Query};
use order_domain::{
    BuyOrder, BuyOrderError, BuyOrderEvent, BuyOrderPlaced, PlaceBuyOrder, Satoshis,
};
use parking_lot::Mutex;
use uuid::Uuid;

use crate::error::{PlaceError, StoreError};

/// A placed order, and whether this request placed it or replayed an earlier request's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The order as stored.
    pub order: BuyOrderPlaced,
    /// `true` when an earlier request with the same key placed it.
    pub replayed: bool,
}

/// The BTC cap as an event store sees it.
#[async_trait]
pub trait Ledger: Send + Sync {
    /// BTC that can still be sold, as committed.
    async fn remaining(&self) -> Result<Satoshis, StoreError>;
}

/// Places buy orders: what `api-write` needs from a store.
#[async_trait]
pub trait OrderWriter: Send + Sync {
    /// Places the order, or replays the stored one for a repeated key. Concurrent identical
    /// requests all get the same order; exactly one of them has `replayed == false`.
    async fn place(&self, command: PlaceBuyOrder) -> Result<Placement, PlaceError>;

    /// Whether the backend answers (for readiness checks).
    async fn ping(&self) -> Result<(), StoreError>;

    /// BTC that can still be sold (for the `btc_remaining` gauge).
    async fn remaining_btc(&self) -> Result<Satoshis, StoreError>;
}

/// The metadata key under which each commit records the request that made it, so that a request
/// can tell its own commit from an earlier one.
const REQUEST_ID: &str = "request_id";

/// How often a command is retried after an optimistic-concurrency conflict. A `BuyOrder` has one
/// event, so the second attempt always sees the winner's order; the bound is a safety net.
const MAX_ATTEMPTS: usize = 3;

/// [`OrderWriter`] on the stock cqrs-es framework over any event store: in memory, PostgreSQL.
///
/// The order id is derived from (client, key), so a concurrent duplicate meets the winner in the
/// event store as an `AggregateConflict`. The loser runs the command again: the aggregate now
/// exists, emits nothing, and the loser answers with the stored order, as a replay.
///
/// A request that commits gets its order back from the framework's query dispatch (keyed by its
/// request id), so answering it costs no second read of the store; only replays read it back.
pub struct CqrsOrderWriter<ES: EventStore<BuyOrder> + Ledger + Clone> {
    cqrs: CqrsFramework<BuyOrder, ES>,
    store: ES,
    committed: Arc<Committed>,
}

/// Orders committed by requests of this process that have not collected them yet, by request id.
#[derive(Default)]
struct Committed(Mutex<HashMap<String, BuyOrderPlaced>>);

/// The cqrs-es query that fills [`Committed`]: it runs right after each commit, before
/// `execute` returns.
struct CaptureCommitted(Arc<Committed>);

#[async_trait]
impl Query<BuyOrder> for CaptureCommitted {
    async fn dispatch(&self, _aggregate_id: &str, events: &[EventEnvelope<BuyOrder>]) {
        let mut committed = self.0 .0.lock();
        for envelope in events {
            if let (Some(request), BuyOrderEvent::BuyOrderPlaced(placed)) =
                (envelope.metadata.get(REQUEST_ID), &envelope.payload)
            {
                committed.insert(request.clone(), placed.clone());
            }
        }
    }
}

impl<ES: EventStore<BuyOrder> + Ledger + Clone> CqrsOrderWriter<ES> {
    /// A writer over `store`, with the services (price source, clock) the aggregate needs.
    pub fn new(store: ES, services: order_domain::BuyOrderServices) -> Self {
        let committed = Arc::new(Committed::default());
        let capture: Box<dyn Query<BuyOrder>> = Box::new(CaptureCommitted(committed.clone()));
        CqrsOrderWriter {
            cqrs: CqrsFramework::new(store.clone(), vec![capture], services),
            store,
            committed,
        }
    }

    /// The stored order and the request id that placed it.
    async fn stored(&self, id: &str) -> Result<(BuyOrderPlaced, Option<String>), PlaceError> {
        let events = self.store.load_events(id).await.map_err(store_error)?;
        let first = events
            .into_iter()
            .next()
            .ok_or_else(|| StoreError::Corrupt(format!("order {id} committed but not found")))?;
        let BuyOrderEvent::BuyOrderPlaced(placed) = first.payload;
        Ok((placed, first.metadata.get(REQUEST_ID).cloned()))
    }
}

#[async_trait]
impl<ES> OrderWriter for CqrsOrderWriter<ES>
where
    ES: EventStore<BuyOrder> + Ledger + Clone + 'static,
    ES::AC: Send,
{
    async fn place(&self, command: PlaceBuyOrder) -> Result<Placement, PlaceError> {
        let id = command.order_id().to_string();
        let request_id = Uuid::new_v4().to_string();
        let metadata = HashMap::from([(REQUEST_ID.to_owned(), request_id.clone())]);
        for _ in 0..MAX_ATTEMPTS {
            let outcome = self
                .cqrs
                .execute_with_metadata(&id, command.clone().into(), metadata.clone())
                .await;
            match outcome {
                Ok(()) => {
                    // No await between `execute` returning and this: nothing can leave the entry.
                    if let Some(order) = self.committed.0.lock().remove(&request_id) {
                        return Ok(Placement {
                            order,
                            replayed: false,
                        });
                    }
                    let (order, placed_by) = self.stored(&id).await?;
                    let replayed = placed_by.as_deref() != Some(request_id.as_str());
                    return Ok(Placement { order, replayed });
                }
                Err(AggregateError::AggregateConflict) => continue,
                Err(AggregateError::UserError(refusal)) => return Err(refusal.into()),
                Err(other) => return Err(store_error(other).into()),
            }
        }
        Err(StoreError::Unavailable(format!(
            "order {id}: still conflicting after {MAX_ATTEMPTS} attempts"
        ))
        .into())
    }

    async fn remaining_btc(&self) -> Result<Satoshis, StoreError> {
        self.store.remaining().await
    }

    async fn ping(&self) -> Result<(), StoreError> {
        // Loading an aggregate that cannot exist reaches the backend and changes nothing.
        self.store
            .load_events(&Uuid::nil().to_string())
            .await
            .map(drop)
            .map_err(store_error)
    }
}

/// Maps a cqrs-es failure that is not the domain's to a store error.
fn store_error(err: AggregateError<BuyOrderError>) -> StoreError {
    match err {
        AggregateError::DeserializationError(e) => StoreError::Corrupt(e.to_string()),
        other => StoreError::Unavailable(other.to_string()),
    }
}
