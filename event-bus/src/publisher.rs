//! Publishing with publisher confirms, on a thread of its own.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use amiquip::{Channel, Confirm, ConfirmSmoother, Connection, Publish};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use order_store::postgres::StoredEvent;
use tokio::sync::oneshot;

use crate::connection::{open, AmqpAddress};
use crate::error::BusError;
use crate::message::{encode, Topology};

/// How long the broker may take to confirm a batch before the connection is given up.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);

struct Request {
    events: Vec<StoredEvent>,
    reply: oneshot::Sender<Result<(), BusError>>,
}

/// Publishes batches of events and answers once the broker has confirmed every one of them.
///
/// The AMQP connection lives on a dedicated thread (amiquip is blocking); a failed batch drops
/// the connection and the next batch opens a new one, so the caller's retry with backoff is the
/// reconnect loop. At most one batch is in flight, so the unconfirmed window is the batch size.
pub struct Publisher {
    requests: mpsc::Sender<Request>,
}

impl Publisher {
    /// Starts the publishing thread. It connects lazily, on the first batch.
    pub fn start(address: AmqpAddress, topology: Topology) -> Publisher {
        let (requests, incoming) = mpsc::channel::<Request>();
        std::thread::Builder::new()
            .name("amqp-publisher".into())
            .spawn(move || serve(&address, &topology, incoming))
            .expect("spawning a thread");
        Publisher { requests }
    }

    /// Publishes `events` in order; `Ok` once the broker confirmed all of them.
    pub async fn publish(&self, events: Vec<StoredEvent>) -> Result<(), BusError> {
        let (reply, answer) = oneshot::channel();
        let gone = || BusError::Unavailable("the publisher thread has stopped".into());
        self.requests
            .send(Request { events, reply })
            .map_err(|_| gone())?;
        answer.await.map_err(|_| gone())?
    }
}

struct Session {
    connection: Connection,
    channel: Channel,
    confirms: Receiver<Confirm>,
    smoother: ConfirmSmoother,
    next_tag: u64,
}

impl Session {
    fn open(address: &AmqpAddress, topology: &Topology) -> Result<Session, BusError> {
        let err = |e: amiquip::Error| BusError::Unavailable(e.to_string());
        let mut connection = open(address)?;
        let channel = connection.open_channel(None).map_err(err)?;
        topology.declare_exchange(&channel)?;
        // listen first, then enable: no confirm can be missed
        let confirms = channel.listen_for_publisher_confirms().map_err(err)?;
        channel.enable_publisher_confirms().map_err(err)?;
        Ok(Session {
            connection,
            channel,
            confirms,
            smoother: ConfirmSmoother::new(),
            next_tag: 1,
        })
    }

    fn publish_confirmed(
        &mut self,
        topology: &Topology,
        request: &Request,
    ) -> Result<(), BusError> {
        let first = self.next_tag;
        for event in &request.events {
            // A caller that stopped waiting (its relay timed out, retried, or lost the lease)
            // must not have the rest of its batch go out behind the next relay's.
            if request.reply.is_closed() {
                return Err(BusError::Unavailable("the caller stopped waiting".into()));
            }
            let (routing_key, body, properties) = encode(event);
            self.channel
                .basic_publish(
                    topology.exchange.as_str(),
                    Publish::with_properties(&body, routing_key, properties),
                )
                .map_err(|e| BusError::Unavailable(e.to_string()))?;
            self.next_tag += 1;
        }
        let last = self.next_tag - 1;
        let mut confirmed = first - 1;
        let deadline = Instant::now() + CONFIRM_TIMEOUT;
        while confirmed < last {
            let wait = deadline.saturating_duration_since(Instant::now());
            let confirm = self.confirms.recv_timeout(wait).map_err(|e| match e {
                RecvTimeoutError::Timeout => BusError::NotConfirmed("no confirm in time".into()),
                RecvTimeoutError::Disconnected => BusError::Unavailable("connection lost".into()),
            })?;
            for confirm in self.smoother.process(confirm) {
                match confirm {
                    Confirm::Ack(payload) => confirmed = confirmed.max(payload.delivery_tag),
                    Confirm::Nack(payload) => {
                        return Err(BusError::NotConfirmed(format!(
                            "broker nacked delivery {}",
                            payload.delivery_tag
                        )))
                    }
                }
            }
        }
        Ok(())
    }
}

fn serve(address: &AmqpAddress, topology: &Topology, incoming: mpsc::Receiver<Request>) {
    let mut session: Option<Session> = None;
    while let Ok(request) = incoming.recv() {
        // Queued while an earlier batch hung, and given up on since: never published (a relay
        // that has lost its lease meanwhile would otherwise interleave a stale batch with the
        // new relay's).
        if request.reply.is_closed() {
            metrics::counter!("relay_batches_abandoned_total").increment(1);
            tracing::warn!(
                events = request.events.len(),
                "a batch whose caller stopped waiting is not published"
            );
            continue;
        }
        let result = match session.as_mut() {
            Some(open) => open.publish_confirmed(topology, &request),
            None => Session::open(address, topology).and_then(|mut fresh| {
                let result = fresh.publish_confirmed(topology, &request);
                session = Some(fresh);
                result
            }),
        };
        if result.is_err() {
            if let Some(broken) = session.take() {
                let _ = broken.connection.close();
            }
        }
        let _ = request.reply.send(result);
    }
    if let Some(open) = session.take() {
        let _ = open.connection.close();
    }
}
