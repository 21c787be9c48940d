//! Money value types: [`Currency`], [`FiatAmount`], [`BtcRate`] and [`Satoshis`].
//!
//! None of them touches floating point: amounts are integer cents, BTC is integer satoshis and
//! rates are exact decimals (`rust_decimal`).

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

use crate::error::ValueError;

/// A fiat currency the business trades in. Parsed from its exact ISO code, upper case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "&'static str")]
pub enum Currency {
    /// US dollar.
    USD,
    /// Euro.
    EUR,
    /// Pound sterling.
    GBP,
}

impl Currency {
    /// Every currency, in a stable order (for configuration and documentation).
    pub const ALL: [Currency; 3] = [Currency::USD, Currency::EUR, Currency::GBP];

    /// The ISO 4217 code.
    pub fn code(self) -> &'static str {
        match self {
            Currency::USD => "USD",
            Currency::EUR => "EUR",
            Currency::GBP => "GBP",
        }
    }
}

impl FromStr for Currency {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Currency::ALL
            .into_iter()
            .find(|c| c.code() == s)
            .ok_or_else(|| ValueError::UnknownCurrency(s.to_owned()))
    }
}

impl TryFrom<String> for Currency {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Currency> for &'static str {
    fn from(c: Currency) -> Self {
        c.code()
    }
}

impl fmt::Display for Currency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.code())
    }
}

/// Decimal text split into its parts, after checking its syntax:
/// `-?digits(.digits)?` with an optional exponent (`1.5e3`, as JSON numbers may be written).
/// No spaces, no `+`, no `.5`, no `1.`: ambiguous text is refused, not guessed at.
struct DecimalText<'a> {
    mantissa: &'a str,
    fraction: &'a str,
    exponent: Option<&'a str>,
}

impl<'a> DecimalText<'a> {
    fn split(text: &'a str) -> Option<Self> {
        let (mantissa, exponent) = match text.find(['e', 'E']) {
            Some(i) => (&text[..i], Some(&text[i + 1..])),
            None => (text, None),
        };
        let digits = mantissa.strip_prefix('-').unwrap_or(mantissa);
        let (int, fraction) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
        let fraction_ok = fraction.is_empty() && !digits.contains('.') || all_digits(fraction);
        let exponent_ok =
            exponent.is_none_or(|e| all_digits(e.strip_prefix(['-', '+']).unwrap_or(e)));
        (all_digits(int) && fraction_ok && exponent_ok).then_some(DecimalText {
            mantissa,
            fraction,
            exponent,
        })
    }
}

/// The exponent of decimal text, exactly when it fits an `i64` (leading zeros and all), else
/// only its sign: no amount can have an exponent beyond `i64`'s range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Exponent {
    Exact(i64),
    HugePositive,
    HugeNegative,
}

impl Exponent {
    /// Parses the digits after `e` (already checked to be `[+-]?digits`).
    fn parse(text: &str) -> Self {
        match text.parse::<i64>() {
            Ok(e) => Exponent::Exact(e),
            Err(_) if text.starts_with('-') => Exponent::HugeNegative,
            Err(_) => Exponent::HugePositive,
        }
    }
}

/// A length as an `i128`; lengths are at most `isize::MAX`, so this never saturates in practice.
fn len_i128(s: &str) -> i128 {
    i128::try_from(s.len()).unwrap_or(i128::MAX)
}

/// The decimal text of one raw JSON value: a string's contents, or a number exactly as written
/// (never through `f64`); `None` for anything else. For money read from JSON kept as raw text
/// (serde_json's `RawValue`), so that no global `arbitrary_precision` is needed; the text is then
/// parsed by [`FiatAmount::parse`] or [`BtcRate::parse`], which refuse exponents and excess
/// digits.
///
/// ```
/// use order_domain::decimal_text;
/// assert_eq!(decimal_text(r#""123.45""#).as_deref(), Some("123.45"));
/// assert_eq!(decimal_text("123.45").as_deref(), Some("123.45"));
/// assert_eq!(decimal_text("1e400").as_deref(), Some("1e400"), "kept, for the parser to refuse");
/// assert_eq!(decimal_text("true"), None);
/// ```
pub fn decimal_text(raw_json: &str) -> Option<String> {
    match raw_json.as_bytes().first()? {
        b'"' => serde_json::from_str::<String>(raw_json).ok(),
        b'-' | b'0'..=b'9' => Some(raw_json.to_owned()),
        _ => None,
    }
}

