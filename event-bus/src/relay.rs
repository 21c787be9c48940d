//! The relay: the event log, published in order, exactly as stored.

use std::time::Duration;

use order_store::postgres::{PgEventStore, LEASE_HEARTBEAT};
use order_store::{EventLog, Position, StoreError};
use service_kit::CancellationToken;

use crate::error::BusError;
use crate::publisher::Publisher;

/// Events published per batch (and so the unconfirmed window). Each batch costs the relay three
/// exchanges in turn (head + read + lease check together, confirms, fenced checkpoint update;
/// there were six before, the checkpoint read each time and the rest one by one): at 100 it
/// fell behind the write path on two cores, its backlog growing run after run; at 1,000 it
/// keeps up (the A/B is in bench/RESULTS.md, the only home of figures). A batch is ~0.5 MB of
/// messages.
const BATCH: usize = 1000;
/// How long an idle relay waits for a notification before polling the log again.
const IDLE_WAIT: Duration = Duration::from_secs(1);
/// How often a standby relay asks for the lease.
const STANDBY_WAIT: Duration = Duration::from_secs(1);
/// The longest pause after repeated failures.
const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// The longest one batch may wait for the broker's confirms before it counts as failed.
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an active relay keeps failing to publish before it gives the lease up, so that a
/// standby whose path to the broker works can take over.
const GIVE_UP_AFTER: Duration = Duration::from_secs(30);

/// Tails the event store by position and publishes every event, advancing its checkpoint only
/// after the broker confirms. Run one per `api-write` process: a PostgreSQL advisory lock makes
/// exactly one of them active; the others stand by and take over when it dies.
pub struct Relay {
    store: PgEventStore,
    publisher: Publisher,
    give_up_after: Duration,
    /// The last event this relay had published and the broker confirmed, kept across failures
    /// and lease changes: what it checks the log against when the checkpoint goes back below it.
    published: std::sync::Mutex<Option<Published>>,
}

/// An event the broker confirmed: its position and what was there.
#[derive(Debug, Clone)]
struct Published {
    position: Position,
    aggregate_id: String,
    sequence: u64,
    epoch: u32,
}

enum Stop {
    Shutdown,
    LeaseLost,
    GaveUp,
}

/// What one step of an active relay did.
enum Step {
    Published,
    Idle,
    LeaseLost,
}

#[derive(Debug, thiserror::Error)]
enum RelayError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Bus(#[from] BusError),
}

/// Connections of the relay's own pool: its reads never wait behind the requests of the process
/// it runs in (sharing their pool at 64 connections multiplied the read-side lag, see
/// bench/RESULTS.md). One of them is held by the LISTEN that wakes it; two are left for reads.
/// (The lease and the checkpoint live on a session of its own, outside the pool.)
const POOL_SIZE: u32 = 3;

impl Relay {
    /// A relay from `store` through `publisher`.
    pub fn new(store: PgEventStore, publisher: Publisher) -> Self {
        Relay {
            store,
            publisher,
            give_up_after: GIVE_UP_AFTER,
            published: std::sync::Mutex::new(None),
        }
    }

    /// Sets how long the active relay keeps failing to publish before it gives the lease up.
    pub fn with_give_up_after(mut self, give_up_after: Duration) -> Self {
        self.give_up_after = give_up_after;
        self
    }

    /// A relay with a small connection pool of its own on the write store `settings` name.
    pub async fn open(
        settings: &order_store::postgres::PgSettings,
        publisher: Publisher,
    ) -> Result<Self, StoreError> {
        let mut settings = settings.clone();
        settings.pool_size = POOL_SIZE;
        Ok(Relay::new(
            PgEventStore::connect(&settings).await?,
            publisher,
        ))
    }

