//! `buy-orders-client` against the real services: a writer killed while a placement is in
//! flight (the retry on the other writer gives exactly one order), a burst past the rate limit
//! (the client waits as told and every order is placed once), read-your-writes across the
//! processes.

use std::time::{Duration, Instant};

use buy_orders_client::{Client, Currency, FiatAmount, NewOrder};
use futures::TryStreamExt;
use order_store::testing::{AtCommit, OutageProxy, TestDb};
use support::{free_ports, spawn_service};

mod support;

/// A client called `name` in the registry at `url`, and its key.
async fn key(url: &str, name: &str) -> String {
    api_keys::testing::client_key(url, name, false).await
}

async fn stored_orders(url: &str) -> i64 {
    let pool = sqlx::PgPool::connect(url).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    pool.close().await;
    n
}

/// Writer A stores the order but its answer from the database is lost (the commit delivered,
/// then the database gone, as a network cut does), and A is killed while it is still trying to
/// learn the outcome, the request in flight. The client's retry, same key, on writer B finds
/// the stored order and answers it as a replay: one order. A client that made a new key per
/// attempt would have bought twice.
#[tokio::test(flavor = "multi_thread")]
async fn a_writer_killed_mid_place_gives_exactly_one_order_through_the_other() {
    let db = TestDb::create().await;
    let api_key = key(db.url(), "shop").await;
    let cut = OutageProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let a_url = cut.url_for(db.url());
    let (pa, pb) = (free_ports(), free_ports());
    let mut a = spawn_service("api-write", &a_url, &[], pa);
    let mut b = spawn_service("api-write", db.url(), &[], pb);
    a.ready().await;
    b.ready().await;
    let client = Client::builder(api_key)
        .write_url(a.url(""))
        .write_url(b.url(""))
        .build()
        .unwrap();
    // Warm: the first placement goes to A, the first writer.
    client
        .place(NewOrder::new(
            Currency::USD,
            FiatAmount::parse("1.00").unwrap(),
        ))
        .await
        .unwrap();
    assert_eq!(stored_orders(db.url()).await, 1);

    cut.cut_at_next_commit(AtCommit::Deliver);
    let in_flight = {
        let client = client.clone();
        tokio::spawn(async move {
            client
                .place(NewOrder::new(
                    Currency::EUR,
                    FiatAmount::parse("42.00").unwrap(),
                ))
                .await
        })
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cut.commit_caught() {
        assert!(Instant::now() < deadline, "A never committed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(stored_orders(db.url()).await, 2, "A's commit is stored");
    assert!(!in_flight.is_finished(), "A is still resolving its outcome");
    a.child.kill().unwrap();
    a.child.wait().unwrap();
    let placed = tokio::time::timeout(Duration::from_secs(30), in_flight)
        .await
        .expect("the client gave up")
        .unwrap()
        .expect("answered through B");
    assert!(placed.replayed, "B found A's order: the same key");
    assert_eq!(placed.order.currency_amount.to_string(), "42.00");
    assert_eq!(stored_orders(db.url()).await, 2, "one order");
    // The same key again: the same order.
    let again = client
        .place(
            NewOrder::new(Currency::EUR, FiatAmount::parse("42.00").unwrap())
                .with_key(placed.idempotence_key),
        )
        .await
        .unwrap();
    assert_eq!((again.replayed, &again.order), (true, &placed.order));
    assert_eq!(stored_orders(db.url()).await, 2);
}

/// 30 placements at once against a limit of 5 per second (burst 5): the writer answers many
/// 429s, the client waits as `Retry-After` says and places each once; a read right after shows
/// them all (the client's token).
#[tokio::test(flavor = "multi_thread")]
async fn a_burst_past_the_rate_limit_waits_as_told_and_places_each_order_once() {
    let db = TestDb::create().await;
    let api_key = key(db.url(), "bursty").await;
    let ports = free_ports();
    let limits = [("RATE_LIMIT_PER_S", "5"), ("RATE_LIMIT_BURST", "5")];
    let mut writer = spawn_service("api-write", db.url(), &limits, ports);
    writer.ready().await;
    let mut projector = spawn_service("projector", db.url(), &[], ports);
    projector.ready().await;
    let mut reader = spawn_service("api-read", db.url(), &[], ports);
    reader.ready().await;
    let client = Client::builder(api_key)
        .write_url(writer.url(""))
        .read_url(reader.url(""))
        .place_deadline(Duration::from_secs(60))
        .build()
        .unwrap();
    let started = Instant::now();
    let placements: Vec<_> = (0..30)
        .map(|i| {
            let client = client.clone();
            tokio::spawn(async move {
                let amount = FiatAmount::from_cents(100 + i).unwrap();
                client.place(NewOrder::new(Currency::GBP, amount)).await
            })
        })
        .collect();
    let mut ids = Vec::new();
    for placement in placements {
        ids.push(
            placement
                .await
                .unwrap()
                .expect("every order placed")
                .order
                .id,
        );
    }
    // 30 at 5 per second after a burst of 5: at least 5 seconds of waiting as told.
    assert!(
        started.elapsed() >= Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let metrics = writer.metrics().await;
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("rate_limited_total"))
        .and_then(|rest| rest.split_whitespace().last())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0.0);
    assert!(refused >= 10.0, "the server refused the burst: {refused}");
    assert_eq!(stored_orders(db.url()).await, 30);
    // Read-your-writes: all 30 in the list at once, newest first, paged by 7.
    let listed: Vec<_> = client.list(7).try_collect().await.unwrap();
    assert_eq!(listed.len(), 30);
    let mut sorted = ids.clone();
    sorted.sort();
    let mut seen: Vec<_> = listed.iter().map(|o| o.id).collect();
    seen.sort();
    assert_eq!(seen, sorted);
    assert!(listed
        .windows(2)
        .all(|w| w[0].created_at >= w[1].created_at));
}
