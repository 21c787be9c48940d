//! The PostgreSQL write store: postgres-es underneath, the cap and positions from the trigger.

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use cqrs_es::persist::EventUpcaster;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore, SerializedEvent};
use cqrs_es::{AggregateError, EventEnvelope, EventStore};
use order_domain::{
    BtcCap, BtcLedger, BuyOrder, BuyOrderError, BuyOrderEvent, EventReader, OrderId, Satoshis,
};
use postgres_es::PostgresEventRepository;
use sqlx::postgres::PgPoolOptions;

use crate::postgres::Notice;
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use crate::error::StoreError;
use crate::log::{EventLog, LogRead, LoggedEvent, Position, UnreadableLogged};
use crate::postgres::write::group_commit::{
    is_definite, Appended, Batching, GroupCommit, Row as AppendRow,
};
use crate::postgres::write::group_load::GroupLoad;
use crate::postgres::{db_error, migrate_write, PgSettings};
use crate::writer::Ledger;

/// The CHECK constraint that is the cap.
const CAP_CONSTRAINT: &str = "btc_ledger_within_cap";

/// The log after a position. Only BuyOrder's events have positions (migration 1009 makes it a
/// constraint), so the query names nothing but the position: `events_position` is then the one
/// index PostgreSQL can read it by, with or without statistics of the table (naming the
/// aggregate type too had a fresh table read through a bitmap of the whole primary key). The
/// audit walks the log with it too.
pub(crate) const READ_LOG_AFTER: &str =
    "SELECT position, aggregate_id, sequence, event_type, event_version, \
     payload FROM events WHERE position > $1 ORDER BY position LIMIT $2";

/// `EventStore<BuyOrder>` on PostgreSQL, plus the [`EventLog`] of its events.
///
/// Loads go through postgres-es unchanged. A commit of one event (every order) is appended with
/// the others the process has ready, in one transaction (group commit, sized by [`Batching`]): the ledger
/// row is locked once per batch, each order is decided on its own (placed, a conflict, or over
/// the cap: `BuyOrderError::CapExceeded` with what remained, nothing stored), and its
/// `placed_at` is stamped where its position is assigned. Any other commit goes through
/// postgres-es, and the trigger on `events` does the ledger's work in its transaction. Cloning
/// shares the pool and the committer.
///
/// ```no_run
/// use std::sync::Arc;
///
/// use order_domain::*;
/// use order_store::postgres::{PgEventStore, PgSettings};
/// use order_store::{CqrsOrderWriter, OrderWriter, PlaceError};
///
/// # async fn run(order: PlaceBuyOrder) -> Result<(), Box<dyn std::error::Error>> {
/// let settings = PgSettings::from_env()?;
/// // The cap seeds a new store only; later changes are recorded, with a reason.
/// let store = PgEventStore::open(&settings, BtcCap::DEFAULT).await?;
/// let prices = FixedSource::uniform(BtcRate::parse("50000")?);
/// let writer = CqrsOrderWriter::new(store.clone(), BuyOrderServices::new(Arc::new(prices)));
/// match writer.place(order).await {
///     Ok(placed) => println!("{} BTC", placed.order.satoshis),
///     Err(PlaceError::Refused(BuyOrderError::CapExceeded { remaining, .. })) => {
///         println!("only {remaining} BTC left")
///     }
///     Err(PlaceError::Store(err)) if err.is_retryable() => println!("retry later: {err}"),
///     Err(other) => return Err(other.into()),
/// }
/// store.set_cap(BtcCap::new(Satoshis::from_btc(150)), "board decision 2026-12").await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PgEventStore {
    events: Arc<PersistedEventStore<PostgresEventRepository, BuyOrder>>,
    pool: PgPool,
    batching: Batching,
    /// Started on the first commit (it needs the runtime); ends with the last clone.
    committer: Arc<OnceLock<GroupCommit>>,
    /// Groups loads the same way; started on the first load.
    loader: Arc<OnceLock<GroupLoad>>,
    /// The newest position notified, once something waits for events (started on first use:
    /// a store that only writes keeps no LISTEN connection).
    head: Arc<tokio::sync::OnceCell<watch::Receiver<Position>>>,
    /// How stored events are read: upcast from older versions, refused when unreadable.
    reader: EventReader,
    /// How long a commit or a load waits for its answer ([`PgSettings::answer_deadline`]).
    answer_within: Duration,
}

