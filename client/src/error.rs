//! What can go wrong, as the API says it (its error codes) or as the network does.

use std::time::Duration;

use order_domain::IdempotencyKey;

/// The error codes of the buy-orders APIs (`error.code` of every error body). A code this
/// version does not know is kept as [`ErrorCode::Other`].
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorCode {
    /// 422: a field of the order is not valid (`validation_failed`).
    ValidationFailed,
    /// 422: the order was refused (`order_refused`).
    OrderRefused,
    /// 422: the idempotence key was used before for another order (`idempotency_key_reused`).
    IdempotencyKeyReused,
    /// 409: the order would cross the BTC cap; nothing was stored (`btc_cap_exceeded`).
    BtcCapExceeded,
    /// 503: no price could be had; nothing was stored (`price_unavailable`).
    PriceUnavailable,
    /// 503: the store failed mid-commit and the outcome is not known yet (`outcome_unknown`):
    /// the same request with the same key finds out.
    OutcomeUnknown,
    /// 503: a backend is down (`unavailable`), or the API keys cannot be read
    /// (`keys_unavailable`).
    Unavailable,
    /// 503: the read table has not yet applied the write the read asked for
    /// (`not_yet_consistent`).
    NotYetConsistent,
    /// 400: the consistency token was not one the API gave (`invalid_consistency_token`).
    InvalidConsistencyToken,
    /// 429: this client sent more than its rate (`rate_limited`).
    RateLimited,
    /// 429: too many failed authentications from this address (`too_many_failures`).
    TooManyFailures,
    /// 401: no valid API key (`unauthenticated`).
    Unauthenticated,
    /// 400: more than one credential was given (`ambiguous_credentials`).
    AmbiguousCredentials,
    /// 404: no such order (or not yours), or an unknown page reference (`not_found`,
    /// `unknown_reference`).
    NotFound,
    /// 413: the body is too large (`payload_too_large`).
    PayloadTooLarge,
    /// 415: the body is not JSON (`unsupported_media_type`).
    UnsupportedMediaType,
    /// 400: the body or a header could not be read (`invalid_json`, `invalid_body`,
    /// `invalid_header`, `missing_header`, `length_required`).
    BadRequest,
    /// 500: the server failed (`internal`).
    Internal,
    /// Any other code, as sent.
    Other(String),
}

impl ErrorCode {
    /// The code of an error body.
    pub fn parse(code: &str) -> ErrorCode {
        match code {
            "validation_failed" => ErrorCode::ValidationFailed,
            "order_refused" => ErrorCode::OrderRefused,
            "idempotency_key_reused" => ErrorCode::IdempotencyKeyReused,
            "btc_cap_exceeded" => ErrorCode::BtcCapExceeded,
            "price_unavailable" => ErrorCode::PriceUnavailable,
            "outcome_unknown" => ErrorCode::OutcomeUnknown,
            "unavailable" | "keys_unavailable" => ErrorCode::Unavailable,
            "not_yet_consistent" => ErrorCode::NotYetConsistent,
            "invalid_consistency_token" => ErrorCode::InvalidConsistencyToken,
            "rate_limited" => ErrorCode::RateLimited,
            "too_many_failures" => ErrorCode::TooManyFailures,
            "unauthenticated" => ErrorCode::Unauthenticated,
            "ambiguous_credentials" => ErrorCode::AmbiguousCredentials,
            "not_found" | "unknown_reference" => ErrorCode::NotFound,
            "payload_too_large" => ErrorCode::PayloadTooLarge,
            "unsupported_media_type" => ErrorCode::UnsupportedMediaType,
            "invalid_json" | "invalid_body" | "invalid_header" | "missing_header"
            | "length_required" => ErrorCode::BadRequest,
            "internal" => ErrorCode::Internal,
            other => ErrorCode::Other(other.to_owned()),
        }
    }
}

/// A failed call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The API answered with an error.
    #[error("{status} {code:?}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The error code.
        code: ErrorCode,
        /// The server's message.
        message: String,
        /// `Retry-After`, when the server said when to come back.
        retry_after: Option<Duration>,
    },
    /// No answer: the connection failed, or an attempt timed out.
    #[error("no answer from {url}: {source}")]
    Transport {
        /// The URL asked (without credentials: the key travels in a header).
        url: String,
        /// What failed.
        #[source]
        source: reqwest::Error,
    },
    /// The deadline passed before a definite answer. For a placement: the order may or may not
    /// be stored. Place it again with `idempotence_key` (never a new key) to find out.
    #[error("no definite answer within {deadline:?} (last: {last})")]
    DeadlineExceeded {
        /// The call's deadline.
        deadline: Duration,
        /// The key a placement was sent under (`None` for a read).
        idempotence_key: Option<IdempotencyKey>,
        /// The last attempt's failure.
        #[source]
        last: Box<Error>,
    },
    /// The server answered something this client cannot read.
    #[error("unreadable answer: {0}")]
    InvalidAnswer(String),
    /// The client was built with a setting it cannot use.
    #[error("client configuration: {0}")]
    Config(String),
}

impl Error {
    /// The API's error code, if the API answered (looking through a deadline to its last
    /// attempt).
    pub fn code(&self) -> Option<&ErrorCode> {
        match self {
            Error::Api { code, .. } => Some(code),
            Error::DeadlineExceeded { last, .. } => last.code(),
            _ => None,
        }
    }
}
