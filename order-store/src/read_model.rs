//! The read table's interfaces: one for the projector that writes it, one for the API that reads it.

use std::time::Duration;

use async_trait::async_trait;
use order_domain::OrderId;

use crate::error::{ReadError, StoreError};
use crate::log::{LoggedEvent, Position, UnreadableLogged};
use crate::view::{OrderView, Page, PageRequest, Scope};

/// Folds logged events into the read table. Implementations are idempotent: events at or below
/// the checkpoint, or for an order already in the table, change nothing, so redelivery and
/// replay are safe.
#[async_trait]
pub trait ReadModelWriter: Send + Sync {
    /// Applies a batch of events in position order and advances the checkpoint to the last one,
    /// atomically.
    async fn apply(&self, events: &[LoggedEvent]) -> Result<(), StoreError>;

    /// The position of the last event applied (`Position::ZERO` for an empty table).
    async fn checkpoint(&self) -> Result<Position, StoreError>;

    /// Parks events no reader can read, with why, where an operator finds them (and can apply
    /// them once an upcaster is deployed), and moves the checkpoint past them, atomically:
    /// one unreadable event never stalls the ones after it. Idempotent, like `apply`.
    async fn park(&self, unreadable: &[UnreadableLogged]) -> Result<(), StoreError>;

    /// The events parked so far, oldest first.
    async fn parked(&self) -> Result<Vec<UnreadableLogged>, StoreError>;
}

/// Queries of the read table: what `api-read` serves.
#[async_trait]
pub trait ReadModel: Send + Sync {
    /// A page of the orders `scope` sees, newest first (by log position), after `request.after`
    /// if given (which must be an order `scope` sees, else `UnknownReference`). Keyset
    /// pagination: every page costs the same, however deep.
    async fn page(&self, request: PageRequest, scope: &Scope) -> Result<Page, ReadError>;

    /// One order `scope` sees, or `None` (also for another client's order).
    async fn get(&self, id: OrderId, scope: &Scope) -> Result<Option<OrderView>, ReadError>;

    /// Whether the backend answers (for readiness checks).
    async fn ping(&self) -> Result<(), StoreError>;

    /// Waits until the table has applied the log up to `position` (a
    /// [`crate::ConsistencyToken`]'s), at most `within`: `Ok(true)` once it has, `Ok(false)` if
    /// the bound passed first. Read-your-writes: a page or order read after it includes every
    /// order stored up to `position`. Waiting requests share one view of the checkpoint (no query
    /// per request). A read model that does not track its checkpoint says so (the default).
    async fn wait_applied(&self, position: Position, within: Duration) -> Result<bool, StoreError> {
        let _ = (position, within);
        Err(StoreError::misconfigured(
            "this read model cannot tell what it has applied, so it cannot honour a consistency token",
        ))
    }
}
