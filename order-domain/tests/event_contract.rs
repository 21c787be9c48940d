//! The event contract (`docs/events.md`), pinned: the serialized form of every field of every
//! event, and the version rule. A failure here means the contract changed: change the document
//! and the version with it (the rule is in the document), then the golden text here.

use chrono::{DateTime, Utc};
use order_domain::cqrs_es::DomainEvent;
use order_domain::*;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .unwrap()
        .with_timezone(&Utc)
}

fn placed() -> BuyOrderPlaced {
    let client_id = ClientId::parse("shop-1").unwrap();
    let idempotency_key = IdempotencyKey::parse("3f2504e0-4f89-11d3-9a0c-0305e82c3301").unwrap();
    BuyOrderPlaced {
        order_id: OrderId::derive(&client_id, &idempotency_key),
        client_id,
        idempotency_key,
        currency: Currency::USD,
        amount: FiatAmount::parse("100").unwrap(),
        rate: BtcRate::parse("48478.80").unwrap(),
        rate_source: "coinbase".into(),
        rate_quoted_at: at("2026-11-26T10:15:30.250Z"),
        satoshis: Satoshis::new(206_276),
        placed_at: at("2026-11-26T10:15:30.412345Z"),
    }
}

/// Every field, in order, exactly as stored, published and documented (the order id pins
/// `OrderId::derive` too: the id of a client's key never changes).
const GOLDEN: &str = concat!(
    r#"{"BuyOrderPlaced":{"#,
    r#""order_id":"50ef6237-3159-58cc-9792-6ff67dc20d42","#,
    r#""client_id":"shop-1","#,
    r#""idempotency_key":"3f2504e0-4f89-11d3-9a0c-0305e82c3301","#,
    r#""currency":"USD","#,
    r#""amount":"100.00","#,
    r#""rate":"48478.80","#,
    r#""rate_source":"coinbase","#,
    r#""rate_quoted_at":"2026-11-26T10:15:30.250Z","#,
    r#""satoshis":206276,"#,
    r#""placed_at":"2026-11-26T10:15:30.412345Z""#,
    r#"}}"#
);

#[test]
fn buy_order_placed_serializes_exactly_as_documented() {
    let event = BuyOrderEvent::BuyOrderPlaced(placed());
    let json = serde_json::to_string(&event).unwrap();
    assert_eq!(json, GOLDEN);
    assert_eq!(
        serde_json::from_str::<BuyOrderEvent>(GOLDEN).unwrap(),
        event
    );
    assert_eq!(event.event_type(), "BuyOrderPlaced");
    assert_eq!(event.event_version(), "1.0.0");
}

#[test]
fn every_field_keeps_its_form_at_its_extremes() {
    let mut extreme = placed();
    extreme.currency = Currency::GBP;
    extreme.amount = FiatAmount::parse("999999999.99").unwrap();
    extreme.rate = BtcRate::parse("0.00000001").unwrap();
    extreme.satoshis = Satoshis::new(2_100_000_000_000_000);
    extreme.rate_quoted_at = at("2026-11-26T10:15:30Z");
    extreme.placed_at = at("2026-11-26T10:15:30.000001Z");
    let json = serde_json::to_value(BuyOrderEvent::BuyOrderPlaced(extreme)).unwrap();
    let fields = &json["BuyOrderPlaced"];
    assert_eq!(fields["currency"], "GBP");
    assert_eq!(fields["amount"], "999999999.99");
    assert_eq!(fields["rate"], "0.00000001", "never in exponent form");
    assert_eq!(fields["satoshis"], 2_100_000_000_000_000_u64);
    assert_eq!(fields["rate_quoted_at"], "2026-11-26T10:15:30Z");
    assert_eq!(fields["placed_at"], "2026-11-26T10:15:30.000001Z");
    assert_eq!(
        fields.as_object().unwrap().len(),
        10,
        "ten fields, none null"
    );
}

#[test]
fn versions_are_semantic_and_the_legacy_spelling_is_the_first() {
    assert_eq!(EventVersion::parse("1.0"), Ok(EventVersion::new(1, 0, 0)));
    assert_eq!(EventVersion::parse("1.2.3"), Ok(EventVersion::new(1, 2, 3)));
    assert_eq!(EventVersion::new(1, 12, 0).to_string(), "1.12.0");
    for bad in [
        "",
        "1",
        "2.0",
        "1.0.0.0",
        "01.0.0",
        "1.-1.0",
        "+1.0.0",
        "1.0.x",
        "1..0",
        " 1.0.0",
        "99999999999.0.0",
    ] {
        assert!(
            matches!(EventVersion::parse(bad), Err(VersionError::Malformed(_))),
            "{bad:?} accepted"
        );
    }
    let long = "9".repeat(5000);
    let err = EventVersion::parse(&long).unwrap_err().to_string();
    assert!(
        err.len() < 200,
        "the message does not echo thousands of digits"
    );
}

#[test]
fn a_reader_reads_its_major_and_refuses_a_newer_one() {
    let known = BuyOrderEvent::VERSION;
    assert_eq!(known, EventVersion::new(1, 0, 0));
    assert_eq!(EventVersion::new(1, 0, 0).readable_by(known), Ok(()));
    assert_eq!(
        EventVersion::new(1, 7, 2).readable_by(known),
        Ok(()),
        "a newer minor only adds fields, which are ignored"
    );
    assert!(matches!(
        EventVersion::new(2, 0, 0).readable_by(known),
        Err(VersionError::Newer { .. })
    ));
    assert!(matches!(
        EventVersion::new(0, 9, 0).readable_by(known),
        Err(VersionError::NoUpcaster { .. })
    ));
    // A newer minor's extra field is ignored on read, as the rule says.
    let newer_minor = GOLDEN.replace(r#""satoshis""#, r#""fee_sats":12,"satoshis""#);
    assert_eq!(
        serde_json::from_str::<BuyOrderEvent>(&newer_minor).unwrap(),
        BuyOrderEvent::BuyOrderPlaced(placed())
    );
}
