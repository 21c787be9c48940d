//! Group commit: the orders a process has ready are appended in one PostgreSQL transaction.
//!
//! One order per transaction holds the `btc_ledger` row lock through every commit's WAL flush,
//! so the whole system commits one order per flush. Here each commit that cqrs-es asks of
//! [`crate::postgres::PgEventStore`] becomes a [`Row`] sent to a committer task, which takes every row
//! waiting (up to [`Batching::max_orders`]) and appends them with one call of
//! `buy_orders_append` (`migrations/write/1005_group_commit.sql`): one statement, one round trip,
//! one transaction, the ledger row locked and moved once. While a batch is in flight the next
//! one gathers, so batches grow with the load and a lone order waits for nothing.
//!
//! Every row gets its own answer ([`Appended`]): the function decides each order in arrival
//! order, under the lock, exactly as a lone commit would have been decided at that moment. Only
//! a failure of the whole statement fails a batch, and then every row of it gets the same
//! [`Failed`], telling whether the outcome is known (nothing stored) or not (the connection broke
//! after the call was sent). A batch that fails on a data or integrity error (a bug in one row,
//! never a client's input) is retried row by row, so that one bad row fails only itself.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgPool, Row as _};
use tokio::sync::{mpsc, oneshot, Semaphore};

#[cfg(feature = "cli")]
use crate::postgres::connection::config::limits;
#[cfg(feature = "cli")]
use clap::builder::{RangedU64ValueParser, TypedValueParser};
use order_domain::Satoshis;

/// How the committer groups orders: a part of [`crate::postgres::PgSettings`], from the
/// environment (or the matching `--flags`), under the same names in code and in settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
pub struct Batching {
    /// The most orders one write transaction carries (group commit: the orders a process has
    /// ready are committed together, the ledger row locked once per batch).
    #[cfg_attr(feature = "cli", arg(long = "db-commit-batch-max", global = true, env = "DB_COMMIT_BATCH_MAX",
          value_name = "DB_COMMIT_BATCH_MAX", default_value_t = Batching::DEFAULT.max_orders,
          value_parser = RangedU64ValueParser::<usize>::new().range(limits::COMMIT_BATCH_MAX)))]
    pub max_orders: usize,
    /// How long a batch waits for more orders once it has one, if fewer than `max_orders` are
    /// waiting, in microseconds (0: it takes what is ready; batches still form while the one
    /// before commits, so a lone order never waits).
    #[cfg_attr(feature = "cli", arg(long = "db-commit-linger-us", global = true, env = "DB_COMMIT_LINGER_US",
          value_name = "DB_COMMIT_LINGER_US", default_value = "0",
          value_parser = clap::value_parser!(u64).range(limits::COMMIT_LINGER_US).map(Duration::from_micros)))]
    pub linger: Duration,
    /// Write transactions in flight at once per process (each on a connection of its own; they
    /// queue on the ledger's lock, but the next one's network and parsing overlap the last
    /// one's flush).
    #[cfg_attr(feature = "cli", arg(long = "db-commits-in-flight", global = true, env = "DB_COMMITS_IN_FLIGHT",
          value_name = "DB_COMMITS_IN_FLIGHT", default_value_t = Batching::DEFAULT.in_flight,
          value_parser = RangedU64ValueParser::<usize>::new().range(limits::COMMITS_IN_FLIGHT)))]
    pub in_flight: usize,
}

impl Batching {
    /// The defaults (and those of `DB_COMMIT_BATCH_MAX`, `DB_COMMIT_LINGER_US`,
    /// `DB_COMMITS_IN_FLIGHT`; the test `the_flags_defaults_are_for_urls` holds the linger's
    /// flag to it): up to 256 orders, no lingering, one batch in flight (on a machine short of
    /// CPU, one in flight makes the largest batches and the most orders/s).
    pub const DEFAULT: Batching = Batching {
        max_orders: 256,
        linger: Duration::ZERO,
        in_flight: 1,
    };
}

