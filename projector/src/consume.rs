//! The projector fed by RabbitMQ: batches from the queue, acknowledged only after the read
//! table's transaction commits.

use event_bus::consumer::{Batch, Message, Verdict};
use event_bus::message::decode;
use order_store::{LoggedEvent, StoreError};
use service_kit::CancellationToken;
use tokio::sync::mpsc;

use crate::{Projector, FIRST_BACKOFF, MAX_BACKOFF};

impl Projector {
    /// Folds batches from the queue into the read table until `shutdown` (or the consumer
    /// stops). Catches up from the event store first, and again whenever a message's position
    /// is not the next one after the checkpoint, so a purged or lost queue cannot leave the
    /// table behind. Redeliveries and duplicates change nothing.
    pub async fn consume(&self, mut batches: mpsc::Receiver<Batch>, shutdown: CancellationToken) {
        let mut backoff = FIRST_BACKOFF;
        loop {
            match self.catch_up().await {
                Ok(position) => {
                    tracing::info!(%position, "caught up from the event store");
                    break;
                }
                Err(err) => {
                    tracing::error!(%err, "catch-up failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(backoff) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        loop {
            let batch = tokio::select! {
                batch = batches.recv() => match batch {
                    Some(batch) => batch,
                    None => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let verdicts = self.apply_messages(&batch.messages).await;
            batch.answer(verdicts);
        }
        tracing::info!("projector stopped");
    }

    /// The verdict on each message: applied (ack), to retry (requeue), or poison (dead letter:
    /// unreadable twice).
    pub async fn apply_messages(&self, messages: &[Message]) -> Vec<Verdict> {
        let mut verdicts = vec![Verdict::Ack; messages.len()];
        let mut events = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            match decode(&message.body) {
                Ok(event) => events.push((index, event)),
                Err(why) if message.redelivered => {
                    tracing::error!(message_id = %message.message_id, %why, "message dead-lettered");
                    metrics::counter!("messages_dead_lettered_total").increment(1);
                    verdicts[index] = Verdict::DeadLetter;
                }
                Err(why) => {
                    tracing::warn!(message_id = %message.message_id, %why, "unreadable message; one retry");
                    verdicts[index] = Verdict::Requeue;
                }
            }
        }
        let mut logged: Vec<LoggedEvent> = events.iter().map(|(_, e)| e.clone()).collect();
        if let Err(err) = self.apply_in_order(&mut logged).await {
            tracing::error!(%err, "projection failed; messages requeued");
            tokio::time::sleep(FIRST_BACKOFF * 4).await; // do not spin on a dead database
            for (index, _) in &events {
                verdicts[*index] = Verdict::Requeue;
            }
        }
        verdicts
    }

    /// Applies events that continue the checkpoint exactly; on any gap, catches up from the
    /// event store instead (which covers these events too: they were committed before they
    /// were published).
    async fn apply_in_order(&self, events: &mut Vec<LoggedEvent>) -> Result<(), StoreError> {
        events.sort_by_key(|e| e.position);
        events.dedup_by_key(|e| e.position);
        let checkpoint = self.model.checkpoint().await?;
        events.retain(|e| e.position > checkpoint);
        let contiguous = events
            .iter()
            .enumerate()
            .all(|(i, e)| e.position.0 == checkpoint.0 + 1 + i as u64);
        if contiguous {
            if !events.is_empty() {
                self.model.apply(events).await?;
                self.record(events).await;
            }
        } else {
            tracing::info!(%checkpoint, first = %events[0].position, "gap in the stream; catching up from the event store");
            self.catch_up().await?;
        }
        Ok(())
    }
}
