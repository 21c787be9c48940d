//! `buy-orders audit` on the real PostgreSQL: a clean database passes; a deleted read row, an
//! edited amount and a ledger off by one satoshi each fail the right check, naming the order.

use std::process::Command;
use std::sync::Arc;

use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::{CqrsOrderWriter, OrderWriter};
use price_feed::FixedSource;

/// A database with 12 orders, projected; their ids in order.
async fn books() -> (TestDb, PgEventStore, Vec<OrderId>) {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let rates: Arc<FixedSource> =
        Arc::new("USD=48478.88,EUR=41191.91,GBP=35330.89".parse().unwrap());
    let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(rates));
    let mut ids = Vec::new();
    for (i, currency) in [Currency::USD, Currency::EUR, Currency::GBP]
        .iter()
        .cycle()
        .take(12)
        .enumerate()
    {
        let placed = writer
            .place(PlaceBuyOrder {
                currency: *currency,
                ..order_domain::testing::order_for("auditor", &format!("{}.{:02}", 10 + i, i * 7))
            })
            .await
            .unwrap();
        ids.push(placed.order.order_id);
    }
    let model = PgReadModel::open(&settings).await.unwrap();
    model.rebuild(&store, 5, &|_, _| {}).await.unwrap();
    (db, store, ids)
}

/// `buy-orders audit`'s exit code and report.
fn audit(db: &TestDb) -> (Option<i32>, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_buy-orders"))
        .arg("audit")
        .env("DATABASE_URL", db.url())
        .env_remove("READ_DATABASE_URL")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
    )
}

/// The report's line for `check`, and whether it failed.
fn line<'r>(report: &'r str, check: &str) -> &'r str {
    report
        .lines()
        .find(|l| l.get(6..).is_some_and(|rest| rest.starts_with(check)))
        .unwrap_or_else(|| panic!("no {check} line in:\n{report}"))
}

fn failed(report: &str) -> Vec<&str> {
    ["ledger", "positions", "orders", "read table", "relay"]
        .into_iter()
        .filter(|check| line(report, check).starts_with("FAIL"))
        .collect()
}

#[tokio::test]
async fn clean_books_pass_every_check() {
    let (db, _, _) = books().await;
    let (code, report) = audit(&db);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(failed(&report), Vec::<&str>::new(), "{report}");
    assert!(
        line(&report, "read table").contains("12 rows equal the log"),
        "{report}"
    );
    assert!(line(&report, "positions").contains("1..12"), "{report}");
}

#[tokio::test]
async fn a_deleted_read_row_fails_the_read_table_check_naming_the_order() {
    let (db, store, ids) = books().await;
    sqlx::query("DELETE FROM buy_order_view WHERE id = $1")
        .bind(ids[3].as_uuid())
        .execute(store.pool())
        .await
        .unwrap();
    let (code, report) = audit(&db);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(failed(&report), ["read table"], "{report}");
    assert!(
        report.contains(&format!("{} (position 4): missing", ids[3])),
        "{report}"
    );
}

#[tokio::test]
async fn an_edited_amount_fails_the_orders_check_naming_the_order() {
    let (db, store, ids) = books().await;
    sqlx::query(
        "UPDATE events SET payload = jsonb_set(payload::jsonb, '{BuyOrderPlaced,amount}', \
         '\"99.99\"')::json WHERE aggregate_id = $1",
    )
    .bind(ids[5].to_string())
    .execute(store.pool())
    .await
    .unwrap();
    let (code, report) = audit(&db);
    assert_eq!(code, Some(1), "{report}");
    assert!(line(&report, "orders").starts_with("FAIL"), "{report}");
    assert!(
        report.contains(&format!("{} (position 6): 99.99 GBP at 35330.89", ids[5])),
        "{report}"
    );
    // The read table, projected before the edit, no longer equals the log either.
    assert!(report.contains("differs in amount"), "{report}");
    assert!(
        line(&report, "ledger").starts_with("ok"),
        "the satoshis were not edited"
    );
}

#[tokio::test]
async fn a_ledger_off_by_one_satoshi_fails_the_ledger_check() {
    let (db, store, _) = books().await;
    sqlx::query("UPDATE btc_ledger SET sold_sats = sold_sats + 1")
        .execute(store.pool())
        .await
        .unwrap();
    let (code, report) = audit(&db);
    assert_eq!(code, Some(1), "{report}");
    assert_eq!(failed(&report), ["ledger"], "{report}");
    assert!(
        line(&report, "ledger").contains("(1 more)") || report.contains("(1 more)"),
        "{report}"
    );
}
