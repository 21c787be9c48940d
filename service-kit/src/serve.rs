//! Serving routes, shutting down cleanly, and logging.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use serde_json::json;
use settings_kit::parse_millis;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tower_service::Service;
use tracing::Instrument;
use warp::http::{HeaderValue, StatusCode};
use warp::{Filter, Reply};

use crate::error::{recover, ApiError};
use crate::observe::{instrument, ops_routes, request_id, Ops, REQUEST_ID};

/// `GET /healthcheck` → 200 `{"status":"ok"}`: the process is alive and serving.
pub fn health_route() -> impl Filter<Extract = (impl Reply,), Error = warp::Rejection> + Clone {
    warp::path!("healthcheck")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({ "status": "ok" })))
}

/// What every HTTP listener of a service bounds, so that slow or idle clients cannot hold
/// memory or connections: from the environment (or the matching `--flags`).
#[derive(Debug, Clone, clap::Args)]
pub struct HttpSettings {
    /// How long a client has to send a request's headers, and how long an idle keep-alive
    /// connection is kept waiting for the next request.
    #[arg(long = "http-header-timeout-ms", env = "HTTP_HEADER_TIMEOUT_MS",
          value_name = "HTTP_HEADER_TIMEOUT_MS", default_value = "5000", value_parser = parse_millis)]
    pub header_timeout: Duration,
    /// How long a client has to send a request's body once its headers are in (408 after).
    #[arg(long = "http-body-timeout-ms", env = "HTTP_BODY_TIMEOUT_MS",
          value_name = "HTTP_BODY_TIMEOUT_MS", default_value = "5000", value_parser = parse_millis)]
    pub body_timeout: Duration,
    /// How long a request may take in all before it is abandoned with 503 `timeout`.
    #[arg(long = "http-request-timeout-ms", env = "HTTP_REQUEST_TIMEOUT_MS",
          value_name = "HTTP_REQUEST_TIMEOUT_MS", default_value = "30000", value_parser = parse_millis)]
    pub request_timeout: Duration,
    /// Connections served at once per listener; more wait in the kernel's backlog.
    #[arg(long = "http-max-connections", env = "HTTP_MAX_CONNECTIONS",
          value_name = "HTTP_MAX_CONNECTIONS", default_value_t = 2048,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_connections: u32,
    /// How long shutdown waits for requests in flight before closing their connections.
    #[arg(long = "http-shutdown-grace-ms", env = "HTTP_SHUTDOWN_GRACE_MS",
          value_name = "HTTP_SHUTDOWN_GRACE_MS", default_value = "10000", value_parser = parse_millis)]
    pub shutdown_grace: Duration,
}

impl Default for HttpSettings {
    fn default() -> Self {
        HttpSettings {
            header_timeout: Duration::from_secs(5),
            body_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            max_connections: 2048,
            shutdown_grace: Duration::from_secs(10),
        }
    }
}

/// A request body that fails once its deadline passes: what turns a client that announces 100
/// bytes and sends 6 into a 408 instead of a connection held forever.
struct DeadlineBody {
    inner: Incoming,
    deadline: Pin<Box<tokio::time::Sleep>>,
    limit: Duration,
}

/// The error of a [`DeadlineBody`] past its deadline ([`crate::body`] answers 408).
#[derive(Debug)]
pub(crate) struct BodyTimedOut(pub(crate) Duration);

impl std::fmt::Display for BodyTimedOut {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the request body did not arrive within {} ms",
            self.0.as_millis()
        )
    }
}

impl std::error::Error for BodyTimedOut {}

