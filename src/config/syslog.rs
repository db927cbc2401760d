//! The `[syslog]` section of loghogd.conf (issue 13): which syslog
//! listeners to open. All are off unless listed: UDP (RFC 5426), TCP
//! (RFC 6587), TLS (RFC 5425, same `pemfile`/`cacert` as `[server]`) and a
//! local datagram socket such as `/dev/log`. Messages are capped by
//! `[server] max_msg_size` like LogHog frames.

use std::net::SocketAddr;
use std::path::PathBuf;

use super::{ConfigError, Reader};

/// The keys `[syslog]` knows.
pub(super) const KEYS: &[&str] = &[
    "listen_udp",
    "listen_tcp",
    "listen_tls",
    "default_port_udp",
    "default_port_tcp",
    "default_port_tls",
    "unix_socket",
    "unix_socket_mode",
    "tls_allow_anonymous",
];

/// `[syslog]`: the syslog listeners (none by default).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SyslogSection {
    /// RFC 5426 datagrams (default port 514).
    pub listen_udp: Vec<SocketAddr>,
    /// RFC 6587 streams, octet-counted or LF-terminated (default port 601).
    pub listen_tcp: Vec<SocketAddr>,
    /// RFC 5425 TLS streams (default port 6514).
    pub listen_tls: Vec<SocketAddr>,
    /// A local datagram socket (`/dev/log`, `/run/systemd/journal/syslog`).
    pub unix_socket: Option<PathBuf>,
    /// Permission bits of `unix_socket` (0666: every local program logs).
    pub unix_socket_mode: u32,
    /// TLS clients without a certificate are accepted on the syslog TLS
    /// port (many devices cannot present one); a certificate that is
    /// presented must still chain to `cacert`.
    pub tls_allow_anonymous: bool,
}

impl SyslogSection {
    /// Whether any syslog listener is configured.
    pub fn is_enabled(&self) -> bool {
        !self.listen_udp.is_empty()
            || !self.listen_tcp.is_empty()
            || !self.listen_tls.is_empty()
            || self.unix_socket.is_some()
    }
}

/// Reads `[syslog]`; `has_tls_files` says whether `[server]` has both
/// `pemfile` and `cacert`, which `listen_tls` needs.
pub(super) fn read_syslog(
    r: &Reader<'_>,
    has_tls_files: bool,
) -> Result<SyslogSection, ConfigError> {
    let addrs = |key: &str, port_key: &str, default_port: u64| -> Result<_, ConfigError> {
        let port = r.number(port_key, default_port, 0, 65535)? as u16;
        r.mixed_addrs(key, port)
    };
    let listen_udp = addrs("listen_udp", "default_port_udp", 514)?;
    let listen_tcp = addrs("listen_tcp", "default_port_tcp", 601)?;
    let listen_tls = addrs("listen_tls", "default_port_tls", 6514)?;
    let mut seen: Vec<SocketAddr> = Vec::new();
    for addr in listen_tcp.iter().chain(&listen_tls) {
        if addr.port() != 0 && seen.contains(addr) {
            return Err(ConfigError::new(
                r.file,
                "[syslog]",
                format!(
                    "{addr} is in both listen_tcp and listen_tls; give one of them another port"
                ),
            ));
        }
        seen.push(*addr);
    }
    if !listen_tls.is_empty() && !has_tls_files {
        return Err(r.error(
            "listen_tls",
            "listen_tls needs [server] pemfile and cacert (the syslog TLS port uses the \
             LogHog TLS certificates); set both, or leave listen_tls empty",
        ));
    }
    let unix_socket = r.path("unix_socket")?;
    let unix_socket_mode = match r.str("unix_socket_mode") {
        None => 0o666,
        Some(v) => u32::from_str_radix(v.trim_start_matches("0o"), 8)
            .ok()
            .filter(|m| *m <= 0o777)
            .ok_or_else(|| {
                r.error(
                    "unix_socket_mode",
                    format!("unix_socket_mode = \"{v}\" is not a permission mode; use octal digits such as 0666"),
                )
            })?,
    };
    Ok(SyslogSection {
        listen_udp,
        listen_tcp,
        listen_tls,
        unix_socket,
        unix_socket_mode,
        tls_allow_anonymous: r.bool("tls_allow_anonymous", false)?,
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::testing::{assert_errors, parse};

    #[test]
    fn off_unless_listed() {
        let c = parse("").unwrap();
        assert!(!c.syslog.is_enabled());
        assert_eq!(c.syslog.unix_socket_mode, 0o666);
    }

    #[test]
    fn addresses_default_ports_and_socket() {
        let c = parse(
            "[server]\npemfile = s.pem\ncacert = ca.cert\n\
             [syslog]\nlisten_udp = 127.0.0.1, [::1]:5514\nlisten_tcp = 127.0.0.1\n\
             listen_tls = 127.0.0.1\nunix_socket = run/log\nunix_socket_mode = 0620\n\
             tls_allow_anonymous = yes\n",
        )
        .unwrap();
        let s = &c.syslog;
        assert_eq!(
            s.listen_udp,
            vec![
                "127.0.0.1:514".parse().unwrap(),
                "[::1]:5514".parse().unwrap()
            ]
        );
        assert_eq!(s.listen_tcp, vec!["127.0.0.1:601".parse().unwrap()]);
        assert_eq!(s.listen_tls, vec!["127.0.0.1:6514".parse().unwrap()]);
        assert_eq!(
            s.unix_socket.as_deref(),
            Some(Path::new("/etc/loghogd/run/log"))
        );
        assert_eq!(s.unix_socket_mode, 0o620);
        assert!(s.tls_allow_anonymous);
    }

    #[test]
    fn errors_name_file_key_and_fix() {
        assert_errors(&[
            ("[syslog]\nlisten_udp = 1.2.3.4:x\n", "listen_udp", "not a port"),
            ("[syslog]\nlisten_tls = 127.0.0.1\n", "listen_tls", "pemfile and cacert"),
            ("[syslog]\nunix_socket_mode = 999\n", "unix_socket_mode", "octal"),
            ("[syslog]\ntls_allow_anonymous = maybe\n", "tls_allow_anonymous", "yes or no"),
            ("[syslog]\nunix_socket =\n", "unix_socket", "give a path"),
            (
                "[server]\npemfile = s\ncacert = c\n[syslog]\nlisten_tcp = 127.0.0.1:7\nlisten_tls = 127.0.0.1:7\n",
                "[syslog]",
                "another port",
            ),
        ]);
    }
}