impl std::fmt::Debug for PgEventStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // No URL (it may hold a password): the pool's size and the deadlines.
        f.debug_struct("PgEventStore")
            .field("connections", &self.pool.size())
            .field("batching", &self.batching)
            .field("answer_within", &self.answer_within)
            .finish_non_exhaustive()
    }
}

impl PgEventStore {
    /// Connects, applies the write migrations and starts listening for new events: what a
    /// process that places orders opens.
    ///
    /// `configured` only seeds the cap of a store that has never had one (the
    /// default, 100 BTC, when `None`). A store's cap changes only through [`PgEventStore::set_cap`]
    /// (the services' `cap set` command calls it), so one process started with a wrong value cannot move it for
    /// everyone: it logs a warning and uses the stored cap.
    pub async fn open(
        settings: &PgSettings,
        configured: impl Into<Option<BtcCap>>,
    ) -> Result<Self, StoreError> {
        let store = Self::connect(settings).await?;
        let configured = configured.into();
        let cap = seed_cap(&store.pool, configured.unwrap_or_default()).await?;
        if configured.is_some_and(|asked| asked != cap) {
            tracing::warn!(
                max_total_btc = %configured.unwrap_or_default(), stored_cap = %cap,
                "MAX_TOTAL_BTC disagrees with the stored cap; using the stored cap \
                 (change it with `buy-orders cap set`)"
            );
        }
        Ok(store)
    }

    /// Sets the cap, recording when, what it was before and `reason` (who changed it, and why:
    /// the history is the audit trail of the rule); refused below the BTC already sold. Takes
    /// the ledger's row lock, so it is serialised with every commit.
    pub async fn set_cap(&self, cap: BtcCap, reason: &str) -> Result<CapChange, CapError> {
        let mut tx = self.pool.begin().await.map_err(db_error)?;
        let (sold, previous) = lock_ledger(&mut tx).await?;
        if cap.limit() < sold {
            return Err(CapError::BelowSold { cap, sold });
        }
        let change = write_cap(&mut tx, Some(previous), cap, reason).await?;
        tx.commit().await.map_err(db_error)?;
        Ok(change)
    }

