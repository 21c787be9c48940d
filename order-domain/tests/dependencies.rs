//! What a crate that depends on `order-domain` gets: the domain promises no I/O and must not
//! change the JSON of the application that embeds it.

use std::process::Command;

/// `cargo tree` of order-domain's normal dependencies with their features, as a downstream
/// crate would resolve them (only this package's requests, not the workspace's).
fn tree() -> String {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "-p", "order-domain", "-e", "normal,features"])
        .args(["--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("UTF-8")
}

#[test]
fn order_domain_pulls_no_database_and_no_global_json_feature() {
    let tree = tree();
    for banned in [
        "arbitrary_precision",
        "serde-with-arbitrary-precision",
        "db-tokio-postgres",
        "postgres-protocol",
        "tokio-postgres",
        "sqlx",
        "md5",
        "hmac",
    ] {
        assert!(
            !tree.contains(banned),
            "order-domain brings {banned}:\n{tree}"
        );
    }
    assert!(tree.contains("cqrs-es"), "{tree}");
}

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
