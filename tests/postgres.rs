//! The all-in-one on PostgreSQL (`DATABASE_URL`), and `buy-orders migrate`.

use std::process::Command;
use std::time::Duration;

use buy_orders::{start, Config};
use clap::Parser;
use order_store::testing::TestDb;
use support::{free_ports, spawn_service};

mod support;
use serde_json::{json, Value};

#[tokio::test]
async fn the_all_in_one_runs_on_postgres_and_keeps_orders_across_restarts() {
    let db = TestDb::create().await;
    let config = Config::try_parse_from([
        "buy-orders",
        "--write-addr=127.0.0.1:0",
        "--read-addr=127.0.0.1:0",
        "--price-source=fixed:USD=48478.88,EUR=41191.91,GBP=35330.89",
        &format!("--database-url={}", db.url()),
    ])
    .unwrap();
    let key = api_keys::testing::client_key(db.url(), "pg-e2e", false).await;
    let client = reqwest::Client::builder()
        .default_headers(reqwest::header::HeaderMap::from_iter([(
            reqwest::header::AUTHORIZATION,
            format!("Bearer {key}").parse().unwrap(),
        )]))
        .build()
        .unwrap();
    let key = uuid::Uuid::new_v4().to_string();
    let body = json!({"currency": "USD", "amount": "123.45", "idempotence_key": key});

    let first = start(&config).await.unwrap();
    let placed = client
        .put(format!("http://{}/buy_order", first.write_addr))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(placed.status(), 200);
    let placed: Value = serde_json::from_str(&placed.text().await.unwrap()).unwrap();
    first.shutdown();
    first.wait().await;

    // a new process on the same database: the order is there, and the key still replays
    let second = start(&config).await.unwrap();
    let replay = client
        .put(format!("http://{}/buy_order", second.write_addr))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(replay.headers()["idempotent-replayed"], "true");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let page: Value = client
            .get(format!("http://{}/buy_orders", second.read_addr))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["rows"].as_array().unwrap().len() == 1 {
            assert_eq!(page["rows"][0], placed["buy_order"]);
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "not projected");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    second.shutdown();
}

#[tokio::test]
async fn migrate_applies_the_migrations_and_is_idempotent() {
    let db = TestDb::create().await;
    for _ in 0..2 {
        // At the default log level, piped: an operator's second run says nothing but the
        // outcome (no notice from the migrator, no terminal colours in a pipe).
        let output = Command::new(env!("CARGO_BIN_EXE_buy-orders"))
            .arg("migrate")
            .env("DATABASE_URL", db.url())
            .env_remove("RUST_LOG")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{stderr}");
        assert!(!stderr.contains("already exists"), "{stderr}");
        assert!(!stderr.contains('\u{1b}'), "colours in a pipe: {stderr}");
        assert!(String::from_utf8_lossy(&output.stdout).contains("migrations applied"));
    }
    // The settings may follow the subcommand, as an operator types them.
    for args in [
        ["migrate", "--database-url", db.url()],
        ["clients", "list", "--database-url"],
    ] {
        let mut command = Command::new(env!("CARGO_BIN_EXE_buy-orders"));
        command.args(args).env_remove("DATABASE_URL");
        if args[0] == "clients" {
            command.arg(db.url());
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{args:?}: {stderr}");
    }
    let without = Command::new(env!("CARGO_BIN_EXE_buy-orders"))
        .arg("migrate")
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(without.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&without.stderr).contains("DATABASE_URL"));
}

