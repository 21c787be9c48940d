//! The projector fed by RabbitMQ: each batch from the queue wakes a catch-up from the event
//! store, and is acknowledged once the read table's transaction commits. The queue says when
//! to look, never what to write: messages are checked against the store, never applied.

use std::collections::{BTreeSet, HashMap};

use event_bus::consumer::{Batch, Message, Verdict};
use event_bus::message::decode_with;
use order_store::{LoggedEvent, Position, StoreError};
use service_kit::CancellationToken;
use tokio::sync::mpsc;

use crate::{Projector, FIRST_BACKOFF, HEAD_CHECK, MAX_BACKOFF};

/// How long after the log has moved the projector waits for the queue to say so before it
/// applies the new events from the store itself. Measured (bench/RESULTS.md, issue 26): the
/// relay's batches reach the queue ~10 ms after the commit at the median, but now and then
/// 100–300 ms late, waiting on the broker's confirms; past this grace the read table does not
/// wait for them.
const QUEUE_GRACE: std::time::Duration = std::time::Duration::from_millis(50);

impl Projector {
    /// Keeps the read table current from the event store, woken by batches from the queue,
    /// until `shutdown` (or the consumer stops). Catches up first, then on every batch, and
    /// whenever the log has moved while the queue brought nothing for a while (a relay that
    /// stopped publishing, a queue that stopped delivering): a purged, lost, silent or forged
    /// queue cannot leave the table behind, nor write into it. Redeliveries and duplicates
    /// change nothing.
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
        // The store's own wake-up: when the log has moved past what this projector applied and
        // the queue brings nothing within QUEUE_GRACE, the projector catches up from the store
        // (the relay waits for the broker's confirms before its next batch, and those can take
        // hundreds of milliseconds: the read table need not wait for them).
        let mut applied = self
            .follower
            .model()
            .checkpoint()
            .await
            .unwrap_or(Position::ZERO);
        let mut moved_at: Option<tokio::time::Instant> = None;
        let mut store_wait_from = tokio::time::Instant::now();
        loop {
            let watching = moved_at.is_none();
            let grace_over = moved_at.map_or(quiet_since + HEAD_CHECK, |at| at + QUEUE_GRACE);
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
                moved = async {
                    tokio::time::sleep_until(store_wait_from).await;
                    self.follower.log().wait_for_events_after(applied, HEAD_CHECK).await
                }, if watching => {
                    match moved {
                        Ok(true) => moved_at = Some(tokio::time::Instant::now()),
                        Ok(false) => {}
                        Err(err) => {
                            // The store does not answer: look again later, not in a loop.
                            tracing::debug!(%err, "cannot wait on the log; the queue still wakes the projector");
                            store_wait_from = tokio::time::Instant::now() + HEAD_CHECK;
                        }
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(grace_over), if !watching => {
                    if let Some(position) = self.catch_up_late_queue().await {
                        applied = position;
                    }
                    moved_at = None;
                    continue;
                }
                _ = shutdown.cancelled() => break,
            };
            quiet_since = tokio::time::Instant::now();
            let (verdicts, reached) = self.apply_batch(&batch.messages).await;
            batch.answer(verdicts);
            // The batch woke a catch-up: the checkpoint it reached is what was applied.
            if let Some(position) = reached {
                applied = position;
            }
            moved_at = None;
        }
        tracing::info!("projector stopped");
    }

    /// The log moved and the queue brought nothing within [`QUEUE_GRACE`]: apply from the
    /// store. The messages that come later for these events are checked and acked as usual.
    /// Returns the checkpoint reached.
    async fn catch_up_late_queue(&self) -> Option<Position> {
        match self.catch_up().await {
            Ok(position) => {
                metrics::counter!("projector_late_queue_catch_ups_total").increment(1);
                tracing::debug!(%position, "the log moved before the queue said so; caught up from the event store");
                Some(position)
            }
            Err(err) => {
                tracing::warn!(%err, "catch-up ahead of the queue failed; the queue still wakes the projector");
                None
            }
        }
    }

