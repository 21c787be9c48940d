//! Serving routes, shutting down cleanly, and logging.

use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::{Filter, Reply};

use crate::error::recover;
use crate::observe::{instrument, ops_routes, Ops};

/// `GET /healthcheck` → 200 `{"status":"ok"}`: the process is alive and serving.
pub fn health_route() -> impl Filter<Extract = (impl Reply,), Error = warp::Rejection> + Clone {
    warp::path!("healthcheck")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({ "status": "ok" })))
}

/// Serves `routes`, plus `GET /metrics` and `GET /readyz` ([`Ops`]), on `listener` until
/// `shutdown` is cancelled, then stops accepting and lets requests in flight finish. Every
/// rejection becomes a JSON error ([`recover`]); every request gets a request id (echoed in
/// `X-Request-Id`), one log line with its method, path, status and latency, and metrics.
pub async fn serve<F, R>(ops: Ops, routes: F, listener: TcpListener, shutdown: CancellationToken)
where
    F: Filter<Extract = (R,), Error = warp::Rejection> + Clone + Send + Sync + 'static,
    R: Reply + 'static,
{
    let routes = routes
        .map(|reply: R| reply.into_response())
        .or(ops_routes(&ops))
        .unify()
        .recover(recover)
        .unify();
    let routes = instrument(ops.name, ops.routes, routes);
    warp::serve(routes)
        .incoming(listener)
        .graceful(async move { shutdown.cancelled().await })
        .run()
        .await;
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
    #[arg(long = "log-format", env = "LOG_FORMAT", value_name = "LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
}

impl LogSettings {
    /// Initialises logging in the chosen format, or `default`.
    pub fn init(&self, default: LogFormat) {
        init_logging(self.log_format.unwrap_or(default));
    }
}

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`), as JSON lines or
/// text. Safe to call more than once (tests): later calls do nothing.
pub fn init_logging(format: LogFormat) {
    crate::observe::metrics_handle(); // metrics from the very start, like the logs
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
}
