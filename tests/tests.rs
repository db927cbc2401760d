//! The integration tests: one binary (as in ripgrep), modules under `tests/it/`.
//!
//! Every test starts the real `loghogd` binary on ephemeral ports in its own
//! temp dir and talks to it through real sockets.

#[path = "it/util.rs"]
mod util;

#[path = "it/core.rs"]
mod core;

#[path = "it/compat.rs"]
mod compat;

#[path = "it/ownlog.rs"]
mod ownlog;

#[path = "it/tls.rs"]
mod tls;

#[path = "it/rotation.rs"]
mod rotation;

#[path = "it/client.rs"]
mod client;
