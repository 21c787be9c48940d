//! `api-read`: the read API as its own process, serving the PostgreSQL read table
//! (`READ_DATABASE_URL`, else `DATABASE_URL`) that the projector keeps current. Any number can
//! run.

use std::process::ExitCode;
use std::sync::Arc;

use api_keys::http::identity_for;
use api_read::config::ReadConfig;
use api_read::ReadApi;
use clap::Parser;
use order_store::postgres::PgReadModel;
use service_kit::{AuthMode, CancellationToken};

#[tokio::main]
async fn main() -> ExitCode {
    let config = ReadConfig::parse();
    config.service.log.init(service_kit::LogFormat::Json);
    if config.db.read_url().is_none() {
        eprintln!(
            "api-read: set READ_DATABASE_URL or DATABASE_URL: a separate read process serves the \
             shared PostgreSQL read table (the all-in-one `buy-orders` runs without one)"
        );
        return ExitCode::from(2);
    }
    let model = match PgReadModel::open(&config.db).await {
        Ok(model) => model.with_checkpoint_poll(config.read.consistency_poll),
        Err(err) => {
            eprintln!("api-read: cannot open the read table (READ_DATABASE_URL): {err}");
            return ExitCode::from(err.exit_status());
        }
    };
    let listener = match tokio::net::TcpListener::bind(config.read.read_addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "api-read: cannot listen on READ_ADDR={}: {err}",
                config.read.read_addr
            );
            return ExitCode::FAILURE;
        }
    };
    let shutdown = CancellationToken::new();
    if let Err(err) = service_kit::shutdown_on_signal(shutdown.clone()) {
        eprintln!("api-read: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }
    let stop = shutdown.clone().cancelled_owned();
    let identity = match identity_for(&config.access, AuthMode::Required, &config.db, stop).await {
        Ok(identity) => identity,
        Err(err) => {
            eprintln!("api-read: {err}");
            return ExitCode::from(err.exit_status());
        }
    };
    tracing::info!(addr = %config.read.read_addr, "api-read listening");
    let model: Arc<dyn order_store::ReadModel> = Arc::new(model);
    let ops = api_read::ops(model.clone());
    let routes = ReadApi::new(model, identity, config.access.limits())
        .with_consistency_wait(config.read.consistency_wait)
        .routes();
    service_kit::serve_with(ops, routes, listener, shutdown, &config.service.http).await;
    ExitCode::SUCCESS
}
