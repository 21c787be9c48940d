//! # order-domain
//!
//! The `BuyOrder` aggregate of buy-orders and the value types it is made of, for
//! [`cqrs-es`](https://docs.rs/cqrs-es) 0.5. Pure domain: no database, broker or HTTP.
//!
//! A client asks to buy bitcoin for an amount of fiat ([`PlaceBuyOrder`]). The aggregate asks its
//! [`PriceSource`] (through the cqrs-es `Services`) for the rate, converts the amount to whole
//! satoshis rounded **up** ([`btc_for`]) and records a [`BuyOrderPlaced`] event. The order id is
//! derived from the client and its idempotence key ([`OrderId::derive`]), so a retried request
//! lands on the same aggregate and replays the first answer.
//!
//! The one rule that spans all orders, "the sum of BTC never exceeds the cap", cannot be checked by
//! one aggregate: [`BtcLedger`] states it as a pure type, and an event store applies it atomically
//! with the commit of the event (see `order-store`).
//!
//! Every value type is parsed once, at the edge, and cannot hold an invalid value afterwards
//! ("parse, don't validate"): a `FiatAmount` is always in range with at most two decimals, a
//! `BtcRate` is always positive, and so on.
//!
//! # Examples
//!
//! Values are parsed once; the conversion is exact and rounds up to a whole satoshi:
//!
//! ```
//! use order_domain::{btc_for, BtcRate, FiatAmount, Satoshis};
//!
//! let amount = FiatAmount::parse("100.00")?;
//! let rate = BtcRate::parse("48478.88")?;
//! // 100 / 48478.88 = 0.00206275392… BTC: 206,275.39 satoshis, rounded up.
//! assert_eq!(btc_for(amount, rate)?, Satoshis::new(206_276));
//! assert!(FiatAmount::parse("1.001").is_err(), "at most two decimals");
//! assert!(FiatAmount::parse("1e9").is_err(), "below 1,000,000,000");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! The cap, as a pure rule: an event store applies it under the same lock as its append
//! (`order-store` does, in memory and in PostgreSQL):
//!
//! ```
//! use order_domain::{BtcCap, BtcLedger, Satoshis};
//!
//! let mut ledger = BtcLedger::new(BtcCap::new(Satoshis::from_btc(1)));
//! ledger.reserve(Satoshis::new(60_000_000))?;
//! let refused = ledger.reserve(Satoshis::new(50_000_000)).unwrap_err();
//! assert_eq!(refused.remaining, Satoshis::new(40_000_000));
//! assert_eq!(ledger.remaining(), Satoshis::new(40_000_000), "nothing taken by the refusal");
//! # Ok::<(), order_domain::CapExceeded>(())
//! ```
//!
//! The aggregate on the stock cqrs-es framework, with cqrs-es's own in-memory store (a store
//! of order-store's adds the cap and the log): the order id derived from the client and its
//! key, a retry of the same key changing nothing:
//!
//! ```
//! use std::sync::Arc;
//!
//! use order_domain::cqrs_es::mem_store::MemStore;
//! use order_domain::cqrs_es::{CqrsFramework, EventStore};
//! use order_domain::*;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = MemStore::<BuyOrder>::default();
//! let prices = FixedSource::uniform(BtcRate::parse("50000")?);
//! let cqrs = CqrsFramework::new(store.clone(), vec![], BuyOrderServices::new(Arc::new(prices)));
//! let order = PlaceBuyOrder {
//!     client_id: ClientId::parse("shop-1")?,
//!     idempotency_key: IdempotencyKey::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301")?,
//!     currency: Currency::USD,
//!     amount: FiatAmount::parse("25.00")?,
//! };
//! let id = order.order_id().to_string();
//! cqrs.execute(&id, order.clone().into()).await?;
//! cqrs.execute(&id, order.into()).await?; // the same key: nothing new
//! let events = store.load_events(&id).await?;
//! assert_eq!(events.len(), 1);
//! let placed = events[0].payload.as_placed().unwrap();
//! assert_eq!(placed.satoshis, Satoshis::new(50_000)); // 25 / 50,000 BTC
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]

/// The cqrs-es this crate is built on, so that users name the same version (`order_domain::cqrs_es`).
pub use cqrs_es;

/// The crates this one's public types are made of, re-exported so that an application names
/// the same versions without adding them itself: `async_trait` (for [`PriceSource`] and
/// cqrs-es's traits), `chrono` ([`Quote::quoted_at`], `placed_at`), `rust_decimal`
/// ([`FiatAmount::to_decimal`]) and `uuid` (the ids). A major version of any of them is a major
/// version of this crate.
pub use async_trait::async_trait;
pub use chrono;
pub use rust_decimal;
pub use uuid;

mod aggregate;
mod commands;
mod conversion;
mod error;
mod events;
pub mod exact_json;
mod fixed_price;
mod ids;
mod ledger;
mod money;
mod price;
#[cfg(feature = "test-support")]
pub mod testing;
mod upcast;
mod version;

pub use aggregate::{BuyOrder, BuyOrderServices};
pub use commands::{BuyOrderCommand, PlaceBuyOrder};
pub use conversion::{btc_for, ConversionError};
pub use error::{BuyOrderError, ValueError};
pub use events::{BuyOrderEvent, BuyOrderPlaced};
pub use fixed_price::FixedSource;
pub use ids::{ClientId, IdempotencyKey, OrderId};
pub use ledger::{BtcCap, BtcLedger, CapExceeded};
pub use money::{decimal_text, BtcRate, Currency, FiatAmount, Satoshis};
pub use price::{Clock, FixedClock, PriceError, PriceSource, Quote, SystemClock};
pub use upcast::{EventReader, UnreadableEvent};
pub use version::{EventVersion, VersionError};
