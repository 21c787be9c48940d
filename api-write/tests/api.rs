//! Every status code of the write API, through `warp::test` against the in-memory store.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::Utc;
use order_domain::*;
use order_store::memory::MemEventStore;
use order_store::{
    CqrsOrderWriter, EventLog, OrderWriter, PlaceError, Placement, Position, StoreError,
};
use serde_json::{json, Value};
use warp::http::Response;
use warp::hyper::body::Bytes;
use warp::Filter;

const KEY: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

/// A price source that answers a fixed rate, or fails.
struct Prices(Option<&'static str>);

#[async_trait]
impl PriceSource for Prices {
    async fn quote(&self, currency: Currency) -> Result<Quote, PriceError> {
        let rate = self
            .0
            .ok_or_else(|| PriceError::new("upstream answered 503"))?;
        Ok(Quote {
            currency,
            rate: BtcRate::parse(rate).unwrap(),
            source: "test".into(),
            quoted_at: Utc::now(),
        })
    }
}

/// A store that is down.
struct DownStore;

#[async_trait]
impl OrderWriter for DownStore {
    async fn place(&self, _: PlaceBuyOrder) -> Result<Placement, PlaceError> {
        Err(StoreError::Unavailable("connection refused".into()).into())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
    async fn remaining_btc(&self) -> Result<Satoshis, StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

/// A store whose commits end with their outcome unknown.
struct InDoubtStore;

#[async_trait]
impl OrderWriter for InDoubtStore {
    async fn place(&self, _: PlaceBuyOrder) -> Result<Placement, PlaceError> {
        Err(StoreError::OutcomeUnknown("connection reset during COMMIT".into()).into())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Ok(())
    }
    async fn remaining_btc(&self) -> Result<Satoshis, StoreError> {
        Ok(Satoshis::ZERO)
    }
}

struct App {
    store: MemEventStore,
    routes: warp::filters::BoxedFilter<(warp::reply::Response,)>,
}

fn app(rate: Option<&'static str>, cap: BtcCap) -> App {
    let store = MemEventStore::new(cap);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(Prices(rate))));
    App {
        store,
        routes: routes(Arc::new(writer)),
    }
}

fn routes(writer: Arc<dyn OrderWriter>) -> warp::filters::BoxedFilter<(warp::reply::Response,)> {
    api_write::WriteApi::new(
        writer,
        api_keys::Identity::Off,
        std::sync::Arc::new(service_kit::RateLimits::off()),
    )
    .routes()
    .recover(service_kit::recover)
    .unify()
    .map(warp::Reply::into_response)
    .boxed()
}

fn put(body: &str) -> warp::test::RequestBuilder {
    warp::test::request()
        .method("PUT")
        .path("/buy_order")
        .header("content-type", "application/json")
        .body(body)
}

fn json_of(response: &Response<Bytes>) -> Value {
    serde_json::from_slice(response.body()).unwrap()
}

fn order(amount: &str, key: &str) -> String {
    json!({"currency": "USD", "amount": amount, "idempotence_key": key}).to_string()
}

async fn stored(app: &App) -> usize {
    app.store
        .read_after(Position::ZERO, 1000)
        .await
        .unwrap()
        .len()
}

#[tokio::test]
async fn put_places_an_order_and_a_replay_answers_identically() {
    let app = app(Some("48478.88"), BtcCap::DEFAULT);
    let first = put(&order("123.45", KEY)).reply(&app.routes).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers().get("idempotent-replayed").is_none());
    assert_eq!(first.headers()["content-type"], "application/json");
    let body = json_of(&first);
    assert_eq!(body["idempotence_key"], KEY);
    let order_json = &body["buy_order"];
    assert_eq!(order_json["currency"], "USD");
    assert_eq!(order_json["currency_amount"], "123.45");
    assert_eq!(order_json["btc_rate"], "48478.88");
    assert_eq!(order_json["btc_amount"], "0.00254647");
    assert!(uuid::Uuid::parse_str(order_json["id"].as_str().unwrap()).is_ok());
    assert!(
        chrono::DateTime::parse_from_rfc3339(order_json["created_at"].as_str().unwrap()).is_ok()
    );

    let replay = put(&order("123.45", KEY)).reply(&app.routes).await;
    assert_eq!(replay.status(), 200);
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    assert_eq!(replay.body(), first.body(), "byte-identical replay");
    assert_eq!(stored(&app).await, 1);
    // Both answers carry the order's consistency token: where it stands in the log.
    assert_eq!(first.headers()["consistency-token"], "ct1_0000000000000001");
    assert_eq!(
        replay.headers()["consistency-token"],
        first.headers()["consistency-token"]
    );
    let second = put(&order("1", "9a0c0305-4f89-11d3-9a0c-0305e82c3301"))
        .reply(&app.routes)
        .await;
    assert_eq!(
        second.headers()["consistency-token"],
        "ct1_0000000000000002"
    );
}