    /// Every change of the cap, oldest first.
    pub async fn cap_history(&self) -> Result<Vec<CapChange>, StoreError> {
        let rows = sqlx::query(
            "SELECT changed_at, previous_sats, cap_sats, reason FROM btc_cap_changes ORDER BY id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_error)?;
        rows.iter().map(cap_change).collect()
    }

    /// Connects, applies the write migrations and starts listening for new events, leaving the
    /// cap as it is: what a process that only reads the log (the projector) opens.
    pub async fn connect(settings: &PgSettings) -> Result<Self, StoreError> {
        let url = settings
            .write_url()
            .ok_or_else(|| StoreError::misconfigured("DATABASE_URL is not set"))?;
        migrate_write(settings).await?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(settings.sqlx_options(url)?)
            .await
            .map_err(db_error)?;
        let mut store = Self::with_pool(pool)
            .with_batching(settings.batching)
            .with_answer_deadline(settings.answer_deadline());
        store.reader = settings.event_reader.clone();
        Ok(store)
    }

    /// A store on an already migrated pool, committing with the default [`Batching`].
    pub fn with_pool(pool: PgPool) -> Self {
        let repo = PostgresEventRepository::new(pool.clone());
        let head = Arc::new(tokio::sync::OnceCell::new());
        PgEventStore {
            events: Arc::new(PersistedEventStore::new_event_store(repo)),
            pool,
            batching: Batching::default(),
            committer: Arc::new(OnceLock::new()),
            loader: Arc::new(OnceLock::new()),
            head,
            reader: EventReader::new(),
            // The default settings' deadline.
            answer_within: PgSettings::for_url("postgres://").answer_deadline(),
        }
    }

    /// The same store waiting at most `answer_within` for the answer to a commit or a load
    /// (before its first one): past it, a commit's outcome is in doubt (resolved by the
    /// writer's retry) and a load fails; the connection is closed either way.
    pub fn with_answer_deadline(mut self, answer_within: Duration) -> Self {
        self.answer_within = answer_within;
        self.committer = Arc::new(OnceLock::new());
        self.loader = Arc::new(OnceLock::new());
        self
    }

    /// The same store reading stored events through `upcaster` too (after order-domain's own
    /// and those of its settings): for events of a shape order-domain never wrote, say history
    /// imported from elsewhere. Loads and the log (and so the relay, the projector and
    /// rebuilds) use it. Prefer [`PgSettings::with_upcaster`]: registered once, every handle
    /// opened from the settings reads alike.
    pub fn with_upcaster(mut self, upcaster: impl EventUpcaster + 'static) -> Self {
        self.reader = self.reader.with_upcaster(upcaster);
        self
    }

    /// The same store grouping its commits as `batching` says (before its first commit).
    pub fn with_batching(mut self, batching: Batching) -> Self {
        self.batching = batching;
        self.committer = Arc::new(OnceLock::new());
        self.loader = Arc::new(OnceLock::new());
        self
    }

    /// How this store reads stored events (its upcasters included).
    #[cfg(feature = "relay")]
    pub(crate) fn reader(&self) -> &EventReader {
        &self.reader
    }

    /// Runs `statement` on a connection of the pool, waiting at most the answer deadline for
    /// its answer: a silent peer fails it as unavailable (and its connection is closed) instead
    /// of holding the caller (the relay, the projector's catch-up) for as long as it is silent.
    pub(crate) async fn answered<T>(
        &self,
        statement: impl for<'c> FnOnce(
            &'c mut sqlx::PgConnection,
        ) -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<T, sqlx::Error>> + Send + 'c>,
        >,
    ) -> Result<T, StoreError> {
        let mut connection = self.pool.acquire().await.map_err(db_error)?;
        let answer = tokio::time::timeout(self.answer_within, statement(&mut connection)).await;
        crate::postgres::write::group_commit::settle(answer, connection, self.answer_within)
            .map_err(db_error)
    }

    /// The pool, for tests that write what no writer of this build would (feature
    /// `test-support`; not part of the store's API).
    #[cfg(feature = "test-support")]
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The pool, within the crate (the relay's session is opened like its connections).
    #[cfg(feature = "relay")]
    pub(crate) fn sqlx_pool(&self) -> &PgPool {
        &self.pool
    }

    /// The query plan of [`EventLog::read_after_with_unreadable`] as PostgreSQL would run it
    /// now, for tests of the index it uses (feature `test-support`).
    #[cfg(feature = "test-support")]
    pub async fn explain_read_log_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<String, StoreError> {
        let (after, limit) = log_after_params(after, limit);
        let lines: Vec<String> = sqlx::query_scalar(&format!("EXPLAIN {READ_LOG_AFTER}"))
            .bind(after)
            .bind(limit)
            .fetch_all(&self.pool)
            .await
            .map_err(db_error)?;
        Ok(lines.join("\n"))
    }

    /// The ledger as committed (`btc_ledger`): BTC sold, the cap, what remains. A stored sale
    /// beyond the stored cap (only a hand edit can make one) is a corrupt store.
    pub async fn ledger(&self) -> Result<BtcLedger, StoreError> {
        let row = sqlx::query("SELECT sold_sats, cap_sats FROM btc_ledger")
            .fetch_one(&self.pool)
            .await
            .map_err(db_error)?;
        let sold = sats(row.get(0), "sold_sats")?;
        let mut ledger = BtcLedger::new(BtcCap::new(sats(row.get(1), "cap_sats")?));
        ledger.reserve(sold).map_err(|_| {
            StoreError::corrupt(format!("btc_ledger: {sold} BTC sold beyond the cap"))
        })?;
        Ok(ledger)
    }
}

/// A change of the cap, as recorded in `btc_cap_changes`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CapChange {
    /// When.
    pub changed_at: chrono::DateTime<chrono::Utc>,
    /// The cap before (`None` for the first, which seeded it).
    pub previous: Option<Satoshis>,
    /// The cap after.
    pub cap: Satoshis,
    /// Why: seeded at start-up, or set by an operator.
    pub reason: String,
}

