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

use api_keys::PgClientRegistry;
use api_read::config::ReadSettings;
use api_read::ReadApi;
use api_write::config::WriteSettings;
use api_write::WriteApi;
use order_domain::BuyOrderServices;
use order_store::memory::MemReadModel;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::{ReadModel, ReadModelWriter, StoreError};
use price_feed::{PriceFeedConfig, PriceSourceSpec};
use projector::config::ProjectorSettings;
use projector::Projector;
use service_kit::{AuthMode, CancellationToken};
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
    /// API keys and rate limits (default AUTH: off in memory, required on PostgreSQL).
    #[command(flatten)]
    pub access: service_kit::AccessSettings,
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
    /// HTTP timeouts and limits, and the log format (services: json; the all-in-one: text).
    #[command(flatten)]
    pub service: service_kit::ServiceSettings,
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// What `buy-orders` does.
#[derive(Debug, Clone, clap::Subcommand)]
pub enum Command {
    /// Apply the PostgreSQL migrations (write store and read table), then exit.
    Migrate,
    /// API clients on DATABASE_URL: add, list, revoke.
    #[command(subcommand)]
    Clients(ClientsCommand),
    /// The BTC cap on DATABASE_URL: show it and its history, or set it.
    #[command(subcommand)]
    Cap(CapCommand),
    /// Prove the books on DATABASE_URL and READ_DATABASE_URL, without locking writers: the
    /// ledger equals the stored orders, positions are 1..N, every order keeps the rules, the
    /// read table equals the log up to its checkpoint, the relay is not ahead. One line per
    /// check, the orders behind each failure; exits 1 on any discrepancy.
    Audit,
}

/// `buy-orders clients …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClientsCommand {
    /// Create a client and print its API key: standard output carries only the key
    /// (`KEY=$(buy-orders clients add shop-1)`); it cannot be shown again.
    Add {
        /// 1 to 64 characters of A-Z a-z 0-9 . _ - ; never reused, even once revoked.
        name: order_domain::ClientId,
        /// An admin sees every client's orders.
        #[arg(long)]
        admin: bool,
    },
    /// Every client: name, role, created, revoked (never keys).
    List,
    /// Revoke a client and all its keys (or, with `--key`, that one key alone): refused on
    /// every instance within a second.
    Revoke {
        /// The client.
        name: order_domain::ClientId,
        /// Revoke only this key (its id, as `clients keys` lists it); the others keep working.
        #[arg(long, value_name = "KEY_ID")]
        key: Option<String>,
    },
    /// Give a client a new key, printed alone on standard output (`KEY=$(buy-orders clients
    /// rotate shop-1)`); its other keys stop working at once, or after `--grace`. Its orders
    /// stay its own: isolation is by client, not by key.
    Rotate {
        /// The client.
        name: order_domain::ClientId,
        /// How long the old keys keep working (`90s`, `15m`, `24h`, `7d`; at most 366 days).
        /// Default: none, they are revoked at once.
        #[arg(long, value_name = "DURATION", value_parser = parse_grace)]
        grace: Option<std::time::Duration>,
    },
    /// A client's keys: id, created, expires, revoked, last used (never the secrets).
    Keys {
        /// The client.
        name: order_domain::ClientId,
    },
}

/// `--grace`: a human duration (`humantime`), at most [`api_keys::postgres::MAX_GRACE`].
fn parse_grace(text: &str) -> Result<std::time::Duration, String> {
    let grace = humantime::parse_duration(text).map_err(|e| e.to_string())?;
    if grace > api_keys::postgres::MAX_GRACE {
        return Err(format!(
            "at most {}",
            humantime::format_duration(api_keys::postgres::MAX_GRACE)
        ));
    }
    Ok(grace)
}

/// `buy-orders cap …`
#[derive(Debug, Clone, clap::Subcommand)]
pub enum CapCommand {
    /// The cap, what is sold, and every change of the cap.
    Show,
    /// Set the cap in BTC (refused below what is already sold); recorded with its time and the
    /// previous value.
    Set {
        /// BTC, at most 8 decimals.
        btc: order_domain::BtcCap,
    },
}

