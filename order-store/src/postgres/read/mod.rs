//! The read side: the read table, projections of your own, and the sessions reads share.
//!
//! - [`read_model`]: [`PgReadModel`](crate::postgres::PgReadModel), `buy_order_view` served as
//!   keyset pages and single orders; [`OrderViewProjection`](crate::postgres::OrderViewProjection)
//!   is how the projector folds the log into it.
//! - [`projection`]: [`Projection`](crate::postgres::Projection) and
//!   [`PgProjection`](crate::postgres::PgProjection), checkpointed projections with park and
//!   rebuild; `buy_order_view` is one.
//! - [`read_sessions`]: tokio-postgres sessions that concurrent reads share, pipelined, each
//!   read bounded and a silent session retired.

pub(crate) mod projection;
pub(crate) mod read_model;
pub(crate) mod read_sessions;
