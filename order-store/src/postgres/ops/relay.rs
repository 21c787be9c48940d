//! What the RabbitMQ relay needs from the write store: its checkpoint, and a lease that makes
//! it the only active relay.

use std::time::Duration;

use sqlx::{Connection, PgConnection, Row};

use crate::error::StoreError;
use crate::log::Position;
use crate::postgres::{db_error, PgEventStore};

/// The advisory lock key of the relay lease (any constant both sides agree on: "BOrelay"), in
/// `public`; other schemas mix their name in ([`crate::postgres::connection::schema::lock_key`]).
const RELAY_LOCK: i64 = 0x0042_4f72_656c_6179;
/// The longest a lease check or a fenced checkpoint update may take: past it, the lease is
/// taken as lost (a connection that stopped answering must not keep a relay active).
pub const LEASE_CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long the lease's session may be silent before PostgreSQL ends it, releasing the lease
/// (its `idle_session_timeout`): a holder whose peer froze (a paused VM, a stalled middlebox,
/// which the kernel still acknowledges, so no keepalive notices) loses the lease after this,
/// and a standby takes it within [`LEASE_TTL`] plus its one-second poll. The active relay
/// touches the session at least every [`LEASE_HEARTBEAT`] (+ [`LEASE_CALL_TIMEOUT`]).
pub const LEASE_TTL: Duration = Duration::from_secs(10);
/// How often the active relay proves its lease while it waits on anything else (a read, the
/// broker's confirms, a pause after a failure).
pub const LEASE_HEARTBEAT: Duration = Duration::from_secs(2);
/// True when the session running it holds the relay lease: the proof every fenced statement
/// carries (a bigint advisory key is split over classid and objid, objsubid 1).
const HOLDS_LEASE: &str = "EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' \
     AND granted AND pid = pg_backend_pid() AND objsubid = 1 \
     AND ((classid::bigint << 32) | objid::bigint) = $1)";

/// A relay's own session: a standby asks for the lease on it every second (one connection for
/// as long as it stands by, not one per attempt), and the active relay holds the lease on it, a
/// session-level advisory lock. If the process dies, or its connection does, PostgreSQL
/// releases the lock and a standby takes over.
pub struct RelayLease {
    connection: PgConnection,
    /// This schema's lease key.
    key: i64,
}

impl RelayLease {
    /// Tries to take the lease on this session: `true` if no other session holds it.
    pub async fn try_acquire(&mut self) -> Result<bool, StoreError> {
        let attempt = sqlx::query_scalar::<_, bool>("SELECT pg_try_advisory_lock($1)")
            .bind(self.key)
            .fetch_one(&mut self.connection);
        match tokio::time::timeout(LEASE_CALL_TIMEOUT, attempt).await {
            Ok(got) => got.map_err(db_error),
            Err(_) => Err(StoreError::Unavailable(
                "the relay's session did not answer".into(),
            )),
        }
    }

    /// Whether the lease still holds: this session answers, within a bound, and holds the lock.
    /// A relay checks this before every batch it publishes and stops when it fails.
    pub async fn is_held(&mut self) -> bool {
        let sql = format!("SELECT {HOLDS_LEASE}");
        let check = sqlx::query_scalar::<_, bool>(&sql)
            .bind(self.key)
            .fetch_one(&mut self.connection);
        matches!(
            tokio::time::timeout(LEASE_CALL_TIMEOUT, check).await,
            Ok(Ok(true))
        )
    }

    /// Records that everything up to `position` is published, fenced: the statement runs on the
    /// lease's own session and changes the row only if that session holds the lock (behind a
    /// pooler that swaps sessions, or once the lock is gone, it changes nothing). `Ok(false)`:
    /// the lease is lost, stop publishing. Never moves the checkpoint backwards.
    pub async fn advance_checkpoint(&mut self, position: Position) -> Result<bool, StoreError> {
        let position = crate::postgres::position_i64(position)?;
        let sql = format!(
            "UPDATE relay_checkpoint SET position = GREATEST(position, $2) \
             WHERE name = 'rabbitmq' AND {HOLDS_LEASE}"
        );
        let update = sqlx::query(&sql)
            .bind(self.key)
            .bind(position)
            .execute(&mut self.connection);
        match tokio::time::timeout(LEASE_CALL_TIMEOUT, update).await {
            Ok(Ok(done)) => Ok(done.rows_affected() == 1),
            Ok(Err(err)) => Err(db_error(err)),
            Err(_) => Ok(false), // no answer in time: as good as lost
        }
    }

