//! Fixed rates: the price source of tests, examples and docs, and of `PRICE_SOURCE=fixed:…`.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use crate::money::{BtcRate, Currency};
use crate::price::{PriceError, PriceSource, Quote};
use async_trait::async_trait;
use chrono::Utc;

/// Always the same rate per currency: `USD=48478.88,EUR=41191.91,GBP=35330.89`. A currency left
/// out has no price (orders in it are refused as `price_unavailable`).
///
/// The one price source every test, example and doc uses (pure: no I/O, no clock but the
/// quote's time), and what `price-feed` serves for `PRICE_SOURCE=fixed:…`.
///
/// ```
/// # use order_domain::*;
/// let one_rate = FixedSource::uniform(BtcRate::parse("50000").unwrap());
/// let listed: FixedSource = "USD=48478.88,EUR=41191.91".parse().unwrap();
/// assert_eq!(listed.to_string(), "USD=48478.88,EUR=41191.91");
/// # let _ = one_rate;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FixedSource {
    rates: BTreeMap<Currency, BtcRate>,
}

impl FixedSource {
    /// Fixed rates.
    pub fn new(rates: impl IntoIterator<Item = (Currency, BtcRate)>) -> Self {
        FixedSource {
            rates: rates.into_iter().collect(),
        }
    }

    /// The same rate for every currency.
    pub fn uniform(rate: BtcRate) -> Self {
        Self::new(Currency::ALL.map(|currency| (currency, rate)))
    }
}

impl FromStr for FixedSource {
    type Err = String;

    /// `USD=48478.88,EUR=41191.91`: each currency at most once, each rate positive.
    fn from_str(list: &str) -> Result<Self, Self::Err> {
        let mut rates = BTreeMap::new();
        for pair in list.split(',') {
            let (code, rate) = pair
                .split_once('=')
                .ok_or_else(|| format!("{pair:?} is not CURRENCY=RATE"))?;
            let currency: Currency = code.parse().map_err(|e| format!("{code:?}: {e}"))?;
            let rate = BtcRate::parse(rate).map_err(|e| format!("rate for {currency}: {e}"))?;
            if rates.insert(currency, rate).is_some() {
                return Err(format!("{currency} given twice"));
            }
        }
        Ok(FixedSource { rates })
    }
}

impl fmt::Display for FixedSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let pairs: Vec<String> = self.rates.iter().map(|(c, r)| format!("{c}={r}")).collect();
        f.write_str(&pairs.join(","))
    }
}

#[async_trait]
impl PriceSource for FixedSource {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        let rate = self
            .rates
            .get(&currency)
            .ok_or_else(|| PriceError::new(format!("no rate configured for {currency}")))?;
        Ok(Quote {
            currency,
            rate: *rate,
            source: "fixed".into(),
            quoted_at: Utc::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn parses_and_answers() {
        let source: FixedSource = "USD=48478.88,GBP=35330.89".parse().unwrap();
        let quote = source.quote(Currency::USD).await.unwrap();
        assert_eq!(quote.rate.to_string(), "48478.88");
        assert_eq!(quote.source, "fixed");
        assert!(source.quote(Currency::EUR).await.is_err());
        assert_eq!(source.to_string(), "USD=48478.88,GBP=35330.89");
    }

    #[test]
    fn refuses_bad_lists() {
        for bad in [
            "",
            "USD",
            "USD=0",
            "USD=-1",
            "JPY=1",
            "USD=1,USD=2",
            "USD=abc",
        ] {
            assert!(bad.parse::<FixedSource>().is_err(), "{bad:?}");
        }
    }
}
