//! Observability every service shares: one log line and metrics per request with a request id,
//! `GET /metrics` (Prometheus) and `GET /readyz`.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use serde_json::json;
use warp::http::{HeaderValue, Method, StatusCode};
use warp::path::FullPath;
use warp::reply::Response;
use warp::{Filter, Rejection, Reply};

use crate::request_log::{logged_path, Policy};

/// The header that carries a request's id: taken from the request when the client sends a
/// sane one, generated otherwise, and always echoed in the response.
pub const REQUEST_ID: &str = "x-request-id";

/// A readiness check: `Ok` when every backend the service needs answers, else the dependency
/// that does not ([`NotReady`]).
pub type ReadyCheck =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = Result<(), NotReady>> + Send>> + Send + Sync>;

/// A dependency that does not answer. `/readyz` shows only `dependency` (a fixed name such as
/// `database`); `detail`, the driver's text, goes to the log, never into the response body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NotReady {
    /// Which dependency: a fixed name, safe to show.
    pub dependency: &'static str,
    /// Why, for the log only.
    pub detail: String,
}

impl NotReady {
    /// `dependency` is down because of `detail`.
    pub fn new(dependency: &'static str, detail: impl std::fmt::Display) -> Self {
        NotReady {
            dependency,
            detail: detail.to_string(),
        }
    }
}

/// What [`crate::serve`] needs to know about a service to observe it.
#[derive(Clone)]
pub struct Ops {
    /// The service's name (the `service` label of its metrics).
    pub name: &'static str,
    /// Its own routes as patterns (`/buy_orders/:id`) with the methods each allows (`"GET"`),
    /// so metrics are labelled by route, not by every path a client tries, and a 405 says what
    /// is allowed (`Allow`). [`OPS_ROUTES`] are added to them.
    pub routes: &'static [(&'static str, &'static str)],
    /// What `GET /readyz` checks.
    pub ready: ReadyCheck,
}

/// The longest `GET /readyz` waits for the readiness check: a dependency that does not answer
/// by then is reported not ready at once, under the 1 s a Kubernetes probe waits by default
/// (a probe that times out reads as a failure of the probe, not as the 503 that names it).
pub const READY_WITHIN: std::time::Duration = std::time::Duration::from_millis(800);

impl Ops {
    /// The readiness check, bounded by [`READY_WITHIN`].
    pub async fn check_ready(&self) -> Result<(), NotReady> {
        match tokio::time::timeout(READY_WITHIN, (self.ready)()).await {
            Ok(checked) => checked,
            Err(_) => Err(NotReady::new(
                "dependency",
                format!(
                    "the readiness check did not finish within {} ms",
                    READY_WITHIN.as_millis()
                ),
            )),
        }
    }

    /// Ops for a service whose readiness is `ready`.
    pub fn new<F, Fut>(
        name: &'static str,
        routes: &'static [(&'static str, &'static str)],
        ready: F,
    ) -> Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), NotReady>> + Send + 'static,
    {
        metrics_handle(); // the recorder must exist before the first metric is recorded
        crate::metrics_doc::describe(crate::metrics_doc::METRICS);
        Ops {
            name,
            routes,
            ready: Arc::new(move || Box::pin(ready())),
        }
    }
}

/// How often a serving process evaluates its own readiness for the `service_ready` gauge.
const READINESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Keeps `service_ready{service}` at 1 while `ops`'s readiness check passes and 0 while it
/// fails, evaluated every 5 s until `shutdown`: what an alert reads, since an orchestrator's
/// `/readyz` probes leave no trace in Prometheus.
pub(crate) async fn watch_readiness(ops: Ops, shutdown: tokio_util::sync::CancellationToken) {
    loop {
        let ready = ops.check_ready().await.is_ok();
        metrics::gauge!("service_ready", "service" => ops.name).set(if ready { 1.0 } else { 0.0 });
        tokio::select! {
            _ = tokio::time::sleep(READINESS_EVERY) => {}
            _ = shutdown.cancelled() => return,
        }
    }
}

