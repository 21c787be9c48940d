//! The metrics order-store records, described once (`# HELP`), its counters at 0 from the
//! start: a service calls [`describe_metrics`] when it starts.

/// Unlabelled counters and their help.
const COUNTERS: &[(&str, &str)] = &[
    (
        "store_commit_transactions_total",
        "PostgreSQL write transactions of this process (group commit)",
    ),
    (
        "store_commit_orders_total",
        "Orders carried by this process's write transactions",
    ),
    (
        "store_committed_events_total",
        "Events stored by this process's write transactions",
    ),
    (
        "store_statements_unanswered_total",
        "Statements given up after the answer deadline (their connection closed)",
    ),
    (
        "store_read_sessions_retired_total",
        "Shared read sessions retired because a read on them went unanswered",
    ),
];

/// Describes order-store's metrics to the process's recorder and registers its counters at 0.
pub fn describe_metrics() {
    use metrics::{counter, describe_counter};
    for &(name, help) in COUNTERS {
        describe_counter!(name, help);
        counter!(name).increment(0);
    }
    describe_counter!(
        "store_round_trips_total",
        "Statements the write path sent to PostgreSQL, by op (load, commit)"
    );
    for op in ["load", "commit"] {
        counter!("store_round_trips_total", "op" => op).increment(0);
    }
    describe_counter!(
        "store_unreadable_events_total",
        "Stored events this version cannot read, by reader (load, log)"
    );
    for reader in ["load", "log"] {
        counter!("store_unreadable_events_total", "reader" => reader).increment(0);
    }
}