impl Default for Batching {
    fn default() -> Self {
        Batching::DEFAULT
    }
}

/// One event to append, serialized as postgres-es would store it (`placed_at` unstamped).
#[derive(Debug, Clone)]
pub(crate) struct Row {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub sequence: i64,
    pub event_type: String,
    pub event_version: String,
    pub payload: String,
    pub metadata: String,
}

/// What became of one row.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Appended {
    /// Stored at `position`, placed at `placed_at` (stamped under the ledger's lock).
    Placed {
        position: u64,
        placed_at: DateTime<Utc>,
    },
    /// Its aggregate already had an event at that sequence: nothing stored.
    Conflict,
    /// It did not fit under the cap after every order before it: nothing stored.
    CapExceeded { remaining: Satoshis },
    /// The database found no positive satoshis in it: nothing stored (a bug, not an input).
    Invalid,
}

/// Why a row's batch failed as a whole.
#[derive(Debug, Clone)]
pub(crate) struct Failed {
    /// The outcome is unknown: the statement was sent and no answer came back.
    pub in_doubt: bool,
    /// Nothing was sent: no connection could be had (the database unreachable).
    pub unsent: bool,
    message: Arc<str>,
    /// The driver's error, kept as the source (its SQLSTATE included).
    error: Option<Arc<sqlx::Error>>,
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        // The driver's error itself (not the Arc, whose `source` would skip it).
        self.error.as_deref().map(|e| e as _)
    }
}

struct Pending {
    row: Row,
    reply: oneshot::Sender<Result<Appended, Failed>>,
}

/// The handle commits go through; the committer task ends when the last handle is dropped.
pub(crate) struct GroupCommit {
    sender: mpsc::Sender<Pending>,
}

impl GroupCommit {
    /// Starts the committer task on `pool` (call from within a Tokio runtime). A batch whose
    /// answer has not come within `answer_within` fails in doubt, and its connection is closed.
    pub(crate) fn start(pool: PgPool, batching: Batching, answer_within: Duration) -> Self {
        let max_orders = batching.max_orders.max(1);
        let (sender, receiver) = mpsc::channel(max_orders.saturating_mul(4));
        let batching = Batching {
            max_orders,
            ..batching
        };
        tokio::spawn(run_batches(receiver, batching, move |batch| {
            let pool = pool.clone();
            async move { commit(&pool, batch, answer_within).await }
        }));
        GroupCommit { sender }
    }

    /// Appends `row` with whatever else is ready, and answers what became of it.
    pub(crate) async fn append(&self, row: Row) -> Result<Appended, Failed> {
        let (reply, answer) = oneshot::channel();
        self.sender
            .send(Pending { row, reply })
            .await
            .map_err(|_| Failed::definite("the committer has stopped"))?;
        // The committer answers every row it took; a dropped answer means it died mid-batch.
        answer
            .await
            .unwrap_or_else(|_| Err(Failed::in_doubt("the committer stopped during the commit")))
    }
}

impl Failed {
    pub(crate) fn definite(message: impl Into<Arc<str>>) -> Self {
        Failed {
            in_doubt: false,
            unsent: false,
            message: message.into(),
            error: None,
        }
    }

    pub(crate) fn in_doubt(message: impl Into<Arc<str>>) -> Self {
        Failed {
            in_doubt: true,
            unsent: false,
            message: message.into(),
            error: None,
        }
    }

    pub(crate) fn from_sqlx(err: sqlx::Error) -> Self {
        let in_doubt = !is_definite(&err);
        Failed::caused_by("batch commit failed", err, in_doubt)
    }

    /// `err` after `what`, with its outcome in doubt or not.
    pub(crate) fn caused_by(what: &str, err: sqlx::Error, in_doubt: bool) -> Self {
        Failed {
            in_doubt,
            unsent: false,
            message: format!("{what}: {err}").into(),
            error: Some(Arc::new(err)),
        }
    }
}

