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

async fn put(client: &reqwest::Client, system: &System, body: Value) -> reqwest::Response {
    client
        .put(format!("http://{}/buy_order", system.write_addr))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap()
}

async fn page(client: &reqwest::Client, system: &System, query: &str) -> Value {
    let response = client
        .get(format!("http://{}/buy_orders{query}", system.read_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    serde_json::from_str(&response.text().await.unwrap()).unwrap()
}

/// Waits (bounded) until the read side shows `n` orders: it is eventually consistent.
async fn wait_for_orders(client: &reqwest::Client, system: &System, n: usize) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let shown = page(client, system, "?page_size=100").await["rows"]
            .as_array()
            .unwrap()
            .len();
        if shown >= n.min(100) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "read side stuck at {shown} of {n}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn orders_placed_are_paged_newest_first_each_exactly_once() {
    let system = system("100", "simulated").await;
    let client = reqwest::Client::new();
    let mut placed = Vec::new();
    for i in 0..25 {
        let currency = ["USD", "EUR", "GBP"][i % 3];
        let response = put(&client, &system, json!({"currency": currency, "amount": format!("{}.{:02}", 10 + i, i), "idempotence_key": key()})).await;
        assert_eq!(response.status(), 200);
        let body: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        placed.push(body["buy_order"].clone());
    }
    wait_for_orders(&client, &system, 25).await;

    let mut seen = Vec::new();
    let mut query = "?page_size=10".to_owned();
    loop {
        let page = page(&client, &system, &query).await;
        let rows = page["rows"].as_array().unwrap().clone();
        if rows.is_empty() {
            assert_eq!(page["last_reference"], Value::Null);
            break;
        }
        assert!(rows.len() <= 10);
        query = format!(
            "?page_size=10&last_reference={}",
            page["last_reference"].as_str().unwrap()
        );
        seen.extend(rows);
    }
    placed.reverse();
    assert_eq!(
        seen, placed,
        "every order exactly once, newest first, as the write API answered"
    );
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
    let requests = (0..20).map(|_| {
        let (client, body) = (client.clone(), body.clone());
        let url = format!("http://{}/buy_order", system.write_addr);
        tokio::spawn(async move {
            let response = client
                .put(url)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .unwrap();
            let replayed = response.headers().get("idempotent-replayed").is_some();
            (
                response.status().as_u16(),
                replayed,
                response.text().await.unwrap(),
            )
        })
    });
    let mut bodies = HashSet::new();
    let mut originals = 0;
    for request in requests {
        let (status, replayed, text) = request.await.unwrap();
        assert_eq!(status, 200);
        originals += usize::from(!replayed);
        bodies.insert(text);
    }
    assert_eq!(bodies.len(), 1, "20 identical bodies");
    assert_eq!(originals, 1, "exactly one request placed it");
    let only: Value = serde_json::from_str(bodies.iter().next().unwrap()).unwrap();
    assert_eq!(only["buy_order"]["btc_amount"], "0.00254647");
    wait_for_orders(&client, &system, 1).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let rows = page(&client, &system, "?page_size=100").await["rows"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(rows, vec![only["buy_order"].clone()], "one order");
    system.shutdown();
}

#[tokio::test]
async fn concurrent_orders_never_cross_a_small_cap_and_only_misfits_are_refused() {
    // cap 0.5 BTC; at 1000 USD/BTC, 1 USD = 0.001 BTC; orders of 10..=90 USD = 0.01..0.09 BTC
    let system = system("0.5", "fixed:USD=1000").await;
    let client = reqwest::Client::new();
    let requests: Vec<_> = (0..120)
        .map(|i| {
            let (client, url) = (
                client.clone(),
                format!("http://{}/buy_order", system.write_addr),
            );
            let amount = 10 * (i % 9 + 1);
            tokio::spawn(async move {
                let body = json!({"currency": "USD", "amount": amount, "idempotence_key": key()});
                let response = client
                    .put(url)
                    .header("content-type", "application/json")
                    .body(body.to_string())
                    .send()
                    .await
                    .unwrap();
                let status = response.status().as_u16();
                (
                    amount,
                    status,
                    serde_json::from_str::<Value>(&response.text().await.unwrap()).unwrap(),
                )
            })
        })
        .collect();
    let mut sold_sats = 0u64;
    let mut refused = Vec::new();
    for request in requests {
        let (amount, status, body) = request.await.unwrap();
        let sats = amount as u64 * 100_000; // amount / 1000 BTC in satoshis
        match status {
            200 => sold_sats += sats,
            409 => {
                assert_eq!(body["error"]["code"], "btc_cap_exceeded");
                refused.push(sats);
            }
            other => panic!("unexpected {other}: {body}"),
        }
    }
    let cap = 50_000_000u64;
    assert!(sold_sats <= cap, "sold {sold_sats} over the cap {cap}");
    let remaining = cap - sold_sats;
    assert!(!refused.is_empty(), "the cap was reached");
    for sats in refused {
        assert!(
            sats > remaining,
            "refused {sats} sat while {remaining} remained"
        );
    }
    // the read side agrees
    wait_for_orders(&client, &system, 1).await;
    let mut total = 0u64;
    let mut query = "?page_size=100".to_owned();
    loop {
        let page = page(&client, &system, &query).await;
        let rows = page["rows"].as_array().unwrap();
        if rows.is_empty() {
            break;
        }
        for row in rows {
            let btc = row["btc_amount"].as_str().unwrap();
            let (whole, frac) = btc.split_once('.').unwrap();
            total += whole.parse::<u64>().unwrap() * 100_000_000 + frac.parse::<u64>().unwrap();
        }
        query = format!(
            "?page_size=100&last_reference={}",
            page["last_reference"].as_str().unwrap()
        );
    }
    assert!(total <= sold_sats);
    system.shutdown();
}
