//! The consumer's verdicts against the real RabbitMQ: a transient failure is retried a bounded
//! number of times, counted in a header, then dead-lettered; a permanent one at once, whether or
//! not the broker marks the delivery as redelivered.

use std::time::Duration;

use event_bus::consumer::{self, Verdict, MAX_ATTEMPTS};
use event_bus::testing::TestTopology;

fn publish(topology: &TestTopology, body: &[u8]) {
    topology.publish_raw(body, "test-1");
}

async fn dead_letters(topology: &TestTopology, want: u32) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while topology.message_count(&topology.topology.dead_letter_queue) < want {
        assert!(tokio::time::Instant::now() < deadline, "not dead-lettered");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_transient_failure_is_retried_a_bounded_number_of_times_then_dead_lettered() {
    let topology = TestTopology::create();
    let mut batches = consumer::start(topology.address(), topology.topology.clone(), 10);
    tokio::time::sleep(Duration::from_millis(300)).await; // the queue is declared and bound
    publish(&topology, b"any body");
    let mut seen = Vec::new();
    while seen.len() < MAX_ATTEMPTS as usize {
        let batch = tokio::time::timeout(Duration::from_secs(10), batches.recv())
            .await
            .expect("the message comes back after each retry")
            .expect("consumer running");
        seen.extend(batch.messages.iter().map(|m| m.attempts));
        let n = batch.messages.len();
        batch.answer(vec![Verdict::Retry; n]);
    }
    let counted: Vec<u32> = (0..MAX_ATTEMPTS).collect();
    assert_eq!(seen, counted, "each retry counted in the header");
    dead_letters(&topology, 1).await;
    assert!(
        tokio::time::timeout(Duration::from_millis(500), batches.recv())
            .await
            .is_err(),
        "not delivered again once dead-lettered"
    );
    assert_eq!(topology.message_count(&topology.topology.queue), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_permanent_failure_is_dead_lettered_at_once() {
    let topology = TestTopology::create();
    let mut batches = consumer::start(topology.address(), topology.topology.clone(), 10);
    tokio::time::sleep(Duration::from_millis(300)).await;
    publish(&topology, b"{not an event");
    let batch = tokio::time::timeout(Duration::from_secs(10), batches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.messages[0].attempts, 0);
    batch.answer(vec![Verdict::DeadLetter]);
    dead_letters(&topology, 1).await;
}
