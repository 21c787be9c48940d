//! Where the aggregate gets its rate and its clock: traits the embedding application implements.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};

use crate::money::{BtcRate, Currency};

/// A rate for one currency, with where and when it was quoted (recorded in the event).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quote {
    /// The currency the rate is in.
    pub currency: Currency,
    /// Fiat per 1 BTC.
    pub rate: BtcRate,
    /// Which source gave it (`coinbase`, `fixed`, `simulated`…).
    pub source: String,
    /// When the source gave it.
    pub quoted_at: DateTime<Utc>,
}

/// No fresh price could be had. The reason is for logs and the error message; callers treat
/// every reason alike: retry later.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("no fresh price: {reason}")]
pub struct PriceError {
    /// What went wrong, e.g. `upstream answered 503`.
    pub reason: String,
}

impl PriceError {
    /// A price error with a reason.
    pub fn new(reason: impl Into<String>) -> Self {
        PriceError {
            reason: reason.into(),
        }
    }
}

/// A source of BTC rates. Implemented in `price-feed` (Coinbase, fixed, simulated), or by an
/// embedding application.
#[async_trait]
pub trait PriceSource: Send + Sync {
    /// A fresh rate for `currency`, or an error: never a stale or made-up one.
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError>;
}

#[async_trait]
impl<T: PriceSource + ?Sized> PriceSource for Arc<T> {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        (**self).quote(currency).await
    }
}

/// The time of day, injected so that tests can fix it.
pub trait Clock: Send + Sync {
    /// Now, truncated to microseconds (what PostgreSQL keeps), so that a timestamp reads back
    /// from any store exactly as it went in.
    fn now(&self) -> DateTime<Utc>;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now().trunc_subsecs(6)
    }
}

/// A clock that always says the same time (tests, examples).
#[derive(Debug, Clone, Copy)]
pub struct FixedClock(pub DateTime<Utc>);

impl Clock for FixedClock {
    fn now(&self) -> DateTime<Utc> {
        self.0.trunc_subsecs(6)
    }
}