/// The answer to a statement on `connection` that was waited for at most `answer_within`
/// (`tokio::time::timeout`): a database peer that goes silent (a frozen host or middlebox, which
/// the kernel still acknowledges, so neither keepalive nor `tcp_user_timeout` notices) must not
/// hold a caller for as long as it stays silent. Past the deadline the connection is dropped
/// outside the pool (never reused; the pool may open another) and the statement fails as a
/// broken connection does: its outcome unknown.
pub(crate) fn settle<T>(
    answer: Result<Result<T, sqlx::Error>, tokio::time::error::Elapsed>,
    connection: sqlx::pool::PoolConnection<sqlx::Postgres>,
    answer_within: Duration,
) -> Result<T, sqlx::Error> {
    match answer {
        Ok(answer) => answer,
        Err(_) => {
            drop(connection.detach());
            metrics::counter!("store_statements_unanswered_total").increment(1);
            Err(sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!(
                    "no answer from the database within {} ms",
                    answer_within.as_millis()
                ),
            )))
        }
    }
}

/// Whether a failed statement certainly did not commit: the pool gave no connection (nothing
/// was sent), or the server answered with an error (it rolled the transaction back). Anything
/// else (the connection broke, a protocol error) may have happened after the server committed.
pub(crate) fn is_definite(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Database(_)
    )
}

/// A failure caused by one row's data (SQLSTATE classes 22 and 23), which the same rows one by
/// one would isolate. Timeouts, lock waits and lost connections are not retried row by row.
fn caused_by_a_row(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().is_some_and(|code| code.starts_with("22") || code.starts_with("23")))
}

