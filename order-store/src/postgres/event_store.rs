//! The PostgreSQL write store: postgres-es underneath, the cap and positions from the trigger.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use cqrs_es::persist::{EventStoreAggregateContext, PersistedEventStore};
use cqrs_es::{AggregateError, EventEnvelope, EventStore};
use order_domain::{BtcCap, BuyOrder, BuyOrderError, BuyOrderEvent, OrderId, Satoshis};
use postgres_es::PostgresEventRepository;
use sqlx::postgres::{PgListener, PgPoolOptions};
use sqlx::{PgPool, Row};
use tokio::sync::watch;

use super::{migrate_write, unavailable, PgSettings};
use crate::error::StoreError;
use crate::log::{EventLog, LoggedEvent, Position};
use crate::writer::Ledger;

/// The channel the trigger notifies with each new event's position.
const CHANNEL: &str = "buy_order_events";
/// The CHECK constraint that is the cap.
const CAP_CONSTRAINT: &str = "btc_ledger_within_cap";

/// `EventStore<BuyOrder>` on PostgreSQL, plus the [`EventLog`] of its events.
///
/// Commits go through postgres-es unchanged; the trigger on `events` does the rest in the same
/// transaction. A commit the cap refuses fails inside PostgreSQL with a `CHECK` violation on
/// `btc_ledger_within_cap`, which this store turns into `BuyOrderError::CapExceeded` (with what
/// remains) — nothing of it is stored. Cloning shares the pool.
#[derive(Clone)]
pub struct PgEventStore {
    events: Arc<PersistedEventStore<PostgresEventRepository, BuyOrder>>,
    pool: PgPool,
    head: watch::Receiver<Position>,
}

impl PgEventStore {
    /// Connects, applies the write migrations, sets the ledger's cap and starts listening for
    /// new events: what a process that places orders opens. Fails if the database cannot be
    /// reached, or if `cap` is below the BTC already sold.
    pub async fn open(settings: &PgSettings, cap: BtcCap) -> Result<Self, StoreError> {
        let store = Self::connect(settings).await?;
        set_cap(&store.pool, cap).await?;
        Ok(store)
    }

    /// Connects, applies the write migrations and starts listening for new events, leaving the
    /// cap as it is: what a process that only reads the log (the projector) opens.
    pub async fn connect(settings: &PgSettings) -> Result<Self, StoreError> {
        let url = settings
            .database_url
            .as_deref()
            .ok_or_else(|| StoreError::Unavailable("DATABASE_URL is not set".into()))?;
        let pool = PgPoolOptions::new()
            .max_connections(settings.pool_size)
            .acquire_timeout(settings.acquire_timeout)
            .connect(url)
            .await
            .map_err(unavailable)?;
        migrate_write(&pool).await?;
        Ok(Self::with_pool(pool))
    }

    /// A store on an already migrated pool.
    pub fn with_pool(pool: PgPool) -> Self {
        let repo = PostgresEventRepository::new(pool.clone());
        let (head_tx, head) = watch::channel(Position::ZERO);
        tokio::spawn(listen(pool.clone(), head_tx));
        PgEventStore {
            events: Arc::new(PersistedEventStore::new_event_store(repo)),
            pool,
            head,
        }
    }

    /// The pool (for tools and tests).
    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// BTC sold and the cap, as committed.
    pub async fn ledger(&self) -> Result<(Satoshis, Satoshis), StoreError> {
        let row = sqlx::query("SELECT sold_sats, cap_sats FROM btc_ledger")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let sold: i64 = row.get(0);
        let cap: i64 = row.get(1);
        Ok((Satoshis::new(sold as u64), Satoshis::new(cap as u64)))
    }
}

/// Sets the cap (`MAX_TOTAL_BTC`). Every process does this at start-up, so they agree.
async fn set_cap(pool: &PgPool, cap: BtcCap) -> Result<(), StoreError> {
    let result = sqlx::query("UPDATE btc_ledger SET cap_sats = $1")
        .bind(cap.limit().count() as i64)
        .execute(pool)
        .await;
    match result {
        Ok(_) => Ok(()),
        Err(err) if is_cap_violation(&err) => Err(StoreError::Unavailable(format!(
            "MAX_TOTAL_BTC={cap} is below the BTC already sold"
        ))),
        Err(err) => Err(unavailable(err)),
    }
}

