//! [`Builder`]: where a [`Client`] is configured. `build` checks everything
//! that can be checked without the network (the address's shape, the TLS
//! files), so a bad setting fails at start-up and not in the first `send`.

use std::path::PathBuf;
use std::time::Duration;

use crate::client::Parts;
use crate::encode::Encoder;
use crate::worker::{Settings, Transport};
use crate::{Client, Error};

/// The daemon's default plain port (TCP and UDP).
pub const DEFAULT_PORT: u16 = 5566;
/// The daemon's default TLS port.
pub const DEFAULT_TLS_PORT: u16 = 5577;
/// Largest payload the daemon accepts by default (`[server] max_msg_size`).
pub const DEFAULT_MAX_MESSAGE_SIZE: usize = 65536;
/// Largest UDP payload over IPv4, minus the frame header.
const UDP_MAX_PAYLOAD: usize = 65507 - loghog_protocol::HEADER_LEN;

/// Configures a [`Client`]; made by [`Client::builder`].
///
/// ```
/// use std::time::Duration;
/// let client = loghog::Client::builder("my-app")
///     .address("localhost:5566")
///     .secret("dev-secret")
///     .compress(true)
///     .hostname("web-1")
///     .max_buffer(10_000)
///     .close_timeout(Duration::from_secs(2))
///     .build()?;
/// # Ok::<(), loghog::Error>(())
/// ```
#[derive(Debug, Clone)]
#[must_use]
pub struct Builder {
    app_id: String,
    address: Option<String>,
    udp: bool,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls: Option<(PathBuf, PathBuf)>,
    #[cfg_attr(not(feature = "tls"), allow(dead_code))]
    tls_server_name: Option<String>,
    secret: Option<String>,
    compress: bool,
    hostname: Option<String>,
    max_buffer: usize,
    max_buffer_bytes: usize,
    max_message_size: usize,
    close_timeout: Duration,
    connect_timeout: Duration,
    write_timeout: Duration,
    give_up_after: Option<u32>,
}

// === impl Builder ===

impl Builder {
    pub(crate) fn new(app_id: String) -> Builder {
        Builder {
            app_id,
            address: None,
            udp: false,
            tls: None,
            tls_server_name: None,
            secret: None,
            compress: false,
            hostname: None,
            max_buffer: 1024,
            max_buffer_bytes: 8 << 20,
            max_message_size: DEFAULT_MAX_MESSAGE_SIZE,
            close_timeout: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(5),
            write_timeout: Duration::from_secs(30),
            give_up_after: None,
        }
    }

    /// The daemon as `host:port` (`[::1]:5566` for an IPv6 literal). Names
    /// are resolved on every connection attempt, and every address they
    /// resolve to is tried in turn. Default `localhost:5566`
    /// (`localhost:5577` with TLS).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").address("logs.example.com:5566");
    /// ```
    pub fn address(mut self, address: impl Into<String>) -> Builder {
        self.address = Some(address.into());
        self
    }

    /// Sends each message as one UDP datagram instead of over TCP.
    /// Nothing tells a UDP sender whether a datagram arrived.
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").udp();
    /// ```
    pub fn udp(mut self) -> Builder {
        self.udp = true;
        self
    }

    /// TLS with a client certificate (feature `tls`): `client_pem` holds
    /// the client's key and certificate (as `loghog-client-cert` writes
    /// them), `ca_cert` the CA the daemon's certificate must chain to. The
    /// daemon's certificate must also name the host in
    /// [`Builder::address`] (or [`Builder::tls_server_name`]).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app")
    ///     .address("localhost:5577")
    ///     .tls("/etc/loghog/client.pem", "/etc/loghog/loghog-ca.cert");
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls(mut self, client_pem: impl Into<PathBuf>, ca_cert: impl Into<PathBuf>) -> Builder {
        self.tls = Some((client_pem.into(), ca_cert.into()));
        self
    }