/// Seconds from `at` to now, for lag gauges (0 for a time in the future: clocks differ). A
/// display figure, never money.
pub fn seconds_since(at: chrono::DateTime<chrono::Utc>) -> f64 {
    let micros = (chrono::Utc::now() - at).num_microseconds().unwrap_or(0);
    (micros as f64 / 1e6).max(0.0)
}

/// The process's Prometheus recorder, installed on first use (metrics are per process).
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        PrometheusBuilder::new()
            .set_buckets(&[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ])
            .expect("static buckets")
            .install_recorder()
            .expect("one recorder per process")
    })
}

/// `GET /metrics` and `GET /readyz`.
pub(crate) fn ops_routes(
    ops: &Ops,
) -> impl Filter<Extract = (Response,), Error = Rejection> + Clone {
    let metrics = warp::path!("metrics").and(warp::get()).map(|| {
        let mut response = metrics_handle().render().into_response();
        response.headers_mut().insert(
            "content-type",
            HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        response
    });
    let ops = ops.clone();
    let readyz = warp::path!("readyz").and(warp::get()).then(move || {
        let ops = ops.clone();
        async move {
            match ops.check_ready().await {
                Ok(()) => warp::reply::json(&json!({ "status": "ready" })).into_response(),
                Err(NotReady { dependency, detail }) => {
                    tracing::warn!(dependency, %detail, "not ready");
                    crate::ApiError::unavailable(format!("not ready: {dependency} unavailable"))
                        .with("dependency", dependency)
                        .into_response()
                }
            }
        }
    });
    metrics.or(readyz).unify()
}

/// The `method` label: one of the standard methods, or `other`, so that no request can add a
/// series to `/metrics` (hyper accepts any token as a method: `M1`, `M2`, …).
fn method_label(method: &Method) -> &'static str {
    const KNOWN: [Method; 9] = [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::PATCH,
        Method::HEAD,
        Method::OPTIONS,
        Method::CONNECT,
        Method::TRACE,
    ];
    KNOWN
        .iter()
        .find(|known| *known == method)
        .map_or("other", |known| known.as_str())
}

/// The request id: the client's `X-Request-Id` when sane (1 to 128 visible ASCII characters),
/// else a fresh UUID.
pub(crate) fn request_id(header: Option<&str>) -> String {
    header
        .filter(|id| !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic()))
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), str::to_owned)
}

/// The routes of [`Ops`] every service serves (the projector: the first three) beside its own,
/// as metric labels: a service lists only its own routes. Logged at DEBUG, not INFO.
pub const OPS_ROUTES: &[(&str, &str)] = &[
    ("/healthcheck", "GET"),
    ("/readyz", "GET"),
    ("/metrics", "GET"),
    ("/openapi.json", "GET"),
    ("/docs", "GET"),
    ("/docs/*", "GET"),
];

/// The route `path` matches among the service's `routes` and then [`OPS_ROUTES`] (UUID
/// segments read as `:id`; a pattern ending in `/*` matches every path under it): its pattern
/// and allowed methods, or `("other", "")`. Compared segment by segment, allocating nothing.
fn route_of(path: &str, routes: &[(&'static str, &'static str)]) -> (&'static str, &'static str) {
    routes
        .iter()
        .chain(OPS_ROUTES)
        .find(|(route, _)| route_matches(route, path))
        .copied()
        .unwrap_or(("other", ""))
}

/// Whether `path` matches the route pattern `route` (see [`route_of`]): the path with its UUID
/// segments read as `:id` equals the pattern, or, for a pattern ending in `*`, starts with the
/// rest of it.
fn route_matches(route: &str, path: &str) -> bool {
    let (pattern, prefix) = match route.strip_suffix('*') {
        Some(pattern) => (pattern, true),
        None => (route, false),
    };
    let mut segments = path.split('/');
    let mut wanted = pattern.split('/').peekable();
    while let Some(want) = wanted.next() {
        let Some(got) = segments.next() else {
            return false;
        };
        let got = if uuid::Uuid::try_parse(got).is_ok() {
            ":id"
        } else {
            got
        };
        if prefix && wanted.peek().is_none() {
            return got.starts_with(want);
        }
        if got != want {
            return false;
        }
    }
    segments.next().is_none()
}

