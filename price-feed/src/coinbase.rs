//! The market price from Coinbase's public API.

use std::time::Duration;

use async_trait::async_trait;
use backon::{ExponentialBuilder, Retryable};
use chrono::Utc;
use order_domain::{BtcRate, Currency, PriceError, PriceSource, Quote};
use serde_json::value::RawValue;

use crate::error::FeedError;

/// The largest body a price answer may have; anything bigger is not a price.
const MAX_BODY_BYTES: usize = 64 * 1024;

/// `GET {base_url}/v2/prices/buy?currency=USD` → `{"data":{"base":"BTC","currency":"USD",
/// "amount":"48478.88"}}`.
///
/// Each attempt has its own timeout; transient failures (timeouts, connection errors, 5xx, 429)
/// are retried up to `retries` times with jittered exponential backoff. The amount is parsed
/// exactly (string or number, never through `f64`).
pub struct CoinbaseSource {
    client: reqwest::Client,
    base_url: String,
    timeout: Duration,
    retries: usize,
}

impl CoinbaseSource {
    /// A source against `base_url` (e.g. `https://api.coinbase.com`).
    pub fn new(base_url: &str, timeout: Duration, retries: usize) -> Result<Self, FeedError> {
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("buy-orders/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| FeedError::Connect(e.to_string()))?;
        Ok(CoinbaseSource {
            client,
            base_url: base_url.trim_end_matches('/').to_owned(),
            timeout,
            retries,
        })
    }

    async fn fetch_once(&self, currency: Currency) -> Result<Quote, FeedError> {
        let url = format!("{}/v2/prices/buy", self.base_url);
        let response = self
            .client
            .get(url)
            .query(&[("currency", currency.code())])
            .send()
            .await
            .map_err(|e| self.transport_error(e))?;
        let status = response.status();
        if !status.is_success() {
            return Err(FeedError::Status(status.as_u16()));
        }
        if response
            .content_length()
            .is_some_and(|len| len > MAX_BODY_BYTES as u64)
        {
            return Err(FeedError::BadBody("body too large".into()));
        }
        let body = response
            .bytes()
            .await
            .map_err(|e| self.transport_error(e))?;
        if body.len() > MAX_BODY_BYTES {
            return Err(FeedError::BadBody("body too large".into()));
        }
        let rate = parse_quote(&body, currency)?;
        Ok(Quote {
            currency,
            rate,
            source: "coinbase".into(),
            quoted_at: Utc::now(),
        })
    }

    fn transport_error(&self, err: reqwest::Error) -> FeedError {
        if err.is_timeout() {
            FeedError::Timeout(self.timeout.as_millis())
        } else {
            FeedError::Connect(err.to_string())
        }
    }
}

/// A Coinbase answer, as far as it is read: `amount` kept as its raw JSON text.
#[derive(serde::Deserialize)]
struct Answer<'a> {
    #[serde(borrow)]
    data: Option<Data<'a>>,
}

#[derive(serde::Deserialize)]
struct Data<'a> {
    base: Option<String>,
    currency: Option<String>,
    #[serde(borrow)]
    amount: Option<&'a RawValue>,
}

/// The rate in a Coinbase answer, if it is a positive BTC quote in `currency`.
fn parse_quote(body: &[u8], currency: Currency) -> Result<BtcRate, FeedError> {
    let bad = |why: &str| FeedError::BadBody(why.to_owned());
    let answer: Answer = serde_json::from_slice(body).map_err(|_| bad("not JSON"))?;
    let data = answer.data.ok_or_else(|| bad("no data"))?;
    if data.base.as_deref() != Some("BTC") {
        return Err(bad("base is not BTC"));
    }
    if data.currency.as_deref() != Some(currency.code()) {
        return Err(bad(&format!("not a quote in {currency}")));
    }
    // A string's text, or a number's exactly as written (never through f64).
    let raw = data
        .amount
        .map(RawValue::get)
        .ok_or_else(|| bad("no amount"))?;
    let amount = order_domain::decimal_text(raw).ok_or_else(|| bad("no amount"))?;
    BtcRate::parse(&amount).map_err(|e| bad(&format!("amount {e}")))
}

#[async_trait]
impl PriceSource for CoinbaseSource {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        let backoff = ExponentialBuilder::default()
            .with_min_delay(Duration::from_millis(50))
            .with_max_delay(Duration::from_millis(500))
            .with_max_times(self.retries)
            .with_jitter();
        (|| self.fetch_once(currency))
            .retry(backoff)
            .when(FeedError::is_transient)
            .notify(
                |err, wait| tracing::warn!(%err, ?wait, %currency, "price fetch failed, retrying"),
            )
            .await
            .inspect(|quote| {
                metrics::counter!("price_fetches_total", "source" => "coinbase").increment(1);
                tracing::info!(%currency, rate = %quote.rate, "price fetched");
            })
            .map_err(|err| {
                metrics::counter!("price_feed_errors_total", "source" => "coinbase").increment(1);
                tracing::warn!(%err, %currency, "no price from coinbase");
                PriceError::from(err)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_exactly_and_refuses_anything_else() {
        let ok = br#"{"data":{"base":"BTC","currency":"USD","amount":"48478.88"}}"#;
        assert_eq!(
            parse_quote(ok, Currency::USD).unwrap().to_string(),
            "48478.88"
        );
        let number = br#"{"data":{"base":"BTC","currency":"EUR","amount":12345678901234567.123}}"#;
        assert_eq!(
            parse_quote(number, Currency::EUR).unwrap().to_string(),
            "12345678901234567.123"
        );
        for bad in [
            &br#"{"data":{"base":"BTC","currency":"EUR","amount":"1"}}"#[..],
            br#"{"data":{"base":"ETH","currency":"USD","amount":"1"}}"#,
            br#"{"data":{"base":"BTC","currency":"USD","amount":"0"}}"#,
            br#"{"data":{"base":"BTC","currency":"USD","amount":"-3"}}"#,
            br#"{"data":{"base":"BTC","currency":"USD","amount":"abc"}}"#,
            br#"{"data":{"base":"BTC","currency":"USD"}}"#,
            br#"{"data":{"base":"BTC","currency":"USD","amount":null}}"#,
            br#"{"errors":[{"id":"not_found"}]}"#,
            b"<html>",
            b"",
        ] {
            assert!(
                parse_quote(bad, Currency::USD).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
