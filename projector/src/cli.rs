//! The `projector` command line, as a library function: the `projector` binary calls it with
//! the project's own projection, an application's binary with its own added
//! ([`Projections::with`]), and gets the same `run`, `rebuild [NAME]` and `list`.

use std::future::Future;
use std::io::IsTerminal;
use std::pin::Pin;
use std::process::ExitCode;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Parser;
use order_store::postgres::{
    ManagedProjection, PgEventStore, PgProjection, PgReadModel, PgSettings, Projection,
};
use order_store::{Position, StoreError};
use service_kit::CancellationToken;

use crate::config::{ProjectorCommand, ProjectorConfig};
use crate::Projector;

type Opened = Result<Arc<dyn ManagedProjection>, StoreError>;
type Opener = Box<dyn Fn(PgSettings) -> Pin<Box<dyn Future<Output = Opened> + Send>> + Send + Sync>;

/// The projections a projector process keeps, besides `buy_order_view` (always there).
#[derive(Default)]
pub struct Projections {
    extra: Vec<Opener>,
}

impl Projections {
    /// `buy_order_view` alone.
    pub fn new() -> Self {
        Self::default()
    }

    /// These and `projection` (opened on the read database at start-up, its tables created if
    /// missing), kept current from the log by `run`, rebuilt by `rebuild NAME`.
    pub fn with<P: Projection + Clone>(mut self, projection: P) -> Self {
        self.extra.push(Box::new(move |settings: PgSettings| {
            let projection = projection.clone();
            Box::pin(async move {
                let opened = PgProjection::open(&settings, projection).await?;
                Ok(Arc::new(opened) as Arc<dyn ManagedProjection>)
            })
        }));
        self
    }
}

/// The `projector` command line: parses the environment and arguments, and runs the command.
pub async fn main(projections: Projections) -> ExitCode {
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
            return ExitCode::from(err.exit_status());
        }
    };
    let model = match PgReadModel::open(&config.db).await {
        Ok(model) => Arc::new(model),
        Err(err) => {
            eprintln!("projector: cannot open the read table (READ_DATABASE_URL): {err}");
            return ExitCode::from(err.exit_status());
        }
    };
    let mut all: Vec<Arc<dyn ManagedProjection>> = vec![Arc::new(model.projection().clone())];
    for open in &projections.extra {
        match open(config.db.clone()).await {
            Ok(projection) => all.push(projection),
            Err(err) => {
                eprintln!("projector: cannot open a projection (READ_DATABASE_URL): {err}");
                return ExitCode::from(err.exit_status());
            }
        }
    }
    let batch = config.projector.batch as usize;
    match config.command.clone().unwrap_or_default() {
        ProjectorCommand::Run => run(&config, log, model, &all[1..]).await,
        ProjectorCommand::Rebuild { name } => {
            let Some(projection) = all.iter().find(|p| p.name() == name) else {
                let known: Vec<&str> = all.iter().map(|p| p.name()).collect();
                eprintln!(
                    "projector: no projection named {name:?} (registered: {})",
                    known.join(", ")
                );
                return ExitCode::from(2);
            };
            rebuild(projection.as_ref(), &log, batch).await
        }
        ProjectorCommand::List => {
            println!(
                "{:<20} {:>12} {:>10} {:>8}",
                "projection", "checkpoint", "lag", "parked"
            );
            for projection in &all {
                match projection.status(&log).await {
                    Ok(status) => println!(
                        "{:<20} {:>12} {:>10} {:>8}",
                        status.name, status.checkpoint, status.lag, status.parked
                    ),
                    Err(err) => {
                        eprintln!("projector: {}: {err}", projection.name());
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
    }
}

/// `projector run`: `buy_order_view` from RabbitMQ (or the log), every other projection from
/// the log, until SIGTERM or Ctrl-C.
async fn run(
    config: &ProjectorConfig,
    log: PgEventStore,
    model: Arc<PgReadModel>,
    others: &[Arc<dyn ManagedProjection>],
) -> ExitCode {
    let batch = config.projector.batch as usize;
    // Rows projected before the read table knew clients get theirs from the log (only admins
    // see them until then). A failure here is not fatal: the next start tries again.
    match model.backfill_clients(&log, batch).await {
        Ok(0) => {}
        Ok(filled) => tracing::info!(filled, "read rows given their client"),
        Err(err) => {
            tracing::error!(%err, "backfill of read rows' clients failed; retried next start")
        }
    }
    let shutdown = CancellationToken::new();
    if let Err(err) = service_kit::shutdown_on_signal(shutdown.clone()) {
        eprintln!("projector: cannot install signal handlers: {err}");
        return ExitCode::FAILURE;
    }
    let broker = match config.bus.url().map(event_bus::connection::parse) {
        Some(Ok(address)) => Some(address),
        Some(Err(err)) => {
            eprintln!("projector: {err}");
            return ExitCode::from(2);
        }
        None => None,
    };
    let listener = match tokio::net::TcpListener::bind(config.addr).await {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!(
                "projector: cannot listen on PROJECTOR_ADDR={}: {err}",
                config.addr
            );
            return ExitCode::FAILURE;
        }
    };
    let ops = crate::ops(Arc::new(log.clone()), model.clone(), broker.clone());
    let (http, serving) = (config.service.http.clone(), shutdown.clone());
    tokio::spawn(async move {
        service_kit::serve_with(ops, service_kit::health_route(), listener, serving, &http).await
    });
    let mut others_running = Vec::new();
    for projection in others {
        let writer: Arc<dyn order_store::ReadModelWriter> = projection.clone();
        let tailing = Projector::new(Arc::new(log.clone()), writer, batch)
            .with_linger(config.projector.linger)
            .without_gauges();
        let (name, stop) = (projection.name().to_owned(), shutdown.clone());
        tracing::info!(projection = %name, "projection tailing the event store");
        others_running.push(tokio::spawn(async move { tailing.run(stop).await }));
    }
    let projector = Projector::new(Arc::new(log.clone()), model.clone(), batch)
        .with_linger(config.projector.linger);
    match broker {
        Some(address) => {
            let batches =
                event_bus::consumer::start(address, config.bus.topology(), config.bus.prefetch);
            tracing::info!(queue = %config.bus.queue, "projector consuming from RabbitMQ");
            projector.consume(batches, shutdown).await;
        }
        None => {
            tracing::info!("projector tailing the event store (AMQP_URL unset)");
            projector.run(shutdown).await;
        }
    }
    for running in others_running {
        let _ = running.await;
    }
    ExitCode::SUCCESS
}

/// `projector rebuild NAME`, with progress.
async fn rebuild(projection: &dyn ManagedProjection, log: &PgEventStore, batch: usize) -> ExitCode {
    let started = Instant::now();
    let progress = Progress::new();
    let rebuilt = projection
        .rebuild(log, batch, &|done, head| progress.show(done, head))
        .await;
    progress.finish();
    match rebuilt {
        Ok(position) => {
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(projection = projection.name(), %position, seconds,
                events_per_second = position.0 as f64 / seconds.max(1e-9),
                "projection rebuilt and swapped in");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("projector: rebuild of {} failed: {err}", projection.name());
            ExitCode::from(err.exit_status())
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
            let shared = bar.clone();
            // Log lines (JSON or text) go above the bar, never glued onto it.
            service_kit::share_stderr_with(std::sync::Arc::new(
                move |write: &mut dyn FnMut()| shared.suspend(write),
            ));
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
            service_kit::release_stderr();
        }
    }
}