impl http_body::Body for DeadlineBody {
    type Data = Bytes;
    type Error = Box<dyn std::error::Error + Send + Sync>;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<Bytes>, Self::Error>>> {
        if let Poll::Ready(frame) = Pin::new(&mut self.inner).poll_frame(cx) {
            return Poll::Ready(frame.map(|r| r.map_err(Into::into)));
        }
        if self.deadline.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Some(Err(Box::new(BodyTimedOut(self.limit)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}

/// Serves `routes`, plus `GET /metrics` and `GET /readyz` ([`Ops`]), on `listener` until
/// `shutdown` is cancelled, with the default [`HttpSettings`]. See [`serve_with`].
pub async fn serve<F, R>(ops: Ops, routes: F, listener: TcpListener, shutdown: CancellationToken)
where
    F: Filter<Extract = (R,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    R: Reply + 'static,
{
    serve_with(ops, routes, listener, shutdown, &HttpSettings::default()).await
}

/// Serves `routes`, plus `GET /metrics` and `GET /readyz` ([`Ops`]), on `listener` until
/// `shutdown` is cancelled, then stops accepting and lets requests in flight finish for at most
/// `http.shutdown_grace`. Every rejection becomes a JSON error ([`recover`]); every request gets a
/// request id (echoed in `X-Request-Id`), one log line with its method, path, status and
/// latency, and metrics.
///
/// HTTP/1.1 through hyper, with every wait bounded by `http` ([`HttpSettings`]): headers (and
/// idle keep-alive), body, the whole request, and the number of connections at once.
pub async fn serve_with<F, R>(
    ops: Ops,
    routes: F,
    listener: TcpListener,
    shutdown: CancellationToken,
    http: &HttpSettings,
) where
    F: Filter<Extract = (R,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    R: Reply + 'static,
{
    let routes = routes
        .map(|reply: R| reply.into_response())
        .or(ops_routes(&ops))
        .unify()
        .recover(recover)
        .unify();
    tokio::spawn(crate::observe::watch_readiness(
        ops.clone(),
        shutdown.clone(),
    ));
    let service = warp::service(instrument(ops.name, ops.routes, routes));
    ensure_open_files(http.max_connections);
    // `max_connections` is at most 1,000,000 (its parser's range): it fits a usize.
    let connections = Arc::new(Semaphore::new(http.max_connections as usize));
    let graceful = GracefulShutdown::new();
    let (body_timeout, request_timeout) = (http.body_timeout, http.request_timeout);
    loop {
        let permit = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = connections.clone().acquire_owned() => match permit {
                Ok(permit) => permit,
                Err(_) => break, // never closed
            },
        };
        let (stream, peer) = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let service = service.clone();
        let handler = hyper::service::service_fn(move |request: hyper::Request<Incoming>| {
            let mut service = service.clone();
            let mut request = request.map(|inner| DeadlineBody {
                inner,
                deadline: Box::pin(tokio::time::sleep(body_timeout)),
                limit: body_timeout,
            });
            // One id per request, settled here: the routes read it from the header (a sane one
            // from the client, else a fresh one), and every log line of the request carries it
            // through the span.
            let id = request_id(
                request
                    .headers()
                    .get(REQUEST_ID)
                    .and_then(|v| v.to_str().ok()),
            );
            if let Ok(value) = HeaderValue::from_str(&id) {
                request.headers_mut().insert(REQUEST_ID, value);
            }
            // Who is on the other end of the socket, for the failure budget: never a header.
            request
                .extensions_mut()
                .insert(crate::access::Peer(peer.ip()));
            let span = tracing::info_span!("request", request_id = %id);
            // Boxed: hyper keeps a slot for the service's future in every connection, sized for
            // it; warp's futures are large, and an idle connection would carry that size for
            // nothing (measured: ~100 KB per idle connection unboxed).
            let answer: BoxedAnswer = Box::pin(
                async move {
                    match tokio::time::timeout(request_timeout, service.call(request)).await {
                        Ok(answer) => answer,
                        Err(_) => Ok(request_timed_out(request_timeout)),
                    }
                }
                .instrument(span),
            );
            answer
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(http.header_timeout);
        let connection = graceful.watch(builder.serve_connection(TokioIo::new(stream), handler));
        tokio::spawn(async move {
            let _permit = permit; // released when the connection ends
            if let Err(err) = connection.await {
                tracing::debug!(%err, "connection ended with an error");
            }
        });
    }
    drop(listener); // refuse new connections at once
    if tokio::time::timeout(http.shutdown_grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            grace_ms = http.shutdown_grace.as_millis() as u64,
            "requests still in flight after the shutdown grace; their connections are closed"
        );
    }
}

/// The future of one request's answer, boxed (see `serve_with`).
type BoxedAnswer =
    Pin<Box<dyn Future<Output = Result<warp::reply::Response, std::convert::Infallible>> + Send>>;

/// Raises the process's soft limit of open files to its hard limit (once), so that
/// `max_connections` connections can be open at once, and warns if even that is too few.
fn ensure_open_files(max_connections: u32) {
    static RAISED: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    let limit = *RAISED.get_or_init(|| rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0));
    // Database connections, the listeners and the broker need a few more.
    let needed = u64::from(max_connections) + 128;
    if limit < needed {
        tracing::warn!(
            open_files = limit,
            max_connections,
            "the open-file limit is below HTTP_MAX_CONNECTIONS plus headroom: raise it \
             (ulimit -n) or lower HTTP_MAX_CONNECTIONS, or accepts will fail under load"
        );
    }
}

/// The answer to a request abandoned at its deadline.
fn request_timed_out(limit: Duration) -> warp::reply::Response {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        format!(
            "the request did not complete within {} ms and was abandoned; its outcome is \
             unknown: retry it (with the same idempotence key for an order)",
            limit.as_millis()
        ),
    )
    .retry_after(1)
    .into_response()
}

/// Cancels `token` on Ctrl-C (SIGINT) or SIGTERM. The handlers are installed before this
/// returns, so a signal sent right after (e.g. once a start-up banner is printed) is not missed.
pub fn shutdown_on_signal(token: CancellationToken) -> std::io::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    tokio::spawn(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
        tracing::info!("shutdown requested");
        token.cancel();
    });
    Ok(())
}

/// How log lines are written (`LOG_FORMAT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// One JSON object per line (for log collectors).
    Json,
    /// Human-readable lines.
    Text,
}

/// Logging settings every binary flattens into its own.
#[derive(Debug, Clone, clap::Args)]
pub struct LogSettings {
    /// `json` or `text`; each binary has its default (services: json, the all-in-one: text).
    #[arg(
        long = "log-format",
        global = true,
        env = "LOG_FORMAT",
        value_name = "LOG_FORMAT"
    )]
    pub log_format: Option<LogFormat>,
    /// Which requests get a log line, and how many a second at most.
    #[command(flatten)]
    pub requests: crate::request_log::RequestLogSettings,
}

impl LogSettings {
    /// Initialises logging in the chosen format, or `default`, and the request log's policy.
    pub fn init(&self, default: LogFormat) {
        self.requests.install();
        init_logging(self.log_format.unwrap_or(default));
    }
}

/// What every service binary reads the same way, flattened into its own settings: the HTTP
/// edge's timeouts and limits, and the log format.
#[derive(Debug, Clone, clap::Args)]
pub struct ServiceSettings {
    /// HTTP timeouts and connection limits.
    #[command(flatten)]
    pub http: HttpSettings,
    /// Log format.
    #[command(flatten)]
    pub log: LogSettings,
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), as JSON lines or
/// text. Safe to call more than once (tests): later calls do nothing.
pub fn init_logging(format: LogFormat) {
    crate::observe::metrics_handle(); // metrics from the very start, like the logs
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Colours only for a person at a terminal, never into a pipe or a file.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(crate::log_writer::stderr_lines);
    let _ = match format {
        // The current span's fields (a request's id) once, not again as a list of spans.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_span_list(false)
            .try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
