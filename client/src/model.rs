//! What goes over the wire: the order to place, the orders answered, pages, and the
//! consistency token, each in the domain's own value types (never `f64`: every amount is read
//! from its decimal text).

use chrono::{DateTime, Utc};
use order_domain::{BtcRate, Currency, FiatAmount, IdempotencyKey, OrderId, Satoshis};
use serde::{Deserialize, Deserializer};

/// An order to place: what to pay, and optionally the idempotence key to place it under.
///
/// Without a key, [`crate::Client::place`] makes one (a random UUID) and keeps it for every retry
/// of that call. Give your own when the order may be placed again after your process restarts
/// (store the key with your own record of the purchase first): the same key can never buy twice.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewOrder {
    /// Fiat currency to pay in.
    pub currency: Currency,
    /// Fiat amount to pay (two decimals at most, under 1,000,000,000).
    pub amount: FiatAmount,
    /// The idempotence key; `None` to have one made.
    pub idempotence_key: Option<IdempotencyKey>,
}

impl NewOrder {
    /// An order of `amount` in `currency`, under a key the client makes.
    pub fn new(currency: Currency, amount: FiatAmount) -> Self {
        NewOrder {
            currency,
            amount,
            idempotence_key: None,
        }
    }

    /// The same order under `key`.
    pub fn with_key(mut self, key: IdempotencyKey) -> Self {
        self.idempotence_key = Some(key);
        self
    }
}

/// An order as both APIs show it.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct BuyOrder {
    /// The order's id.
    pub id: OrderId,
    /// When it was placed (UTC, microseconds).
    pub created_at: DateTime<Utc>,
    /// The fiat currency paid.
    pub currency: Currency,
    /// The fiat amount paid.
    pub currency_amount: FiatAmount,
    /// Fiat per 1 BTC at which it was bought.
    pub btc_rate: BtcRate,
    /// BTC bought (rounded up to the satoshi).
    #[serde(deserialize_with = "btc_text")]
    pub btc_amount: Satoshis,
}

/// `"0.00254647"` as satoshis, exactly.
fn btc_text<'de, D: Deserializer<'de>>(d: D) -> Result<Satoshis, D::Error> {
    let text = String::deserialize(d)?;
    Satoshis::parse_btc(&text).map_err(serde::de::Error::custom)
}

/// The answer to a placement.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placed {
    /// The key the order is stored under (yours, or the one made for you): the way to ask for
    /// this exact order again.
    pub idempotence_key: IdempotencyKey,
    /// The order.
    pub order: BuyOrder,
    /// `true` when an earlier request under the same key placed it (this one replayed it).
    pub replayed: bool,
    /// The write's consistency token, if the server gave one (it always does from version 0.1).
    pub token: Option<ConsistencyToken>,
}

/// The body of `PUT /buy_order`'s answer.
#[derive(Deserialize)]
pub(crate) struct PlaceAnswer {
    pub idempotence_key: IdempotencyKey,
    pub buy_order: BuyOrder,
}

/// One page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
pub struct Page {
    /// The orders.
    pub rows: Vec<BuyOrder>,
    /// The last row's id: ask for the page after it. `None` on an empty page.
    pub last_reference: Option<OrderId>,
}

/// "Read after this write": the `Consistency-Token` a placement was answered with. Opaque: the
/// client keeps the newest it has seen and sends it with its reads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ConsistencyToken {
    text: String,
}

impl ConsistencyToken {
    /// A token as a server wrote it.
    pub fn from_header(text: &str) -> Self {
        ConsistencyToken {
            text: text.to_owned(),
        }
    }

    /// The text to send back.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Where in the log it stands, for the tokens of this version (`ct1_` + 16 hex digits);
    /// `None` for any other form (a newer server's), which is then kept as given.
    fn position(&self) -> Option<u64> {
        let hex = self.text.strip_prefix("ct1_")?;
        (hex.len() == 16)
            .then(|| u64::from_str_radix(hex, 16).ok())
            .flatten()
    }

    /// The later of two tokens: the one whose reads include the other's write.
    pub(crate) fn later(self, other: ConsistencyToken) -> ConsistencyToken {
        match (self.position(), other.position()) {
            (Some(a), Some(b)) if a >= b => self,
            (Some(_), Some(_)) => other,
            // A form this client cannot order: the one just received.
            _ => other,
        }
    }
}

impl std::fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_later_token_is_kept() {
        let t = |s: &str| ConsistencyToken::from_header(s);
        let (a, b) = (t("ct1_0000000000000002"), t("ct1_000000000000000a"));
        assert_eq!(a.clone().later(b.clone()), b);
        assert_eq!(b.clone().later(a.clone()), b);
        assert_eq!(
            a.clone().later(t("ct2_x")),
            t("ct2_x"),
            "unknown form: newest"
        );
    }

    #[test]
    fn orders_are_read_exactly() {
        let order: BuyOrder = serde_json::from_str(
            r#"{"id":"3f2504e0-4f89-11d3-9a0c-0305e82c3301","created_at":"2026-11-26T07:40:03.598541Z",
                "currency":"USD","currency_amount":"123.45","btc_rate":"48478.88","btc_amount":"0.00254647"}"#,
        )
        .unwrap();
        assert_eq!(order.btc_amount, Satoshis::new(254_647));
        assert_eq!(order.currency_amount.to_string(), "123.45");
        assert!(serde_json::from_str::<BuyOrder>(
            r#"{"id":"3f2504e0-4f89-11d3-9a0c-0305e82c3301","created_at":"2026-11-26T07:40:03Z",
                "currency":"USD","currency_amount":"123.45","btc_rate":"48478.88","btc_amount":0.1}"#
        )
        .is_err());
    }
}
