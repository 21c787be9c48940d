//! The client's retry rules against a scripted HTTP server: what is retried and how long it
//! waits, what is not, the key kept across attempts, the deadline, failover to another writer,
//! the token carried to reads, and paging. (Against the real services: the workspace's
//! `tests/client.rs`.)

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use buy_orders_client::{Client, Currency, Error, ErrorCode, FiatAmount, NewOrder};
use futures::TryStreamExt;
use serde_json::{json, Value};
use warp::Filter;

/// One scripted answer: status, headers, body.
type Scripted = (u16, Vec<(&'static str, String)>, Value);

/// What the stub saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: String,
    path: String,
    query: String,
    authorization: Option<String>,
    token: Option<String>,
    body: String,
}

#[derive(Clone, Default)]
struct Stub {
    script: Arc<Mutex<VecDeque<Scripted>>>,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl Stub {
    /// Serves the script (then 500s) on a port of its own.
    async fn start(script: Vec<Scripted>) -> (Stub, SocketAddr) {
        let stub = Stub {
            script: Arc::new(Mutex::new(script.into())),
            seen: Arc::default(),
        };
        let state = stub.clone();
        let route = warp::method()
            .and(warp::path::full())
            .and(warp::query::raw().or(warp::any().map(String::new)).unify())
            .and(warp::header::optional::<String>("authorization"))
            .and(warp::header::optional::<String>("consistency-token"))
            .and(warp::body::bytes())
            .map(
                move |method: warp::http::Method,
                      path: warp::path::FullPath,
                      query: String,
                      authorization,
                      token,
                      body: bytes::Bytes| {
                    state.seen.lock().unwrap().push(Seen {
                        method: method.to_string(),
                        path: path.as_str().to_owned(),
                        query,
                        authorization,
                        token,
                        body: String::from_utf8_lossy(&body).into_owned(),
                    });
                    let (status, headers, body) =
                        state.script.lock().unwrap().pop_front().unwrap_or((
                            500,
                            vec![],
                            json!({"error": {"code": "internal", "message": "script ended"}}),
                        ));
                    let mut response = warp::http::Response::builder().status(status);
                    for (name, value) in headers {
                        response = response.header(name, value);
                    }
                    response.body(body.to_string()).unwrap()
                },
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        (stub, addr)
    }

    fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const ID: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

fn order_json(id: &str) -> Value {
    json!({"id": id, "created_at": "2026-11-26T07:40:03.598541Z", "currency": "EUR",
           "currency_amount": "25.00", "btc_rate": "41191.91", "btc_amount": "0.00060692"})
}

fn placed(token: &str) -> Scripted {
    (
        200,
        vec![("consistency-token", token.to_owned())],
        json!({"idempotence_key": "9a0c0305-4f89-11d3-9a0c-0305e82c3301", "buy_order": order_json(ID)}),
    )
}

fn error(status: u16, code: &str, retry_after: Option<u64>) -> Scripted {
    let headers = retry_after
        .map(|s| vec![("retry-after", s.to_string())])
        .unwrap_or_default();
    (
        status,
        headers,
        json!({"error": {"code": code, "message": "scripted"}}),
    )
}

fn client(write: &[SocketAddr], read: Option<SocketAddr>) -> buy_orders_client::ClientBuilder {
    let mut builder = Client::builder("bo_test_key");
    for addr in write {
        builder = builder.write_url(format!("http://{addr}"));
    }
    if let Some(read) = read {
        builder = builder.read_url(format!("http://{read}"));
    }
    builder
}

fn new_order() -> NewOrder {
    NewOrder::new(Currency::EUR, FiatAmount::parse("25.00").unwrap())
}

fn key_of(seen: &Seen) -> String {
    let body: Value = serde_json::from_str(&seen.body).unwrap();
    body["idempotence_key"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_unknown_outcome_and_a_rate_limit_are_retried_with_the_same_key_after_retry_after() {
    let (stub, addr) = Stub::start(vec![
        error(503, "outcome_unknown", Some(1)),
        error(429, "rate_limited", Some(1)),
        placed("ct1_0000000000000007"),
    ])
    .await;
    let client = client(&[addr], None).build().unwrap();
    let started = Instant::now();
    let placed = client.place(new_order()).await.unwrap();
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "Retry-After honoured twice"
    );
    assert_eq!(placed.order.id.to_string(), ID);
    assert_eq!(placed.order.btc_amount.to_string(), "0.00060692");
    let seen = stub.seen();
    assert_eq!(seen.len(), 3);
    let key = key_of(&seen[0]);
    assert!(seen.iter().all(|s| key_of(s) == key), "one key: {seen:?}");
    assert!(seen
        .iter()
        .all(|s| s.method == "PUT" && s.path == "/buy_order"));
    assert_eq!(seen[0].authorization.as_deref(), Some("Bearer bo_test_key"));
    let body: Value = serde_json::from_str(&seen[0].body).unwrap();
    assert_eq!(body["amount"], "25.00", "money as text, never a float");
}

#[tokio::test]
async fn a_refusal_is_never_retried() {
    for (status, code, want) in [
        (409, "btc_cap_exceeded", ErrorCode::BtcCapExceeded),
        (
            422,
            "idempotency_key_reused",
            ErrorCode::IdempotencyKeyReused,
        ),
        (422, "validation_failed", ErrorCode::ValidationFailed),
        (401, "unauthenticated", ErrorCode::Unauthenticated),
        (500, "internal", ErrorCode::Internal),
    ] {
        let (stub, addr) = Stub::start(vec![
            error(status, code, None),
            placed("ct1_0000000000000001"),
        ])
        .await;
        let err = client(&[addr], None)
            .build()
            .unwrap()
            .place(new_order())
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some(&want), "{err}");
        assert_eq!(stub.seen().len(), 1, "{code}: one attempt");
    }
}

#[tokio::test]
async fn the_deadline_ends_the_retries_and_hands_back_the_key() {
    let (stub, addr) =
        Stub::start((0..100).map(|_| error(503, "unavailable", None)).collect()).await;
    let client = client(&[addr], None)
        .place_deadline(Duration::from_millis(600))
        .build()
        .unwrap();
    let order = new_order().with_key("0c2b79c7-5a4e-4b7e-9d39-3c0f6f8f7c11".parse().unwrap());
    let started = Instant::now();
    let err = client.place(order).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(2));
    match &err {
        Error::DeadlineExceeded {
            idempotence_key, ..
        } => assert_eq!(
            idempotence_key.unwrap().to_string(),
            "0c2b79c7-5a4e-4b7e-9d39-3c0f6f8f7c11"
        ),
        other => panic!("{other}"),
    }
    assert_eq!(err.code(), Some(&ErrorCode::Unavailable));
    let seen = stub.seen();
    assert!(seen.len() >= 2, "retried before the deadline");
    assert!(seen
        .iter()
        .all(|s| key_of(s) == "0c2b79c7-5a4e-4b7e-9d39-3c0f6f8f7c11"));
}

#[tokio::test]
async fn a_writer_that_does_not_answer_is_left_for_the_next() {
    let closed = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap()
    }; // dropped: nothing listens there
    let (stub, addr) = Stub::start(vec![placed("ct1_0000000000000001")]).await;
    let client = client(&[closed, addr], None).build().unwrap();
    client.place(new_order()).await.unwrap();
    assert_eq!(stub.seen().len(), 1);
}

#[tokio::test]
async fn reads_carry_the_newest_token_and_pages_stream_to_the_end() {
    let (_writer, write) = Stub::start(vec![
        placed("ct1_0000000000000009"),
        placed("ct1_0000000000000003"), // an older write answered later: the newer token stays
    ])
    .await;
    let second = "5b1c7c1e-8a5e-4f6c-9d2e-0a6f1f2e3d4c";
    let (reader, read) = Stub::start(vec![
        error(503, "not_yet_consistent", Some(1)),
        (
            200,
            vec![],
            json!({"rows": [order_json(ID)], "last_reference": ID}),
        ),
        (
            200,
            vec![],
            json!({"rows": [order_json(second)], "last_reference": second}),
        ),
        (200, vec![], json!({"rows": [], "last_reference": null})),
        error(404, "not_found", None),
    ])
    .await;
    let client = client(&[write], Some(read)).build().unwrap();
    client.place(new_order()).await.unwrap();
    client.place(new_order()).await.unwrap();
    assert_eq!(client.token().unwrap().as_str(), "ct1_0000000000000009");
    let all: Vec<_> = client.list(1).try_collect().await.unwrap();
    assert_eq!(
        all.iter().map(|o| o.id.to_string()).collect::<Vec<_>>(),
        [ID, second]
    );
    assert_eq!(client.get(ID.parse().unwrap()).await.unwrap(), None);
    let seen = reader.seen();
    assert_eq!(seen.len(), 5, "the 503 retried once");
    assert!(seen
        .iter()
        .all(|s| s.token.as_deref() == Some("ct1_0000000000000009")));
    assert_eq!(seen[1].query, "page_size=1");
    assert_eq!(seen[2].query, format!("page_size=1&last_reference={ID}"));
    assert_eq!(seen[4].path, format!("/buy_orders/{ID}"));
    // Without read-your-writes, no token.
    let (plain, read) = Stub::start(vec![(
        200,
        vec![],
        json!({"rows": [], "last_reference": null}),
    )])
    .await;
    let client = client_with_token_off(read);
    client.page(None, 10).await.unwrap();
    assert_eq!(plain.seen()[0].token, None);
}

fn client_with_token_off(read: SocketAddr) -> Client {
    client(&[], Some(read))
        .read_your_writes(false)
        .build()
        .unwrap()
}

/// APIs behind a proxy under a path: the routes go below it, with or without a final slash.
#[tokio::test]
async fn a_base_url_with_a_path_keeps_it() {
    let (stub, addr) = Stub::start(vec![
        placed("ct1_0000000000000001"),
        (200, vec![], json!({"rows": [], "last_reference": null})),
    ])
    .await;
    let client = Client::builder("bo_test_key")
        .write_url(format!("http://{addr}/orders"))
        .read_url(format!("http://{addr}/reads/"))
        .build()
        .unwrap();
    client.place(new_order()).await.unwrap();
    client.page(None, 5).await.unwrap();
    let paths: Vec<_> = stub.seen().into_iter().map(|s| s.path).collect();
    assert_eq!(paths, ["/orders/buy_order", "/reads/buy_orders"]);
}

#[test]
fn a_bad_configuration_is_refused_by_name_and_the_key_never_shows() {
    for (builder, says) in [
        (Client::builder("k"), "give a write URL"),
        (Client::builder("k").write_url("ftp://x"), "http(s)"),
        (Client::builder("k").write_url("not a url"), "not a URL"),
        (
            Client::builder("k").write_url("http://u:p@h"),
            "credentials",
        ),
        (Client::builder("").write_url("http://h"), "API key"),
        (
            Client::builder("k")
                .write_url("http://h")
                .place_deadline(Duration::ZERO),
            "zero",
        ),
    ] {
        let err = builder.build().unwrap_err().to_string();
        assert!(err.contains(says), "{err}");
    }
    let client = Client::builder("bo_secret_key")
        .write_url("http://h")
        .build()
        .unwrap();
    assert!(!format!("{client:?}").contains("bo_secret_key"));
}
