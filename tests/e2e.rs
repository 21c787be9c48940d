//! The all-in-one system on ephemeral ports, driven over real HTTP.

use std::collections::HashSet;
use std::time::Duration;

use buy_orders::{start, Config, System};
use clap::Parser;
use serde_json::{json, Value};

async fn system(cap: &str, prices: &str) -> System {
    let config = Config::try_parse_from([
        "buy-orders",
        "--write-addr=127.0.0.1:0",
        "--read-addr=127.0.0.1:0",
        &format!("--max-total-btc={cap}"),
        &format!("--price-source={prices}"),
    ])
    .unwrap();
    start(&config).await.unwrap()
}

fn key() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// An answer to `PUT /buy_order`.
struct Answer {
    status: u16,
    replayed: bool,
    text: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.text).unwrap()
    }
}

/// `PUT /buy_order`; takes owned values so that it can run in a spawned task.
async fn put(client: reqwest::Client, write_url: String, body: Value) -> Answer {
    let response = client
        .put(format!("{write_url}/buy_order"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    Answer {
        status: response.status().as_u16(),
        replayed: response.headers().get("idempotent-replayed").is_some(),
        text: response.text().await.unwrap(),
    }
}

/// `GET url`, answered (any status).
async fn get(client: &reqwest::Client, url: String) -> reqwest::Response {
    client.get(url).send().await.unwrap()
}

fn write_url(system: &System) -> String {
    format!("http://{}", system.write_addr)
}

async fn page(client: &reqwest::Client, system: &System, query: &str) -> Value {
    let response = get(
        client,
        format!("http://{}/buy_orders{query}", system.read_addr),
    )
    .await;
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// Every row, walking the pages of `page_size` by `last_reference` until an empty one.
async fn all_rows(client: &reqwest::Client, system: &System, page_size: usize) -> Vec<Value> {
    let mut rows = Vec::new();
    let mut query = format!("?page_size={page_size}");
    loop {
        let page = page(client, system, &query).await;
        let batch = page["rows"].as_array().unwrap();
        if batch.is_empty() {
            assert_eq!(page["last_reference"], Value::Null);
            return rows;
        }
        assert!(batch.len() <= page_size);
        assert_eq!(page["last_reference"], batch.last().unwrap()["id"]);
        rows.extend(batch.iter().cloned());
        let last = page["last_reference"].as_str().unwrap();
        query = format!("?page_size={page_size}&last_reference={last}");
    }
}

/// Waits (bounded) until the read side shows `n` orders: it is eventually consistent.
async fn wait_for_orders(client: &reqwest::Client, system: &System, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let shown = all_rows(client, system, 100).await.len();
        if shown >= n {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "read side stuck at {shown} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn btc_to_sats(btc: &str) -> u64 {
    let (whole, frac) = btc.split_once('.').unwrap();
    assert_eq!(frac.len(), 8, "{btc}");
    whole.parse::<u64>().unwrap() * 100_000_000 + frac.parse::<u64>().unwrap()
}

#[tokio::test]
async fn orders_placed_are_paged_newest_first_each_exactly_once() {
    let system = system("100", "simulated").await;
    let client = reqwest::Client::new();
    let mut placed = Vec::new();
    for i in 0..25 {
        let currency = ["USD", "EUR", "GBP"][i % 3];
        let amount = format!("{}.{:02}", 10 + i, i);
        let body = json!({"currency": currency, "amount": amount, "idempotence_key": key()});
        let answer = put(client.clone(), write_url(&system), body).await;
        assert_eq!(answer.status, 200, "{}", answer.text);
        placed.push(answer.json()["buy_order"].clone());
    }
    wait_for_orders(&client, &system, 25).await;
    placed.reverse();
    assert_eq!(
        all_rows(&client, &system, 10).await,
        placed,
        "every order exactly once, newest first, as the write API answered"
    );
    // both APIs are ready and measured
    for addr in [system.write_addr, system.read_addr] {
        let ready = get(&client, format!("http://{addr}/readyz")).await;
        assert_eq!(ready.status(), 200);
    }
    let metrics = get(&client, format!("http://{}/metrics", system.write_addr))
        .await
        .text()
        .await
        .unwrap();
    for expected in [
        r#"http_requests_total{service="api-write",method="PUT",route="/buy_order",status="200"}"#,
        r#"orders_placed_total{currency="USD"}"#,
        r#"http_requests_total{service="api-read",method="GET",route="/buy_orders",status="200"}"#,
        "http_request_duration_seconds_bucket",
        "events_projected_total",
        // What the alerts read (deploy/prometheus/alerts.yml): each service's readiness as
        // evaluated every 5 s (and the cap, below).
        r#"service_ready{service="api-write"} 1"#,
        r#"service_ready{service="api-read"} 1"#,
    ] {
        assert!(metrics.contains(expected), "{expected} in\n{metrics}");
    }
    // The cap in BTC (the recorder is the process's: tests running beside this one, with
    // other caps, set the same gauge, so only its presence and sense are checked here).
    let cap: f64 = metrics
        .lines()
        .find_map(|line| line.strip_prefix("btc_cap "))
        .unwrap_or_else(|| panic!("no btc_cap in\n{metrics}"))
        .trim()
        .parse()
        .unwrap();
    assert!(cap > 0.0, "btc_cap {cap}");
    system.shutdown();
    tokio::time::timeout(Duration::from_secs(5), system.wait())
        .await
        .unwrap();
}

#[tokio::test]
async fn twenty_concurrent_identical_puts_give_one_order_and_identical_bodies() {
    let system = system("100", "fixed:USD=48478.88,EUR=41191.91,GBP=35330.89").await;
    let client = reqwest::Client::new();
    let body = json!({"currency": "USD", "amount": "123.45", "idempotence_key": key()});
    let requests: Vec<_> = (0..20)
        .map(|_| tokio::spawn(put(client.clone(), write_url(&system), body.clone())))
        .collect();
    let mut bodies = HashSet::new();
    let mut originals = 0;
    for request in requests {
        let answer = request.await.unwrap();
        assert_eq!(answer.status, 200);
        originals += usize::from(!answer.replayed);
        bodies.insert(answer.text);
    }
    assert_eq!(bodies.len(), 1, "20 identical bodies");
    assert_eq!(originals, 1, "exactly one request placed it");
    let only: Value = serde_json::from_str(bodies.iter().next().unwrap()).unwrap();
    assert_eq!(only["buy_order"]["btc_amount"], "0.00254647");
    wait_for_orders(&client, &system, 1).await;
    assert_eq!(
        all_rows(&client, &system, 100).await,
        vec![only["buy_order"].clone()],
        "one order"
    );
    system.shutdown();
}

#[tokio::test]
async fn concurrent_orders_never_cross_a_small_cap_and_only_misfits_are_refused() {
    // cap 0.5 BTC; at 1000 USD/BTC, 1 USD = 0.001 BTC; orders of 10..=90 USD = 0.01..0.09 BTC
    let system = system("0.5", "fixed:USD=1000").await;
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..120u64)
        .map(|i| {
            let amount = 10 * (i % 9 + 1);
            let body = json!({"currency": "USD", "amount": amount, "idempotence_key": key()});
            let answer = tokio::spawn(put(client.clone(), write_url(&system), body));
            (amount * 100_000, answer) // the order's BTC, in satoshis
        })
        .collect();
    let mut sold = 0u64;
    let mut refused = Vec::new();
    for (sats, answer) in requests {
        let answer = answer.await.unwrap();
        match answer.status {
            200 => {
                assert_eq!(
                    btc_to_sats(answer.json()["buy_order"]["btc_amount"].as_str().unwrap()),
                    sats
                );
                sold += sats;
            }
            409 => {
                assert_eq!(answer.json()["error"]["code"], "btc_cap_exceeded");
                refused.push(sats);
            }
            other => panic!("unexpected {other}: {}", answer.text),
        }
    }
    let cap = 50_000_000u64;
    assert!(sold <= cap, "sold {sold} over the cap {cap}");
    let remaining = cap - sold;
    assert!(!refused.is_empty(), "the cap was reached");
    for sats in refused {
        assert!(
            sats > remaining,
            "refused {sats} sat while {remaining} remained"
        );
    }
    // the read side shows exactly the accepted orders
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rows = all_rows(&client, &system, 100).await;
        let shown: u64 = rows
            .iter()
            .map(|row| btc_to_sats(row["btc_amount"].as_str().unwrap()))
            .sum();
        if shown == sold {
            break;
        }
        assert!(shown < sold, "read side shows more BTC than was sold");
        assert!(
            tokio::time::Instant::now() < deadline,
            "read side stuck at {shown} of {sold}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    system.shutdown();
}

/// `GET /docs` on both APIs: Swagger UI for that API's own document, every asset it references
/// served by the service itself (no external URL), each under the strict CSP.
#[tokio::test]
async fn the_docs_page_and_every_asset_it_references_are_served_by_the_service() {
    let system = system("100", "simulated").await;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    for addr in [system.write_addr, system.read_addr] {
        let moved = get(&client, format!("http://{addr}/docs")).await;
        assert_eq!(moved.status(), 301);
        assert_eq!(moved.headers()["location"], "/docs/");
        let page = get(&client, format!("http://{addr}/docs/")).await;
        assert_eq!(page.status(), 200);
        assert!(page.headers()["content-security-policy"]
            .to_str()
            .unwrap()
            .starts_with("default-src 'none'; script-src 'self'"));
        let html = page.text().await.unwrap();
        assert!(!html.contains("http:") && !html.contains("https:") && !html.contains("//cdn"));
        let assets: Vec<&str> = html
            .split(['"', '\''])
            .filter(|part| {
                [".js", ".css", ".png"]
                    .iter()
                    .any(|ext| part.ends_with(ext))
            })
            .collect();
        assert!(assets.len() >= 5, "{assets:?}");
        for asset in assets {
            let path = asset.trim_start_matches("./");
            assert!(
                !path.contains(':') && !path.starts_with('/'),
                "{asset} is not the service's"
            );
            let served = get(&client, format!("http://{addr}/docs/{path}")).await;
            assert_eq!(served.status(), 200, "{asset}");
            assert!(served.headers().contains_key("content-security-policy"));
            assert!(!served.bytes().await.unwrap().is_empty(), "{asset}");
        }
        let init = get(
            &client,
            format!("http://{addr}/docs/swagger-initializer.js"),
        )
        .await
        .text()
        .await
        .unwrap();
        assert!(init.contains(r#""url": "/openapi.json""#), "{init}");
        let document = get(&client, format!("http://{addr}/openapi.json")).await;
        assert_eq!(document.status(), 200);
        let missing = get(&client, format!("http://{addr}/docs/nope.js")).await;
        assert_eq!(missing.status(), 404);
    }
    system.shutdown();
    tokio::time::timeout(Duration::from_secs(5), system.wait())
        .await
        .unwrap();
}
