//! Read-your-writes through the real processes: the `Consistency-Token` of a `PUT` answer makes
//! `api-read` answer only once its read table shows the order, on the primary and on a hot
//! standby (which waits for its own replayed checkpoint, not the primary's).

use std::time::{Duration, Instant};

use order_store::testing::{PrivateServer, TestDb};
use serde_json::{json, Value};
use support::{free_ports, spawn_service, Running};

mod support;

/// A client called `name` in the registry at `url`, and its key.
async fn client(url: &str, name: &str) -> String {
    api_keys::testing::client_key(url, name, false).await
}

/// Places a new order of `amount` USD; the answer's order id and consistency token.
async fn place(
    http: &reqwest::Client,
    writer: &Running,
    key: &str,
    amount: &str,
) -> (String, String) {
    let body = json!({"currency": "USD", "amount": amount,
                      "idempotence_key": uuid::Uuid::new_v4().to_string()});
    let answer = http
        .put(writer.url("/buy_order"))
        .bearer_auth(key)
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let token = answer.headers()["consistency-token"]
        .to_str()
        .unwrap()
        .to_owned();
    let body: Value = answer.json().await.unwrap();
    (body["buy_order"]["id"].as_str().unwrap().to_owned(), token)
}

/// `GET path` on `reader` as `key`, with `token` in the header if given: status and body.
async fn read(
    http: &reqwest::Client,
    reader: &Running,
    key: &str,
    path: &str,
    token: Option<&str>,
) -> (u16, Value, Option<String>) {
    let mut request = http.get(reader.url(path)).bearer_auth(key);
    if let Some(token) = token {
        request = request.header("consistency-token", token);
    }
    let answer = request.send().await.unwrap();
    let status = answer.status().as_u16();
    let retry_after = answer
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, answer.json().await.unwrap(), retry_after)
}

/// `GET /buy_orders/<id>` with `token` shows the order.
async fn shows(http: &reqwest::Client, reader: &Running, key: &str, id: &str, token: &str) {
    let path = format!("/buy_orders/{id}");
    let (status, order, _) = read(http, reader, key, &path, Some(token)).await;
    assert_eq!(
        (status, order["id"].as_str()),
        (200, Some(id)),
        "{}",
        reader.log()
    );
}

/// With its token, a read right after the write shows it, every time; a stopped projector makes
/// it 503 `not_yet_consistent` within the bound, and a restarted one serves it. Another client's
/// token shows nothing of that client's orders.
#[tokio::test(flavor = "multi_thread")]
async fn a_token_reads_your_write_at_once_and_another_clients_token_shows_nothing() {
    let db = TestDb::create().await;
    // Keys made before the services start: in force from their first request.
    let (alice, bob) = (
        client(db.url(), "alice").await,
        client(db.url(), "bob").await,
    );
    let ports = free_ports();
    let mut writer = spawn_service("api-write", db.url(), &[], ports);
    writer.ready().await;
    let mut projector = spawn_service("projector", db.url(), &[], ports);
    projector.ready().await;
    let wait = [("READ_CONSISTENCY_WAIT_MS", "1500")];
    let mut reader = spawn_service("api-read", db.url(), &wait, ports);
    reader.ready().await;
    let http = reqwest::Client::new();

    for _ in 0..30 {
        let (id, token) = place(&http, &writer, &alice, "10.00").await;
        shows(&http, &reader, &alice, &id, &token).await;
        let (status, page, _) = read(&http, &reader, &alice, "/buy_orders", Some(&token)).await;
        assert_eq!(
            (status, page["rows"][0]["id"].as_str()),
            (200, Some(id.as_str()))
        );
    }
    // Bob holding Alice's token: his own (empty) list, and her order is none of his.
    let (alice_order, alice_token) = place(&http, &writer, &alice, "11.00").await;
    let (status, page, _) = read(&http, &reader, &bob, "/buy_orders", Some(&alice_token)).await;
    assert_eq!((status, page["rows"].as_array().unwrap().len()), (200, 0));
    let path = format!("/buy_orders/{alice_order}?consistency_token={alice_token}");
    let (status, body, _) = read(&http, &reader, &bob, &path, None).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (404, Some("not_found"))
    );

    // The projector stops: a write is stored, and the read with its token cannot be answered.
    drop(projector);
    let (id, token) = place(&http, &writer, &bob, "12.00").await;
    let asked = Instant::now();
    let (status, body, retry_after) = read(
        &http,
        &reader,
        &bob,
        &format!("/buy_orders/{id}"),
        Some(&token),
    )
    .await;
    let waited = asked.elapsed();
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            retry_after.as_deref()
        ),
        (503, Some("not_yet_consistent"), Some("1"))
    );
    assert!(
        waited >= Duration::from_millis(1500) && waited < Duration::from_secs(10),
        "waited the bound: {waited:?}"
    );
    // Restarted, it catches up, and the same read is answered.
    let mut projector = spawn_service("projector", db.url(), &[], ports);
    projector.ready().await;
    shows(&http, &reader, &bob, &id, &token).await;
    // A malformed token is refused, not ignored.
    let (status, body, _) = read(&http, &reader, &bob, "/buy_orders", Some("ct1_nope")).await;
    assert_eq!(
        (status, body["error"]["code"].as_str()),
        (400, Some("invalid_consistency_token"))
    );
}