/// Why the cap could not be set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CapError {
    /// Below what is already sold: the rule would already be broken.
    #[error("a cap of {cap} BTC is below the {sold} BTC already sold")]
    BelowSold {
        /// The cap asked for.
        cap: BtcCap,
        /// BTC sold so far.
        sold: Satoshis,
    },
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Satoshis from a `bigint` column, which the schema keeps non-negative.
fn sats(value: i64, column: &str) -> Result<Satoshis, StoreError> {
    u64::try_from(value)
        .map(Satoshis::new)
        .map_err(|_| StoreError::corrupt(format!("{column} is negative: {value}")))
}

/// Satoshis as a `bigint` parameter (caps are at most 21,000,000 BTC, far below i64::MAX).
fn sats_param(value: Satoshis) -> Result<i64, StoreError> {
    i64::try_from(value.count())
        .map_err(|_| StoreError::unavailable(format!("{value} BTC does not fit the ledger")))
}

/// [`READ_LOG_AFTER`]'s `bigint` parameters. Positions come from the `bigint` column, so one
/// past `i64::MAX` cannot exist: clamped there, it asks for nothing after it; a limit past it
/// is no limit.
pub(crate) fn log_after_params(after: Position, limit: usize) -> (i64, i64) {
    (
        i64::try_from(after.0).unwrap_or(i64::MAX),
        i64::try_from(limit).unwrap_or(i64::MAX),
    )
}

/// Locks the ledger row for the rest of the transaction: (sold, cap).
async fn lock_ledger(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
) -> Result<(Satoshis, Satoshis), StoreError> {
    let row = sqlx::query("SELECT sold_sats, cap_sats FROM btc_ledger FOR UPDATE")
        .fetch_one(&mut **tx)
        .await
        .map_err(db_error)?;
    Ok((
        sats(row.get(0), "sold_sats")?,
        sats(row.get(1), "cap_sats")?,
    ))
}

/// Sets the ledger's cap and records the change; returns it as recorded.
async fn write_cap(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    previous: Option<Satoshis>,
    cap: BtcCap,
    reason: &str,
) -> Result<CapChange, StoreError> {
    let cap_sats = sats_param(cap.limit())?;
    sqlx::query("UPDATE btc_ledger SET cap_sats = $1")
        .bind(cap_sats)
        .execute(&mut **tx)
        .await
        .map_err(db_error)?;
    let row = sqlx::query(
        "INSERT INTO btc_cap_changes (previous_sats, cap_sats, reason) VALUES ($1, $2, $3) \
         RETURNING changed_at, previous_sats, cap_sats, reason",
    )
    .bind(previous.map(sats_param).transpose()?)
    .bind(cap_sats)
    .bind(reason)
    .fetch_one(&mut **tx)
    .await
    .map_err(db_error)?;
    cap_change(&row)
}

fn cap_change(row: &sqlx::postgres::PgRow) -> Result<CapChange, StoreError> {
    let corrupt = |e: sqlx::Error| StoreError::corrupt(format!("btc_cap_changes: {e}"));
    Ok(CapChange {
        changed_at: row.try_get("changed_at").map_err(corrupt)?,
        previous: row
            .try_get::<Option<i64>, _>("previous_sats")
            .map_err(corrupt)?
            .map(|v| sats(v, "previous_sats"))
            .transpose()?,
        cap: sats(row.try_get("cap_sats").map_err(corrupt)?, "cap_sats")?,
        reason: row.try_get("reason").map_err(corrupt)?,
    })
}

