//! Settings of the PostgreSQL backend, from the environment (or the matching `--flags`).

use std::time::Duration;

fn parse_millis(s: &str) -> Result<Duration, String> {
    s.parse::<u64>()
        .ok()
        .filter(|ms| *ms > 0)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("{s:?} is not a whole number of milliseconds greater than 0"))
}

use crate::secret::{SecretUrl, SecretUrlParser};

fn check_url(s: &str) -> Result<(), String> {
    let ok = s.starts_with("postgres://") || s.starts_with("postgresql://");
    // tokio-postgres's message names the part it could not read, never the value.
    let parsed = s.parse::<tokio_postgres::Config>();
    match (ok, parsed) {
        (true, Ok(_)) => Ok(()),
        (_, Err(e)) => Err(format!("not a PostgreSQL URL: {e}")),
        (false, _) => Err("must start with postgres:// or postgresql://".into()),
    }
}

fn parse_url() -> SecretUrlParser {
    SecretUrlParser::new(check_url)
}

/// Where the databases are and how many connections to keep.
#[derive(Debug, Clone, clap::Args)]
pub struct PgSettings {
    /// The write store (events, ledger). Unset: the in-memory store (all-in-one only).
    #[arg(long = "database-url", env = "DATABASE_URL", value_name = "DATABASE_URL",
          value_parser = parse_url(), hide_env_values = true)]
    pub database_url: Option<SecretUrl>,
    /// The read table; defaults to DATABASE_URL. May be another database.
    #[arg(long = "read-database-url", env = "READ_DATABASE_URL",
          value_name = "READ_DATABASE_URL", value_parser = parse_url(), hide_env_values = true)]
    pub read_database_url: Option<SecretUrl>,
    /// Connections per pool.
    #[arg(long = "db-pool-size", env = "DB_POOL_SIZE", value_name = "DB_POOL_SIZE",
          default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub pool_size: u32,
    /// How long a request waits for a connection before answering 503.
    #[arg(long = "db-acquire-timeout-ms", env = "DB_ACQUIRE_TIMEOUT_MS",
          value_name = "DB_ACQUIRE_TIMEOUT_MS", default_value = "2000", value_parser = parse_millis)]
    pub acquire_timeout: Duration,
}

impl PgSettings {
    /// The read table's URL: `READ_DATABASE_URL`, else `DATABASE_URL`.
    pub fn read_url(&self) -> Option<&str> {
        self.read_database_url
            .as_deref()
            .or(self.database_url.as_deref())
    }

    /// Settings for one URL (tests, tools).
    pub fn for_url(url: &str) -> Self {
        PgSettings {
            database_url: Some(SecretUrl::new(url)),
            read_database_url: None,
            pool_size: 16,
            acquire_timeout: Duration::from_secs(2),
        }
    }
}
