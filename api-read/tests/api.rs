//! Every status code of the read API, through `warp::test` against the in-memory read table.

use std::sync::Arc;

use async_trait::async_trait;
use order_domain::*;
use order_store::memory::{MemEventStore, MemReadModel};
use order_store::*;
use price_feed::FixedSource;
use serde_json::Value;
use warp::filters::BoxedFilter;
use warp::reply::Response;
use warp::Filter;

/// A read table that is down.
struct Down;

#[async_trait]
impl ReadModel for Down {
    async fn page(&self, _: PageRequest, _: &Scope) -> Result<Page, ReadError> {
        Err(StoreError::Unavailable("connection refused".into()).into())
    }
    async fn get(&self, _: OrderId, _: &Scope) -> Result<Option<OrderView>, ReadError> {
        Err(StoreError::Unavailable("connection refused".into()).into())
    }
    async fn ping(&self) -> Result<(), StoreError> {
        Err(StoreError::Unavailable("connection refused".into()))
    }
}

fn rate() -> FixedSource {
    "USD=48478.88,EUR=48478.88,GBP=48478.88".parse().unwrap()
}

fn routes(model: Arc<dyn ReadModel>) -> BoxedFilter<(Response,)> {
    api_read::ReadApi::new(
        model,
        api_keys::Identity::Off,
        std::sync::Arc::new(service_kit::RateLimits::off()),
    )
    .routes()
    .recover(service_kit::recover)
    .unify()
    .map(warp::Reply::into_response)
    .boxed()
}

/// `n` orders placed and projected; returns the routes and the ids, newest first.
async fn with_orders(n: usize) -> (BoxedFilter<(Response,)>, Vec<String>) {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(rate())));
    for i in 0..n {
        writer
            .place(PlaceBuyOrder {
                currency: Currency::ALL[i % 3],
                amount: FiatAmount::from_cents(100 + i as u64).unwrap(),
                ..order_domain::testing::order_for("reader-test", "1")
            })
            .await
            .unwrap();
    }
    let model = MemReadModel::new();
    model
        .apply(&store.read_after(Position::ZERO, 10_000).await.unwrap())
        .await
        .unwrap();
    let ids = store
        .read_after(Position::ZERO, 10_000)
        .await
        .unwrap()
        .iter()
        .rev()
        .map(|e| e.aggregate_id.to_string())
        .collect();
    (routes(Arc::new(model)), ids)
}

async fn get(routes: &BoxedFilter<(Response,)>, path: &str) -> (u16, Value) {
    let response = warp::test::request().path(path).reply(routes).await;
    let json = serde_json::from_slice(response.body()).unwrap();
    (response.status().as_u16(), json)
}

#[tokio::test]
async fn pages_walk_every_order_once_newest_first() {
    let (routes, ids) = with_orders(25).await;
    let mut seen = Vec::new();
    let mut path = "/buy_orders".to_owned();
    let mut sizes = Vec::new();
    loop {
        let (status, page) = get(&routes, &path).await;
        assert_eq!(status, 200);
        let rows = page["rows"].as_array().unwrap();
        sizes.push(rows.len());
        if rows.is_empty() {
            assert_eq!(page["last_reference"], Value::Null);
            break;
        }
        assert_eq!(page["last_reference"], rows.last().unwrap()["id"]);
        for row in rows {
            seen.push(row["id"].as_str().unwrap().to_owned());
            for field in [
                "created_at",
                "currency",
                "currency_amount",
                "btc_rate",
                "btc_amount",
            ] {
                assert!(row[field].is_string(), "{field} in {row}");
            }
        }
        path = format!(
            "/buy_orders?last_reference={}",
            page["last_reference"].as_str().unwrap()
        );
    }
    assert_eq!(sizes, [10, 10, 5, 0], "default page size is 10");
    assert_eq!(seen, ids);
}

