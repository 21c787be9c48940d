//! Identifiers: [`IdempotencyKey`], [`ClientId`] and the derived [`OrderId`].

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::ValueError;

fn parse_uuid(text: &str) -> Result<Uuid, ValueError> {
    // Only the hyphenated form: braces, URNs and bare hex are not what clients are told to send.
    if text.len() != 36 {
        return Err(ValueError::NotAUuid(text.to_owned()));
    }
    Uuid::try_parse(text).map_err(|_| ValueError::NotAUuid(text.to_owned()))
}

/// The key a client sends so that retrying a request cannot place a second order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct IdempotencyKey(Uuid);

impl IdempotencyKey {
    /// Parses the hyphenated UUID form (`3f2504e0-4f89-11d3-9a0c-0305e82c3301`).
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        parse_uuid(text).map(IdempotencyKey)
    }

    /// Wraps a UUID (e.g. a fresh `Uuid::new_v4()` in a client).
    pub fn from_uuid(uuid: Uuid) -> Self {
        IdempotencyKey(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for IdempotencyKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for IdempotencyKey {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// Who places orders. Idempotence keys are scoped to a client, so two clients may use the same
/// key without colliding. 1 to 64 characters of `A-Z a-z 0-9 . _ -`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ClientId(String);

impl ClientId {
    /// The longest client id accepted.
    pub const MAX_LEN: usize = 64;

    /// Parses a client id.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        let ok = (1..=Self::MAX_LEN).contains(&text.len())
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
        if ok {
            Ok(ClientId(text.to_owned()))
        } else {
            Err(ValueError::BadClientId(text.to_owned()))
        }
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for ClientId {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

impl TryFrom<String> for ClientId {
    type Error = ValueError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<ClientId> for String {
    fn from(c: ClientId) -> Self {
        c.0
    }
}

/// The id of a buy order, and of its aggregate.
///
/// Derived, not random: `OrderId::derive(client, key)` is a UUID v5 of the client id and the
/// idempotence key, so every retry of one request names the same aggregate wherever it is
/// handled, and the event store's optimistic concurrency turns a concurrent duplicate into a
/// conflict instead of a second order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct OrderId(Uuid);

impl OrderId {
    /// The UUID v5 namespace of buy-orders order ids. Changing it would re-key every order.
    const NAMESPACE: Uuid = Uuid::from_u128(0x6b1f_2c4e_8a53_4d1b_9e0f_5c7a_2d8e_b341);

    /// The order id for a client's idempotence key.
    pub fn derive(client: &ClientId, key: &IdempotencyKey) -> Self {
        // A client id cannot contain '\n', so the name is unambiguous.
        let name = format!("{}\n{}", client.as_str(), key);
        OrderId(Uuid::new_v5(&Self::NAMESPACE, name.as_bytes()))
    }

    /// Parses the hyphenated UUID form.
    pub fn parse(text: &str) -> Result<Self, ValueError> {
        parse_uuid(text).map(OrderId)
    }

    /// An order id as stored (a `uuid` column, say), without a trip through text.
    pub fn from_uuid(uuid: Uuid) -> Self {
        OrderId(uuid)
    }

    /// The UUID.
    pub fn as_uuid(&self) -> &Uuid {
        &self.0
    }
}

impl fmt::Display for OrderId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(&self.0, f)
    }
}

impl FromStr for OrderId {
    type Err = ValueError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "3f2504e0-4f89-11d3-9a0c-0305e82c3301";

    #[test]
    fn order_id_is_deterministic_and_scoped_to_the_client() {
        let key = IdempotencyKey::parse(KEY).unwrap();
        let a = ClientId::parse("alice").unwrap();
        let b = ClientId::parse("bob").unwrap();
        assert_eq!(OrderId::derive(&a, &key), OrderId::derive(&a, &key));
        assert_ne!(OrderId::derive(&a, &key), OrderId::derive(&b, &key));
        assert_eq!(OrderId::derive(&a, &key).as_uuid().get_version_num(), 5);
    }

    #[test]
    fn ids_parse_strictly() {
        assert!(IdempotencyKey::parse(KEY).is_ok());
        assert!(IdempotencyKey::parse("3f2504e04f8911d39a0c0305e82c3301").is_err());
        assert!(IdempotencyKey::parse("not-a-uuid").is_err());
        assert!(ClientId::parse("team_7.api-1").is_ok());
        assert!(ClientId::parse("").is_err());
        assert!(ClientId::parse("a b").is_err());
        assert!(ClientId::parse("a\nb").is_err());
        assert!(ClientId::parse(&"x".repeat(65)).is_err());
    }
}
