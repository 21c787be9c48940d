//! The one place where the read side's errors become HTTP answers.

use order_store::{ReadError, StoreError};
use service_kit::ApiError;
use warp::http::StatusCode;

/// The HTTP answer for a failed read.
pub(crate) fn to_api_error(err: ReadError) -> ApiError {
    match err {
        ReadError::UnknownReference(id) => ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_reference",
            format!("last_reference {id} names no order of yours (it may not be projected yet)"),
        ),
        ReadError::Store(
            StoreError::Unavailable(reason)
            | StoreError::OutcomeUnknown(reason)
            | StoreError::Misconfigured(reason),
        ) => {
            tracing::error!(%reason, "read table unavailable");
            ApiError::unavailable("the read table is unavailable; retry shortly")
        }
        ReadError::Store(StoreError::Corrupt(reason)) => {
            tracing::error!(%reason, "read table corrupt");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the read table returned data it could not read",
            )
        }
        // An error of a newer order-store (its errors are `#[non_exhaustive]`).
        other => {
            tracing::error!(error = %other, "read failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the read failed",
            )
        }
    }
}
