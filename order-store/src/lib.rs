//! # order-store
//!
//! Where buy orders live: the interfaces the services use to store orders and read them back,
//! and their implementations. Services depend on the traits, never on a backend, so the in-memory
//! backend (the all-in-one and tests) and the PostgreSQL one (shared by many processes) are
//! interchangeable.
//!
//! - Write side: [`OrderWriter`] places an order through cqrs-es on any
//!   `EventStore<BuyOrder>` ([`CqrsOrderWriter`]), turning concurrency conflicts on the derived
//!   order id into idempotent replays. The event store applies the BTC cap
//!   ([`order_domain::BtcLedger`]) atomically with the commit.
//! - The log: every committed event gets a global, gap-free, commit-ordered [`Position`];
//!   [`EventLog`] lets a reader (the projector) tail it from a checkpoint.
//! - Read side: [`ReadModelWriter`] folds logged events into the read table, idempotently;
//!   [`ReadModel`] answers pages (keyset on the position, newest first) and single orders.
//! - [`memory`]: the in-memory backend; [`postgres`]: the PostgreSQL one.

pub mod clients;
mod error;
mod log;
pub mod memory;
pub mod postgres;
mod read_model;
pub mod secret;
#[cfg(feature = "test-support")]
pub mod testing;
mod view;
mod writer;

pub use clients::{Caller, Identity, IdentityError, KeyDirectory};
pub use error::{CommitInDoubt, PlaceError, ReadError, StoreError};
pub use log::{EventLog, LoggedEvent, Position};
pub use read_model::{ReadModel, ReadModelWriter};
pub use secret::{redact_url, SecretUrl, SecretUrlParser};
pub use view::{BadPageSize, OrderView, Page, PageRequest, PageSize, Scope};
pub use writer::{CqrsOrderWriter, Ledger, OrderWriter, Placement};
