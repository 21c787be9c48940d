//! `floor`: the HTTP + JSON floor the services are measured against (`bench/run.sh`).
//!
//! A bare warp server, from the same lockfile and HTTP stack as the services, that does only what
//! no implementation of `PUT /buy_order` can skip: accept the connection, read a JSON body of at
//! most 16 KiB, parse it into the order's three fields, and answer a JSON order (fixed: no
//! store, no price, no key check, no log line, no metric). Whatever the all-in-one costs beyond
//! this is its own path.
//!
//! `floor [ADDR]` (default `127.0.0.1:9770`).

use serde::Deserialize;
use serde_json::value::RawValue;
use warp::Filter;

/// The request body, as every client sends it.
#[derive(Deserialize)]
#[allow(dead_code)] // parsed, as the services must; not used
struct Place<'a> {
    #[serde(borrow)]
    currency: &'a str,
    #[serde(borrow)]
    amount: &'a RawValue,
    #[serde(borrow)]
    idempotence_key: &'a str,
}

/// The answer: an order as the write API shows it.
const ANSWER: &str = r#"{"idempotence_key":"3f2504e0-4f89-11d3-9a0c-0305e82c3301","buy_order":{"id":"9b0a2a64-2c1e-5d0e-8f5b-6a1d2c3e4f50","created_at":"2026-11-26T07:40:03.598541Z","currency":"USD","currency_amount":"10.00","btc_rate":"48478.88","btc_amount":"0.00020628"}}"#;

#[tokio::main]
async fn main() {
    let addr: std::net::SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:9770".into())
        .parse()
        .expect("floor [ADDR]: an address such as 127.0.0.1:9770");
    let place = warp::path!("buy_order")
        .and(warp::put())
        .and(warp::body::content_length_limit(16 * 1024))
        .and(warp::body::bytes())
        .map(|body: bytes::Bytes| {
            let status = match serde_json::from_slice::<Place>(&body) {
                Ok(_) => warp::http::StatusCode::OK,
                Err(_) => warp::http::StatusCode::UNPROCESSABLE_ENTITY,
            };
            warp::http::Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(ANSWER)
                .expect("a response")
        });
    let health = warp::path!("healthcheck").map(|| "{\"status\":\"ok\"}");
    warp::serve(place.or(health)).run(addr).await;
}
