//! A short, single-flight cache in front of a price source.

use std::time::{Duration, Instant};

use async_trait::async_trait;
use order_domain::{Currency, PriceError, PriceSource, Quote};
use tokio::sync::Mutex;

/// Keeps each currency's quote for `ttl` and lets one caller at a time fetch a new one.
///
/// Callers queue on a per-currency lock: the first fetches, the rest find the fresh quote when
/// they get the lock. If the fetch failed, everyone who was already waiting for it gets the same
/// error instead of fetching again in turn, so 1,000 concurrent orders cost one upstream call
/// either way. A quote older than `ttl` is never served: no fresh price, no order.
pub struct CachedSource<S> {
    inner: S,
    ttl: Duration,
    slots: [Mutex<Slot>; Currency::ALL.len()],
}

#[derive(Default)]
struct Slot {
    fresh: Option<(Quote, Instant)>,
    failed: Option<(PriceError, Instant)>,
}

impl<S: PriceSource> CachedSource<S> {
    /// Caches `inner` for `ttl`.
    pub fn new(inner: S, ttl: Duration) -> Self {
        CachedSource {
            inner,
            ttl,
            slots: Default::default(),
        }
    }

    /// Each currency's own slot. An exhaustive match, so a new currency cannot silently share
    /// another's quote (it would not compile until it has a slot).
    fn slot(&self, currency: Currency) -> &Mutex<Slot> {
        let index = match currency {
            Currency::USD => 0,
            Currency::EUR => 1,
            Currency::GBP => 2,
        };
        &self.slots[index]
    }
}

#[async_trait]
impl<S: PriceSource> PriceSource for CachedSource<S> {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        let asked = Instant::now();
        let mut slot = self.slot(currency).lock().await;
        if let Some((quote, at)) = &slot.fresh {
            if at.elapsed() < self.ttl {
                return Ok(quote.clone());
            }
        }
        if let Some((err, at)) = &slot.failed {
            if *at >= asked {
                return Err(err.clone()); // the fetch we waited for failed: share its answer
            }
        }
        match self.inner.quote(currency).await {
            Ok(quote) => {
                slot.fresh = Some((quote.clone(), Instant::now()));
                slot.failed = None;
                Ok(quote)
            }
            Err(err) => {
                slot.failed = Some((err.clone(), Instant::now()));
                Err(err)
            }
        }
    }
}