    /// Gives the lease up (closing the session; bounded, as the peer may be unreachable).
    pub async fn release(self) {
        let _ = tokio::time::timeout(LEASE_CALL_TIMEOUT, self.connection.close()).await;
    }
}

/// An event of the log exactly as stored: what the relay publishes. It is never parsed into the
/// relay's own version of the event, so a relay of an older release passes a newer event on
/// unchanged (extra fields, a newer major and all): reading it, upcasting included, is the
/// subscriber's job.
#[derive(Debug, Clone)]
pub struct StoredEvent {
    /// Its position in the log.
    pub position: Position,
    /// Its aggregate, as stored.
    pub aggregate_id: String,
    /// Its sequence in that aggregate.
    pub sequence: u64,
    /// Its type, as stored (`BuyOrderPlaced`).
    pub event_type: String,
    /// The version it was written in, as stored.
    pub event_version: String,
    /// The payload's JSON text, byte for byte (the column is `json`, which keeps the text).
    pub payload: Box<serde_json::value::RawValue>,
    /// The log's epoch at its position (migration 1010): the database timeline it was written
    /// on. (epoch, position) names one event across failovers; a position alone may not.
    pub epoch: u32,
}

/// What a relay found when it checked what it had published against the log: the log no
/// longer holds positions it had published (an asynchronous failover lost them, and hands the
/// positions out again to other orders).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rewind {
    /// The epoch the log is in now.
    pub epoch: u32,
    /// The first position that may have been published from the lost history.
    pub first_position: Position,
    /// The last position this relay had published and the broker confirmed.
    pub published_up_to: Position,
    /// What was found, for the record and the log.
    pub detail: String,
}

/// The log after a position, as stored (see [`crate::postgres::write::event_store::READ_LOG_AFTER`]).
const READ_STORED_AFTER: &str =
    "SELECT e.position, e.aggregate_id, e.sequence, e.event_type, e.event_version, \
     e.payload::text AS payload, \
     (SELECT x.epoch FROM log_epochs x WHERE x.first_position <= e.position \
       ORDER BY x.first_position DESC, x.epoch DESC LIMIT 1) AS epoch \
     FROM events e WHERE e.position > $1 ORDER BY e.position LIMIT $2";

impl PgEventStore {
    /// Up to `limit` events after `after`, exactly as stored, readable by this release or not.
    pub async fn read_stored_after(
        &self,
        after: Position,
        limit: usize,
    ) -> Result<Vec<StoredEvent>, StoreError> {
        let (after, limit) = crate::postgres::write::event_store::log_after_params(after, limit);
        let rows = self
            .answered(|c| {
                Box::pin(
                    sqlx::query(READ_STORED_AFTER)
                        .bind(after)
                        .bind(limit)
                        .fetch_all(c),
                )
            })
            .await?;
        rows.iter().map(stored_event).collect()
    }

    /// The first position of the log's current epoch (the newest in `log_epochs`), and the
    /// epoch: where the log's history may have been cut by a failover.
    pub async fn current_epoch(&self) -> Result<(u32, Position), StoreError> {
        let (epoch, first): (i32, i64) = self
            .answered(|c| {
                Box::pin(
                    sqlx::query_as(
                        "SELECT epoch, first_position FROM log_epochs \
                         ORDER BY first_position DESC, epoch DESC LIMIT 1",
                    )
                    .fetch_one(c),
                )
            })
            .await?;
        Ok((
            u32::try_from(epoch).map_err(|e| StoreError::corrupt(format!("epoch: {e}")))?,
            Position(
                u64::try_from(first)
                    .map_err(|e| StoreError::corrupt(format!("first_position: {e}")))?,
            ),
        ))
    }

    /// Records a [`Rewind`] in `log_rewinds`, where `buy-orders audit` reports it.
    pub async fn record_rewind(&self, rewind: &Rewind) -> Result<(), StoreError> {
        let first = crate::postgres::position_i64(rewind.first_position)?;
        let up_to = crate::postgres::position_i64(rewind.published_up_to)?;
        let epoch = i32::try_from(rewind.epoch).map_err(|e| StoreError::corrupt(e.to_string()))?;
        let detail = rewind.detail.clone();
        self.answered(move |c| {
            Box::pin(async move {
                sqlx::query(
                    "INSERT INTO log_rewinds (epoch, first_position, published_up_to, detail) \
                     VALUES ($1, $2, $3, $4)",
                )
                .bind(epoch)
                .bind(first)
                .bind(up_to)
                .bind(&detail)
                .execute(c)
                .await
                .map(drop)
            })
        })
        .await
    }

