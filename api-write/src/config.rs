//! Settings of the write API, from environment variables (or the matching `--flags`).

use std::net::SocketAddr;

use order_domain::BtcCap;
use order_store::postgres::PgSettings;
use price_feed::PriceFeedConfig;

/// Settings shared by every process that places orders (`api-write`, the all-in-one).
#[derive(Debug, Clone, clap::Args)]
pub struct WriteSettings {
    /// Address the write API listens on.
    #[arg(
        long = "write-addr",
        env = "WRITE_ADDR",
        value_name = "WRITE_ADDR",
        default_value = "127.0.0.1:8777"
    )]
    pub write_addr: SocketAddr,
    /// The most BTC ever sold over all orders, in BTC (at most 8 decimals). Seeds the cap of a
    /// store that has none yet (default 100); a stored cap changes only with `buy-orders cap set`.
    #[arg(
        long = "max-total-btc",
        env = "MAX_TOTAL_BTC",
        value_name = "MAX_TOTAL_BTC"
    )]
    pub max_total_btc: Option<BtcCap>,
    /// When the store fails during a commit, how long the order's outcome is sought (the same
    /// command retried) before answering 503 `outcome_unknown`. Keep it under
    /// HTTP_REQUEST_TIMEOUT_MS.
    #[arg(long = "order-resolve-timeout-ms", env = "ORDER_RESOLVE_TIMEOUT_MS",
          value_name = "ORDER_RESOLVE_TIMEOUT_MS", default_value = "5000",
          value_parser = settings_kit::parse_millis)]
    pub resolve_within: std::time::Duration,
}

/// Everything `api-write` reads at start-up.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "api-write",
    version,
    about = "buy-orders write API: PUT /buy_order"
)]
pub struct WriteConfig {
    /// Listening address and cap.
    #[command(flatten)]
    pub write: WriteSettings,
    /// Where prices come from.
    #[command(flatten)]
    pub prices: PriceFeedConfig,
    /// The PostgreSQL write store (in memory when DATABASE_URL is unset).
    #[command(flatten)]
    pub db: PgSettings,
    /// API keys and rate limits.
    #[command(flatten)]
    pub access: service_kit::AccessSettings,
    /// RabbitMQ: with AMQP_URL set (and DATABASE_URL), this process runs a relay.
    #[command(flatten)]
    pub bus: event_bus::BusSettings,
    /// HTTP timeouts and limits, and the log format (services: json; the all-in-one: text).
    #[command(flatten)]
    pub service: service_kit::ServiceSettings,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::WriteConfig as clap::CommandFactory>::command().debug_assert();
    }
}
