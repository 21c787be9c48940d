//! The `projector` process on the real PostgreSQL: killed with SIGKILL mid-stream and restarted,
//! the read table still ends equal to the event store row by row; `projector rebuild` rebuilds it
//! identically.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::*;
use price_feed::FixedSource;

fn projector(db: &TestDb, args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_projector"));
    command
        .args(args)
        .env("DATABASE_URL", db.url())
        .env_remove("READ_DATABASE_URL")
        .env("PROJECTOR_BATCH", "25")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command
}

fn signal(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// Every row of the table, newest first.
async fn table(model: &PgReadModel) -> Vec<OrderView> {
    let mut rows = Vec::new();
    let mut after = None;
    loop {
        let page = model
            .page(PageRequest {
                after,
                size: PageSize::new(100).unwrap(),
            })
            .await
            .unwrap();
        if page.rows.is_empty() {
            return rows;
        }
        after = page.last_reference;
        rows.extend(page.rows);
    }
}

/// What the table must hold: every event of the store as a row, newest first.
async fn expected(store: &PgEventStore) -> Vec<OrderView> {
    let log = store.read_after(Position::ZERO, 100_000).await.unwrap();
    log.iter()
        .rev()
        .map(|logged| {
            let BuyOrderEvent::BuyOrderPlaced(placed) = &logged.event;
            OrderView::from(placed)
        })
        .collect()
}

async fn wait_for_checkpoint(model: &PgReadModel, at_least: Position) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while model.checkpoint().await.unwrap() < at_least {
        assert!(
            tokio::time::Instant::now() < deadline,
            "projector stuck before {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn killed_mid_stream_and_restarted_the_table_equals_the_store() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let model = PgReadModel::open(&settings).await.unwrap();
    let prices: FixedSource = "USD=60000,EUR=50000,GBP=40000".parse().unwrap();
    let writer = Arc::new(CqrsOrderWriter::new(
        store.clone(),
        BuyOrderServices::new(Arc::new(prices)),
    ));

    let mut running = projector(&db, &["run"]).spawn().unwrap();
    let writers: Vec<_> = (0..8)
        .map(|task| {
            let writer = writer.clone();
            tokio::spawn(async move {
                for i in 0..75u64 {
                    writer
                        .place(PlaceBuyOrder {
                            client_id: ClientId::parse("projector-kill").unwrap(),
                            idempotency_key: IdempotencyKey::from_uuid(uuid::Uuid::new_v4()),
                            currency: Currency::ALL[(task + i as usize) % 3],
                            amount: FiatAmount::from_cents(1 + i * 997 % 100_000).unwrap(),
                        })
                        .await
                        .unwrap();
                }
            })
        })
        .collect();
    wait_for_checkpoint(&model, Position(100)).await;
    signal(&running, libc::SIGKILL);
    running.wait().unwrap();
    for w in writers {
        w.await.unwrap();
    }
    assert!(
        model.checkpoint().await.unwrap() < Position(600),
        "killed before the end"
    );

    let mut restarted = projector(&db, &[]).spawn().unwrap(); // `run` is the default
    wait_for_checkpoint(&model, Position(600)).await;
    assert_eq!(table(&model).await, expected(&store).await, "row by row");

    // SIGTERM stops it cleanly
    signal(&restarted, libc::SIGTERM);
    assert!(restarted.wait().unwrap().success());

    // rebuild from position 0 gives the same table
    let status = projector(&db, &["rebuild"]).status().unwrap();
    assert!(status.success());
    assert_eq!(model.checkpoint().await.unwrap(), Position(600));
    assert_eq!(table(&model).await, expected(&store).await);
}

#[test]
fn without_a_database_it_refuses_to_start_naming_the_variable() {
    let output = Command::new(env!("CARGO_BIN_EXE_projector"))
        .env_remove("DATABASE_URL")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("DATABASE_URL"));
}
