//! Money in an application's own JSON, read exactly with serde_json, whether the JSON has it as a
//! string (`"12.34"`) or as a number (`12.34`): the number's text as written, never through
//! `f64`, and no `arbitrary_precision` (which would change every other number of the
//! application). For `#[serde(deserialize_with = …)]`.
//!
//! ```
//! use order_domain::{BtcRate, FiatAmount};
//!
//! #[derive(serde::Deserialize)]
//! struct Basket {
//!     #[serde(deserialize_with = "order_domain::exact_json::fiat_amount")]
//!     total: FiatAmount,
//!     #[serde(deserialize_with = "order_domain::exact_json::btc_rate")]
//!     rate: BtcRate,
//!     weight_kg: f64, // the application's own floats stay floats
//! }
//!
//! let basket: Basket =
//!     serde_json::from_str(r#"{"total": 0.10, "rate": "48478.88", "weight_kg": 1.5}"#).unwrap();
//! assert_eq!(basket.total, FiatAmount::parse("0.10").unwrap());
//! assert_eq!(basket.rate, BtcRate::parse("48478.88").unwrap());
//! // Refused as FiatAmount::parse refuses them: three decimals, out of range, not a number.
//! for bad in [r#"0.001"#, r#"1e9"#, r#"-5"#, r#"true"#] {
//!     let json = format!(r#"{{"total": {bad}, "rate": 1, "weight_kg": 0}}"#);
//!     assert!(serde_json::from_str::<Basket>(&json).is_err(), "{bad}");
//! }
//! ```
//!
//! They read serde_json's raw text of the value, so they work with `serde_json` only.

use serde::de::Error as _;
use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

use crate::money::{decimal_text, BtcRate, FiatAmount};

/// The value's decimal text, from a string or a number.
fn text<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    let raw = Box::<RawValue>::deserialize(deserializer)?;
    decimal_text(raw.get()).ok_or_else(|| D::Error::custom("expected a decimal string or number"))
}

/// A [`FiatAmount`] from a JSON string or number, exactly.
pub fn fiat_amount<'de, D: Deserializer<'de>>(deserializer: D) -> Result<FiatAmount, D::Error> {
    FiatAmount::parse(&text(deserializer)?).map_err(D::Error::custom)
}

/// A [`BtcRate`] from a JSON string or number, exactly.
pub fn btc_rate<'de, D: Deserializer<'de>>(deserializer: D) -> Result<BtcRate, D::Error> {
    BtcRate::parse(&text(deserializer)?).map_err(D::Error::custom)
}
