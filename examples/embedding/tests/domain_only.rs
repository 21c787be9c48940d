//! order-domain with its default features, in an application of its own.

use std::process::Command;
use std::sync::Arc;

use embedding_example::FixedPrice;
use order_domain::cqrs_es::mem_store::MemStore;
use order_domain::cqrs_es::{CqrsFramework, EventStore};
use order_domain::*;

/// The application's own JSON works as with a plain serde_json: the cases that broke while
/// order-domain turned on `serde_json/arbitrary_precision` for the whole application.
#[test]
fn the_application_s_own_f64_json_still_works() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(tag = "kind")]
    enum Reading {
        Temperature { celsius: f64 },
    }
    let reading: Reading =
        serde_json::from_str(r#"{"kind":"Temperature","celsius":21.5}"#).unwrap();
    assert_eq!(reading, Reading::Temperature { celsius: 21.5 });

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Amount {
        Float(f64),
        Text(String),
    }
    let amount: Amount = serde_json::from_str("2.5").unwrap();
    assert_eq!(amount, Amount::Float(2.5));

    let parsed: serde_json::Value = serde_json::from_str("1.10").unwrap();
    assert_eq!(parsed, serde_json::json!(1.1), "numbers compare by value");
}

/// The application's own request, with money as a JSON number next to its own floats: the
/// amount read exactly (never through f64), the floats as ever.
#[test]
fn money_in_our_own_json_is_read_exactly_next_to_our_floats() {
    #[derive(serde::Deserialize)]
    struct Checkout {
        #[serde(deserialize_with = "order_domain::exact_json::fiat_amount")]
        amount: order_domain::FiatAmount,
        discount: f64,
    }
    // The amount is parsed from its text as written; the discount is an f64 as before.
    let checkout: Checkout =
        serde_json::from_str(r#"{"amount": 999999999.99, "discount": 0.1}"#).unwrap();
    assert_eq!(
        checkout.amount,
        order_domain::FiatAmount::parse("999999999.99").unwrap()
    );
    assert_eq!(checkout.discount, 0.1);
    let too_precise = serde_json::from_str::<Checkout>(r#"{"amount": 0.001, "discount": 0}"#);
    assert!(too_precise.is_err());
}

/// What `cargo tree` says this application depends on, with its default features.
fn tree(args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "--manifest-path",
            concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.toml"),
        ])
        .args(["--edges", "normal", "--prefix", "none", "--offline"])
        .args(args)
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn cargo_tree_shows_no_postgres_crate_and_no_arbitrary_precision() {
    let crates = tree(&[]);
    assert!(crates.contains("order-domain"), "{crates}");
    for absent in [
        "order-store",
        "sqlx",
        "postgres",
        "md5",
        "hmac",
        "sha2",
        "clap",
        "utoipa",
    ] {
        assert!(
            !crates.lines().any(|line| line.starts_with(absent)),
            "{absent} is built for order-domain alone:\n{crates}"
        );
    }
    let features = tree(&["--edges", "features", "--invert", "serde_json"]);
    assert!(features.contains("serde_json"), "{features}");
    assert!(
        !features.contains("arbitrary_precision"),
        "serde_json/arbitrary_precision is on:\n{features}"
    );
}

fn order(amount: &str) -> PlaceBuyOrder {
    PlaceBuyOrder {
        client_id: ClientId::parse("shop-1").unwrap(),
        idempotency_key: IdempotencyKey::from_uuid(order_domain::uuid::Uuid::new_v4()),
        currency: Currency::EUR,
        amount: FiatAmount::parse(amount).unwrap(),
    }
}

/// An order on cqrs-es's own `MemStore`, and its idempotent replay. (The cap across orders is
/// order-domain's `BtcLedger`; its docs give the recipe for wrapping any event store.)
#[tokio::test]
async fn orders_are_placed_in_memory_on_the_stock_framework() {
    let store = MemStore::<BuyOrder>::default();
    let cqrs = CqrsFramework::new(
        store.clone(),
        vec![],
        BuyOrderServices::new(Arc::new(FixedPrice)),
    );
    let place = order("33.33");
    let id = place.order_id().to_string();
    cqrs.execute(&id, place.clone().into()).await.unwrap();
    let events = store.load_events(&id).await.unwrap();
    let placed = events[0].payload.as_placed().expect("a placed order");
    assert_eq!(
        placed.satoshis,
        Satoshis::new(33_330_000),
        "33.33 / 100 BTC"
    );
    assert_eq!(placed.currency, Currency::EUR);

    // The same key lands on the same aggregate, which is placed already: nothing new.
    cqrs.execute(&id, place.into()).await.unwrap();
    assert_eq!(store.load_events(&id).await.unwrap().len(), 1);
}
