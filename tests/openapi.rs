//! The OpenAPI documents in the repository (`openapi/`) are exactly what the code generates,
//! so they cannot drift. `UPDATE_OPENAPI=1 cargo test --test openapi` rewrites them.

use std::path::Path;

fn check(file: &str, generated: serde_json::Value) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("openapi")
        .join(file);
    let text = serde_json::to_string_pretty(&generated).unwrap() + "\n";
    if std::env::var_os("UPDATE_OPENAPI").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "{} differs from what the code generates; run UPDATE_OPENAPI=1 cargo test --test openapi",
        path.display()
    );
    assert_eq!(
        generated["openapi"].as_str().unwrap().chars().next(),
        Some('3'),
        "OpenAPI 3"
    );
}

#[test]
fn the_write_api_document_is_current() {
    check("api-write.json", api_write::openapi::document());
}

#[test]
fn the_read_api_document_is_current() {
    check("api-read.json", api_read::openapi::document());
}

/// Every operation on `/docs` says what it is: a summary of its own, never a placeholder.
#[test]
fn every_operation_has_a_summary() {
    for document in [
        api_write::openapi::document(),
        api_read::openapi::document(),
    ] {
        for (path, operations) in document["paths"].as_object().unwrap() {
            for (method, operation) in operations.as_object().unwrap() {
                let summary = operation["summary"].as_str().unwrap_or_default();
                assert!(
                    !summary.is_empty() && !summary.contains("as documented"),
                    "{method} {path}: summary {summary:?}"
                );
            }
        }
    }
}
