//! The in-memory backend: what the all-in-one binary and fast tests run on.
//!
//! It behaves like the PostgreSQL backend where it matters: the event store detects concurrent
//! appends (optimistic concurrency on the aggregate's sequence), applies the BTC cap under the
//! same lock as the append, and numbers events in commit order. Nothing survives the process.

mod compact;
mod event_store;
mod read_model;

pub use event_store::{MemAggregateContext, MemEventStore};
pub use read_model::MemReadModel;
