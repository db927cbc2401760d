//! The `[http]` section of loghogd.conf (issue 14): the HTTP listener for
//! ingest by POST (and, mounted on the same server, metrics). Off unless
//! `listen` is set. Authentication is never optional off loopback: mutual
//! TLS (`tls = yes`, the `[server]` certificates) and/or bearer tokens
//! (`tokens_file`); anonymous access needs an explicit opt-in on loopback.
//! Also the scope names ([`Grant`]) that `cert_scopes` and the tokens file
//! share, so both are checked by one parser.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::{ConfigError, Reader};

/// The keys `[http]` knows.
pub(super) const KEYS: &[&str] = &[
    "listen",
    "default_port",
    "tls",
    "tokens_file",
    "allow_anonymous_on_loopback",
    "allow_anonymous_read",
    "cert_scopes",
    "max_body",
    "header_timeout",
    "body_timeout",
    "max_connections",
];

/// Default port of `listen` items without one.
const DEFAULT_PORT: u64 = 5580;
/// Default `max_body`: 1 MiB.
const DEFAULT_MAX_BODY: u64 = 1 << 20;
/// Largest `max_body`: the whole body is held while it is checked.
const MAX_MAX_BODY: u64 = 256 << 20;

/// One scope a credential is given: in the tokens file (after a token's
/// hash or a `cert:CN`), in `cert_scopes`, or by anonymous access.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grant {
    /// `write:*`: write messages for every application.
    WriteAll,
    /// `write:APP`.
    Write(String),
    /// `read:*`: read every application's logs (the viewer).
    ReadAll,
    /// `read:APP`.
    Read(String),
    /// `metrics`: `/metrics` and `/healthz`.
    Metrics,
}

/// What an unknown scope's error says to use instead.
pub(crate) const SCOPE_NAMES: &str = "write:APP, write:*, read:APP, read:* or metrics";

// === impl Grant ===

impl Grant {
    /// A scope by its name; `None` for anything else (including `write:`).
    pub fn parse(s: &str) -> Option<Grant> {
        match s {
            "metrics" => Some(Grant::Metrics),
            "write:*" => Some(Grant::WriteAll),
            "read:*" => Some(Grant::ReadAll),
            _ => {
                if let Some(app) = s.strip_prefix("write:").filter(|a| !a.is_empty()) {
                    Some(Grant::Write(app.to_owned()))
                } else {
                    s.strip_prefix("read:")
                        .filter(|a| !a.is_empty())
                        .map(|app| Grant::Read(app.to_owned()))
                }
            }
        }
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Grant::WriteAll => f.write_str("write:*"),
            Grant::Write(app) => write!(f, "write:{app}"),
            Grant::ReadAll => f.write_str("read:*"),
            Grant::Read(app) => write!(f, "read:{app}"),
            Grant::Metrics => f.write_str("metrics"),
        }
    }
}

/// `[http]`: the HTTP listener (none by default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpSection {
    /// Addresses to serve HTTP (or HTTPS with `tls`) on; empty = off.
    pub listen: Vec<SocketAddr>,
    /// Serve HTTPS with `[server] pemfile`; client certificates that chain
    /// to `[server] cacert` authenticate (with every scope).
    pub tls: bool,
    /// Bearer tokens, stored as SHA-256 hashes with their scopes.
    pub tokens_file: Option<PathBuf>,
    /// Requests without credentials get `write:*` and `metrics` (never
    /// `read:`): only allowed when every `listen` address is a loopback one.
    pub allow_anonymous_on_loopback: bool,
    /// Requests without credentials may also read every application's
    /// logs in the viewer (`read:*`): only with `allow_anonymous_on_loopback`
    /// and plain HTTP, and never by default (issue 15).
    pub allow_anonymous_read: bool,
    /// Scopes of a verified client certificate that has no `cert:` line in
    /// the tokens file (default `write:*`: certificates from
    /// loghog-client-cert are for application hosts, which write).
    pub cert_scopes: Arc<[Grant]>,
    /// Largest request body, bytes (413 past it).
    pub max_body_bytes: usize,
    /// Time allowed for a request's head (and a TLS handshake).
    pub header_timeout: Duration,
    /// Time allowed for a request's body.
    pub body_timeout: Duration,
    /// Most HTTP connections served at once; more are closed at once.
    pub max_connections: usize,
}

