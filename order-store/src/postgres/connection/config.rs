//! Settings of the PostgreSQL backend, from the environment (or the matching `--flags`).

use std::time::Duration;

use crate::postgres::connection::tls::TlsUrl;
use crate::postgres::PgSchema;
#[cfg(feature = "cli")]
use settings_kit::SecretUrlParser;
use settings_kit::{parse_millis, SecretUrl};

/// The defaults of the `DB_*` settings: the one source for the flags and
/// [`PgSettings::for_url`] (durations as their flags take them, in milliseconds).
mod defaults {
    pub const POOL_SIZE: u32 = 16;
    pub const ACQUIRE_TIMEOUT_MS: &str = "2000";
    pub const STATEMENT_TIMEOUT_MS: &str = "10000";
    pub const LOCK_TIMEOUT_MS: &str = "3000";
    pub const IDLE_IN_TRANSACTION_TIMEOUT_MS: &str = "5000";
    pub const KEEPALIVE_S: u32 = 10;
    /// `DB_READ_SESSIONS`.
    pub const READ_SESSIONS: u32 = 4;
    /// `DB_READ_PIPELINE_DEPTH`: the benchmark's whole read load shares one session on two
    /// cores, its fastest setting there (bench/RESULTS.md, "Reads pipelined on shared sessions").
    pub const READ_PIPELINE_DEPTH: u32 = 16;
}

/// A default duration as its setting would read it.
fn default_millis(ms: &str) -> Duration {
    parse_millis(ms).expect("a default is a valid setting")
}

#[cfg(feature = "cli")]
fn check_url(s: &str) -> Result<(), String> {
    if !(s.starts_with("postgres://") || s.starts_with("postgresql://")) {
        return Err("must start with postgres:// or postgresql://".into());
    }
    // Both messages name the part that could not be read, never the value.
    let tls = TlsUrl::parse(s)?;
    tls.rest
        .parse::<tokio_postgres::Config>()
        .map(drop)
        .map_err(|e| format!("not a PostgreSQL URL: {e}"))
}

#[cfg(feature = "cli")]
fn parse_schema(s: &str) -> Result<PgSchema, String> {
    PgSchema::parse(s)
}

#[cfg(feature = "cli")]
fn parse_url() -> SecretUrlParser {
    SecretUrlParser::new(check_url)
}

