//! Rebuilds the crate when a migration is added or changed: `sqlx::migrate!` embeds the SQL files
//! at compile time, and cargo does not otherwise notice a new file in `migrations/`.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
