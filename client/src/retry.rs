//! Which failures are retried, and how long to wait before the next attempt.

use std::time::Duration;

use tokio::time::Instant;

use crate::error::{Error, ErrorCode};

/// What to do after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Verdict {
    /// Try again (the same request: the same idempotence key).
    pub retry: bool,
    /// Try the next endpoint: this one did not answer, or is out of service.
    pub next_endpoint: bool,
}

impl Verdict {
    /// No answer, a 503 (any code: `unavailable`, `outcome_unknown`, `price_unavailable`,
    /// `not_yet_consistent`), a proxy's 502 or 504, and a 429 are retried; every other answer
    /// is final (a 4xx is the caller's to fix, a 500 a server's bug, not a passing state).
    pub fn of(failure: &Error) -> Verdict {
        match failure {
            Error::Transport { .. } => Verdict {
                retry: true,
                next_endpoint: true,
            },
            Error::Api { status, code, .. } => {
                let busy = *status == 429 && *code != ErrorCode::TooManyFailures;
                let down = matches!(status, 502..=504);
                Verdict {
                    retry: busy || down,
                    next_endpoint: down,
                }
            }
            _ => Verdict {
                retry: false,
                next_endpoint: false,
            },
        }
    }
}

/// The waits between attempts: `Retry-After` when the server gave one, else exponential from
/// [`Backoff::FIRST`] to [`Backoff::MAX`] with full jitter (so clients refused together do not
/// come back together).
#[derive(Debug)]
pub(crate) struct Backoff {
    next: Duration,
}

impl Backoff {
    /// The first wait without `Retry-After`.
    pub const FIRST: Duration = Duration::from_millis(50);
    /// The longest wait without `Retry-After`.
    pub const MAX: Duration = Duration::from_secs(2);

    pub fn new() -> Self {
        Backoff { next: Self::FIRST }
    }

    /// How long to wait after `failure`.
    pub fn delay(&mut self, failure: &Error) -> Duration {
        let told = match failure {
            Error::Api { retry_after, .. } => *retry_after,
            _ => None,
        };
        let ceiling = self.next;
        self.next = (self.next * 2).min(Self::MAX);
        match told {
            // As told, plus a little spread: never earlier.
            Some(after) => after + ceiling.mul_f64(fastrand::f64() * 0.5),
            None => ceiling.mul_f64(0.5 + fastrand::f64() * 0.5),
        }
    }

    /// Waits before the next attempt, or `Err` if that wait would end past `deadline`.
    pub async fn wait(&mut self, failure: &Error, deadline: Instant) -> Result<(), ()> {
        let delay = self.delay(failure);
        let until = Instant::now() + delay;
        if until >= deadline {
            return Err(());
        }
        tokio::time::sleep_until(until).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn api(status: u16, code: ErrorCode, retry_after: Option<u64>) -> Error {
        Error::Api {
            status,
            code,
            message: String::new(),
            retry_after: retry_after.map(Duration::from_secs),
        }
    }

    #[test]
    fn only_what_may_pass_is_retried() {
        for (status, code, retry) in [
            (503, ErrorCode::OutcomeUnknown, true),
            (503, ErrorCode::Unavailable, true),
            (503, ErrorCode::NotYetConsistent, true),
            (502, ErrorCode::Unavailable, true),
            (429, ErrorCode::RateLimited, true),
            (429, ErrorCode::TooManyFailures, false),
            (409, ErrorCode::BtcCapExceeded, false),
            (422, ErrorCode::IdempotencyKeyReused, false),
            (422, ErrorCode::ValidationFailed, false),
            (401, ErrorCode::Unauthenticated, false),
            (400, ErrorCode::InvalidConsistencyToken, false),
            (404, ErrorCode::NotFound, false),
            (500, ErrorCode::Internal, false),
        ] {
            assert_eq!(
                Verdict::of(&api(status, code.clone(), None)).retry,
                retry,
                "{status} {code:?}"
            );
        }
    }

    #[test]
    fn retry_after_is_honoured_and_backoff_grows_to_its_ceiling() {
        let mut backoff = Backoff::new();
        let told = backoff.delay(&api(429, ErrorCode::RateLimited, Some(2)));
        assert!(told >= Duration::from_secs(2) && told < Duration::from_millis(2100));
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            last = backoff.delay(&api(503, ErrorCode::Unavailable, None));
            assert!(last <= Backoff::MAX);
        }
        assert!(last >= Backoff::MAX / 2);
    }
}
