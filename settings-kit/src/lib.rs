//! # settings-kit
//!
//! The few shapes that every buy-orders setting shares, in one place so that each is written
//! once: a duration given in whole milliseconds ([`parse_millis`]) and a connection URL that may
//! hold a password ([`SecretUrl`], printed only as [`redact_url`] shows it).
//!
//! Each binary reads one typed settings struct (clap, from the environment); the crates that
//! own a setting (`order-store`'s `PgSettings`, `event-bus`'s `BusSettings`, `price-feed`'s and
//! `service-kit`'s) use these parsers so that a bad value fails the same way everywhere, naming
//! the variable and never echoing a secret.

mod millis;
mod secret;
#[cfg(feature = "test-support")]
pub mod testing;

pub use millis::parse_millis;
#[cfg(feature = "cli")]
pub use secret::SecretUrlParser;
pub use secret::{redact_url, SecretUrl};
