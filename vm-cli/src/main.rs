//! The `vm` binary.
fn main() {}