    /// The name the daemon's certificate must carry, when it is not the
    /// host of [`Builder::address`] (e.g. connecting by IP address).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app")
    ///     .address("10.0.0.5:5577")
    ///     .tls("client.pem", "loghog-ca.cert")
    ///     .tls_server_name("logs.example.com");
    /// ```
    #[cfg(feature = "tls")]
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Builder {
        self.tls_server_name = Some(name.into());
        self
    }

    /// Signs every message with HMAC-MD5 under `secret` (SPEC §3), as a
    /// facility with `secret = ...` requires.
    ///
    /// ```
    /// let b = loghog::Client::builder("signed-app").secret("dev-secret");
    /// ```
    pub fn secret(mut self, secret: impl Into<String>) -> Builder {
        self.secret = Some(secret.into());
        self
    }

    /// zlib-compresses every message (worth it for long bodies only).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").compress(true);
    /// ```
    pub fn compress(mut self, on: bool) -> Builder {
        self.compress = on;
        self
    }

    /// The host name sent with every message (default: this machine's).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").hostname("web-1");
    /// ```
    pub fn hostname(mut self, hostname: impl Into<String>) -> Builder {
        self.hostname = Some(hostname.into());
        self
    }

    /// How many messages may wait (default 1024); past that the oldest are
    /// dropped and counted.
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").max_buffer(100_000);
    /// ```
    pub fn max_buffer(mut self, messages: usize) -> Builder {
        self.max_buffer = messages;
        self
    }

    /// The same bound in bytes of encoded frames (default 8 MiB).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").max_buffer_bytes(64 << 20);
    /// ```
    pub fn max_buffer_bytes(mut self, bytes: usize) -> Builder {
        self.max_buffer_bytes = bytes;
        self
    }

    /// Messages whose payload is larger are dropped at `send` (default
    /// 65536, the daemon's default `max_msg_size`: the daemon closes a
    /// connection that announces a larger frame).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").max_message_size(1 << 20);
    /// ```
    pub fn max_message_size(mut self, bytes: usize) -> Builder {
        self.max_message_size = bytes;
        self
    }

    /// How long dropping the last handle waits for the queue to drain
    /// (default 5 s).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").close_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn close_timeout(mut self, timeout: Duration) -> Builder {
        self.close_timeout = timeout;
        self
    }

    /// How long one connection attempt (and TLS handshake) may take
    /// (default 5 s).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").connect_timeout(std::time::Duration::from_secs(1));
    /// ```
    pub fn connect_timeout(mut self, timeout: Duration) -> Builder {
        self.connect_timeout = timeout;
        self
    }

    /// How long a write may stall before the connection is given up and
    /// made again (default 30 s).
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").write_timeout(std::time::Duration::from_secs(5));
    /// ```
    pub fn write_timeout(mut self, timeout: Duration) -> Builder {
        self.write_timeout = timeout;
        self
    }

    /// After `attempts` failed connection attempts in a row, drop everything
    /// queued (counted in [`Client::dropped`]; a waiting flush returns
    /// [`Error::Dropped`] with the reason) instead of retrying forever. For
    /// tools such as `loghog-send` that must fail fast; an application
    /// wants the default, which is to keep trying.
    ///
    /// ```
    /// let b = loghog::Client::builder("my-app").give_up_after(3);
    /// ```
    pub fn give_up_after(mut self, attempts: u32) -> Builder {
        self.give_up_after = Some(attempts.max(1));
        self
    }

    /// Starts the client's background thread. Nothing connects until the
    /// first message is sent.
    ///
    /// # Errors
    /// [`Error::Config`] for an address without a port or TLS over UDP,
    /// `Error::TlsFiles` for unreadable or unusable certificate files,
    /// [`Error::Spawn`] when no thread can be started.
    ///
    /// ```
    /// let err = loghog::Client::builder("my-app").address("localhost").build().unwrap_err();
    /// assert!(err.to_string().contains("host:port"));
    /// ```
    pub fn build(self) -> Result<Client, Error> {
        let tls = self.tls.is_some();
        if tls && self.udp {
            return Err(Error::Config("TLS needs TCP, not UDP".into()));
        }
        let address = match self.address.clone() {
            Some(a) => a,
            None if tls => format!("localhost:{DEFAULT_TLS_PORT}"),
            None => format!("localhost:{DEFAULT_PORT}"),
        };
        let host = split_host(&address).ok_or_else(|| {
            Error::Config(format!(
                "address {address:?} is not host:port (e.g. localhost:5566 or [::1]:5566)"
            ))
        })?;
        let transport = if self.udp {
            Transport::Udp
        } else {
            self.stream_transport(host)?
        };
        let hostname = match self.hostname {
            Some(h) => h,
            None => machine_hostname(),
        };
        let mut max_payload = self.max_message_size;
        if self.udp {
            max_payload = max_payload.min(UDP_MAX_PAYLOAD);
        }
        Client::start(Parts {
            encoder: Encoder::new(
                &self.app_id,
                &hostname,
                self.secret.as_deref(),
                self.compress,
                max_payload,
            ),
            settings: Settings {
                address,
                transport,
                connect_timeout: self.connect_timeout,
                write_timeout: self.write_timeout,
                give_up_after: self.give_up_after,
            },
            max_messages: self.max_buffer,
            max_bytes: self.max_buffer_bytes,
            max_frame: max_payload + loghog_protocol::HEADER_LEN,
            close_timeout: self.close_timeout,
        })
    }

    /// TCP, or TLS when [`Builder::tls`] was called.
    #[cfg(not(feature = "tls"))]
    fn stream_transport(&self, _host: &str) -> Result<Transport, Error> {
        Ok(Transport::Tcp)
    }

    /// TCP, or TLS when [`Builder::tls`] was called: loads the files now,
    /// so a bad one fails `build`.
    #[cfg(feature = "tls")]
    fn stream_transport(&self, host: &str) -> Result<Transport, Error> {
        let Some((pem, ca)) = &self.tls else {
            return Ok(Transport::Tcp);
        };
        tls_transport(pem, ca, self.tls_server_name.as_deref(), host)
    }
}