/// `api-read` on a streaming standby (`pg_basebackup` of a private primary) honours tokens from
/// writes on the primary; with the standby's replay paused (`pg_wal_replay_pause()`) a token it
/// has not replayed is 503 `not_yet_consistent` within the bound even though the primary's
/// projector applied it, and once resumed the order is served.
#[tokio::test(flavor = "multi_thread")]
async fn reads_on_a_hot_standby_wait_for_the_standbys_own_checkpoint() {
    let primary = tokio::task::spawn_blocking(PrivateServer::primary)
        .await
        .unwrap();
    let standby = {
        let primary = &primary;
        tokio::task::block_in_place(|| PrivateServer::standby(primary, primary.addr()))
    };
    let key = client(&primary.url(), "shop").await;
    let ports = free_ports();
    let mut writer = spawn_service("api-write", &primary.url(), &[], ports);
    writer.ready().await;
    let mut projector = spawn_service("projector", &primary.url(), &[], ports);
    projector.ready().await;
    let http = reqwest::Client::new();
    // The standby has replayed the migrations and the key once it has the first order.
    let (first, token) = place(&http, &writer, &key, "5.00").await;
    let standby_pool = sqlx::PgPool::connect(&standby.url()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>("SELECT position FROM projector_checkpoint")
        .fetch_optional(&standby_pool)
        .await
        .ok()
        .flatten()
        .is_none()
    {
        assert!(
            Instant::now() < deadline,
            "the standby never replayed the read table"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let wait = [("READ_CONSISTENCY_WAIT_MS", "1000")];
    let mut reader = spawn_service("api-read", &standby.url(), &wait, ports);
    reader.ready().await;
    shows(&http, &reader, &key, &first, &token).await;
    for _ in 0..20 {
        let (id, token) = place(&http, &writer, &key, "6.00").await;
        let (status, page, _) = read(&http, &reader, &key, "/buy_orders", Some(&token)).await;
        assert_eq!(
            (status, page["rows"][0]["id"].as_str()),
            (200, Some(id.as_str()))
        );
    }

    // Replay paused: the primary takes and projects an order the standby does not have.
    sqlx::query("SELECT pg_wal_replay_pause()")
        .execute(&standby_pool)
        .await
        .unwrap();
    let (id, token) = place(&http, &writer, &key, "7.00").await;
    let primary_pool = sqlx::PgPool::connect(&primary.url()).await.unwrap();
    let position: i64 = token
        .strip_prefix("ct1_")
        .map(|hex| i64::from_str_radix(hex, 16).unwrap())
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while sqlx::query_scalar::<_, i64>("SELECT position FROM projector_checkpoint")
        .fetch_one(&primary_pool)
        .await
        .unwrap()
        < position
    {
        assert!(
            Instant::now() < deadline,
            "the primary's projector never applied it"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let path = format!("/buy_orders/{id}");
    let asked = Instant::now();
    let (status, body, retry_after) = read(&http, &reader, &key, &path, Some(&token)).await;
    assert_eq!(
        (
            status,
            body["error"]["code"].as_str(),
            retry_after.as_deref()
        ),
        (503, Some("not_yet_consistent"), Some("1"))
    );
    assert!(asked.elapsed() < Duration::from_secs(8), "within the bound");
    let (status, _, _) = read(&http, &reader, &key, &path, None).await;
    assert_eq!(status, 404, "without the token: the standby's stale answer");

    sqlx::query("SELECT pg_wal_replay_resume()")
        .execute(&standby_pool)
        .await
        .unwrap();
    shows(&http, &reader, &key, &id, &token).await;
    // Reading the standby never wrote to it (it cannot), and nothing complained of trying.
    let log = reader.log();
    assert!(!log.contains("read-only transaction"), "{log}");
    assert!(!log.contains("during recovery"), "{log}");
}
