//! # order-store
//!
//! Where buy orders live: the interfaces the services use to store orders and read them back,
//! and their implementations. Services depend on the traits, never on a backend, so the in-memory
//! backend (the all-in-one and tests) and the PostgreSQL one (shared by many processes) are
//! interchangeable.
//!
//! - Write side: [`OrderWriter`] places an order through cqrs-es on any
//!   `EventStore<BuyOrder>` ([`CqrsOrderWriter`]), turning concurrency conflicts on the derived
//!   order id into idempotent replays; its first attempt at an order reads nothing
//!   ([`NewAggregate`]). The event store applies the BTC cap
//!   ([`order_domain::BtcLedger`]) atomically with the commit.
//! - The log: every committed event gets a global, gap-free, commit-ordered [`Position`];
//!   [`EventLog`] lets a reader (the projector) tail it from a checkpoint.
//! - Read side: [`ReadModelWriter`] folds logged events into the read table, idempotently;
//!   [`ReadModel`] answers pages (keyset on the position, newest first) and single orders.
//! - [`memory`]: the in-memory backend; [`postgres`]: the PostgreSQL one.
//!
//! # Examples
//!
//! Place orders in memory, idempotently, with a price source of your own, then tail the log:
//!
//! ```
//! use std::sync::Arc;
//!
//! use order_domain::*;
//! use order_store::memory::MemEventStore;
//! use order_store::{CqrsOrderWriter, EventLog, OrderWriter, Position};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemEventStore::new(BtcCap::DEFAULT);
//! let prices = FixedSource::uniform(BtcRate::parse("50000")?); // one rate for every currency
//! let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(prices)));
//! let order = PlaceBuyOrder {
//!     client_id: ClientId::parse("shop-1")?,
//!     idempotency_key: IdempotencyKey::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301")?,
//!     currency: Currency::USD,
//!     amount: FiatAmount::parse("100.00")?,
//! };
//! let placed = writer.place(order.clone()).await?;
//! assert_eq!(placed.order.satoshis, Satoshis::new(200_000)); // 100 / 50,000 BTC
//! assert!(!placed.replayed);
//! let again = writer.place(order).await?; // the same key: the first answer
//! assert!(again.replayed);
//! assert_eq!(again.order, placed.order);
//!
//! // Everything after a checkpoint, in commit order (gap-free positions).
//! let log = store.read_after(Position::ZERO, 100).await?;
//! assert_eq!(log.len(), 1);
//! assert_eq!(log[0].position, Position(1));
//! # Ok(())
//! # }
//! ```
//!
//! On PostgreSQL (migrations applied on open; every process on the same database shares the cap,
//! the positions and idempotency), and a rebuild of the read table from the log:
//!
//! ```no_run
//! use order_domain::BtcCap;
//! use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
//!
//! # async fn run() -> Result<(), order_store::StoreError> {
//! let settings = PgSettings::for_url("postgres://postgres@127.0.0.1:5432/orders");
//! // The cap seeds a new store only; `PgEventStore::set_cap` changes it, recorded.
//! let store = PgEventStore::open(&settings, BtcCap::DEFAULT).await?;
//! let model = PgReadModel::open(&settings).await?;
//! let reached = model
//!     .rebuild(&store, 10_000, &|done, head| eprintln!("{done} of {head}"))
//!     .await?;
//! println!("read table rebuilt up to position {reached}");
//! # Ok(())
//! # }
//! ```

#![deny(missing_docs)]

/// async-trait's attribute, for implementing the store's traits (`Projection`, `EventLog`,
/// `ReadModelWriter`) without adding the crate yourself.
pub use async_trait::async_trait;

mod error;
mod follow;
mod log;
pub mod memory;
mod metrics;
#[cfg(feature = "postgres")]
pub mod postgres;
mod read_model;
#[cfg(feature = "test-support")]
pub mod testing;
mod view;
mod writer;

pub use error::{Cause, CommitInDoubt, PlaceError, ReadError, SqlClass, SqlState, StoreError};
pub use follow::{Follower, Step};
pub use log::{EventLog, LogRead, LoggedEvent, Position, UnreadableLogged};
pub use metrics::describe_metrics;
pub use read_model::{ReadModel, ReadModelWriter};
pub use view::{BadPageSize, OrderView, Page, PageRequest, PageSize, Scope};
pub use writer::{CqrsOrderWriter, Ledger, NewAggregate, OrderWriter, Placement};
