//! The `BuyOrder` aggregate.

use std::sync::Arc;

use chrono::SubsecRound;
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

use crate::commands::{BuyOrderCommand, PlaceBuyOrder};
use crate::conversion::btc_for;
use crate::error::BuyOrderError;
use crate::events::{BuyOrderEvent, BuyOrderPlaced};
use crate::price::{Clock, PriceError, PriceSource};

/// What the aggregate needs from outside: a price source and a clock (cqrs-es `Services`).
#[derive(Clone)]
pub struct BuyOrderServices {
    /// Where rates come from.
    pub prices: Arc<dyn PriceSource>,
    /// What time it is.
    pub clock: Arc<dyn Clock>,
}

impl BuyOrderServices {
    /// Services with the given price source and the system clock.
    pub fn new(prices: Arc<dyn PriceSource>) -> Self {
        BuyOrderServices {
            prices,
            clock: Arc::new(crate::price::SystemClock),
        }
    }
}

/// One buy order. Its id is [`crate::OrderId::derive`] of the client and idempotence key, so the
/// aggregate is also the idempotency record: placing it again with the same currency and amount
/// changes nothing, with anything else is refused.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BuyOrder {
    placed: Option<BuyOrderPlaced>,
}

impl BuyOrder {
    /// The order, once placed.
    pub fn placed(&self) -> Option<&BuyOrderPlaced> {
        self.placed.as_ref()
    }

    async fn place(
        &mut self,
        command: PlaceBuyOrder,
        services: &BuyOrderServices,
        sink: &EventSink<Self>,
    ) -> Result<(), BuyOrderError> {
        if let Some(existing) = &self.placed {
            return if existing.currency == command.currency && existing.amount == command.amount {
                Ok(()) // a retry: the first answer stands, nothing new happens
            } else {
                Err(BuyOrderError::IdempotencyKeyReused {
                    existing_currency: existing.currency,
                    existing_amount: existing.amount,
                    requested_currency: command.currency,
                    requested_amount: command.amount,
                })
            };
        }
        let quote = services
            .prices
            .quote(command.currency)
            .await
            .map_err(BuyOrderError::PriceUnavailable)?;
        if quote.currency != command.currency {
            return Err(BuyOrderError::PriceUnavailable(PriceError::new(format!(
                "price source answered for {} when asked for {}",
                quote.currency, command.currency
            ))));
        }
        let satoshis = btc_for(command.amount, quote.rate).map_err(|_| {
            BuyOrderError::BtcAmountOutOfRange {
                amount: command.amount,
                currency: command.currency,
                rate: quote.rate.to_string(),
            }
        })?;
        let placed = BuyOrderPlaced {
            order_id: command.order_id(),
            client_id: command.client_id,
            idempotency_key: command.idempotency_key,
            currency: command.currency,
            amount: command.amount,
            rate: quote.rate,
            rate_source: quote.source,
            rate_quoted_at: quote.quoted_at.trunc_subsecs(6),
            satoshis,
            placed_at: services.clock.now(),
        };
        sink.write(BuyOrderEvent::BuyOrderPlaced(placed), self)
            .await;
        Ok(())
    }
}

impl Aggregate for BuyOrder {
    const TYPE: &'static str = "BuyOrder";
    type Command = BuyOrderCommand;
    type Event = BuyOrderEvent;
    type Error = BuyOrderError;
    type Services = BuyOrderServices;

    async fn handle(
        &mut self,
        command: Self::Command,
        services: &Self::Services,
        sink: &EventSink<Self>,
    ) -> Result<(), Self::Error> {
        match command {
            BuyOrderCommand::PlaceBuyOrder(place) => self.place(place, services, sink).await,
        }
    }

    fn apply(&mut self, event: Self::Event) {
        match event {
            BuyOrderEvent::BuyOrderPlaced(placed) => self.placed = Some(placed),
        }
    }
}