    /// Relays until `shutdown`: stands by until it holds the lease, then publishes. A standby
    /// keeps one session and asks for the lease on it every second.
    pub async fn run(self, shutdown: CancellationToken) {
        // 0 while standing by: the sum over every api-write is the number of active relays
        // (one, or none: an alert).
        metrics::gauge!("relay_active").set(0.0);
        let mut backoff = Duration::from_millis(100);
        let mut session = None;
        while !shutdown.is_cancelled() {
            let lease = match &mut session {
                Some(lease) => lease,
                None => match self.store.relay_session().await {
                    Ok(lease) => session.insert(lease),
                    Err(err) => {
                        tracing::warn!(%err, "relay cannot reach the store");
                        sleep_or_stop(backoff, &shutdown).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            match lease.try_acquire().await {
                Ok(true) => {
                    tracing::info!("relay active");
                    metrics::gauge!("relay_active").set(1.0);
                    let stop = self.publish_while_held(lease, &shutdown).await;
                    metrics::gauge!("relay_active").set(0.0);
                    // A standby reports nothing of its own: left at their last values, a
                    // relay that lost its lease to a silent peer would show the backlog it
                    // had then for good (the alerts take the max over every api-write).
                    metrics::gauge!("relay_backlog_events").set(0.0);
                    metrics::gauge!("relay_lag_seconds").set(0.0);
                    // Closing the session releases the lease (and drops a broken connection).
                    if let Some(lease) = session.take() {
                        lease.release().await;
                    }
                    match stop {
                        Stop::Shutdown => break,
                        Stop::LeaseLost => tracing::warn!("relay lease lost; standing by"),
                        Stop::GaveUp => {
                            tracing::error!(
                                "relay could not publish for {} s; lease given up for a standby",
                                self.give_up_after.as_secs()
                            );
                            // Let another relay take the lease before asking again.
                            sleep_or_stop(STANDBY_WAIT * 3, &shutdown).await;
                        }
                    }
                    backoff = Duration::from_millis(100);
                }
                Ok(false) => sleep_or_stop(STANDBY_WAIT, &shutdown).await,
                Err(err) => {
                    tracing::warn!(%err, "relay cannot reach the store");
                    session = None;
                    sleep_or_stop(backoff, &shutdown).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if let Some(lease) = session.take() {
            lease.release().await;
        }
        tracing::info!("relay stopped");
    }

    async fn publish_while_held(
        &self,
        lease: &mut order_store::postgres::RelayLease,
        shutdown: &CancellationToken,
    ) -> Stop {
        let mut backoff = Duration::from_millis(100);
        let mut failing_since: Option<tokio::time::Instant> = None;
        // The checkpoint as this relay last moved it. Only the lease's holder moves it, so while
        // the lease holds, what it wrote is what is there: read once, then kept here (one round
        // trip a batch fewer). Forgotten after any failure, and read again.
        let mut checkpoint: Option<Position> = None;
        loop {
            if shutdown.is_cancelled() {
                return Stop::Shutdown;
            }
            // Stopping never waits for a step (at most a batch is then published again later).
            let step = tokio::select! {
                step = self.step(lease, &mut checkpoint) => step,
                _ = shutdown.cancelled() => return Stop::Shutdown,
            };
            match step {
                Ok(Step::Published | Step::Idle) => {
                    backoff = Duration::from_millis(100);
                    failing_since = None;
                }
                Ok(Step::LeaseLost) => return Stop::LeaseLost,
                Err(err) => {
                    checkpoint = None;
                    let since = *failing_since.get_or_insert_with(tokio::time::Instant::now);
                    if since.elapsed() >= self.give_up_after {
                        return Stop::GaveUp;
                    }
                    // Proven before the pause, so the lease's session is never idle for long.
                    if !lease.is_held().await {
                        return Stop::LeaseLost;
                    }
                    tracing::warn!(%err, retry_in_ms = backoff.as_millis() as u64, "relay failed; retrying");
                    sleep_or_stop(backoff, shutdown).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }

    /// Publishes the next batch, fenced by the lease: the lease is proven while the batch is
    /// read (and again every [`LEASE_HEARTBEAT`] of any wait: the read, the broker's confirms)
    /// and once more by the statement that moves the checkpoint, on the lease's own session. A
    /// relay whose lease was taken over publishes at most the one batch it had started, and its
    /// checkpoint update changes nothing. The heartbeat also keeps the lease's session from
    /// sitting idle past [`order_store::postgres::LEASE_TTL`], after which PostgreSQL ends it
    /// (what frees the lease when this relay's peer goes silent).
    ///
    /// A batch waits on three exchanges in turn: the head (for the backlog gauge), the read and
    /// the lease check go together; then the broker's confirms; then the checkpoint. On two busy
    /// cores each exchange waits to be scheduled, and the relay's cycle is most of the PUT → GET
    /// lag.
    async fn step(
        &self,
        lease: &mut order_store::postgres::RelayLease,
        known: &mut Option<Position>,
    ) -> Result<Step, RelayError> {
        let checkpoint = match *known {
            Some(checkpoint) => checkpoint,
            None => match holding(lease, true, self.store.relay_checkpoint()).await {
                Some(checkpoint) => {
                    let checkpoint = checkpoint?;
                    self.check_history(checkpoint).await?;
                    *known.insert(checkpoint)
                }
                None => return Ok(Step::LeaseLost),
            },
        };
        let read = async {
            tokio::join!(
                self.store.head(),
                self.store.read_stored_after(checkpoint, BATCH)
            )
        };
        let Some((head, read)) = holding(lease, true, read).await else {
            return Ok(Step::LeaseLost);
        };
        let (head, read) = (head?, read?);
        // Set before publishing: a relay that keeps failing to publish shows a growing backlog,
        // not the value of its last success.
        metrics::gauge!("relay_backlog_events").set(head.0.saturating_sub(checkpoint.0) as f64);
        // Every event goes out as stored, whether this release can read it or not: a relay of
        // the previous release passes a newer event on unchanged during a rolling upgrade, and
        // a subscriber that cannot read it parks it (it is never lost, nor rewritten).
        let Some(last) = read.last().map(|e| e.position) else {
            let waited = self.store.wait_for_events_after(checkpoint, IDLE_WAIT);
            return match holding(lease, true, waited).await {
                Some(waited) => waited.map(|_| Step::Idle).map_err(Into::into),
                None => Ok(Step::LeaseLost),
            };
        };
        let placed_at = read.last().and_then(|e| self.store.placed_at(e));
        let count = read.len();
        let last_published = read
            .last()
            .map(|e| Published {
                position: e.position,
                aggregate_id: e.aggregate_id.clone(),
                sequence: e.sequence,
                epoch: e.epoch,
            })
            .expect("a batch with a last position has a last event");
        let confirmed = tokio::time::timeout(CONFIRM_TIMEOUT, self.publisher.publish(read));
        // The lease was proven with the read; while the broker confirms, every heartbeat. A
        // publish given up on (lease lost, or no confirms in time) is dropped, and the
        // publisher sends nothing more of it.
        match holding(lease, false, confirmed).await {
            None => return Ok(Step::LeaseLost),
            Some(Ok(published)) => published?,
            Some(Err(_)) => {
                return Err(BusError::Unavailable(format!(
                    "no confirms within {} s",
                    CONFIRM_TIMEOUT.as_secs()
                ))
                .into())
            }
        }
        if !lease.advance_checkpoint(last).await? {
            return Ok(Step::LeaseLost);
        }
        *known = Some(last);
        *self.published_mark() = Some(last_published);
        let backlog = head.0.saturating_sub(last.0);
        metrics::counter!("events_published_total").increment(count as u64);
        metrics::gauge!("relay_backlog_events").set(backlog as f64);
        if let Some(placed_at) = placed_at {
            metrics::gauge!("relay_lag_seconds").set(service_kit::seconds_since(placed_at));
        }
        tracing::debug!(count, position = %last, backlog, "events published");
        Ok(Step::Published)
    }
}

impl Relay {
    fn published_mark(&self) -> std::sync::MutexGuard<'_, Option<Published>> {
        // Only replaced whole, never left half-written: a poisoned lock still holds a value.
        self.published
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Checks what this relay published against what the log holds now, when the checkpoint
    /// it reads is below the last event it had published: either the checkpoint's update was
    /// lost (it is written without waiting for its flush) and the log still holds that event,
    /// which is then published again (a rewind subscribers deduplicate by epoch and position);
    /// or the log lost it, as after an asynchronous failover, and its positions now name other
    /// orders. That is said loudly: an error in the log, `relay_log_rewinds_total`, a row in
    /// `log_rewinds` that `buy-orders audit` reports, and `relay_rewound_positions`.
    async fn check_history(&self, checkpoint: Position) -> Result<(), RelayError> {
        let Some(published) = self.published_mark().clone() else {
            return Ok(());
        };
        if published.position <= checkpoint {
            return Ok(());
        }
        let now = self
            .store
            .read_stored_after(Position(published.position.0 - 1), 1)
            .await?;
        let still_there = now.first().is_some_and(|e| {
            e.position == published.position
                && e.aggregate_id == published.aggregate_id
                && e.sequence == published.sequence
        });
        if still_there {
            return Ok(());
        }
        let (epoch, epoch_began) = self.store.current_epoch().await?;
        let first_position = if epoch != published.epoch && epoch_began <= published.position {
            epoch_began
        } else {
            checkpoint.next()
        };
        let rewound = published.position.0 + 1 - first_position.0.min(published.position.0);
        let detail = format!(
            "the log no longer holds what was published at position {} ({}:{}, epoch {}); it \
             is in epoch {epoch}, begun at position {epoch_began}: positions {first_position}..={} \
             were published from a history the database lost, and name other orders now",
            published.position,
            published.aggregate_id,
            published.sequence,
            published.epoch,
            published.position
        );
        tracing::error!(%detail, "the event log was rewound under the relay");
        metrics::counter!("relay_log_rewinds_total").increment(1);
        metrics::gauge!("relay_rewound_positions").set(rewound as f64);
        self.store
            .record_rewind(&order_store::postgres::Rewind {
                epoch,
                first_position,
                published_up_to: published.position,
                detail,
            })
            .await?;
        // Reported once; publishing goes on from the checkpoint, in the new epoch.
        *self.published_mark() = None;
        Ok(())
    }
}

/// Awaits `work` while proving the lease: at once if `check_first` (and then `work`'s answer
/// is returned only once a check has come back held), and every [`LEASE_HEARTBEAT`] while
/// `work` waits. `None` as soon as a check finds the lease lost or unanswered (the work is
/// dropped). Every wait of the active relay goes through this, so its lease session is never
/// idle for longer than a heartbeat and a lease call.
async fn holding<T>(
    lease: &mut order_store::postgres::RelayLease,
    check_first: bool,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    tokio::pin!(work);
    let mut done: Option<T> = None;
    if !check_first {
        tokio::select! {
            answer = &mut work => return Some(answer),
            _ = tokio::time::sleep(LEASE_HEARTBEAT) => {}
        }
    }
    loop {
        {
            let check = lease.is_held();
            tokio::pin!(check);
            loop {
                tokio::select! {
                    held = &mut check => {
                        if !held {
                            return None;
                        }
                        break;
                    }
                    answer = &mut work, if done.is_none() => done = Some(answer),
                }
            }
        }
        if let Some(answer) = done {
            return Some(answer);
        }
        tokio::select! {
            answer = &mut work => return Some(answer),
            _ = tokio::time::sleep(LEASE_HEARTBEAT) => {}
        }
    }
}

async fn sleep_or_stop(pause: Duration, shutdown: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(pause) => {}
        _ = shutdown.cancelled() => {}
    }
}
