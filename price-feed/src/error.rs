//! Errors of the price feed.

use order_domain::PriceError;

/// Why a price source could not give a rate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FeedError {
    /// The upstream did not answer in time.
    #[error("upstream timed out after {0} ms")]
    Timeout(u128),
    /// The upstream could not be reached.
    #[error("upstream unreachable: {0}")]
    Connect(String),
    /// The upstream answered with an error status.
    #[error("upstream answered HTTP {0}")]
    Status(u16),
    /// The upstream answered something that is not a positive quote for the currency asked.
    #[error("upstream answered an unusable body: {0}")]
    BadBody(String),
}

impl FeedError {
    /// Whether trying again soon may succeed: timeouts, connection failures, 5xx and 429.
    pub fn is_transient(&self) -> bool {
        match self {
            FeedError::Timeout(_) | FeedError::Connect(_) => true,
            FeedError::Status(code) => *code >= 500 || *code == 429,
            FeedError::BadBody(_) => false,
        }
    }
}

impl From<FeedError> for PriceError {
    fn from(err: FeedError) -> Self {
        PriceError::new(err.to_string())
    }
}
