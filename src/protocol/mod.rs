//! The LogHog wire protocol, version 1 (SPEC §1): the 8-byte frame header
//! ([`frame`]) and the JSON message it carries ([`message`]).
//!
//! Shared by the daemon's readers and by the client side (load generator,
//! client library), so both agree byte for byte.

pub mod fast;
pub mod frame;
pub mod message;

pub use frame::{FrameError, Header, FLAG_ZLIB, HEADER_LEN};
pub use message::{Message, MessageError};
