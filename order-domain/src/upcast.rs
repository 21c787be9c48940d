//! Reading stored events of any version: upcasters (cqrs-es's `EventUpcaster`) bring an older
//! shape to the current one, then the version rule ([`EventVersion::readable_by`]) and the
//! current shape decide. Every place that reads stored or published events goes through an
//! [`EventReader`] — loading an aggregate, the log (and so the relay, the projector and
//! rebuilds), the RabbitMQ consumer — so an upcaster written once applies everywhere.

use std::sync::Arc;

use cqrs_es::persist::{EventUpcaster, SerializedEvent};

use crate::events::BuyOrderEvent;
use crate::version::{EventVersion, VersionError};

/// Why a stored event cannot be read. Reported with the event's position by whoever reads it;
/// never a panic, and never a misread.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum UnreadableEvent {
    /// Its version is malformed, newer than this reader, or older with no upcaster.
    #[error("{event_type}: {source}")]
    Version {
        /// The event's type.
        event_type: String,
        /// Why its version cannot be read.
        source: VersionError,
    },
    /// Its JSON is not the shape its version promises.
    #[error("{event_type} {event_version}: {reason}")]
    Shape {
        /// The event's type.
        event_type: String,
        /// Its version, after upcasting.
        event_version: String,
        /// What serde said.
        reason: String,
    },
}

/// Turns stored events into [`BuyOrderEvent`]s: each upcaster that applies, in order, then the
/// version rule, then the current shape. Cheap to clone (the upcasters are shared).
///
/// # Adding a version
///
/// When a change to the JSON needs one ([`crate::EventVersion`] says when), the upcaster from the
/// shape before is a cqrs-es `SemanticVersionEventUpcaster`: it rewrites every stored event
/// below its version. Here, events of a 0.9 shape without `rate_source`:
///
/// ```
/// use order_domain::cqrs_es::persist::{SemanticVersionEventUpcaster, SerializedEvent};
/// use order_domain::EventReader;
/// use serde_json::json;
///
/// let reader = EventReader::new().with_upcaster(SemanticVersionEventUpcaster::new(
///     "BuyOrderPlaced",
///     "1.0.0", // the version it upcasts to: every older one is rewritten
///     Box::new(|mut payload| {
///         payload["BuyOrderPlaced"]["rate_source"] = json!("unknown");
///         payload
///     }),
/// ));
/// let stored = json!({"BuyOrderPlaced": {
///     "order_id": "50ef6237-3159-58cc-9792-6ff67dc20d42", "client_id": "shop-1",
///     "idempotency_key": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "currency": "USD",
///     "amount": "100.00", "rate": "48478.80", "rate_quoted_at": "2026-11-26T10:15:30Z",
///     "satoshis": 206276, "placed_at": "2026-11-26T10:15:30.412345Z"}});
/// let event = SerializedEvent::new(
///     "50ef6237-3159-58cc-9792-6ff67dc20d42".into(), 1, "BuyOrder".into(),
///     "BuyOrderPlaced".into(), "0.9.0".into(), stored, json!({}),
/// );
/// assert!(EventReader::new().read(event.clone()).is_err(), "no upcaster: refused, not misread");
/// let placed = reader.read(event)?.into_placed().unwrap();
/// assert_eq!(placed.rate_source, "unknown");
/// # Ok::<(), order_domain::UnreadableEvent>(())
/// ```
///
/// Order-domain's own upcasters go in [`EventReader::new`], so every reader has them; one of
/// an application's own (for history imported from elsewhere) goes to the store
/// (`PgEventStore::with_upcaster`) and the consumer (`event_bus::message::decode_with`).
#[derive(Clone, Default)]
pub struct EventReader {
    upcasters: Arc<Vec<Arc<dyn EventUpcaster>>>,
}

impl std::fmt::Debug for EventReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EventReader")
            .field("upcasters", &self.upcasters.len())
            .finish()
    }
}

impl EventReader {
    /// A reader with this crate's own upcasters: one per past shape of its events (none yet:
    /// every `BuyOrderPlaced` ever written is 1.0.0).
    pub fn new() -> Self {
        EventReader::default()
    }

    /// This reader with `upcaster` applied after the ones it has: for events of a shape this
    /// crate never wrote (history imported from another system, say), or to test the path.
    pub fn with_upcaster(self, upcaster: impl EventUpcaster + 'static) -> Self {
        let mut upcasters = self.upcasters.as_ref().clone();
        upcasters.push(Arc::new(upcaster));
        EventReader {
            upcasters: Arc::new(upcasters),
        }
    }

