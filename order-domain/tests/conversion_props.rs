//! `btc_for` against an independent exact rational computation (num-rational over big integers).

use num_bigint::BigInt;
use num_rational::BigRational;
use num_traits::{One, Zero};
use order_domain::{btc_for, BtcRate, FiatAmount, Satoshis};
use proptest::prelude::*;
use rust_decimal::Decimal;

/// ceil(amount / rate × 10^8) in big rationals, or `None` if it does not fit in a u64.
fn reference(amount_cents: u64, rate_mantissa: u128, rate_scale: u32) -> Option<u64> {
    let amount = BigRational::new(BigInt::from(amount_cents), BigInt::from(100));
    let rate = BigRational::new(
        BigInt::from(rate_mantissa),
        BigInt::from(10u32).pow(rate_scale),
    );
    let btc = amount / rate * BigRational::from_integer(BigInt::from(100_000_000u64));
    let ceil = btc.ceil().to_integer();
    assert!(ceil > BigInt::zero() || btc.is_zero());
    u64::try_from(ceil).ok()
}

fn rate(mantissa: u128, scale: u32) -> BtcRate {
    BtcRate::new(Decimal::from_i128_with_scale(mantissa as i128, scale)).unwrap()
}

fn check(cents: u64, mantissa: u128, scale: u32) {
    let got = btc_for(
        FiatAmount::from_cents(cents).unwrap(),
        rate(mantissa, scale),
    );
    let want = reference(cents, mantissa, scale);
    match (got, want) {
        (Ok(sats), Some(want)) => assert_eq!(sats, Satoshis::new(want)),
        (Err(_), None) => {}
        (got, want) => panic!("cents={cents} rate={mantissa}e-{scale}: got {got:?}, want {want:?}"),
    }
}

const MAX_CENTS: u64 = 99_999_999_999;
const MAX_MANTISSA: u128 = (1u128 << 96) - 1;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(4000))]

    #[test]
    fn realistic_rates(cents in 1..=MAX_CENTS, rate_cents in 1u128..=10_000_000_000) {
        check(cents, rate_cents, 2);
    }

    #[test]
    fn any_rate_decimal_can_hold(cents in 1..=MAX_CENTS, mantissa in 1..=MAX_MANTISSA, scale in 0u32..=28) {
        check(cents, mantissa, scale);
    }

    #[test]
    fn rates_with_eight_or_more_decimals(cents in 1..=MAX_CENTS, mantissa in 1u128..=10u128.pow(20), scale in 8u32..=28) {
        check(cents, mantissa, scale);
    }

    #[test]
    fn result_is_never_less_than_paid_for(cents in 1..=MAX_CENTS, rate_cents in 1u128..=10_000_000_000) {
        let sats = btc_for(FiatAmount::from_cents(cents).unwrap(), rate(rate_cents, 2)).unwrap();
        // sats × rate ≥ amount, and (sats − 1) × rate < amount: the tightest round-up.
        let r = BigInt::from(rate_cents);
        let paid = BigInt::from(cents) * BigInt::from(100_000_000u64);
        prop_assert!(BigInt::from(sats.count()) * &r >= paid);
        prop_assert!((BigInt::from(sats.count()) - BigInt::one()) * &r < paid);
    }
}

#[test]
fn edges() {
    // exact division
    check(5_000_000, 5_000_000, 2);
    check(100, 1, 0);
    // smallest amount at a huge rate: at least one satoshi
    check(1, MAX_MANTISSA, 0);
    assert_eq!(
        btc_for(FiatAmount::from_cents(1).unwrap(), rate(MAX_MANTISSA, 0)).unwrap(),
        Satoshis::new(1)
    );
    // largest amount at a tiny rate: overflow reported, both ways
    check(MAX_CENTS, 1, 28);
    check(MAX_CENTS, 1, 8);
    check(MAX_CENTS, 1, 0);
    // the largest amount at the smallest rate that still fits
    check(MAX_CENTS, 5_421_010_862_428, 8);
    // the scale at which the direct path stops fitting in u128
    for scale in 20..=28 {
        check(MAX_CENTS, 123_456_789, scale);
        check(1, 1, scale);
    }
}