/// Parses decimal text strictly (see [`DecimalText`]). The result is exact or an error, never
/// rounded: past rust_decimal's 28 digits it is an error.
pub(crate) fn parse_decimal(text: &str) -> Result<Decimal, ValueError> {
    let bad = || ValueError::NotADecimal(text.to_owned());
    let parts = DecimalText::split(text).ok_or_else(bad)?;
    let value = Decimal::from_str_exact(parts.mantissa).map_err(|_| bad())?;
    let Some(exp) = parts.exponent else {
        return Ok(value);
    };
    // An exponent moves the decimal point exactly; past 28 digits it is an error, not a rounding.
    let exp: i32 = exp.parse().map_err(|_| bad())?;
    let shift = exp.unsigned_abs();
    if shift > 28 {
        return Err(bad());
    }
    if exp >= 0 {
        value
            .checked_mul(Decimal::from_i128_with_scale(10i128.pow(shift), 0))
            .ok_or_else(bad)
    } else {
        let mut shifted = value;
        shifted
            .set_scale(value.scale() + shift)
            .map_err(|_| bad())?;
        Ok(shifted)
    }
}

/// An amount of fiat: `0 < amount < 1,000,000,000` with at most two decimal places.
///
/// Held as integer cents. Text with more than two significant decimals is refused, never
/// rounded; trailing zeros are not precision (`"1.230"` is `1.23`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct FiatAmount {
    cents: u64,
}

impl FiatAmount {
    /// The exclusive upper bound, in cents (1,000,000,000.00).
    const LIMIT_CENTS: u64 = 1_000_000_000 * 100;

    /// Parses decimal text (a JSON string, or a JSON number's exact text).
    ///
    /// Works on the digits themselves, not a fixed-precision decimal, so that any well-formed
    /// number, however many digits it is written with, gets the right verdict: `1.000…0` (any
    /// number of zeros) is `1.00`, `0.1000…01` has too many decimals, `1e99` is out of range.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let parts =
            DecimalText::split(text).ok_or_else(|| ValueError::NotADecimal(text.to_owned()))?;
        let out_of_range = || ValueError::AmountOutOfRange(text.to_owned());
        let too_precise = || ValueError::TooManyDecimals(text.to_owned());
        let int = parts.mantissa.trim_start_matches('-');
        let int = int.split_once('.').map_or(int, |(i, _)| i);
        let exponent = parts.exponent.map_or(Exponent::Exact(0), Exponent::parse);
        // All digits, and where the decimal point falls among them.
        let digits = format!("{int}{}", parts.fraction);
        let without_trailing = digits.trim_end_matches('0');
        let significant = without_trailing.trim_start_matches('0');
        if significant.is_empty() || parts.mantissa.starts_with('-') {
            return Err(out_of_range());
        }
        // Digit counts are at most isize::MAX and the exponent is an i64 (or beyond it): in
        // i128 none of the sums below can overflow.
        let point = match exponent {
            Exponent::Exact(e) => i128::from(e) + len_i128(int),
            // |exponent| > i64::MAX dwarfs any digit string that fits in memory.
            Exponent::HugePositive => return Err(out_of_range()),
            Exponent::HugeNegative => return Err(too_precise()),
        };
        let places = len_i128(without_trailing) - point;
        if places > 2 {
            return Err(too_precise());
        }
        let leading_zeros = len_i128(without_trailing) - len_i128(significant);
        if point - leading_zeros > 9 {
            return Err(out_of_range()); // ten or more integer digits: at least 1,000,000,000
        }
        // At most 9 integer digits and 2 decimals: at most 11 significant digits, and the
        // scale to cents is at most 10^10 (so every step below is checked, none can fail).
        let scale = u32::try_from(2 - places)
            .ok()
            .and_then(|power| 10u64.checked_pow(power))
            .ok_or_else(out_of_range)?;
        let cents = significant
            .parse::<u64>()
            .ok()
            .and_then(|n| n.checked_mul(scale))
            .ok_or_else(out_of_range)?;
        Self::from_cents(cents).map_err(|_| out_of_range())
    }

    /// The amount a decimal holds exactly (a stored `NUMERIC`, say): in range, and with no more
    /// than two significant decimals; never rounded.
    pub fn from_decimal(value: Decimal) -> Result<Self, ValueError> {
        let refused = || ValueError::AmountOutOfRange(value.to_string());
        let cents = value
            .checked_mul(Decimal::ONE_HUNDRED)
            .ok_or_else(refused)?
            .normalize();
        if cents.scale() > 0 {
            return Err(ValueError::TooManyDecimals(value.to_string()));
        }
        let cents = u64::try_from(cents).map_err(|_| refused())?;
        Self::from_cents(cents).map_err(|_| refused())
    }

    /// Builds an amount from integer cents, checking the range.
    pub fn from_cents(cents: u64) -> Result<Self, ValueError> {
        if cents == 0 || cents >= Self::LIMIT_CENTS {
            return Err(ValueError::AmountOutOfRange(format!("{cents} cents")));
        }
        Ok(FiatAmount { cents })
    }

    /// The amount in integer cents (hundredths of the currency unit).
    pub fn cents(self) -> u64 {
        self.cents
    }

    /// The amount as an exact decimal with two decimal places.
    pub fn to_decimal(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.cents), 2)
    }
}

