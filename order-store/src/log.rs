//! The event log: every committed event in commit order, for readers that tail it.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use order_domain::{BuyOrderEvent, OrderId};
use serde::{Deserialize, Serialize};

use crate::error::StoreError;

/// The place of an event in the global log: 1, 2, 3… in commit order, with no gaps, so a reader
/// that has seen everything up to `p` can ask for "after `p`" and never miss an event.
/// `Position::ZERO` is "before the first event".
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Position(pub u64);

impl Position {
    /// Before the first event.
    pub const ZERO: Position = Position(0);

    /// The position after this one.
    pub fn next(self) -> Position {
        Position(self.0 + 1)
    }
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// A committed event with where it stands in the global log and in its aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoggedEvent {
    /// Global, commit-ordered position.
    pub position: Position,
    /// The aggregate (order) the event belongs to.
    pub aggregate_id: OrderId,
    /// The event's sequence within its aggregate (1 for the first).
    pub sequence: u64,
    /// The event.
    pub event: BuyOrderEvent,
}

/// An event of the log that this reader cannot read: a newer major version, an older one with
/// no upcaster, or JSON that is not the shape its version promises ([`order_domain::EventVersion`]). It is
/// reported, counted and passed over, never misread, and it never stalls the events after it:
/// the projector parks it ([`crate::ReadModelWriter::park`]), the relay does not publish it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnreadableLogged {
    /// Its position in the log.
    pub position: Position,
    /// Its aggregate, as stored (it may not even be an order id).
    pub aggregate_id: String,
    /// Its sequence in that aggregate.
    pub sequence: u64,
    /// Why it cannot be read.
    pub reason: String,
}

/// One read of the log: the events read, in position order, and the unreadable ones among
/// them, beside them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LogRead {
    /// The events read, in position order.
    pub events: Vec<LoggedEvent>,
    /// The events of the same range that could not be read, in position order.
    pub unreadable: Vec<UnreadableLogged>,
}

impl LogRead {
    /// The last position this read covers, readable or not (`None` when it found nothing): a
    /// reader continues after it.
    pub fn reached(&self) -> Option<Position> {
        let events = self.events.last().map(|e| e.position);
        let unreadable = self.unreadable.last().map(|e| e.position);
        events.max(unreadable)
    }
}

/// Read access to the log by position: the projector's catch-up and rebuild path.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Up to `limit` events with a position greater than `after`, in position order. Events
    /// this reader cannot read are left out (each reported in the log and counted in
    /// `store_unreadable_events_total`); [`EventLog::read_after_with_unreadable`] returns them too.
    async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError>;

    /// Up to `limit` entries after `after`, the unreadable ones beside the events: what a
    /// reader that must move past every position (the projector, the relay) reads. A store
    /// whose every event is readable (in memory: they are never serialized) has this default.
    async fn read_after_with_unreadable(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<LogRead, StoreError> {
        Ok(LogRead {
            events: self.read_after(after, limit).await?,
            unreadable: Vec::new(),
        })
    }

    /// The position of the newest committed event (`Position::ZERO` for an empty log).
    async fn head(&self) -> Result<Position, StoreError>;

    /// Waits until an event after `after` has been committed (returns `true`), or until
    /// `timeout` passes (returns `false`). Lets a tailing reader sleep instead of polling hot.
    async fn wait_for_events_after(
        &self,
        after: Position,
        timeout: Duration,
    ) -> Result<bool, StoreError>;
}