impl Default for HttpSection {
    fn default() -> HttpSection {
        HttpSection {
            listen: Vec::new(),
            tls: false,
            tokens_file: None,
            allow_anonymous_on_loopback: false,
            allow_anonymous_read: false,
            cert_scopes: Arc::new([Grant::WriteAll]),
            max_body_bytes: DEFAULT_MAX_BODY as usize,
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(30),
            max_connections: 1024,
        }
    }
}

impl HttpSection {
    /// Whether the HTTP listener is configured.
    pub fn is_enabled(&self) -> bool {
        !self.listen.is_empty()
    }
}

/// Reads `[http]`; `has_tls_files` says whether `[server]` has both
/// `pemfile` and `cacert`, which `tls = yes` needs.
pub(super) fn read_http(r: &Reader<'_>, has_tls_files: bool) -> Result<HttpSection, ConfigError> {
    let d = HttpSection::default();
    let port = r.number("default_port", DEFAULT_PORT, 0, 65535)? as u16;
    let listen = r.mixed_addrs("listen", port)?;
    let secs = |key: &str, default: Duration| -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(r.number(
            key,
            default.as_secs(),
            1,
            3600,
        )?))
    };
    let cert_scopes = match r.str("cert_scopes") {
        None => d.cert_scopes.clone(),
        Some(v) => parse_cert_scopes(v).map_err(|problem| r.error("cert_scopes", problem))?,
    };
    let section = HttpSection {
        cert_scopes,
        tls: r.bool("tls", false)?,
        tokens_file: r.path("tokens_file")?,
        allow_anonymous_on_loopback: r.bool("allow_anonymous_on_loopback", false)?,
        allow_anonymous_read: r.bool("allow_anonymous_read", false)?,
        max_body_bytes: r.number("max_body", DEFAULT_MAX_BODY, 64, MAX_MAX_BODY)? as usize,
        header_timeout: secs("header_timeout", d.header_timeout)?,
        body_timeout: secs("body_timeout", d.body_timeout)?,
        max_connections: r.number("max_connections", d.max_connections as u64, 1, 1 << 20)?
            as usize,
        listen,
    };
    if section.listen.is_empty() {
        return Ok(section);
    }
    if section.allow_anonymous_read && (section.tls || !section.allow_anonymous_on_loopback) {
        return Err(r.error(
            "allow_anonymous_read",
            "anonymous read is only for plain HTTP on loopback: it needs \
             allow_anonymous_on_loopback = yes and tls = no; give readers a token with \
             read:APP in tokens_file instead",
        ));
    }
    if section.tls && !has_tls_files {
        return Err(r.error(
            "tls",
            "tls = yes needs [server] pemfile and cacert (HTTPS uses the LogHog TLS \
             certificates); set both, or set tls = no",
        ));
    }
    let authenticated = section.tls || section.tokens_file.is_some();
    if !authenticated {
        if let Some(open) = section.listen.iter().find(|a| !a.ip().is_loopback()) {
            return Err(r.error(
                "listen",
                format!(
                    "{open} is not a loopback address and [http] has no authentication; \
                     set tokens_file, or tls = yes (client certificates), or listen on 127.0.0.1 / [::1]"
                ),
            ));
        }
        if !section.allow_anonymous_on_loopback {
            return Err(r.error(
                "listen",
                "[http] has no authentication; set tokens_file or tls = yes, or (loopback \
                 only) allow_anonymous_on_loopback = yes to let every local program write",
            ));
        }
    } else if section.allow_anonymous_on_loopback {
        if let Some(open) = section.listen.iter().find(|a| !a.ip().is_loopback()) {
            return Err(r.error(
                "allow_anonymous_on_loopback",
                format!(
                    "{open} is not a loopback address; allow_anonymous_on_loopback would let \
                     anyone who reaches it write; remove the key or listen on loopback only"
                ),
            ));
        }
    }
    Ok(section)
}

