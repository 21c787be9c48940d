//! Opening the write side as the settings ask: the store (PostgreSQL when `DATABASE_URL` is
//! set, else memory), the writer over it, and the relay to RabbitMQ when `AMQP_URL` is set.
//! `api-write` and the all-in-one both start it here, so the two cannot drift.

use std::sync::Arc;

use event_bus::connection::AmqpAddress;
use event_bus::publisher::Publisher;
use event_bus::relay::Relay;
use event_bus::BusSettings;
use order_domain::BuyOrderServices;
use order_store::memory::MemEventStore;
use order_store::postgres::{PgEventStore, PgSettings};
use order_store::{CqrsOrderWriter, EventLog, OrderWriter, StoreError};
use service_kit::CancellationToken;
use tokio::task::JoinHandle;

use crate::config::WriteSettings;

/// The write side, running.
pub struct WriteSide {
    /// Places orders.
    pub writer: Arc<dyn OrderWriter>,
    /// The store's log, for a projector in the same process (the all-in-one).
    pub log: Arc<dyn EventLog>,
    /// The broker's address, when `AMQP_URL` is set.
    pub bus: Option<AmqpAddress>,
    /// The relay's task (one relay of all the processes is active at a time), when `AMQP_URL`
    /// is set; it ends at shutdown.
    pub relay: Option<JoinHandle<()>>,
}

/// Why the write side could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// RabbitMQ is configured wrongly.
    #[error("RabbitMQ (AMQP_URL): {0}")]
    Bus(#[from] event_bus::BusError),
    /// AMQP_URL without DATABASE_URL.
    #[error("AMQP_URL needs DATABASE_URL: the relay publishes the PostgreSQL event log")]
    BusWithoutDatabase,
    /// The write store (or the relay's) could not be opened.
    #[error("cannot open the write store (DATABASE_URL): {0}")]
    Store(#[from] StoreError),
}

impl StartError {
    /// The process's exit status: 2 for a wrong setting, 1 for a service it cannot reach (as
    /// `api_keys::IdentityStartError::exit_status`).
    pub fn exit_status(&self) -> u8 {
        match self {
            StartError::Bus(_) | StartError::BusWithoutDatabase => 2,
            StartError::Store(err) => err.exit_status(),
        }
    }
}

/// Opens the store the settings name, the writer over it and, with `AMQP_URL`, the relay,
/// which runs until `shutdown`.
pub async fn open(
    write: &WriteSettings,
    db: &PgSettings,
    bus: &BusSettings,
    services: BuyOrderServices,
    shutdown: &CancellationToken,
) -> Result<WriteSide, StartError> {
    let address = match bus.url() {
        None => None,
        Some(_) if db.database_url.is_none() => return Err(StartError::BusWithoutDatabase),
        Some(url) => Some(event_bus::connection::parse(url)?),
    };
    let cap = write.max_total_btc;
    if db.database_url.is_none() {
        let store = MemEventStore::new(cap.unwrap_or_default());
        return Ok(WriteSide {
            writer: Arc::new(CqrsOrderWriter::new(store.clone(), services)),
            log: Arc::new(store),
            bus: None,
            relay: None,
        });
    }
    let store = PgEventStore::open(db, cap).await?;
    let relay = match &address {
        None => None,
        Some(address) => {
            let publisher = Publisher::start(address.clone(), bus.topology());
            let relay = Relay::open(db, publisher).await?;
            tracing::info!(exchange = %bus.exchange, "relay to RabbitMQ enabled");
            Some(tokio::spawn(relay.run(shutdown.clone())))
        }
    };
    Ok(WriteSide {
        writer: Arc::new(
            CqrsOrderWriter::new(store.clone(), services).with_resolve_within(write.resolve_within),
        ),
        log: Arc::new(store),
        bus: address,
        relay,
    })
}
