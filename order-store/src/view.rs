//! What the read side serves: an order as the APIs show it, and pages of them.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, SecondsFormat, Utc};
use order_domain::{BtcRate, BuyOrderPlaced, ClientId, Currency, FiatAmount, OrderId, Satoshis};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An order as both APIs show it (`buy_order` in the write answer, a row of a page). One type for
/// both, so the write answer and the read table cannot drift apart. Decimals are JSON strings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = BuyOrder))]
pub struct OrderView {
    /// The order id.
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = Uuid))]
    pub id: OrderId,
    /// When the order was placed, RFC 3339 in UTC with microseconds.
    #[serde(with = "rfc3339_micros")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, format = DateTime, example = "2026-11-26T07:40:03.598541Z"))]
    pub created_at: DateTime<Utc>,
    /// Fiat currency paid.
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = "^(USD|EUR|GBP)$", example = "USD"))]
    pub currency: Currency,
    /// Fiat amount paid, two decimals (`"123.45"`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = r"^[0-9]{1,9}\.[0-9]{2}$", example = "123.45"))]
    pub currency_amount: FiatAmount,
    /// Fiat per 1 BTC, as the price source gave it (`"48478.88"`).
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = r"^[0-9]+(\.[0-9]+)?$", example = "48478.88"))]
    pub btc_rate: BtcRate,
    /// BTC bought, eight decimals (`"0.00254647"`).
    #[serde(with = "btc_string")]
    #[cfg_attr(feature = "openapi", schema(value_type = String, pattern = r"^[0-9]+\.[0-9]{8}$", example = "0.00254647"))]
    pub btc_amount: Satoshis,
}

impl From<&BuyOrderPlaced> for OrderView {
    fn from(placed: &BuyOrderPlaced) -> Self {
        OrderView {
            id: placed.order_id,
            created_at: placed.placed_at,
            currency: placed.currency,
            currency_amount: placed.amount,
            btc_rate: placed.rate,
            btc_amount: placed.satoshis,
        }
    }
}

mod rfc3339_micros {
    use super::*;

    pub fn serialize<S: Serializer>(at: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&at.to_rfc3339_opts(SecondsFormat::Micros, true))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<DateTime<Utc>, D::Error> {
        let text = String::deserialize(d)?;
        DateTime::parse_from_rfc3339(&text)
            .map(|at| at.with_timezone(&Utc))
            .map_err(serde::de::Error::custom)
    }
}

mod btc_string {
    use super::*;

    pub fn serialize<S: Serializer>(sats: &Satoshis, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(sats)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Satoshis, D::Error> {
        let text = String::deserialize(d)?;
        Satoshis::parse_btc(&text).map_err(serde::de::Error::custom)
    }
}

/// How many rows a page holds: 1 to 100, 10 unless asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageSize(u16);

impl PageSize {
    /// The largest page.
    pub const MAX: u16 = 100;
    /// The page size when none is asked for.
    pub const DEFAULT: PageSize = PageSize(10);

    /// A page size in `1..=100`, or `None`.
    pub fn new(size: u16) -> Option<Self> {
        (1..=Self::MAX).contains(&size).then_some(PageSize(size))
    }

    /// The number of rows.
    pub fn get(self) -> usize {
        usize::from(self.0)
    }
}

impl Default for PageSize {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The text is not a whole number from 1 to 100.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("must be a whole number from 1 to {max} (got {0:?})", max = PageSize::MAX)]
pub struct BadPageSize(pub String);

impl FromStr for PageSize {
    type Err = BadPageSize;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<u16>()
            .ok()
            .filter(|_| s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(PageSize::new)
            .ok_or_else(|| BadPageSize(s.to_owned()))
    }
}

impl fmt::Display for PageSize {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

/// Which page to read: the rows older than `after` (the previous page's last row), or the
/// newest rows when `after` is `None`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct PageRequest {
    /// The id of the previous page's last row.
    pub after: Option<OrderId>,
    /// How many rows.
    pub size: PageSize,
}

/// Whose orders a reader may see.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scope {
    /// Every client's (an admin, or authentication off).
    All,
    /// One client's only: another client's order is as absent as one that does not exist.
    Client(ClientId),
}

impl Scope {
    /// Whether an order of `owner` is visible in this scope.
    pub fn sees(&self, owner: &ClientId) -> bool {
        match self {
            Scope::All => true,
            Scope::Client(client) => client == owner,
        }
    }
}

/// A page of orders, newest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(feature = "openapi", schema(as = BuyOrderPage))]
pub struct Page {
    /// The orders.
    pub rows: Vec<OrderView>,
    /// The id of the last row, to pass as `last_reference` for the next page; `None` when empty.
    #[cfg_attr(feature = "openapi", schema(value_type = Option<String>, format = Uuid))]
    pub last_reference: Option<OrderId>,
}

impl Page {
    /// A page of these rows, its reference taken from the last one.
    pub fn new(rows: Vec<OrderView>) -> Self {
        let last_reference = rows.last().map(|row| row.id);
        Page {
            rows,
            last_reference,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_size_is_one_to_one_hundred() {
        assert_eq!("1".parse::<PageSize>().unwrap().get(), 1);
        assert_eq!("100".parse::<PageSize>().unwrap().get(), 100);
        for bad in ["0", "101", "-1", "+5", "ten", "", "1.0", "65536"] {
            assert!(bad.parse::<PageSize>().is_err(), "{bad:?}");
        }
    }
}
