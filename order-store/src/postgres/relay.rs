//! What the RabbitMQ relay needs from the write store: its checkpoint, and a lease that makes
//! it the only active relay.

use sqlx::{Connection, PgConnection};

use super::{unavailable, PgEventStore};
use crate::error::StoreError;
use crate::log::Position;

/// The advisory lock key of the relay lease (any constant both sides agree on: "BOrelay").
const RELAY_LOCK: i64 = 0x0042_4f72_656c_6179;

/// Proof that this process is the active relay: a session-level advisory lock held on a
/// connection of its own. If the process dies, or its connection does, PostgreSQL releases the
/// lock and a standby relay takes over.
pub struct RelayLease {
    connection: PgConnection,
}

impl RelayLease {
    /// Whether the lease still holds (its connection answers). A relay checks this when idle
    /// and stops publishing when it fails.
    pub async fn is_held(&mut self) -> bool {
        self.connection.ping().await.is_ok()
    }

    /// Gives the lease up.
    pub async fn release(self) {
        let _ = self.connection.close().await;
    }
}

impl PgEventStore {
    /// Tries to become the active relay: `Some(lease)` if no other process holds the lease.
    pub async fn try_relay_lease(&self) -> Result<Option<RelayLease>, StoreError> {
        let options = self.pool().connect_options();
        let mut connection = PgConnection::connect_with(&options)
            .await
            .map_err(unavailable)?;
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(RELAY_LOCK)
            .fetch_one(&mut connection)
            .await
            .map_err(unavailable)?;
        if got {
            Ok(Some(RelayLease { connection }))
        } else {
            let _ = connection.close().await;
            Ok(None)
        }
    }

    /// The position up to which every event has been published and confirmed.
    pub async fn relay_checkpoint(&self) -> Result<Position, StoreError> {
        let position: i64 =
            sqlx::query_scalar("SELECT position FROM relay_checkpoint WHERE name = 'rabbitmq'")
                .fetch_one(self.pool())
                .await
                .map_err(unavailable)?;
        Ok(Position(position as u64))
    }

    /// Records that everything up to `position` is published; never moves backwards.
    pub async fn advance_relay_checkpoint(&self, position: Position) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE relay_checkpoint SET position = GREATEST(position, $1) WHERE name = 'rabbitmq'",
        )
        .bind(position.0 as i64)
        .execute(self.pool())
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
