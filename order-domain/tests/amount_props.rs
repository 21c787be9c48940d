//! `FiatAmount::parse` against the meaning of the text, over many ways of writing one amount.

use order_domain::{FiatAmount, ValueError};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn every_spelling_of_a_valid_amount_parses_to_its_cents(
        cents in 1u64..100_000_000_000, zeros in 0usize..40, lead in 0usize..40, shift in 0u32..6,
    ) {
        let plain = format!("{}{}.{:02}{}", "0".repeat(lead), cents / 100, cents % 100, "0".repeat(zeros));
        prop_assert_eq!(FiatAmount::parse(&plain).unwrap().cents(), cents);
        // the same value written with an exponent: digits × 10^-(2+shift) × 10^shift
        let scientific = format!("{}{}e{}", cents, "0".repeat(shift as usize), -(2 + 2 * shift as i64) + shift as i64);
        prop_assert_eq!(FiatAmount::parse(&scientific).unwrap().cents(), cents);
        prop_assert_eq!(FiatAmount::parse(&FiatAmount::parse(&plain).unwrap().to_string()).unwrap().cents(), cents);
    }

    #[test]
    fn a_third_significant_decimal_is_always_refused(cents in 0u64..100_000_000_000, digit in 1u8..10, zeros in 0usize..30) {
        let text = format!("{}.{:02}{}{}", cents / 100, cents % 100, "0".repeat(zeros), digit);
        prop_assert_eq!(FiatAmount::parse(&text), Err(ValueError::TooManyDecimals(text.clone())));
    }

    #[test]
    fn ten_or_more_integer_digits_are_out_of_range(n in 1_000_000_000u64..u64::MAX, frac in 0u8..100) {
        let text = format!("{n}.{frac:02}");
        prop_assert_eq!(FiatAmount::parse(&text), Err(ValueError::AmountOutOfRange(text.clone())));
    }
}