#[cfg(feature = "tls")]
fn tls_transport(
    pem: &std::path::Path,
    ca: &std::path::Path,
    name: Option<&str>,
    host: &str,
) -> Result<Transport, Error> {
    use rustls::pki_types::ServerName;
    let config = crate::tls::client_config(pem, ca, true)
        .map_err(|e| Error::TlsFiles(std::sync::Arc::new(e)))?;
    let name = name.unwrap_or(host);
    let server_name = match name.parse::<std::net::IpAddr>() {
        Ok(ip) => ServerName::IpAddress(ip.into()),
        Err(_) => ServerName::try_from(name.to_owned())
            .map_err(|e| Error::Config(format!("TLS server name {name:?}: {e}")))?,
    };
    Ok(Transport::Tls {
        config,
        server_name,
    })
}

/// The host part of `host:port` (brackets removed), if there is a port.
fn split_host(address: &str) -> Option<&str> {
    let (host, port) = address.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some(host)
}

/// This machine's name, as Python's `socket.gethostname()` gives it.
fn machine_hostname() -> String {
    #[cfg(unix)]
    {
        let mut buf = [0u8; 256];
        // SAFETY: the buffer is valid for its length; gethostname writes at
        // most that many bytes.
        let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
        if rc == 0 {
            let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
            if let Ok(name) = std::str::from_utf8(&buf[..end]) {
                if !name.is_empty() {
                    return name.to_owned();
                }
            }
        }
    }
    std::env::var("HOSTNAME").unwrap_or_else(|_| "localhost".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_need_a_port() {
        assert_eq!(split_host("localhost:5566"), Some("localhost"));
        assert_eq!(split_host("[::1]:5566"), Some("::1"));
        assert_eq!(split_host("10.0.0.5:1"), Some("10.0.0.5"));
        assert_eq!(split_host("localhost"), None);
        assert_eq!(split_host("localhost:http"), None);
        assert_eq!(split_host(":5566"), None);
    }

    #[test]
    fn default_hostname_is_the_machines() {
        let name = machine_hostname();
        assert!(!name.is_empty());
        if let Ok(proc_name) = std::fs::read_to_string("/proc/sys/kernel/hostname") {
            assert_eq!(name, proc_name.trim());
        }
    }
}
