//! Sessions that reads share, so that concurrent reads are pipelined.
//!
//! A pooled session serves one query at a time: with 16 requests in flight, 16 PostgreSQL
//! backends each wake for one query, answer it and sleep again. perf showed those context
//! switches as the largest single cost of a read on both sides.
//! tokio-postgres pipelines the queries that tasks send concurrently on one `Client`: they go out
//! together and the backend answers them one after another without sleeping in between. On two
//! cores that cut PostgreSQL's and api-read's CPU per read and raised reads/s against a session
//! per request (the figures: bench/RESULTS.md, "Reads pipelined on shared sessions").
//!
//! A read goes to the first session with fewer than `depth` reads in flight, so a light load
//! keeps to one session (the fewest wake-ups) and a heavier one spreads over more, up to
//! `sessions`; beyond that, to the least busy. A read counts until its answer arrives, not
//! until its caller stops waiting: it runs on a task of its own ([`SharedSessions::read`]), so
//! a request that hits its HTTP deadline and is dropped leaves its read counted. A session that
//! stops answering therefore holds at most `depth` reads, and the reads after them go to the
//! next session. A read with no answer within the answer deadline (the statement timeout, which
//! the server itself enforces, plus the acquire timeout) retires its session: it is taken from
//! its slot and closed outside the pool once its last read ends, never handed out again.
//! Sessions are opened when first needed, one attempt at a time per slot, and a closed or
//! retired one is replaced by the next read that comes to it; never more than `sessions`
//! connections.
//!
//! A read waits behind the ones sent before it on its session, which is why this is for reads of
//! bounded cost (an index lookup, a keyset page of at most 100 rows), never for a transaction or
//! a statement whose cost a caller can grow.

use std::future::Future;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use crate::error::StoreError;

/// One shared session: a pooled connection that can be retired (closed outside the pool when
/// its last read ends, so a session that went silent is never handed out again).
pub(crate) struct Session {
    client: Option<Object>,
    retired: AtomicBool,
    /// Reads sent on it whose answer has not arrived ([`InFlight`]).
    reads: AtomicUsize,
}

impl Session {
    fn new(client: Object) -> Self {
        Session {
            client: Some(client),
            retired: AtomicBool::new(false),
            reads: AtomicUsize::new(0),
        }
    }

    /// Whether the session may take reads: open, and not retired.
    fn usable(&self) -> bool {
        !self.retired.load(Ordering::SeqCst) && !self.is_closed()
    }

    /// Takes the session out of service: no new read is sent on it, and it is closed once the
    /// reads already sent on it end.
    fn retire(&self) {
        self.retired.store(true, Ordering::SeqCst);
    }
}

/// One read in flight on a session: counted from when the session is chosen until this is
/// dropped, which [`SharedSessions::read`] does when the answer arrives (or the deadline
/// passes), not when the caller stops waiting.
struct InFlight(Arc<Session>);

impl InFlight {
    fn on(session: Arc<Session>) -> Self {
        session.reads.fetch_add(1, Ordering::SeqCst);
        InFlight(session)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.reads.fetch_sub(1, Ordering::SeqCst);
    }
}

impl std::ops::Deref for Session {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.client.as_ref().expect("present until dropped")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.retired.load(Ordering::SeqCst) {
            if let Some(client) = self.client.take() {
                // Out of the pool for good (which makes room for a new one), then closed.
                drop(Object::take(client));
            }
        }
    }
}

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
    session: Mutex<Option<Arc<Session>>>,
    opening: tokio::sync::Mutex<()>,
}

impl Slot {
    fn lock(&self) -> MutexGuard<'_, Option<Arc<Session>>> {
        // Nothing panics while it is locked (it is only read or replaced), so a poisoned lock
        // still holds a consistent value.
        self.session
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The session, if there is one and it still takes reads.
    fn open(&self) -> Option<Arc<Session>> {
        self.lock()
            .as_ref()
            .filter(|session| session.usable())
            .cloned()
    }
}

