//! The `projector` process on the real PostgreSQL: killed with SIGKILL mid-stream and restarted,
//! the read table still ends equal to the event store row by row; `projector rebuild` rebuilds it
//! identically.

mod common;

use std::process::Command;

use common::*;
use order_domain::*;
use order_store::postgres::{PgEventStore, PgReadModel, PgSettings};
use order_store::testing::TestDb;
use order_store::*;

#[tokio::test]
async fn killed_mid_stream_and_restarted_the_table_equals_the_store() {
    let db = TestDb::create().await;
    let settings = PgSettings::for_url(db.url());
    let store = PgEventStore::open(&settings, BtcCap::DEFAULT)
        .await
        .unwrap();
    let model = PgReadModel::open(&settings).await.unwrap();
    let writer = writer(&store);

    let mut running = projector(&db, None, &["run"]).spawn().unwrap();
    let writers: Vec<_> = (0..8)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move { place(&writer, 75).await })
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

    let mut restarted = projector(&db, None, &[]).spawn().unwrap(); // `run` is the default
    wait_for_checkpoint(&model, Position(600)).await;
    assert_eq!(table(&model).await, expected(&store).await, "row by row");

    // SIGTERM stops it cleanly
    signal(&restarted, libc::SIGTERM);
    assert!(restarted.wait().unwrap().success());

    // rebuild from position 0 gives the same table
    let status = projector(&db, None, &["rebuild"]).status().unwrap();
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