/// Why the system could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The price source could not be set up.
    #[error("price source: {0}")]
    Prices(#[from] price_feed::FeedError),
    /// The write side (store, relay) could not start.
    #[error(transparent)]
    Write(#[from] api_write::start::StartError),
    /// The read table could not be opened.
    #[error("PostgreSQL (READ_DATABASE_URL, else DATABASE_URL): {0}")]
    Store(#[from] StoreError),
    /// Who calls could not be learnt (`AUTH`).
    #[error(transparent)]
    Identity(#[from] api_keys::IdentityStartError),
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

impl StartError {
    /// The process's exit status: 2 when a setting is wrong (restarting will not help), 1
    /// otherwise.
    pub fn exit_status(&self) -> u8 {
        match self {
            StartError::Prices(_) | StartError::Bind { .. } => 1,
            StartError::Write(err) => err.exit_status(),
            StartError::Store(err) => err.exit_status(),
            StartError::Identity(err) => err.exit_status(),
        }
    }
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

/// Applies the PostgreSQL migrations of the write store and the read table, and gives rows
/// projected before the read table knew clients their client.
pub async fn migrate(db: &PgSettings) -> Result<(), StoreError> {
    let store = PgEventStore::connect(db).await?;
    let model = PgReadModel::open(db).await?;
    model.backfill_clients(&store, BACKFILL_BATCH).await?;
    Ok(())
}

/// Events per statement when backfilling the read table's clients.
const BACKFILL_BATCH: usize = 5_000;

/// Why an operator command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A client command was refused or failed.
    #[error(transparent)]
    Clients(#[from] api_keys::ClientError),
    /// The cap was refused or could not be set.
    #[error(transparent)]
    Cap(#[from] order_store::postgres::CapError),
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

impl AdminError {
    /// The command's exit status: 2 when a setting is wrong (running it again will not help),
    /// as the services exit; 1 otherwise.
    pub fn exit_status(&self) -> u8 {
        match self {
            AdminError::Clients(api_keys::ClientError::Store(err))
            | AdminError::Cap(order_store::postgres::CapError::Store(err))
            | AdminError::Store(err) => err.exit_status(),
            AdminError::Clients(_) | AdminError::Cap(_) => 1,
        }
    }
}

/// Runs `buy-orders clients …` on `DATABASE_URL`. What it returns goes to standard output (for
/// `add`, the key alone); what it says about itself it logs to standard error.
pub async fn clients(db: &PgSettings, command: &ClientsCommand) -> Result<String, AdminError> {
    use api_keys::ClientRegistry;
    let registry = PgClientRegistry::open(db).await?;
    match command {
        ClientsCommand::Add { name, admin } => {
            let key = registry.add(name, *admin).await?;
            let role = if *admin { "admin" } else { "client" };
            eprintln!("created {role} {name}; its key follows on standard output (shown once)");
            Ok(format!("{}\n", key.reveal()))
        }
        ClientsCommand::List => {
            let mut out = String::from("name\trole\tcreated_at\trevoked_at\n");
            for client in registry.list().await? {
                let role = if client.admin { "admin" } else { "client" };
                let revoked = client
                    .revoked_at
                    .map_or("-".to_owned(), |at| at.to_rfc3339());
                out.push_str(&format!(
                    "{}\t{role}\t{}\t{revoked}\n",
                    client.name,
                    client.created_at.to_rfc3339()
                ));
            }
            Ok(out)
        }
        ClientsCommand::Revoke { name, key: None } => {
            let now = registry.revoke(name).await?;
            eprintln!(
                "{name} {}; every instance refuses its keys within a second",
                if now {
                    "revoked"
                } else {
                    "was revoked already"
                },
            );
            Ok(String::new())
        }
        ClientsCommand::Revoke {
            name,
            key: Some(key_id),
        } => {
            let now = registry.revoke_key(name, key_id).await?;
            eprintln!(
                "key {key_id} of {name} {}; its other keys are unchanged",
                if now {
                    "revoked"
                } else {
                    "was revoked already"
                },
            );
            Ok(String::new())
        }
        ClientsCommand::Rotate { name, grace } => {
            let grace = grace.unwrap_or_default();
            let key = registry.rotate(name, grace).await?;
            if grace.is_zero() {
                eprintln!("new key for {name} follows on standard output (shown once); its other keys are revoked");
            } else {
                eprintln!(
                    "new key for {name} follows on standard output (shown once); its other keys stop working in {}",
                    humantime::format_duration(grace)
                );
            }
            Ok(format!("{}\n", key.reveal()))
        }
        ClientsCommand::Keys { name } => {
            let mut out =
                String::from("key_id\tcreated_at\texpires_at\trevoked_at\tlast_used_at\n");
            let at = |time: Option<order_domain::chrono::DateTime<order_domain::chrono::Utc>>| {
                time.map_or("-".to_owned(), |at| at.to_rfc3339())
            };
            for key in registry.keys(name).await? {
                out.push_str(&format!(
                    "{}\t{}\t{}\t{}\t{}\n",
                    key.key_id,
                    key.created_at.to_rfc3339(),
                    at(key.expires_at),
                    at(key.revoked_at),
                    at(key.last_used_at)
                ));
            }
            Ok(out)
        }
    }
}

/// Runs `buy-orders cap …` on `DATABASE_URL`; returns the report for standard output.
pub async fn cap(db: &PgSettings, command: &CapCommand) -> Result<String, AdminError> {
    // `connect`, not `open`: an operator command must not seed or compare the cap.
    let store = PgEventStore::connect(db).await?;
    if let CapCommand::Set { btc } = command {
        let change = store.set_cap(*btc, "set by `buy-orders cap set`").await?;
        let previous = change.previous.map_or("none".to_owned(), |p| p.to_string());
        eprintln!("cap set to {} BTC (was {previous})", change.cap);
    }
    let ledger = store.ledger().await?;
    let (sold, cap) = (ledger.sold(), ledger.cap());
    let mut out = format!(
        "cap {cap} BTC, sold {sold} BTC, remaining {} BTC\nchanges:\n",
        ledger.remaining()
    );
    for change in store.cap_history().await? {
        let previous = change.previous.map_or("-".to_owned(), |p| p.to_string());
        out.push_str(&format!(
            "  {}  {previous} -> {}  ({})\n",
            change.changed_at.to_rfc3339(),
            change.cap,
            change.reason
        ));
    }
    Ok(out)
}

/// Starts the write API, the read API and the projector.
pub async fn start(config: &Config) -> Result<System, StartError> {
    // The recorder before anything records: the relay, started with the write side, sets
    // `relay_active` once when it takes the lease, and a value set before the recorder exists
    // is lost (an embedding application or a test may call this without `init_logging`).
    service_kit::metrics_handle();
    let prices = config
        .prices
        .build(&config.prices.spec(PriceSourceSpec::Simulated))?;
    let (write_listener, write_addr) = bind("WRITE_ADDR", config.write.write_addr).await?;
    let (read_listener, read_addr) = bind("READ_ADDR", config.read.read_addr).await?;

    let shutdown = CancellationToken::new();
    let mut tasks = JoinSet::new();
    let on_postgres = config.db.database_url.is_some();
    let default_auth = if on_postgres {
        AuthMode::Required
    } else {
        AuthMode::Off
    };
    let stop = shutdown.clone().cancelled_owned();
    let identity =
        api_keys::http::identity_for(&config.access, default_auth, &config.db, stop).await?;
    let services = BuyOrderServices::new(prices);
    let side =
        api_write::start::open(&config.write, &config.db, &config.bus, services, &shutdown).await?;
    let writer = side.writer;
    if let Some(relay) = side.relay {
        tasks.spawn(async move {
            let _ = relay.await;
        });
    }
    let (model, table): (Arc<dyn ReadModel>, Arc<dyn ReadModelWriter>) = if on_postgres {
        let model = Arc::new(
            PgReadModel::open(&config.db)
                .await?
                .with_checkpoint_poll(config.read.consistency_poll),
        );
        tracing::info!("on PostgreSQL");
        (model.clone(), model)
    } else {
        let model = Arc::new(MemReadModel::new());
        (model.clone(), model)
    };
    let batches = side.bus.map(|address| {
        tracing::info!(exchange = %config.bus.exchange, queue = %config.bus.queue, "through RabbitMQ");
        event_bus::consumer::start(address, config.bus.topology(), config.bus.prefetch)
    });
    let log = side.log;
    service_kit::metrics_doc::describe(projector::METRICS);
    let projector = Projector::new(log, table, config.projector.batch as usize)
        .with_linger(config.projector.linger);

    tasks.spawn(api_write::watch_ledger(writer.clone(), shutdown.clone()));
    let write_ops = api_write::ops(writer.clone());
    let read_ops = api_read::ops(model.clone());
    let write_routes = WriteApi::new(writer, identity.clone(), config.access.limits()).routes();
    let read_routes = ReadApi::new(model, identity, config.access.limits())
        .with_consistency_wait(config.read.consistency_wait)
        .routes();
    let (token, http) = (shutdown.clone(), config.service.http.clone());
    tasks.spawn(async move {
        service_kit::serve_with(write_ops, write_routes, write_listener, token, &http).await
    });
    let (token, http) = (shutdown.clone(), config.service.http.clone());
    tasks.spawn(async move {
        service_kit::serve_with(read_ops, read_routes, read_listener, token, &http).await
    });
    let token = shutdown.clone();
    match batches {
        Some(batches) => tasks.spawn(async move { projector.consume(batches, token).await }),
        None => tasks.spawn(async move { projector.run(token).await }),
    };
    tracing::info!(%write_addr, %read_addr, "buy-orders started");
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