#[tokio::test]
async fn page_size_is_honoured() {
    let (routes, ids) = with_orders(7).await;
    let (_, page) = get(&routes, "/buy_orders?page_size=3").await;
    let rows: Vec<&str> = page["rows"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(rows, ids[..3]);
    let (_, page) = get(
        &routes,
        &format!("/buy_orders?page_size=100&last_reference={}", ids[2]),
    )
    .await;
    assert_eq!(page["rows"].as_array().unwrap().len(), 4);
}

#[tokio::test]
async fn status_422_for_bad_page_size_or_malformed_reference() {
    let (routes, _) = with_orders(1).await;
    for path in [
        "/buy_orders?page_size=0",
        "/buy_orders?page_size=101",
        "/buy_orders?page_size=ten",
        "/buy_orders?last_reference=not-a-uuid",
        "/buy_orders/not-a-uuid",
    ] {
        let (status, body) = get(&routes, path).await;
        assert_eq!(status, 422, "{path}");
        assert_eq!(body["error"]["code"], "validation_failed", "{path}");
    }
}

/// An `X-Client-Id` that is no client id (with `AUTH=off`) is the same 422 on both APIs
/// (before, the read API answered 401 where the write API answered 422).
#[tokio::test]
async fn status_422_for_an_x_client_id_that_is_no_client_id() {
    let (routes, _) = with_orders(1).await;
    let response = warp::test::request()
        .path("/buy_orders")
        .header("x-client-id", "bad id")
        .reply(&routes)
        .await;
    assert_eq!(response.status(), 422);
    let body: serde_json::Value = serde_json::from_slice(response.body()).unwrap();
    assert_eq!(body["error"]["code"], "validation_failed");
    assert_eq!(body["error"]["fields"][0]["field"], "X-Client-Id");
}

#[tokio::test]
async fn status_404_for_unknown_reference_and_unknown_order() {
    let (routes, ids) = with_orders(2).await;
    let nobody = "00000000-0000-4000-8000-000000000000";
    let (status, body) = get(&routes, &format!("/buy_orders?last_reference={nobody}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "unknown_reference");
    let (status, body) = get(&routes, &format!("/buy_orders/{nobody}")).await;
    assert_eq!(status, 404);
    assert_eq!(body["error"]["code"], "not_found");
    let (status, body) = get(&routes, &format!("/buy_orders/{}", ids[1])).await;
    assert_eq!(status, 200);
    assert_eq!(body["id"], ids[1].as_str());
}

#[tokio::test]
async fn status_503_when_the_read_table_is_down() {
    let routes = routes(Arc::new(Down));
    let (status, body) = get(&routes, "/buy_orders").await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
    let (status, _) = get(&routes, "/buy_orders/00000000-0000-4000-8000-000000000000").await;
    assert_eq!(status, 503);
}

#[tokio::test]
async fn health_and_unknown_routes() {
    let (routes, _) = with_orders(0).await;
    assert_eq!(get(&routes, "/healthcheck").await.0, 200);
    assert_eq!(get(&routes, "/nope").await.0, 404);
    let response = warp::test::request()
        .method("POST")
        .path("/buy_orders")
        .reply(&routes)
        .await;
    assert_eq!(response.status(), 405);
}

/// A read with a consistency token answers once the table has applied it, however long that
/// takes within the bound; past the bound, 503 `not_yet_consistent` with `Retry-After`, and
/// nothing about the order; a malformed token is 400, never ignored.
#[tokio::test(flavor = "multi_thread")]
async fn a_consistency_token_waits_for_its_write_and_is_503_past_the_bound() {
    let store = MemEventStore::new(BtcCap::DEFAULT);
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(rate())));
    let placed = writer
        .place(order_domain::testing::order("25"))
        .await
        .unwrap();
    let id = placed.order.order_id;
    let token = ConsistencyToken::at(placed.position.unwrap()).to_string();
    let model = Arc::new(MemReadModel::new());
    let short = |wait_ms| {
        api_read::ReadApi::new(
            model.clone(),
            api_keys::Identity::Off,
            Arc::new(service_kit::RateLimits::off()),
        )
        .with_consistency_wait(std::time::Duration::from_millis(wait_ms))
        .routes()
        .recover(service_kit::recover)
        .unify()
        .map(warp::Reply::into_response)
        .boxed()
    };
    let impatient = short(100);
    // Without a token: the table does not have it yet, and says so at once.
    assert_eq!(get(&impatient, &format!("/buy_orders/{id}")).await.0, 404);
    for path in [
        format!("/buy_orders/{id}?consistency_token={token}"),
        format!("/buy_orders?consistency_token={token}"),
    ] {
        let response = warp::test::request().path(&path).reply(&impatient).await;
        assert_eq!(response.status(), 503, "{path}");
        assert_eq!(response.headers()["retry-after"], "1");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["code"], "not_yet_consistent");
        assert!(!body.to_string().contains(&id.to_string()));
    }
    for (path, header) in [
        (format!("/buy_orders/{id}"), "ct1_garbage"),
        ("/buy_orders".to_owned(), "0"),
        (
            format!("/buy_orders?consistency_token={token}"),
            "ct1_00000000000000ff",
        ),
    ] {
        let response = warp::test::request()
            .path(&path)
            .header("consistency-token", header)
            .reply(&impatient)
            .await;
        assert_eq!(response.status(), 400, "{path} {header}");
        let body: Value = serde_json::from_slice(response.body()).unwrap();
        assert_eq!(body["error"]["code"], "invalid_consistency_token");
    }
    // The projector applies it a little later: the patient read waits for it, then answers.
    let patient = short(10_000);
    let applier = {
        let (model, store) = (model.clone(), store.clone());
        tokio::spawn(async move {
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            let log = store.read_after(Position::ZERO, 10).await.unwrap();
            model.apply(&log).await.unwrap();
        })
    };
    let one = warp::test::request()
        .path(&format!("/buy_orders/{id}"))
        .header("consistency-token", &token)
        .reply(&patient);
    let list_path = format!("/buy_orders?consistency_token={token}");
    let list = get(&patient, &list_path);
    let (one, (status, page)) = tokio::join!(one, list);
    assert_eq!(one.status(), 200);
    let one: Value = serde_json::from_slice(one.body()).unwrap();
    assert_eq!(one["id"], id.to_string());
    assert_eq!(status, 200);
    assert_eq!(page["rows"][0]["id"], id.to_string());
    applier.await.unwrap();
}

/// A read model that cannot tell what it applied refuses a token (503), never ignores it.
#[tokio::test]
async fn a_token_on_a_read_model_that_cannot_wait_is_503_not_ignored() {
    let routes = routes(Arc::new(Down));
    let (status, body) = get(
        &routes,
        "/buy_orders?consistency_token=ct1_0000000000000001",
    )
    .await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");
}
