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

/// With PostgreSQL (its default), order-store is a library: no CLI crate. Settings are built in
/// code; only the `cli` feature, which the binaries turn on, reads them with clap.
#[test]
fn with_postgres_order_store_brings_no_cli_crate() {
    let tree = tree("order-store", &["-e", "normal"]);
    assert!(tree.contains("sqlx "), "{tree}");
    for name in ["clap ", "clap_builder ", "clap_derive "] {
        assert!(
            !tree.contains(name),
            "order-store with postgres brings {name}:\n{tree}"
        );
    }
}

/// order-store knows nothing of API keys (they are `api-keys`'): no hashing, constant-time
/// comparison or key generation among its own dependencies, and no HTTP header in its code.
#[test]
fn order_store_holds_no_authentication() {
    let direct = tree("order-store", &["-e", "normal", "--depth", "1"]);
    for name in ["sha2 ", "subtle ", "rand "] {
        assert!(
            !direct.contains(name),
            "order-store depends on {name}:\n{direct}"
        );
    }
    let sources = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut stack = vec![sources];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                for word in ["Authorization", "X-Client-Id", "ApiKey", "KeyDirectory"] {
                    assert!(!text.contains(word), "{} mentions {word}", path.display());
                }
            }
        }
    }
}
