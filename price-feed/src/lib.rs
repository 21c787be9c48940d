//! # price-feed
//!
//! Where BTC rates come from, behind the domain's [`order_domain::PriceSource`] trait:
//!
//! - [`CoinbaseSource`]: the market price, `GET {COINBASE_URL}/v2/prices/buy?currency=USD`, with a
//!   timeout and bounded retries with backoff; anything but a positive quote for the currency
//!   asked is an error.
//! - [`FixedSource`]: fixed rates from configuration (`fixed:USD=48478.88,EUR=…`), for tests
//!   and demos.
//! - [`SimulatedSource`]: a seeded random walk around realistic prices, for running the system
//!   with no network. Never a market price, and logged as such.
//! - [`CachedSource`]: a short cache in front of any source, single-flight, so that a burst of
//!   orders costs one upstream call and a failing upstream is not hammered.
//!
//! [`PriceFeedConfig`] reads the choice from the environment and [`PriceFeedConfig::build`]
//! assembles the source.

mod cache;
mod coinbase;
mod config;
mod error;
mod simulated;

pub use cache::CachedSource;
pub use coinbase::CoinbaseSource;
pub use config::{PriceFeedConfig, PriceSourceSpec};
pub use error::FeedError;
/// Fixed rates live with the domain (tests and docs of every crate use them); re-exported
/// here beside the other sources.
pub use order_domain::FixedSource;
pub use simulated::SimulatedSource;

/// Describes price-feed's metrics (`# HELP`) and registers its counters at 0.
pub fn describe_metrics() {
    metrics::describe_counter!("price_fetches_total", "Upstream price calls, by source");
    metrics::describe_counter!(
        "price_feed_errors_total",
        "Failed upstream price calls, by source"
    );
    for name in ["price_fetches_total", "price_feed_errors_total"] {
        metrics::counter!(name, "source" => "coinbase").increment(0);
    }
}
