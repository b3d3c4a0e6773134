//! Rebuilds the crate when a migration changes: `sqlx::migrate!` embeds `migrations/` in
//! `db::MIGRATOR` at compile time, and cargo would not otherwise know to look there.

fn main() {
    println!("cargo:rerun-if-changed=../migrations");
}