/// Seeds the cap with `seed` if it has never been set (under the ledger's lock, so processes
/// starting together agree); returns the cap in force.
async fn seed_cap(pool: &PgPool, seed: BtcCap) -> Result<BtcCap, StoreError> {
    let mut tx = pool.begin().await.map_err(db_error)?;
    let (sold, stored) = lock_ledger(&mut tx).await?;
    let ever_set: bool = sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM btc_cap_changes)")
        .fetch_one(&mut *tx)
        .await
        .map_err(db_error)?;
    if ever_set {
        return Ok(BtcCap::new(stored));
    }
    if seed.limit() < sold {
        return Err(StoreError::unavailable(format!(
            "MAX_TOTAL_BTC={seed} is below the {sold} BTC already sold"
        )));
    }
    write_cap(&mut tx, None, seed, "seeded from MAX_TOTAL_BTC at start-up").await?;
    tx.commit().await.map_err(db_error)?;
    Ok(seed)
}

fn is_cap_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23514") && db.constraint() == Some(CAP_CONSTRAINT))
}

/// Keeps `head` at the newest position notified, reconnecting as needed, until every store
/// holding the receiver is gone. A missed notification only delays a reader to its poll.
async fn listen(pool: PgPool, head: watch::Sender<Position>, answer_within: Duration) {
    crate::postgres::listen(
        pool,
        // This schema's channel: another schema's positions are not this log's.
        crate::postgres::connection::schema::channel,
        answer_within,
        |notice| {
            if let Notice::Payload(payload) = notice {
                if let Ok(position) = payload.parse::<u64>() {
                    head.send_if_modified(|head| {
                        let newer = position > head.0;
                        if newer {
                            *head = Position(position);
                        }
                        newer
                    });
                }
            }
        },
        head.closed(),
    )
    .await
}

impl crate::NewAggregate for PgEventStore {
    fn new_aggregate(&self, aggregate_id: &str) -> EventStoreAggregateContext<BuyOrder> {
        EventStoreAggregateContext {
            aggregate_id: aggregate_id.to_owned(),
            aggregate: BuyOrder::default(),
            current_sequence: 0,
            current_snapshot: None,
        }
    }
}

impl EventStore<BuyOrder> for PgEventStore {
    type AC = EventStoreAggregateContext<BuyOrder>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        let loader = self.loader.get_or_init(|| {
            GroupLoad::start(
                self.pool.clone(),
                self.batching.max_orders,
                self.answer_within,
            )
        });
        let events = loader
            .events(aggregate_id)
            .await
            .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
        events
            .into_iter()
            .map(|event| {
                // Upcast to the current version, or refused (a newer major, no upcaster): never
                // read into a shape it is not.
                let event = self.reader.upcast(event).map_err(|e| {
                    metrics::counter!("store_unreadable_events_total", "reader" => "load")
                        .increment(1);
                    tracing::error!(aggregate_id, reason = %e, "a stored event cannot be read");
                    AggregateError::DeserializationError(Box::new(e))
                })?;
                EventEnvelope::try_from(event)
                    .map_err(|e| AggregateError::DeserializationError(Box::new(e)))
            })
            .collect()
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<BuyOrderError>> {
        let mut context = crate::NewAggregate::new_aggregate(self, aggregate_id);
        for envelope in self.load_events(aggregate_id).await? {
            context.current_sequence = envelope.sequence;
            cqrs_es::Aggregate::apply(&mut context.aggregate, envelope.payload);
        }
        Ok(context)
    }

    async fn commit(
        &self,
        events: Vec<BuyOrderEvent>,
        context: Self::AC,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        match <[BuyOrderEvent; 1]>::try_from(events) {
            Ok([event]) => self.append(event, context, metadata).await,
            // A replay emits nothing: nothing to send. Several events: postgres-es's own path.
            Err(events) if events.is_empty() => Ok(Vec::new()),
            Err(events) => {
                self.commit_through_postgres_es(events, context, metadata)
                    .await
            }
        }
    }
}

