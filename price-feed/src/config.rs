//! Choosing and assembling the price source from the environment.

use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use order_domain::PriceSource;
use settings_kit::parse_millis;

use crate::cache::CachedSource;
use crate::coinbase::CoinbaseSource;
use crate::error::FeedError;
use crate::simulated::SimulatedSource;
use order_domain::FixedSource;

/// Which price source to use (`PRICE_SOURCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PriceSourceSpec {
    /// `simulated`: a seeded random walk, no network.
    Simulated,
    /// `fixed:USD=48478.88,EUR=41191.91,GBP=35330.89`.
    Fixed(FixedSource),
    /// `coinbase`: the market price from `COINBASE_URL`.
    Coinbase,
}

impl FromStr for PriceSourceSpec {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "simulated" => Ok(PriceSourceSpec::Simulated),
            "coinbase" => Ok(PriceSourceSpec::Coinbase),
            _ => match s.strip_prefix("fixed:") {
                Some(list) => list.parse().map(PriceSourceSpec::Fixed),
                None => Err(format!(
                    "{s:?} is not one of simulated, coinbase, fixed:USD=…,EUR=…,GBP=…"
                )),
            },
        }
    }
}

impl fmt::Display for PriceSourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PriceSourceSpec::Simulated => f.write_str("simulated"),
            PriceSourceSpec::Coinbase => f.write_str("coinbase"),
            PriceSourceSpec::Fixed(rates) => write!(f, "fixed:{rates}"),
        }
    }
}

fn parse_url(s: &str) -> Result<String, String> {
    let ok =
        (s.starts_with("http://") || s.starts_with("https://")) && reqwest::Url::parse(s).is_ok();
    ok.then(|| s.to_owned())
        .ok_or_else(|| format!("{s:?} is not an http(s) URL"))
}

/// The price feed's settings, read from the environment (or the matching `--flags`).
#[derive(Debug, Clone, clap::Args)]
pub struct PriceFeedConfig {
    /// Price source: `simulated`, `coinbase` or `fixed:USD=…,EUR=…,GBP=…`. Each binary has its
    /// own default: simulated for the all-in-one, coinbase for the services.
    #[arg(
        long = "price-source",
        env = "PRICE_SOURCE",
        value_name = "PRICE_SOURCE"
    )]
    pub source: Option<PriceSourceSpec>,
    /// Base URL of the Coinbase API.
    #[arg(long, env = "COINBASE_URL", value_name = "COINBASE_URL",
          default_value = "https://api.coinbase.com", value_parser = parse_url)]
    pub coinbase_url: String,
    /// How long a quote is reused, in milliseconds.
    #[arg(long = "price-ttl-ms", env = "PRICE_TTL_MS", value_name = "PRICE_TTL_MS",
          default_value = "2000", value_parser = parse_millis)]
    pub ttl: Duration,
    /// Timeout of one upstream attempt, in milliseconds.
    #[arg(long = "price-timeout-ms", env = "PRICE_TIMEOUT_MS", value_name = "PRICE_TIMEOUT_MS",
          default_value = "2000", value_parser = parse_millis)]
    pub timeout: Duration,
    /// Retries after a transient upstream failure.
    #[arg(long = "price-retries", env = "PRICE_RETRIES", value_name = "PRICE_RETRIES",
          default_value_t = 2, value_parser = clap::value_parser!(u8).range(0..=10))]
    pub retries: u8,
    /// Seed of the simulated random walk.
    #[arg(
        long = "price-seed",
        env = "PRICE_SEED",
        value_name = "PRICE_SEED",
        default_value_t = 42
    )]
    pub seed: u64,
}

impl PriceFeedConfig {
    /// The source chosen, or `default` when `PRICE_SOURCE` is not set.
    pub fn spec(&self, default: PriceSourceSpec) -> PriceSourceSpec {
        self.source.clone().unwrap_or(default)
    }

    /// Assembles the source: network and simulated sources behind the cache.
    pub fn build(&self, spec: &PriceSourceSpec) -> Result<Arc<dyn PriceSource>, FeedError> {
        Ok(match spec {
            PriceSourceSpec::Fixed(rates) => Arc::new(rates.clone()),
            PriceSourceSpec::Simulated => {
                tracing::warn!(
                    seed = self.seed,
                    "PRICE_SOURCE=simulated: rates are a random walk, NOT market prices"
                );
                Arc::new(CachedSource::new(SimulatedSource::new(self.seed), self.ttl))
            }
            PriceSourceSpec::Coinbase => {
                let source = CoinbaseSource::new(
                    &self.coinbase_url,
                    self.timeout,
                    usize::from(self.retries),
                )?;
                tracing::info!(url = %self.coinbase_url, ttl_ms = self.ttl.as_millis() as u64,
                               "market prices from coinbase");
                Arc::new(CachedSource::new(source, self.ttl))
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!("simulated".parse(), Ok(PriceSourceSpec::Simulated));
        assert_eq!("coinbase".parse(), Ok(PriceSourceSpec::Coinbase));
        let fixed: PriceSourceSpec = "fixed:USD=1.5".parse().unwrap();
        assert_eq!(fixed.to_string(), "fixed:USD=1.5");
        assert!("fixed:".parse::<PriceSourceSpec>().is_err());
        assert!("kraken".parse::<PriceSourceSpec>().is_err());
    }

    #[test]
    fn settings_parse_strictly() {
        assert!(parse_url("ftp://x").is_err());
        assert!(parse_url("http://127.0.0.1:9").is_ok());
    }
}
