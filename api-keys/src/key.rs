//! The key itself: `bo_<key id>_<secret>`, generated from the operating system's random source,
//! stored only as the SHA-256 of its secret.

use std::fmt;

use rand::RngCore;
use sha2::{Digest, Sha256};

/// Bytes of randomness in a key's public id.
const ID_BYTES: usize = 8;
/// Bytes of randomness in a key's secret.
const SECRET_BYTES: usize = 32;

/// An API key. `Debug` shows only its public id; [`ApiKey::reveal`] gives the whole text, once,
/// to the operator who created it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    id: String,
    secret: [u8; SECRET_BYTES],
}

/// The SHA-256 of a key's secret: what the registry stores.
pub type KeyHash = [u8; 32];

impl ApiKey {
    /// What every key starts with.
    pub const PREFIX: &'static str = "bo_";

    /// A new key from the operating system's random source.
    pub fn generate() -> Self {
        let mut id = [0u8; ID_BYTES];
        let mut secret = [0u8; SECRET_BYTES];
        rand::rngs::OsRng.fill_bytes(&mut id);
        rand::rngs::OsRng.fill_bytes(&mut secret);
        ApiKey {
            id: hex(&id),
            secret,
        }
    }

    /// Reads `bo_<16 hex>_<64 hex>`; anything else is no key.
    pub fn parse(text: &str) -> Option<Self> {
        let rest = text.strip_prefix(Self::PREFIX)?;
        let (id, secret) = rest.split_once('_')?;
        let is_hex = |s: &str, bytes: usize| {
            s.len() == bytes * 2 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
        };
        if !is_hex(id, ID_BYTES) || !is_hex(secret, SECRET_BYTES) {
            return None;
        }
        let mut bytes = [0u8; SECRET_BYTES];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&secret[2 * i..2 * i + 2], 16).ok()?;
        }
        Some(ApiKey {
            id: id.to_owned(),
            secret: bytes,
        })
    }

    /// The public part that finds the client.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The SHA-256 of the secret part.
    pub fn hash(&self) -> KeyHash {
        Sha256::digest(self.secret).into()
    }

    /// The whole key, to hand to the client once. Never log it.
    pub fn reveal(&self) -> String {
        format!("{}{}_{}", Self::PREFIX, self.id, hex(&self.secret))
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApiKey({}{}_***)", Self::PREFIX, self.id)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
