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
//!   `sslmode` asks.
//!
//! This module keeps the helpers all of them share: database errors as [`StoreError`]s and
//! positions as `bigint`. The API-key registry is not here: it is the `api-keys` crate's.

// For contributors (not on the docs page):
//
// # Layout: the modules by job
//
// | job | module | what is there |
// |---|---|---|
// | write | `write::event_store` | `PgEventStore`: loads, commits, the log, the cap |
// | write | `write::group_commit` | one transaction for the orders a process has ready; [`Batching`]; `settle`, the bounded wait of every call |
// | write | `write::group_load` | one query for the aggregates wanted at once |
// | read | `read::read_model` | [`PgReadModel`]: `buy_order_view` pages and orders; [`OrderViewProjection`], its projection |
// | read | `read::projection` | [`Projection`], [`PgProjection`]: checkpointed projections, park, rebuild |
// | read | `read::read_sessions` | the pipelined sessions reads share |
// | connection | `connection::config` | [`PgSettings`] and every session's settings |
// | connection | `connection::tls` | `sslmode` / `sslrootcert` for both drivers |
// | connection | `connection::schema` | [`PgSchema`] and the names that carry it |
// | connection | `connection::migrate` | [`migrate_write`], [`migrate_read`], superseded repairs |
// | operator tools | `ops::audit` | `audit`: the books re-checked |
// | operator tools | `ops::relay` | the relay's lease and checkpoint (feature `relay`) |
//
// # Tables, and the migration that creates each
//
// Applied migrations never change (their checksums are pinned in `migration-checksums.txt`),
// so a table stays where it was first created; later migrations alter it. The current form of
// the write side, every function and trigger as it stands, is `schema/write.sql`, generated
// and checked by the crate's migration tests.
//
// | table | database | created by | used by |
// |---|---|---|---|
// | `events`, `snapshots` | write | `1001_event_store.sql` (postgres-es's schema; `position` added there) | `write::event_store` |
// | `btc_ledger` (sold, cap, last position) | write | `1001_event_store.sql`; the append function in `1005`, the duplicate-first order in `1004`, the epoch in `1010` | `write::group_commit`, `ops::audit` |
// | `relay_checkpoint` | write | `1002_relay.sql` | `ops::relay` |
// | `api_clients`, `api_keys` | write | `1003_clients.sql`, `1011_api_keys.sql` | the `api-keys` crate |
// | `btc_cap_changes` (the cap's history) | write | `1003_clients.sql` | `write::event_store` (`set_cap`, `cap_history`) |
// | `log_epochs`, `log_rewinds` | write | `1010_log_epochs.sql` | `ops::relay`, `ops::audit` |
// | `buy_order_view`, `projector_checkpoint` | read | `2001_read_table.sql` (`client_id` in `2002`) | `read::read_model`, `read::projection` |
// | `parked_events` | read | `2003_parked_events.sql` | `read::projection` |
//

/// The drivers under the store, re-exported on purpose: [`Transaction`] (your projection's
/// statements) and [`Session`] are deadpool-postgres's, rows and parameters tokio-postgres's,
/// and `PgEventStore::pool` hands sqlx's pool to tests. Name them through these paths and the
/// versions always match the store's. They are part of this crate's semver surface: a major
/// version of any of them is a major version of order-store.
///
/// The store turns on, and keeps on, tokio-postgres's `chrono`, `uuid` and `serde_json`
/// support and rust_decimal's `db-tokio-postgres`: `DateTime<Utc>`, `Uuid`, JSON and `Decimal`
/// (NUMERIC, exactly) bind as parameters and read from rows in your projection's SQL.
pub mod drivers {
    pub use deadpool_postgres;
    pub use sqlx;
    pub use tokio_postgres;
}

/// A pooled session on the read database, in the store's schema: to read a projection's own
/// tables ([`PgProjection::session`]). deadpool-postgres's `Object` (see [`drivers`]).
pub type Session = deadpool_postgres::Object;

mod connection;
mod ops;
pub(crate) mod read;
mod write;

pub use connection::config::{PgSettings, SettingError};
pub use connection::migrate::{is_standby, migrate_read, migrate_write};
pub use connection::notify::{listen, Notice};
pub use connection::schema::{schema_channel, PgSchema};
#[cfg(feature = "ops")]
pub use ops::audit::{audit, AuditReport, Finding};
#[cfg(feature = "relay")]
pub use ops::relay::{
    RelayLease, Rewind, StoredEvent, LEASE_CALL_TIMEOUT, LEASE_HEARTBEAT, LEASE_TTL,
};
pub use read::projection::{
    ManagedProjection, PgProjection, Projection, ProjectionStatus, Transaction,
};
pub use read::read_model::{OrderViewProjection, PgReadModel};
pub use write::event_store::{CapChange, CapError, PgEventStore};
pub use write::group_commit::Batching;

use crate::error::StoreError;

/// A database or driver error as a store error, classed by its SQLSTATE or kind and kept as the
/// source ([`StoreError::from_database`]).
pub(crate) fn db_error(err: impl std::error::Error + Send + Sync + 'static) -> StoreError {
    StoreError::from_database(err)
}

/// A position as PostgreSQL's bigint; beyond it is a corrupt log, never a wrapped number.
pub(crate) fn position_i64(position: crate::log::Position) -> Result<i64, StoreError> {
    i64::try_from(position.0)
        .map_err(|_| StoreError::corrupt(format!("position {position} beyond bigint")))
}