/// The request metrics of one (service, method, route, status): registered once, then shared,
/// so that a request updates them without building labels or looking up the registry. The key
/// set is bounded (methods: ten labels, routes: the service's few, status: three digits).
#[derive(Clone)]
struct RequestMetrics {
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

type MetricsKey = (&'static str, &'static str, u16);

fn request_metrics(name: &'static str, key: MetricsKey) -> RequestMetrics {
    static CACHE: OnceLock<
        parking_lot::RwLock<std::collections::HashMap<(&'static str, MetricsKey), RequestMetrics>>,
    > = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    if let Some(found) = cache.read().get(&(name, key)) {
        return found.clone();
    }
    let (method, route, status) = key;
    let labels = [
        ("service", name.to_owned()),
        ("method", method.to_owned()),
        ("route", route.to_owned()),
        ("status", status.to_string()),
    ];
    let made = RequestMetrics {
        requests: metrics::counter!("http_requests_total", &labels),
        duration: metrics::histogram!("http_request_duration_seconds", &labels),
    };
    cache.write().entry((name, key)).or_insert(made).clone()
}

/// Wraps recovered routes: a request id, one log line and the request metrics per request.
pub(crate) fn instrument<F>(
    name: &'static str,
    routes_list: &'static [(&'static str, &'static str)],
    routes: F,
) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone
where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    warp::any()
        .map(Instant::now)
        .and(warp::method())
        .and(warp::path::full())
        // only the request id header, not a copy of them all on every request
        .and(
            warp::header::optional::<String>(REQUEST_ID)
                .or(warp::any().map(|| None))
                .unify(),
        )
        .and(routes)
        .map(
            move |started: Instant,
                  method: Method,
                  path: FullPath,
                  header: Option<String>,
                  mut response: Response| {
                let id = request_id(header.as_deref());
                let status: StatusCode = response.status();
                let elapsed = started.elapsed();
                let (route, allowed) = route_of(path.as_str(), routes_list);
                if status == StatusCode::METHOD_NOT_ALLOWED && !allowed.is_empty() {
                    response
                        .headers_mut()
                        .insert("allow", HeaderValue::from_static(allowed));
                }
                // The request id is the span's (`request`), once per line; the latency in whole
                // microseconds shown as milliseconds, so it prints without float noise. Which
                // requests get a line, and how many a second: `crate::request_log`.
                let latency_ms = elapsed.as_micros() as f64 / 1000.0;
                if OPS_ROUTES.iter().any(|(ops, _)| *ops == route) {
                    // Probes and scrapes every few seconds: not news at INFO.
                    tracing::debug!(target: "http", method = %method, path = path.as_str(),
                        status = status.as_u16(), latency_ms, "request");
                } else if let Some(write) = Policy::get().decide(status, elapsed) {
                    // `dropped_before` only when lines were dropped (`None` records nothing).
                    let dropped_before = (write.dropped_before > 0).then_some(write.dropped_before);
                    tracing::info!(target: "http", method = %method,
                        path = &*logged_path(path.as_str()), status = status.as_u16(), latency_ms,
                        dropped_before, "request");
                }
                let metrics =
                    request_metrics(name, (method_label(&method), route, status.as_u16()));
                metrics.requests.increment(1);
                metrics.duration.record(elapsed.as_secs_f64());
                if let Ok(value) = HeaderValue::from_str(&id) {
                    response.headers_mut().insert(REQUEST_ID, value);
                }
                response
            },
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serve_routes(ready: bool) -> impl Filter<Extract = (Response,), Error = Infallible> + Clone {
        let ops = Ops::new(
            "test",
            &[("/hello", "GET"), ("/readyz", "GET"), ("/metrics", "GET")],
            move || async move {
                if ready {
                    Ok(())
                } else {
                    Err(NotReady::new(
                        "database",
                        "connection to postgres://app:s3cret@db failed",
                    ))
                }
            },
        );
        let routes = warp::path!("hello")
            .and(warp::get())
            .map(|| "hi".into_response())
            .or(ops_routes(&ops))
            .unify()
            .recover(crate::recover)
            .unify();
        instrument(ops.name, ops.routes, routes)
    }

    #[tokio::test]
    async fn requests_get_an_id_metrics_and_readiness() {
        let routes = serve_routes(true);
        let hello = warp::test::request().path("/hello").reply(&routes).await;
        assert_eq!(hello.headers()[REQUEST_ID].len(), 36, "generated");
        let echoed = warp::test::request()
            .path("/hello")
            .header(REQUEST_ID, "req-7")
            .reply(&routes)
            .await;
        assert_eq!(echoed.headers()[REQUEST_ID], "req-7");
        let missing = warp::test::request().path("/nope").reply(&routes).await;
        assert_eq!(missing.status(), 404);
        assert!(missing.headers().contains_key(REQUEST_ID), "errors too");

        let wrong = warp::test::request()
            .method("DELETE")
            .path("/hello")
            .reply(&routes)
            .await;
        assert_eq!(wrong.status(), 405);
        assert_eq!(wrong.headers()["allow"], "GET");

        let ready = warp::test::request().path("/readyz").reply(&routes).await;
        assert_eq!(ready.status(), 200);
        let metrics = warp::test::request().path("/metrics").reply(&routes).await;
        assert_eq!(metrics.status(), 200);
        assert!(metrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        let text = String::from_utf8_lossy(metrics.body());
        assert!(
            text.contains(
                r#"http_requests_total{service="test",method="GET",route="/hello",status="200"}"#
            ),
            "{text}"
        );
        assert!(text.contains(r#"route="other",status="404""#), "{text}");
        for made_up in ["M1", "M2", "PROPFIND"] {
            warp::test::request()
                .method(made_up)
                .path("/hello")
                .reply(&routes)
                .await;
        }
        let text = String::from_utf8_lossy(
            warp::test::request()
                .path("/metrics")
                .reply(&routes)
                .await
                .body(),
        )
        .into_owned();
        assert!(!text.contains("M1") && !text.contains("PROPFIND"), "{text}");
        assert!(text.contains(r#"method="other""#), "{text}");
        assert!(
            text.contains("http_request_duration_seconds_bucket"),
            "{text}"
        );
    }

    #[tokio::test]
    async fn readyz_is_503_when_a_backend_is_down() {
        let response = warp::test::request()
            .path("/readyz")
            .reply(&serve_routes(false))
            .await;
        assert_eq!(response.status(), 503);
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
        assert_eq!(body["error"]["dependency"], "database");
        let text = String::from_utf8_lossy(response.body());
        assert!(text.contains("database unavailable"), "{text}");
        assert!(
            !text.contains("s3cret") && !text.contains("postgres://"),
            "{text}"
        );
    }

    /// A dependency that hangs (a silent database peer) makes `/readyz` answer 503 within
    /// `READY_WITHIN`, under a Kubernetes probe's default 1 s, not when the check gives up.
    #[tokio::test]
    async fn readyz_answers_503_in_time_when_a_check_hangs() {
        let ops = Ops::new("test", &[("/readyz", "GET")], || async {
            tokio::time::sleep(std::time::Duration::from_secs(5)).await;
            Ok(())
        });
        let routes = ops_routes(&ops);
        let started = std::time::Instant::now();
        let response = warp::test::request().path("/readyz").reply(&routes).await;
        assert_eq!(response.status(), 503);
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
        let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["code"], "unavailable");
    }

    #[test]
    fn routes_are_labelled_by_pattern() {
        let routes = &[("/buy_orders", "GET"), ("/buy_orders/:id", "GET")];
        assert_eq!(route_of("/buy_orders", routes), ("/buy_orders", "GET"));
        assert_eq!(
            route_of("/buy_orders/3f2504e0-4f89-11d3-9a0c-0305e82c3301", routes).0,
            "/buy_orders/:id"
        );
        assert_eq!(route_of("/wp-admin", routes).0, "other");
    }

    #[test]
    fn request_ids_are_taken_when_sane_and_generated_otherwise() {
        assert_eq!(request_id(None).len(), 36);
        assert_eq!(request_id(Some("abc-123")), "abc-123");
        assert_ne!(request_id(Some("has space")), "has space");
    }
}
