//! Client library for loghogd: log from a Rust application to the daemon
//! without ever blocking on the network.
//!
//! - [`Client`] (built by [`Client::builder`]): `send(module, body)` encodes
//!   the message on the caller's thread into a bounded queue and returns; one
//!   plain background thread per client owns the connection (TCP, UDP or,
//!   with feature `tls`, mutual TLS), batches what is queued into few
//!   writes, reconnects with backoff, and drops the oldest messages (counted)
//!   when the daemon stays away. No async runtime is needed.
//! - [`Logger`] and [`init_log`] (feature `log`): the `log` facade.
//! - [`Layer`] (feature `tracing`): a `tracing_subscriber` layer.
//! - `loghog-send` (feature `cli`): the command-line sender.
//!
//! Features are additive and none is on by default: `log` alone compiles
//! neither tracing, rustls nor clap.
//!
//! ```
//! use std::time::Duration;
//! # let daemon = std::net::TcpListener::bind("127.0.0.1:0")?;
//! # let address = daemon.local_addr()?.to_string();
//! let client = loghog::Client::builder("my-app").address(&address).build()?;
//! client.send("web", "GET /index.html 200");
//! client.flush(Duration::from_secs(5))?;
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! Layout: `builder` → `client` (handles, `send`, `flush`) → `encode` (frames,
//! on the caller) → `queue` (bounds, drop-oldest, flush bookkeeping) →
//! `worker` (the thread: connect, write, backoff); `logger` and `layer` sit
//! on top of `Client`.

#![warn(missing_docs)]

mod builder;
mod client;
mod encode;
mod error;
#[cfg(feature = "cli")]
pub mod follow;
#[cfg(feature = "tracing")]
mod layer;
#[cfg(feature = "log")]
mod logger;
mod queue;
#[cfg(feature = "tls")]
pub mod tls;
mod worker;

pub use builder::{Builder, DEFAULT_MAX_MESSAGE_SIZE, DEFAULT_PORT, DEFAULT_TLS_PORT};
pub use client::Client;
pub use error::Error;
#[cfg(feature = "tracing")]
pub use layer::Layer;
#[cfg(feature = "log")]
pub use logger::{init_log, Logger};

/// A Rust module path as a loghog module: `my_app::db` → `my_app.db`.
#[cfg(any(feature = "log", feature = "tracing"))]
fn module_of(target: &str) -> std::borrow::Cow<'_, str> {
    if target.contains("::") {
        target.replace("::", ".").into()
    } else {
        target.into()
    }
}
