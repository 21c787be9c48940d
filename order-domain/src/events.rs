//! Events of the `BuyOrder` aggregate: the facts that are stored, published and projected.

use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, IdempotencyKey, OrderId};
use crate::money::{BtcRate, Currency, FiatAmount, Satoshis};
use crate::version::EventVersion;

/// A buy order was placed: everything needed to show it, audit it, or rebuild any view of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyOrderPlaced {
    /// The order (and aggregate) id.
    pub order_id: OrderId,
    /// Who placed it.
    pub client_id: ClientId,
    /// The key it was placed with.
    pub idempotency_key: IdempotencyKey,
    /// Fiat currency paid.
    pub currency: Currency,
    /// Fiat amount paid.
    pub amount: FiatAmount,
    /// Fiat per 1 BTC at which it was bought.
    pub rate: BtcRate,
    /// Which price source gave the rate.
    pub rate_source: String,
    /// When the source quoted the rate.
    pub rate_quoted_at: DateTime<Utc>,
    /// BTC bought: `amount / rate`, rounded up to a whole satoshi.
    pub satoshis: Satoshis,
    /// When the order was placed (microsecond precision).
    pub placed_at: DateTime<Utc>,
}

/// Every event of the `BuyOrder` aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BuyOrderEvent {
    /// See [`BuyOrderPlaced`].
    BuyOrderPlaced(BuyOrderPlaced),
}

impl BuyOrderEvent {
    /// The version of this aggregate's events' JSON, written as `event_version` with each one
    /// (one version for the enum while it has one variant). Bumped by the rule on
    /// [`EventVersion`]; the fields are described on [`BuyOrderPlaced`].
    pub const VERSION: EventVersion = EventVersion::new(1, 0, 0);

    /// The order placed, if this event places one (the only kind today; more may come, which
    /// is why the enum is `#[non_exhaustive]` and readers match with this).
    pub fn as_placed(&self) -> Option<&BuyOrderPlaced> {
        match self {
            BuyOrderEvent::BuyOrderPlaced(placed) => Some(placed),
        }
    }

    /// As [`BuyOrderEvent::as_placed`], by value.
    pub fn into_placed(self) -> Option<BuyOrderPlaced> {
        match self {
            BuyOrderEvent::BuyOrderPlaced(placed) => Some(placed),
        }
    }

    /// When the order was placed.
    pub fn placed_at(&self) -> DateTime<Utc> {
        match self {
            BuyOrderEvent::BuyOrderPlaced(placed) => placed.placed_at,
        }
    }

    /// Restamps when the order was placed. An event store calls it where it gives the event its
    /// position, so that `placed_at` never goes back along the log, whichever process (and
    /// whichever clock) handled the command.
    pub fn set_placed_at(&mut self, at: DateTime<Utc>) {
        match self {
            BuyOrderEvent::BuyOrderPlaced(placed) => placed.placed_at = at,
        }
    }

    /// The BTC this event takes from the global cap.
    pub fn satoshis(&self) -> Satoshis {
        match self {
            BuyOrderEvent::BuyOrderPlaced(placed) => placed.satoshis,
        }
    }
}

impl DomainEvent for BuyOrderEvent {
    fn event_type(&self) -> String {
        match self {
            BuyOrderEvent::BuyOrderPlaced(_) => "BuyOrderPlaced".to_owned(),
        }
    }

    fn event_version(&self) -> String {
        Self::VERSION.to_string()
    }
}
