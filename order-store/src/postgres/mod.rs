//! The PostgreSQL backend: shared by every process, survives restarts.
//!
//! - Write store ([`PgEventStore`], `DATABASE_URL`): postgres-es's `events` / `snapshots`
//!   schema, so `BuyOrder` runs on the stock cqrs-es framework. A `BEFORE INSERT` trigger on
//!   `events` updates the one-row `btc_ledger` in the same transaction: it adds the event's
//!   satoshis (a `CHECK` is the cap) and hands out the event's global `position`. The row lock
//!   it takes is held to the commit, so positions are gap-free and in commit order, and the cap
//!   holds whatever the number of writers. Tailed through [`crate::EventLog`], woken by
//!   `LISTEN/NOTIFY`.
//! - Read table ([`PgReadModel`], `READ_DATABASE_URL`, may be another database):
//!   `buy_order_view` keyed by position and the projector's checkpoint, through
//!   tokio-postgres + deadpool; NUMERIC ↔ `rust_decimal` exactly.
//! - Migrations (`order-store/migrations/`), applied at start-up by sqlx's migrator under its
//!   advisory lock, so processes starting together are safe.
//! - Everything lives in one PostgreSQL schema ([`PgSchema`], `PG_SCHEMA`, default `public`),
//!   set as the `search_path` of every session, and every connection speaks TLS as its URL's
//!   `sslmode` asks ([`tls`]).

mod audit;
mod config;
mod event_store;
mod group_commit;
mod group_load;
mod migrate;
mod pipeline;
mod projection;
mod read_model;
/// The relay's fenced lease and checkpoint: internals of `event-bus`, not of a store's user.
#[cfg(feature = "relay")]
mod relay;
mod schema;
mod tls;

pub use audit::{audit, AuditReport, Finding};
pub use config::PgSettings;
pub use event_store::{CapChange, CapError, PgEventStore};
pub use group_commit::Batching;
pub use migrate::{migrate_read, migrate_write};
pub use projection::{ManagedProjection, PgProjection, Projection, ProjectionStatus, Transaction};
pub use read_model::{OrderTable, PgReadModel, SHARED_READS};
#[cfg(feature = "relay")]
pub use relay::{RelayLease, Rewind, StoredEvent, LEASE_CALL_TIMEOUT, LEASE_HEARTBEAT, LEASE_TTL};
pub use schema::PgSchema;

use crate::error::StoreError;

/// A database error as a store error: the backend is unavailable (the caller answers 503 and
/// the pool reconnects by itself when the database is back).
pub(crate) fn unavailable(err: impl std::fmt::Display) -> StoreError {
    StoreError::Unavailable(err.to_string())
}

/// [`unavailable`] with every cause in the chain: some clients (tokio-postgres, deadpool) keep
/// the reason, a TLS certificate's say, out of their own message.
pub(crate) fn unavailable_because(err: &(dyn std::error::Error + 'static)) -> StoreError {
    let mut text = err.to_string();
    let mut cause = err.source();
    while let Some(inner) = cause {
        let said = inner.to_string();
        if !text.contains(&said) {
            text.push_str(": ");
            text.push_str(&said);
        }
        cause = inner.source();
    }
    StoreError::Unavailable(text)
}

/// A position as PostgreSQL's bigint; beyond it is a corrupt log, never a wrapped number.
pub(crate) fn position_i64(position: crate::log::Position) -> Result<i64, StoreError> {
    i64::try_from(position.0)
        .map_err(|_| StoreError::Corrupt(format!("position {position} beyond bigint")))
}
