//! Keeping a read model current from the log: the loop the projector runs, for any
//! [`ReadModelWriter`] (the order table, a [`Projection`](crate::postgres::Projection) of yours,
//! an in-memory model) on any [`EventLog`].

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use crate::error::StoreError;
use crate::log::{EventLog, LogRead, Position};
use crate::read_model::ReadModelWriter;

/// How long [`Follower::run`] waits for the log to grow before it looks again anyway.
const IDLE_WAIT: Duration = Duration::from_secs(1);

/// Tails an [`EventLog`] into a [`ReadModelWriter`] from the writer's own checkpoint: every
/// committed event applied once, in position order, whatever stops and restarts in between.
///
/// Each step reads a batch after the checkpoint, applies the readable events, then parks the
/// unreadable ones. The order matters: parking moves the checkpoint past the batch, and a
/// writer skips what is at or below its checkpoint, so parking first would skip the batch's
/// readable events.
///
/// ```
/// use std::sync::Arc;
///
/// use order_domain::*;
/// use order_store::memory::{MemEventStore, MemReadModel};
/// use order_store::{CqrsOrderWriter, Follower, OrderWriter, PageRequest, ReadModel, Scope};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let store = MemEventStore::new(BtcCap::DEFAULT);
/// let prices = FixedSource::uniform(BtcRate::parse("50000")?);
/// let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(prices)));
/// writer
///     .place(PlaceBuyOrder {
///         client_id: ClientId::parse("shop-1")?,
///         idempotency_key: IdempotencyKey::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301")?,
///         currency: Currency::EUR,
///         amount: FiatAmount::parse("100.00")?,
///     })
///     .await?;
///
/// let model = Arc::new(MemReadModel::new());
/// let follower = Follower::new(Arc::new(store), model.clone(), 500);
/// follower.catch_up().await?; // or `follower.run(shutdown)` in a task of its own
/// let page = model.page(PageRequest::default(), &Scope::All).await?;
/// assert_eq!(page.rows.len(), 1);
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Follower {
    log: Arc<dyn EventLog>,
    model: Arc<dyn ReadModelWriter>,
    batch: usize,
    linger: Duration,
}

impl std::fmt::Debug for Follower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Follower")
            .field("batch", &self.batch)
            .field("linger", &self.linger)
            .finish_non_exhaustive()
    }
}

/// One step of a [`Follower`]: what it read after `from` and has applied (or parked).
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Step {
    /// The checkpoint the step started from.
    pub from: Position,
    /// The batch: the events applied, and the unreadable ones parked.
    pub read: LogRead,
    /// The checkpoint now.
    pub reached: Position,
}

impl Follower {
    /// The first pause of [`Follower::run`] after a failure; it doubles up to
    /// [`Follower::MAX_BACKOFF`].
    pub const FIRST_BACKOFF: Duration = Duration::from_millis(50);
    /// The longest pause of [`Follower::run`] after repeated failures.
    pub const MAX_BACKOFF: Duration = Duration::from_secs(5);

    /// A follower applying up to `batch` events at a time (at least 1).
    pub fn new(log: Arc<dyn EventLog>, model: Arc<dyn ReadModelWriter>, batch: usize) -> Self {
        Follower {
            log,
            model,
            batch: batch.max(1),
            linger: Duration::ZERO,
        }
    }

    /// The same follower waiting `linger`, once the log has grown, for more events to join the
    /// batch before it reads ([`Follower::run`]; none by default). Under load a batch then
    /// carries many events rather than one or two: each wake-up's own work (reading the
    /// checkpoint, two reads of the log, the metrics) is paid per batch, not per order. Every
    /// event waits at most `linger` more to be applied.
    pub fn with_linger(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// The log it reads.
    pub fn log(&self) -> &Arc<dyn EventLog> {
        &self.log
    }

    /// The most events it applies at a time.
    pub fn batch(&self) -> usize {
        self.batch
    }

    /// The read model it keeps.
    pub fn model(&self) -> &Arc<dyn ReadModelWriter> {
        &self.model
    }

    /// Applies the next batch after `checkpoint`, then parks its unreadable events; `None`
    /// when nothing follows `checkpoint` yet.
    pub async fn step(&self, checkpoint: Position) -> Result<Option<Step>, StoreError> {
        let read = self
            .log
            .read_after_with_unreadable(checkpoint, self.batch)
            .await?;
        let Some(reached) = read.reached() else {
            return Ok(None);
        };
        if !read.events.is_empty() {
            self.model.apply(&read.events).await?;
        }
        if !read.unreadable.is_empty() {
            self.model.park(&read.unreadable).await?;
            for event in &read.unreadable {
                tracing::error!(position = %event.position, aggregate_id = %event.aggregate_id,
                                reason = %event.reason, "unreadable event parked");
            }
        }
        Ok(Some(Step {
            from: checkpoint,
            read,
            reached,
        }))
    }

    /// Applies everything committed so far, from the model's checkpoint; returns the
    /// checkpoint reached.
    pub async fn catch_up(&self) -> Result<Position, StoreError> {
        let mut checkpoint = self.model.checkpoint().await?;
        while let Some(step) = self.step(checkpoint).await? {
            checkpoint = step.reached;
        }
        Ok(checkpoint)
    }

    /// Keeps the model current until `stop` completes: catches up, then waits for the log to
    /// grow (the store notifies; it looks again every second anyway). A failing backend is
    /// logged and retried with backoff (50 ms doubling to 5 s); it never gives up on its own.
    pub async fn run(&self, stop: impl Future<Output = ()>) {
        self.run_with(stop, || self.catch_up()).await
    }

    /// [`Follower::run`] catching up through `catch_up` (which should end in
    /// [`Follower::catch_up`] or its steps): for a caller that records each batch, as the
    /// projector does.
    pub async fn run_with<F, C>(&self, stop: impl Future<Output = ()>, catch_up: C)
    where
        C: Fn() -> F,
        F: Future<Output = Result<Position, StoreError>>,
    {
        tokio::pin!(stop);
        let mut backoff = Self::FIRST_BACKOFF;
        loop {
            let step = async {
                let checkpoint = catch_up().await?;
                let grew = self
                    .log
                    .wait_for_events_after(checkpoint, IDLE_WAIT)
                    .await?;
                if grew && !self.linger.is_zero() {
                    tokio::time::sleep(self.linger).await;
                }
                Ok::<_, StoreError>(grew)
            };
            // Stop first: a follower stopped already does no more work.
            let outcome = tokio::select! {
                biased;
                () = &mut stop => return,
                outcome = step => outcome,
            };
            match outcome {
                Ok(_) => backoff = Self::FIRST_BACKOFF,
                Err(err) => {
                    tracing::error!(%err, retry_in_ms = backoff.as_millis() as u64, "projection failed");
                    tokio::select! {
                        biased;
                        () = &mut stop => return,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Self::MAX_BACKOFF);
                }
            }
        }
    }
}
