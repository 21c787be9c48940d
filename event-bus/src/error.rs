//! Errors of the bus.

/// Why a bus operation failed. All are passing (the broker is down, restarting, or refused a
/// message): callers retry with backoff.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BusError {
    /// The broker could not be reached or the connection broke.
    #[error("broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused (nacked) a message, or did not confirm it in time.
    #[error("broker did not confirm: {0}")]
    NotConfirmed(String),
    /// The AMQP URL is malformed.
    #[error("bad AMQP_URL: {0}")]
    BadUrl(String),
}
