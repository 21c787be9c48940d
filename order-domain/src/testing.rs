//! Orders for tests and examples (feature `test-support`): one place that builds a
//! [`PlaceBuyOrder`] from text, so a test says only what matters to it and takes the rest by
//! struct update: `PlaceBuyOrder { currency: Currency::EUR, ..order("10") }`.

use crate::commands::PlaceBuyOrder;
use crate::ids::{ClientId, IdempotencyKey};
use crate::money::{Currency, FiatAmount};

/// The client of [`order`].
pub const TEST_CLIENT: &str = "test";

/// A USD order of `amount` (`"12.34"`) by [`TEST_CLIENT`], under a fresh idempotency key.
/// Panics on an amount the rules refuse: a test's typo, not a case under test.
pub fn order(amount: &str) -> PlaceBuyOrder {
    order_for(TEST_CLIENT, amount)
}

/// [`order`] by `client`.
pub fn order_for(client: &str, amount: &str) -> PlaceBuyOrder {
    PlaceBuyOrder {
        client_id: ClientId::parse(client).expect("a valid client id"),
        idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
        currency: Currency::USD,
        amount: FiatAmount::parse(amount).expect("a valid amount"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_order_has_its_own_key() {
        let (a, b) = (order("10"), order("10"));
        assert_ne!(a.idempotency_key, b.idempotency_key);
        assert_eq!(a.client_id.as_str(), TEST_CLIENT);
        let eur = PlaceBuyOrder {
            currency: Currency::EUR,
            ..order_for("shop-1", "0.01")
        };
        assert_eq!(
            (eur.client_id.as_str(), eur.currency),
            ("shop-1", Currency::EUR)
        );
    }
}
