//! The projector fed by RabbitMQ: batches from the queue, acknowledged only after the read
//! table's transaction commits.

use event_bus::consumer::{Batch, Message, Verdict};
use event_bus::message::decode_with;
use order_store::{LoggedEvent, StoreError};
use service_kit::CancellationToken;
use tokio::sync::mpsc;

use crate::{Projector, FIRST_BACKOFF, HEAD_CHECK, MAX_BACKOFF};

impl Projector {
    /// Folds batches from the queue into the read table until `shutdown` (or the consumer
    /// stops). Catches up from the event store first, again whenever a message's position is
    /// not the next one after the checkpoint, and whenever the log has moved while the queue
    /// brought nothing for a while (a relay that stopped publishing, a queue that stopped
    /// delivering): a purged, lost or silent queue cannot leave the table behind. Redeliveries
    /// and duplicates change nothing.
    pub async fn consume(&self, mut batches: mpsc::Receiver<Batch>, shutdown: CancellationToken) {
        tokio::spawn(self.clone().watch_lag(shutdown.clone()));
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
        let mut quiet_since = tokio::time::Instant::now();
        loop {
            let batch = tokio::select! {
                batch = batches.recv() => match batch {
                    Some(batch) => batch,
                    None => break,
                },
                _ = tokio::time::sleep_until(quiet_since + HEAD_CHECK) => {
                    self.catch_up_if_silent().await;
                    quiet_since = tokio::time::Instant::now();
                    continue;
                }
                _ = shutdown.cancelled() => break,
            };
            quiet_since = tokio::time::Instant::now();
            let verdicts = self.apply_messages(&batch.messages).await;
            batch.answer(verdicts);
        }
        tracing::info!("projector stopped");
    }

    /// The queue brought nothing for a while: if the log moved meanwhile, the events are not
    /// coming that way (yet), so apply them from the store. Messages that arrive later for them
    /// change nothing.
    async fn catch_up_if_silent(&self) {
        let behind = async {
            Ok::<bool, StoreError>(self.log.head().await? > self.model.checkpoint().await?)
        };
        match behind.await {
            Ok(true) => match self.catch_up().await {
                Ok(position) => {
                    metrics::counter!("projector_silent_queue_catch_ups_total").increment(1);
                    tracing::warn!(%position, "the queue was silent while the log moved; caught up from the event store");
                }
                Err(err) => tracing::error!(%err, "catch-up after a silent queue failed"),
            },
            Ok(false) => {}
            Err(err) => tracing::warn!(%err, "cannot compare the log's head with the checkpoint"),
        }
    }

    /// The verdict on each message: applied (ack); unreadable, which no retry can change
    /// (dead letter at once); or not applied because the read table failed, a transient failure
    /// (retry: counted, with a growing pause, and dead-lettered after
    /// `event_bus::consumer::MAX_ATTEMPTS`; the store's catch-up covers its event anyway).
    pub async fn apply_messages(&self, messages: &[Message]) -> Vec<Verdict> {
        let mut verdicts = vec![Verdict::Ack; messages.len()];
        let mut events = Vec::with_capacity(messages.len());
        for (index, message) in messages.iter().enumerate() {
            match decode_with(&message.body, &self.reader) {
                Ok(event) => events.push((index, event)),
                Err(why) => {
                    tracing::error!(message_id = %message.message_id, %why, "unreadable message dead-lettered");
                    metrics::counter!("messages_dead_lettered_total").increment(1);
                    verdicts[index] = Verdict::DeadLetter;
                }
            }
        }
        let mut logged: Vec<LoggedEvent> = events.iter().map(|(_, e)| e.clone()).collect();
        if let Err(err) = self.apply_in_order(&mut logged).await {
            let tried = messages.iter().map(|m| m.attempts).max().unwrap_or(0);
            let pause = (FIRST_BACKOFF * 4)
                .saturating_mul(1 << tried.min(6))
                .min(MAX_BACKOFF);
            tracing::error!(%err, attempts = tried + 1, retry_in_ms = pause.as_millis() as u64,
                            "projection failed; messages to be retried");
            tokio::time::sleep(pause).await; // do not spin on a dead database
            for (index, _) in &events {
                verdicts[*index] = Verdict::Retry;
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
