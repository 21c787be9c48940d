//! The read API on the real PostgreSQL read table: it serves what the projector wrote, and a
//! database outage is a 503 it recovers from by itself.

use std::sync::Arc;
use std::time::Duration;

use api_read::ReadApi;
use order_domain::{BuyOrderServices, Currency, PlaceBuyOrder};
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::{OutageProxy, TestDb};
use order_store::{CqrsOrderWriter, EventLog, OrderWriter, Position, ReadModelWriter};
use price_feed::FixedSource;
use serde_json::Value;
use service_kit::CancellationToken;

#[tokio::test]
async fn serves_the_table_and_survives_an_outage() {
    let db = TestDb::create().await;
    // three orders, projected
    let store = PgEventStore::open(
        &PgSettings::for_url(db.url()),
        order_domain::BtcCap::DEFAULT,
    )
    .await
    .unwrap();
    let prices: FixedSource = "EUR=41191.91".parse().unwrap();
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(prices)));
    for _ in 0..3 {
        writer
            .place(PlaceBuyOrder {
                currency: Currency::EUR,
                ..order_domain::testing::order_for("reader", "99.99")
            })
            .await
            .unwrap();
    }
    let direct = PgReadModel::open(&PgSettings::for_url(db.url()))
        .await
        .unwrap();
    direct
        .apply(&store.read_after(Position::ZERO, 10).await.unwrap())
        .await
        .unwrap();

    // api-read through a proxy we can cut
    let proxy = OutageProxy::start("127.0.0.1:5432".parse().unwrap()).await;
    let mut settings = PgSettings::for_url(&proxy.url_for(db.url()));
    settings.acquire_timeout = Duration::from_millis(500);
    let model: Arc<dyn order_store::ReadModel> =
        Arc::new(PgReadModel::open(&settings).await.unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/buy_orders", listener.local_addr().unwrap());
    let stop = CancellationToken::new();
    tokio::spawn(service_kit::serve(
        api_read::ops(model.clone()),
        ReadApi::new(
            model,
            api_keys::Identity::Off,
            std::sync::Arc::new(service_kit::RateLimits::off()),
        )
        .routes(),
        listener,
        stop.clone(),
    ));
    let client = reqwest::Client::new();
    let get = |url: String| {
        let client = client.clone();
        async move {
            let response = client.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            (
                status,
                serde_json::from_str::<Value>(&response.text().await.unwrap()).unwrap(),
            )
        }
    };

    let (status, page) = get(format!("{url}?page_size=2")).await;
    assert_eq!(status, 200);
    assert_eq!(page["rows"].as_array().unwrap().len(), 2);
    assert_eq!(page["rows"][0]["btc_rate"], "41191.91");
    let (status, rest) = get(format!(
        "{url}?page_size=2&last_reference={}",
        page["last_reference"].as_str().unwrap()
    ))
    .await;
    assert_eq!(status, 200);
    assert_eq!(rest["rows"].as_array().unwrap().len(), 1);

    proxy.cut();
    let (status, body) = get(url.clone()).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"]["code"], "unavailable");

    proxy.restore();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (status, _) = get(url.clone()).await;
        if status == 200 {
            break;
        }
        assert_eq!(status, 503);
        assert!(tokio::time::Instant::now() < deadline, "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
}
