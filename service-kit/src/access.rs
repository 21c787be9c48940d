//! Who may call a service and how often: the `AUTH` mode, the caller filter that every
//! client-facing route goes through, and per-client rate limits (a token bucket per client, from
//! `governor`). Domain-free: the service says how a bearer key (or, with authentication off, the
//! `X-Client-Id` header) becomes a caller.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultDirectRateLimiter, Quota};
use parking_lot::Mutex;
use warp::http::StatusCode;
use warp::{Filter, Rejection};

use crate::error::ApiError;

/// `AUTH`: whether callers must present an API key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AuthMode {
    /// `Authorization: Bearer <key>` on every client route; 401 without a valid one.
    Required,
    /// No keys: `X-Client-Id` names the client. For local use; logged as a warning at start-up.
    Off,
}

/// Access settings every API binary flattens into its own.
#[derive(Debug, Clone, clap::Args)]
pub struct AccessSettings {
    /// `required` or `off`. Default: `required`, except for the all-in-one on its in-memory store.
    #[arg(long = "auth", env = "AUTH", value_name = "AUTH")]
    pub auth: Option<AuthMode>,
    /// Requests per second each client may make to each API of this process (0: no limit).
    #[arg(
        long = "rate-limit-per-s",
        env = "RATE_LIMIT_PER_S",
        value_name = "RATE_LIMIT_PER_S",
        default_value_t = 100
    )]
    pub rate_limit_per_s: u32,
    /// Requests a client may make at once above that rate (the bucket's size).
    #[arg(
        long = "rate-limit-burst",
        env = "RATE_LIMIT_BURST",
        value_name = "RATE_LIMIT_BURST",
        default_value_t = 200
    )]
    pub rate_limit_burst: u32,
    /// How long the API keys loaded last stay in force while the key registry (the write
    /// database) cannot be read; past it every key is refused with 503 `keys_unavailable`, so
    /// that a key revoked meanwhile stops working within this bound.
    #[arg(long = "auth-keys-max-staleness-ms", env = "AUTH_KEYS_MAX_STALENESS_MS",
          value_name = "AUTH_KEYS_MAX_STALENESS_MS", default_value = "30000",
          value_parser = settings_kit::parse_millis)]
    pub keys_max_staleness: std::time::Duration,
    /// How often the API keys are reloaded without being told to. A change (a key made,
    /// rotated or revoked) is notified and takes effect at once; this bounds one whose
    /// notification was lost (the database session down at that moment).
    #[arg(long = "auth-keys-refresh-ms", env = "AUTH_KEYS_REFRESH_MS",
          value_name = "AUTH_KEYS_REFRESH_MS", default_value = "2000",
          value_parser = settings_kit::parse_millis)]
    pub keys_refresh: std::time::Duration,
}

impl AccessSettings {
    /// The mode asked for, or `default`.
    pub fn mode(&self, default: AuthMode) -> AuthMode {
        self.auth.unwrap_or(default)
    }

    /// A fresh set of limits as configured (one per API: each keeps its own buckets).
    pub fn limits(&self) -> Arc<RateLimits> {
        Arc::new(RateLimits::new(
            self.rate_limit_per_s,
            self.rate_limit_burst,
        ))
    }
}

/// Per-client token buckets, for one API of one process.
///
/// The buckets are bounded: past [`RateLimits::MAX_BUCKETS`] clients, new ones share one bucket
/// (with authentication on, clients are only those an operator created, so this is never
/// reached; with it off, made-up client ids cannot grow memory).
pub struct RateLimits {
    quota: Option<Quota>,
    buckets: Mutex<HashMap<String, Arc<DefaultDirectRateLimiter>>>,
    shared: Option<Arc<DefaultDirectRateLimiter>>,
}

impl RateLimits {
    /// The most clients with a bucket of their own.
    pub const MAX_BUCKETS: usize = 100_000;

