//! Which requests get a line in the log, and how many lines a second at most.
//!
//! A line for every request was what limited throughput, and what let any caller grow the log
//! at will: the all-in-one wrote ~870 bytes per request, 1.37 GB in one benchmark session
//! (bench/RESULTS.md, issue 26). By default only the requests someone will look for get a
//! line: every refusal and failure (status 400 and up) and every slow answer; the metrics count
//! every request. `REQUEST_LOG=all` brings back a line per request, for as long as one is
//! wanted. Whatever the mode, at most `REQUEST_LOG_MAX_PER_S` lines a second are written (a
//! flood of bad requests writes no more than that); the lines past it are counted
//! (`http_request_log_dropped_total`) and the next line written says how many it follows.

use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use settings_kit::parse_millis;
use warp::http::StatusCode;

/// Which requests get a log line (`REQUEST_LOG`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum RequestLog {
    /// Every request (up to the per-second cap).
    All,
    /// Refusals and failures (status 400 and up), and answers slower than
    /// `REQUEST_LOG_SLOW_MS`: the default.
    #[default]
    ErrorsAndSlow,
    /// None: the metrics still count every request.
    Off,
}

/// The request log's settings, read by every binary with the log format.
#[derive(Debug, Clone, clap::Args)]
pub struct RequestLogSettings {
    /// Which requests get a line: `all`, `errors-and-slow` or `off`.
    #[arg(
        long = "request-log",
        global = true,
        env = "REQUEST_LOG",
        value_name = "REQUEST_LOG",
        value_enum,
        default_value_t = RequestLog::ErrorsAndSlow
    )]
    pub mode: RequestLog,
    /// An answer at least this slow is logged in `errors-and-slow` mode.
    #[arg(long = "request-log-slow-ms", global = true, env = "REQUEST_LOG_SLOW_MS",
          value_name = "REQUEST_LOG_SLOW_MS", default_value = "500", value_parser = parse_millis)]
    pub slow: Duration,
    /// The most request lines written per second (a burst of one second's worth); the rest are
    /// counted, not written.
    #[arg(long = "request-log-max-per-s", global = true, env = "REQUEST_LOG_MAX_PER_S",
          value_name = "REQUEST_LOG_MAX_PER_S", default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub max_per_s: u32,
}

impl Default for RequestLogSettings {
    fn default() -> Self {
        RequestLogSettings {
            mode: RequestLog::ErrorsAndSlow,
            slow: Duration::from_millis(500),
            max_per_s: 200,
        }
    }
}

/// The process's request log policy: set once by [`RequestLogSettings::install`] (every
/// binary, at start), else the defaults.
static POLICY: OnceLock<Policy> = OnceLock::new();

/// What decides, per request, whether a line is written.
pub(crate) struct Policy {
    mode: RequestLog,
    slow: Duration,
    lines: DefaultDirectRateLimiter,
    /// Lines not written since the last one that was.
    dropped: AtomicU64,
}

/// A request line to write, with how many were dropped just before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Write {
    pub(crate) dropped_before: u64,
}

impl RequestLogSettings {
    /// Makes these settings the process's request log policy (the first call wins, like the
    /// log's own initialisation).
    pub fn install(&self) {
        let _ = POLICY.set(Policy::new(self));
    }
}

impl Policy {
    pub(crate) fn new(settings: &RequestLogSettings) -> Self {
        let per_s = NonZeroU32::new(settings.max_per_s).unwrap_or(NonZeroU32::MIN);
        Policy {
            mode: settings.mode,
            slow: settings.slow,
            lines: RateLimiter::direct(Quota::per_second(per_s)),
            dropped: AtomicU64::new(0),
        }
    }

