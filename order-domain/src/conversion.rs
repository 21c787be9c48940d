//! Fiat to BTC: `satoshis = ceil(amount / rate × 10^8)`, exact, in integers.

use crate::money::{BtcRate, FiatAmount, Satoshis};

/// The result does not fit in a `u64` count of satoshis (a tiny rate and a huge amount).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the BTC amount does not fit in 64 bits of satoshis")]
pub struct ConversionError;

/// How many satoshis `amount` buys at `rate`, rounded **up** to the next whole satoshi.
///
/// Rounding up means the client never receives less than the amount paid for, and any amount
/// greater than zero gives at least one satoshi. The arithmetic is exact: with the amount as
/// integer cents `c` and the rate as `m / 10^s` (its decimal mantissa and scale),
/// `amount / rate × 10^8 = c × 10^(6+s) / m`, computed in `u128`, by long division when the
/// numerator would not fit.
pub fn btc_for(amount: FiatAmount, rate: BtcRate) -> Result<Satoshis, ConversionError> {
    let rate = rate.as_decimal();
    // BtcRate is positive, so the mantissa is too; it fits in 96 bits.
    let divisor = rate.mantissa().unsigned_abs();
    let shift = 6 + rate.scale();
    let cents = u128::from(amount.cents());
    let quotient = match 10u128.checked_pow(shift).and_then(|p| cents.checked_mul(p)) {
        Some(numerator) => ceil_div(numerator, divisor),
        None => long_division_ceil(cents, shift, divisor).ok_or(ConversionError)?,
    };
    u64::try_from(quotient)
        .map(Satoshis::new)
        .map_err(|_| ConversionError)
}

fn ceil_div(numerator: u128, divisor: u128) -> u128 {
    numerator / divisor + u128::from(!numerator.is_multiple_of(divisor))
}

/// `ceil(value × 10^shift / divisor)` one decimal digit at a time, so that the running remainder
/// (below `divisor < 2^96`) times ten always fits in a `u128`. `None` if the quotient overflows.
fn long_division_ceil(value: u128, shift: u32, divisor: u128) -> Option<u128> {
    let mut quotient = value / divisor;
    let mut remainder = value % divisor;
    for _ in 0..shift {
        remainder *= 10;
        quotient = quotient.checked_mul(10)?.checked_add(remainder / divisor)?;
        remainder %= divisor;
    }
    quotient.checked_add(u128::from(remainder != 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sats(amount: &str, rate: &str) -> Result<Satoshis, ConversionError> {
        btc_for(
            FiatAmount::parse(amount).unwrap(),
            BtcRate::parse(rate).unwrap(),
        )
    }

    #[test]
    fn worked_example_from_the_api() {
        // 123.45 / 48478.88 = 0.002546468... → rounded up to 0.00254647
        assert_eq!(
            sats("123.45", "48478.88").unwrap().to_string(),
            "0.00254647"
        );
    }

    #[test]
    fn exact_division_is_not_rounded() {
        assert_eq!(sats("50000", "50000").unwrap(), Satoshis::from_btc(1));
        assert_eq!(sats("0.01", "1").unwrap(), Satoshis::new(1_000_000));
    }

    #[test]
    fn smallest_amount_at_huge_rate_gives_one_satoshi() {
        assert_eq!(
            sats("0.01", "999999999999999999999999").unwrap(),
            Satoshis::new(1)
        );
    }

    #[test]
    fn rates_with_many_decimals_use_long_division() {
        // scale 28: 10^(6+28) × cents overflows u128 for big amounts.
        let r = sats("999999999.99", "1.0000000000000000000000000001").unwrap();
        assert_eq!(r, Satoshis::new(99_999_999_999_000_000));
        assert_eq!(
            sats("1", "3.00000000000000000000").unwrap(),
            Satoshis::new(33_333_334)
        );
    }

    #[test]
    fn largest_amount_at_tiny_rate_overflows_cleanly() {
        assert_eq!(sats("999999999.99", "0.00000001"), Err(ConversionError));
        // still representable:
        assert_eq!(
            sats("999999999.99", "10000").unwrap(),
            Satoshis::new(9_999_999_999_900)
        );
    }
}
