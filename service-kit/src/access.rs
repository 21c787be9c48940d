//! Who may call a service and how often: the `AUTH` mode, the caller filter that every
//! client-facing route goes through, per-client rate limits (a token bucket per client, from
//! `governor`), and a budget of failed authentications per source address (401s, then 429).
//! Domain-free: the service says how a bearer key (or, with authentication off, the
//! `X-Client-Id` header) becomes a caller.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, Instant};

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
    /// Failed authentications (401) per second each source address may make (an IPv6 source
    /// is its /64); past them and `AUTH_FAILURES_BURST`, its failures are answered 429
    /// `too_many_failures` (a valid key is never refused by this). 0: no budget.
    #[arg(
        long = "auth-failures-per-s",
        env = "AUTH_FAILURES_PER_S",
        value_name = "AUTH_FAILURES_PER_S",
        default_value_t = 1
    )]
    pub auth_failures_per_s: u32,
    /// Failed authentications a source may make at once above that rate.
    #[arg(
        long = "auth-failures-burst",
        env = "AUTH_FAILURES_BURST",
        value_name = "AUTH_FAILURES_BURST",
        default_value_t = 20
    )]
    pub auth_failures_burst: u32,
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
        Arc::new(
            RateLimits::new(self.rate_limit_per_s, self.rate_limit_burst)
                .with_failure_budget(self.auth_failures_per_s, self.auth_failures_burst),
        )
    }
}

/// The address a request came from (the TCP peer), put in the request's extensions by the
/// server: the source a failure budget is charged to, never a header the caller chooses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer(pub IpAddr);

/// Whom a failure budget belongs to: an IPv4 address, or an IPv6 /64 (one host is commonly
/// given a whole /64, so its addresses are one source).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Source {
    V4(u32),
    V6(u64),
}

impl From<IpAddr> for Source {
    fn from(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Source::V4(u32::from(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Source::V4(u32::from(v4)),
                None => Source::V6((u128::from(v6) >> 64) as u64),
            },
        }
    }
}

/// Token buckets by key, bounded: at most `max` keys have one of their own. When full, keys
/// idle for [`Buckets::IDLE`] are dropped (at most once a second, so a flood of new keys does
/// not sweep at every request); if still full, new keys share one bucket.
struct Buckets<K> {
    quota: Quota,
    max: usize,
    state: Mutex<BucketState<K>>,
    shared: Arc<DefaultDirectRateLimiter>,
}

struct BucketState<K> {
    buckets: HashMap<K, (Arc<DefaultDirectRateLimiter>, Instant)>,
    swept: Instant,
}

impl<K: Hash + Eq> Buckets<K> {
    /// How long a key's bucket is kept after its last use, once the table is full.
    const IDLE: Duration = Duration::from_secs(600);

    fn new(quota: Quota, max: usize) -> Self {
        Buckets {
            quota,
            max,
            state: Mutex::new(BucketState {
                buckets: HashMap::new(),
                swept: Instant::now(),
            }),
            shared: Arc::new(DefaultDirectRateLimiter::direct(quota)),
        }
    }

    /// Takes a token from `key`'s bucket; the wait until the next one if there is none.
    fn take<Q>(&self, key: &Q) -> Result<(), Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let now = Instant::now();
        let bucket = {
            let mut state = self.state.lock();
            if !state.buckets.contains_key(key)
                && state.buckets.len() >= self.max
                && now.duration_since(state.swept) >= Duration::from_secs(1)
            {
                state.swept = now;
                state
                    .buckets
                    .retain(|_, (_, used)| now.duration_since(*used) < Self::IDLE);
            }
            let full = state.buckets.len() >= self.max;
            match state.buckets.get_mut(key) {
                Some((bucket, used)) => {
                    *used = now;
                    bucket.clone()
                }
                None if full => self.shared.clone(),
                None => {
                    let bucket = Arc::new(DefaultDirectRateLimiter::direct(self.quota));
                    state.buckets.insert(key.to_owned(), (bucket.clone(), now));
                    bucket
                }
            }
        };
        bucket
            .check()
            .map_err(|not_until| not_until.wait_time_from(DefaultClock::default().now()))
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.state.lock().buckets.len()
    }
}

fn quota(per_second: u32, burst: u32) -> Option<Quota> {
    NonZeroU32::new(per_second).map(|rate| {
        Quota::per_second(rate).allow_burst(NonZeroU32::new(burst).unwrap_or(NonZeroU32::MIN))
    })
}

/// Whole seconds to wait, at least 1, for `Retry-After`.
fn retry_after(wait: Duration) -> u32 {
    u32::try_from(wait.as_secs().saturating_add(1)).unwrap_or(u32::MAX)
}

/// Per-client token buckets, and per-source budgets of failed authentications, for one API of
/// one process.
///
/// Both are bounded: past [`RateLimits::MAX_BUCKETS`] clients (or sources), new ones share one
/// bucket once the idle ones are dropped. With authentication on, clients are only those an
/// operator created; with it off, made-up client ids cannot grow memory; however many
/// addresses a flood comes from, neither can they.
pub struct RateLimits {
    clients: Option<Buckets<String>>,
    failures: Option<Buckets<Source>>,
}

impl RateLimits {
    /// The most clients, and the most sources, with a bucket of their own.
    pub const MAX_BUCKETS: usize = 100_000;

