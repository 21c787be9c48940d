//! The consumer's verdicts against the real RabbitMQ: a transient failure is retried a bounded
//! number of times, counted in a header, then dead-lettered; a permanent one at once, whether or
//! not the broker marks the delivery as redelivered.

use std::time::Duration;

use event_bus::consumer::{self, Verdict, MAX_ATTEMPTS};
use event_bus::testing::TestTopology;

fn publish(topology: &TestTopology, body: &[u8]) {
    topology.publish_raw(body, "test-1");
}

/// Waits until `queue`'s message count satisfies `done`, failing with `what` after `within`.
async fn until_count(
    topology: &TestTopology,
    queue: &str,
    within: Duration,
    done: impl Fn(u32) -> bool,
    what: &str,
) {
    let deadline = tokio::time::Instant::now() + within;
    while !done(topology.message_count(queue)) {
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn dead_letters(topology: &TestTopology, want: u32) {
    let queue = &topology.topology.dead_letter_queue;
    let done = |count| count >= want;
    until_count(
        topology,
        queue,
        Duration::from_secs(20),
        done,
        "not dead-lettered",
    )
    .await;
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

/// Every message of the batch is in the queue before the consumer starts, so they come as one
/// batch (prefetch 10).
async fn one_batch_of(
    topology: &TestTopology,
    n: usize,
) -> (
    consumer::Batch,
    tokio::sync::mpsc::Receiver<consumer::Batch>,
) {
    for i in 0..n {
        topology.publish_raw(b"any body", &format!("test-{i}"));
    }
    let want = u32::try_from(n).unwrap();
    let queue = &topology.topology.queue;
    until_count(
        topology,
        queue,
        Duration::from_secs(10),
        |c| c >= want,
        "not queued",
    )
    .await;
    let mut batches = consumer::start(topology.address(), topology.topology.clone(), 10);
    let batch = tokio::time::timeout(Duration::from_secs(10), batches.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(batch.messages.len(), n, "one batch");
    (batch, batches)
}

/// Stops a consumer (its connection closes at its next idle check): whatever it left unacked
/// goes back to the queue.
async fn stop(batches: tokio::sync::mpsc::Receiver<consumer::Batch>) {
    tokio::time::sleep(Duration::from_millis(300)).await; // the verdicts are sent
    drop(batches);
    tokio::time::sleep(Duration::from_millis(1200)).await;
}

async fn queued_becomes(topology: &TestTopology, queue: &str, want: u32) {
    let what = format!("{queue} never held {want}");
    until_count(
        topology,
        queue,
        Duration::from_secs(10),
        |c| c == want,
        &what,
    )
    .await;
}

/// A batch applied whole is acked with one `multiple` ack: every message of it leaves the queue.
#[tokio::test(flavor = "multi_thread")]
async fn a_batch_acked_whole_leaves_nothing_in_the_queue() {
    let topology = TestTopology::create();
    let (batch, batches) = one_batch_of(&topology, 5).await;
    batch.answer(vec![Verdict::Ack; 5]);
    stop(batches).await;
    // none was left unacked: nothing went back to the queue, a new consumer gets nothing
    queued_becomes(&topology, &topology.topology.queue, 0).await;
    let mut again = consumer::start(topology.address(), topology.topology.clone(), 10);
    assert!(
        tokio::time::timeout(Duration::from_millis(700), again.recv())
            .await
            .is_err(),
        "nothing redelivered"
    );
}

/// A batch with one permanent failure still answers each message on its own: the others are
/// acked, that one dead-lettered.
#[tokio::test(flavor = "multi_thread")]
async fn a_mixed_batch_answers_each_message_on_its_own() {
    let topology = TestTopology::create();
    let (batch, batches) = one_batch_of(&topology, 3).await;
    batch.answer(vec![Verdict::Ack, Verdict::DeadLetter, Verdict::Ack]);
    dead_letters(&topology, 1).await;
    stop(batches).await;
    queued_becomes(&topology, &topology.topology.queue, 0).await;
    assert_eq!(
        topology.message_count(&topology.topology.dead_letter_queue),
        1
    );
}

/// The dead-letter queue is bounded (`x-max-length`, oldest dropped first): nothing consumes
/// it, and a stream of poison or forged messages must not fill the broker's disk. One declared
/// unbounded by an earlier release is used as it is (the broker refuses a changed
/// declaration): declaring the topology still succeeds. Before, it was declared unbounded.
#[test]
fn the_dead_letter_queue_is_bounded_and_an_earlier_unbounded_one_still_works() {
    use event_bus::message::DEAD_LETTER_MAX;
    let topology = TestTopology::create();
    let vhost = url::Url::parse(&event_bus::testing::amqp_url())
        .unwrap()
        .path()
        .trim_start_matches('/')
        .replace("%2f", "/")
        .replace("%2F", "/");
    let vhost = if vhost.is_empty() {
        "/".to_owned()
    } else {
        vhost
    };
    let listed = std::process::Command::new("rabbitmqctl")
        .args(["-q", "list_queues", "-p", &vhost, "name", "arguments"])
        .output()
        .expect("rabbitmqctl (the broker's own tool) is installed with it");
    let listed = String::from_utf8_lossy(&listed.stdout);
    let dead = listed
        .lines()
        .find(|l| l.starts_with(&format!("{}\t", topology.topology.dead_letter_queue)))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(
        dead.contains(&format!("\"x-max-length\",{DEAD_LETTER_MAX}")),
        "{dead}"
    );
    assert!(dead.contains("drop-head"), "{dead}");

    let mut connection = event_bus::connection::open(&topology.address()).unwrap();
    let channel = connection.open_channel(None).unwrap();
    let queue = topology.topology.dead_letter_queue.as_str();
    channel
        .queue_delete(queue, amiquip::QueueDeleteOptions::default())
        .unwrap();
    let plain = amiquip::QueueDeclareOptions {
        durable: true,
        ..Default::default()
    };
    channel.queue_declare(queue, plain).unwrap();
    topology
        .topology
        .declare_all(&mut connection)
        .expect("an earlier release's unbounded dead-letter queue is used as it is");
    let _ = connection.close();
}
