//! Serving routes, shutting down cleanly, and logging.

use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use warp::{Filter, Reply};

use crate::error::recover;

/// `GET /healthcheck` → 200 `{"status":"ok"}`: the process is alive and serving.
pub fn health_route() -> impl Filter<Extract = (impl Reply,), Error = warp::Rejection> + Clone {
    warp::path!("healthcheck")
        .and(warp::get())
        .map(|| warp::reply::json(&json!({ "status": "ok" })))
}

/// Serves `routes` on `listener` until `shutdown` is cancelled, then stops accepting and lets
/// requests in flight finish. Every rejection becomes a JSON error ([`recover`]), and every
/// request is logged with its method, path, status and latency.
pub async fn serve<F>(routes: F, listener: TcpListener, shutdown: CancellationToken)
where
    F: Filter<Error = warp::Rejection> + Clone + Send + Sync + 'static,
    F::Extract: Reply,
{
    let routes = routes.recover(recover).with(warp::log::custom(|info| {
        tracing::info!(
            target: "http",
            method = %info.method(),
            path = info.path(),
            status = info.status().as_u16(),
            latency_us = info.elapsed().as_micros() as u64,
            "request"
        );
    }));
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

/// Logs to stderr through `tracing`, filtered by `RUST_LOG` (default `info`). Safe to call
/// more than once (tests): later calls do nothing.
pub fn init_logging() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}
