//! Sessions that reads share, so that concurrent reads are pipelined.
//!
//! A pooled session serves one query at a time: with 16 requests in flight, 16 PostgreSQL
//! backends each wake for one query, answer it and sleep again. perf showed those context
//! switches as the largest single cost of a read on both sides (~22 % of the backends' time).
//! tokio-postgres pipelines the queries that tasks send concurrently on one `Client`: they go out
//! together and the backend answers them one after another without sleeping in between. Measured
//! on two cores (16 connections of `GET /buy_orders?page_size=10`, bench/RESULTS.md): 16,700
//! req/s with a session per request, 27,000 on one shared session; PostgreSQL's CPU per read
//! 48 → 22 µs, api-read's 51 → 34 µs.
//!
//! A read goes to the first session with fewer than `depth` reads in flight, so a light load
//! keeps to one session (the fewest wake-ups) and a heavier one spreads over more, up to
//! `sessions`; beyond that, to the least busy. A session that stops answering holds at most
//! `depth` reads (each ends at the request's own timeout): the reads after them go to the next
//! session. Sessions are opened when first needed, one attempt at a time per slot, and a closed
//! one is replaced by the next read that comes to it; never more than `sessions` connections.
//!
//! A read waits behind the ones sent before it on its session, which is why this is for reads of
//! bounded cost (an index lookup, a keyset page of at most 100 rows), never for a transaction or
//! a statement whose cost a caller can grow.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use deadpool_postgres::{Object, Pool};

/// Why no session could be had: the read is answered as unavailable.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SessionError {
    /// Opening a session failed.
    #[error(transparent)]
    Open(#[from] deadpool_postgres::PoolError),
    /// This read waited for another's attempt to open a session, which failed: it does not try
    /// again (in an outage each attempt can take the connect timeout; waiting reads would
    /// otherwise take one each, in turn).
    #[error("no session to the read database (opening one failed just now)")]
    OpeningFailed,
}

/// One session's place: the session, and a lock held while one read opens it.
#[derive(Default)]
struct Slot {
    session: Mutex<Option<Arc<Object>>>,
    opening: tokio::sync::Mutex<()>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<Object>>> {
        // Nothing panics while it is locked (it is only read or replaced), so a poisoned lock
        // still holds a consistent value.
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session, if there is one and it is still open.
    fn open(&self) -> Option<Arc<Object>> {
        self.lock()
            .as_ref()
            .filter(|session| !session.is_closed())
            .cloned()
    }
}

/// Reads in flight on `session`, a clone of a slot's: every clone but the slot's and this one
/// is held by a read.
fn in_flight(session: &Arc<Object>) -> usize {
    Arc::strong_count(session).saturating_sub(2)
}

/// Up to `sessions` sessions of a pool of their own, shared by reads.
pub(crate) struct SharedSessions {
    pool: Pool,
    depth: usize,
    slots: Vec<Slot>,
    /// Spreads the reads that wait for sessions being opened over the slots.
    next: AtomicUsize,
}

impl SharedSessions {
    /// Sessions of `pool` (up to `sessions`, which `pool` must allow), `depth` reads in flight
    /// on each before the next one is used.
    pub(crate) fn new(pool: Pool, sessions: usize, depth: usize) -> Self {
        SharedSessions {
            pool,
            depth: depth.max(1),
            slots: (0..sessions.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// A session to send one read on. Hold it only for that read: while it is held it counts
    /// as one of the session's reads in flight.
    pub(crate) async fn get(&self) -> Result<Arc<Object>, SessionError> {
        let mut least: Option<Arc<Object>> = None;
        let mut empty = None;
        for (index, slot) in self.slots.iter().enumerate() {
            match slot.open() {
                Some(session) if in_flight(&session) < self.depth => return Ok(session),
                Some(session) => {
                    if least
                        .as_ref()
                        .is_none_or(|so_far| in_flight(&session) < in_flight(so_far))
                    {
                        least = Some(session);
                    }
                }
                // Being opened by another read: not a candidate.
                None if slot.opening.try_lock().is_err() => {}
                None => {
                    empty.get_or_insert(index);
                }
            }
        }
        if let Some(index) = empty {
            return self.open(index, true).await;
        }
        if let Some(session) = least {
            return Ok(session);
        }
        // Every slot is being opened: wait for one of them.
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.open(index, false).await
    }

    /// The session of slot `index`, opened by this read if it is the one that found the slot
    /// empty (`first`); otherwise whatever another read's attempt left there.
    async fn open(&self, index: usize, first: bool) -> Result<Arc<Object>, SessionError> {
        let slot = &self.slots[index];
        let _opening = slot.opening.lock().await;
        if let Some(session) = slot.open() {
            return Ok(session);
        }
        if !first {
            return Err(SessionError::OpeningFailed);
        }
        // A closed session goes back to its pool (which discards it) before a new one is
        // asked for: the pool has room for `sessions` and no more.
        drop(slot.lock().take());
        let fresh = Arc::new(self.pool.get().await?);
        *slot.lock() = Some(fresh.clone());
        Ok(fresh)
    }
}