impl fmt::Display for FiatAmount {
    /// Always two decimals: `123.40`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.cents / 100, self.cents % 100)
    }
}

impl FromStr for FiatAmount {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for FiatAmount {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<FiatAmount> for String {
    fn from(a: FiatAmount) -> Self {
        a.to_string()
    }
}

/// An exchange rate: how much fiat buys 1 BTC. Always positive; keeps the decimals the source
/// gave (`48478.80` stays `48478.80`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct BtcRate(Decimal);

impl BtcRate {
    /// Parses decimal text; zero and negative rates are refused.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        Self::new(parse_decimal(text)?)
    }

    /// Wraps a decimal, refusing zero and negative values.
    pub fn new(value: Decimal) -> Result<Self, ValueError> {
        if value <= Decimal::ZERO {
            return Err(ValueError::NotPositive(value.to_string()));
        }
        Ok(BtcRate(value))
    }

    /// The rate as an exact decimal.
    pub fn as_decimal(self) -> Decimal {
        self.0
    }
}

impl fmt::Display for BtcRate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for BtcRate {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for BtcRate {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<BtcRate> for String {
    fn from(r: BtcRate) -> Self {
        r.to_string()
    }
}

/// An amount of bitcoin as a whole number of satoshis (1 BTC = 100,000,000 satoshis).
///
/// Displayed as BTC with exactly 8 decimals (`0.00254647`); serialized in events as the integer;
/// debugged as both (`Satoshis(254647 = 0.00254647 BTC)`), so a test failure or a log line
/// reads the same amount either way.
#[derive(Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Satoshis(u64);

impl std::fmt::Debug for Satoshis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Satoshis({} = {self} BTC)", self.0)
    }
}

impl Satoshis {
    /// Satoshis in one bitcoin.
    pub const PER_BTC: u64 = 100_000_000;
    /// Zero.
    pub const ZERO: Satoshis = Satoshis(0);

    /// Wraps a count of satoshis.
    pub const fn new(count: u64) -> Self {
        Satoshis(count)
    }

    /// Whole bitcoins as satoshis.
    pub const fn from_btc(btc: u64) -> Self {
        Satoshis(btc * Self::PER_BTC)
    }

    /// Parses a BTC quantity such as `100` or `0.00000001`: positive, at most 8 decimals, at most
    /// 21,000,000 (every bitcoin there will ever be).
    pub fn parse_btc(text: &str) -> Result<Self, ValueError> {
        let bad = || ValueError::BadBtcAmount(text.to_owned());
        let value = parse_decimal(text).map_err(|_| bad())?.normalize();
        if value.scale() > 8 || value <= Decimal::ZERO || value > Decimal::from(21_000_000u64) {
            return Err(bad());
        }
        let count = value * Decimal::from(Self::PER_BTC);
        u64::try_from(count).map(Satoshis).map_err(|_| bad())
    }

    /// The satoshis a BTC decimal holds exactly (a stored `NUMERIC`, say): positive, at most 8
    /// decimals, at most 21,000,000 BTC; never rounded. The same rule as [`Satoshis::parse_btc`]
    /// without the text.
    pub fn from_btc_decimal(value: Decimal) -> Result<Self, ValueError> {
        let bad = || ValueError::BadBtcAmount(value.to_string());
        if value <= Decimal::ZERO || value > Decimal::from(21_000_000u64) {
            return Err(bad());
        }
        let count = value
            .checked_mul(Decimal::from(Self::PER_BTC))
            .ok_or_else(bad)?
            .normalize();
        if count.scale() > 0 {
            return Err(bad());
        }
        u64::try_from(count).map(Satoshis).map_err(|_| bad())
    }

