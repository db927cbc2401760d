//! The LogHog wire protocol, version 1, shared by the daemon and every client.
//!
//! - [`frame`]: the 8-byte header (`len: u32 BE`, `flags: u32 BE`), checked
//!   before anything is allocated, and zlib payloads inflated under a cap.
//! - [`message`]: the JSON object a frame carries, decoded by a fast path for
//!   the flat messages clients send and by serde_json for everything else.
//! - [`sign`]: HMAC-MD5 signing and constant-time verification (SPEC §3).
//! - `tls` (feature `tls`): PEM/DER loading and certificate diagnostics for
//!   both ends of a mutual-TLS connection.
//!
//! The crate does no I/O besides reading PEM files, so the daemon, the Rust
//! client and the load generator agree byte for byte.

pub mod frame;
pub mod message;
pub mod sign;
#[cfg(feature = "tls")]
pub mod tls;

pub use frame::{FrameError, Header, Inflater, FLAG_ZLIB, HEADER_LEN};
pub use message::{normalize_module, Message, MessageError, VERSION};
pub use sign::{AuthError, Key, Signed};
