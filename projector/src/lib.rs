//! # projector
//!
//! Keeps the read table current: tails the event log by position from the read table's own
//! checkpoint and folds each batch into the table ([`Projector`]). Because the checkpoint is
//! the table's (advanced with the rows it covers) and applying is idempotent, a projector can
//! stop at any point and resume without losing or doubling an order; starting from an empty
//! table is a full replay.
//!
//! Two ways to be woken: tailing the event log directly ([`Projector::run`]; in the all-in-one
//! it is woken in-process as soon as an event commits), or by the RabbitMQ queue the relay
//! publishes to ([`Projector::consume`]). Either way what is applied is read from the event
//! store: a message is checked against it, never applied as data.

pub mod cli;
pub mod config;
mod consume;

use std::sync::Arc;
use std::time::Duration;

use order_store::{EventLog, Follower, LoggedEvent, Position, ReadModelWriter, StoreError};
use service_kit::CancellationToken;

/// The longest pause after repeated failures (the follower's, for the queue's loop too).
pub(crate) const MAX_BACKOFF: Duration = Follower::MAX_BACKOFF;
/// The first pause after a failure.
pub(crate) const FIRST_BACKOFF: Duration = Follower::FIRST_BACKOFF;
/// How often the lag gauges are refreshed from the store, and how often a projector fed by the
/// queue checks that the log is not moving without it.
pub(crate) const HEAD_CHECK: Duration = Duration::from_secs(2);

/// The projector process's routes, as metric labels.
pub const ROUTES: &[(&str, &str)] = &[];

/// The metrics the projector records.
pub const METRICS: &[service_kit::metrics_doc::MetricDoc] = {
    use service_kit::metrics_doc::MetricDoc;
    &[
        MetricDoc::counter("events_projected_total", "Events applied to the read table"),
        MetricDoc::counter(
            "projector_events_parked_total",
            "Unreadable events parked in parked_events instead of applied",
        ),
        MetricDoc::counter(
            "projector_lag_check_failures_total",
            "Lag measurements that failed (the lag gauges kept their last value)",
        ),
        MetricDoc::counter(
            "projector_silent_queue_catch_ups_total",
            "Catch-ups from the store while the queue was silent and the log ahead",
        ),
        MetricDoc::counter(
            "projector_late_queue_catch_ups_total",
            "Catch-ups from the store when the log moved and the queue said nothing within 50 ms",
        ),
        MetricDoc::counter_by(
            "messages_rejected_total",
            "Queue messages that were not the stored event (forged or stale), by why",
            &[&[("why", "not_in_log")], &[("why", "differs_from_log")]],
        ),
        MetricDoc::counter(
            "messages_unchecked_total",
            "Queue messages acknowledged unchecked while the store or table failed",
        ),
        MetricDoc::gauge(
            "projector_checkpoint_position",
            "The read table's checkpoint",
        ),
        MetricDoc::gauge(
            "projector_lag_positions",
            "Positions the read table is behind the log's head",
        ),
        MetricDoc::gauge(
            "projector_lag_seconds",
            "How long the oldest event not yet applied has waited",
        ),
    ]
};

/// Observability of the projector process: ready when the event store, the read table (and the
/// broker, if it consumes one) answer.
pub fn ops(
    log: Arc<dyn EventLog>,
    model: Arc<dyn order_store::ReadModel>,
    broker: Option<event_bus::connection::AmqpAddress>,
) -> service_kit::Ops {
    service_kit::metrics_doc::describe(METRICS);
    order_store::describe_metrics();
    event_bus::describe_metrics();
    service_kit::Ops::new("projector", ROUTES, move || {
        let (log, model, broker) = (log.clone(), model.clone(), broker.clone());
        async move {
            log.head()
                .await
                .map_err(|e| service_kit::NotReady::new("event store", e))?;
            model
                .ping()
                .await
                .map_err(|e| service_kit::NotReady::new("read table", e))?;
            match broker {
                Some(broker) => broker
                    .reachable()
                    .await
                    .map_err(|e| service_kit::NotReady::new("broker", e)),
                None => Ok(()),
            }
        }
    })
}

/// Folds the event log into a read table.
#[derive(Clone)]
pub struct Projector {
    /// The log, the table and the order of applying and parking: order-store's loop.
    follower: Follower,
    /// How messages from the queue are read (the log reads with the store's own reader).
    reader: order_domain::EventReader,
    /// Whether it sets the process's projector gauges (the main projection's; the others are
    /// seen with `projector list`).
    gauges: bool,
    /// Its metrics, registered once: a batch updates them without a registry lookup each.
    metrics: ProjectorMetrics,
}

/// The handles of the metrics a projector sets after each batch.
#[derive(Clone)]
struct ProjectorMetrics {
    projected: metrics::Counter,
    checkpoint: metrics::Gauge,
    lag_seconds: metrics::Gauge,
    lag_positions: metrics::Gauge,
}

impl ProjectorMetrics {
    fn new() -> Self {
        service_kit::metrics_handle(); // the process's recorder first, or the handles go nowhere
        ProjectorMetrics {
            projected: metrics::counter!("events_projected_total"),
            checkpoint: metrics::gauge!("projector_checkpoint_position"),
            lag_seconds: metrics::gauge!("projector_lag_seconds"),
            lag_positions: metrics::gauge!("projector_lag_positions"),
        }
    }
}

impl Projector {
    /// A projector reading `batch` events at a time (at least 1).
    pub fn new(log: Arc<dyn EventLog>, model: Arc<dyn ReadModelWriter>, batch: usize) -> Self {
        Projector {
            follower: Follower::new(log, model, batch),
            reader: order_domain::EventReader::new(),
            gauges: true,
            metrics: ProjectorMetrics::new(),
        }
    }

