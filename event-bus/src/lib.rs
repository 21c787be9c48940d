//! # event-bus
//!
//! buy-orders on RabbitMQ. Publishing does not depend on the HTTP request that stored an event
//! (no dual write): a [`relay`] tails the PostgreSQL event log by position and publishes each
//! event to a durable topic exchange, advancing its checkpoint only after the broker confirms.
//! The projector reads the events back through a [`consumer`].
//!
//! amiquip is blocking and has no connection recovery: every connection lives on a thread of
//! its own, talks to the async side through channels, and reconnects with backoff
//! ([`connection`]). amiquip never sets `TCP_NODELAY` (a ~40 ms stall per round trip), so the
//! socket is opened here with it set.

pub mod config;
pub mod connection;
pub mod consumer;
mod error;
pub mod message;
pub mod publisher;
pub mod relay;
#[cfg(feature = "test-support")]
pub mod testing;

pub use config::{BusSettings, QueueType};
pub use error::BusError;
pub use message::Topology;