    /// When the stored event was placed, if this release can read it (for the relay's lag
    /// gauge only; never for what it publishes).
    pub fn placed_at(&self, stored: &StoredEvent) -> Option<chrono::DateTime<chrono::Utc>> {
        let payload = serde_json::from_str(stored.payload.get()).ok()?;
        let serialized = cqrs_es::persist::SerializedEvent::new(
            stored.aggregate_id.clone(),
            usize::try_from(stored.sequence).ok()?,
            "BuyOrder".to_owned(),
            stored.event_type.clone(),
            stored.event_version.clone(),
            payload,
            serde_json::Value::Null,
        );
        self.reader().read(serialized).ok().map(|e| e.placed_at())
    }

    /// Opens a relay's own session (with the pool's settings: timeouts and keepalives), on
    /// which it then asks for the lease ([`RelayLease::try_acquire`]).
    pub async fn relay_session(&self) -> Result<RelayLease, StoreError> {
        // The checkpoint's updates need not wait for their WAL flush: one lost in a crash only
        // moves the checkpoint back, and the relay publishes again from there (consumers are
        // idempotent by position, as after any failover).
        let options = self
            .sqlx_pool()
            .connect_options()
            .as_ref()
            .clone()
            .options([
                ("synchronous_commit", "off".to_owned()),
                ("idle_session_timeout", LEASE_TTL.as_millis().to_string()),
            ]);
        let open = async {
            let mut connection = PgConnection::connect_with(&options)
                .await
                .map_err(db_error)?;
            let schema: String = sqlx::query_scalar("SELECT current_schema()")
                .fetch_one(&mut connection)
                .await
                .map_err(db_error)?;
            Ok::<_, StoreError>(RelayLease {
                connection,
                key: crate::postgres::connection::schema::lock_key(RELAY_LOCK, &schema),
            })
        };
        tokio::time::timeout(LEASE_CALL_TIMEOUT, open)
            .await
            .map_err(|_| StoreError::Unavailable("no relay session in time".into()))?
    }

    /// The position up to which every event has been published and confirmed.
    pub async fn relay_checkpoint(&self) -> Result<Position, StoreError> {
        let position: i64 = self
            .answered(|c| {
                Box::pin(
                    sqlx::query_scalar(
                        "SELECT position FROM relay_checkpoint WHERE name = 'rabbitmq'",
                    )
                    .fetch_one(c),
                )
            })
            .await?;
        Ok(Position(position as u64))
    }
}

fn stored_event(row: &sqlx::postgres::PgRow) -> Result<StoredEvent, StoreError> {
    let corrupt = |what: &str, e: &dyn std::fmt::Display| {
        StoreError::corrupt(format!("stored event, {what}: {e}"))
    };
    let position: i64 = row
        .try_get("position")
        .map_err(|e| corrupt("position", &e))?;
    let sequence: i64 = row
        .try_get("sequence")
        .map_err(|e| corrupt("sequence", &e))?;
    let payload: String = row.try_get("payload").map_err(|e| corrupt("payload", &e))?;
    let epoch: Option<i32> = row.try_get("epoch").map_err(|e| corrupt("epoch", &e))?;
    let epoch = u32::try_from(epoch.unwrap_or(1)).map_err(|e| corrupt("epoch", &e))?;
    Ok(StoredEvent {
        position: Position(u64::try_from(position).map_err(|e| corrupt("position", &e))?),
        aggregate_id: row
            .try_get("aggregate_id")
            .map_err(|e| corrupt("aggregate_id", &e))?,
        sequence: u64::try_from(sequence).map_err(|e| corrupt("sequence", &e))?,
        event_type: row
            .try_get("event_type")
            .map_err(|e| corrupt("event_type", &e))?,
        event_version: row
            .try_get("event_version")
            .map_err(|e| corrupt("event_version", &e))?,
        payload: serde_json::value::RawValue::from_string(payload)
            .map_err(|e| corrupt("payload", &e))?,
        epoch,
    })
}
