//! Consuming with manual acknowledgements, on a thread of its own.

use std::time::Duration;

use amiquip::{AmqpValue, ConsumerMessage, ConsumerOptions, Publish};
use crossbeam_channel::RecvTimeoutError;
use tokio::sync::mpsc;

use crate::connection::{open, AmqpAddress};
use crate::error::BusError;
use crate::message::{message_id, Topology};

/// How long to wait for more messages to fill a batch once one has arrived.
const BATCH_LINGER: Duration = Duration::from_millis(5);
/// How often an idle consumer checks whether it should stop.
const IDLE_CHECK: Duration = Duration::from_millis(500);
/// The longest pause between reconnection attempts.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The header that counts how often a message has been retried after a transient failure.
pub const ATTEMPTS_HEADER: &str = "x-buy-orders-attempts";
/// How many times a message is handled in all before a transient failure dead-letters it.
pub const MAX_ATTEMPTS: u32 = 5;
/// How often the consumer counts the dead-letter queue (`dead_letter_queue_messages`).
const DEAD_LETTER_CHECK: Duration = Duration::from_secs(15);

/// One message as the async side sees it.
#[derive(Debug, Clone)]
pub struct Message {
    /// The body.
    pub body: Vec<u8>,
    /// `message_id`, for logs.
    pub message_id: String,
    /// Whether the broker delivered it before (after a reconnect, say: not a verdict on it).
    pub redelivered: bool,
    /// How many times it was handled before and retried ([`Verdict::Retry`]): 0 the first time.
    pub attempts: u32,
}

/// What to do with one message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Done: remove it from the queue.
    Ack,
    /// Not handled at all (shutting down): put it back as it is.
    Requeue,
    /// A transient failure (the database is down): try again later, counted. The message goes
    /// back to the queue with its attempts header incremented; once it has been handled
    /// [`MAX_ATTEMPTS`] times it is dead-lettered instead.
    Retry,
    /// A permanent failure (it cannot be read, and never will): send it to the dead-letter
    /// queue now.
    DeadLetter,
}

/// The attempts header of a delivery (0 when absent or unreadable).
fn attempts(properties: &amiquip::AmqpProperties) -> u32 {
    let value = properties
        .headers()
        .as_ref()
        .and_then(|headers| headers.get(ATTEMPTS_HEADER));
    match value {
        Some(AmqpValue::LongUInt(n)) => *n,
        Some(AmqpValue::LongLongInt(n)) => u32::try_from(*n).unwrap_or(u32::MAX),
        Some(AmqpValue::LongInt(n)) => u32::try_from(*n).unwrap_or(0),
        _ => 0,
    }
}

/// Messages delivered together (up to the prefetch count), answered together.
pub struct Batch {
    /// The messages, in delivery order.
    pub messages: Vec<Message>,
    reply: std::sync::mpsc::SyncSender<Vec<Verdict>>,
}

impl Batch {
    /// Answers every message (one verdict each, in order). Acks are sent only now, so a crash
    /// before this leaves the messages to be redelivered.
    pub fn answer(self, verdicts: Vec<Verdict>) {
        let _ = self.reply.send(verdicts);
    }
}