/// `cert_scopes`: scope names separated by spaces or commas.
fn parse_cert_scopes(value: &str) -> Result<Arc<[Grant]>, String> {
    let mut grants = Vec::new();
    for word in value
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|w| !w.is_empty())
    {
        match Grant::parse(word) {
            Some(g) => grants.push(g),
            None => {
                return Err(format!(
                    "cert_scopes: \"{word}\" is not a scope; use {SCOPE_NAMES}"
                ))
            }
        }
    }
    if grants.is_empty() {
        return Err("cert_scopes is empty; list scopes (e.g. write:*), or remove the line for the default write:*".to_owned());
    }
    Ok(grants.into())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::Grant;
    use crate::config::testing::{assert_errors, parse};

    #[test]
    fn off_unless_listed() {
        let c = parse("").unwrap();
        assert!(!c.http.is_enabled());
        assert_eq!(c.http.max_body_bytes, 1 << 20);
    }

    #[test]
    fn keys_read() {
        let c = parse(
            "[server]\npemfile = s.pem\ncacert = ca.cert\n\
             [http]\nlisten = 10.0.0.1, [::1]:8080\ntls = yes\ntokens_file = tokens\n\
             max_body = 4096\nheader_timeout = 3\nbody_timeout = 4\nmax_connections = 5\n",
        )
        .unwrap();
        let h = &c.http;
        assert_eq!(
            h.listen,
            vec![
                "10.0.0.1:5580".parse().unwrap(),
                "[::1]:8080".parse().unwrap()
            ]
        );
        assert!(h.tls);
        assert_eq!(
            h.tokens_file.as_deref(),
            Some(Path::new("/etc/loghogd/tokens"))
        );
        assert_eq!(h.max_body_bytes, 4096);
        assert_eq!(h.header_timeout, Duration::from_secs(3));
        assert_eq!(h.body_timeout, Duration::from_secs(4));
        assert_eq!(h.max_connections, 5);
    }

    #[test]
    fn loopback_anonymous_needs_the_opt_in() {
        let c = parse("[http]\nlisten = 127.0.0.1\nallow_anonymous_on_loopback = yes\n").unwrap();
        assert!(c.http.allow_anonymous_on_loopback);
    }

    #[test]
    fn errors_name_file_key_and_fix() {
        assert_errors(&[
            (
                "[http]\nlisten = 0.0.0.0\n",
                "listen",
                "not a loopback address",
            ),
            (
                "[http]\nlisten = 0.0.0.0\nallow_anonymous_on_loopback = yes\n",
                "listen",
                "set tokens_file",
            ),
            (
                "[http]\nlisten = 127.0.0.1\n",
                "listen",
                "allow_anonymous_on_loopback = yes",
            ),
            (
                "[http]\nlisten = 10.1.1.1\ntokens_file = t\nallow_anonymous_on_loopback = yes\n",
                "allow_anonymous_on_loopback",
                "loopback only",
            ),
            (
                "[http]\nlisten = 127.0.0.1\ntls = yes\n",
                "tls",
                "pemfile and cacert",
            ),
            ("[http]\nlisten = 127.0.0.1:x\n", "listen", "not a port"),
            ("[http]\nmax_body = 1\n", "max_body", "whole number"),
            (
                "[http]\ncert_scopes = write:* metrix\n",
                "cert_scopes (line 2)",
                "\"metrix\" is not a scope; use write:APP",
            ),
            (
                "[http]\ncert_scopes = write:\n",
                "cert_scopes",
                "not a scope",
            ),
            ("[http]\ncert_scopes = ,\n", "cert_scopes", "list scopes"),
        ]);
    }

    #[test]
    fn cert_scopes_default_to_write_all_and_are_read() {
        assert_eq!(&*parse("").unwrap().http.cert_scopes, [Grant::WriteAll]);
        let c = parse("[http]\ncert_scopes = write:app-a, metrics read:*\n").unwrap();
        assert_eq!(
            &*c.http.cert_scopes,
            [Grant::Write("app-a".into()), Grant::Metrics, Grant::ReadAll]
        );
        for name in ["write:*", "write:x", "read:*", "read:x", "metrics"] {
            assert_eq!(
                Grant::parse(name).map(|g| g.to_string()).as_deref(),
                Some(name)
            );
        }
        for bad in ["write:", "read:", "metric", "WRITE:*", ""] {
            assert_eq!(Grant::parse(bad), None, "{bad}");
        }
    }
}
