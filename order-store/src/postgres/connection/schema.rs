//! The PostgreSQL schema the store lives in (`PG_SCHEMA`), so it can share a database with an
//! application's own tables, or with a second store.
//!
//! Every session the store opens sets `search_path` to it, so every table, function and
//! migration of ours resolves there, and each schema keeps its own migration history. What is
//! not a table is kept apart by name: the notification channel and the advisory locks (relay
//! lease, rebuild) get the schema mixed in. In `public` they keep the names they always had, so
//! a deployment from before `PG_SCHEMA` is unchanged.

use std::fmt;
use std::str::FromStr;

/// PostgreSQL's default schema, where every name stays what it was before `PG_SCHEMA`.
const PUBLIC: &str = "public";

/// The longest schema name: the channel `buy_order_events.<schema>` must fit PostgreSQL's
/// 63-byte identifiers.
const MAX_LEN: usize = 40;

/// A schema name that is safe to put in `search_path` and in SQL without quoting: lower-case
/// ASCII letters, digits and `_`, starting with a letter or `_`, at most 40 bytes, not `pg_…`
/// (reserved by PostgreSQL).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PgSchema(String);

impl PgSchema {
    /// `public`, PostgreSQL's default schema (and the store's, before `PG_SCHEMA` existed).
    pub fn public() -> Self {
        PgSchema(PUBLIC.into())
    }

    /// Parses a schema name, or says what is wrong with it.
    pub fn parse(name: &str) -> Result<Self, String> {
        let mut bytes = name.bytes();
        let starts_well = bytes
            .next()
            .is_some_and(|b| b.is_ascii_lowercase() || b == b'_');
        let rest_ok = bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
        if !starts_well || !rest_ok || name.len() > MAX_LEN {
            return Err(format!(
                "a schema name is 1 to {MAX_LEN} of a-z, 0-9 and _, not starting with a digit"
            ));
        }
        if name.starts_with("pg_") {
            return Err("schema names starting with pg_ are reserved by PostgreSQL".into());
        }
        Ok(PgSchema(name.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Default for PgSchema {
    fn default() -> Self {
        Self::public()
    }
}

impl FromStr for PgSchema {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        Self::parse(s)
    }
}

impl fmt::Display for PgSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The channel the trigger of `schema` notifies new positions on (migration 1008 names it the
/// same way): a listener is never woken, nor misled about the head, by another schema's log.
pub(crate) fn channel(schema: &str) -> String {
    schema_channel("buy_order_events", schema)
}

/// The `NOTIFY` channel `base` of `schema`: `base` itself in `public`, `<base>.<schema>`
/// elsewhere, so stores in two schemas of one database (channels are per database) never wake
/// each other. Every channel of the store, and of crates keeping tables beside it, is named so.
pub fn schema_channel(base: &str, schema: &str) -> String {
    if schema == PUBLIC {
        base.to_owned()
    } else {
        format!("{base}.{schema}")
    }
}

/// The advisory lock key `base` for `schema`: `base` itself in `public`, otherwise `base` mixed
/// with a stable hash of the name (FNV-1a: the same in every process and every version), so
/// two schemas' relays or rebuilds never exclude each other.
pub(crate) fn lock_key(base: i64, schema: &str) -> i64 {
    if schema == PUBLIC {
        return base;
    }
    base ^ fnv(schema)
}

/// FNV-1a of `text`: a stable hash, the same in every process and every version, for mixing
/// names into advisory lock keys.
pub(crate) fn fnv(text: &str) -> i64 {
    let hash = text.bytes().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    i64::from_ne_bytes(hash.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_parsed_not_trusted() {
        assert!(PgSchema::parse("orders").is_ok());
        assert!(PgSchema::parse("_orders_2").is_ok());
        for bad in [
            "",
            "Orders",
            "2orders",
            "or-ders",
            "o\"; DROP",
            "pg_temp",
            &"x".repeat(41),
        ] {
            assert!(PgSchema::parse(bad).is_err(), "{bad:?} accepted");
        }
        assert_eq!(PgSchema::default().as_str(), "public");
    }

    #[test]
    fn public_keeps_its_names_and_others_get_their_own() {
        assert_eq!(channel("public"), "buy_order_events");
        assert_eq!(channel("shop"), "buy_order_events.shop");
        assert!(channel(&"x".repeat(MAX_LEN)).len() < 64);
        assert_eq!(lock_key(42, "public"), 42);
        assert_ne!(lock_key(42, "shop"), 42);
        assert_ne!(lock_key(42, "shop"), lock_key(42, "shop2"));
        assert_eq!(lock_key(42, "shop"), lock_key(42, "shop"));
    }
}