    /// The count of satoshis.
    pub const fn count(self) -> u64 {
        self.0
    }

    /// The amount in BTC as an exact decimal with 8 decimal places.
    pub fn to_btc_decimal(self) -> Decimal {
        Decimal::from_i128_with_scale(i128::from(self.0), 8)
    }

    /// Adds, or `None` on overflow.
    pub fn checked_add(self, other: Satoshis) -> Option<Satoshis> {
        self.0.checked_add(other.0).map(Satoshis)
    }

    /// Subtracts, stopping at zero.
    pub fn saturating_sub(self, other: Satoshis) -> Satoshis {
        Satoshis(self.0.saturating_sub(other.0))
    }
}

impl fmt::Display for Satoshis {
    /// As BTC with 8 decimals: `Satoshis::new(254647)` shows as `0.00254647`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}.{:08}",
            self.0 / Self::PER_BTC,
            self.0 % Self::PER_BTC
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn satoshis_debug_as_count_and_btc() {
        assert_eq!(
            format!("{:?}", Satoshis::new(254_647)),
            "Satoshis(254647 = 0.00254647 BTC)"
        );
        assert_eq!(
            format!("{:?}", Satoshis::new(u64::MAX)),
            "Satoshis(18446744073709551615 = 184467440737.09551615 BTC)"
        );
    }

