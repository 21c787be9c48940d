//! `FiatAmount::parse` at its extremes: exponents over the whole `i64` range (and beyond it),
//! digit strings thousands of characters long, and every way of writing one amount. The verdict
//! is checked against a reference that works on big integers.

use num_bigint::BigInt;
use order_domain::{FiatAmount, ValueError};
use proptest::prelude::*;

/// What `FiatAmount::parse` must say about `digits` (integer part, fraction) × 10^`exponent`.
#[derive(Debug, PartialEq, Eq)]
enum Verdict {
    Cents(u64),
    TooManyDecimals,
    OutOfRange,
}

/// The reference: value = M × 10^(exponent − len(fraction)), reduced to M' × 10^k with M' not
/// divisible by 10. Cents = M' × 10^(k + 2) must be a whole number (else too many decimals),
/// then 1 ≤ cents < 10^11 (else out of range). Exponents are i128 here, so nothing wraps.
fn reference(int: &str, fraction: &str, exponent: i128) -> Verdict {
    let all = format!("{int}{fraction}");
    let trimmed = all.trim_end_matches('0');
    let significant = trimmed.trim_start_matches('0');
    if significant.is_empty() {
        return Verdict::OutOfRange;
    }
    let trailing = (all.len() - trimmed.len()) as i128;
    let k = exponent - fraction.len() as i128 + trailing;
    if k + 2 < 0 {
        return Verdict::TooManyDecimals;
    }
    if significant.len() as i128 + k + 2 > 12 {
        return Verdict::OutOfRange; // at least 10^11 cents
    }
    let mantissa: BigInt = significant.parse().unwrap();
    let cents = mantissa * BigInt::from(10u32).pow((k + 2) as u32);
    match u64::try_from(cents) {
        Ok(c) if c < 100_000_000_000 => Verdict::Cents(c),
        _ => Verdict::OutOfRange,
    }
}

fn verdict(text: &str) -> Verdict {
    match FiatAmount::parse(text) {
        Ok(amount) => Verdict::Cents(amount.cents()),
        Err(ValueError::TooManyDecimals(_)) => Verdict::TooManyDecimals,
        Err(ValueError::AmountOutOfRange(_)) => Verdict::OutOfRange,
        Err(other) => panic!("{text:?}: unexpected {other:?}"),
    }
}

fn render(int: &str, fraction: &str, exponent: Option<&str>) -> String {
    let mut text = int.to_owned();
    if !fraction.is_empty() {
        text.push('.');
        text.push_str(fraction);
    }
    if let Some(e) = exponent {
        text.push('e');
        text.push_str(e);
    }
    text
}

#[test]
fn the_exponents_that_once_wrapped_are_refused() {
    for (text, want) in [
        ("1e9223372036854775807", Verdict::OutOfRange),
        ("5e9223372036854775807", Verdict::OutOfRange),
        ("1e-9223372036854775808", Verdict::TooManyDecimals),
        ("1e-9223372036854775807", Verdict::TooManyDecimals),
        ("0.5e9223372036854775807", Verdict::OutOfRange),
        ("1e9223372036854775808", Verdict::OutOfRange), // past i64
        (
            "1e-99999999999999999999999999999999",
            Verdict::TooManyDecimals,
        ),
        ("0e9223372036854775807", Verdict::OutOfRange),
        ("0e-9223372036854775808", Verdict::OutOfRange),
    ] {
        assert_eq!(verdict(text), want, "{text}");
    }
    // Leading zeros in the exponent are not magnitude.
    let zeros = "0".repeat(5000);
    assert_eq!(verdict(&format!("1e-{zeros}1")), Verdict::Cents(10));
    assert_eq!(verdict(&format!("1e+{zeros}2")), Verdict::Cents(10000));
    // A huge mantissa brought back by a huge negative exponent is exact.
    let big = format!("1{}", "0".repeat(4000));
    assert_eq!(verdict(&format!("{big}e-4000")), Verdict::Cents(100));
    assert_eq!(verdict(&format!("{big}e-4002")), Verdict::Cents(1));
    assert_eq!(verdict(&format!("{big}e-4003")), Verdict::TooManyDecimals);
    assert_eq!(verdict(&format!("{big}e-3991")), Verdict::OutOfRange);
}

fn exponent_text() -> impl Strategy<Value = (i128, String)> {
    prop_oneof![
        (-40i64..=40).prop_map(|e| (i128::from(e), e.to_string())),
        any::<i64>().prop_map(|e| (i128::from(e), e.to_string())),
        (0usize..3000, -30i64..=30).prop_map(|(zeros, e)| {
            let sign = if e < 0 { "-" } else { "+" };
            (
                i128::from(e),
                format!("{sign}{}{}", "0".repeat(zeros), e.unsigned_abs()),
            )
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    /// Any syntactically valid number, with any exponent: the exact verdict, never a wrap.
    #[test]
    fn any_number_gets_the_exact_verdict(
        int in "[0-9]{1,40}",
        fraction in "[0-9]{0,40}",
        padding in 0usize..3000,
        (exponent, exponent_text) in exponent_text(),
    ) {
        let int = format!("{}{int}", "0".repeat(padding));
        let text = render(&int, &fraction, Some(&exponent_text));
        prop_assert_eq!(verdict(&text), reference(&int, &fraction, exponent), "{}", text);
    }

    /// One amount written in many ways (leading and trailing zeros by the thousand, the point
    /// moved by an exponent) is always the same amount.
    #[test]
    fn every_spelling_of_an_amount_is_that_amount(
        cents in 1u64..100_000_000_000,
        leading in 0usize..3000,
        trailing in 0usize..3000,
        split in 0usize..6100,
        extra in 0usize..3000,
        in_fraction in any::<bool>(),
    ) {
        // The digits are cents × 10^trailing, so the amount is digits × 10^(-2 - trailing).
        let digits = format!("{}{cents}{}", "0".repeat(leading), "0".repeat(trailing));
        let base = -2 - trailing as i64;
        let (int, fraction, exponent) = if in_fraction {
            // int.fraction = digits × 10^-f: the exponent gives the f places back.
            let f = split.min(digits.len() - 1);
            let (int, fraction) = digits.split_at(digits.len() - f);
            (int.to_owned(), fraction.to_owned(), base + f as i64)
        } else {
            // digits followed by `extra` zeros = digits × 10^extra: the exponent takes them off.
            (format!("{digits}{}", "0".repeat(extra)), String::new(), base - extra as i64)
        };
        let text = render(&int, &fraction, Some(&exponent.to_string()));
        prop_assert_eq!(verdict(&text), Verdict::Cents(cents), "{}", text);
    }
}
