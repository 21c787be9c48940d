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

/// Read access to the log by position: the projector's catch-up and rebuild path.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Up to `limit` events with a position greater than `after`, in position order.
    async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError>;

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
