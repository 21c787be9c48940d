//! Grouped loads: the aggregates a process needs at the same moment are read with one query.
//!
//! Every order starts by loading its aggregate (to find a replay of its key). One query per
//! order was one round trip and one statement each; here the loads waiting in the process go
//! together, as `aggregate_id = ANY($2)`, through the same batching loop as the commits
//! ([`crate::postgres::write::group_commit::run_batches`]). A load is a plain read: grouping it changes nothing it
//! sees (each answer holds every event of its aggregate committed when the query ran).

use std::collections::HashMap;

use cqrs_es::persist::SerializedEvent;
use cqrs_es::Aggregate;
use order_domain::BuyOrder;
use sqlx::{PgPool, Row as _};
use tokio::sync::{mpsc, oneshot};

use crate::postgres::write::group_commit::{run_batches, Batching, Failed};

/// Loads in flight at once per process: reads take no lock, so they may overlap freely.
const LOADS_IN_FLIGHT: usize = 4;

struct Pending {
    aggregate_id: String,
    reply: oneshot::Sender<Result<Vec<SerializedEvent>, Failed>>,
}

/// The handle loads go through; the loader task ends when the last handle is dropped.
pub(crate) struct GroupLoad {
    sender: mpsc::Sender<Pending>,
}

impl GroupLoad {
    /// Starts the loader task on `pool` (call from within a Tokio runtime), grouping at most
    /// `max` loads per query.
    /// A load unanswered within `answer_within` fails (a read: nothing is in doubt), its
    /// connection closed.
    pub(crate) fn start(pool: PgPool, max: usize, answer_within: std::time::Duration) -> Self {
        let batching = Batching {
            max_orders: max.max(1),
            linger: std::time::Duration::ZERO,
            in_flight: LOADS_IN_FLIGHT,
        };
        let (sender, receiver) = mpsc::channel(batching.max_orders.saturating_mul(4));
        tokio::spawn(run_batches(receiver, batching, move |batch| {
            let pool = pool.clone();
            async move { load(&pool, batch, answer_within).await }
        }));
        GroupLoad { sender }
    }

    /// Every stored event of `aggregate_id`, in sequence order.
    pub(crate) async fn events(&self, aggregate_id: &str) -> Result<Vec<SerializedEvent>, Failed> {
        let (reply, answer) = oneshot::channel();
        let pending = Pending {
            aggregate_id: aggregate_id.to_owned(),
            reply,
        };
        self.sender
            .send(pending)
            .await
            .map_err(|_| Failed::definite("the loader has stopped"))?;
        answer
            .await
            .unwrap_or_else(|_| Err(Failed::definite("the loader stopped during the load")))
    }
}

/// Reads the events of every aggregate in `batch` with one query, and answers each.
async fn load(pool: &PgPool, batch: Vec<Pending>, answer_within: std::time::Duration) {
    let mut ids: Vec<&str> = batch.iter().map(|p| p.aggregate_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    metrics::counter!("store_round_trips_total", "op" => "load").increment(1);
    // One index lookup per id, in a function (migration 1006 says why not `= ANY($2)`; 1012
    // adds the positions).
    let rows = match pool.acquire().await {
        Ok(mut connection) => {
            let sent = sqlx::query(
                "SELECT aggregate_id, sequence, event_type, event_version, payload, metadata, \
                 log_position FROM buy_orders_load_positioned($1, $2)",
            )
            .bind(BuyOrder::TYPE)
            .bind(&ids)
            .fetch_all(&mut *connection);
            let answer = tokio::time::timeout(answer_within, sent).await;
            crate::postgres::write::group_commit::settle(answer, connection, answer_within)
        }
        Err(err) => Err(err),
    };
    let mut by_aggregate: HashMap<String, Vec<SerializedEvent>> = HashMap::new();
    let failed = match rows {
        Ok(rows) => rows
            .iter()
            .try_for_each(|row| {
                let event = serialized(row)?;
                by_aggregate
                    .entry(event.aggregate_id.clone())
                    .or_default()
                    .push(event);
                Ok::<(), sqlx::Error>(())
            })
            .err(),
        Err(err) => Some(err),
    };
    // A load changes nothing: whatever broke, nothing is in doubt.
    let failed = failed.map(|err| Failed::caused_by("load failed", err, false));
    for pending in batch {
        let answer = match &failed {
            Some(failed) => Err(failed.clone()),
            None => Ok(by_aggregate
                .get(&pending.aggregate_id)
                .cloned()
                .unwrap_or_default()),
        };
        let _ = pending.reply.send(answer);
    }
}

fn serialized(row: &sqlx::postgres::PgRow) -> Result<SerializedEvent, sqlx::Error> {
    let sequence: i64 = row.try_get("sequence")?;
    let mut metadata: serde_json::Value = row.try_get("metadata")?;
    // Where the event stands in the log, for the answer to a replay (never stored in the
    // metadata: the column says it). Only BuyOrder's events have one.
    if let (Some(position), Some(fields)) = (
        row.try_get::<Option<i64>, _>("log_position")?,
        metadata.as_object_mut(),
    ) {
        fields.insert(
            crate::writer::POSITION_METADATA.to_owned(),
            position.to_string().into(),
        );
    }
    Ok(SerializedEvent::new(
        row.try_get("aggregate_id")?,
        usize::try_from(sequence).map_err(|e| sqlx::Error::Decode(Box::new(e)))?,
        BuyOrder::TYPE.to_owned(),
        row.try_get("event_type")?,
        row.try_get("event_version")?,
        row.try_get("payload")?,
        metadata,
    ))
}