    /// The process's policy.
    pub(crate) fn get() -> &'static Policy {
        POLICY.get_or_init(|| Policy::new(&RequestLogSettings::default()))
    }

    /// Whether the request answered `status` after `elapsed` gets a line: `None` when its mode
    /// leaves it out, or when the per-second cap is reached (then it is counted as dropped).
    pub(crate) fn decide(&self, status: StatusCode, elapsed: Duration) -> Option<Write> {
        let wanted = match self.mode {
            RequestLog::All => true,
            RequestLog::ErrorsAndSlow => status.as_u16() >= 400 || elapsed >= self.slow,
            RequestLog::Off => false,
        };
        if !wanted {
            return None;
        }
        if self.lines.check().is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            metrics::counter!("http_request_log_dropped_total").increment(1);
            return None;
        }
        Some(Write {
            dropped_before: self.dropped.swap(0, Ordering::Relaxed),
        })
    }
}

/// The longest path written in a request line: a longer one is cut (at a character boundary)
/// and marked, so that no request makes a long line.
pub(crate) const MAX_LOGGED_PATH: usize = 256;

/// `path` as a request line shows it: whole if short, else its first [`MAX_LOGGED_PATH`] bytes
/// and `…`.
pub(crate) fn logged_path(path: &str) -> std::borrow::Cow<'_, str> {
    if path.len() <= MAX_LOGGED_PATH {
        return path.into();
    }
    let mut end = MAX_LOGGED_PATH;
    while !path.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &path[..end]).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(mode: RequestLog, max_per_s: u32) -> Policy {
        Policy::new(&RequestLogSettings {
            mode,
            slow: Duration::from_millis(500),
            max_per_s,
        })
    }

    const FAST: Duration = Duration::from_millis(1);

    #[test]
    fn by_default_only_refusals_failures_and_slow_answers_are_logged() {
        let p = policy(RequestLog::ErrorsAndSlow, 1000);
        assert_eq!(p.decide(StatusCode::OK, FAST), None);
        assert_eq!(p.decide(StatusCode::OK, Duration::from_millis(499)), None);
        assert!(p
            .decide(StatusCode::OK, Duration::from_millis(500))
            .is_some());
        assert!(p.decide(StatusCode::BAD_REQUEST, FAST).is_some());
        assert!(p.decide(StatusCode::NOT_FOUND, FAST).is_some());
        assert!(p.decide(StatusCode::SERVICE_UNAVAILABLE, FAST).is_some());
        assert_eq!(p.decide(StatusCode::from_u16(399).unwrap(), FAST), None);
    }

    #[test]
    fn all_logs_every_request_and_off_none() {
        let all = policy(RequestLog::All, 1000);
        assert!(all.decide(StatusCode::OK, FAST).is_some());
        let off = policy(RequestLog::Off, 1000);
        assert_eq!(off.decide(StatusCode::INTERNAL_SERVER_ERROR, FAST), None);
        assert_eq!(off.decide(StatusCode::OK, Duration::from_secs(60)), None);
    }

    #[test]
    fn a_flood_writes_no_more_than_the_cap_and_the_next_line_says_how_many_were_dropped() {
        let p = policy(RequestLog::ErrorsAndSlow, 5);
        let written: Vec<Write> = (0..1000)
            .filter_map(|_| p.decide(StatusCode::UNAUTHORIZED, FAST))
            .collect();
        // One second's burst, and perhaps one more token if the clock ticked meanwhile.
        assert!(
            (5..=6).contains(&written.len()),
            "{} lines written",
            written.len()
        );
        assert!(written.iter().all(|w| w.dropped_before == 0));
        std::thread::sleep(Duration::from_millis(250)); // a token back (5 per second)
        let next = p
            .decide(StatusCode::UNAUTHORIZED, FAST)
            .expect("a line again");
        assert_eq!(next.dropped_before, 1000 - written.len() as u64);
        assert_eq!(
            p.decide(StatusCode::OK, FAST),
            None,
            "not wanted: not dropped either"
        );
    }

    #[test]
    fn long_paths_are_cut_at_a_character_boundary() {
        assert_eq!(logged_path("/buy_order"), "/buy_order");
        let long = format!("/{}", "é".repeat(400));
        let shown = logged_path(&long);
        assert!(shown.len() <= MAX_LOGGED_PATH + '…'.len_utf8());
        assert!(shown.ends_with('…'));
        assert!(long.starts_with(shown.trim_end_matches('…')));
    }
}
