//! A seeded random walk: prices that move like a market, with no network. Not a market price.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use chrono::Utc;
use order_domain::{BtcRate, Currency, PriceError, PriceSource, Quote};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use tokio::sync::Mutex;

/// Starting USD price in cents, and each currency's rate as basis points of the USD one.
const START_USD_CENTS: i64 = 4_847_888;
const FX_BASIS_POINTS: [(Currency, i64); 3] = [
    (Currency::USD, 10_000),
    (Currency::EUR, 8_497),
    (Currency::GBP, 7_288),
];
/// Largest move per step, in basis points (0.25 %).
const MAX_STEP_BP: i64 = 25;

/// A random walk of the BTC price, one step per `step` of wall time, reproducible from its seed.
/// Integer cents and basis points throughout: no floating point near money.
pub struct SimulatedSource {
    started: Instant,
    step: Duration,
    walk: Mutex<Walk>,
}

struct Walk {
    rng: StdRng,
    steps: u64,
    usd_cents: i64,
}

impl SimulatedSource {
    /// A walk from a seed, stepping once a second.
    pub fn new(seed: u64) -> Self {
        Self::with_step(seed, Duration::from_secs(1))
    }

    /// A walk from a seed with a given step interval.
    pub fn with_step(seed: u64, step: Duration) -> Self {
        SimulatedSource {
            started: Instant::now(),
            step: step.max(Duration::from_millis(1)),
            walk: Mutex::new(Walk {
                rng: StdRng::seed_from_u64(seed),
                steps: 0,
                usd_cents: START_USD_CENTS,
            }),
        }
    }
}

impl Walk {
    /// Takes steps up to `due`, kept within half and twice the start price.
    fn advance(&mut self, due: u64) {
        while self.steps < due {
            let bp = self.rng.gen_range(-MAX_STEP_BP..=MAX_STEP_BP);
            let next = self.usd_cents * (10_000 + bp) / 10_000;
            self.usd_cents = next.clamp(START_USD_CENTS / 2, START_USD_CENTS * 2);
            self.steps += 1;
        }
    }

    fn cents(&self, currency: Currency) -> i64 {
        let bp = FX_BASIS_POINTS
            .iter()
            .find(|(c, _)| *c == currency)
            .map_or(10_000, |(_, bp)| *bp);
        self.usd_cents * bp / 10_000
    }
}

#[async_trait]
impl PriceSource for SimulatedSource {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        let due = (self.started.elapsed().as_nanos() / self.step.as_nanos()) as u64;
        let mut walk = self.walk.lock().await;
        walk.advance(due);
        let rate = BtcRate::new(Decimal::new(walk.cents(currency), 2))
            .map_err(|e| PriceError::new(e.to_string()))?;
        Ok(Quote {
            currency,
            rate,
            source: "simulated".into(),
            quoted_at: Utc::now(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_walk_is_reproducible_and_bounded() {
        let walk = |seed| {
            let mut w = Walk {
                rng: StdRng::seed_from_u64(seed),
                steps: 0,
                usd_cents: START_USD_CENTS,
            };
            (0..5000u64)
                .map(|i| {
                    w.advance(i);
                    w.usd_cents
                })
                .collect::<Vec<_>>()
        };
        let a = walk(7);
        assert_eq!(a, walk(7));
        assert_ne!(a, walk(8));
        assert!(a
            .iter()
            .all(|c| (START_USD_CENTS / 2..=START_USD_CENTS * 2).contains(c)));
        assert!(a.windows(2).any(|w| w[0] != w[1]), "it moves");
    }

    #[tokio::test]
    async fn quotes_every_currency_positively() {
        let source = SimulatedSource::with_step(1, Duration::from_millis(1));
        for currency in Currency::ALL {
            let quote = source.quote(currency).await.unwrap();
            assert!(quote.rate.as_decimal() > Decimal::ZERO);
            assert_eq!(quote.source, "simulated");
            assert_eq!(quote.currency, currency);
        }
    }
}
