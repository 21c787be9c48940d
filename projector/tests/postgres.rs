//! The `projector` process on the real PostgreSQL: killed with SIGKILL mid-stream and restarted,
//! the read table still ends equal to the event store row by row; `projector rebuild` rebuilds it
//! identically.

mod common;

use std::process::Command;

use common::*;
use order_store::*;

#[tokio::test]
async fn killed_mid_stream_and_restarted_the_table_equals_the_store() {
    let (db, store, model) = store_and_table().await;
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

/// `projector list` shows each projection with its checkpoint, lag and parked events;
/// `projector rebuild NAME` rebuilds the one named, and an unknown name is refused, naming the
/// registered ones.
#[tokio::test]
async fn list_shows_each_projection_and_rebuild_takes_a_name() {
    let (db, store, model) = store_and_table().await;
    place(&writer(&store), 30).await;
    let output = |args: &[&str]| {
        projector(&db, None, args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .output()
            .unwrap()
    };

    let before = output(&["list"]);
    assert!(before.status.success());
    let text = String::from_utf8_lossy(&before.stdout).to_string();
    let row: Vec<&str> = text
        .lines()
        .find(|line| line.starts_with("buy_order_view"))
        .unwrap_or_else(|| panic!("no buy_order_view line:\n{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(
        row,
        ["buy_order_view", "0", "30", "0"],
        "checkpoint, lag, parked"
    );

    let unknown = output(&["rebuild", "daily_btc_sold"]);
    assert_eq!(unknown.status.code(), Some(2));
    let said = String::from_utf8_lossy(&unknown.stderr);
    assert!(
        said.contains("no projection named \"daily_btc_sold\"") && said.contains("buy_order_view"),
        "{said}"
    );

    assert!(output(&["rebuild", "buy_order_view"]).status.success());
    assert_eq!(model.checkpoint().await.unwrap(), Position(30));
    assert_eq!(table(&model).await, expected(&store).await);
    let after = String::from_utf8_lossy(&output(&["list"]).stdout).to_string();
    assert!(
        after
            .lines()
            .any(|line| line.split_whitespace().collect::<Vec<_>>()
                == ["buy_order_view", "30", "0", "0"]),
        "{after}"
    );
}
