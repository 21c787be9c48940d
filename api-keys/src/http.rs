//! Authentication at the HTTP edge (feature `http`): the filter every client route of both APIs
//! starts with, and the one mapping of an [`IdentityError`] to an HTTP answer, so the two APIs
//! cannot answer the same caller differently.

use std::sync::Arc;

use service_kit::{ApiError, RateLimits};
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use crate::identity::{Caller, Identity, IdentityError};

/// The identity a service binary starts with: `AUTH` from `access`, `default` when it is unset
/// ([`crate::start_identity`]).
#[cfg(feature = "postgres")]
pub async fn identity_for(
    access: &service_kit::AccessSettings,
    default: service_kit::AuthMode,
    db: &order_store::postgres::PgSettings,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<Identity, crate::IdentityStartError> {
    let required = access.mode(default) == service_kit::AuthMode::Required;
    let freshness = crate::directory::Freshness {
        refresh: access.keys_refresh,
        max_staleness: access.keys_max_staleness,
    };
    crate::start_identity(required, db, freshness, stop).await
}

/// Seconds a client should wait before retrying after `keys_unavailable`.
const KEYS_RETRY_AFTER_SECS: u32 = 2;

/// The caller of a client route: `Authorization: Bearer <key>` (or, with `AUTH=off`,
/// `X-Client-Id`) resolved by `identity`, then charged to the caller's token bucket in
/// `limits`. Runs before the body is read, so a refused caller costs no body.
pub fn caller(
    identity: Identity,
    limits: Arc<RateLimits>,
) -> impl Filter<Extract = (Caller,), Error = Rejection> + Clone {
    service_kit::access::caller(
        move |bearer, client| identity.resolve(bearer, client).map_err(identity_error),
        |caller: &Caller| caller.client.as_str(),
        limits,
    )
}

/// The HTTP answer for a caller that could not be identified: 401 `unauthenticated` (with
/// `WWW-Authenticate: Bearer`), 422 for an `X-Client-Id` that is no client id, 503
/// `keys_unavailable` (with `Retry-After`) while the keys are too stale to trust.
pub fn identity_error(err: IdentityError) -> ApiError {
    let message = err.to_string();
    match err {
        IdentityError::BadClientId(_) => ApiError::validation(message.clone()).with(
            "fields",
            serde_json::json!([{ "field": "X-Client-Id", "message": message }]),
        ),
        IdentityError::KeysStale(_) => {
            ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "keys_unavailable", message)
                .retry_after(KEYS_RETRY_AFTER_SECS)
        }
        _ => ApiError::unauthenticated(message),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_error_has_its_answer() {
        let bad = Identity::Off.resolve(None, Some("bad id")).unwrap_err();
        assert_eq!(identity_error(bad).status, StatusCode::UNPROCESSABLE_ENTITY);
        let stale = identity_error(IdentityError::KeysStale(std::time::Duration::from_secs(31)));
        assert_eq!(
            (stale.status.as_u16(), stale.code),
            (503, "keys_unavailable")
        );
        assert_eq!(stale.retry_after, Some(KEYS_RETRY_AFTER_SECS));
        assert_eq!(
            identity_error(IdentityError::Unauthenticated).status,
            StatusCode::UNAUTHORIZED
        );
    }
}
