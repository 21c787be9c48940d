//! `projector`: keeps the PostgreSQL read table current (`projector run`, the default): from the
//! RabbitMQ queue when `AMQP_URL` is set (catching up from the event store on start and on any
//! gap), else by tailing the event store. `projector rebuild` rebuilds the table from position 0
//! into a fresh table and swaps it in while readers keep being served. Run one per read table:
//! a second one is safe (the checkpoint row is locked per batch) but useless.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use clap::Parser;
use order_store::postgres::{PgEventStore, PgReadModel};
use order_store::Position;
use projector::config::{ProjectorCommand, ProjectorConfig};
use projector::Projector;
use service_kit::CancellationToken;

#[tokio::main]
async fn main() -> ExitCode {
    let config = ProjectorConfig::parse();
    config.service.log.init(service_kit::LogFormat::Json);
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
    // Rows projected before the read table knew clients get theirs from the log (only admins
    // see them until then). A failure here is not fatal: the next start tries again.
    match model
        .backfill_clients(&log, config.projector.batch as usize)
        .await
    {
        Ok(0) => {}
        Ok(filled) => tracing::info!(filled, "read rows given their client"),
        Err(err) => {
            tracing::error!(%err, "backfill of read rows' clients failed; retried next start")
        }
    }
    let projector = Projector::new(
        Arc::new(log.clone()),
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
            let broker = match config
                .bus
                .amqp_url
                .as_deref()
                .map(event_bus::connection::parse)
            {
                Some(Ok(address)) => Some(address),
                Some(Err(err)) => {
                    eprintln!("projector: {err}");
                    return ExitCode::from(2);
                }
                None => None,
            };
            let listener = match tokio::net::TcpListener::bind(config.projector.addr).await {
                Ok(listener) => listener,
                Err(err) => {
                    eprintln!(
                        "projector: cannot listen on PROJECTOR_ADDR={}: {err}",
                        config.projector.addr
                    );
                    return ExitCode::FAILURE;
                }
            };
            let ops = projector::ops(Arc::new(log.clone()), model.clone(), broker.clone());
            let (http, serving) = (config.service.http.clone(), shutdown.clone());
            tokio::spawn(async move {
                service_kit::serve_with(ops, service_kit::health_route(), listener, serving, &http)
                    .await
            });
            match broker {
                Some(address) => {
                    let batches = event_bus::consumer::start(
                        address,
                        config.bus.topology(),
                        config.bus.prefetch,
                    );
                    tracing::info!(queue = %config.bus.queue, "projector consuming from RabbitMQ");
                    projector.consume(batches, shutdown).await;
                }
                None => {
                    tracing::info!("projector tailing the event store (AMQP_URL unset)");
                    projector.run(shutdown).await;
                }
            }
            ExitCode::SUCCESS
        }
        ProjectorCommand::Rebuild => {
            let started = Instant::now();
            let progress = Progress::new();
            let rebuilt = model
                .rebuild(&log, config.projector.batch as usize, &|done, head| {
                    progress.show(done, head)
                })
                .await;
            progress.finish();
            match rebuilt {
                Ok(position) => {
                    let seconds = started.elapsed().as_secs_f64();
                    tracing::info!(%position, seconds, events_per_second = position.0 as f64 / seconds.max(1e-9), "read table rebuilt and swapped in");
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

/// Rebuild progress: a bar with events/s and ETA on a terminal, a log line every few seconds
/// otherwise.
struct Progress {
    bar: Option<indicatif::ProgressBar>,
    last_line: Mutex<Instant>,
}

impl Progress {
    const LOG_EVERY: Duration = Duration::from_secs(5);

    fn new() -> Self {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{bar:40} {pos}/{len} events  {per_sec}  ETA {eta}",
                )
                .expect("a valid template"),
            );
            bar
        });
        Progress {
            bar,
            last_line: Mutex::new(Instant::now()),
        }
    }

    fn show(&self, done: Position, head: Position) {
        match &self.bar {
            Some(bar) => {
                bar.set_length(head.0);
                bar.set_position(done.0);
            }
            None => {
                let mut last = self.last_line.lock().unwrap_or_else(|e| e.into_inner());
                if last.elapsed() >= Self::LOG_EVERY {
                    *last = Instant::now();
                    tracing::info!(done = done.0, of = head.0, "rebuilding");
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish();
        }
    }
}