impl PgEventStore {
    /// Commits one event through the group committer.
    async fn append(
        &self,
        mut event: BuyOrderEvent,
        context: EventStoreAggregateContext<BuyOrder>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        let requested = event.satoshis();
        // Stamped by the database, where the position is assigned.
        event.set_placed_at(DateTime::<Utc>::UNIX_EPOCH);
        let mut envelope: EventEnvelope<BuyOrder> = EventEnvelope {
            aggregate_id: context.aggregate_id,
            sequence: context.current_sequence + 1,
            payload: event,
            metadata,
        };
        let serialized = SerializedEvent::try_from(&envelope)
            .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?;
        let row = AppendRow {
            aggregate_type: serialized.aggregate_type,
            aggregate_id: serialized.aggregate_id,
            sequence: i64::try_from(serialized.sequence)
                .map_err(|e| AggregateError::UnexpectedError(Box::new(e)))?,
            event_type: serialized.event_type,
            event_version: serialized.event_version,
            payload: serialized.payload.to_string(),
            metadata: serialized.metadata.to_string(),
        };
        let committer = self.committer.get_or_init(|| {
            GroupCommit::start(self.pool.clone(), self.batching, self.answer_within)
        });
        match committer.append(row).await {
            Ok(Appended::Placed {
                placed_at,
                position,
            }) => {
                envelope.payload.set_placed_at(placed_at);
                envelope.metadata.insert(
                    crate::writer::POSITION_METADATA.to_owned(),
                    position.to_string(),
                );
                Ok(vec![envelope])
            }
            Ok(Appended::Conflict) => Err(AggregateError::AggregateConflict),
            Ok(Appended::CapExceeded { remaining }) => {
                Err(AggregateError::UserError(BuyOrderError::CapExceeded {
                    requested,
                    remaining,
                }))
            }
            Ok(Appended::Invalid) => Err(AggregateError::UnexpectedError(
                format!(
                    "the store refused event {} of order {} as invalid",
                    envelope.sequence, envelope.aggregate_id
                )
                .into(),
            )),
            Err(failed) if failed.in_doubt => Err(in_doubt(Box::new(failed))),
            // No connection could be had, so nothing was sent: the writer answers at once
            // rather than waiting as long again for a load.
            Err(failed) if failed.unsent => {
                Err(AggregateError::DatabaseConnectionError(Box::new(failed)))
            }
            Err(failed) => Err(AggregateError::UnexpectedError(Box::new(failed))),
        }
    }

    /// Commits through postgres-es; the trigger does the ledger's work.
    async fn commit_through_postgres_es(
        &self,
        events: Vec<BuyOrderEvent>,
        context: EventStoreAggregateContext<BuyOrder>,
        metadata: HashMap<String, String>,
    ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        let requested = events.iter().fold(Satoshis::ZERO, |sum, e| {
            sum.checked_add(e.satoshis()).unwrap_or(sum)
        });
        match self.events.commit(events, context, metadata).await {
            Err(AggregateError::UnexpectedError(err))
                if err
                    .downcast_ref::<sqlx::Error>()
                    .is_some_and(is_cap_violation) =>
            {
                let remaining = self
                    .ledger()
                    .await
                    .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?
                    .remaining();
                Err(AggregateError::UserError(BuyOrderError::CapExceeded {
                    requested,
                    remaining,
                }))
            }
            Err(AggregateError::DatabaseConnectionError(err)) => Err(in_doubt(err)),
            Err(AggregateError::UnexpectedError(err))
                if !err.downcast_ref::<sqlx::Error>().is_some_and(is_definite) =>
            {
                Err(in_doubt(err))
            }
            other => other,
        }
    }
}

fn in_doubt(err: Box<dyn std::error::Error + Send + Sync>) -> AggregateError<BuyOrderError> {
    AggregateError::UnexpectedError(Box::new(crate::error::CommitInDoubt(err)))
}

#[async_trait]
impl Ledger for PgEventStore {
    async fn ping(&self) -> Result<(), StoreError> {
        // A round trip on a pooled session, bounded as every statement's answer is: a
        // database that went silent fails the probe (and its session is closed), whatever the
        // last commit said.
        self.answered(|connection| Box::pin(sqlx::query("SELECT 1").execute(connection)))
            .await
            .map(drop)
    }

    async fn remaining(&self) -> Result<Satoshis, StoreError> {
        Ok(self.ledger().await?.remaining())
    }