/// Takes what `receiver` has ready (at least one, at most `batching.max_orders`, waiting up to
/// `batching.linger` for more) and hands each batch to `handle` on a task of its own, at most
/// `batching.in_flight` at once, until every sender is gone. While the slots are busy, requests
/// queue and form the next batch: batches grow with the load.
pub(crate) async fn run_batches<T, F, Fut>(
    mut receiver: mpsc::Receiver<T>,
    batching: Batching,
    handle: F,
) where
    T: Send + 'static,
    F: Fn(Vec<T>) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(batching.in_flight.max(1)));
    let max = batching.max_orders.max(1);
    loop {
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let mut batch = Vec::with_capacity(max);
        if receiver.recv_many(&mut batch, max).await == 0 {
            return;
        }
        if !batching.linger.is_zero() {
            let deadline = tokio::time::Instant::now() + batching.linger;
            while batch.len() < max {
                let more = max - batch.len();
                match tokio::time::timeout_at(deadline, receiver.recv_many(&mut batch, more)).await
                {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
        }
        let work = handle(batch);
        tokio::spawn(async move {
            work.await;
            drop(slot);
        });
    }
}

/// Appends one batch and answers each of its rows.
async fn commit(pool: &PgPool, batch: Vec<Pending>, answer_within: Duration) {
    let (rows, replies): (Vec<Row>, Vec<_>) = batch.into_iter().map(|p| (p.row, p.reply)).unzip();
    match append(pool, &rows, answer_within).await {
        Ok(outcomes) => {
            for (reply, outcome) in replies.into_iter().zip(outcomes) {
                let _ = reply.send(Ok(outcome));
            }
        }
        Err(Unsent(err)) | Err(Sent(err)) if rows.len() > 1 && caused_by_a_row(&err) => {
            tracing::warn!(%err, orders = rows.len(), "batch refused by the database; committing its orders one by one");
            for (row, reply) in rows.into_iter().zip(replies) {
                let outcome = append(pool, std::slice::from_ref(&row), answer_within).await;
                let _ = reply.send(outcome.map(|mut one| one.remove(0)).map_err(Failed::from));
            }
        }
        Err(err) => {
            let failed = Failed::from(err);
            tracing::warn!(%failed, orders = rows.len(), in_doubt = failed.in_doubt, "batch commit failed");
            for reply in replies {
                let _ = reply.send(Err(failed.clone()));
            }
        }
    }
}

/// Why one call of `buy_orders_append` failed, and whether the statement went out.
enum AppendError {
    /// No connection: nothing was sent (a dead connection found while getting one included).
    Unsent(sqlx::Error),
    /// The statement was sent; [`is_definite`] tells from the error whether it committed.
    Sent(sqlx::Error),
}
use AppendError::{Sent, Unsent};

impl From<AppendError> for Failed {
    fn from(err: AppendError) -> Self {
        match err {
            Unsent(err) => Failed {
                unsent: true,
                ..Failed::caused_by("batch commit failed", err, false)
            },
            Sent(err) => Failed::from_sqlx(err),
        }
    }
}

/// One call of `buy_orders_append`: one round trip, one transaction. Answers one outcome per
/// row, in order.
async fn append(
    pool: &PgPool,
    rows: &[Row],
    answer_within: Duration,
) -> Result<Vec<Appended>, AppendError> {
    // Getting the connection first, on its own, tells a failure that sent nothing (no server,
    // or a pooled connection found dead) from one after the statement went out.
    let mut connection = pool.acquire().await.map_err(Unsent)?;
    let column = |f: fn(&Row) -> &str| rows.iter().map(f).collect::<Vec<&str>>();
    metrics::counter!("store_round_trips_total", "op" => "commit").increment(1);
    let sent = sqlx::query(
        "SELECT outcome, event_position, placed_at, remaining_sats \
         FROM buy_orders_append($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(column(|r| &r.aggregate_type))
    .bind(column(|r| &r.aggregate_id))
    .bind(rows.iter().map(|r| r.sequence).collect::<Vec<i64>>())
    .bind(column(|r| &r.event_type))
    .bind(column(|r| &r.event_version))
    .bind(column(|r| &r.payload))
    .bind(column(|r| &r.metadata))
    .fetch_all(&mut *connection);
    let answer = tokio::time::timeout(answer_within, sent).await;
    let answers = settle(answer, connection, answer_within).map_err(Sent)?;
    if answers.len() != rows.len() {
        return Err(Sent(sqlx::Error::Protocol(format!(
            "buy_orders_append answered {} rows for {}",
            answers.len(),
            rows.len()
        ))));
    }
    let outcomes = answers
        .iter()
        .map(outcome)
        .collect::<Result<Vec<_>, _>>()
        .map_err(Sent)?;
    let placed = outcomes
        .iter()
        .filter(|o| matches!(o, Appended::Placed { .. }))
        .count();
    metrics::counter!("store_commit_transactions_total").increment(1);
    metrics::counter!("store_commit_orders_total").increment(rows.len() as u64);
    metrics::counter!("store_committed_events_total").increment(placed as u64);
    Ok(outcomes)
}

fn outcome(row: &sqlx::postgres::PgRow) -> Result<Appended, sqlx::Error> {
    let outcome: String = row.try_get("outcome")?;
    let unexpected = |what: &str| sqlx::Error::Protocol(format!("buy_orders_append: {what}"));
    Ok(match outcome.as_str() {
        "placed" => Appended::Placed {
            position: row
                .try_get::<Option<i64>, _>("event_position")?
                .and_then(|p| u64::try_from(p).ok())
                .ok_or_else(|| unexpected("placed without a position"))?,
            placed_at: row
                .try_get::<Option<DateTime<Utc>>, _>("placed_at")?
                .ok_or_else(|| unexpected("placed without placed_at"))?,
        },
        "conflict" => Appended::Conflict,
        "cap_exceeded" => Appended::CapExceeded {
            remaining: row
                .try_get::<Option<i64>, _>("remaining_sats")?
                .and_then(|r| u64::try_from(r).ok())
                .map(Satoshis::new)
                .ok_or_else(|| unexpected("cap_exceeded without what remains"))?,
        },
        "invalid" => Appended::Invalid,
        other => return Err(unexpected(&format!("unknown outcome {other:?}"))),
    })
}
