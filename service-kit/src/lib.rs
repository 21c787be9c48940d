//! # service-kit
//!
//! The HTTP plumbing every buy-orders service shares, so that each service's own crate holds
//! only its routes and its mapping of domain errors to HTTP:
//!
//! - [`ApiError`]: the one JSON error body, `{"error":{"code":…,"message":…}}`, and
//!   [`recover`], which turns every rejection (ours and warp's own) into it. Nothing reaches a
//!   client as a bare status, a panic or a trace.
//! - [`serve`]: runs routes on a bound listener until a [`CancellationToken`] fires, draining
//!   requests in flight; [`shutdown_on_signal`] fires it on Ctrl-C or SIGTERM.
//! - [`body`]: reading a JSON request body with a size limit and a content-type check.
//! - [`Ops`]: per request a request id, a log line and metrics; `GET /metrics` (Prometheus)
//!   and `GET /readyz` on every service.
//! - [`init_logging`]: `tracing` output, JSON lines or text (`LOG_FORMAT`).

pub mod access;
pub mod body;
pub mod docs;
mod error;
mod log_writer;
pub mod metrics_doc;
mod observe;
pub mod request_log;
mod serve;

pub use access::{AccessSettings, AuthMode, RateLimits};
pub use error::{recover, ApiError};
pub use log_writer::{release_stderr, share_stderr_with, Suspend};
pub use observe::{
    metrics_handle, seconds_since, NotReady, Ops, ReadyCheck, OPS_ROUTES, READY_WITHIN, REQUEST_ID,
};
pub use serve::{
    health_route, init_logging, serve, serve_with, shutdown_on_signal, HttpSettings, LogFormat,
    LogSettings, ServiceSettings,
};
pub use tokio_util::sync::CancellationToken;
