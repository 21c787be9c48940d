//! Identity, isolation and rate limits, end to end: clients made with `buy-orders clients`, the
//! all-in-one on the real PostgreSQL with `AUTH=required` (its default there).

use std::process::Command;
use std::time::Duration;

use buy_orders::{start, Config, System};
use clap::Parser;
use order_store::testing::TestDb;
use reqwest::StatusCode;
use serde_json::{json, Value};

mod support;

/// `buy-orders clients …` on the test database: (exit ok, stdout, stderr).
fn clients(db: &TestDb, args: &[&str]) -> (bool, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_buy-orders"))
        .arg("clients")
        .args(args)
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

/// A new client's key, as a script would take it: `KEY=$(buy-orders clients add NAME)`.
fn add_client(db: &TestDb, name: &str, admin: bool) -> String {
    let mut args = vec!["add", name];
    if admin {
        args.push("--admin");
    }
    let (ok, stdout, stderr) = clients(db, &args);
    assert!(ok, "{stderr}");
    assert_eq!(
        stdout.lines().count(),
        1,
        "stdout carries only the key: {stdout:?}"
    );
    let key = stdout.trim().to_owned();
    assert!(key.starts_with("bo_") && key.len() >= 3 + 32, "{key}");
    assert!(!stderr.contains(&key), "the key is not repeated on stderr");
    key
}

async fn system(db: &TestDb, extra: &[&str]) -> System {
    let mut args = vec![
        "buy-orders".to_owned(),
        "--write-addr=127.0.0.1:0".into(),
        "--read-addr=127.0.0.1:0".into(),
        "--price-source=fixed:USD=50000,EUR=40000,GBP=30000".into(),
        format!("--database-url={}", db.url()),
    ];
    args.extend(extra.iter().map(|a| a.to_string()));
    start(&Config::try_parse_from(args).unwrap()).await.unwrap()
}

struct Api {
    http: reqwest::Client,
    write: String,
    read: String,
}

impl Api {
    fn new(system: &System) -> Self {
        Api {
            http: reqwest::Client::new(),
            write: format!("http://{}", system.write_addr),
            read: format!("http://{}", system.read_addr),
        }
    }

    async fn put(&self, key: Option<&str>, body: Value) -> (StatusCode, Value) {
        let mut request = self
            .http
            .put(format!("{}/buy_order", self.write))
            .header("content-type", "application/json")
            .body(body.to_string());
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    async fn get(&self, key: Option<&str>, path: &str) -> (StatusCode, Value) {
        let mut request = self.http.get(format!("{}{path}", self.read));
        if let Some(key) = key {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        (status, response.json().await.unwrap_or(Value::Null))
    }

    /// Waits until `key`'s first page holds `n` orders; returns their ids, newest first.
    async fn ids_when(&self, key: &str, n: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let (status, page) = self.get(Some(key), "/buy_orders?page_size=100").await;
            assert_eq!(status, 200, "{page}");
            let ids: Vec<String> = page["rows"]
                .as_array()
                .unwrap()
                .iter()
                .map(|row| row["id"].as_str().unwrap().to_owned())
                .collect();
            if ids.len() >= n {
                return ids;
            }
            assert!(tokio::time::Instant::now() < deadline, "not projected");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn order(amount: &str, key: &str) -> Value {
    json!({"currency": "USD", "amount": amount, "idempotence_key": key})
}

#[tokio::test(flavor = "multi_thread")]
async fn clients_see_only_their_own_orders_and_an_admin_sees_all() {
    let db = TestDb::create().await;
    let shop_a = add_client(&db, "shop-a", false);
    let shop_b = add_client(&db, "shop-b", false);
    let ops = add_client(&db, "ops", true);
    let (ok, _, stderr) = clients(&db, &["add", "shop-a"]);
    assert!(
        !ok && stderr.contains("exists"),
        "names are unique: {stderr}"
    );
    let (ok, listed, _) = clients(&db, &["list"]);
    assert!(ok);
    for name in ["shop-a", "shop-b", "ops"] {
        assert!(listed.contains(name), "{listed}");
    }
    assert!(!listed.contains("bo_"), "list never shows keys: {listed}");

    let system = system(&db, &[]).await;
    let api = Api::new(&system);

    // No key, a malformed key, a forged key: 401 with WWW-Authenticate, nothing stored.
    let k = uuid::Uuid::new_v4().to_string();
    let forged = format!("{}{}", &shop_a[..shop_a.len() - 4], "0000");
    for key in [None, Some("nope"), Some(forged.as_str())] {
        let response = api
            .http
            .put(format!("{}/buy_order", api.write))
            .header("content-type", "application/json")
            .header("x-client-id", "shop-a")
            .bearer_auth(key.unwrap_or_default())
            .body(order("10", &k).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 401, "{key:?}");
        assert!(response.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .starts_with("Bearer"));
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"]["code"], "unauthenticated");
        assert_eq!(api.get(key, "/buy_orders").await.0, 401);
    }
    // Two Authorization headers are two identities: refused whichever comes first, and
    // nothing stored (the first used to win).
    for pair in [[shop_a.as_str(), "garbage"], ["garbage", shop_a.as_str()]] {
        let mut put = api
            .http
            .put(format!("{}/buy_order", api.write))
            .header("content-type", "application/json")
            .body(order("10", &k).to_string());
        let mut get = api.http.get(format!("{}/buy_orders", api.read));
        for key in pair {
            put = put.header("authorization", format!("Bearer {key}"));
            get = get.header("authorization", format!("Bearer {key}"));
        }
        for response in [put.send().await.unwrap(), get.send().await.unwrap()] {
            assert_eq!(response.status(), 400, "{pair:?}");
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "ambiguous_credentials", "{pair:?}");
        }
    }
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0, "nothing stored for an ambiguous request");

    // The operational routes stay open.
    for path in ["/healthcheck", "/readyz", "/metrics", "/openapi.json"] {
        let status = api
            .http
            .get(format!("{}{path}", api.write))
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 200, "{path}");
    }

    // The same idempotence key, two clients: two orders, and b never hears of a's.
    let (status, a_order) = api.put(Some(&shop_a), order("10", &k)).await;
    assert_eq!(status, 200, "{a_order}");
    let (status, b_order) = api.put(Some(&shop_b), order("20", &k)).await;
    assert_eq!(
        status, 200,
        "another amount under b's own key space: {b_order}"
    );
    assert_ne!(a_order["buy_order"]["id"], b_order["buy_order"]["id"]);
    assert_eq!(b_order["buy_order"]["currency_amount"], "20.00");
    // X-Client-Id cannot borrow another client's identity when keys are required.
    let response = api
        .http
        .put(format!("{}/buy_order", api.write))
        .header("content-type", "application/json")
        .header("x-client-id", "shop-a")
        .bearer_auth(&shop_b)
        .body(order("20", &k).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["idempotent-replayed"], "true");
    let replay: Value = response.json().await.unwrap();
    assert_eq!(replay["buy_order"], b_order["buy_order"], "b's own order");
    // b reusing its key with another amount hears of its own order only.
    let (status, reused) = api.put(Some(&shop_b), order("10", &k)).await;
    assert_eq!(status, 422);
    let message = reused["error"]["message"].as_str().unwrap();
    assert!(
        message.contains("20.00") && !message.contains("10.00 USD;"),
        "{message}"
    );

    let a_id = a_order["buy_order"]["id"].as_str().unwrap().to_owned();
    let b_id = b_order["buy_order"]["id"].as_str().unwrap().to_owned();
    assert_eq!(api.ids_when(&shop_a, 1).await, std::slice::from_ref(&a_id));
    assert_eq!(api.ids_when(&shop_b, 1).await, std::slice::from_ref(&b_id));
    let all = api.ids_when(&ops, 2).await;
    assert_eq!(
        all,
        [b_id.clone(), a_id.clone()],
        "the admin pages every order"
    );

    // By id: another client's order is exactly as absent as one that does not exist.
    let (status, own) = api.get(Some(&shop_a), &format!("/buy_orders/{a_id}")).await;
    assert_eq!(
        (status, own["id"].as_str()),
        (StatusCode::OK, Some(a_id.as_str()))
    );
    let (status, theirs) = api.get(Some(&shop_a), &format!("/buy_orders/{b_id}")).await;
    let nobody = uuid::Uuid::new_v4();
    let (_, missing) = api
        .get(Some(&shop_a), &format!("/buy_orders/{nobody}"))
        .await;
    assert_eq!(status, 404);
    assert_eq!(theirs["error"]["code"], "not_found");
    assert_eq!(
        theirs["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&b_id, "ID"),
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .replace(&nobody.to_string(), "ID")
    );
    assert_eq!(
        api.get(Some(&ops), &format!("/buy_orders/{b_id}")).await.0,
        200
    );
    // By reference: another client's order is an unknown reference.
    let (status, body) = api
        .get(Some(&shop_a), &format!("/buy_orders?last_reference={b_id}"))
        .await;
    assert_eq!(
        (status.as_u16(), body["error"]["code"].as_str()),
        (404, Some("unknown_reference"))
    );
    let (status, body) = api
        .get(Some(&ops), &format!("/buy_orders?last_reference={b_id}"))
        .await;
    assert_eq!(status, 200);
    assert_eq!(body["rows"][0]["id"], a_id.as_str());

    // Revoked: refused on this instance within 5 s of the command.
    let (ok, _, stderr) = clients(&db, &["revoke", "shop-b"]);
    assert!(ok, "{stderr}");
    let revoked_at = tokio::time::Instant::now();
    loop {
        if api.get(Some(&shop_b), "/buy_orders").await.0 == 401 {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(5),
            "still accepted"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(api.put(Some(&shop_b), order("1", &k)).await.0, 401);
    assert_eq!(api.get(Some(&shop_a), "/buy_orders").await.0, 200);
    let (ok, listed, _) = clients(&db, &["list"]);
    assert!(ok);
    let line = listed.lines().find(|l| l.starts_with("shop-b")).unwrap();
    assert!(!line.ends_with("\t-"), "revocation listed: {line}");
    system.shutdown();
}

#[tokio::test(flavor = "multi_thread")]
async fn each_client_has_a_token_bucket() {
    let db = TestDb::create().await;
    let (a, b) = (
        add_client(&db, "fast", false),
        add_client(&db, "calm", false),
    );
    let system = system(&db, &["--rate-limit-per-s=1", "--rate-limit-burst=3"]).await;
    let api = Api::new(&system);
    for _ in 0..3 {
        assert_eq!(api.get(Some(&a), "/buy_orders").await.0, 200);
    }
    let response = api
        .http
        .get(format!("{}/buy_orders", api.read))
        .bearer_auth(&a)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 429);
    let retry: u32 = response.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&retry), "{retry}");
    let body: Value = response.json().await.unwrap();
    assert_eq!(body["error"]["code"], "rate_limited");
    // A write past the limit stores nothing; another client is not held back.
    let fresh = || order("1", &uuid::Uuid::new_v4().to_string());
    for _ in 0..3 {
        let status = api.put(Some(&a), fresh()).await.0;
        assert_eq!(status, 200, "the write API has its own bucket");
    }
    assert_eq!(api.put(Some(&a), fresh()).await.0, 429);
    assert_eq!(api.put(Some(&b), fresh()).await.0, 200);
    assert_eq!(api.get(Some(&b), "/buy_orders").await.0, 200);
    // The bucket refills.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(api.get(Some(&a), "/buy_orders").await.0, 200);
    system.shutdown();
}

/// Rows projected before the read table knew clients belong to the client they were placed
/// under once `buy-orders migrate` (or the projector's start) has run: none is lost.
#[tokio::test(flavor = "multi_thread")]
async fn rows_from_before_identity_are_kept_and_given_their_client() {
    let db = TestDb::create().await;
    let legacy = system(&db, &["--auth=off"]).await;
    let api = Api::new(&legacy);
    for (client, amount) in [("legacy-a", "1"), ("legacy-a", "2"), ("legacy-b", "3")] {
        let response = api
            .http
            .put(format!("{}/buy_order", api.write))
            .header("content-type", "application/json")
            .header("x-client-id", client)
            .body(order(amount, &uuid::Uuid::new_v4().to_string()).to_string())
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    api.ids_when("", 3).await; // AUTH=off: everyone sees all
    legacy.shutdown();
    legacy.wait().await;
    // As the table was before migration 2002 filled it in: no client on any row.
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    sqlx::query("UPDATE buy_order_view SET client_id = NULL")
        .execute(&pool)
        .await
        .unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_buy-orders"))
        .arg("migrate")
        .env("DATABASE_URL", db.url())
        .env("RUST_LOG", "warn")
        .status()
        .unwrap();
    assert!(status.success());
    let owners: Vec<(String, i64)> = sqlx::query_as(
        "SELECT client_id, count(*) FROM buy_order_view GROUP BY client_id ORDER BY client_id",
    )
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(owners, [("legacy-a".into(), 2), ("legacy-b".into(), 1)]);
    let key = add_client(&db, "legacy-a", false);
    let system = system(&db, &[]).await;
    assert_eq!(Api::new(&system).ids_when(&key, 2).await.len(), 2);
    system.shutdown();
}

/// The curl scripts send `BUY_ORDERS_API_KEY` when it is set, and only then; the read scripts
/// send `CONSISTENCY_TOKEN` (a PUT answer's `Consistency-Token`) when it is set.
#[tokio::test(flavor = "multi_thread")]
async fn the_curl_scripts_send_the_key_from_the_environment() {
    let db = TestDb::create().await;
    let key = add_client(&db, "curl-user", false);
    let system = system(&db, &[]).await;
    let (write, read) = (
        format!("http://{}", system.write_addr),
        format!("http://{}", system.read_addr),
    );
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let run = move |script: &str, args: &[&str], key: Option<&str>, token: Option<&str>| {
        let mut command = Command::new(root.join("curl").join(script));
        command
            .args(args)
            .env("WRITE_URL", &write)
            .env("READ_URL", &read);
        match key {
            Some(key) => command.env("BUY_ORDERS_API_KEY", key),
            None => command.env_remove("BUY_ORDERS_API_KEY"),
        };
        match token {
            Some(token) => command.env("CONSISTENCY_TOKEN", token),
            None => command.env_remove("CONSISTENCY_TOKEN"),
        };
        let output = command.output().unwrap();
        assert!(output.status.success(), "{script}");
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let placed = tokio::task::spawn_blocking(move || {
        let denied = run("put_buy_order.sh", &["EUR", "9.99"], None, None);
        assert!(denied.starts_with("HTTP/1.1 401"), "{denied}");
        let placed = run("put_buy_order.sh", &["EUR", "9.99"], Some(&key), None);
        assert!(placed.starts_with("HTTP/1.1 200"), "{placed}");
        let listed = run("get_buy_orders.sh", &["5"], Some(&key), None);
        assert!(listed.starts_with("HTTP/1.1 200"), "{listed}");
        assert!(run("get_buy_orders.sh", &[], None, None).starts_with("HTTP/1.1 401"));
        // Read-your-writes from the shell: the token of the PUT's answer, given back.
        let token = placed
            .lines()
            .find_map(|l| l.strip_prefix("consistency-token: "))
            .expect("the PUT answer's token")
            .trim();
        let id = placed
            .split(r#""id":""#)
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let listed = run("get_buy_orders.sh", &["1"], Some(&key), Some(token));
        assert!(
            listed.starts_with("HTTP/1.1 200") && listed.contains(id),
            "{listed}"
        );
        let after = run(
            "get_buy_orders_pass_last_ref.sh",
            &[id],
            Some(&key),
            Some(token),
        );
        assert!(after.starts_with("HTTP/1.1 200"), "{after}");
        let bad = run("get_buy_orders.sh", &["1"], Some(&key), Some("ct1_bad"));
        assert!(bad.starts_with("HTTP/1.1 400"), "{bad}");
        placed
    })
    .await
    .unwrap();
    assert!(placed.contains(r#""currency_amount":"9.99""#), "{placed}");
    system.shutdown();
}

/// A leaked key rotated, across two api-write processes and api-read that poll the keys only
/// once a minute (`AUTH_KEYS_REFRESH_MS`), so what they learn sooner they learn by `NOTIFY`:
/// the new key works on every instance, the old one (no grace) is refused on every instance,
/// the client sees all its orders with the new key, and a retry of an in-flight request under
/// the new key replays the first answer (it used to be a new client, and a second purchase).
/// Then the new key is revoked alone, and refused everywhere; `clients keys` lists both, never
/// a secret.
#[tokio::test(flavor = "multi_thread")]
async fn a_rotated_key_works_everywhere_at_once_and_keeps_the_clients_orders() {
    use support::{free_ports, spawn_service};
    let db = TestDb::create().await;
    let old = add_client(&db, "bob", false);
    let quiet = [("AUTH_KEYS_REFRESH_MS", "60000"), ("RATE_LIMIT_PER_S", "0")];
    let ports = [free_ports(), free_ports(), free_ports()];
    let mut children = vec![
        spawn_service("api-write", db.url(), &quiet, ports[0]),
        spawn_service("api-write", db.url(), &quiet, ports[1]),
        spawn_service("api-read", db.url(), &quiet, ports[2]),
        spawn_service("projector", db.url(), &quiet, ports[2]),
    ];
    let urls = [
        format!("http://127.0.0.1:{}/buy_order", ports[0][0]),
        format!("http://127.0.0.1:{}/buy_order", ports[1][0]),
        format!("http://127.0.0.1:{}/buy_orders", ports[2][1]),
    ];
    for child in &mut children {
        child.ready().await;
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    // Whether `key` is accepted by the instance at `url` (a PUT with a body that is refused
    // after authentication, so nothing is placed; or the first page).
    let accepted = |url: String, key: String| {
        let http = http.clone();
        async move {
            let request = if url.ends_with("/buy_orders") {
                http.get(&url)
            } else {
                http.put(&url)
                    .header("content-type", "application/json")
                    .body("{}")
            };
            let status = request.bearer_auth(&key).send().await.unwrap().status();
            status != StatusCode::UNAUTHORIZED
        }
    };
    let everywhere = |key: String, want: bool, what: &'static str| {
        let urls = urls.clone();
        async move {
            for url in urls {
                let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
                while accepted(url.clone(), key.clone()).await != want {
                    assert!(tokio::time::Instant::now() < deadline, "{what} at {url}");
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
        }
    };
    everywhere(old.clone(), true, "the first key works").await;

    // Bob places an order; its answer is lost, so he will retry it with the new key.
    let idem = uuid::Uuid::new_v4().to_string();
    let body = json!({"currency": "USD", "amount": "25.00", "idempotence_key": idem});
    let place = |url: String, key: String| {
        let (http, body) = (http.clone(), body.clone());
        async move {
            let answer = http.put(&url).bearer_auth(&key).json(&body).send().await;
            answer.unwrap().json::<Value>().await.unwrap()
        }
    };
    let first = place(urls[0].clone(), old.clone()).await;

    let (ok, stdout, stderr) = clients(&db, &["rotate", "bob"]);
    assert!(ok, "{stderr}");
    assert_eq!(stdout.lines().count(), 1, "only the new key: {stdout:?}");
    let new = stdout.trim().to_owned();
    assert!(!stderr.contains(&new));
    everywhere(new.clone(), true, "the new key works (notified)").await;
    everywhere(old.clone(), false, "the old key is refused (notified)").await;

    // The retry under the new key is the same purchase.
    let retried = place(urls[1].clone(), new.clone()).await;
    assert_eq!(retried, first, "replayed, not a second purchase");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = http
            .get(&urls[2])
            .bearer_auth(&new)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let rows = page["rows"].as_array().unwrap();
        if rows.len() == 1 {
            assert_eq!(
                rows[0], first["buy_order"],
                "bob's order, under his new key"
            );
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{page}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let (ok, listing, stderr) = clients(&db, &["keys", "bob"]);
    assert!(ok, "{stderr}");
    let lines: Vec<&str> = listing.lines().collect();
    assert_eq!(lines.len(), 3, "{listing}");
    assert!(
        !listing.contains(&old[20..]) && !listing.contains(&new[20..]),
        "no secret"
    );
    let new_id = lines[2].split('\t').next().unwrap();
    assert!(new.contains(new_id));
    assert_ne!(
        lines[1].split('\t').nth(3),
        Some("-"),
        "the old key is revoked: {listing}"
    );

    let (ok, _, stderr) = clients(&db, &["revoke", "bob", "--key", new_id]);
    assert!(ok, "{stderr}");
    everywhere(new.clone(), false, "the revoked key is refused (notified)").await;
    let (ok, _, stderr) = clients(&db, &["rotate", "bob", "--grace", "forever"]);
    assert!(!ok && stderr.contains("--grace"), "{stderr}");
    let (ok, _, stderr) = clients(&db, &["rotate", "bob", "--grace", "400d"]);
    assert!(!ok && stderr.contains("at most"), "{stderr}");
    let (ok, _, stderr) = clients(&db, &["revoke", "bob", "--key", "0123456789abcdef"]);
    assert!(!ok && stderr.contains("has no key"), "{stderr}");
    drop(children);
}

/// A flood of unknown keys from one address: the first `AUTH_FAILURES_BURST` are 401, the rest
/// 429 `too_many_failures` with `Retry-After`, on both APIs; a header the caller chooses
/// (`X-Forwarded-For`) buys no new budget; a valid key from the same address is still served,
/// and nothing was stored for the flood. They were never throttled.
#[tokio::test(flavor = "multi_thread")]
async fn an_unauthenticated_flood_is_throttled_per_source_and_valid_keys_still_work() {
    let db = TestDb::create().await;
    let key = add_client(&db, "steady", false);
    let system = system(&db, &["--auth-failures-burst=5", "--auth-failures-per-s=1"]).await;
    let api = Api::new(&system);
    let garbage = format!("bo_{}_{}", "0".repeat(16), "1".repeat(64));
    let mut statuses = Vec::new();
    for i in 0..12 {
        let response = api
            .http
            .put(format!("{}/buy_order", api.write))
            .bearer_auth(&garbage)
            .header("x-forwarded-for", format!("203.0.113.{i}"))
            .json(&order("1.00", &uuid::Uuid::new_v4().to_string()))
            .send()
            .await
            .unwrap();
        let status = response.status();
        if status == StatusCode::TOO_MANY_REQUESTS {
            assert!(response.headers().contains_key("retry-after"));
            let body: Value = response.json().await.unwrap();
            assert_eq!(body["error"]["code"], "too_many_failures", "{body}");
        }
        statuses.push(status.as_u16());
    }
    let unauthorized = statuses.iter().filter(|s| **s == 401).count();
    assert!(
        (5..=7).contains(&unauthorized) && statuses.ends_with(&[429, 429, 429]),
        "the burst, then 429: {statuses:?}"
    );
    // The read API keeps its own budget, and spends it the same way.
    let mut read = Vec::new();
    for _ in 0..12 {
        read.push(api.get(Some(&garbage), "/buy_orders").await.0.as_u16());
    }
    assert!(read.ends_with(&[429, 429, 429]), "{read:?}");
    // A valid key from the throttled address is served.
    let (status, placed) = api
        .put(Some(&key), order("2.00", &uuid::Uuid::new_v4().to_string()))
        .await;
    assert_eq!(status, 200, "{placed}");
    let pool = sqlx::PgPool::connect(db.url()).await.unwrap();
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM events")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 1, "only the valid caller's order");
    system.shutdown();
}
