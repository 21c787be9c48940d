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

/// A setting that could not be read: which variable, and why (never its value, which may be a
/// secret).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{variable}: {reason}")]
#[non_exhaustive]
pub struct SettingError {
    /// The environment variable.
    pub variable: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

impl SettingError {
    fn new(variable: &'static str, reason: impl Into<String>) -> Self {
        SettingError {
            variable,
            reason: reason.into(),
        }
    }
}

/// A setting read wrong is a configuration mistake: `?` from [`PgSettings::from_env`] in a
/// function that answers store errors.
impl From<SettingError> for crate::error::StoreError {
    fn from(err: SettingError) -> Self {
        crate::error::StoreError::Misconfigured(crate::error::Cause::because(err))
    }
}

/// Reads variables for [`PgSettings::from_vars`]: an unset or empty variable keeps the default.
struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|value| !value.is_empty())
    }

    /// A whole number within `range`, into `into`.
    fn number<T: TryFrom<i128>, R: Copy + Into<i128> + std::fmt::Display>(
        &self,
        name: &'static str,
        range: std::ops::RangeInclusive<R>,
        into: &mut T,
    ) -> Result<(), SettingError> {
        let Some(value) = self.get(name) else {
            return Ok(());
        };
        let out_of_range = || {
            SettingError::new(
                name,
                format!(
                    "must be a whole number from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        };
        let number: i128 = value.trim().parse().map_err(|_| out_of_range())?;
        if !((*range.start()).into()..=(*range.end()).into()).contains(&number) {
            return Err(out_of_range());
        }
        *into = T::try_from(number).map_err(|_| out_of_range())?;
        Ok(())
    }

    fn millis(&self, name: &'static str, into: &mut Duration) -> Result<(), SettingError> {
        if let Some(value) = self.get(name) {
            *into = parse_millis(value.trim()).map_err(|_| {
                SettingError::new(
                    name,
                    "must be a whole number of milliseconds greater than 0",
                )
            })?;
        }
        Ok(())
    }
}

/// The ranges of the numeric `DB_*` settings: one source for the flags and
/// [`PgSettings::from_env`].
pub(crate) mod limits {
    use std::ops::RangeInclusive;

    pub const POOL_SIZE: RangeInclusive<i64> = 1..=1000;
    pub const KEEPALIVE_S: RangeInclusive<i64> = 1..=7200;
    pub const READ_SESSIONS: RangeInclusive<i64> = 1..=1000;
    pub const READ_PIPELINE_DEPTH: RangeInclusive<i64> = 1..=1000;
    pub const COMMIT_BATCH_MAX: RangeInclusive<u64> = 1..=10_000;
    pub const COMMIT_LINGER_US: RangeInclusive<u64> = 0..=100_000;
    pub const COMMITS_IN_FLIGHT: RangeInclusive<u64> = 1..=64;
}

/// A default duration as its setting would read it.
fn default_millis(ms: &str) -> Duration {
    parse_millis(ms).expect("a default is a valid setting")
}

fn check_url(s: &str) -> Result<(), String> {
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
/// offers it. `verify-ca` is refused with a reason (sqlx 0.8 would accept it, then fail it).
///
/// Built in code, from the environment ([`PgSettings::from_env`]), or, with feature `cli`,
/// as clap arguments (the services' flags):
///
/// ```
/// use std::time::Duration;
///
/// use order_store::postgres::{PgSchema, PgSettings};
///
/// let mut settings = PgSettings::for_url("postgres://app@db.internal/shop?sslmode=verify-full")
///     .in_schema(PgSchema::parse("buy_orders").unwrap());
/// settings.acquire_timeout = Duration::from_millis(500); // honoured by every pool it opens
/// assert_eq!(settings.read_url(), settings.write_url(), "one database unless told otherwise");
/// ```
///
/// Non-exhaustive: start from [`PgSettings::for_url`] or [`PgSettings::from_env`] and set the
/// fields you change, so a setting added later breaks no one.
#[derive(Debug, Clone)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[non_exhaustive]
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
          default_value_t = defaults::POOL_SIZE, value_parser = clap::value_parser!(u32).range(limits::POOL_SIZE)))]
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
          default_value_t = defaults::KEEPALIVE_S, value_parser = clap::value_parser!(u32).range(limits::KEEPALIVE_S)))]
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
          value_parser = clap::value_parser!(u32).range(limits::READ_SESSIONS)))]
    pub read_sessions: u32,
    /// Reads in flight on one shared session before the next session takes the rest: a light
    /// load stays on one session, a heavier one spreads, and a session that stops answering
    /// holds at most this many reads.
    #[cfg_attr(feature = "cli", arg(long = "db-read-pipeline-depth", global = true, env = "DB_READ_PIPELINE_DEPTH",
          value_name = "DB_READ_PIPELINE_DEPTH", default_value_t = defaults::READ_PIPELINE_DEPTH,
          value_parser = clap::value_parser!(u32).range(limits::READ_PIPELINE_DEPTH)))]
    pub read_pipeline_depth: u32,
    /// How every handle opened from these settings reads stored events: order-domain's
    /// upcasters and those registered with [`PgSettings::with_upcaster`]. One registration for
    /// the store, so a tool opened for a rebuild cannot read the log differently from the
    /// process that wrote the read model.
    #[cfg_attr(feature = "cli", arg(skip = order_domain::EventReader::new()))]
    pub event_reader: order_domain::EventReader,
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
            event_reader: order_domain::EventReader::new(),
        }
    }

    /// The same settings with `upcaster` registered for every handle opened from them (the
    /// event store's loads and log, and so rebuilds and the follower): for events of a shape
    /// order-domain never wrote, say history imported from elsewhere. A rebuild through a
    /// handle that cannot read what the live read model has applied is refused
    /// ([`PgProjection::rebuild`](crate::postgres::PgProjection::rebuild)).
    pub fn with_upcaster(
        mut self,
        upcaster: impl order_domain::cqrs_es::persist::EventUpcaster + 'static,
    ) -> Self {
        self.event_reader = self.event_reader.with_upcaster(upcaster);
        self
    }

    /// Settings from the process's environment, under the names the binaries' flags read
    /// (`DATABASE_URL`, `READ_DATABASE_URL`, `PG_SCHEMA`, `DB_*`), with the same defaults and
    /// ranges, and no CLI crate: for an application that configures itself from its
    /// environment. An error names the variable, never its value.
    ///
    /// ```
    /// use order_store::postgres::PgSettings;
    ///
    /// let env = [("DATABASE_URL", "postgres://app@db/orders"), ("DB_POOL_SIZE", "0")];
    /// let err = PgSettings::from_vars(|name| {
    ///     env.iter().find(|(n, _)| *n == name).map(|(_, v)| v.to_string())
    /// })
    /// .unwrap_err();
    /// assert_eq!(err.variable, "DB_POOL_SIZE");
    /// ```
    pub fn from_env() -> Result<Self, SettingError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`PgSettings::from_env`] from any source of variables (`var(name)` answers a value or
    /// `None` when unset): a map in tests, a secrets manager's values.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Self, SettingError> {
        let vars = Vars(&var);
        let url = |name: &'static str| {
            vars.get(name)
                .map(|url| {
                    check_url(&url)
                        .map(|()| SecretUrl::new(url))
                        .map_err(|reason| SettingError::new(name, reason))
                })
                .transpose()
        };
        let mut settings = PgSettings {
            database_url: url("DATABASE_URL")?,
            read_database_url: url("READ_DATABASE_URL")?,
            ..PgSettings::for_url("postgres://")
        };
        if let Some(schema) = vars.get("PG_SCHEMA") {
            settings.schema = PgSchema::parse(&schema)
                .map_err(|reason| SettingError::new("PG_SCHEMA", reason))?;
        }
        vars.number("DB_POOL_SIZE", limits::POOL_SIZE, &mut settings.pool_size)?;
        vars.millis("DB_ACQUIRE_TIMEOUT_MS", &mut settings.acquire_timeout)?;
        vars.millis("DB_STATEMENT_TIMEOUT_MS", &mut settings.statement_timeout)?;
        vars.millis("DB_LOCK_TIMEOUT_MS", &mut settings.lock_timeout)?;
        vars.millis(
            "DB_IDLE_IN_TRANSACTION_TIMEOUT_MS",
            &mut settings.idle_in_transaction_timeout,
        )?;
        vars.number(
            "DB_KEEPALIVE_S",
            limits::KEEPALIVE_S,
            &mut settings.keepalive_idle_s,
        )?;
        vars.number(
            "DB_READ_SESSIONS",
            limits::READ_SESSIONS,
            &mut settings.read_sessions,
        )?;
        vars.number(
            "DB_READ_PIPELINE_DEPTH",
            limits::READ_PIPELINE_DEPTH,
            &mut settings.read_pipeline_depth,
        )?;
        let batching = &mut settings.batching;
        vars.number(
            "DB_COMMIT_BATCH_MAX",
            limits::COMMIT_BATCH_MAX,
            &mut batching.max_orders,
        )?;
        let mut linger_us = 0u64;
        vars.number(
            "DB_COMMIT_LINGER_US",
            limits::COMMIT_LINGER_US,
            &mut linger_us,
        )?;
        batching.linger = Duration::from_micros(linger_us);
        vars.number(
            "DB_COMMITS_IN_FLIGHT",
            limits::COMMITS_IN_FLIGHT,
            &mut batching.in_flight,
        )?;
        Ok(settings)
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
    let tls = TlsUrl::parse(url).map_err(crate::error::StoreError::misconfigured)?;
    let options: sqlx::postgres::PgConnectOptions =
        url.parse().map_err(crate::postgres::db_error)?;
    Ok(tls.apply_to_sqlx(options))
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
        let tls = TlsUrl::parse(url).map_err(crate::error::StoreError::misconfigured)?;
        let mut config: tokio_postgres::Config = tls.rest.parse().map_err(|e| {
            crate::error::StoreError::Misconfigured(crate::error::Cause::because(e))
        })?;
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

    /// The flags and [`PgSettings::from_vars`] read every setting alike, and refuse alike at
    /// the edges of its range.
    #[test]
    fn the_flags_and_the_environment_reader_agree() {
        let values = [
            ("DATABASE_URL", "postgres://app@db/orders"),
            ("READ_DATABASE_URL", "postgres://app@replica/orders"),
            ("PG_SCHEMA", "shop"),
            ("DB_POOL_SIZE", "7"),
            ("DB_ACQUIRE_TIMEOUT_MS", "123"),
            ("DB_STATEMENT_TIMEOUT_MS", "4567"),
            ("DB_LOCK_TIMEOUT_MS", "89"),
            ("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "1011"),
            ("DB_KEEPALIVE_S", "12"),
            ("DB_READ_SESSIONS", "3"),
            ("DB_READ_PIPELINE_DEPTH", "5"),
            ("DB_COMMIT_BATCH_MAX", "64"),
            ("DB_COMMIT_LINGER_US", "250"),
            ("DB_COMMITS_IN_FLIGHT", "2"),
        ];
        let flag = |name: &str| format!("--{}", name.to_lowercase().replace('_', "-"));
        let flags = |values: &[(&str, &str)]| {
            let mut args = vec!["x".to_owned()];
            for (name, value) in values {
                args.push(flag(name));
                args.push((*value).to_owned());
            }
            <Cli as clap::Parser>::try_parse_from(args).map(|cli| cli.db)
        };
        let vars = |values: &[(&str, &str)]| {
            let values = values.to_vec();
            PgSettings::from_vars(move |name| {
                values
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, v)| (*v).to_owned())
            })
        };
        assert_eq!(
            format!("{:?}", flags(&values).unwrap()),
            format!("{:?}", vars(&values).unwrap())
        );
        for (name, low, high) in [
            ("DB_POOL_SIZE", "1", "1000"),
            ("DB_KEEPALIVE_S", "1", "7200"),
            ("DB_READ_SESSIONS", "1", "1000"),
            ("DB_READ_PIPELINE_DEPTH", "1", "1000"),
            ("DB_COMMIT_BATCH_MAX", "1", "10000"),
            ("DB_COMMIT_LINGER_US", "0", "100000"),
            ("DB_COMMITS_IN_FLIGHT", "1", "64"),
        ] {
            let below = (low.parse::<i64>().unwrap() - 1).to_string();
            let above = (high.parse::<i64>().unwrap() + 1).to_string();
            for value in [low, high] {
                assert!(flags(&[(name, value)]).is_ok() && vars(&[(name, value)]).is_ok());
            }
            for value in [below.as_str(), above.as_str()] {
                assert!(flags(&[(name, value)]).is_err(), "{name}={value}");
                assert!(vars(&[(name, value)]).is_err(), "{name}={value}");
            }
        }
    }
}

