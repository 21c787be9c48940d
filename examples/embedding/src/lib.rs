//! An application of its own that embeds `order-domain` (and, with the `postgres` feature,
//! `order-store`), written from the crates' docs. Its tests are the proof:
//!
//! - `tests/domain_only.rs`: the application's own JSON with `f64` fields works as with a plain
//!   serde_json, `cargo tree` shows no PostgreSQL crate and no `arbitrary_precision`, and orders
//!   are placed in memory with the cap, on the stock cqrs-es `MemStore`.
//! - `tests/postgres.rs` (`--features postgres`): the order store in memory first; then on
//!   PostgreSQL in a schema of its own, over TLS, in the same database as this application's
//!   own aggregate (an `Invoice` on postgres-es in `public`), its settings from the
//!   environment; this application's own projection ([`sales`]) kept current and read back;
//!   its imported history read through an upcaster registered once; and the store's errors
//!   matched: a unique violation, a configuration mistake, an outage.

use order_domain::{BtcRate, Currency, PriceError, PriceSource, Quote};

#[cfg(feature = "postgres")]
pub mod invoice;
#[cfg(feature = "postgres")]
pub mod sales;

/// The application's price: a fixed rate of 100 fiat per BTC in every currency.
pub struct FixedPrice;

#[order_domain::async_trait]
impl PriceSource for FixedPrice {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        Ok(Quote {
            currency,
            rate: BtcRate::parse("100").expect("a valid rate"),
            source: "fixed".into(),
            quoted_at: order_domain::chrono::Utc::now(),
        })
    }
}
