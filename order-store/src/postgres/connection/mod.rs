//! Reaching the database: settings, TLS, the schema, migrations.
//!
//! - [`config`]: [`PgSettings`](crate::postgres::PgSettings), every `DB_*` setting and the
//!   session settings each connection gets (isolation, timeouts, keepalives, `search_path`).
//! - [`tls`]: `sslmode` / `sslrootcert` read the same way by sqlx and tokio-postgres.
//! - [`schema`]: [`PgSchema`](crate::postgres::PgSchema) (`PG_SCHEMA`) and the names that carry
//!   it (notification channel, advisory locks).
//! - [`notify`]: following a `NOTIFY` channel on a session of its own, proved alive.
//! - [`migrate`]: the write (1xxx) and read (2xxx) migrations under sqlx's advisory lock, and the
//!   repair of superseded ones.

pub(crate) mod config;
pub(crate) mod migrate;
pub(crate) mod notify;
pub(crate) mod schema;
pub(crate) mod tls;