    /// `event` brought to the current version: every upcaster that applies, in order, then
    /// the version checked (readable by [`BuyOrderEvent::VERSION`]). Its payload is not read.
    pub fn upcast(&self, mut event: SerializedEvent) -> Result<SerializedEvent, UnreadableEvent> {
        for upcaster in self.upcasters.iter() {
            if upcaster.can_upcast(&event.event_type, &event.event_version) {
                event = upcaster.upcast(event);
            }
        }
        EventVersion::parse(&event.event_version)
            .and_then(|version| version.readable_by(BuyOrderEvent::VERSION))
            .map_err(|source| UnreadableEvent::Version {
                event_type: event.event_type.clone(),
                source,
            })?;
        Ok(event)
    }

    /// `event` upcast ([`EventReader::upcast`]) and read in the current shape.
    pub fn read(&self, event: SerializedEvent) -> Result<BuyOrderEvent, UnreadableEvent> {
        let event = self.upcast(event)?;
        serde_json::from_value(event.payload).map_err(|e| UnreadableEvent::Shape {
            event_type: event.event_type,
            event_version: event.event_version,
            reason: e.to_string(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::persist::SemanticVersionEventUpcaster;
    use serde_json::json;

    fn stored(version: &str, payload: serde_json::Value) -> SerializedEvent {
        SerializedEvent::new(
            "id".into(),
            1,
            "BuyOrder".into(),
            "BuyOrderPlaced".into(),
            version.into(),
            payload,
            json!({}),
        )
    }

    fn current() -> serde_json::Value {
        json!({"BuyOrderPlaced": {
            "order_id": "50ef6237-3159-58cc-9792-6ff67dc20d42", "client_id": "shop-1",
            "idempotency_key": "3f2504e0-4f89-11d3-9a0c-0305e82c3301", "currency": "USD",
            "amount": "100.00", "rate": "48478.80", "rate_source": "coinbase",
            "rate_quoted_at": "2026-11-26T10:15:30.250Z", "satoshis": 206276,
            "placed_at": "2026-11-26T10:15:30.412345Z"}})
    }

    /// A 0.9.0 shape without `rate_source` (never written by this crate), and its upcaster.
    fn without_source() -> (serde_json::Value, SemanticVersionEventUpcaster) {
        let mut old = current();
        old["BuyOrderPlaced"]
            .as_object_mut()
            .unwrap()
            .remove("rate_source");
        let upcaster = SemanticVersionEventUpcaster::new(
            "BuyOrderPlaced",
            "1.0.0",
            Box::new(|mut payload| {
                payload["BuyOrderPlaced"]["rate_source"] = json!("unknown");
                payload
            }),
        );
        (old, upcaster)
    }

    #[test]
    fn current_and_legacy_spellings_read_as_they_are() {
        let reader = EventReader::new();
        for version in ["1.0", "1.0.0", "1.3.1"] {
            let event = reader.read(stored(version, current())).unwrap();
            assert_eq!(event.as_placed().unwrap().rate_source, "coinbase");
        }
    }

    #[test]
    fn an_older_shape_is_upcast_and_without_its_upcaster_refused() {
        let (old, upcaster) = without_source();
        let refused = EventReader::new()
            .read(stored("0.9.0", old.clone()))
            .unwrap_err();
        assert!(
            refused.to_string().contains("0.9.0 has no upcaster"),
            "{refused}"
        );
        let reader = EventReader::new().with_upcaster(upcaster);
        let event = reader.read(stored("0.9.0", old)).unwrap();
        assert_eq!(event.as_placed().unwrap().rate_source, "unknown");
    }

    #[test]
    fn a_newer_major_or_a_broken_shape_is_refused_with_the_reason() {
        let reader = EventReader::new();
        let newer = reader.read(stored("2.0.0", current())).unwrap_err();
        assert!(matches!(
            newer,
            UnreadableEvent::Version {
                source: VersionError::Newer { .. },
                ..
            }
        ));
        let mut broken = current();
        broken["BuyOrderPlaced"]["satoshis"] = json!("many");
        let shape = reader.read(stored("1.0.0", broken)).unwrap_err();
        assert!(
            shape.to_string().starts_with("BuyOrderPlaced 1.0.0: "),
            "{shape}"
        );
    }
}
