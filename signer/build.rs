//! Rebuilds when a root-queue migration is added: `sqlx::migrate!` embeds `migrations/root/` at
//! compile time and tracks only the files that existed when it last ran.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