/// Starts consuming the topology's queue on a dedicated thread, reconnecting with backoff, and
/// returns the batches. Dropping the receiver stops the thread (unanswered messages are
/// redelivered).
pub fn start(address: AmqpAddress, topology: Topology, prefetch: u16) -> mpsc::Receiver<Batch> {
    let (batches, receiver) = mpsc::channel(1);
    std::thread::Builder::new()
        .name("amqp-consumer".into())
        .spawn(move || {
            let mut backoff = Duration::from_millis(100);
            while !batches.is_closed() {
                match consume(&address, &topology, prefetch, &batches) {
                    Ok(()) => return,
                    Err(err) => {
                        tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "consumer disconnected");
                        std::thread::sleep(backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
        })
        .expect("spawning a thread");
    receiver
}

/// One connection's worth of consuming. `Ok` when the receiver is gone (stop), `Err` to
/// reconnect.
fn consume(
    address: &AmqpAddress,
    topology: &Topology,
    prefetch: u16,
    batches: &mpsc::Sender<Batch>,
) -> Result<(), BusError> {
    let err = |e: amiquip::Error| BusError::Unavailable(e.to_string());
    let mut connection = open(address)?;
    topology.declare_all(&mut connection)?;
    if let Ok(waiting) = topology.dead_letters(&mut connection) {
        metrics::gauge!("dead_letter_queue_messages").set(f64::from(waiting));
    }
    let channel = connection.open_channel(None).map_err(err)?;
    channel.qos(0, prefetch, false).map_err(err)?;
    let consumer = channel
        .basic_consume(topology.queue.as_str(), ConsumerOptions::default())
        .map_err(err)?;
    tracing::info!(queue = %topology.queue, prefetch, "consuming");
    let lost = |message: &ConsumerMessage| BusError::Unavailable(format!("{message:?}"));
    let mut count_dead_letters_at = std::time::Instant::now() + DEAD_LETTER_CHECK;
    loop {
        if std::time::Instant::now() >= count_dead_letters_at {
            count_dead_letters_at = std::time::Instant::now() + DEAD_LETTER_CHECK;
            if let Ok(waiting) = topology.dead_letters(&mut connection) {
                metrics::gauge!("dead_letter_queue_messages").set(f64::from(waiting));
            }
        }
        let first = match consumer.receiver().recv_timeout(IDLE_CHECK) {
            Ok(ConsumerMessage::Delivery(delivery)) => delivery,
            Ok(other) => return Err(lost(&other)),
            Err(RecvTimeoutError::Timeout) if batches.is_closed() => {
                let _ = connection.close();
                return Ok(());
            }
            Err(RecvTimeoutError::Timeout) => continue,
            Err(RecvTimeoutError::Disconnected) => {
                return Err(BusError::Unavailable("consumer channel closed".into()))
            }
        };
        let mut deliveries = vec![first];
        while deliveries.len() < usize::from(prefetch) {
            match consumer.receiver().recv_timeout(BATCH_LINGER) {
                Ok(ConsumerMessage::Delivery(delivery)) => deliveries.push(delivery),
                Ok(other) => return Err(lost(&other)),
                Err(_) => break,
            }
        }
        let (reply, verdicts) = std::sync::mpsc::sync_channel(1);
        let batch = Batch {
            messages: deliveries
                .iter()
                .map(|d| Message {
                    body: d.body.clone(),
                    message_id: message_id(&d.properties),
                    redelivered: d.redelivered,
                    attempts: attempts(&d.properties),
                })
                .collect(),
            reply,
        };
        if batches.blocking_send(batch).is_err() {
            let _ = connection.close(); // unacked: redelivered to the next consumer
            return Ok(());
        }
        let verdicts = verdicts.recv().unwrap_or_default();
        // The usual case, every message applied: one ack for the batch (`multiple`, up to its
        // last delivery tag), not one per message. Every delivery before it on this channel is
        // in this batch (batches are answered whole, in order), so it acks exactly these.
        if verdicts.len() == deliveries.len() && verdicts.iter().all(|v| *v == Verdict::Ack) {
            if let Some(last) = deliveries.pop() {
                consumer.ack_multiple(last).map_err(err)?;
            }
            continue;
        }
        for (index, delivery) in deliveries.into_iter().enumerate() {
            match verdicts.get(index).copied().unwrap_or(Verdict::Requeue) {
                Verdict::Ack => consumer.ack(delivery),
                Verdict::Requeue => consumer.nack(delivery, true),
                Verdict::DeadLetter => consumer.reject(delivery, false),
                Verdict::Retry => {
                    let done = attempts(&delivery.properties).saturating_add(1);
                    if done >= MAX_ATTEMPTS {
                        tracing::error!(message_id = %message_id(&delivery.properties), attempts = done,
                                        "message dead-lettered after repeated transient failures");
                        metrics::counter!("messages_dead_lettered_total").increment(1);
                        consumer.reject(delivery, false)
                    } else {
                        // Back at the queue's tail with the count, then the original acked: a
                        // crash between the two leaves a duplicate, which changes nothing.
                        let mut headers = delivery.properties.headers().clone().unwrap_or_default();
                        headers.insert(ATTEMPTS_HEADER.into(), AmqpValue::LongUInt(done));
                        let properties = delivery.properties.clone().with_headers(headers);
                        channel
                            .basic_publish(
                                "",
                                Publish::with_properties(&delivery.body, topology.queue.as_str(), properties),
                            )
                            .map_err(err)?;
                        consumer.ack(delivery)
                    }
                }
            }
            .map_err(err)?;
        }
    }
}