    /// `per_second` requests per second and a bucket of `burst` (at least 1) per client;
    /// `per_second == 0` is no limit.
    pub fn new(per_second: u32, burst: u32) -> Self {
        let quota = NonZeroU32::new(per_second).map(|rate| {
            Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
        });
        RateLimits {
            shared: quota.map(|q| Arc::new(DefaultDirectRateLimiter::direct(q))),
            quota,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// No limit.
    pub fn off() -> Self {
        Self::new(0, 0)
    }

    /// Takes a token from `client`'s bucket, or answers 429 `rate_limited` with `Retry-After`.
    pub fn check(&self, client: &str) -> Result<(), ApiError> {
        let (Some(quota), Some(shared)) = (self.quota, &self.shared) else {
            return Ok(());
        };
        let bucket = {
            let mut buckets = self.buckets.lock();
            match buckets.get(client) {
                Some(bucket) => bucket.clone(),
                None if buckets.len() >= Self::MAX_BUCKETS => shared.clone(),
                None => buckets
                    .entry(client.to_owned())
                    .or_insert_with(|| Arc::new(DefaultDirectRateLimiter::direct(quota)))
                    .clone(),
            }
        };
        bucket.check().map_err(|not_until| {
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            let seconds = u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX);
            metrics::counter!("rate_limited_total").increment(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this client; slow down and retry after Retry-After seconds",
            )
            .retry_after(seconds)
        })
    }
}

/// The bearer token of an `Authorization` header, if it is one (`Bearer` in any case).
fn bearer(header: Option<&str>) -> Option<&str> {
    let (scheme, token) = header?.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The caller of a client route: `resolve(bearer token, X-Client-Id)` says who it is (or the
/// error to answer, typically 401), and the caller's bucket (`bucket`) is charged one request
/// (429 past the limit). Runs before the body is read, so a refused caller costs no body.
pub fn caller<C, R, B>(
    resolve: R,
    bucket: B,
    limits: Arc<RateLimits>,
) -> impl Filter<Extract = (C,), Error = Rejection> + Clone
where
    C: Send + 'static,
    R: Fn(Option<&str>, Option<&str>) -> Result<C, ApiError> + Clone + Send + Sync + 'static,
    B: Fn(&C) -> &str + Clone + Send + Sync + 'static,
{
    warp::header::headers_cloned().and_then(move |headers: warp::http::HeaderMap| {
        let (resolve, bucket, limits) = (resolve.clone(), bucket.clone(), limits.clone());
        async move {
            let authorization = one(&headers, "Authorization").map_err(warp::reject::custom)?;
            let client = one(&headers, "X-Client-Id").map_err(warp::reject::custom)?;
            let caller = resolve(bearer(authorization), client).map_err(warp::reject::custom)?;
            limits
                .check(bucket(&caller))
                .map_err(warp::reject::custom)?;
            Ok::<C, Rejection>(caller)
        }
    })
}

/// The one value of the header `name`, if any. A request carries one identity: two values of
/// an identity header are refused with 400 `ambiguous_credentials` (taking the first would let
/// a proxy that appends one, or a client that sends two, be identified by whichever came first).
fn one<'a>(headers: &'a warp::http::HeaderMap, name: &str) -> Result<Option<&'a str>, ApiError> {
    let mut values = headers.get_all(name).iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "ambiguous_credentials",
            format!("more than one {name} header: send one identity per request"),
        ));
    }
    first.to_str().map(Some).map_err(|_| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_header",
            format!("{name} is not valid text"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_identity_header_is_read_once_or_refused() {
        use warp::http::{HeaderMap, HeaderValue};
        let mut headers = HeaderMap::new();
        assert_eq!(one(&headers, "Authorization").unwrap(), None);
        headers.append("authorization", HeaderValue::from_static("Bearer a"));
        assert_eq!(one(&headers, "Authorization").unwrap(), Some("Bearer a"));
        headers.append("authorization", HeaderValue::from_static("Bearer b"));
        let two = one(&headers, "Authorization").unwrap_err();
        assert_eq!(
            (two.status.as_u16(), two.code),
            (400, "ambiguous_credentials")
        );
        headers.insert("x-client-id", HeaderValue::from_bytes(b"caf\xe9").unwrap());
        let bytes = one(&headers, "X-Client-Id").unwrap_err();
        assert_eq!((bytes.status.as_u16(), bytes.code), (400, "invalid_header"));
    }

    #[test]
    fn bearer_tokens_are_read_strictly() {
        assert_eq!(bearer(Some("Bearer abc")), Some("abc"));
        assert_eq!(bearer(Some("bearer  abc ")), Some("abc"));
        assert_eq!(bearer(Some("Basic abc")), None);
        assert_eq!(bearer(Some("Bearer ")), None);
        assert_eq!(bearer(Some("abc")), None);
        assert_eq!(bearer(None), None);
    }

    #[test]
    fn each_client_has_its_own_bucket_and_a_refusal_says_when_to_retry() {
        let limits = RateLimits::new(1, 3);
        for _ in 0..3 {
            limits.check("a").unwrap();
        }
        let refused = limits.check("a").unwrap_err();
        assert_eq!(refused.status, 429);
        assert_eq!(refused.code, "rate_limited");
        assert!(refused.retry_after.is_some_and(|s| (1..=2).contains(&s)));
        limits
            .check("b")
            .expect("another client is not limited by a");
        let off = RateLimits::off();
        for _ in 0..10_000 {
            off.check("a").unwrap();
        }
    }

    #[test]
    fn made_up_clients_cannot_grow_the_buckets_without_bound() {
        let limits = RateLimits::new(1_000_000, 1_000_000);
        for i in 0..RateLimits::MAX_BUCKETS + 1000 {
            limits.check(&format!("client-{i}")).unwrap();
        }
        assert_eq!(limits.buckets.lock().len(), RateLimits::MAX_BUCKETS);
    }
}
