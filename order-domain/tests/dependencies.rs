//! What an application gets from depending on `order-domain`: its own JSON unchanged.

// `cargo tree` of what order-domain brings is checked in order-store/tests/dependencies.rs.

/// What an application's own JSON does next to order-domain (in this workspace, where every
/// member is built with the same serde_json features): f64 fields in tagged enums deserialize,
/// and numbers compare by value, as with a plain serde_json.
#[test]
fn an_application_s_own_json_is_unchanged() {
    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(tag = "kind")]
    enum Reading {
        Temperature { celsius: f64 },
    }
    let reading: Reading = serde_json::from_str(r#"{"kind":"Temperature","celsius":21.5}"#)
        .expect("an internally tagged enum with an f64 field");
    assert_eq!(reading, Reading::Temperature { celsius: 21.5 });

    #[derive(serde::Deserialize, Debug, PartialEq)]
    #[serde(untagged)]
    enum Amount {
        Float(f64),
    }
    let amount: Amount = serde_json::from_str("2.5").expect("an untagged f64 enum");
    assert_eq!(amount, Amount::Float(2.5));

    let parsed: serde_json::Value = serde_json::from_str("1.10").unwrap();
    assert_eq!(parsed, serde_json::json!(1.1));
}
