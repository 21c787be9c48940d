//! RabbitMQ stopped (`rabbitmqctl stop_app`) while 500 orders are placed, then started again:
//! every order ends in the read table exactly once. Alone in its test binary, because stopping
//! the broker affects every user of it (cargo runs test binaries one at a time).

mod common;

use std::process::Command;
use std::time::Duration;

use common::*;
use order_store::*;

fn rabbitmqctl(args: &[&str]) {
    let status = Command::new("rabbitmqctl")
        .args(args)
        .status()
        .expect("rabbitmqctl on PATH");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

/// Starts the broker's app again however the test ends.
struct RestartOnDrop;

impl Drop for RestartOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("rabbitmqctl").arg("start_app").status();
        let _ = Command::new("rabbitmqctl")
            .args(["await_startup", "--timeout", "60"])
            .status();
    }
}

#[tokio::test]
async fn orders_placed_while_the_broker_is_down_all_arrive_exactly_once() {
    let s = setup().await;
    let (db, topology, store, model) = (&s.db, &s.topology, &s.store, &s.model);
    let mut running = projector(db, Some(topology), &[]).spawn().unwrap();

    let writer = writer(store);
    let placing: Vec<_> = (0..5)
        .map(|_| {
            let writer = writer.clone();
            tokio::spawn(async move { place(&writer, 100).await })
        })
        .collect();
    // some orders flow through the broker first
    wait_for_checkpoint(model, Position(50)).await;
    let restart = RestartOnDrop;
    tokio::task::spawn_blocking(|| rabbitmqctl(&["stop_app"]))
        .await
        .unwrap();
    for p in placing {
        p.await.unwrap(); // orders are still accepted: the events are safe in PostgreSQL
    }
    assert_eq!(store.head().await.unwrap(), Position(500));
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::spawn_blocking(move || drop(restart))
        .await
        .unwrap();

    wait_for_checkpoint(model, Position(500)).await;
    let rows = table(model).await;
    assert_eq!(rows.len(), 500);
    assert_eq!(
        rows,
        expected(store).await,
        "all 500, exactly once, row by row"
    );
    signal(&running, libc::SIGTERM);
    assert!(running.wait().unwrap().success());
}
