//! The protocol-neutral record: what every input (LogHog frames today;
//! syslog, HTTP and a broker later) turns one message into, and all the
//! router needs to route, verify and format it.
//!
//! A record borrows from the input's buffers: building one allocates nothing.

/// One message, as the router sees it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Record<'a> {
    /// Selects the application in facilities.conf.
    pub(crate) app_id: &'a str,
    /// The module path as sent (`""`, `root`, `root.web` and `web` alike);
    /// the router normalizes it, the signature covers it as sent.
    pub(crate) module: &'a str,
    /// The sender's own name for itself; `None` means "use the peer address".
    pub(crate) host: Option<&'a str>,
    /// The formatted log line; may hold newlines.
    pub(crate) body: &'a str,
    /// What the facility's `secret` is checked against.
    pub(crate) auth: Auth<'a>,
}

/// The verification material a wire format carries, if any.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Auth<'a> {
    /// A LogHog message: HMAC-MD5 over app, module, stamp, nsecs and body
    /// (SPEC §3). `signature` is `None` when the client sent none.
    LogHog {
        /// The client's UNIX time, seconds (signed, not used for the line).
        stamp: i64,
        /// The client's sub-second part, nanoseconds.
        nsecs: i64,
        /// Lowercase hex, as sent.
        signature: Option<&'a str>,
    },
}

/// Which kind of listener a reader belongs to, for logs and counters.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Transport {
    /// LogHog over plain TCP.
    Tcp,
    /// LogHog datagrams.
    Udp,
    /// LogHog over mutual TLS.
    Tls,
}

impl Transport {
    /// Lowercase name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Tls => "tls",
        }
    }
}
