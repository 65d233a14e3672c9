//! Placeholder until the policies bench lands.
fn main() {}
