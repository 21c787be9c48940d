//! Read-your-writes: the token a write answers with, and the wait of a read model for it.
//!
//! A placement knows its order's [`Position`] in the log; a read model knows the position it
//! has applied up to (its checkpoint). A [`ConsistencyToken`] carries the first from the write
//! API to the read API, and [`AppliedWatch`] lets every request waiting for the second share one
//! view of it, so that waiting costs nothing per request (no query per request, no loop per
//! request): whoever moves the checkpoint, or a single shared poller, advances it.

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::{watch, Notify};

use crate::log::Position;

/// "A read after this write": the position of an order in the log, as the write API hands it
/// out (`Consistency-Token`) and the read API takes it back.
///
/// Its text is opaque to callers (`ct1_` and sixteen hex digits today): they keep it and give
/// it back, nothing else. It says how far the log had come when the order was stored, which is
/// all it can say: a read with it answers exactly as without it, only later, so presenting
/// another client's token shows nothing of that client's orders.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ConsistencyToken(Position);

/// The text every token of this version starts with.
const PREFIX: &str = "ct1_";
/// Hex digits after the prefix: a `u64`, zero-padded.
const DIGITS: usize = 16;

impl ConsistencyToken {
    /// The HTTP header that carries it: on `PUT /buy_order`'s answer, and on a read that asks
    /// for its write (lowercase, as HTTP/2 and `http`'s header names are).
    pub const HEADER: &'static str = "consistency-token";

    /// The token for an event stored at `position` (positions start at 1).
    pub fn at(position: Position) -> Self {
        ConsistencyToken(position)
    }

    /// The position a read must have applied before it answers.
    pub fn position(self) -> Position {
        self.0
    }
}

impl fmt::Display for ConsistencyToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{PREFIX}{:0width$x}", self.0 .0, width = DIGITS)
    }
}

/// Why a text is not a consistency token. Never echoes the text (a caller may paste anything).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a consistency token: give back the Consistency-Token header of a PUT /buy_order answer, unchanged")]
pub struct BadToken;

impl FromStr for ConsistencyToken {
    type Err = BadToken;

    fn from_str(text: &str) -> Result<Self, BadToken> {
        let digits = text.strip_prefix(PREFIX).ok_or(BadToken)?;
        // Exactly the form written: lowercase, zero-padded, so each position has one token.
        if digits.len() != DIGITS
            || !digits
                .bytes()
                .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        {
            return Err(BadToken);
        }
        match u64::from_str_radix(digits, 16) {
            Ok(0) | Err(_) => Err(BadToken), // no event is stored at position 0
            Ok(position) => Ok(ConsistencyToken(Position(position))),
        }
    }
}

/// What a read model has applied, shared by every request waiting on it.
///
/// Whoever learns of progress calls [`AppliedWatch::advance`] (the in-memory table as it
/// applies, or one poller of the database's checkpoint per process); each request waits on the
/// shared value with [`AppliedWatch::wait`]. [`AppliedWatch::wanted`] tells a poller when anyone
/// waits for more than is known, so it asks the database only then.
#[derive(Debug)]
pub struct AppliedWatch {
    applied: watch::Sender<Position>,
    /// Requests waiting for a position beyond `applied`.
    waiting: AtomicUsize,
    /// Rung when a request starts waiting.
    wanted: Notify,
}

impl Default for AppliedWatch {
    fn default() -> Self {
        AppliedWatch {
            applied: watch::Sender::new(Position::ZERO),
            waiting: AtomicUsize::new(0),
            wanted: Notify::new(),
        }
    }
}

impl AppliedWatch {
    /// Nothing known to be applied yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The position known to be applied.
    pub fn applied(&self) -> Position {
        *self.applied.borrow()
    }

    /// Records that everything up to `to` is applied (never moves back: a rebuild swaps in a
    /// table that covers at least what the live one did).
    pub fn advance(&self, to: Position) {
        self.applied.send_if_modified(|applied| {
            let newer = to > *applied;
            if newer {
                *applied = to;
            }
            newer
        });
    }

    /// Whether requests are waiting for more than is known to be applied.
    pub fn is_wanted(&self) -> bool {
        self.waiting.load(Ordering::Acquire) > 0
    }

    /// Completes once a request waits for more than is known to be applied (at once if one
    /// already does).
    pub async fn wanted(&self) {
        loop {
            let rung = self.wanted.notified();
            if self.is_wanted() {
                return;
            }
            rung.await;
        }
    }

    /// Waits until `position` is applied, at most `within`: `true` once it is, `false` if the
    /// bound passed first.
    pub async fn wait(&self, position: Position, within: Duration) -> bool {
        let mut applied = self.applied.subscribe();
        if *applied.borrow_and_update() >= position {
            return true;
        }
        self.waiting.fetch_add(1, Ordering::AcqRel);
        let _done = Waiting(&self.waiting);
        self.wanted.notify_waiters();
        let reached = async {
            applied
                .wait_for(|applied| *applied >= position)
                .await
                .is_ok()
        };
        tokio::time::timeout(within, reached).await == Ok(true)
    }
}

/// Counts a request out of the waiters however its wait ends (dropped with its request too).
struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_refuse_anything_else() {
        for position in [1, 2, 255, u64::from(u32::MAX) + 1, u64::MAX] {
            let token = ConsistencyToken::at(Position(position));
            let text = token.to_string();
            assert_eq!(text.len(), PREFIX.len() + DIGITS);
            assert_eq!(text.parse::<ConsistencyToken>(), Ok(token), "{text}");
        }
        assert_eq!(
            ConsistencyToken::at(Position(42)).to_string(),
            "ct1_000000000000002a"
        );
        for bad in [
            "",
            "ct1_",
            "ct1_0000000000000000", // position 0
            "ct1_000000000000002A", // uppercase: not a form ever written
            "ct1_00000000000002a",  // too short
            "ct1_0000000000000002a",
            "ct2_000000000000002a",
            "CT1_000000000000002a",
            "ct1_+00000000000002a",
            "ct1_00000000000002a ",
            "ct1_ffffffffffffffff0",
            "42",
            "ct1_000000000000002ä",
        ] {
            assert_eq!(bad.parse::<ConsistencyToken>(), Err(BadToken), "{bad:?}");
        }
        assert!(!BadToken.to_string().contains("ct1_0"));
    }

    #[tokio::test]
    async fn waiters_are_released_by_an_advance_or_time_out_and_are_counted() {
        let watch = std::sync::Arc::new(AppliedWatch::new());
        assert!(watch.wait(Position::ZERO, Duration::ZERO).await);
        assert!(!watch.is_wanted());
        let waiter = {
            let watch = watch.clone();
            tokio::spawn(async move { watch.wait(Position(3), Duration::from_secs(10)).await })
        };
        tokio::time::timeout(Duration::from_secs(5), watch.wanted())
            .await
            .expect("a waiter is announced");
        watch.advance(Position(2));
        assert!(watch.is_wanted(), "2 is not 3: still waiting");
        watch.advance(Position(5));
        assert!(waiter.await.unwrap());
        assert!(!watch.is_wanted());
        watch.advance(Position(1));
        assert_eq!(watch.applied(), Position(5), "never moves back");
        assert!(!watch.wait(Position(6), Duration::from_millis(20)).await);
        assert!(
            !watch.is_wanted(),
            "a wait that timed out is no longer counted"
        );
    }
}
