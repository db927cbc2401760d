//! [`Error`]: what building a client, connecting to the daemon or waiting
//! for a flush can fail with. Written by hand (no thiserror) so the default
//! dependency tree stays small; `Clone`, because the worker keeps the last
//! connection error and hands copies to whoever asks.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

/// Why a [`Client`](crate::Client) could not be built, could not reach the
/// daemon, or could not deliver what was queued.
///
/// ```
/// let err = loghog::Client::builder("my-app").address("no port").build().unwrap_err();
/// assert!(err.to_string().contains("no port"));
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Error {
    /// The builder was given something unusable (an address without a port,
    /// TLS over UDP, ...).
    Config(String),
    /// The TLS files could not be loaded (feature `tls`).
    #[cfg(feature = "tls")]
    TlsFiles(Arc<loghog_protocol::tls::TlsError>),
    /// The daemon's host name did not resolve.
    Resolve {
        /// The address as given to [`Builder::address`](crate::Builder::address).
        address: String,
        /// What the resolver said.
        source: Arc<io::Error>,
    },
    /// No connection could be made (refused, unreachable, timed out).
    Connect {
        /// The resolved address that was tried last.
        address: SocketAddr,
        /// What the operating system said.
        source: Arc<io::Error>,
    },
    /// The TLS handshake failed: the daemon's certificate was not accepted,
    /// or the daemon refused ours.
    Tls {
        /// The daemon's address.
        address: SocketAddr,
        /// What rustls or the daemon said.
        reason: String,
    },
    /// A write to an established connection failed, or the daemon closed it.
    Write {
        /// The daemon's address.
        address: SocketAddr,
        /// What the operating system said.
        source: Arc<io::Error>,
    },
    /// [`Client::flush`](crate::Client::flush) ran out of time.
    Timeout {
        /// Messages that were still waiting or being written.
        unsent: usize,
        /// The last connection error, if the worker has one.
        cause: Option<Box<Error>>,
    },
    /// Messages that a flush waited for were dropped instead of written
    /// (the buffer overflowed, they were too large, or the client gave up
    /// after [`Builder::give_up_after`](crate::Builder::give_up_after)).
    Dropped {
        /// The last connection error, if the worker has one.
        cause: Option<Box<Error>>,
    },
    /// The background thread could not be started.
    Spawn(Arc<io::Error>),
}

// === impl Error ===

impl Error {
    /// The connection error behind a [`Error::Timeout`] or
    /// [`Error::Dropped`], else the error itself: what a command-line tool
    /// prints as its one line.
    pub fn cause(&self) -> &Error {
        match self {
            Error::Timeout { cause: Some(c), .. } | Error::Dropped { cause: Some(c) } => c,
            other => other,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Config(why) => write!(f, "invalid client configuration: {why}"),
            #[cfg(feature = "tls")]
            Error::TlsFiles(e) => write!(f, "cannot load TLS files: {e}"),
            Error::Resolve { address, source } => {
                write!(f, "cannot resolve {address}: {source}")
            }
            Error::Connect { address, source } => {
                write!(f, "cannot connect to {address}: {source}")
            }
            Error::Tls { address, reason } => {
                write!(f, "TLS handshake with {address} failed: {reason}")
            }
            Error::Write { address, source } => {
                write!(f, "cannot write to {address}: {source}")
            }
            Error::Timeout { unsent, cause } => {
                write!(f, "timed out with {unsent} message(s) unsent")?;
                if let Some(c) = cause {
                    write!(f, " ({c})")?;
                }
                Ok(())
            }
            Error::Dropped { cause } => {
                f.write_str("messages were dropped before they could be written")?;
                if let Some(c) = cause {
                    write!(f, " ({c})")?;
                }
                Ok(())
            }
            Error::Spawn(e) => write!(f, "cannot start the loghog sender thread: {e}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            #[cfg(feature = "tls")]
            Error::TlsFiles(e) => Some(&**e),
            Error::Resolve { source, .. }
            | Error::Connect { source, .. }
            | Error::Write { source, .. }
            | Error::Spawn(source) => Some(&**source),
            Error::Timeout { cause: Some(c), .. } | Error::Dropped { cause: Some(c) } => Some(&**c),
            _ => None,
        }
    }
}