    /// `per_second` requests per second and a bucket of `burst` (at least 1) per client;
    /// `per_second == 0` is no limit. No failure budget.
    pub fn new(per_second: u32, burst: u32) -> Self {
        RateLimits {
            clients: quota(per_second, burst).map(|q| Buckets::new(q, Self::MAX_BUCKETS)),
            failures: None,
        }
    }

    /// With a budget of `per_second` failed authentications per source (a burst of `burst`);
    /// 0 is none.
    pub fn with_failure_budget(mut self, per_second: u32, burst: u32) -> Self {
        self.failures = quota(per_second, burst).map(|q| Buckets::new(q, Self::MAX_BUCKETS));
        self
    }

    /// No limit.
    pub fn off() -> Self {
        Self::new(0, 0)
    }

    /// Takes a token from `client`'s bucket, or answers 429 `rate_limited` with `Retry-After`.
    pub fn check(&self, client: &str) -> Result<(), ApiError> {
        let Some(clients) = &self.clients else {
            return Ok(());
        };
        clients.take(client).map_err(|wait| {
            metrics::counter!("rate_limited_total").increment(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this client; slow down and retry after Retry-After seconds",
            )
            .retry_after(retry_after(wait))
        })
    }

    /// Charges one failed authentication to `peer`'s budget: `Ok` while it lasts (answer the
    /// 401), else 429 `too_many_failures` with `Retry-After`. A request whose peer is unknown
    /// (not served by [`crate::serve`]) is not charged.
    pub fn charge_failure(&self, peer: Option<Peer>) -> Result<(), ApiError> {
        let (Some(failures), Some(Peer(ip))) = (&self.failures, peer) else {
            return Ok(());
        };
        failures.take(&Source::from(ip)).map_err(|wait| {
            metrics::counter!("auth_failures_throttled_total").increment(1);
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_failures",
                "too many failed authentications from this address; retry after Retry-After seconds",
            )
            .retry_after(retry_after(wait))
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
/// (429 past the limit). A 401 is charged to the source address's failure budget, and past it
/// is a 429. Runs before the body is read, so a refused caller costs no body.
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
    warp::header::headers_cloned()
        .and(warp::ext::optional::<Peer>())
        .and_then(move |headers: warp::http::HeaderMap, peer: Option<Peer>| {
            let (resolve, bucket, limits) = (resolve.clone(), bucket.clone(), limits.clone());
            async move {
                let authorization = one(&headers, "Authorization").map_err(warp::reject::custom)?;
                let client = one(&headers, "X-Client-Id").map_err(warp::reject::custom)?;
                let caller = match resolve(bearer(authorization), client) {
                    Ok(caller) => caller,
                    Err(refused) if refused.status == StatusCode::UNAUTHORIZED => {
                        limits.charge_failure(peer).map_err(warp::reject::custom)?;
                        return Err(warp::reject::custom(refused));
                    }
                    Err(refused) => return Err(warp::reject::custom(refused)),
                };
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
    fn failed_authentications_are_budgeted_per_source_with_bounded_memory() {
        let limits = RateLimits::off().with_failure_budget(1, 3);
        let peer = |text: &str| Some(Peer(text.parse().unwrap()));
        for _ in 0..3 {
            limits.charge_failure(peer("198.51.100.7")).unwrap();
        }
        let refused = limits.charge_failure(peer("198.51.100.7")).unwrap_err();
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (429, "too_many_failures")
        );
        assert!(refused.retry_after.is_some_and(|s| (1..=2).contains(&s)));
        limits
            .charge_failure(peer("198.51.100.8"))
            .expect("another address has its own budget");
        // An IPv6 host is its /64: changing the low bits is the same source; and an IPv4
        // address mapped into IPv6 is that IPv4 source.
        for low in 1..=3 {
            limits
                .charge_failure(peer(&format!("2001:db8:1:2::{low}")))
                .unwrap();
        }
        assert!(limits.charge_failure(peer("2001:db8:1:2::ffff")).is_err());
        assert!(limits.charge_failure(peer("::ffff:198.51.100.7")).is_err());
        // Unknown peer (not served by our server), or no budget: never charged.
        assert!(limits.charge_failure(None).is_ok());
        let none = RateLimits::off();
        for _ in 0..100 {
            none.charge_failure(peer("198.51.100.7")).unwrap();
        }
        // A flood from more addresses than the table holds: it stays at its bound.
        let wide = RateLimits::off().with_failure_budget(1_000_000, 1_000_000);
        for i in 0..(RateLimits::MAX_BUCKETS as u32 + 1000) {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            wide.charge_failure(Some(Peer(ip.into()))).unwrap();
        }
        assert_eq!(
            wide.failures.as_ref().unwrap().len(),
            RateLimits::MAX_BUCKETS
        );
    }

    #[test]
    fn made_up_clients_cannot_grow_the_buckets_without_bound() {
        let limits = RateLimits::new(1_000_000, 1_000_000);
        for i in 0..RateLimits::MAX_BUCKETS + 1000 {
            limits.check(&format!("client-{i}")).unwrap();
        }
        assert_eq!(
            limits.clients.as_ref().unwrap().len(),
            RateLimits::MAX_BUCKETS
        );
    }
}
