//! Errors of the store interfaces.

use order_domain::BuyOrderError;

/// A backend could not do its job (down, restarting, corrupt data). Callers answer "try later".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StoreError {
    /// The backend cannot be reached or failed; the operation may be retried.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// Stored data could not be read back (a bug or a bad migration, not a passing fault).
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Why an order was not placed. Nothing was stored in either case.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
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
pub enum ReadError {
    /// The page's `last_reference` names no order in the read table.
    #[error("last_reference {0} names no order")]
    UnknownReference(order_domain::OrderId),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}
