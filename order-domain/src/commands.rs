//! Commands the `BuyOrder` aggregate handles.

use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, IdempotencyKey, OrderId};
use crate::money::{Currency, FiatAmount};

/// Buy bitcoin for `amount` of `currency` at the current rate.
///
/// Every field is already a parsed value type, so a command cannot carry invalid input.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceBuyOrder {
    /// Who places the order; scopes the idempotence key.
    pub client_id: ClientId,
    /// The client's key for this request; retries reuse it.
    pub idempotency_key: IdempotencyKey,
    /// The fiat currency paid.
    pub currency: Currency,
    /// The fiat amount paid.
    pub amount: FiatAmount,
}

impl PlaceBuyOrder {
    /// The id of the aggregate this command must be sent to.
    pub fn order_id(&self) -> OrderId {
        OrderId::derive(&self.client_id, &self.idempotency_key)
    }
}

/// Every command of the `BuyOrder` aggregate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum BuyOrderCommand {
    /// See [`PlaceBuyOrder`].
    PlaceBuyOrder(PlaceBuyOrder),
}

impl From<PlaceBuyOrder> for BuyOrderCommand {
    fn from(command: PlaceBuyOrder) -> Self {
        BuyOrderCommand::PlaceBuyOrder(command)
    }
}