#[cfg(test)]
mod from_env {
    use super::*;

    fn from(vars: &[(&str, &str)]) -> Result<PgSettings, SettingError> {
        PgSettings::from_vars(|name| {
            vars.iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn nothing_set_is_the_defaults_with_no_database() {
        let settings = from(&[]).unwrap();
        assert!(settings.write_url().is_none() && settings.read_url().is_none());
        let mut defaults = PgSettings::for_url("postgres://");
        defaults.database_url = None;
        assert_eq!(format!("{settings:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn every_variable_is_read_at_the_edges_of_its_range() {
        let settings = from(&[
            ("DATABASE_URL", "postgres://app:pw@db/orders"),
            (
                "READ_DATABASE_URL",
                "postgresql://reader@replica/orders?sslmode=require",
            ),
            ("PG_SCHEMA", "shop_orders"),
            ("DB_POOL_SIZE", "1000"),
            ("DB_ACQUIRE_TIMEOUT_MS", "1"),
            ("DB_STATEMENT_TIMEOUT_MS", "18446744073709551615"),
            ("DB_LOCK_TIMEOUT_MS", "250"),
            ("DB_IDLE_IN_TRANSACTION_TIMEOUT_MS", "7000"),
            ("DB_KEEPALIVE_S", "7200"),
            ("DB_READ_SESSIONS", "1"),
            ("DB_READ_PIPELINE_DEPTH", "1000"),
            ("DB_COMMIT_BATCH_MAX", "10000"),
            ("DB_COMMIT_LINGER_US", "100000"),
            ("DB_COMMITS_IN_FLIGHT", "64"),
        ])
        .unwrap();
        assert_eq!(settings.write_url(), Some("postgres://app:pw@db/orders"));
        assert_eq!(
            settings.read_url(),
            Some("postgresql://reader@replica/orders?sslmode=require")
        );
        assert_eq!(settings.schema.as_str(), "shop_orders");
        assert_eq!(settings.pool_size, 1000);
        assert_eq!(settings.acquire_timeout, Duration::from_millis(1));
        assert_eq!(settings.statement_timeout, Duration::from_millis(u64::MAX));
        assert_eq!(settings.lock_timeout, Duration::from_millis(250));
        assert_eq!(
            settings.idle_in_transaction_timeout,
            Duration::from_millis(7000)
        );
        assert_eq!(settings.keepalive_idle_s, 7200);
        assert_eq!(
            (settings.read_sessions, settings.read_pipeline_depth),
            (1, 1000)
        );
        assert_eq!(
            settings.batching,
            crate::postgres::Batching {
                max_orders: 10_000,
                linger: Duration::from_micros(100_000),
                in_flight: 64,
            }
        );
    }

    #[test]
    fn a_bad_value_names_its_variable_and_never_the_value() {
        for (name, value) in [
            ("DB_POOL_SIZE", "0"),
            ("DB_POOL_SIZE", "1001"),
            ("DB_POOL_SIZE", "-1"),
            ("DB_POOL_SIZE", "99999999999999999999999999999999999999999"),
            ("DB_KEEPALIVE_S", "7201"),
            ("DB_COMMIT_LINGER_US", "100001"),
            ("DB_COMMITS_IN_FLIGHT", "0"),
            ("DB_COMMIT_BATCH_MAX", "ten"),
            ("DB_ACQUIRE_TIMEOUT_MS", "0"),
            ("DB_ACQUIRE_TIMEOUT_MS", "18446744073709551616"),
            ("DB_STATEMENT_TIMEOUT_MS", "1.5"),
            ("PG_SCHEMA", "Robert'); DROP TABLE events;--"),
            ("DATABASE_URL", "mysql://root:s3cret@db/x"),
            (
                "READ_DATABASE_URL",
                "postgres://u:s3cret@db/x?sslmode=verify-ca",
            ),
        ] {
            let err = from(&[(name, value)]).unwrap_err();
            assert_eq!(err.variable, name, "{value}: {err}");
            assert!(err.to_string().starts_with(name), "{err}");
            assert!(!err.to_string().contains("s3cret"), "{err}");
        }
    }
}