/// `buy-orders cap show|set` on DATABASE_URL: set records the change; below what is sold, or
/// not a BTC amount, is refused with a message; MAX_TOTAL_BTC of a later start does not move it.
#[test]
fn the_cap_commands_show_and_set_it_and_record_each_change() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let db = runtime.block_on(TestDb::create());
    let cap = |args: &[&str], max_total_btc: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_buy-orders"));
        command
            .arg("cap")
            .args(args)
            .env("DATABASE_URL", db.url())
            .env("RUST_LOG", "warn");
        match max_total_btc {
            Some(v) => command.env("MAX_TOTAL_BTC", v),
            None => command.env_remove("MAX_TOTAL_BTC"),
        };
        let output = command.output().unwrap();
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // Migrated and seeded by a service's start (here: the library, as api-write does).
    runtime.block_on(async {
        order_store::postgres::PgEventStore::open(
            &order_store::postgres::PgSettings::for_url(db.url()),
            None,
        )
        .await
        .unwrap();
    });
    let (ok, shown, _) = cap(&["show"], None);
    assert!(ok);
    assert!(
        shown.starts_with("cap 100.00000000 BTC, sold 0.00000000 BTC"),
        "{shown}"
    );
    let (ok, shown, said) = cap(&["set", "42.5"], Some("7"));
    assert!(ok, "{said}");
    assert!(
        said.contains("cap set to 42.50000000 BTC (was 100.00000000)"),
        "{said}"
    );
    assert!(shown.contains("100.00000000 -> 42.50000000"), "{shown}");
    let (ok, _, said) = cap(&["set", "lots"], None);
    assert!(!ok && said.contains("BTC"), "{said}");
    let (ok, shown, _) = cap(&["show"], Some("7"));
    assert!(ok);
    assert!(shown.starts_with("cap 42.50000000 BTC"), "{shown}");
    assert_eq!(
        shown.matches(" -> ").count(),
        2,
        "seed and one change: {shown}"
    );
}

/// Every binary tells a setting to fix (exit 2: restarting will not help) from an outage (exit
/// 1: a supervisor may restart it): a database that does not exist, then nothing listening.
#[tokio::test]
async fn each_binary_exits_2_for_a_missing_database_and_1_when_nothing_listens() {
    let db = TestDb::create().await;
    let missing = format!("{}_missing", db.url());
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let nothing = format!("postgres://postgres@{}/x", closed.local_addr().unwrap());
    drop(closed);
    let dir = std::path::Path::new(env!("CARGO_BIN_EXE_buy-orders"))
        .parent()
        .unwrap()
        .to_owned();
    for name in ["buy-orders", "api-write", "api-read", "projector"] {
        for (url, code) in [(&missing, 2), (&nothing, 1)] {
            let output = tokio::process::Command::new(dir.join(name))
                .env("DATABASE_URL", url)
                .env_remove("READ_DATABASE_URL")
                .env_remove("AMQP_URL")
                .env("DB_ACQUIRE_TIMEOUT_MS", "300")
                .env("AUTH", "off")
                .env("PRICE_SOURCE", "simulated")
                .env("WRITE_ADDR", "127.0.0.1:0")
                .env("READ_ADDR", "127.0.0.1:0")
                .env("PROJECTOR_ADDR", "127.0.0.1:0")
                .kill_on_drop(true)
                .output();
            let output = tokio::time::timeout(Duration::from_secs(30), output)
                .await
                .unwrap_or_else(|_| panic!("{name} with {url} did not stop"))
                .unwrap();
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(code), "{name} {url}: {stderr}");
        }
    }
}

/// Three ports free now (each bound by the OS, then let go).
/// `PGSSLMODE` and `PGSSLROOTCERT` in the environment mean the same on the write side (sqlx
/// reads them) and the read side (tokio-postgres does not: the store reads them for it), in
/// every binary: with `PGSSLMODE=verify-full` and no `sslmode` in the URL, a server reached by a
/// name its certificate does not carry is refused everywhere (the read side used to accept any
/// certificate), and the right name is accepted. (`PGSSLCERT` and `PGSSLKEY`: below.)
#[tokio::test]
async fn the_pgssl_variables_mean_the_same_on_every_side_of_every_binary() {
    let db = TestDb::create().await;
    let cert = order_store::testing::server_certificate(db.url()).await;
    let by_name = db.url().replacen("@127.0.0.1:", "@localhost:", 1);
    let verify = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", cert.as_str()),
        ("AUTH", "off"),
    ];
    for name in ["api-write", "api-read", "projector"] {
        let port = free_ports();
        // The wrong name: refused as a setting to fix, naming why.
        let (code, stderr) = spawn_service(name, db.url(), &verify, port).refused().await;
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.contains("not valid for name"), "{name}: {stderr}");
        // The name the certificate carries: it starts, and is ready.
        spawn_service(name, &by_name, &verify, port).ready().await;
    }
}

