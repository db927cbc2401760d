//! The `loghogd` binary: parse flags, run the daemon, map errors to exit codes.
fn main() {}