/// Where the databases are and how many connections to keep.
///
/// TLS is asked for in the URLs as libpq reads it: `?sslmode=require` (encrypted),
/// `verify-full` (the certificate checked against the system's roots and the PEM file in
/// `sslrootcert`, if any, and the host name). The default, `prefer`, encrypts when the server
/// offers it. `verify-ca` is refused with a reason (see `connection::tls`).
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct PgSettings {
    /// The write store (events, ledger). Unset: the in-memory store (all-in-one only).
    /// TLS: `?sslmode=require|verify-full[&sslrootcert=ca.pem]`.
    #[cfg_attr(feature = "cli", arg(long = "database-url", global = true, env = "DATABASE_URL", value_name = "DATABASE_URL",
          value_parser = parse_url(), hide_env_values = true))]
    pub database_url: Option<SecretUrl>,
    /// The read table; defaults to DATABASE_URL. May be another database.
    #[cfg_attr(feature = "cli", arg(long = "read-database-url", global = true, env = "READ_DATABASE_URL",
          value_name = "READ_DATABASE_URL", value_parser = parse_url(), hide_env_values = true))]
    pub read_database_url: Option<SecretUrl>,
    /// The PostgreSQL schema of every table of the store (write and read), created if missing:
    /// two stores, or a store and an application's own tables, can share one database.
    #[cfg_attr(feature = "cli", arg(long = "pg-schema", global = true, env = "PG_SCHEMA", value_name = "PG_SCHEMA",
          default_value = "public", value_parser = parse_schema))]
    pub schema: PgSchema,
    /// Connections per pool.
    #[cfg_attr(feature = "cli", arg(long = "db-pool-size", global = true, env = "DB_POOL_SIZE", value_name = "DB_POOL_SIZE",
          default_value_t = defaults::POOL_SIZE, value_parser = clap::value_parser!(u32).range(1..=1000)))]
    pub pool_size: u32,
    /// How long a request waits for a connection before answering 503.
    #[cfg_attr(feature = "cli", arg(long = "db-acquire-timeout-ms", global = true, env = "DB_ACQUIRE_TIMEOUT_MS",
          value_name = "DB_ACQUIRE_TIMEOUT_MS", default_value = defaults::ACQUIRE_TIMEOUT_MS, value_parser = parse_millis))]
    pub acquire_timeout: Duration,
    /// The longest one SQL statement may run (PostgreSQL's `statement_timeout`, set on every
    /// session the services open; migrations excepted).
    #[cfg_attr(feature = "cli", arg(long = "db-statement-timeout-ms", global = true, env = "DB_STATEMENT_TIMEOUT_MS",
          value_name = "DB_STATEMENT_TIMEOUT_MS", default_value = defaults::STATEMENT_TIMEOUT_MS, value_parser = parse_millis))]
    pub statement_timeout: Duration,
    /// The longest a statement waits for a lock (`lock_timeout`): a writer waiting on the ledger
    /// row behind a stuck transaction gives up with 503 instead of waiting for it.
    #[cfg_attr(feature = "cli", arg(long = "db-lock-timeout-ms", global = true, env = "DB_LOCK_TIMEOUT_MS",
          value_name = "DB_LOCK_TIMEOUT_MS", default_value = defaults::LOCK_TIMEOUT_MS, value_parser = parse_millis))]
    pub lock_timeout: Duration,
    /// How long a session may sit idle inside a transaction before PostgreSQL ends it
    /// (`idle_in_transaction_session_timeout`): a writer that stops mid-commit (paused,
    /// partitioned) releases the ledger row's lock after this, not after hours.
    #[cfg_attr(feature = "cli", arg(long = "db-idle-in-transaction-timeout-ms", global = true, env = "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
          value_name = "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
          default_value = defaults::IDLE_IN_TRANSACTION_TIMEOUT_MS,
          value_parser = parse_millis))]
    pub idle_in_transaction_timeout: Duration,
    /// Seconds of silence before TCP keepalive probes on each connection, both ways (the
    /// client's socket and the server's `tcp_keepalives_idle`; probes every 5 s, 3 of them, and
    /// `tcp_user_timeout` to match): a dead peer is noticed in about this plus 15 s, not the
    /// kernel's 2 hours (or 15 minutes of retransmissions).
    #[cfg_attr(feature = "cli", arg(long = "db-keepalive-s", global = true, env = "DB_KEEPALIVE_S", value_name = "DB_KEEPALIVE_S",
          default_value_t = defaults::KEEPALIVE_S, value_parser = clap::value_parser!(u32).range(1..=7200)))]
    pub keepalive_idle_s: u32,
    /// Group commit: how the orders a process has ready are committed together
    /// (`DB_COMMIT_BATCH_MAX`, `DB_COMMIT_LINGER_US`, `DB_COMMITS_IN_FLIGHT`).
    #[cfg_attr(feature = "cli", command(flatten))]
    pub batching: crate::postgres::Batching,
    /// Sessions that reads of the read table (pages, single orders) share, pipelined: a pool
    /// of their own, beside `DB_POOL_SIZE`'s. One session serves many concurrent reads with
    /// far fewer wake-ups than a session per read (see `DB_READ_PIPELINE_DEPTH`).
    #[cfg_attr(feature = "cli", arg(long = "db-read-sessions", global = true, env = "DB_READ_SESSIONS", value_name = "DB_READ_SESSIONS",
          default_value_t = defaults::READ_SESSIONS,
          value_parser = clap::value_parser!(u32).range(1..=1000)))]
    pub read_sessions: u32,
    /// Reads in flight on one shared session before the next session takes the rest: a light
    /// load stays on one session, a heavier one spreads, and a session that stops answering
    /// holds at most this many reads.
    #[cfg_attr(feature = "cli", arg(long = "db-read-pipeline-depth", global = true, env = "DB_READ_PIPELINE_DEPTH",
          value_name = "DB_READ_PIPELINE_DEPTH", default_value_t = defaults::READ_PIPELINE_DEPTH,
          value_parser = clap::value_parser!(u32).range(1..=1000)))]
    pub read_pipeline_depth: u32,
}

