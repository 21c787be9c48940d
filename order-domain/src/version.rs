//! The semantic version of an event type's JSON (`event_version`), and the rule by which a
//! reader decides whether it can read an event ([`EventVersion`] has the rule).

use std::fmt;

/// `MAJOR.MINOR.PATCH` of an event type's JSON. A reader reads every version of the major it
/// knows (fields it does not know are ignored) and refuses a newer major, so a changed shape is
/// never read into the old one with what changed dropped.
///
/// | change to an event type's JSON | bump |
/// |---|---|
/// | none (documentation, a field's description made precise) | PATCH |
/// | a field **added**, which a reader of the previous version may ignore | MINOR |
/// | a field removed, renamed or retyped, a value's meaning or format changed | MAJOR |
///
/// Events are never rewritten in a store: a change that old events cannot be read into ships
/// with an upcaster from the shape before ([`crate::EventReader`] shows one). `1.0`, the
/// spelling written before versions were semantic, is read as `1.0.0`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventVersion {
    major: u32,
    minor: u32,
    patch: u32,
}

/// Why an event's version cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VersionError {
    /// Not `MAJOR.MINOR.PATCH` (nor the legacy `1.0`).
    #[error("event_version must be MAJOR.MINOR.PATCH such as 1.0.0 (got {0:?})")]
    Malformed(String),
    /// Written by a newer major than this reader knows: reading it into the old shape would
    /// drop or misread what changed.
    #[error("event_version {found} is newer than {known}, the newest this reader knows; upgrade the reader")]
    Newer {
        /// The event's version.
        found: EventVersion,
        /// The newest this reader knows.
        known: EventVersion,
    },
    /// An older major that no upcaster turns into the current one.
    #[error("event_version {found} has no upcaster to {known}")]
    NoUpcaster {
        /// The event's version.
        found: EventVersion,
        /// The version this reader reads.
        known: EventVersion,
    },
}

impl EventVersion {
    /// A version.
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        EventVersion {
            major,
            minor,
            patch,
        }
    }

    /// Parses `MAJOR.MINOR.PATCH`: decimal numbers without sign or leading zeros, as semver
    /// writes them. `1.0`, the spelling written before versions were semantic, is `1.0.0`.
    pub fn parse(text: &str) -> Result<Self, VersionError> {
        if text == "1.0" {
            return Ok(EventVersion::new(1, 0, 0));
        }
        let malformed = || VersionError::Malformed(text.chars().take(32).collect());
        let number = |part: &str| -> Result<u32, VersionError> {
            let digits = !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit());
            let no_leading_zero = part == "0" || !part.starts_with('0');
            if !(digits && no_leading_zero) {
                return Err(malformed());
            }
            part.parse().map_err(|_| malformed())
        };
        let mut parts = text.split('.');
        let (Some(major), Some(minor), Some(patch), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(malformed());
        };
        Ok(EventVersion::new(
            number(major)?,
            number(minor)?,
            number(patch)?,
        ))
    }

    /// Whether a reader of `known` can read an event of this version as it is: the same major.
    pub fn readable_by(self, known: EventVersion) -> Result<(), VersionError> {
        match self.major.cmp(&known.major) {
            std::cmp::Ordering::Equal => Ok(()),
            std::cmp::Ordering::Greater => Err(VersionError::Newer { found: self, known }),
            std::cmp::Ordering::Less => Err(VersionError::NoUpcaster { found: self, known }),
        }
    }
}

impl fmt::Display for EventVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}
