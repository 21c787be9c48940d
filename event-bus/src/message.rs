//! What goes over the wire: the topology, and an event as a message.

use amiquip::{
    AmqpProperties, AmqpValue, Channel, Connection, ExchangeDeclareOptions, ExchangeType,
    FieldTable, QueueDeclareOptions,
};
use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use order_domain::{BuyOrder, EventReader, OrderId};
use order_store::postgres::StoredEvent;
use order_store::{LoggedEvent, Position};

use crate::config::QueueType;
use crate::error::BusError;

/// The header that carries the event's global position.
pub const POSITION_HEADER: &str = "position";
/// The header that carries the log's epoch at that position: (epoch, position) names one event
/// across database failovers (docs/events.md).
pub const EPOCH_HEADER: &str = "epoch";

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
    /// The queue's type (`AMQP_QUEUE_TYPE`).
    pub queue_type: QueueType,
}

impl Topology {
    /// The topology for an exchange and a queue name.
    pub fn new(exchange: &str, queue: &str) -> Self {
        Topology {
            exchange: exchange.to_owned(),
            queue: queue.to_owned(),
            dead_letter_exchange: format!("{exchange}.dlx"),
            dead_letter_queue: format!("{queue}.dead"),
            queue_type: QueueType::Classic,
        }
    }

    /// The same topology with its queue of `queue_type`.
    pub fn with_queue_type(mut self, queue_type: QueueType) -> Self {
        self.queue_type = queue_type;
        self
    }

