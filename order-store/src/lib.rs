#![doc = include_str!("../README.md")]
#![deny(missing_docs)]

/// async-trait's attribute, for implementing the store's traits (`Projection`, `EventLog`,
/// `ReadModelWriter`) without adding the crate yourself.
pub use async_trait::async_trait;

mod consistency;
mod error;
mod follow;
mod log;
pub mod memory;
mod metrics;
#[cfg(feature = "postgres")]
pub mod postgres;
mod read_model;
#[cfg(feature = "test-support")]
pub mod testing;
mod view;
mod writer;

pub use consistency::{AppliedWatch, BadToken, ConsistencyToken};
pub use error::{Cause, CommitInDoubt, PlaceError, ReadError, SqlClass, SqlState, StoreError};
pub use follow::{Follower, Step};
pub use log::{EventLog, LogRead, LoggedEvent, Position, UnreadableLogged};
pub use metrics::describe_metrics;
pub use read_model::{ReadModel, ReadModelWriter};
pub use view::{BadPageSize, OrderView, Page, PageRequest, PageSize, Scope};
pub use writer::{
    CqrsOrderWriter, Ledger, NewAggregate, OrderWriter, Placement, POSITION_METADATA,
};
