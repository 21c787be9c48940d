//! What goes over the wire: the topology, and an event as a message.

use amiquip::{
    AmqpProperties, AmqpValue, Channel, ExchangeDeclareOptions, ExchangeType, FieldTable,
    QueueDeclareOptions,
};
use cqrs_es::DomainEvent;
use order_store::{LoggedEvent, Position};

use crate::error::BusError;

/// The header that carries the event's global position.
pub const POSITION_HEADER: &str = "position";

/// The exchange events are published to, the projector's queue, and where its dead letters go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Topology {
    /// Durable topic exchange; routing key = event type.
    pub exchange: String,
    /// Durable queue bound to the exchange with `#`.
    pub queue: String,
    /// Fanout exchange the queue dead-letters to (`<exchange>.dlx`).
    pub dead_letter_exchange: String,
    /// Durable queue of messages that could not be applied (`<queue>.dead`).
    pub dead_letter_queue: String,
}

impl Topology {
    /// The topology for an exchange and a queue name.
    pub fn new(exchange: &str, queue: &str) -> Self {
        Topology {
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
            dead_letter_exchange: format!("{exchange}.dlx"),
            dead_letter_queue: format!("{queue}.dead"),
        }
    }

    /// Declares the exchange (what a publisher needs).
    pub fn declare_exchange(&self, channel: &Channel) -> Result<(), BusError> {
        channel
            .exchange_declare(
                ExchangeType::Topic,
                self.exchange.as_str(),
                durable_exchange(),
            )
            .map(drop)
            .map_err(|e| BusError::Unavailable(e.to_string()))
    }

    /// Declares everything: exchange, queue with its dead-letter exchange and queue, bindings
    /// (what a consumer needs). Idempotent.
    pub fn declare_all(&self, channel: &Channel) -> Result<(), BusError> {
        let err = |e: amiquip::Error| BusError::Unavailable(e.to_string());
        self.declare_exchange(channel)?;
        channel
            .exchange_declare(
                ExchangeType::Fanout,
                self.dead_letter_exchange.as_str(),
                durable_exchange(),
            )
            .map_err(err)?;
        let durable = QueueDeclareOptions {
            durable: true,
            ..QueueDeclareOptions::default()
        };
        channel
            .queue_declare(self.dead_letter_queue.as_str(), durable.clone())
            .map_err(err)?;
        channel
            .queue_bind(
                self.dead_letter_queue.as_str(),
                self.dead_letter_exchange.as_str(),
                "#",
                FieldTable::default(),
            )
            .map_err(err)?;
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AmqpValue::LongString(self.dead_letter_exchange.clone()),
        );
        channel
            .queue_declare(
                self.queue.as_str(),
                QueueDeclareOptions {
                    arguments,
                    ..durable
                },
            )
            .map_err(err)?;
        channel
            .queue_bind(
                self.queue.as_str(),
                self.exchange.as_str(),
                "#",
                FieldTable::default(),
            )
            .map_err(err)?;
        Ok(())
    }
}

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// An event as a message: JSON body (the logged event, position included), persistent,
/// `message_id` = aggregate id + sequence, the position in a header, routing key = event type.
pub fn encode(event: &LoggedEvent) -> (String, Vec<u8>, AmqpProperties) {
    let body = serde_json::to_vec(event).expect("a logged event always serializes");
    let mut headers = FieldTable::default();
    headers.insert(
        POSITION_HEADER.into(),
        AmqpValue::LongLongInt(event.position.0 as i64),
    );
    let properties = AmqpProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(format!("{}:{}", event.aggregate_id, event.sequence))
        .with_type_(event.event.event_type())
        .with_headers(headers);
    (event.event.event_type(), body, properties)
}

/// A message back into an event, or why it is poison.
pub fn decode(body: &[u8]) -> Result<LoggedEvent, String> {
    let event: LoggedEvent = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if event.position == Position::ZERO {
        return Err("position 0".into());
    }
    Ok(event)
}

/// The message id of a delivery, for logs.
pub fn message_id(properties: &AmqpProperties) -> String {
    properties
        .message_id()
        .as_ref()
        .map_or_else(|| "<none>".to_owned(), |id| id.to_string())
}
