//! The Coinbase adapter and the cache against a local stub of the Coinbase API (warp on
//! 127.0.0.1): answers, retries, timeouts, 5xx, garbage, and single-flight.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use order_domain::{Currency, PriceSource};
use price_feed::{CachedSource, CoinbaseSource};
use warp::Filter;

/// What the stub answers to call number `n` (0-based) for `currency`: status, body, delay.
type Script = dyn Fn(usize, &str) -> (u16, String, Duration) + Send + Sync;

struct Stub {
    addr: SocketAddr,
    calls: Arc<AtomicUsize>,
}

impl Stub {
    async fn start(
        script: impl Fn(usize, &str) -> (u16, String, Duration) + Send + Sync + 'static,
    ) -> Stub {
        let script: Arc<Script> = Arc::new(script);
        let calls = Arc::new(AtomicUsize::new(0));
        let counter = calls.clone();
        let route = warp::path!("v2" / "prices" / "buy")
            .and(warp::get())
            .and(warp::query::<HashMap<String, String>>())
            .then(move |query: HashMap<String, String>| {
                let n = counter.fetch_add(1, Ordering::SeqCst);
                let currency = query.get("currency").cloned().unwrap_or_default();
                let (status, body, delay) = script(n, &currency);
                async move {
                    tokio::time::sleep(delay).await;
                    warp::http::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(body)
                        .unwrap()
                }
            });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(warp::serve(route).incoming(listener).run());
        Stub { addr, calls }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn calls(&self) -> usize {
        self.calls.load(Ordering::SeqCst)
    }
}

fn quote_body(currency: &str, amount: &str) -> String {
    format!(r#"{{"data":{{"base":"BTC","currency":"{currency}","amount":"{amount}"}}}}"#)
}

fn ok(currency: &str) -> (u16, String, Duration) {
    (200, quote_body(currency, "48478.88"), Duration::ZERO)
}

fn source(stub: &Stub, timeout_ms: u64, retries: usize) -> CoinbaseSource {
    CoinbaseSource::new(&stub.url(), Duration::from_millis(timeout_ms), retries).unwrap()
}

#[tokio::test]
async fn a_good_answer_is_a_quote_for_the_currency_asked() {
    let stub =
        Stub::start(|_, currency| (200, quote_body(currency, "41191.91"), Duration::ZERO)).await;
    let quote = source(&stub, 2000, 0).quote(Currency::EUR).await.unwrap();
    assert_eq!(quote.currency, Currency::EUR);
    assert_eq!(quote.rate.to_string(), "41191.91");
    assert_eq!(quote.source, "coinbase");
    assert_eq!(stub.calls(), 1);
}

#[tokio::test]
async fn transient_5xx_is_retried_then_succeeds() {
    let stub = Stub::start(|n, c| {
        if n < 2 {
            (503, "{}".into(), Duration::ZERO)
        } else {
            ok(c)
        }
    })
    .await;
    let quote = source(&stub, 2000, 2).quote(Currency::USD).await.unwrap();
    assert_eq!(quote.rate.to_string(), "48478.88");
    assert_eq!(stub.calls(), 3);
}

#[tokio::test]
async fn persistent_5xx_gives_up_after_the_retries() {
    let stub = Stub::start(|_, _| (500, "oops".into(), Duration::ZERO)).await;
    let err = source(&stub, 2000, 2)
        .quote(Currency::USD)
        .await
        .unwrap_err();
    assert!(err.reason.contains("500"), "{err}");
    assert_eq!(stub.calls(), 3);
}

#[tokio::test]
async fn a_4xx_is_not_retried() {
    let stub = Stub::start(|_, _| (404, "{}".into(), Duration::ZERO)).await;
    let err = source(&stub, 2000, 3)
        .quote(Currency::USD)
        .await
        .unwrap_err();
    assert!(err.reason.contains("404"), "{err}");
    assert_eq!(stub.calls(), 1);
}

#[tokio::test]
async fn garbage_and_wrong_quotes_are_errors() {
    for body in [
        "<html>busy</html>".to_owned(),
        quote_body("EUR", "48478.88"),
        quote_body("USD", "0"),
        quote_body("USD", "-1"),
        quote_body("USD", "1e"),
        r#"{"data":{"base":"ETH","currency":"USD","amount":"3000"}}"#.to_owned(),
    ] {
        let answer = body.clone();
        let stub = Stub::start(move |_, _| (200, answer.clone(), Duration::ZERO)).await;
        let result = source(&stub, 2000, 2).quote(Currency::USD).await;
        assert!(result.is_err(), "{body} gave {result:?}");
        assert_eq!(stub.calls(), 1, "an unusable body is not retried");
    }
}

#[tokio::test]
async fn a_slow_upstream_times_out_per_attempt() {
    let stub = Stub::start(|_, c| (200, quote_body(c, "1"), Duration::from_secs(5))).await;
    let started = Instant::now();
    let err = source(&stub, 150, 1)
        .quote(Currency::USD)
        .await
        .unwrap_err();
    assert!(err.reason.contains("timed out"), "{err}");
    assert_eq!(stub.calls(), 2);
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gave up in time"
    );
}

#[tokio::test]
async fn an_unreachable_upstream_is_an_error() {
    // Bind then drop a listener: its port is closed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let source = CoinbaseSource::new(
        &format!("http://127.0.0.1:{port}"),
        Duration::from_millis(500),
        1,
    )
    .unwrap();
    let err = source.quote(Currency::USD).await.unwrap_err();
    assert!(err.reason.contains("unreachable"), "{err}");
}

