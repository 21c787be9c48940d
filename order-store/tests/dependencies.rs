//! What a crate gets from `order-store` without its default features: the interfaces, the
//! in-memory backend and the writer, and no PostgreSQL, CLI or OpenAPI crates.

use std::process::Command;

#[test]
fn without_default_features_order_store_is_in_memory_only() {
    let output = Command::new(env!("CARGO"))
        .args([
            "tree",
            "-p",
            "order-store",
            "--no-default-features",
            "-e",
            "normal",
        ])
        .args(["--prefix", "none", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("cargo runs");
    assert!(
        output.status.success(),
        "cargo tree failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let tree = String::from_utf8(output.stdout).expect("UTF-8");
    for banned in [
        "sqlx ",
        "tokio-postgres ",
        "deadpool-postgres ",
        "postgres-es ",
        "postgres-protocol ",
        "clap ",
        "utoipa ",
    ] {
        assert!(
            !tree.contains(banned),
            "order-store brings {banned}:\n{tree}"
        );
    }
    assert!(tree.contains("cqrs-es "), "{tree}");
}
