//! What operators and the relay run against a live store.
//!
//! - [`audit`] (feature `ops`): `buy-orders audit`, every rule of the books re-checked in the
//!   tables.
//! - [`relay`] (feature `relay`): the relay's fenced lease, checkpoint, stored events and
//!   rewinds: internals of `event-bus`, not of a store's user.

#[cfg(feature = "ops")]
pub(crate) mod audit;
#[cfg(feature = "relay")]
pub(crate) mod relay;
