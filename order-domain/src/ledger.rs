//! The global BTC cap: the sum of BTC over all orders never exceeds it.

use std::fmt;
use std::str::FromStr;

use crate::error::ValueError;
use crate::money::Satoshis;

/// The most BTC that may ever be sold, over all orders together (100 BTC by default; the
/// services read it from `MAX_TOTAL_BTC`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BtcCap(Satoshis);

impl BtcCap {
    /// The business's cap: 100 BTC.
    pub const DEFAULT: BtcCap = BtcCap(Satoshis::from_btc(100));

    /// A cap of exactly this many satoshis.
    pub fn new(limit: Satoshis) -> Self {
        BtcCap(limit)
    }

    /// The cap in satoshis.
    pub fn limit(self) -> Satoshis {
        self.0
    }
}

impl Default for BtcCap {
    fn default() -> Self {
        Self::DEFAULT
    }
}

impl FromStr for BtcCap {
    type Err = ValueError;
    /// A BTC quantity: `100`, `0.5`, `0.00000001`.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Satoshis::parse_btc(s).map(BtcCap)
    }
}

impl fmt::Display for BtcCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// An order that does not fit under the cap.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("{requested} BTC requested, {remaining} BTC remain under the cap")]
pub struct CapExceeded {
    /// What the refused order asked for.
    pub requested: Satoshis,
    /// What still fits under the cap.
    pub remaining: Satoshis,
}

/// The BTC sold so far against the cap. Pure: an event store holds one, and calls
/// [`BtcLedger::reserve`] atomically with the commit of each `BuyOrderPlaced`, so that the rule
/// holds however many writers run at once.
///
/// # Recipe: the cap around any in-process cqrs-es event store
///
/// With `order-domain` alone, wrap your event store: hold one lock from the reservation to the
/// end of the commit, reserve on a copy, and keep the copy only if the commit succeeded.
/// (`order-store` does this for you, in memory and on PostgreSQL across processes.)
///
/// ```
/// use std::collections::HashMap;
/// use std::sync::Arc;
///
/// use order_domain::cqrs_es::mem_store::MemStore;
/// use order_domain::cqrs_es::{AggregateError, CqrsFramework, EventEnvelope, EventStore};
/// use order_domain::*;
///
/// /// `MemStore`, with the cap applied under one lock with its commits.
/// struct Capped {
///     inner: MemStore<BuyOrder>,
///     ledger: tokio::sync::Mutex<BtcLedger>,
/// }
///
/// impl EventStore<BuyOrder> for Capped {
///     type AC = <MemStore<BuyOrder> as EventStore<BuyOrder>>::AC;
///
///     async fn load_events(
///         &self,
///         id: &str,
///     ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
///         self.inner.load_events(id).await
///     }
///
///     async fn load_aggregate(&self, id: &str) -> Result<Self::AC, AggregateError<BuyOrderError>> {
///         self.inner.load_aggregate(id).await
///     }
///
///     async fn commit(
///         &self,
///         events: Vec<BuyOrderEvent>,
///         context: Self::AC,
///         metadata: HashMap<String, String>,
///     ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
///         let mut ledger = self.ledger.lock().await; // held until the commit is done
///         let mut after = *ledger;
///         for event in &events {
///             after.reserve(event.satoshis()).map_err(|refused| {
///                 AggregateError::UserError(BuyOrderError::CapExceeded {
///                     requested: refused.requested,
///                     remaining: refused.remaining,
///                 })
///             })?;
///         }
///         let committed = self.inner.commit(events, context, metadata).await?;
///         *ledger = after; // only what was stored counts
///         Ok(committed)
///     }
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = Capped {
///     inner: MemStore::default(),
///     ledger: tokio::sync::Mutex::new(BtcLedger::new(BtcCap::new(Satoshis::from_btc(1)))),
/// };
/// let cqrs = CqrsFramework::new(store, vec![], BuyOrderServices::new(Arc::new(FixedSource::uniform(BtcRate::parse("100")?))));
/// let order = |amount: &str| PlaceBuyOrder {
///     client_id: ClientId::parse("shop-1").unwrap(),
///     idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
///     currency: Currency::USD,
///     amount: FiatAmount::parse(amount).unwrap(),
/// };
/// let first = order("60"); // 0.6 BTC
/// cqrs.execute(&first.order_id().to_string(), first.into()).await?;
/// let second = order("50"); // 0.5 BTC: over the cap
/// let refused = cqrs.execute(&second.order_id().to_string(), second.into()).await;
/// assert!(matches!(
///     refused,
///     Err(AggregateError::UserError(BuyOrderError::CapExceeded { .. }))
/// ));
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BtcLedger {
    cap: BtcCap,
    sold: Satoshis,
}

impl BtcLedger {
    /// A ledger with nothing sold yet.
    pub fn new(cap: BtcCap) -> Self {
        BtcLedger {
            cap,
            sold: Satoshis::ZERO,
        }
    }

    /// Takes `amount` from what remains, or refuses and changes nothing. Reaching the cap
    /// exactly is allowed.
    pub fn reserve(&mut self, amount: Satoshis) -> Result<(), CapExceeded> {
        let refused = CapExceeded {
            requested: amount,
            remaining: self.remaining(),
        };
        match self.sold.checked_add(amount) {
            Some(total) if total <= self.cap.limit() => {
                self.sold = total;
                Ok(())
            }
            _ => Err(refused),
        }
    }

    /// BTC sold so far.
    pub fn sold(&self) -> Satoshis {
        self.sold
    }

    /// BTC that can still be sold.
    pub fn remaining(&self) -> Satoshis {
        self.cap.limit().saturating_sub(self.sold)
    }

    /// The cap this ledger enforces.
    pub fn cap(&self) -> BtcCap {
        self.cap
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reaching_the_cap_exactly_is_allowed_crossing_it_is_not() {
        let mut ledger = BtcLedger::new(BtcCap::new(Satoshis::new(100)));
        ledger.reserve(Satoshis::new(60)).unwrap();
        assert_eq!(
            ledger.reserve(Satoshis::new(41)),
            Err(CapExceeded {
                requested: Satoshis::new(41),
                remaining: Satoshis::new(40)
            })
        );
        assert_eq!(
            ledger.sold(),
            Satoshis::new(60),
            "a refusal changes nothing"
        );
        ledger.reserve(Satoshis::new(40)).unwrap();
        assert_eq!(ledger.remaining(), Satoshis::ZERO);
        assert!(ledger.reserve(Satoshis::new(1)).is_err());
    }

    #[test]
    fn overflow_is_a_refusal() {
        let mut ledger = BtcLedger::new(BtcCap::DEFAULT);
        ledger.reserve(Satoshis::new(1)).unwrap();
        assert!(ledger.reserve(Satoshis::new(u64::MAX)).is_err());
    }

    #[test]
    fn cap_parses_from_btc() {
        assert_eq!("100".parse::<BtcCap>(), Ok(BtcCap::DEFAULT));
        assert!("0".parse::<BtcCap>().is_err());
        assert!("abc".parse::<BtcCap>().is_err());
    }
}