impl PgSettings {
    /// The read table's URL: `READ_DATABASE_URL`, else `DATABASE_URL`.
    pub fn read_url(&self) -> Option<&str> {
        self.read_database_url
            .as_ref()
            .map(SecretUrl::expose)
            .or(self.write_url())
    }

    /// The write store's URL, `DATABASE_URL`, with its password: for connecting, never printing.
    pub fn write_url(&self) -> Option<&str> {
        self.database_url.as_ref().map(SecretUrl::expose)
    }

    /// Settings for one URL (tests, tools).
    pub fn for_url(url: &str) -> Self {
        PgSettings {
            database_url: Some(SecretUrl::new(url)),
            read_database_url: None,
            schema: PgSchema::public(),
            pool_size: defaults::POOL_SIZE,
            acquire_timeout: default_millis(defaults::ACQUIRE_TIMEOUT_MS),
            statement_timeout: default_millis(defaults::STATEMENT_TIMEOUT_MS),
            lock_timeout: default_millis(defaults::LOCK_TIMEOUT_MS),
            idle_in_transaction_timeout: default_millis(defaults::IDLE_IN_TRANSACTION_TIMEOUT_MS),
            keepalive_idle_s: defaults::KEEPALIVE_S,
            batching: crate::postgres::Batching::DEFAULT,
            read_sessions: defaults::READ_SESSIONS,
            read_pipeline_depth: defaults::READ_PIPELINE_DEPTH,
        }
    }

    /// The same settings in another schema.
    pub fn in_schema(mut self, schema: PgSchema) -> Self {
        self.schema = schema;
        self
    }
}

/// sqlx connection options for `url` alone (no session settings: the migrations' connection
/// adds only the schema). Its TLS parameters are checked as the read table's client reads
/// them, so every connection agrees on what the URL asks (sqlx would accept `verify-ca`, then
/// fail it).
pub(crate) fn sqlx_url_options(
    url: &str,
) -> Result<sqlx::postgres::PgConnectOptions, crate::error::StoreError> {
    TlsUrl::parse(url).map_err(crate::error::StoreError::Unavailable)?;
    url.parse().map_err(crate::postgres::unavailable)
}

/// The isolation level every session of the store runs at, whatever the database's
/// `default_transaction_isolation` (the space is escaped for the startup `options`).
pub(crate) const ISOLATION: (&str, &str) = ("default_transaction_isolation", r"read\ committed");

/// Keepalive probes: every this many seconds once they start, this many before giving up.
const KEEPALIVE_INTERVAL_S: u32 = 5;
const KEEPALIVE_COUNT: u32 = 3;

impl PgSettings {
    /// The server settings every session opens with (`SET` through the startup `options`).
    pub(crate) fn session_settings(&self) -> Vec<(&'static str, String)> {
        let ms = |d: Duration| format!("{}ms", d.as_millis());
        vec![
            ("search_path", self.schema.to_string()),
            // The append function, the ledger's row lock, the relay's fence and the projector's
            // checkpoint are written for READ COMMITTED: a database whose default is
            // `repeatable read` or `serializable` (set by a DBA or a managed platform) would
            // turn contended batches into 40001 errors. Every session says which it needs.
            (ISOLATION.0, ISOLATION.1.to_owned()),
            ("statement_timeout", ms(self.statement_timeout)),
            ("lock_timeout", ms(self.lock_timeout)),
            (
                "idle_in_transaction_session_timeout",
                ms(self.idle_in_transaction_timeout),
            ),
            ("tcp_keepalives_idle", self.keepalive_idle_s.to_string()),
            ("tcp_keepalives_interval", KEEPALIVE_INTERVAL_S.to_string()),
            ("tcp_keepalives_count", KEEPALIVE_COUNT.to_string()),
            // Keepalive probes only start on an idle socket; data left unacknowledged (a reply
            // sent as the peer vanished) is retransmitted for ~15 minutes instead. This bounds
            // that too, to the same time.
            (
                "tcp_user_timeout",
                format!("{}", self.dead_peer_after().as_millis()),
            ),
        ]
    }

