//! Given / when / then tests of the `BuyOrder` aggregate: one per command outcome.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, TimeZone, Utc};
use cqrs_es::test::TestFramework;
use order_domain::*;

const KEY: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

fn placed_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 12, 0, 0).unwrap()
}

fn quoted_at() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 26, 11, 59, 59).unwrap()
}

/// A price source that always answers the same rate (or always fails).
struct StubPrices(Result<&'static str, &'static str>);

#[async_trait]
impl PriceSource for StubPrices {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        match self.0 {
            Ok(rate) => Ok(Quote {
                currency,
                rate: BtcRate::parse(rate).unwrap(),
                source: "stub".into(),
                quoted_at: quoted_at(),
            }),
            Err(reason) => Err(PriceError::new(reason)),
        }
    }
}

/// A price source that answers in the wrong currency.
struct WrongCurrency;

#[async_trait]
impl PriceSource for WrongCurrency {
    async fn quote(&self, _: Currency) -> Result<Quote, PriceError> {
        Ok(Quote {
            currency: Currency::GBP,
            rate: BtcRate::parse("1").unwrap(),
            source: "stub".into(),
            quoted_at: quoted_at(),
        })
    }
}

fn framework(prices: impl PriceSource + 'static) -> TestFramework<BuyOrder> {
    TestFramework::with(BuyOrderServices {
        prices: Arc::new(prices),
        clock: Arc::new(FixedClock(placed_at())),
    })
}

fn command(currency: Currency, amount: &str) -> BuyOrderCommand {
    PlaceBuyOrder {
        client_id: ClientId::parse("alice").unwrap(),
        idempotency_key: IdempotencyKey::parse(KEY).unwrap(),
        currency,
        amount: FiatAmount::parse(amount).unwrap(),
    }
    .into()
}

fn placed(currency: Currency, amount: &str, rate: &str, satoshis: u64) -> BuyOrderEvent {
    let client_id = ClientId::parse("alice").unwrap();
    let idempotency_key = IdempotencyKey::parse(KEY).unwrap();
    BuyOrderEvent::BuyOrderPlaced(BuyOrderPlaced {
        order_id: OrderId::derive(&client_id, &idempotency_key),
        client_id,
        idempotency_key,
        currency,
        amount: FiatAmount::parse(amount).unwrap(),
        rate: BtcRate::parse(rate).unwrap(),
        rate_source: "stub".into(),
        rate_quoted_at: quoted_at(),
        satoshis: Satoshis::new(satoshis),
        placed_at: placed_at(),
    })
}

#[tokio::test]
async fn placing_a_new_order_records_rate_and_rounded_up_btc() {
    framework(StubPrices(Ok("48478.88")))
        .given_no_previous_events()
        .when_async(command(Currency::USD, "123.45"))
        .await
        .then_expect_events(vec![placed(Currency::USD, "123.45", "48478.88", 254_647)]);
}

#[tokio::test]
async fn placing_again_with_same_currency_and_amount_changes_nothing() {
    framework(StubPrices(Ok("99999")))
        .given(vec![placed(Currency::USD, "123.45", "48478.88", 254_647)])
        .when_async(command(Currency::USD, "123.45"))
        .await
        .then_expect_events(vec![]);
}

#[tokio::test]
async fn placing_again_with_another_amount_is_refused() {
    framework(StubPrices(Ok("48478.88")))
        .given(vec![placed(Currency::USD, "123.45", "48478.88", 254_647)])
        .when_async(command(Currency::USD, "123.46"))
        .await
        .then_expect_error(BuyOrderError::IdempotencyKeyReused {
            existing_currency: Currency::USD,
            existing_amount: FiatAmount::parse("123.45").unwrap(),
            requested_currency: Currency::USD,
            requested_amount: FiatAmount::parse("123.46").unwrap(),
        });
}

#[tokio::test]
async fn placing_again_with_another_currency_is_refused() {
    let result = framework(StubPrices(Ok("48478.88")))
        .given(vec![placed(Currency::USD, "123.45", "48478.88", 254_647)])
        .when_async(command(Currency::EUR, "123.45"))
        .await
        .inspect_result();
    assert!(matches!(
        result,
        Err(BuyOrderError::IdempotencyKeyReused {
            existing_currency: Currency::USD,
            requested_currency: Currency::EUR,
            ..
        })
    ));
}

#[tokio::test]
async fn no_price_means_no_order() {
    framework(StubPrices(Err("upstream answered 503")))
        .given_no_previous_events()
        .when_async(command(Currency::GBP, "10"))
        .await
        .then_expect_error(BuyOrderError::PriceUnavailable(PriceError::new(
            "upstream answered 503",
        )));
}

#[tokio::test]
async fn a_quote_in_the_wrong_currency_is_no_price() {
    let result = framework(WrongCurrency)
        .given_no_previous_events()
        .when_async(command(Currency::USD, "10"))
        .await
        .inspect_result();
    assert!(matches!(result, Err(BuyOrderError::PriceUnavailable(_))));
}

#[tokio::test]
async fn an_amount_beyond_any_representable_btc_is_refused() {
    let result = framework(StubPrices(Ok("0.00000001")))
        .given_no_previous_events()
        .when_async(command(Currency::USD, "999999999.99"))
        .await
        .inspect_result();
    assert!(matches!(
        result,
        Err(BuyOrderError::BtcAmountOutOfRange { .. })
    ));
}

#[test]
fn events_serialize_with_exact_decimal_strings() {
    let event = placed(Currency::USD, "123.45", "48478.88", 254_647);
    let json = serde_json::to_value(&event).unwrap();
    let body = &json["BuyOrderPlaced"];
    assert_eq!(body["amount"], "123.45");
    assert_eq!(body["rate"], "48478.88");
    assert_eq!(body["satoshis"], 254_647);
    assert_eq!(body["currency"], "USD");
    let back: BuyOrderEvent = serde_json::from_value(json).unwrap();
    assert_eq!(back, event);
}