    async fn cap(&self) -> Result<Satoshis, StoreError> {
        Ok(self.ledger().await?.cap().limit())
    }
}

#[async_trait]
impl EventLog for PgEventStore {
    async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        Ok(self.read_after_with_unreadable(after, limit).await?.events)
    }

    async fn read_after_with_unreadable(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<LogRead, StoreError> {
        let (after, limit) = log_after_params(after, limit);
        let rows = self
            .answered(|c| {
                Box::pin(
                    sqlx::query(READ_LOG_AFTER)
                        .bind(after)
                        .bind(limit)
                        .fetch_all(c),
                )
            })
            .await?;
        let mut read = LogRead::default();
        for row in &rows {
            match logged_event(row, &self.reader)? {
                Ok(event) => read.events.push(event),
                Err(unreadable) => {
                    metrics::counter!("store_unreadable_events_total", "reader" => "log")
                        .increment(1);
                    tracing::error!(position = %unreadable.position,
                        aggregate_id = %unreadable.aggregate_id, reason = %unreadable.reason,
                        "an event of the log cannot be read; passed over");
                    read.unreadable.push(unreadable);
                }
            }
        }
        Ok(read)
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let last: i64 = self
            .answered(|c| {
                Box::pin(sqlx::query_scalar("SELECT last_position FROM btc_ledger").fetch_one(c))
            })
            .await?;
        Ok(Position(last as u64))
    }

    async fn wait_for_events_after(
        &self,
        after: Position,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        let mut head = self
            .head
            .get_or_init(|| async {
                let (sender, receiver) = watch::channel(Position::ZERO);
                tokio::spawn(listen(self.pool.clone(), sender, self.answer_within));
                receiver
            })
            .await
            .clone();
        head.mark_unchanged();
        if self.head().await? > after {
            return Ok(true);
        }
        let arrived = tokio::time::timeout(timeout, head.wait_for(|head| *head > after)).await;
        Ok(matches!(arrived, Ok(Ok(_))))
    }
}

/// A row of the log as an event, or as an event this reader cannot read (`Ok(Err(_))`); an
/// `Err` is a row whose columns themselves are broken.
fn logged_event(
    row: &sqlx::postgres::PgRow,
    reader: &EventReader,
) -> Result<Result<LoggedEvent, UnreadableLogged>, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::corrupt(format!("{what}: {e}"));
    let position: i64 = row
        .try_get("position")
        .map_err(|e| corrupt("position", &e))?;
    let position = Position(
        u64::try_from(position).map_err(|e| corrupt(&format!("position {position}"), &e))?,
    );
    let aggregate_id: String = row
        .try_get("aggregate_id")
        .map_err(|e| corrupt("aggregate_id", &e))?;
    let sequence: i64 = row
        .try_get("sequence")
        .map_err(|e| corrupt("sequence", &e))?;
    let sequence = u64::try_from(sequence).map_err(|e| corrupt("sequence", &e))?;
    let stored = SerializedEvent::new(
        aggregate_id.clone(),
        usize::try_from(sequence).map_err(|e| corrupt("sequence", &e))?,
        "BuyOrder".to_owned(),
        row.try_get("event_type")
            .map_err(|e| corrupt("event_type", &e))?,
        row.try_get("event_version")
            .map_err(|e| corrupt("event_version", &e))?,
        row.try_get("payload").map_err(|e| corrupt("payload", &e))?,
        serde_json::Value::Null,
    );
    let unreadable = |reason: String| UnreadableLogged {
        position,
        aggregate_id: aggregate_id.clone(),
        sequence,
        reason,
    };
    let event = match reader.read(stored) {
        Ok(event) => event,
        Err(why) => return Ok(Err(unreadable(why.to_string()))),
    };
    let Ok(order_id) = OrderId::parse(&aggregate_id) else {
        return Ok(Err(unreadable(format!(
            "aggregate id {aggregate_id:?} is not an order id"
        ))));
    };
    Ok(Ok(LoggedEvent {
        position,
        aggregate_id: order_id,
        sequence,
        event,
    }))
}
