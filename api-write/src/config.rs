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
    /// The most BTC ever sold over all orders, in BTC (at most 8 decimals).
    #[arg(
        long = "max-total-btc",
        env = "MAX_TOTAL_BTC",
        value_name = "MAX_TOTAL_BTC",
        default_value = "100"
    )]
    pub max_total_btc: BtcCap,
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
    /// RabbitMQ: with AMQP_URL set (and DATABASE_URL), this process runs a relay.
    #[command(flatten)]
    pub bus: event_bus::BusSettings,
    /// Log format.
    #[command(flatten)]
    pub log: service_kit::LogSettings,
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_command_line_is_consistent() {
        <super::WriteConfig as clap::CommandFactory>::command().debug_assert();
    }
}
