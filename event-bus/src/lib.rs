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

use service_kit::metrics_doc::MetricDoc;

/// The metrics event-bus records, with their help: the relay's and the dead-letter queue's.
pub const METRICS: &[MetricDoc] = &[
    MetricDoc::counter(
        "events_published_total",
        "Events the active relay published",
    ),
    MetricDoc::counter(
        "relay_batches_abandoned_total",
        "Publish batches abandoned because their caller was gone",
    ),
    MetricDoc::counter(
        "relay_log_rewinds_total",
        "Times the relay found the log behind what it had published (a failover lost events)",
    ),
    MetricDoc::counter(
        "messages_dead_lettered_total",
        "Queue messages dead-lettered (unreadable, or not the stored event)",
    ),
    MetricDoc::gauge("relay_active", "1 while this process holds the relay lease"),
    MetricDoc::gauge(
        "relay_backlog_events",
        "Events the active relay has still to publish",
    ),
    MetricDoc::gauge(
        "relay_lag_seconds",
        "Age of the newest event the active relay published",
    ),
    MetricDoc::gauge(
        "relay_rewound_positions",
        "Positions published before the last rewind that the log no longer holds",
    ),
    MetricDoc::gauge(
        "dead_letter_queue_messages",
        "Messages waiting in the projector's dead-letter queue",
    ),
];

/// Describes event-bus's metrics (`# HELP`) and registers its counters at 0.
pub fn describe_metrics() {
    service_kit::metrics_doc::describe(METRICS);
}
