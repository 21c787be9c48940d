//! Settings of the read API, from environment variables (or the matching `--flags`).

use std::net::SocketAddr;

use order_store::postgres::PgSettings;

/// Settings shared by every process that serves reads (`api-read`, the all-in-one).
#[derive(Debug, Clone, clap::Args)]
pub struct ReadSettings {
    /// Address the read API listens on.
    #[arg(
        long = "read-addr",
        env = "READ_ADDR",
        value_name = "READ_ADDR",
        default_value = "127.0.0.1:8778"
    )]
    pub read_addr: SocketAddr,
    /// How long a read given a consistency token waits for the read table to apply it before
    /// answering 503 `not_yet_consistent` (keep it under the HTTP request deadline).
    #[arg(long = "read-consistency-wait-ms", env = "READ_CONSISTENCY_WAIT_MS",
          value_name = "READ_CONSISTENCY_WAIT_MS", default_value = "2000",
          value_parser = settings_kit::parse_millis)]
    pub consistency_wait: std::time::Duration,
    /// How often the PostgreSQL read table's checkpoint is read while reads wait on a token:
    /// one query per interval for the whole process, however many wait; none while none does.
    #[arg(long = "read-consistency-poll-ms", env = "READ_CONSISTENCY_POLL_MS",
          value_name = "READ_CONSISTENCY_POLL_MS", default_value = "5",
          value_parser = settings_kit::parse_millis)]
    pub consistency_poll: std::time::Duration,
}

/// Everything `api-read` reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "api-read",
    version,
    about = "buy-orders read API: GET /buy_orders"
)]
pub struct ReadConfig {
    /// Listening address.
    #[command(flatten)]
    pub read: ReadSettings,
    /// API keys and rate limits.
    #[command(flatten)]
    pub access: service_kit::AccessSettings,
    /// The PostgreSQL read table (READ_DATABASE_URL, else DATABASE_URL); API clients live in
    /// DATABASE_URL.
    #[command(flatten)]
    pub db: PgSettings,
    /// HTTP timeouts and limits, and the log format (services: json; the all-in-one: text).
    #[command(flatten)]
    pub service: service_kit::ServiceSettings,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::ReadConfig as clap::CommandFactory>::command().debug_assert();
    }
}