/// A server that authenticates clients by certificate alone (`hostssl … cert`, as some managed
/// platforms require), with a CA the test makes: every binary, on every connection of both
/// drivers (the store's sqlx pools, the key registry, the read table's tokio-postgres
/// sessions), presents the certificate given by `PGSSLCERT`/`PGSSLKEY` or by `sslcert`/`sslkey`
/// in the URL. An order placed through api-write is projected and read back through api-read.
/// Without a certificate, or with one from another authority, each refuses to start, saying
/// so. They used to refuse any client certificate.
#[tokio::test(flavor = "multi_thread")]
async fn every_binary_presents_a_client_certificate_where_the_server_requires_one() {
    use order_store::testing::PrivateServer;
    use settings_kit::testing::TestCa;

    let ca = TestCa::new("pg-mtls");
    let server_pair = ca.issue("localhost", &["localhost"]);
    let client = ca.issue("postgres", &[]);
    let strangers = TestCa::new("pg-stranger");
    let stranger = strangers.issue("postgres", &[]);
    let server = {
        let (ca, cert, key) = (
            ca.certificate(),
            server_pair.cert.clone(),
            server_pair.key.clone(),
        );
        tokio::task::spawn_blocking(move || {
            PrivateServer::requiring_client_certificates(&ca, &cert, &key)
        })
        .await
        .unwrap()
    };
    let url = format!(
        "postgres://postgres@localhost:{}/postgres",
        server.addr().port()
    );
    let (ca_pem, cert, key) = (
        ca.certificate().display().to_string(),
        client.cert.display().to_string(),
        client.key.display().to_string(),
    );
    let from_env = [
        ("PGSSLMODE", "verify-full"),
        ("PGSSLROOTCERT", ca_pem.as_str()),
        ("PGSSLCERT", cert.as_str()),
        ("PGSSLKEY", key.as_str()),
    ];
    let in_url =
        format!("{url}?sslmode=verify-full&sslrootcert={ca_pem}&sslcert={cert}&sslkey={key}");
    let cli = |args: &[&str], env: &[(&str, &str)], url: &str| {
        let output = Command::new(env!("CARGO_BIN_EXE_buy-orders"))
            .args(args)
            .env("DATABASE_URL", url)
            .env_remove("PGSSLMODE")
            .env_remove("PGSSLCERT")
            .env_remove("PGSSLKEY")
            .env_remove("PGSSLROOTCERT")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        (
            output.status.code(),
            String::from_utf8_lossy(&output.stdout).trim().to_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };
    // Without a certificate the server says why, and it is a setting to fix (exit 2).
    let (code, _, stderr) = cli(&["migrate"], &from_env[..2], &url);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    // One from another authority: the server ends the handshake.
    let (stranger_cert, stranger_key) = (
        stranger.cert.display().to_string(),
        stranger.key.display().to_string(),
    );
    let (code, _, stderr) = cli(
        &["migrate"],
        &[
            from_env[0],
            from_env[1],
            ("PGSSLCERT", &stranger_cert),
            ("PGSSLKEY", &stranger_key),
        ],
        &url,
    );
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("unknown ca") || stderr.contains("UnknownCA"),
        "{stderr}"
    );
    // With it: the migrations and a client's key.
    let (code, _, stderr) = cli(&["migrate"], &from_env, &url);
    assert_eq!(code, Some(0), "{stderr}");
    let (code, api_key, stderr) = cli(&["clients", "add", "mtls-shop"], &[], &in_url);
    assert_eq!(code, Some(0), "{stderr}");

    let port = free_ports();
    let mut writer = spawn_service("api-write", &url, &from_env, port);
    let mut projector = spawn_service("projector", &in_url, &[], port);
    let mut reader = spawn_service("api-read", &url, &from_env, port);
    writer.ready().await;
    projector.ready().await;
    reader.ready().await;
    let http = reqwest::Client::new();
    let placed: Value = http
        .put(format!("http://127.0.0.1:{}/buy_order", port[0]))
        .bearer_auth(&api_key)
        .json(&json!({"currency": "EUR", "amount": "10.00",
                      "idempotence_key": uuid::Uuid::new_v4().to_string()}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = placed["buy_order"]["id"]
        .as_str()
        .expect("placed")
        .to_owned();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let page: Value = http
            .get(format!("http://127.0.0.1:{}/buy_orders", port[1]))
            .bearer_auth(&api_key)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if page["rows"][0]["id"] == id.as_str() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the order was not projected: {page}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop((writer, projector, reader));
    // Each service without the certificate refuses to start, as a setting to fix.
    for name in ["api-write", "api-read", "projector"] {
        let (code, stderr) = spawn_service(name, &url, &from_env[..2], free_ports())
            .refused()
            .await;
        assert_eq!(code, Some(2), "{name}: {stderr}");
        assert!(stderr.contains("certificate"), "{name}: {stderr}");
    }
}