    #[test]
    fn currency_is_exact() {
        assert_eq!("USD".parse::<Currency>(), Ok(Currency::USD));
        assert_eq!("GBP".parse::<Currency>(), Ok(Currency::GBP));
        for bad in ["usd", "JPY", "", " USD", "USD "] {
            assert!(bad.parse::<Currency>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fiat_amount_accepts_valid_text() {
        assert_eq!(FiatAmount::parse("123.45").unwrap().cents(), 12345);
        assert_eq!(FiatAmount::parse("0.01").unwrap().cents(), 1);
        assert_eq!(FiatAmount::parse("1.230").unwrap().cents(), 123);
        assert_eq!(
            FiatAmount::parse("999999999.99").unwrap().cents(),
            99_999_999_999
        );
        assert_eq!(FiatAmount::parse("1e2").unwrap().cents(), 10000);
        assert_eq!(FiatAmount::parse("1.5E1").unwrap().cents(), 1500);
        assert_eq!(FiatAmount::parse("100").unwrap().to_string(), "100.00");
        assert_eq!(
            FiatAmount::parse("-0").err(),
            Some(ValueError::AmountOutOfRange("-0".into()))
        );
        let long_one = format!("1.{}", "0".repeat(40));
        assert_eq!(FiatAmount::parse(&long_one).unwrap().cents(), 100);
        let long_int = format!("{}1.5", "0".repeat(40));
        assert_eq!(FiatAmount::parse(&long_int).unwrap().cents(), 150);
        assert_eq!(FiatAmount::parse("0.0125e2").unwrap().cents(), 125);
        assert_eq!(FiatAmount::parse("12345e-2").unwrap().cents(), 12345);
        assert_eq!(
            FiatAmount::parse("9.9999999999e8").unwrap().cents(),
            99_999_999_999
        );
    }

    #[test]
    fn fiat_amount_refuses_invalid_text() {
        use ValueError::*;
        type Expect = fn(&ValueError) -> bool;
        let cases: &[(&str, Expect)] = &[
            ("1.234", |e| matches!(e, TooManyDecimals(_))),
            ("0.001", |e| matches!(e, TooManyDecimals(_))),
            ("0", |e| matches!(e, AmountOutOfRange(_))),
            ("0.00", |e| matches!(e, AmountOutOfRange(_))),
            ("-1", |e| matches!(e, AmountOutOfRange(_))),
            ("1000000000", |e| matches!(e, AmountOutOfRange(_))),
            ("1000000000.00", |e| matches!(e, AmountOutOfRange(_))),
            ("1e9", |e| matches!(e, AmountOutOfRange(_))),
            ("99999999999999999999999999999999999", |e| {
                matches!(e, AmountOutOfRange(_))
            }),
            ("0.1000000000000000055511151231257827", |e| {
                matches!(e, TooManyDecimals(_))
            }),
            ("-0.001", |e| matches!(e, AmountOutOfRange(_))),
            ("1e-99999999999999999999999", |e| {
                matches!(e, TooManyDecimals(_))
            }),
            ("1e99999999999999999999999", |e| {
                matches!(e, AmountOutOfRange(_))
            }),
            ("1e99", |e| matches!(e, AmountOutOfRange(_))),
            ("abc", |e| matches!(e, NotADecimal(_))),
            ("", |e| matches!(e, NotADecimal(_))),
            (" 1", |e| matches!(e, NotADecimal(_))),
            ("+1", |e| matches!(e, NotADecimal(_))),
            (".5", |e| matches!(e, NotADecimal(_))),
            ("1.", |e| matches!(e, NotADecimal(_))),
            ("1,5", |e| matches!(e, NotADecimal(_))),
            ("NaN", |e| matches!(e, NotADecimal(_))),
            ("1e", |e| matches!(e, NotADecimal(_))),
            ("1e-3", |e| matches!(e, TooManyDecimals(_))),
        ];
        for (text, expected) in cases {
            let err = FiatAmount::parse(text).expect_err(text);
            assert!(expected(&err), "{text:?} gave {err:?}");
        }
    }

    #[test]
    fn decimals_convert_exactly_or_not_at_all() {
        let d = |text: &str| text.parse::<Decimal>().unwrap();
        assert_eq!(
            FiatAmount::from_decimal(d("123.45")).unwrap().cents(),
            12345
        );
        assert_eq!(
            FiatAmount::from_decimal(d("123.4500")).unwrap().cents(),
            12345
        );
        assert_eq!(FiatAmount::from_decimal(d("0.01")).unwrap().cents(), 1);
        assert_eq!(
            FiatAmount::from_decimal(d("999999999.99")).unwrap().cents(),
            99_999_999_999
        );
        for bad in ["0", "-1", "1000000000", "1.005", "0.001"] {
            assert!(FiatAmount::from_decimal(d(bad)).is_err(), "{bad}");
        }
        assert!(FiatAmount::from_decimal(Decimal::MAX).is_err());
        assert_eq!(
            Satoshis::from_btc_decimal(d("0.00254647")),
            Ok(Satoshis::new(254_647))
        );
        assert_eq!(
            Satoshis::from_btc_decimal(d("100.00000000")),
            Ok(Satoshis::from_btc(100))
        );
        for bad in ["0", "-0.1", "0.000000001", "21000000.00000001"] {
            assert!(Satoshis::from_btc_decimal(d(bad)).is_err(), "{bad}");
        }
        // The same verdicts as the text parsers, on the same values.
        for text in ["1.23", "0.10", "42", "999999999.99"] {
            assert_eq!(FiatAmount::from_decimal(d(text)), FiatAmount::parse(text));
        }
        for text in ["0.00000001", "1.5", "20999999.99999999"] {
            assert_eq!(
                Satoshis::from_btc_decimal(d(text)),
                Satoshis::parse_btc(text)
            );
        }
    }

    #[test]
    fn rate_keeps_source_decimals_and_must_be_positive() {
        assert_eq!(BtcRate::parse("48478.80").unwrap().to_string(), "48478.80");
        assert_eq!(
            BtcRate::parse("0.000000000001").unwrap().to_string(),
            "0.000000000001"
        );
        assert!(BtcRate::parse("0").is_err());
        assert!(BtcRate::parse("-5").is_err());
        assert!(BtcRate::parse("x").is_err());
    }

    #[test]
    fn satoshis_display_and_parse_as_btc() {
        assert_eq!(Satoshis::new(254_647).to_string(), "0.00254647");
        assert_eq!(Satoshis::from_btc(100).to_string(), "100.00000000");
        assert_eq!(Satoshis::parse_btc("100"), Ok(Satoshis::from_btc(100)));
        assert_eq!(Satoshis::parse_btc("0.00000001"), Ok(Satoshis::new(1)));
        assert!(Satoshis::parse_btc("0.000000001").is_err());
        assert!(Satoshis::parse_btc("0").is_err());
        assert!(Satoshis::parse_btc("21000000.00000001").is_err());
    }

    #[test]
    fn serde_round_trips_through_strings() {
        let amount = FiatAmount::parse("10.5").unwrap();
        assert_eq!(serde_json::to_string(&amount).unwrap(), "\"10.50\"");
        assert_eq!(
            serde_json::from_str::<FiatAmount>("\"10.50\"").unwrap(),
            amount
        );
        assert!(serde_json::from_str::<FiatAmount>("\"10.505\"").is_err());
        assert_eq!(serde_json::to_string(&Currency::EUR).unwrap(), "\"EUR\"");
        assert!(serde_json::from_str::<Currency>("\"XXX\"").is_err());
    }
}
