//! End to end through RabbitMQ: the all-in-one with DATABASE_URL and AMQP_URL (relay publishing,
//! projector consuming), driven over HTTP.

use std::time::Duration;

use buy_orders::{start, Config};
use clap::Parser;
use event_bus::testing::{amqp_url, TestTopology};
use order_store::postgres::{PgEventStore, PgSettings};
use order_store::testing::TestDb;
use order_store::{EventLog, Position};
use serde_json::{json, Value};

#[tokio::test]
async fn orders_through_api_write_appear_in_get_buy_orders_via_rabbitmq() {
    orders_flow_through(&amqp_url()).await;
}

/// The same through a TLS endpoint, as a managed broker offers only: the relay publishes and
/// the projector consumes over amqps://, verifying the broker's certificate (issued by the
/// test's own authority) and host name.
#[tokio::test]
async fn orders_flow_end_to_end_over_amqps() {
    let ca = settings_kit::testing::TestCa::new("e2e-amqps");
    let broker = event_bus::testing::TlsBroker::start(&ca.issue("localhost", &["localhost"]), None);
    orders_flow_through(&broker.url(
        "localhost",
        &format!("cacertfile={}", ca.certificate().display()),
    ))
    .await;
}

async fn orders_flow_through(amqp: &str) {
    let db = TestDb::create().await;
    let topology = TestTopology::create();
    let config = Config::try_parse_from([
        "buy-orders",
        "--write-addr=127.0.0.1:0",
        "--read-addr=127.0.0.1:0",
        "--price-source=fixed:USD=48478.88,EUR=41191.91,GBP=35330.89",
        &format!("--database-url={}", db.url()),
        &format!("--amqp-url={amqp}"),
        &format!("--amqp-exchange={}", topology.topology.exchange),
        &format!("--amqp-queue={}", topology.topology.queue),
    ])
    .unwrap();
    let key = api_keys::testing::client_key(db.url(), "rabbit", false).await;
    let system = start(&config).await.unwrap();
    let client = reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        )]))
        .build()
        .unwrap();
    let mut placed = Vec::new();
    for i in 0..30 {
        let currency = ["USD", "EUR", "GBP"][i % 3];
        let body = json!({"currency": currency, "amount": format!("{}.50", i + 1),
                          "idempotence_key": uuid::Uuid::new_v4().to_string()});
        let response = client
            .put(format!("http://{}/buy_order", system.write_addr))
            .header("content-type", "application/json")
            .body(body.to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let answer: Value = serde_json::from_str(&response.text().await.unwrap()).unwrap();
        placed.push(answer["buy_order"].clone());
    }
    placed.reverse();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let page: Value = client
            .get(format!(
                "http://{}/buy_orders?page_size=100",
                system.read_addr
            ))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["rows"].as_array().unwrap().len() == 30 {
            assert_eq!(
                page["rows"].as_array().unwrap(),
                &placed,
                "newest first, as answered"
            );
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "orders did not arrive"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // they went through the broker: the relay published and confirmed all of them
    let store = PgEventStore::connect(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    assert_eq!(store.head().await.unwrap(), Position(30));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while store.relay_checkpoint().await.unwrap() < Position(30) {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        topology.message_count(&topology.topology.queue),
        0,
        "all consumed"
    );
    // The process's relay holds the lease, as the NoRelayActive alert reads it.
    let metrics = reqwest::get(format!("http://{}/metrics", system.write_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(metrics.contains("relay_active 1"), "{metrics}");
    system.shutdown();
    tokio::time::timeout(Duration::from_secs(10), system.wait())
        .await
        .unwrap();
}

/// With the broker unreachable, the write API is still ready (it takes orders: the relay
/// publishes them later), and does take them.
#[tokio::test]
async fn the_write_api_stays_ready_while_the_broker_is_down() {
    let db = TestDb::create().await;
    let key = api_keys::testing::client_key(db.url(), "ready", false).await;
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead_broker = format!("amqp://guest:guest@{}/%2f", closed.local_addr().unwrap());
    drop(closed);
    let config = Config::try_parse_from([
        "buy-orders",
        "--write-addr=127.0.0.1:0",
        "--read-addr=127.0.0.1:0",
        "--price-source=fixed:USD=48478.88,EUR=41191.91,GBP=35330.89",
        &format!("--database-url={}", db.url()),
        &format!("--amqp-url={dead_broker}"),
    ])
    .unwrap();
    let system = start(&config).await.unwrap();
    let client = reqwest::Client::new();
    let ready = client
        .get(format!("http://{}/readyz", system.write_addr))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200, "{}", ready.text().await.unwrap());
    let placed = client
        .put(format!("http://{}/buy_order", system.write_addr))
        .bearer_auth(&key)
        .header("content-type", "application/json")
        .body(json!({"currency": "USD", "amount": "10", "idempotence_key": uuid::Uuid::new_v4().to_string()}).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 200);
    system.shutdown();
}
