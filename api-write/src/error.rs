//! The one place where the write side's errors become HTTP answers.

use order_domain::BuyOrderError;
use order_store::{PlaceError, StoreError};
use service_kit::ApiError;
use warp::http::StatusCode;

/// Seconds a client should wait before retrying after `price_unavailable`.
const PRICE_RETRY_AFTER_SECS: u32 = 2;

/// The HTTP answer for a failed placement.
pub fn to_api_error(err: PlaceError) -> ApiError {
    {
        let message = err.to_string();
        match err {
            PlaceError::Refused(BuyOrderError::IdempotencyKeyReused { .. }) => ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "idempotency_key_reused",
                message,
            ),
            PlaceError::Refused(BuyOrderError::CapExceeded {
                requested,
                remaining,
            }) => ApiError::new(StatusCode::CONFLICT, "btc_cap_exceeded", message)
                .with("requested_btc", requested.to_string())
                .with("remaining_btc", remaining.to_string()),
            PlaceError::Refused(BuyOrderError::BtcAmountOutOfRange { .. }) => {
                ApiError::validation(format!("amount: {message}"))
            }
            PlaceError::Refused(BuyOrderError::PriceUnavailable(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "price_unavailable",
                format!("{message}; nothing was stored, retry shortly"),
            )
            .retry_after(PRICE_RETRY_AFTER_SECS),
            PlaceError::Store(StoreError::Unavailable(_)) => ApiError::unavailable(
                "the order store is unavailable; nothing was stored, retry shortly",
            ),
            PlaceError::Store(StoreError::Corrupt(_)) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the order store returned data it could not read",
            ),
        }
    }
}

/// Logs a refusal at the level it deserves: domain refusals are business as usual, store
/// failures are operational problems.
pub fn log_refusal(err: &PlaceError) {
    match err {
        PlaceError::Refused(BuyOrderError::CapExceeded {
            requested,
            remaining,
        }) => {
            tracing::warn!(%requested, %remaining, "cap refusal");
        }
        PlaceError::Refused(BuyOrderError::PriceUnavailable(reason)) => {
            tracing::warn!(%reason, "price unavailable, order refused");
        }
        PlaceError::Refused(other) => tracing::info!(reason = %other, "order refused"),
        PlaceError::Store(StoreError::Unavailable(reason)) => {
            tracing::error!(%reason, "store unavailable")
        }
        PlaceError::Store(StoreError::Corrupt(reason)) => tracing::error!(%reason, "store corrupt"),
    }
}
