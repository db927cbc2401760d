//! Client library for loghogd.
//!
//! Today it holds the client side of TLS ([`tls`], feature `tls`), shared by
//! the load generator; the client proper (`Client`, `log` and `tracing`
//! integrations, `loghog-send`) is built on `loghog-protocol` beside it.

#[cfg(feature = "cli")]
pub mod follow;
#[cfg(feature = "tls")]
pub mod tls;
