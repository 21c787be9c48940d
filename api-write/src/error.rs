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
            // A setting gone wrong under a running service (a password rotated, a database
            // dropped) is, to the caller, an outage: nothing stored, the operator fixes it.
            PlaceError::Store(StoreError::Unavailable(_) | StoreError::Misconfigured(_)) => {
                ApiError::unavailable(
                    "the order store is unavailable; nothing was stored, retry shortly",
                )
            }
            PlaceError::Store(StoreError::OutcomeUnknown(_)) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the order store failed while committing this order and did not come back in \
                 time to say whether it was placed; retry with the same idempotence key: the \
                 retry answers the order if it was placed and places it once if it was not",
            )
            .retry_after(1),
            PlaceError::Store(StoreError::Corrupt(_)) => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the order store returned data it could not read",
            ),
            // Refusals and failures of a newer order-domain / order-store (their errors are
            // `#[non_exhaustive]`): a refusal stored nothing; anything else is not understood.
            PlaceError::Refused(_) => {
                ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "order_refused", message)
            }
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the order could not be placed",
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
            metrics::counter!("cap_refusals_total").increment(1);
            tracing::warn!(%requested, %remaining, "cap refusal");
        }
        PlaceError::Refused(BuyOrderError::PriceUnavailable(reason)) => {
            metrics::counter!("price_unavailable_refusals_total").increment(1);
            tracing::warn!(%reason, "price unavailable, order refused");
        }
        PlaceError::Refused(other) => tracing::debug!(reason = %other, "order refused"),
        PlaceError::Store(StoreError::Unavailable(reason)) => {
            tracing::error!(%reason, "store unavailable")
        }
        PlaceError::Store(StoreError::OutcomeUnknown(reason)) => {
            tracing::error!(%reason, "order outcome unknown")
        }
        PlaceError::Store(StoreError::Corrupt(reason)) => tracing::error!(%reason, "store corrupt"),
        PlaceError::Store(StoreError::Misconfigured(reason)) => {
            tracing::error!(%reason, "store misconfigured")
        }
        other => tracing::error!(error = %other, "placement failed"),
    }
}
