//! The `# HELP` line of every metric, and counters that exist from the start.
//!
//! Prometheus shows a metric's help only when the process described it, and a counter only
//! once it has been touched: a rate over a counter that appears at its first increment misses
//! that increment, and an alert on it cannot tell "none yet" from "not scraped". So every crate
//! that records metrics lists them once, with what they mean, in a [`MetricDoc`] table that
//! its service's `ops()` hands to [`describe`] at start-up.

/// What kind of metric a [`MetricDoc`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Only goes up.
    Counter,
    /// Goes up and down.
    Gauge,
    /// A distribution.
    Histogram,
}

/// One metric: its name, kind and help, and the label sets a counter starts at 0 with (one
/// empty set for an unlabelled counter; none for labels known only when recorded).
#[derive(Debug, Clone, Copy)]
pub struct MetricDoc {
    /// The metric's name.
    pub name: &'static str,
    /// Its kind.
    pub kind: Kind,
    /// Its `# HELP` text.
    pub help: &'static str,
    /// For a counter: the label sets registered at 0 from the start.
    pub start_at_zero: &'static [&'static [(&'static str, &'static str)]],
}

impl MetricDoc {
    /// An unlabelled counter, at 0 from the start.
    pub const fn counter(name: &'static str, help: &'static str) -> Self {
        MetricDoc {
            name,
            kind: Kind::Counter,
            help,
            start_at_zero: &[&[]],
        }
    }

    /// A labelled counter, at 0 from the start for each of `label_sets`.
    pub const fn counter_by(
        name: &'static str,
        help: &'static str,
        label_sets: &'static [&'static [(&'static str, &'static str)]],
    ) -> Self {
        MetricDoc {
            name,
            kind: Kind::Counter,
            help,
            start_at_zero: label_sets,
        }
    }

    /// A gauge.
    pub const fn gauge(name: &'static str, help: &'static str) -> Self {
        MetricDoc {
            name,
            kind: Kind::Gauge,
            help,
            start_at_zero: &[],
        }
    }

    /// A histogram.
    pub const fn histogram(name: &'static str, help: &'static str) -> Self {
        MetricDoc {
            name,
            kind: Kind::Histogram,
            help,
            start_at_zero: &[],
        }
    }
}

/// Describes every metric of `docs` to the process's recorder, and registers its counters at
/// 0. Idempotent: a counter already counting keeps its value.
pub fn describe(docs: &[MetricDoc]) {
    crate::observe::metrics_handle();
    for doc in docs {
        match doc.kind {
            Kind::Counter => {
                metrics::describe_counter!(doc.name, doc.help);
                for labels in doc.start_at_zero {
                    let labels: Vec<metrics::Label> = labels
                        .iter()
                        .map(|(key, value)| metrics::Label::new(*key, *value))
                        .collect();
                    metrics::counter!(doc.name, labels).increment(0);
                }
            }
            Kind::Gauge => metrics::describe_gauge!(doc.name, doc.help),
            Kind::Histogram => metrics::describe_histogram!(doc.name, doc.help),
        }
    }
}

/// The metrics service-kit itself records.
pub const METRICS: &[MetricDoc] = &[
    MetricDoc::counter_by(
        "http_requests_total",
        "HTTP requests by route pattern, method and status",
        &[],
    ),
    MetricDoc::histogram(
        "http_request_duration_seconds",
        "HTTP request latency by route pattern, method and status",
    ),
    MetricDoc::counter(
        "http_request_log_dropped_total",
        "Request log lines not written: past REQUEST_LOG_MAX_PER_S (the next line written says how many)",
    ),
    MetricDoc::counter(
        "rate_limited_total",
        "Requests refused with 429 (over a client's rate)",
    ),
    MetricDoc::counter(
        "auth_failures_throttled_total",
        "Failed authentications answered 429 instead of 401 (over a source address's budget)",
    ),
    MetricDoc::gauge(
        "service_ready",
        "1 while the service's readiness check passes, 0 while it fails (every 5 s)",
    ),
];
