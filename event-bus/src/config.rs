//! Settings of the bus, from the environment (or the matching `--flags`).

use crate::message::Topology;

use settings_kit::{SecretUrl, SecretUrlParser};

fn parse_url() -> SecretUrlParser {
    SecretUrlParser::new(|s| {
        crate::connection::parse(s)
            .map(drop)
            .map_err(|e| e.to_string())
    })
}

/// Where the broker is and what the topology is called.
#[derive(Debug, Clone, clap::Args)]
pub struct BusSettings {
    /// RabbitMQ (`amqp://user:pass@host:port/vhost`, or `amqps://…` over TLS with RabbitMQ's
    /// `cacertfile`, `certfile`, `keyfile`, `verify`, `server_name_indication` parameters).
    /// Unset: no broker (api-write does not publish; the projector tails the event store
    /// directly).
    #[arg(long = "amqp-url", env = "AMQP_URL", value_name = "AMQP_URL", value_parser = parse_url(), hide_env_values = true)]
    pub amqp_url: Option<SecretUrl>,
    /// The durable topic exchange events are published to.
    #[arg(
        long = "amqp-exchange",
        env = "AMQP_EXCHANGE",
        value_name = "AMQP_EXCHANGE",
        default_value = "buy_orders"
    )]
    pub exchange: String,
    /// The projector's durable queue (its dead letters go to `<queue>.dead`).
    #[arg(
        long = "amqp-queue",
        env = "AMQP_QUEUE",
        value_name = "AMQP_QUEUE",
        default_value = "buy_order_view"
    )]
    pub queue: String,
    /// Unacknowledged messages the projector may hold (and so its batch size).
    #[arg(long = "amqp-prefetch", env = "AMQP_PREFETCH", value_name = "AMQP_PREFETCH",
          default_value_t = 100, value_parser = clap::value_parser!(u16).range(1..))]
    pub prefetch: u16,
    /// The type of the projector's queue: `classic` (the default; a single node's disk) or
    /// `quorum` (RabbitMQ's replicated queue, what to choose on a cluster: it survives the loss
    /// of a minority of nodes). A queue's type cannot change: switching an existing deployment
    /// means a new `AMQP_QUEUE` name (the projector catches up from the store).
    #[arg(long = "amqp-queue-type", env = "AMQP_QUEUE_TYPE", value_name = "AMQP_QUEUE_TYPE",
          value_enum, default_value_t = QueueType::Classic)]
    pub queue_type: QueueType,
}

/// `AMQP_QUEUE_TYPE`: how the broker keeps the projector's queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum QueueType {
    /// A classic queue: durable on one node's disk.
    #[default]
    Classic,
    /// A quorum queue: replicated with Raft over the cluster's nodes, dead letters delivered
    /// at least once.
    Quorum,
}

impl BusSettings {
    /// `AMQP_URL` with its password: for connecting, never printing.
    pub fn url(&self) -> Option<&str> {
        self.amqp_url.as_ref().map(SecretUrl::expose)
    }

    /// The topology these settings name.
    pub fn topology(&self) -> Topology {
        Topology::new(&self.exchange, &self.queue).with_queue_type(self.queue_type)
    }

    /// Settings for one broker URL and unique names (tests).
    pub fn for_url(url: &str, exchange: &str, queue: &str) -> Self {
        BusSettings {
            amqp_url: Some(SecretUrl::new(url)),
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
            prefetch: 100,
            queue_type: QueueType::Classic,
        }
    }
}
