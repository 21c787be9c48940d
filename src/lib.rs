//! # buy-orders (all-in-one)
//!
//! The whole system in one process: the write API, the read API and the projector, on the
//! in-memory store with the in-process log as the bus and (by default) simulated prices. No
//! database, broker or network needed: `cargo run --release` and go. With `DATABASE_URL` set,
//! the same three run on PostgreSQL instead (and `buy-orders migrate` applies the migrations);
//! adding `AMQP_URL`, events travel through RabbitMQ (a relay publishes, the projector consumes).
//!
//! [`start`] assembles and starts everything and hands back a [`System`] with the addresses it
//! listens on, so tests can run the real thing on ephemeral ports.

use std::net::SocketAddr;
use std::sync::Arc;

use api_read::config::ReadSettings;
use api_read::ReadApi;
use api_write::config::WriteSettings;
use api_write::WriteApi;
use event_bus::publisher::Publisher;
use event_bus::relay::Relay;
use order_domain::BuyOrderServices;
use order_store::memory::{MemEventStore, MemReadModel};
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::{CqrsOrderWriter, EventLog, OrderWriter, ReadModel, ReadModelWriter, StoreError};
use price_feed::{PriceFeedConfig, PriceSourceSpec};
use projector::config::ProjectorSettings;
use projector::Projector;
use service_kit::CancellationToken;
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// Everything `buy-orders` reads at start-up, from environment variables (or `--flags`).
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "buy-orders",
    version,
    about = "buy-orders all-in-one: write API, read API and projector in one process"
)]
pub struct Config {
    /// Write API address and BTC cap.
    #[command(flatten)]
    pub write: WriteSettings,
    /// Read API address.
    #[command(flatten)]
    pub read: ReadSettings,
    /// Projector batch size.
    #[command(flatten)]
    pub projector: ProjectorSettings,
    /// Prices (default here: simulated).
    #[command(flatten)]
    pub prices: PriceFeedConfig,
    /// PostgreSQL (in memory when DATABASE_URL is unset).
    #[command(flatten)]
    pub db: PgSettings,
    /// RabbitMQ (with DATABASE_URL: events go through the broker to the projector).
    #[command(flatten)]
    pub bus: event_bus::BusSettings,
    /// Log format (default here: text).
    #[command(flatten)]
    pub log: service_kit::LogSettings,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `buy-orders` does.
#[derive(Debug, Clone, Copy, clap::Subcommand)]
pub enum Command {
    /// Apply the PostgreSQL migrations (write store and read table), then exit.
    Migrate,
}

/// Why the system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The price source could not be set up.
    #[error("price source: {0}")]
    Prices(#[from] price_feed::FeedError),
    /// RabbitMQ is configured wrongly.
    #[error("RabbitMQ (AMQP_URL): {0}")]
    Bus(#[from] event_bus::BusError),
    /// AMQP_URL without DATABASE_URL.
    #[error("AMQP_URL needs DATABASE_URL: the relay publishes the PostgreSQL event log")]
    BusWithoutDatabase,
    /// A PostgreSQL store could not be opened.
    #[error("PostgreSQL (DATABASE_URL / READ_DATABASE_URL): {0}")]
    Store(#[from] StoreError),
    /// A listening address could not be bound.
    #[error("cannot listen on {variable}={addr}: {source}")]
    Bind {
        /// The variable that named the address.
        variable: &'static str,
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// The running system.
pub struct System {
    /// Where the write API listens.
    pub write_addr: SocketAddr,
    /// Where the read API listens.
    pub read_addr: SocketAddr,
    shutdown: CancellationToken,
    tasks: JoinSet<()>,
}

impl System {
    /// A token that stops the system when cancelled.
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shutdown.clone()
    }

    /// Asks every part to stop (servers finish requests in flight).
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every part has stopped.
    pub async fn wait(mut self) {
        while self.tasks.join_next().await.is_some() {}
    }
}

/// Binds `addr` (named by `variable` in errors); returns the listener and the address it got
/// (the real port when asked for port 0).
async fn bind(
    variable: &'static str,
    addr: SocketAddr,
) -> Result<(TcpListener, SocketAddr), StartError> {
    let error = |source| StartError::Bind {
        variable,
        addr,
        source,
    };
    let listener = TcpListener::bind(addr).await.map_err(error)?;
    let bound = listener.local_addr().map_err(error)?;
    Ok((listener, bound))
}

/// Applies the PostgreSQL migrations of the write store and the read table.
pub async fn migrate(db: &PgSettings) -> Result<(), StoreError> {
    PgEventStore::connect(db).await?;
    PgReadModel::open(db).await?;
    Ok(())
}

/// Starts the write API, the read API and the projector.
pub async fn start(config: &Config) -> Result<System, StartError> {
    let prices = config
        .prices
        .build(&config.prices.spec(PriceSourceSpec::Simulated))?;
    let (write_listener, write_addr) = bind("WRITE_ADDR", config.write.write_addr).await?;
    let (read_listener, read_addr) = bind("READ_ADDR", config.read.read_addr).await?;

    let services = BuyOrderServices::new(prices);
    let cap = config.write.max_total_btc;
    let bus = match &config.bus.amqp_url {
        None => None,
        Some(_) if config.db.database_url.is_none() => return Err(StartError::BusWithoutDatabase),
        Some(url) => Some(event_bus::connection::parse(url)?),
    };
    let bus_address = bus.clone();
    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let mut batches = None;
    type Parts = (
        Arc<dyn OrderWriter>,
        Arc<dyn EventLog>,
        Arc<dyn ReadModel>,
        Arc<dyn ReadModelWriter>,
    );
    let (writer, log, model, table): Parts = if config.db.database_url.is_some() {
        let store = PgEventStore::open(&config.db, cap).await?;
        let model = Arc::new(PgReadModel::open(&config.db).await?);
        tracing::info!("on PostgreSQL");
        if let Some(address) = bus {
            let topology = config.bus.topology();
            let publisher = Publisher::start(address.clone(), topology.clone());
            tasks.spawn(
                Relay::open(&config.db, publisher)
                    .await?
                    .run(shutdown.clone()),
            );
            batches = Some(event_bus::consumer::start(
                address,
                topology,
                config.bus.prefetch,
            ));
            tracing::info!(exchange = %config.bus.exchange, queue = %config.bus.queue, "through RabbitMQ");
        }
        (
            Arc::new(CqrsOrderWriter::new(store.clone(), services)),
            Arc::new(store),
            model.clone(),
            model,
        )
    } else {
        let store = MemEventStore::new(cap);
        let model = Arc::new(MemReadModel::new());
        (
            Arc::new(CqrsOrderWriter::new(store.clone(), services)),
            Arc::new(store),
            model.clone(),
            model,
        )
    };
    let projector = Projector::new(log, table, config.projector.batch as usize);

    tasks.spawn(api_write::watch_ledger(writer.clone(), shutdown.clone()));
    let write_ops = api_write::ops(writer.clone(), bus_address.clone());
    let read_ops = api_read::ops(model.clone());
    let write_routes = WriteApi::new(writer).routes();
    let read_routes = ReadApi::new(model).routes();
    tasks.spawn(service_kit::serve(
        write_ops,
        write_routes,
        write_listener,
        shutdown.clone(),
    ));
    tasks.spawn(service_kit::serve(
        read_ops,
        read_routes,
        read_listener,
        shutdown.clone(),
    ));
    let token = shutdown.clone();
    match batches {
        Some(batches) => tasks.spawn(async move { projector.consume(batches, token).await }),
        None => tasks.spawn(async move { projector.run(token).await }),
    };
    tracing::info!(%write_addr, %read_addr, %cap, "buy-orders started");
    Ok(System {
        write_addr,
        read_addr,
        shutdown,
        tasks,
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::Config as clap::CommandFactory>::command().debug_assert();
    }
}