    /// The client-side deadline of one statement's answer: the statement timeout (which the
    /// server enforces itself, cancelling the statement) plus the acquire timeout. No answer
    /// by then means the peer has gone silent (a frozen host or middlebox, which the kernel
    /// still acknowledges, so no keepalive notices): the session is given up.
    pub fn answer_deadline(&self) -> Duration {
        self.statement_timeout + self.acquire_timeout
    }

    /// How long a peer may be silent before its connection is given up: the keepalive idle
    /// time plus every probe.
    pub(crate) fn dead_peer_after(&self) -> Duration {
        Duration::from_secs(u64::from(
            self.keepalive_idle_s + KEEPALIVE_INTERVAL_S * KEEPALIVE_COUNT,
        ))
    }

    /// sqlx connection options for `url` with the session settings of every connection (TLS as the URL
    /// asks, the schema's `search_path`, the timeouts): for a crate keeping its own tables in
    /// the store's database (`api-keys`' registry) on sessions like the store's own.
    pub fn sqlx_options(
        &self,
        url: &str,
    ) -> Result<sqlx::postgres::PgConnectOptions, crate::error::StoreError> {
        Ok(sqlx_url_options(url)?.options(self.session_settings()))
    }

    /// tokio-postgres configuration for `url` with the same session settings, client-side
    /// keepalives, and the TLS connector that checks what the URL's `sslmode` asks.
    /// `extra` session settings come after the common ones.
    pub(crate) fn tokio_postgres_config(
        &self,
        url: &str,
        extra: &[(&'static str, &str)],
    ) -> Result<
        (
            tokio_postgres::Config,
            tokio_postgres_rustls::MakeRustlsConnect,
        ),
        crate::error::StoreError,
    > {
        let tls = TlsUrl::parse(url).map_err(crate::error::StoreError::Unavailable)?;
        let mut config: tokio_postgres::Config =
            tls.rest.parse().map_err(crate::postgres::unavailable)?;
        config.ssl_mode(tls.tokio_mode());
        let options: Vec<String> = self
            .session_settings()
            .into_iter()
            .chain(
                extra
                    .iter()
                    .map(|(name, value)| (*name, (*value).to_owned())),
            )
            .map(|(name, value)| format!("-c {name}={value}"))
            .collect();
        let mut all = config.get_options().map(str::to_owned).unwrap_or_default();
        all.push(' ');
        all.push_str(&options.join(" "));
        config
            .options(all.trim())
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(u64::from(self.keepalive_idle_s)))
            .keepalives_interval(Duration::from_secs(u64::from(KEEPALIVE_INTERVAL_S)))
            .keepalives_retries(KEEPALIVE_COUNT)
            .tcp_user_timeout(self.dead_peer_after());
        Ok((config, tls.connector()?))
    }
}

#[cfg(all(test, feature = "cli"))]
mod tests {
    use super::*;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        db: PgSettings,
    }

    /// `for_url` and the flags agree on every default (the environment's `DB_*` aside).
    #[test]
    fn the_flags_defaults_are_for_urls() {
        let url = "postgres://app@db/orders";
        let parsed = <Cli as clap::Parser>::try_parse_from(["x", "--database-url", url])
            .unwrap()
            .db;
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", PgSettings::for_url(url))
        );
        assert_eq!(parsed.batching, crate::postgres::Batching::DEFAULT);
    }
}
