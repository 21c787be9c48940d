//! `projector`: keeps the PostgreSQL read table current from the PostgreSQL event store
//! (`projector run`, the default), or rebuilds it from position 0 (`projector rebuild`). Run one
//! per read table: a second one is safe (the checkpoint row is locked per batch) but useless.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use clap::Parser;
use order_store::postgres::{PgEventStore, PgReadModel};
use projector::config::{ProjectorCommand, ProjectorConfig};
use projector::Projector;
use service_kit::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    service_kit::init_logging();
    let config = ProjectorConfig::parse();
    if config.db.database_url.is_none() {
        eprintln!(
            "projector: set DATABASE_URL (and READ_DATABASE_URL if the read table is elsewhere): \
             a separate projector reads the shared PostgreSQL event store (the all-in-one \
             `buy-orders` runs one in-process without it)"
        );
        return ExitCode::from(2);
    }
    let log = match PgEventStore::connect(&config.db).await {
        Ok(log) => log,
        Err(err) => {
            eprintln!("projector: cannot open the event store (DATABASE_URL): {err}");
            return ExitCode::FAILURE;
        }
    };
    let model = match PgReadModel::open(&config.db).await {
        Ok(model) => Arc::new(model),
        Err(err) => {
            eprintln!("projector: cannot open the read table (READ_DATABASE_URL): {err}");
            return ExitCode::FAILURE;
        }
    };
    let projector = Projector::new(
        Arc::new(log),
        model.clone(),
        config.projector.batch as usize,
    );
    match config.command.unwrap_or_default() {
        ProjectorCommand::Run => {
            let shutdown = CancellationToken::new();
            if let Err(err) = service_kit::shutdown_on_signal(shutdown.clone()) {
                eprintln!("projector: cannot install signal handlers: {err}");
                return ExitCode::FAILURE;
            }
            tracing::info!("projector running");
            projector.run(shutdown).await;
            ExitCode::SUCCESS
        }
        ProjectorCommand::Rebuild => {
            let started = Instant::now();
            let rebuilt = async {
                model.reset().await?;
                projector.catch_up().await
            };
            match rebuilt.await {
                Ok(position) => {
                    tracing::info!(%position, seconds = started.elapsed().as_secs_f64(), "read table rebuilt");
                    ExitCode::SUCCESS
                }
                Err(err) => {
                    eprintln!("projector: rebuild failed: {err}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
