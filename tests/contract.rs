//! The API contract: schemathesis (from PyPI; `.ci/run` installs it) generates requests from
//! the committed OpenAPI documents and checks every response against them, on the all-in-one
//! running on ephemeral ports: documented status codes and content types, bodies matching their
//! schemas, no 5xx, `Allow` on 405, invalid input refused.

use std::process::Command;

use buy_orders::{start, Config};
use clap::Parser;

fn schemathesis(document: &str, base_url: &str, key: &str) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("openapi")
        .join(document);
    let config = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests")
        .join("schemathesis.toml");
    let output = Command::new("st")
        .arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(&path)
        .args(["--url", base_url])
        .args(["--header", &format!("Authorization: Bearer {key}")])
        .args(["--checks", "all"])
        // a schema-valid order can be refused for state the schema cannot know: a reused
        // idempotence key (422), the cap (409): not a contract violation
        .args(["--exclude-checks", "positive_data_acceptance"])
        .args(["--max-examples", "100", "--seed", "7"])
        .env("NO_COLOR", "1")
        .output()
        .unwrap_or_else(|e| {
            panic!("schemathesis (`st`) is not installed ({e}): pip install 'schemathesis>=4,<5'")
        });
    let report = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{document}: schemathesis found contract violations\n{report}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// On PostgreSQL with `AUTH=required` (its default there) and a client's key; rate limits off
/// (schemathesis sends hundreds of requests a second).
#[tokio::test(flavor = "multi_thread")]
async fn both_apis_conform_to_their_openapi_documents() {
    let db = order_store::testing::TestDb::create().await;
    let key = api_keys::testing::client_key(db.url(), "contract", false).await;
    let config = Config::try_parse_from([
        "buy-orders",
        "--write-addr=127.0.0.1:0",
        "--read-addr=127.0.0.1:0",
        "--price-source=fixed:USD=48478.88,EUR=41191.91,GBP=35330.89",
        "--max-total-btc=21000000",
        "--rate-limit-per-s=0",
        // Generated tokens name writes that never happened: each such read waits the bound
        // before its (documented) 503 `not_yet_consistent`; a short bound keeps the run short.
        "--read-consistency-wait-ms=20",
        &format!("--database-url={}", db.url()),
    ])
    .unwrap();
    let system = start(&config).await.unwrap();
    let (write, read) = (
        format!("http://{}", system.write_addr),
        format!("http://{}", system.read_addr),
    );
    tokio::task::spawn_blocking(move || {
        schemathesis("api-write.json", &write, &key);
        schemathesis("api-read.json", &read, &key);
    })
    .await
    .unwrap();
    system.shutdown();
}
