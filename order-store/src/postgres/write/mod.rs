//! The write side: orders committed under the cap, numbered in the log.
//!
//! - [`event_store`]: [`PgEventStore`](crate::postgres::PgEventStore), postgres-es's store with
//!   group commit, grouped loads, the log (`EventLog`) and the cap's operator calls.
//! - [`group_commit`]: the orders a process has ready, appended in one transaction
//!   (`buy_orders_append`); also the bounded wait every database call of the store uses
//!   ([`group_commit::settle`]).
//! - [`group_load`]: the aggregates wanted at the same moment, read with one query.

pub(crate) mod event_store;
pub(crate) mod group_commit;
pub(crate) mod group_load;