#[tokio::test]
async fn a_thousand_concurrent_quotes_cost_one_upstream_call() {
    let stub =
        Stub::start(|_, c| (200, quote_body(c, "48478.88"), Duration::from_millis(100))).await;
    let cached = Arc::new(CachedSource::new(
        source(&stub, 2000, 0),
        Duration::from_secs(2),
    ));
    let tasks: Vec<_> = (0..1000)
        .map(|_| {
            let cached = cached.clone();
            tokio::spawn(async move { cached.quote(Currency::USD).await })
        })
        .collect();
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().rate.to_string(), "48478.88");
    }
    assert_eq!(stub.calls(), 1);
}

#[tokio::test]
async fn a_failing_fetch_is_shared_by_its_waiters_not_repeated() {
    let stub = Stub::start(|_, _| (503, "{}".into(), Duration::from_millis(100))).await;
    let cached = Arc::new(CachedSource::new(
        source(&stub, 2000, 0),
        Duration::from_secs(2),
    ));
    let tasks: Vec<_> = (0..200)
        .map(|_| {
            let cached = cached.clone();
            tokio::spawn(async move { cached.quote(Currency::USD).await })
        })
        .collect();
    for task in tasks {
        assert!(task.await.unwrap().is_err());
    }
    assert_eq!(stub.calls(), 1);
    // A later request tries again.
    assert!(cached.quote(Currency::USD).await.is_err());
    assert_eq!(stub.calls(), 2);
}

#[tokio::test]
async fn a_stale_quote_is_refetched_and_never_served_when_the_refetch_fails() {
    let stub = Stub::start(|n, c| {
        if n == 0 {
            ok(c)
        } else {
            (503, "{}".into(), Duration::ZERO)
        }
    })
    .await;
    let cached = CachedSource::new(source(&stub, 2000, 0), Duration::from_millis(50));
    assert!(cached.quote(Currency::USD).await.is_ok());
    assert!(cached.quote(Currency::USD).await.is_ok(), "fresh: cached");
    assert_eq!(stub.calls(), 1);
    tokio::time::sleep(Duration::from_millis(80)).await;
    assert!(
        cached.quote(Currency::USD).await.is_err(),
        "stale and upstream down: no price"
    );
    assert_eq!(stub.calls(), 2);
}

#[tokio::test]
async fn currencies_are_cached_separately() {
    let stub = Stub::start(|_, c| ok(c)).await;
    let cached = CachedSource::new(source(&stub, 2000, 0), Duration::from_secs(2));
    assert_eq!(
        cached.quote(Currency::USD).await.unwrap().currency,
        Currency::USD
    );
    assert_eq!(
        cached.quote(Currency::GBP).await.unwrap().currency,
        Currency::GBP
    );
    assert_eq!(stub.calls(), 2);
}