/// Reads in flight on `session`.
fn in_flight(session: &Session) -> usize {
    session.reads.load(Ordering::SeqCst)
}

/// Up to `sessions` sessions of a pool of their own, shared by reads.
pub(crate) struct SharedSessions {
    pool: Pool,
    depth: usize,
    /// How long a read may wait for its answer before its session counts as silent.
    answer_within: Duration,
    slots: Vec<Slot>,
    /// Spreads the reads that wait for sessions being opened over the slots.
    next: AtomicUsize,
}

impl SharedSessions {
    /// Sessions of `pool` (up to `sessions`, which `pool` must allow), `depth` reads in flight
    /// on each before the next one is used; a read unanswered after `answer_within` retires
    /// its session.
    pub(crate) fn new(pool: Pool, sessions: usize, depth: usize, answer_within: Duration) -> Self {
        SharedSessions {
            pool,
            depth: depth.max(1),
            answer_within,
            slots: (0..sessions.max(1)).map(|_| Slot::default()).collect(),
            next: AtomicUsize::new(0),
        }
    }

    /// Runs one read (`read`, given the session to send it on) on a task of its own, which
    /// holds the session until the answer arrives or the answer deadline passes, whether or
    /// not the caller still waits: the session's count of reads in flight stays true when a
    /// request is dropped at its deadline. Past the answer deadline the session is retired and
    /// the read fails as unavailable.
    pub(crate) async fn read<T, F, Fut>(&self, read: F) -> Result<T, StoreError>
    where
        T: Send + 'static,
        F: FnOnce(Arc<Session>) -> Fut,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'static,
    {
        let counted = self.get().await.map_err(crate::postgres::db_error)?;
        let answer_within = self.answer_within;
        let sent = read(counted.0.clone());
        let task = tokio::spawn(async move {
            let answer = tokio::time::timeout(answer_within, sent).await;
            if answer.is_err() {
                counted.0.retire();
                metrics::counter!("store_read_sessions_retired_total").increment(1);
                tracing::warn!(
                    answer_within_ms = answer_within.as_millis() as u64,
                    "a shared read session did not answer in time; retired"
                );
            }
            drop(counted);
            answer.unwrap_or_else(|_| {
                Err(StoreError::unavailable(format!(
                    "the read database did not answer within {} ms",
                    answer_within.as_millis()
                )))
            })
        });
        task.await
            .map_err(|e| StoreError::from_database(e).context("a read failed"))?
    }

    /// A session to send one read on, counted as one of its reads in flight until dropped.
    async fn get(&self) -> Result<InFlight, SessionError> {
        let mut least: Option<Arc<Session>> = None;
        let mut empty = None;
        for (index, slot) in self.slots.iter().enumerate() {
            match slot.open() {
                Some(session) if in_flight(&session) < self.depth => {
                    return Ok(InFlight::on(session))
                }
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
            return self.open(index, true).await.map(InFlight::on);
        }
        if let Some(session) = least {
            return Ok(InFlight::on(session));
        }
        // Every slot is being opened: wait for one of them.
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        self.open(index, false).await.map(InFlight::on)
    }

    /// The session of slot `index`, opened by this read if it is the one that found the slot
    /// empty (`first`); otherwise whatever another read's attempt left there.
    async fn open(&self, index: usize, first: bool) -> Result<Arc<Session>, SessionError> {
        let slot = &self.slots[index];
        let _opening = slot.opening.lock().await;
        if let Some(session) = slot.open() {
            return Ok(session);
        }
        if !first {
            return Err(SessionError::OpeningFailed);
        }
        // A closed session goes back to its pool (which discards it), a retired one leaves it
        // once its last read ends, before a new one is asked for: the pool has room for
        // `sessions` and no more.
        drop(slot.lock().take());
        let fresh = Arc::new(Session::new(self.pool.get().await?));
        *slot.lock() = Some(fresh.clone());
        Ok(fresh)
    }
}