    /// The same projector waiting `linger` for more events to join a batch once the log has
    /// grown ([`order_store::Follower::with_linger`]): for [`Projector::run`], which follows the
    /// log (not the queue).
    pub fn with_linger(mut self, linger: std::time::Duration) -> Self {
        self.follower = self.follower.with_linger(linger);
        self
    }

    /// The same projector leaving the process's projector gauges alone: for a second
    /// projection in the same process, whose lag `projector list` shows.
    pub fn without_gauges(mut self) -> Self {
        self.gauges = false;
        self
    }

    /// The same projector reading queue messages through `reader`: give it the upcasters the
    /// store was given (`PgEventStore::with_upcaster`), so both paths read the same events.
    pub fn with_event_reader(mut self, reader: order_domain::EventReader) -> Self {
        self.reader = reader;
        self
    }

    /// Applies everything committed so far; returns the checkpoint reached. An event no
    /// reader can read is parked (with why, in the read table's `parked_events`) and the
    /// checkpoint moves past it: it is reported, never misread, and never stalls the rest.
    pub async fn catch_up(&self) -> Result<Position, StoreError> {
        let (_, reached, _) = self.catch_up_keeping(&Default::default()).await?;
        Ok(reached)
    }

    /// [`Projector::catch_up`], which also returns the checkpoint it started from and the
    /// events it read at the `wanted` positions.
    pub(crate) async fn catch_up_keeping(
        &self,
        wanted: &std::collections::BTreeSet<Position>,
    ) -> Result<
        (
            Position,
            Position,
            std::collections::HashMap<Position, LoggedEvent>,
        ),
        StoreError,
    > {
        let start = self.follower.model().checkpoint().await?;
        let mut checkpoint = start;
        let mut kept = std::collections::HashMap::new();
        while let Some(step) = self.follower.step(checkpoint).await? {
            kept.extend(
                step.read
                    .events
                    .iter()
                    .filter(|e| wanted.contains(&e.position))
                    .map(|e| (e.position, e.clone())),
            );
            self.record(&step.read.events).await;
            if !step.read.unreadable.is_empty() {
                metrics::counter!("projector_events_parked_total")
                    .increment(step.read.unreadable.len() as u64);
            }
            checkpoint = step.reached;
        }
        Ok((start, checkpoint, kept))
    }

    /// Logs and measures a batch just applied: count, lag in positions behind the log's head,
    /// and in seconds since the last event was placed.
    pub(crate) async fn record(&self, applied: &[LoggedEvent]) {
        let Some(last) = applied.last() else { return };
        if !self.gauges {
            tracing::debug!(events = applied.len(), position = %last.position, "events projected");
            return;
        }
        self.metrics.projected.increment(applied.len() as u64);
        self.metrics.checkpoint.set(last.position.0 as f64);
        self.metrics
            .lag_seconds
            .set(service_kit::seconds_since(last.event.placed_at()));
        // The log's head unknown (store down): the positions gauge keeps its last value rather
        // than claiming the projector is caught up; the timer (`watch_lag`) refreshes it. A
        // line per batch at DEBUG: at INFO it was a line every few orders under load.
        match self.follower.log().head().await {
            Ok(head) => {
                let behind = head.0.saturating_sub(last.position.0);
                self.metrics.lag_positions.set(behind as f64);
                tracing::debug!(events = applied.len(), position = %last.position, lag_positions = behind, "events projected");
            }
            Err(err) => {
                tracing::debug!(events = applied.len(), position = %last.position, %err, "events projected; log head unknown");
            }
        }
    }

    /// How far behind the log the read table is, from the store: (positions, seconds the oldest
    /// event not yet applied has waited). `(0, 0.0)` when caught up.
    pub async fn lag(&self) -> Result<(u64, f64), StoreError> {
        let checkpoint = self.follower.model().checkpoint().await?;
        let head = self.follower.log().head().await?;
        let behind = head.0.saturating_sub(checkpoint.0);
        if behind == 0 {
            return Ok((0, 0.0));
        }
        let oldest = self.follower.log().read_after(checkpoint, 1).await?;
        let waited = oldest.first().map_or(0.0, |logged| {
            service_kit::seconds_since(logged.event.placed_at())
        });
        Ok((behind, waited))
    }

    /// Refreshes the lag gauges from the store every few seconds until `shutdown`, whatever the
    /// applying loop does: a pipeline that stopped (a silent queue, a stuck table) shows as
    /// growing lag, not as the healthy values of its last batch. When the store cannot be read
    /// the gauges keep their values and the failure is counted.
    pub async fn watch_lag(self, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = tokio::time::sleep(HEAD_CHECK) => {}
                _ = shutdown.cancelled() => return,
            }
            match self.lag().await {
                Ok((positions, seconds)) => {
                    self.metrics.lag_positions.set(positions as f64);
                    self.metrics.lag_seconds.set(seconds);
                }
                Err(err) => {
                    metrics::counter!("projector_lag_check_failures_total").increment(1);
                    tracing::warn!(%err, "cannot measure the projector's lag");
                }
            }
        }
    }

    /// Projects until `shutdown` is cancelled: catches up, then sleeps until the log grows.
    /// A failing backend is retried with backoff; the projector never gives up on its own.
    pub async fn run(&self, shutdown: CancellationToken) {
        if self.gauges {
            tokio::spawn(self.clone().watch_lag(shutdown.clone()));
        }
        self.follower
            .run_with(shutdown.cancelled(), || self.catch_up())
            .await;
        tracing::info!("projector stopped");
    }
}