#[tokio::test]
async fn the_key_may_come_in_a_header_and_amounts_as_exact_numbers() {
    let app = app(Some("48478.88"), BtcCap::DEFAULT);
    let response = put(r#"{"currency":"GBP","amount":123.45}"#)
        .header("idempotency-key", KEY)
        .reply(&app.routes)
        .await;
    assert_eq!(response.status(), 200);
    let body = json_of(&response);
    assert_eq!(body["idempotence_key"], KEY);
    assert_eq!(body["buy_order"]["currency_amount"], "123.45");
}

#[tokio::test]
async fn clients_have_their_own_key_space() {
    let app = app(Some("50000"), BtcCap::DEFAULT);
    let alice = put(&order("1", KEY))
        .header("x-client-id", "alice")
        .reply(&app.routes)
        .await;
    let bob = put(&order("1", KEY))
        .header("x-client-id", "bob")
        .reply(&app.routes)
        .await;
    assert_eq!((alice.status().as_u16(), bob.status().as_u16()), (200, 200));
    assert_ne!(
        json_of(&alice)["buy_order"]["id"],
        json_of(&bob)["buy_order"]["id"]
    );
    assert_eq!(stored(&app).await, 2);
}

#[tokio::test]
async fn status_400_invalid_json() {
    let app = app(Some("50000"), BtcCap::DEFAULT);
    for body in ["{", "", "{\"currency\":\"USD\",}", "nul"] {
        let response = put(body).reply(&app.routes).await;
        assert_eq!(response.status(), 400, "{body:?}");
        assert_eq!(json_of(&response)["error"]["code"], "invalid_json");
    }
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn status_413_payload_too_large() {
    let app = app(Some("50000"), BtcCap::DEFAULT);
    let big =
        json!({"currency":"USD","amount":"1","idempotence_key":KEY,"pad":"x".repeat(17 * 1024)});
    let response = put(&big.to_string()).reply(&app.routes).await;
    assert_eq!(response.status(), 413);
    assert_eq!(json_of(&response)["error"]["code"], "payload_too_large");
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn status_415_unsupported_media_type() {
    let app = app(Some("50000"), BtcCap::DEFAULT);
    for content_type in [
        None,
        Some("text/plain"),
        Some("application/x-www-form-urlencoded"),
    ] {
        let mut request = warp::test::request()
            .method("PUT")
            .path("/buy_order")
            .body(order("1", KEY));
        if let Some(ct) = content_type {
            request = request.header("content-type", ct);
        }
        let response = request.reply(&app.routes).await;
        assert_eq!(response.status(), 415, "{content_type:?}");
        assert_eq!(
            json_of(&response)["error"]["code"],
            "unsupported_media_type"
        );
    }
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn status_422_validation_failed_names_the_field_and_rule() {
    let app = app(Some("50000"), BtcCap::DEFAULT);
    let cases = [
        (
            json!({"currency":"JPY","amount":"1","idempotence_key":KEY}),
            "currency: must be one of USD, EUR, GBP",
        ),
        (
            json!({"currency":"USD","amount":"1.001","idempotence_key":KEY}),
            "amount: must have at most 2 decimal places",
        ),
        (
            json!({"currency":"USD","amount":"0","idempotence_key":KEY}),
            "amount: must be greater than 0",
        ),
        (
            json!({"currency":"USD","amount":"1000000000","idempotence_key":KEY}),
            "less than 1000000000",
        ),
        (
            json!({"currency":"USD","amount":"1"}),
            "idempotence_key: is required",
        ),
        (
            json!({"currency":"USD","amount":"1","idempotence_key":"abc"}),
            "idempotence_key: must be a UUID",
        ),
        (json!("just a string"), "JSON object"),
    ];
    for (body, expected) in cases {
        let response = put(&body.to_string()).reply(&app.routes).await;
        assert_eq!(response.status(), 422, "{body}");
        let error = &json_of(&response)["error"];
        assert_eq!(error["code"], "validation_failed");
        assert!(
            error["message"].as_str().unwrap().contains(expected),
            "{error}"
        );
    }
    assert_eq!(stored(&app).await, 0);
}

/// Exponents that once wrapped to a small amount (1e9223372036854775807 was placed as 0.10 USD):
/// as JSON numbers and as strings, every one is a 422 and nothing is stored.
#[tokio::test]
async fn status_422_for_amounts_with_extreme_exponents() {
    let app = app(Some("50000"), BtcCap::DEFAULT);
    let zeros = "0".repeat(5000);
    let amounts = [
        "1e9223372036854775807".to_owned(),
        "5e9223372036854775807".to_owned(),
        "1e-9223372036854775808".to_owned(),
        "1e9223372036854775808".to_owned(),
        "1E+99999999999999999999999999999".to_owned(),
        format!("1{zeros}"),
        format!("0.{zeros}1"),
        format!("1e{zeros}9"),
    ];
    for amount in &amounts {
        for body in [
            format!(r#"{{"currency":"USD","amount":{amount},"idempotence_key":"{KEY}"}}"#),
            format!(r#"{{"currency":"USD","amount":"{amount}","idempotence_key":"{KEY}"}}"#),
        ] {
            let response = put(&body).reply(&app.routes).await;
            assert_eq!(response.status(), 422, "{}", &body[..body.len().min(80)]);
            let error = &json_of(&response)["error"];
            assert_eq!(error["code"], "validation_failed");
            assert_eq!(error["fields"][0]["field"], "amount", "{error}");
        }
    }
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn status_422_idempotency_key_reused() {
    let app = app(Some("50000"), BtcCap::DEFAULT);
    assert_eq!(
        put(&order("10", KEY)).reply(&app.routes).await.status(),
        200
    );
    let response = put(&order("11", KEY)).reply(&app.routes).await;
    assert_eq!(response.status(), 422);
    let error = &json_of(&response)["error"];
    assert_eq!(error["code"], "idempotency_key_reused");
    assert!(
        error["message"].as_str().unwrap().contains("10.00 USD"),
        "{error}"
    );
    assert_eq!(stored(&app).await, 1);
}

#[tokio::test]
async fn status_409_btc_cap_exceeded_says_what_remains() {
    // cap 1 BTC, rate 100 USD/BTC: 60 USD = 0.6 BTC
    let app = app(Some("100"), "1".parse().unwrap());
    assert_eq!(
        put(&order("60", KEY)).reply(&app.routes).await.status(),
        200
    );
    let other = "00000000-0000-4000-8000-000000000002";
    let response = put(&order("41", other)).reply(&app.routes).await;
    assert_eq!(response.status(), 409);
    let error = &json_of(&response)["error"];
    assert_eq!(error["code"], "btc_cap_exceeded");
    assert_eq!(error["remaining_btc"], "0.40000000");
    assert_eq!(error["requested_btc"], "0.41000000");
    assert_eq!(
        stored(&app).await,
        1,
        "nothing of the refused order is stored"
    );
    // exactly what remains fits
    assert_eq!(
        put(&order("40", other)).reply(&app.routes).await.status(),
        200
    );
}

#[tokio::test]
async fn status_503_price_unavailable_with_retry_after() {
    let app = app(None, BtcCap::DEFAULT);
    let response = put(&order("10", KEY)).reply(&app.routes).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let error = &json_of(&response)["error"];
    assert_eq!(error["code"], "price_unavailable");
    assert!(error["message"]
        .as_str()
        .unwrap()
        .contains("upstream answered 503"));
    assert_eq!(stored(&app).await, 0);
}

#[tokio::test]
async fn status_503_outcome_unknown_never_claims_nothing_was_stored() {
    let routes = routes(Arc::new(InDoubtStore));
    let response = put(&order("10", KEY)).reply(&routes).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let error = &json_of(&response)["error"];
    assert_eq!(error["code"], "outcome_unknown");
    let message = error["message"].as_str().unwrap();
    assert!(
        message.contains("retry with the same idempotence key"),
        "{message}"
    );
    assert!(!message.contains("nothing was stored"), "{message}");
    assert!(!message.contains("COMMIT"), "internals stay in the log");
}

#[tokio::test]
async fn status_503_unavailable_when_the_store_is_down() {
    let routes = routes(Arc::new(DownStore));
    let response = put(&order("10", KEY)).reply(&routes).await;
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "1");
    let error = &json_of(&response)["error"];
    assert_eq!(error["code"], "unavailable");
    assert!(
        !error["message"]
            .as_str()
            .unwrap()
            .contains("connection refused"),
        "internals stay in the log"
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_are_json_errors_and_health_is_200() {
    let app = app(Some("50000"), BtcCap::DEFAULT);
    let health = warp::test::request()
        .path("/healthcheck")
        .reply(&app.routes)
        .await;
    assert_eq!(health.status(), 200);
    assert_eq!(json_of(&health)["status"], "ok");
    let missing = warp::test::request().path("/nope").reply(&app.routes).await;
    assert_eq!(missing.status(), 404);
    assert_eq!(json_of(&missing)["error"]["code"], "not_found");
    let wrong = warp::test::request()
        .method("DELETE")
        .path("/buy_order")
        .reply(&app.routes)
        .await;
    assert_eq!(wrong.status(), 405);
    assert_eq!(json_of(&wrong)["error"]["code"], "method_not_allowed");
}
