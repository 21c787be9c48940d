//! What a crate gets from depending on the libraries, read with `cargo tree` as a downstream
//! crate would resolve them (only the named package's requests, not the workspace's).

use std::process::Command;

/// `cargo tree -p package <args>`: one line per package (and feature, with `-e features`).
fn tree(package: &str, args: &[&str]) -> String {
    let output = Command::new(env!("CARGO"))
        .args(["tree", "-p", package, "--prefix", "none", "--offline"])
        .args(args)
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

fn assert_none_of(tree: &str, banned: &[&str], who: &str) {
    for name in banned {
        assert!(!tree.contains(name), "{who} brings {name}:\n{tree}");
    }
    assert!(tree.contains("cqrs-es "), "{tree}");
}

/// order-domain promises no I/O and must not change the JSON of the application embedding it.
#[test]
fn order_domain_pulls_no_database_and_no_global_json_feature() {
    let tree = tree("order-domain", &["-e", "normal,features"]);
    let banned = [
        "arbitrary_precision",
        "serde-with-arbitrary-precision",
        "db-tokio-postgres",
        "postgres-protocol",
        "tokio-postgres",
        "sqlx",
        "md5",
        "hmac",
    ];
    assert_none_of(&tree, &banned, "order-domain");
}

/// Without its default features, order-store is the interfaces, the in-memory backend and the
/// writer: no PostgreSQL, CLI or OpenAPI crates.
#[test]
fn without_default_features_order_store_is_in_memory_only() {
    let tree = tree("order-store", &["--no-default-features", "-e", "normal"]);
    let banned = [
        "sqlx ",
        "tokio-postgres ",
        "deadpool-postgres ",
        "postgres-es ",
        "postgres-protocol ",
        "clap ",
        "utoipa ",
    ];
    assert_none_of(&tree, &banned, "order-store");
}
