//! An application of its own that embeds `order-domain` (and, with the `postgres` feature,
//! `order-store`), written from the crates' docs. Its tests are the proof:
//!
//! - `tests/domain_only.rs`: the application's own JSON with `f64` fields works as with a plain
//!   serde_json, `cargo tree` shows no PostgreSQL crate and no `arbitrary_precision`, and orders
//!   are placed in memory with the cap, on the stock cqrs-es `MemStore`.
//! - `tests/postgres.rs` (`--features postgres`): orders on PostgreSQL in a schema of their
//!   own, over TLS, in the same database as this application's own aggregate (an `Invoice` on
//!   postgres-es in `public`).

use order_domain::{BtcRate, Currency, PriceError, PriceSource, Quote};

#[cfg(feature = "postgres")]
pub mod invoice;

/// The application's price: a fixed rate of 100 fiat per BTC in every currency.
pub struct FixedPrice;

#[async_trait::async_trait]
impl PriceSource for FixedPrice {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        Ok(Quote {
            currency,
            rate: BtcRate::parse("100").expect("a valid rate"),
            source: "fixed".into(),
            quoted_at: chrono::Utc::now(),
        })
    }
}