    /// The arguments of the queue: where its dead letters go, and for a quorum queue what it
    /// needs for them to get there at least once (`at-least-once` dead-lettering, which only
    /// works with `reject-publish` overflow) and its own poison-message limit (a backstop
    /// behind the consumer's counted retries).
    fn queue_arguments(&self) -> FieldTable {
        let mut arguments = FieldTable::default();
        arguments.insert(
            "x-dead-letter-exchange".into(),
            AmqpValue::LongString(self.dead_letter_exchange.clone()),
        );
        if self.queue_type == QueueType::Quorum {
            for (name, value) in [
                ("x-queue-type", "quorum"),
                ("x-dead-letter-strategy", "at-least-once"),
                ("x-overflow", "reject-publish"),
            ] {
                arguments.insert(name.into(), AmqpValue::LongString(value.into()));
            }
            arguments.insert(
                "x-delivery-limit".into(),
                AmqpValue::LongLongInt(QUORUM_DELIVERY_LIMIT),
            );
        }
        arguments
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
    /// (what a consumer needs), on channels of its own on `connection`. Idempotent.
    ///
    /// The dead-letter queue is bounded: at most [`DEAD_LETTER_MAX`] messages, the oldest
    /// dropped first (nothing consumes it; without a bound a stream of poison or forged
    /// messages would grow it until the broker's disk alarm stops every publisher). A dead-letter
    /// queue declared unbounded by an earlier release cannot be given the bound in place (the
    /// broker refuses a declaration whose arguments differ): it is used as it is, and a warning
    /// says how to bound it with a policy.
    pub fn declare_all(&self, connection: &mut Connection) -> Result<(), BusError> {
        let err = |e: amiquip::Error| BusError::Unavailable(e.to_string());
        let channel = connection.open_channel(None).map_err(err)?;
        self.declare_exchange(&channel)?;
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
        let mut bounded = FieldTable::default();
        bounded.insert(
            "x-max-length".into(),
            AmqpValue::LongLongInt(DEAD_LETTER_MAX),
        );
        bounded.insert(
            "x-overflow".into(),
            AmqpValue::LongString("drop-head".into()),
        );
        let declared = channel.queue_declare(
            self.dead_letter_queue.as_str(),
            QueueDeclareOptions {
                arguments: bounded,
                ..durable.clone()
            },
        );
        let channel = match declared {
            Ok(_) => channel,
            Err(amiquip::Error::ServerClosedChannel { code: 406, .. }) => {
                tracing::warn!(
                    queue = %self.dead_letter_queue,
                    "the dead-letter queue exists without a length limit (declared by an earlier \
                     release); bound it with a policy: rabbitmqctl set_policy buy-orders-dead \
                     '^{}$' '{{\"max-length\":{DEAD_LETTER_MAX}}}' --apply-to queues",
                    self.dead_letter_queue
                );
                let channel = connection.open_channel(None).map_err(err)?;
                channel
                    .queue_declare_passive(self.dead_letter_queue.as_str())
                    .map_err(err)?;
                channel
            }
            Err(other) => return Err(err(other)),
        };
        channel
            .queue_bind(
                self.dead_letter_queue.as_str(),
                self.dead_letter_exchange.as_str(),
                "#",
                FieldTable::default(),
            )
            .map_err(err)?;
        channel
            .queue_declare(
                self.queue.as_str(),
                QueueDeclareOptions {
                    arguments: self.queue_arguments(),
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
        let _ = channel.close();
        Ok(())
    }

    /// How many messages wait in the dead-letter queue (for the projector's gauge).
    pub fn dead_letters(&self, connection: &mut Connection) -> Result<u32, BusError> {
        let err = |e: amiquip::Error| BusError::Unavailable(e.to_string());
        let channel = connection.open_channel(None).map_err(err)?;
        let count = channel
            .queue_declare_passive(self.dead_letter_queue.as_str())
            .map_err(err)?
            .declared_message_count()
            .unwrap_or(0);
        let _ = channel.close();
        Ok(count)
    }
}

/// The most messages the dead-letter queue keeps (the oldest are dropped past it): a bound on
/// what poison or forged messages can make the broker store. The projector's
/// `dead_letter_queue_messages` gauge reports how many wait, and an alert fires when any do.
pub const DEAD_LETTER_MAX: i64 = 100_000;

/// A quorum queue dead-letters a message redelivered more than this many times (a consumer that
/// crashes on it each time, say). The consumer's own limit (`consumer::MAX_ATTEMPTS`) counts
/// applies that failed; this counts deliveries that never got a verdict.
pub const QUORUM_DELIVERY_LIMIT: i64 = 20;

fn durable_exchange() -> ExchangeDeclareOptions {
    ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    }
}

/// An event as a message: JSON body (position, aggregate id, sequence, `event_version` and the
/// event), persistent, `message_id` = aggregate id + sequence, the position in a header, routing
/// key = event type. The event and its version are the stored ones byte for byte: the relay
/// never reads them into its own version (during a rolling upgrade an old relay passes a newer
/// event on unchanged; upcasting is the reader's job). `docs/events.md` describes the body.
pub fn encode(event: &StoredEvent) -> (String, Vec<u8>, AmqpProperties) {
    let body = serde_json::to_vec(&WireOut {
        epoch: event.epoch,
        position: event.position,
        aggregate_id: &event.aggregate_id,
        sequence: event.sequence,
        event_version: &event.event_version,
        event: &event.payload,
    })
    .expect("a message body always serializes");
    let mut headers = FieldTable::default();
    // Positions come from a bigint column: they fit.
    headers.insert(
        POSITION_HEADER.into(),
        AmqpValue::LongLongInt(i64::try_from(event.position.0).unwrap_or(i64::MAX)),
    );
    headers.insert(EPOCH_HEADER.into(), AmqpValue::LongUInt(event.epoch));
    let properties = AmqpProperties::default()
        .with_delivery_mode(2)
        .with_content_type("application/json".into())
        .with_message_id(format!("{}:{}", event.aggregate_id, event.sequence))
        .with_type_(event.event_type.clone())
        .with_headers(headers);
    (event.event_type.clone(), body, properties)
}

/// The body of a message as the relay writes it: the stored payload as raw JSON.
#[derive(serde::Serialize)]
struct WireOut<'a> {
    epoch: u32,
    position: Position,
    aggregate_id: &'a str,
    sequence: u64,
    event_version: &'a str,
    event: &'a serde_json::value::RawValue,
}

/// The body of a message, before its event is read.
#[derive(serde::Serialize, serde::Deserialize)]
struct Wire {
    position: Position,
    aggregate_id: String,
    sequence: u64,
    /// Absent in messages of relays from before versions were sent: those are all 1.0.0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    event_version: Option<String>,
    event: serde_json::Value,
}

/// A message back into an event, through order-domain's own upcasters, or why it is poison.
pub fn decode(body: &[u8]) -> Result<LoggedEvent, String> {
    decode_with(body, &EventReader::new())
}

/// A message back into an event, upcast by `reader` from the version it was published in, or
/// why it is poison (unreadable JSON, a version no upcaster brings to the current one, an id
/// that is not an order's): permanent, so dead-lettered at once.
pub fn decode_with(body: &[u8], reader: &EventReader) -> Result<LoggedEvent, String> {
    let wire: Wire = serde_json::from_slice(body).map_err(|e| e.to_string())?;
    if wire.position == Position::ZERO {
        return Err("position 0".into());
    }
    let event_type = wire
        .event
        .as_object()
        .and_then(|tagged| tagged.keys().next().cloned())
        .ok_or("the event is not a tagged object")?;
    let sequence = usize::try_from(wire.sequence).map_err(|e| e.to_string())?;
    let stored = SerializedEvent::new(
        wire.aggregate_id.clone(),
        sequence,
        BuyOrder::TYPE.to_owned(),
        event_type,
        wire.event_version.unwrap_or_else(|| "1.0.0".to_owned()),
        wire.event,
        serde_json::Value::Null,
    );
    let event = reader.read(stored).map_err(|e| e.to_string())?;
    Ok(LoggedEvent {
        position: wire.position,
        aggregate_id: OrderId::parse(&wire.aggregate_id).map_err(|e| e.to_string())?,
        sequence: wire.sequence,
        event,
    })
}

/// The message id of a delivery, for logs.
pub fn message_id(properties: &AmqpProperties) -> String {
    properties
        .message_id()
        .as_ref()
        .map_or_else(|| "<none>".to_owned(), |id| id.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use order_domain::cqrs_es::persist::SemanticVersionEventUpcaster;

    fn body(version: Option<&str>, drop_source: bool) -> Vec<u8> {
        let mut event = serde_json::json!({"BuyOrderPlaced": {
            "order_id": "50ef6237-3159-58cc-9792-6ff67dc20d42", "client_id": "shop-1",
            "idempotency_key": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "currency": "USD",
            "amount": "100.00", "rate": "48478.80", "rate_source": "coinbase",
            "rate_quoted_at": "2026-11-26T10:15:30.250Z", "satoshis": 206276,
            "placed_at": "2026-11-26T10:15:30.412345Z"}});
        if drop_source {
            event["BuyOrderPlaced"]
                .as_object_mut()
                .unwrap()
                .remove("rate_source");
        }
        let mut wire = serde_json::json!({"position": 7,
            "aggregate_id": "50ef6237-3159-58cc-9792-6ff67dc20d42", "sequence": 1, "event": event});
        if let Some(version) = version {
            wire["event_version"] = version.into();
        }
        serde_json::to_vec(&wire).unwrap()
    }

    fn stored(version: &str, payload: &str) -> StoredEvent {
        StoredEvent {
            position: Position(7),
            aggregate_id: "50ef6237-3159-58cc-9792-6ff67dc20d42".into(),
            sequence: 1,
            event_type: "BuyOrderPlaced".into(),
            event_version: version.into(),
            payload: serde_json::value::RawValue::from_string(payload.into()).unwrap(),
            epoch: 2,
        }
    }

    #[test]
    fn a_message_round_trips_with_its_version() {
        let event = decode(&body(None, false)).expect("a message of a relay before versions");
        let wire: serde_json::Value = serde_json::from_slice(&body(None, false)).unwrap();
        let (_, encoded, _) = encode(&stored("1.0.0", &wire["event"].to_string()));
        let wire: serde_json::Value = serde_json::from_slice(&encoded).unwrap();
        assert_eq!(wire["event_version"], "1.0.0");
        assert_eq!(decode(&encoded).unwrap(), event);
    }

    /// A newer event (an added field, a newer major) goes out as stored, text and version.
    #[test]
    fn the_stored_payload_goes_out_byte_for_byte() {
        let payload = r#"{"BuyOrderPlaced": {"satoshis": 206276,   "new_field": [1.50, "x"]}}"#;
        for version in ["1.1.0", "2.0.0"] {
            let (routing_key, encoded, properties) = encode(&stored(version, payload));
            assert_eq!(routing_key, "BuyOrderPlaced");
            let text = String::from_utf8(encoded).unwrap();
            assert!(text.contains(payload), "{text}");
            assert!(
                text.contains(&format!(r#""event_version":"{version}""#)),
                "{text}"
            );
            assert_eq!(properties.type_().as_deref(), Some("BuyOrderPlaced"));
        }
    }

    #[test]
    fn an_older_message_is_upcast_and_a_newer_major_is_poison() {
        let old = body(Some("0.9.0"), true);
        let refused = decode(&old).unwrap_err();
        assert!(refused.contains("0.9.0 has no upcaster"), "{refused}");
        let reader = EventReader::new().with_upcaster(SemanticVersionEventUpcaster::new(
            "BuyOrderPlaced",
            "1.0.0",
            Box::new(|mut payload| {
                payload["BuyOrderPlaced"]["rate_source"] = "unknown".into();
                payload
            }),
        ));
        let upcast = decode_with(&old, &reader).unwrap();
        assert_eq!(upcast.event.as_placed().unwrap().rate_source, "unknown");
        let newer = decode(&body(Some("2.0.0"), false)).unwrap_err();
        assert!(newer.contains("is newer than 1.0.0"), "{newer}");
    }
}
