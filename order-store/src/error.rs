//! Errors of the store interfaces.

use order_domain::BuyOrderError;

/// A backend could not do its job (down, restarting, corrupt data). Callers answer "try later".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The backend cannot be reached or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (a bug or a bad migration, not a passing fault).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// The connection failed while a commit was under way, and the store did not come back in
    /// time to tell whether it happened. A retry with the same idempotence key is exact: it
    /// answers the order if it was placed, and places it once if it was not.
    #[error("outcome unknown: {0}")]
    OutcomeUnknown(String),
}

/// The mark an event store puts on a commit that failed in a way that leaves its outcome
/// unknown (the connection broke while the transaction was under way, perhaps after the
/// server received COMMIT). Carried as `AggregateError::UnexpectedError`; the writer resolves it
/// by retrying the same command ([`crate::CqrsOrderWriter`]).
#[derive(Debug, thiserror::Error)]
#[error("commit outcome unknown: {0}")]
pub struct CommitInDoubt(pub Box<dyn std::error::Error + Send + Sync>);

/// Why an order was not placed. Nothing was stored, except that with
/// `Store(StoreError::OutcomeUnknown)` it may have been (retry with the same key to know).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum PlaceError {
    /// The domain refused it: key reused, no price, over the cap, out of range.
    #[error(transparent)]
    Refused(#[from] BuyOrderError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Why a read failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ReadError {
    /// The page's `last_reference` names no order in the read table.
    #[error("last_reference {0} names no order")]
    UnknownReference(order_domain::OrderId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