fn is_cap_violation(err: &sqlx::Error) -> bool {
    matches!(err, sqlx::Error::Database(db)
        if db.code().as_deref() == Some("23514") && db.constraint() == Some(CAP_CONSTRAINT))
}

/// Keeps `head` at the newest position notified, reconnecting as needed, until every store
/// holding the receiver is gone. A missed notification only delays a reader to its poll.
async fn listen(pool: PgPool, head: watch::Sender<Position>) {
    let mut backoff = Duration::from_millis(100);
    loop {
        let session = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen(CHANNEL).await?;
            loop {
                let note = listener.recv().await?;
                if let Ok(position) = note.payload().parse::<u64>() {
                    head.send_if_modified(|head| {
                        let newer = position > head.0;
                        if newer {
                            *head = Position(position);
                        }
                        newer
                    });
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = head.closed() => return,
            result = session => {
                if let Err(err) = result {
                    tracing::warn!(%err, "event notifications lost; reconnecting");
                }
            }
        }
        tokio::select! {
            _ = head.closed() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

impl EventStore<BuyOrder> for PgEventStore {
    type AC = EventStoreAggregateContext<BuyOrder>;

    async fn load_events(
        &self,
        aggregate_id: &str,
    ) -> Result<Vec<EventEnvelope<BuyOrder>>, AggregateError<BuyOrderError>> {
        self.events.load_events(aggregate_id).await
    }

    async fn load_aggregate(
        &self,
        aggregate_id: &str,
    ) -> Result<Self::AC, AggregateError<BuyOrderError>> {
        self.events.load_aggregate(aggregate_id).await
    }

    async fn commit(
        &self,
        events: Vec<BuyOrderEvent>,
        context: Self::AC,
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
                let (sold, cap) = self
                    .ledger()
                    .await
                    .map_err(|e| AggregateError::DatabaseConnectionError(Box::new(e)))?;
                Err(AggregateError::UserError(BuyOrderError::CapExceeded {
                    requested,
                    remaining: cap.saturating_sub(sold),
                }))
            }
            other => other,
        }
    }
}

#[async_trait]
impl Ledger for PgEventStore {
    async fn remaining(&self) -> Result<Satoshis, StoreError> {
        let (sold, cap) = self.ledger().await?;
        Ok(cap.saturating_sub(sold))
    }
}

#[async_trait]
impl EventLog for PgEventStore {
    async fn read_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<LoggedEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT position, aggregate_id, sequence, payload FROM events \
             WHERE position > $1 ORDER BY position LIMIT $2",
        )
        .bind(after.0 as i64)
        .bind(limit.min(i64::MAX as usize) as i64)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter().map(logged_event).collect()
    }

    async fn head(&self) -> Result<Position, StoreError> {
        let last: i64 = sqlx::query_scalar("SELECT last_position FROM btc_ledger")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(Position(last as u64))
    }

    async fn wait_for_events_after(
        &self,
        after: Position,
        timeout: Duration,
    ) -> Result<bool, StoreError> {
        let mut head = self.head.clone();
        head.mark_unchanged();
        if self.head().await? > after {
            return Ok(true);
        }
        let arrived = tokio::time::timeout(timeout, head.wait_for(|head| *head > after)).await;
        Ok(matches!(arrived, Ok(Ok(_))))
    }
}

fn logged_event(row: &sqlx::postgres::PgRow) -> Result<LoggedEvent, StoreError> {
    let corrupt =
        |what: &str, e: &dyn std::fmt::Display| StoreError::Corrupt(format!("{what}: {e}"));
    let position: i64 = row
        .try_get("position")
        .map_err(|e| corrupt("position", &e))?;
    let aggregate_id: String = row
        .try_get("aggregate_id")
        .map_err(|e| corrupt("aggregate_id", &e))?;
    let sequence: i64 = row
        .try_get("sequence")
        .map_err(|e| corrupt("sequence", &e))?;
    let payload: serde_json::Value = row.try_get("payload").map_err(|e| corrupt("payload", &e))?;
    Ok(LoggedEvent {
        position: Position(position as u64),
        aggregate_id: OrderId::parse(&aggregate_id).map_err(|e| corrupt("aggregate_id", &e))?,
        sequence: sequence as u64,
        event: serde_json::from_value(payload).map_err(|e| corrupt("payload", &e))?,
    })
}
