//! The protocol-neutral record: what every input (LogHog frames, syslog,
//! HTTP; a broker later) turns one message into, and all the router
//! needs to route, verify and format it. Syslog's extra header fields ride
//! along in [`SyslogMeta`], and the syslog facility and severity names live
//! here so the config and the router share one table.
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
    /// The syslog header (`None` for LogHog messages): routing by tag and
    /// facility, severity filtering, and the rfc3164/rfc5424 line formats.
    pub(crate) syslog: Option<&'a SyslogMeta<'a>>,
}

/// What a syslog message carries besides its host and body.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct SyslogMeta<'a> {
    /// Facility code, 0 (kern) to 23 (local7); see [`FACILITY_NAMES`].
    pub(crate) facility: u8,
    /// Severity, 0 (emerg) to 7 (debug); see [`SEVERITY_NAMES`].
    pub(crate) severity: u8,
    /// The sender's timestamp, with its offset (a missing year or zone
    /// already filled in from the receiver's clock and `TZ`).
    pub(crate) timestamp: Option<chrono::DateTime<chrono::FixedOffset>>,
    /// RFC 5424 APP-NAME or the RFC 3164 tag.
    pub(crate) app_name: Option<&'a str>,
    /// RFC 5424 PROCID or the `[pid]` of an RFC 3164 tag.
    pub(crate) procid: Option<&'a str>,
    /// RFC 5424 MSGID.
    pub(crate) msgid: Option<&'a str>,
    /// The structured data, re-serialized (escapes kept); `""` for none.
    pub(crate) structured_data: &'a str,
    /// The sending process, as the kernel reported it (local socket only).
    pub(crate) cred: Option<Credentials>,
}

/// A local sender's identity from `SO_PASSCRED` (the kernel vouches for it,
/// unlike the pid a message claims).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Credentials {
    /// Process id.
    pub(crate) pid: i32,
    /// User id.
    pub(crate) uid: u32,
    /// Group id.
    pub(crate) gid: u32,
}

/// Syslog facility names by code (RFC 5424 §6.2.1; the names rsyslog and
/// `logger -p` use, `audit`/`alert`/`clockd` for 13-15).
pub(crate) const FACILITY_NAMES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "authpriv",
    "ftp", "ntp", "audit", "alert", "clockd", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// Syslog severity names by code, most severe first.
pub(crate) const SEVERITY_NAMES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The code of a facility name (case-insensitive; `security` is `auth`, as
/// in syslog.conf).
pub(crate) fn facility_code(name: &str) -> Option<u8> {
    let name = name.to_ascii_lowercase();
    if name == "security" {
        return Some(4);
    }
    FACILITY_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
}

/// The code of a severity name (case-insensitive; also the aliases
/// syslog.conf accepts: `panic`, `error`, `warn`).
pub(crate) fn severity_code(name: &str) -> Option<u8> {
    let name = name.to_ascii_lowercase();
    let name = match name.as_str() {
        "panic" => "emerg",
        "error" => "err",
        "warn" => "warning",
        other => other,
    };
    SEVERITY_NAMES
        .iter()
        .position(|n| *n == name)
        .map(|i| i as u8)
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
    /// An HTTP request: the `X-Loghog-Signature` header, HMAC-SHA256 over
    /// the exact request body, was checked by the HTTP input against this
    /// record's facility before routing (the body holds many records, so
    /// the router cannot check it per record).
    Http {
        /// Whether the header matched the facility's secret.
        verified: bool,
    },
    /// A format without a signature (syslog): never accepted by a
    /// facility that has a `secret`.
    None,
    /// Relayed through the broker: the edge checked the signature against
    /// its own facilities before forwarding, and the broker connection is
    /// authenticated, so the writer accepts the record as checked.
    Forwarded,
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
    /// Syslog datagrams (RFC 5426).
    SyslogUdp,
    /// Syslog over TCP (RFC 6587).
    SyslogTcp,
    /// Syslog over TLS (RFC 5425).
    SyslogTls,
    /// Syslog on the local datagram socket (`/dev/log`).
    SyslogUnix,
    /// HTTP POST ingest (`/v1/logs`, `/backend/save/`).
    Http,
    /// Records relayed by an edge through the broker (issue 16).
    Broker,
}

impl Transport {
    /// Lowercase name.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Tls => "tls",
            Transport::SyslogUdp => "syslog-udp",
            Transport::SyslogTcp => "syslog-tcp",
            Transport::SyslogTls => "syslog-tls",
            Transport::SyslogUnix => "syslog-unix",
            Transport::Http => "http",
            Transport::Broker => "broker",
        }
    }

    /// Whether one read is one message (no stream to close).
    pub(crate) fn is_datagram(self) -> bool {
        matches!(
            self,
            Transport::Udp | Transport::SyslogUdp | Transport::SyslogUnix
        )
    }
}
