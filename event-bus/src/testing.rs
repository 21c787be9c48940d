//! Test support (feature `test-support`): a topology with names of its own per test, so tests
//! share the machine's RabbitMQ in parallel, deleted when the test ends.

use amiquip::QueueDeleteOptions;

use crate::connection::{open, parse, AmqpAddress};
use crate::message::Topology;

/// The broker tests use; `TEST_AMQP_URL` overrides it.
pub fn amqp_url() -> String {
    std::env::var("TEST_AMQP_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// A fresh topology (exchange, queue, dead letters) for one test.
pub struct TestTopology {
    /// The names.
    pub topology: Topology,
    address: AmqpAddress,
}

impl TestTopology {
    /// Declares a topology with unique names. Panics with a clear message if RabbitMQ is not
    /// reachable: a test that needs it fails rather than skip (`.ci/run` starts it).
    pub fn create() -> TestTopology {
        let url = amqp_url();
        let address = parse(&url).expect("TEST_AMQP_URL");
        let id = uuid::Uuid::new_v4().simple().to_string();
        let topology = Topology::new(&format!("bo_test_{id}"), &format!("bo_test_{id}_view"));
        let mut connection = open(&address).unwrap_or_else(|e| {
            panic!("RabbitMQ is not reachable at {url} ({e}); start it (see .ci/run)")
        });
        topology
            .declare_all(&mut connection)
            .expect("declaring the test topology");
        let _ = connection.close();
        TestTopology { topology, address }
    }

    /// The broker's address.
    pub fn address(&self) -> AmqpAddress {
        self.address.clone()
    }

    /// Publishes `body` to the exchange as a `BuyOrderPlaced` message with `message_id`, as any
    /// publisher could (for messages the relay would never send).
    pub fn publish_raw(&self, body: &[u8], message_id: &str) {
        let mut connection = open(&self.address).expect("RabbitMQ");
        let channel = connection.open_channel(None).expect("a channel");
        let properties = amiquip::AmqpProperties::default().with_message_id(message_id.into());
        channel
            .basic_publish(
                self.topology.exchange.as_str(),
                amiquip::Publish::with_properties(body, "BuyOrderPlaced", properties),
            )
            .expect("published");
        let _ = connection.close();
    }

    /// How many messages wait in `queue`.
    pub fn message_count(&self, queue: &str) -> u32 {
        let mut connection = open(&self.address).expect("RabbitMQ");
        let channel = connection.open_channel(None).expect("a channel");
        let count = channel
            .queue_declare_passive(queue)
            .ok()
            .and_then(|q| q.declared_message_count())
            .unwrap_or(0);
        let _ = connection.close();
        count
    }
}

impl Drop for TestTopology {
    fn drop(&mut self) {
        let Ok(mut connection) = open(&self.address) else {
            return;
        };
        if let Ok(channel) = connection.open_channel(None) {
            for queue in [&self.topology.queue, &self.topology.dead_letter_queue] {
                let _ = channel.queue_delete(queue.as_str(), QueueDeleteOptions::default());
            }
            for exchange in [&self.topology.exchange, &self.topology.dead_letter_exchange] {
                let _ = channel.exchange_delete(exchange.as_str(), false);
            }
        }
        let _ = connection.close();
    }
}