    /// The queue brought nothing for a while: if the log moved meanwhile, the events are not
    /// coming that way (yet), so apply them from the store. Messages that arrive later for them
    /// change nothing.
    async fn catch_up_if_silent(&self) {
        let behind = async {
            Ok::<bool, StoreError>(
                self.follower.log().head().await? > self.follower.model().checkpoint().await?,
            )
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

    /// The verdict on each message. A message is never applied as data: whoever can publish to
    /// the exchange (broker accounts are often shared) must not be able to write the books.
    /// It is a wake-up: the projector catches up from the event store, then checks each
    /// message against the event stored at its position. One that matches is acked; one that
    /// does not (another client's order, an amount of its own, a position the log does not
    /// have, an old position rewritten) is counted in `messages_rejected_total`, logged and
    /// dead-lettered, and changes nothing. An unreadable message is dead-lettered at once. If
    /// the store or the read table fails, the messages are acked unchecked
    /// (`messages_unchecked_total`) after a pause: the next catch-up applies their events.
    pub async fn apply_messages(&self, messages: &[Message]) -> Vec<Verdict> {
        self.apply_batch(messages).await.0
    }

    /// [`Projector::apply_messages`], with the checkpoint its catch-up reached (`None` when it
    /// did not catch up: no readable message, or the store or the table failed).
    async fn apply_batch(&self, messages: &[Message]) -> (Vec<Verdict>, Option<Position>) {
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
        if events.is_empty() {
            return (verdicts, None);
        }
        let claimed: Vec<Position> = events.iter().map(|(_, e)| e.position).collect();
        let mut reached = None;
        match self.catch_up_checking(&claimed).await {
            Ok((position, stored)) => {
                reached = Some(position);
                for (index, event) in &events {
                    let Some(why) = mismatch(event, stored.get(&event.position)) else {
                        continue;
                    };
                    let message = &messages[*index];
                    tracing::error!(message_id = %message.message_id, position = %event.position,
                                    why, "a message that is not the stored event; not applied, dead-lettered");
                    metrics::counter!("messages_rejected_total", "why" => why).increment(1);
                    metrics::counter!("messages_dead_lettered_total").increment(1);
                    verdicts[*index] = Verdict::DeadLetter;
                }
            }
            Err(err) => {
                // The store or the read table is down (a failover, say). The messages carry
                // nothing the store does not: they are acked unchecked, and their events are
                // applied by the next catch-up (the next batch, or the silent-queue check every
                // 2 s). Retried and then dead-lettered, as before, a failover of a few seconds
                // left dead letters for good for a table that was complete.
                tracing::error!(%err, messages = events.len(),
                                "projection failed; the messages are acked unchecked, their events come from the store when it is back");
                metrics::counter!("messages_unchecked_total").increment(events.len() as u64);
                tokio::time::sleep(MAX_BACKOFF.min(FIRST_BACKOFF * 20)).await; // do not spin
            }
        }
        (verdicts, reached)
    }

    /// Catches up from the event store, and returns the checkpoint reached and the stored events
    /// at the `claimed` positions that the log has: those read on the way, and those the
    /// checkpoint had already passed (redeliveries, or replays), read again in runs.
    async fn catch_up_checking(
        &self,
        claimed: &[Position],
    ) -> Result<(Position, HashMap<Position, LoggedEvent>), StoreError> {
        let wanted: BTreeSet<Position> = claimed.iter().copied().collect();
        let (before, reached, mut stored) = self.catch_up_keeping(&wanted).await?;
        let passed: Vec<Position> = wanted.range(..=before).copied().collect();
        for run in runs(&passed, self.follower.batch()) {
            let (first, last) = (run[0], run[run.len() - 1]);
            let span = usize::try_from(last.0 - first.0 + 1).unwrap_or(usize::MAX);
            let read = self
                .follower
                .log()
                .read_after(Position(first.0.saturating_sub(1)), span)
                .await?;
            stored.extend(
                read.into_iter()
                    .filter(|e| wanted.contains(&e.position))
                    .map(|e| (e.position, e)),
            );
        }
        Ok((reached, stored))
    }
}

/// Why `message` is not the stored event at its position (`None`: it is).
fn mismatch(message: &LoggedEvent, stored: Option<&LoggedEvent>) -> Option<&'static str> {
    match stored {
        None => Some("not_in_log"),
        Some(stored) if stored != message => Some("differs_from_log"),
        Some(_) => None,
    }
}

/// Sorted positions split into runs that one read of at most `span` positions covers each.
fn runs(sorted: &[Position], span: usize) -> Vec<&[Position]> {
    let span = u64::try_from(span.max(1)).unwrap_or(u64::MAX);
    let mut runs = Vec::new();
    let mut start = 0;
    for i in 1..=sorted.len() {
        if i == sorted.len() || sorted[i].0 - sorted[start].0 >= span {
            runs.push(&sorted[start..i]);
            start = i;
        }
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_each_position_once_within_the_span() {
        let at = |ps: &[u64]| ps.iter().map(|p| Position(*p)).collect::<Vec<_>>();
        let positions = at(&[1, 2, 5, 9, 10, 11, u64::MAX]);
        let split = runs(&positions, 5);
        assert_eq!(
            split,
            vec![
                &at(&[1, 2, 5])[..],
                &at(&[9, 10, 11])[..],
                &at(&[u64::MAX])[..]
            ]
        );
        assert!(runs(&[], 5).is_empty());
    }
}
