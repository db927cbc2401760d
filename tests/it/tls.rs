//! TLS listeners (issue 4, SPEC §9) through real sockets (the binary where
//! the test reads its log or signals it, in-process otherwise):
//! delivery, every handshake refusal (with a good client sending meanwhile),
//! the handshake timeout, start-up validation of the certificate files,
//! certificate reload on SIGHUP, 200 concurrent connections, the client that
//! never reads, and the `loghog-*-cert` scripts.
//!
//! The Rust client here behaves like the LogHog clients in the field: it
//! handshakes, then only writes, and closes without a `close_notify`. Every
//! connection also checks that the server sent it nothing after the
//! handshake (see issue 4 item 1: unread server data turns the client's
//! close into a RST, and the RST destroys messages the daemon had not read).

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::version::{TLS12, TLS13};
use rustls::{ClientConfig, ClientConnection, ProtocolVersion, RootCertStore, StreamOwned};

use crate::util::*;

/// Deadline for the big runs (200 × 100 and 200,000 messages), generous for a
/// debug build on a loaded 2-core machine.
const BIG_DEADLINE: Duration = Duration::from_secs(120);

// === fixtures ===

/// `tests/certs/{name}`.
pub(crate) fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

/// `scripts/{name}`.
fn script(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("scripts")
        .join(name)
}

/// `[server]` lines for one TLS listener on an ephemeral port.
pub(crate) fn tls_server(pemfile: &Path, cacert: &Path) -> String {
    format!(
        "listen_ipv4_ssl = 127.0.0.1:0\npemfile = {}\ncacert = {}",
        pemfile.display(),
        cacert.display()
    )
}

/// A setup with a TLS listener using the checked-in server certificate.
fn tls_setup() -> Setup {
    Setup::new().server_extra(&tls_server(
        &cert("loghog-server.pem"),
        &cert("loghog-ca.cert"),
    ))
}

/// A client config with `pem` (key + certificate) that trusts `ca` for the
/// server, limited to `versions`.
fn client_config_with(
    pem: &Path,
    ca: &Path,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Arc<ClientConfig> {
    let base = loghog::tls::client_config(pem, ca, true)
        .unwrap_or_else(|e| panic!("client config {}: {e}", pem.display()));
    let config = ClientConfig::builder_with_provider(base.crypto_provider().clone())
        .with_protocol_versions(versions)
        .unwrap()
        .with_root_certificates(roots(ca))
        .with_client_cert_resolver(base.client_auth_cert_resolver.clone());
    Arc::new(config)
}

/// The client config the daemon's users get: `loghog::tls::client_config`.
pub(crate) fn client_config(pem: &Path, ca: &Path) -> Arc<ClientConfig> {
    loghog::tls::client_config(pem, ca, true)
        .unwrap_or_else(|e| panic!("client config {}: {e}", pem.display()))
}

/// `client.pem` trusting `loghog-ca`: the fixture client that must get through.
pub(crate) fn good_config() -> Arc<ClientConfig> {
    client_config(&cert("client.pem"), &cert("loghog-ca.cert"))
}

pub(crate) fn roots(ca: &Path) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(ca).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    roots
}

// === the client ===

/// A TCP stream that counts what was read from it, so a test can tell how
/// many bytes the server sent during the handshake.
struct Counted {
    tcp: TcpStream,
    read: usize,
}

impl Read for Counted {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.tcp.read(buf)?;
        self.read += n;
        Ok(n)
    }
}

impl Write for Counted {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.tcp.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.tcp.flush()
    }
}

/// A LogHog TLS client: handshakes, then only writes, like the Python client.
pub(crate) struct TlsClient {
    tls: StreamOwned<ClientConnection, Counted>,
    /// A second handle on the socket, for raw checks rustls must not see.
    raw: TcpStream,
    /// Bytes rustls read from the socket to complete the handshake.
    handshake_bytes: usize,
}

impl TlsClient {
    /// Connects and completes the handshake (as far as the client can tell:
    /// in TLS 1.3 the server judges the client certificate afterwards).
    pub(crate) fn connect(addr: SocketAddr, config: Arc<ClientConfig>) -> io::Result<TlsClient> {
        TlsClient::handshake(connect(addr), config)
    }

    fn handshake(tcp: TcpStream, config: Arc<ClientConfig>) -> io::Result<TlsClient> {
        let raw = tcp.try_clone()?;
        let name = ServerName::try_from("localhost").unwrap();
        let mut conn = ClientConnection::new(config, name).map_err(io::Error::other)?;
        let mut sock = Counted { tcp, read: 0 };
        while conn.is_handshaking() {
            conn.complete_io(&mut sock)?;
        }
        let handshake_bytes = sock.read;
        Ok(TlsClient {
            tls: StreamOwned::new(conn, sock),
            raw,
            handshake_bytes,
        })
    }

    fn local_port(&self) -> u16 {
        self.raw.local_addr().unwrap().port()
    }

    fn version(&self) -> Option<ProtocolVersion> {
        self.tls.conn.protocol_version()
    }

    /// Writes `bytes` (rustls never reads the socket here).
    pub(crate) fn send(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.tls.write_all(bytes)?;
        self.tls.flush()
    }

    /// Bytes the server sent that sit unread in our receive buffer now (a
    /// non-blocking peek, no wait). Must stay 0 for a healthy connection.
    fn unread_from_server(&self) -> usize {
        self.raw.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let r = self.raw.peek(&mut buf);
        self.raw.set_nonblocking(false).unwrap();
        match r {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("peek: {e}"),
        }
    }

    /// Closes the way LogHog clients do (a FIN, no `close_notify`), then reads
    /// the raw socket up to the server's own close and returns every byte the
    /// server sent after the handshake. The daemon must close (it reads to
    /// EOF) and must have sent nothing.
    pub(crate) fn finish(self) -> usize {
        assert_eq!(
            self.tls.sock.read, self.handshake_bytes,
            "rustls read after the handshake"
        );
        let mut raw = self.raw;
        raw.shutdown(Shutdown::Write).unwrap();
        raw.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut after = Vec::new();
        match raw.read_to_end(&mut after) {
            Ok(_) => {}
            Err(e)
                if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut =>
            {
                panic!("daemon did not close the TLS connection within {DEADLINE:?} after our FIN")
            }
            Err(e) => panic!(
                "reading to the daemon's close: {e} (after {} bytes)",
                after.len()
            ),
        }
        after.len()
    }
}

/// Frames for app `app`, root module, with bodies `{prefix}{i}`.
pub(crate) fn batch(prefix: &str, range: std::ops::Range<usize>) -> Vec<u8> {
    range
        .flat_map(|i| simple("app", &format!("{prefix}{i}")))
        .collect()
}

fn bodies_of(range: std::ops::Range<usize>, prefix: &str) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// Waits (bounded) until the daemon logged `tls handshake refused` for the
/// client on local port `port`; returns that line.
fn refusal_line(d: &Daemon, port: u16) -> String {
    let peer = format!("127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let text = d.stderr_text();
        if let Some(line) = text
            .lines()
            .find(|l| l.contains("tls handshake refused") && l.contains(&peer))
        {
            return line.to_string();
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "no `tls handshake refused` line for {peer} within {DEADLINE:?}; stderr:\n{text}"
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

// === delivery ===

#[test]
fn tls_client_delivers_exactly_once_and_server_sends_nothing() {
    let setup = tls_setup();
    let mut d = Daemon::start(&setup);
    let mut c = TlsClient::connect(d.tls_addr(), good_config()).expect("handshake");
    assert_eq!(c.version(), Some(ProtocolVersion::TLSv1_3));
    for i in 0..50 {
        c.send(&simple("app", &format!("tls {i}"))).unwrap();
    }
    c.send(&frame("app", "web", "tls web", &Opts::compressed()))
        .unwrap();
    let port = c.local_port();
    assert_eq!(c.finish(), 0, "server sent bytes after the handshake");

    let lines = wait_for_lines(&setup.log("app/root.log"), 50, DEADLINE);
    wait_for_lines(&setup.log("app/web.log"), 1, DEADLINE);
    let err = d.stop();
    assert_eq!(bodies(&lines), bodies_of(0..50, "tls "));
    assert_eq!(
        parse_line(&lines[0]).1,
        "127.0.0.1",
        "hostname is the peer IP"
    );
    assert_eq!(bodies(&read_lines(&setup.log("app/web.log"))), ["tls web"]);
    assert_eq!(d.stat("written"), 51);
    assert_eq!(d.stat("tls_refused"), 0);
    // The connection span names the peer and the authenticated subject.
    let auth = err
        .lines()
        .find(|l| l.contains("tls client authenticated") && l.contains(&format!(":{port}")))
        .unwrap_or_else(|| panic!("no `tls client authenticated` line for port {port}:\n{err}"));
    assert!(auth.contains("client"), "{auth}");
    // Closing without close_notify is how every LogHog client closes: a
    // normal end, not an error worth a warning per connection.
    assert!(
        !err.contains("connection closed on error"),
        "a clean LogHog close was logged as an error:\n{err}"
    );
}

fn read_lines(path: &Path) -> Vec<String> {
    read(path).lines().map(str::to_string).collect()
}

#[test]
fn tls_close_inside_a_frame_is_still_reported() {
    // Without close_notify a close is a normal end (see the test above), so
    // the framing must be what catches a connection cut inside a frame.
    let setup = tls_setup();
    let mut d = Daemon::start(&setup);
    let mut c = TlsClient::connect(d.tls_addr(), good_config()).expect("handshake");
    let last = simple("app", "cut short");
    c.send(&simple("app", "whole")).unwrap();
    c.send(&last[..last.len() - 3]).unwrap();
    assert_eq!(c.finish(), 0);
    d.wait_for_log("connection closed inside a frame");
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    d.stop();
    assert_eq!(bodies(&read_lines(&setup.log("app/root.log"))), ["whole"]);
}

#[test]
fn tls12_only_client_works() {
    let setup = tls_setup();
    let mut d = InProcess::start(&setup);
    let config = client_config_with(&cert("client.pem"), &cert("loghog-ca.cert"), &[&TLS12]);
    let mut c = TlsClient::connect(d.tls_addr(), config).expect("TLS 1.2 handshake");
    assert_eq!(c.version(), Some(ProtocolVersion::TLSv1_2));
    c.send(&batch("tls12 ", 0..20)).unwrap();
    assert_eq!(
        c.finish(),
        0,
        "server sent bytes after the TLS 1.2 handshake"
    );
    let lines = wait_for_lines(&setup.log("app/root.log"), 20, DEADLINE);
    d.stop();
    assert_eq!(bodies(&lines), bodies_of(0..20, "tls12 "));
    assert_eq!(d.stat("tls_refused"), 0);
}

// === refusals ===

/// Runs one refused client while a good client is connected and sending:
/// `bad` connects (and tries to send `bad …` messages) and returns its socket,
/// kept open until the daemon has logged the refusal, so the refusal is judged
/// on what the client sent and not on a reset.
///
/// Checks: the refusal is logged with the peer and a reason containing
/// `reason`; the good connection, open across the refusal, and a fresh one
/// made after it deliver everything; nothing of the bad client is written.
fn refusal_case(reason: &str, bad: impl FnOnce(SocketAddr) -> TcpStream) {
    let setup = tls_setup();
    let mut d = Daemon::start(&setup);
    let addr = d.tls_addr();
    let mut good = TlsClient::connect(addr, good_config()).expect("good handshake");
    good.send(&batch("good a ", 0..100)).unwrap();

    let bad_sock = bad(addr);
    let port = bad_sock.local_addr().unwrap().port();
    let line = refusal_line(&d, port);
    assert!(
        line.contains("reason=") && line.contains(reason),
        "refusal line lacks reason {reason:?}: {line}"
    );
    // The daemon dropped the connection: the bad client sees the close.
    let mut bad_sock = bad_sock;
    bad_sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut sink = Vec::new();
    if let Err(e) = bad_sock.read_to_end(&mut sink) {
        assert!(
            e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut,
            "daemon kept the refused connection open"
        );
    }

    good.send(&batch("good b ", 0..100)).unwrap();
    let mut after = TlsClient::connect(addr, good_config()).expect("handshake after a refusal");
    after.send(&batch("good c ", 0..100)).unwrap();
    assert_eq!(good.finish(), 0);
    assert_eq!(after.finish(), 0);

    wait_for_lines(&setup.log("app/root.log"), 300, DEADLINE);
    d.stop();
    let mut got = bodies(&read_lines(&setup.log("app/root.log")));
    got.sort();
    let mut want: Vec<String> = ["good a ", "good b ", "good c "]
        .iter()
        .flat_map(|p| bodies_of(0..100, p))
        .collect();
    want.sort();
    assert_eq!(got, want, "exactly the good messages, once each");
    assert_eq!(log_files(&setup), ["app/root.log"]);
    assert_eq!(d.stat("tls_refused"), 1);
    assert_eq!(d.stat("written"), 300);
}

/// Connects with `config`, tries to send `bad` messages whatever the client
/// thinks of its handshake, and returns the socket.
pub(crate) fn attempt_tls(addr: SocketAddr, config: Arc<ClientConfig>) -> TcpStream {
    let tcp = connect(addr);
    let keep = tcp.try_clone().unwrap();
    if let Ok(mut c) = TlsClient::handshake(tcp, config) {
        // TLS 1.3: the client considers itself connected before the server
        // has looked at its certificate; these must never be written.
        let _ = c.send(&batch("bad ", 0..10));
    }
    keep
}

#[test]
fn refused_without_client_certificate() {
    refusal_case("no certificate", |addr| {
        let config = ClientConfig::builder_with_provider(good_config().crypto_provider().clone())
            .with_protocol_versions(&[&TLS13, &TLS12])
            .unwrap()
            .with_root_certificates(roots(&cert("loghog-ca.cert")))
            .with_no_client_auth();
        attempt_tls(addr, Arc::new(config))
    });
}

#[test]
fn refused_client_certificate_from_another_ca() {
    refusal_case("unknown issuer", |addr| {
        // Trusts our server, but its own certificate is from other-ca.
        let config = client_config(&cert("other-client.pem"), &cert("loghog-ca.cert"));
        attempt_tls(addr, config)
    });
}

#[test]
fn refused_expired_client_certificate() {
    refusal_case("expired", |addr| {
        attempt_tls(
            addr,
            client_config(&cert("expired-client.pem"), &cert("loghog-ca.cert")),
        )
    });
}

#[test]
fn refused_expired_client_certificate_tls12() {
    refusal_case("expired", |addr| {
        let config = client_config_with(
            &cert("expired-client.pem"),
            &cert("loghog-ca.cert"),
            &[&TLS12],
        );
        attempt_tls(addr, config)
    });
}

#[test]
fn refused_plaintext_frames_on_the_tls_port() {
    refusal_case("not a TLS client", |addr| {
        let mut s = connect(addr);
        // The daemon may already have closed when the later writes go out.
        let _ = s.write_all(&batch("bad plain ", 0..10));
        s
    });
}

/// In-process, with the handshake timeout shortened from 10 s to 300 ms
/// (`Limits::handshake_timeout`). That the peer is dropped only after the
/// timeout is what shows the timeout dropped it (it sent nothing that could
/// be refused otherwise); the refusal is counted in `tls_refused`.
#[test]
fn silent_peer_is_dropped_after_the_handshake_timeout() {
    const TIMEOUT: Duration = Duration::from_millis(300);
    let setup = tls_setup();
    let mut d = InProcess::start_with(&setup, |c| c.limits.handshake_timeout = TIMEOUT);
    let addr = d.tls_addr();
    let started = Instant::now();
    let mut silent = connect(addr);

    // While the silent peer holds its slot, a good client gets through.
    let mut good = TlsClient::connect(addr, good_config()).expect("good handshake");
    good.send(&batch("meanwhile ", 0..100)).unwrap();
    assert_eq!(good.finish(), 0);
    wait_for_lines(&setup.log("app/root.log"), 100, DEADLINE);

    let mut buf = [0u8; 256];
    let r = silent.read(&mut buf);
    let waited = started.elapsed();
    match r {
        Ok(0) => {}
        Ok(n) => panic!("daemon sent {n} bytes to a peer that never said hello"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            panic!("daemon did not drop a silent peer within {waited:?}")
        }
        Err(_) => {} // reset: dropped too
    }
    // Measured from before the connect, so never shorter on any machine.
    assert!(
        waited >= TIMEOUT,
        "dropped after {waited:?}, before the {TIMEOUT:?} handshake timeout"
    );
    d.wait_stat("tls_refused", 1);
    d.stop();
    assert_eq!(d.stat("tls_refused"), 1);
    assert_eq!(d.stat("written"), 100);
    assert_eq!(d.stat("connections"), 2);
}

// === start-up validation ===

#[test]
fn bad_tls_files_are_config_errors_naming_the_file() {
    let garbage_cert = "-----BEGIN CERTIFICATE-----\n!!not base64!!\n-----END CERTIFICATE-----\n";
    // (name, [server] lines given the temp dir, what stderr must name, extra words)
    type Case = (
        &'static str,
        fn(&Path) -> String,
        fn(&Path) -> String,
        &'static [&'static str],
    );
    let cases: Vec<Case> = vec![
        (
            "pemfile not set",
            |_| {
                format!(
                    "listen_ipv4_ssl = 127.0.0.1:0\ncacert = {}",
                    cert("loghog-ca.cert").display()
                )
            },
            |root| format!("{}", root.join("loghogd.conf").display()),
            &["pemfile"],
        ),
        (
            "cacert not set",
            |_| {
                format!(
                    "listen_ipv4_ssl = 127.0.0.1:0\npemfile = {}",
                    cert("loghog-server.pem").display()
                )
            },
            |root| format!("{}", root.join("loghogd.conf").display()),
            &["cacert"],
        ),
        (
            "pemfile missing",
            |root| tls_server(&root.join("nope.pem"), &cert("loghog-ca.cert")),
            |root| format!("{}", root.join("nope.pem").display()),
            &[],
        ),
        (
            "cacert missing",
            |root| tls_server(&cert("loghog-server.pem"), &root.join("nope-ca.cert")),
            |root| format!("{}", root.join("nope-ca.cert").display()),
            &[],
        ),
        (
            // Tests may run as root, where mode 000 does not stop reading;
            // a directory is unreadable as a file for everyone.
            "pemfile unreadable",
            |root| tls_server(&root.join("adir"), &cert("loghog-ca.cert")),
            |root| format!("{}", root.join("adir").display()),
            &[],
        ),
        (
            "pemfile garbage",
            |root| tls_server(&root.join("garbage.pem"), &cert("loghog-ca.cert")),
            |root| format!("{}", root.join("garbage.pem").display()),
            &[],
        ),
        (
            "cacert garbage",
            |root| tls_server(&cert("loghog-server.pem"), &root.join("garbage-ca.cert")),
            |root| format!("{}", root.join("garbage-ca.cert").display()),
            &[],
        ),
        (
            "v1 server certificate",
            |_| tls_server(&cert("v1-server.pem"), &cert("loghog-ca.cert")),
            |_| format!("{}", cert("v1-server.pem").display()),
            &["regenerate", "loghog-server-cert"],
        ),
        (
            "v1 CA certificate",
            |_| tls_server(&cert("loghog-server.pem"), &cert("v1-ca.cert")),
            |_| format!("{}", cert("v1-ca.cert").display()),
            &["regenerate"],
        ),
    ];
    for (name, server, names, words) in cases {
        let setup = SetupIn::new(server);
        let root = setup.0.root().to_path_buf();
        std::fs::create_dir(root.join("adir")).unwrap();
        std::fs::write(root.join("garbage.pem"), "this is not a certificate\n").unwrap();
        std::fs::write(root.join("garbage-ca.cert"), garbage_cert).unwrap();
        let file = names(&root);
        for args in [&[][..], &["--check-config"][..]] {
            let out = setup.0.run(args);
            assert_eq!(
                out.status.code(),
                Some(EX_CONFIG),
                "{name} {args:?}: want exit {EX_CONFIG}\n{out:?}"
            );
            let text = out.all();
            assert!(
                text.contains(&file),
                "{name} {args:?}: does not name {file}\n{out:?}"
            );
            for w in words {
                assert!(
                    text.contains(w),
                    "{name} {args:?}: does not say {w:?}\n{out:?}"
                );
            }
            assert!(
                !setup.0.pidfile().exists(),
                "{name} {args:?}: left a pid file"
            );
        }
    }
}

/// A [`Setup`] whose `[server]` lines are built from its own temp dir.
struct SetupIn(Setup);

impl SetupIn {
    fn new(server: fn(&Path) -> String) -> SetupIn {
        let probe = Setup::new();
        let lines = server(probe.root());
        SetupIn(probe.server_extra(&lines))
    }
}

// === SIGHUP ===

/// Runs `scripts/{name} args…` in `dir`; panics unless it succeeds.
fn run_script(dir: &Path, name: &str, args: &[&str]) -> Output {
    let mut cmd = Command::new(script(name));
    cmd.args(args).current_dir(dir);
    let out = run_with_deadline(cmd);
    assert!(out.status.success(), "{name} {args:?} failed\n{out:?}");
    out
}

/// Sends `prefix0..prefixN` over a fresh connection with `config` and checks
/// the server sent nothing back.
fn deliver(addr: SocketAddr, config: Arc<ClientConfig>, prefix: &str, n: usize) {
    let mut c = TlsClient::connect(addr, config).expect("handshake");
    c.send(&batch(prefix, 0..n)).unwrap();
    assert_eq!(c.finish(), 0, "server sent bytes after the handshake");
}

#[test]
fn sighup_reloads_certificates_and_keeps_them_when_broken() {
    let setup = Setup::new();
    let root = setup.root().to_path_buf();
    let (pem, ca) = (root.join("server.pem"), root.join("ca.cert"));
    std::fs::copy(cert("loghog-server.pem"), &pem).unwrap();
    std::fs::copy(cert("loghog-ca.cert"), &ca).unwrap();
    let setup = setup.server_extra(&tls_server(&pem, &ca));
    let mut d = Daemon::start(&setup);
    let addr = d.tls_addr();
    deliver(addr, good_config(), "a-before ", 10);

    // CA B, made by the scripts, replaces the files on disk.
    let b = root.join("b");
    std::fs::create_dir(&b).unwrap();
    run_script(&b, "loghog-server-cert", &["bee"]);
    run_script(&b, "loghog-client-cert", &["bclient", ".", "bee"]);
    std::fs::copy(b.join("bee-server.pem"), &pem).unwrap();
    std::fs::copy(b.join("bee-ca.cert"), &ca).unwrap();
    // An open connection of CA A survives the reload.
    let mut open_a = TlsClient::connect(addr, good_config()).expect("handshake");
    d.signal("HUP");
    d.wait_for_log("tls certificates reloaded");

    let b_client = client_config(&b.join("bclient.pem"), &b.join("bee-ca.cert"));
    deliver(addr, b_client.clone(), "b-after ", 10);
    open_a.send(&batch("a-open ", 0..10)).unwrap();
    assert_eq!(open_a.finish(), 0);

    // A client of CA A that trusts the new server is refused by the server.
    let a_cert_b_trust = client_config(&cert("client.pem"), &b.join("bee-ca.cert"));
    let s = attempt_tls(addr, a_cert_b_trust);
    let line = refusal_line(&d, s.local_addr().unwrap().port());
    assert!(line.contains("unknown issuer"), "{line}");
    drop(s);
    // And the old client config (trusting CA A) cannot even verify the
    // server; it gives up, and the daemon logs the failed handshake. (With a
    // rustls client the daemon sees no alert, only the close, so the reason
    // is "client closed the connection during the handshake".)
    let tcp = connect(addr);
    let port = tcp.local_addr().unwrap().port();
    assert!(
        TlsClient::handshake(tcp, good_config()).is_err(),
        "a CA A client verified the CA B server certificate"
    );
    let line = refusal_line(&d, port);
    assert!(
        line.contains("client aborted") || line.contains("client closed"),
        "{line}"
    );

    // A broken pemfile: reload fails, CA B stays.
    std::fs::write(&pem, "garbage\n").unwrap();
    d.signal("HUP");
    let err = d.wait_for_log("tls reload failed");
    let failed = err
        .lines()
        .find(|l| l.contains("tls reload failed"))
        .unwrap();
    assert!(
        failed.contains(&pem.display().to_string()),
        "reload error does not name the file: {failed}"
    );
    deliver(addr, b_client, "b-kept ", 10);

    wait_for_lines(&setup.log("app/root.log"), 40, DEADLINE);
    d.stop();
    let mut got = bodies(&read_lines(&setup.log("app/root.log")));
    got.sort();
    let mut want: Vec<String> = ["a-before ", "b-after ", "a-open ", "b-kept "]
        .iter()
        .flat_map(|p| bodies_of(0..10, p))
        .collect();
    want.sort();
    assert_eq!(got, want);
    assert_eq!(d.stat("written"), 40);
    // The A-cert client, and the A-trust client (it aborts the handshake).
    assert_eq!(d.stat("tls_refused"), 2);
}

// === load ===

#[test]
fn two_hundred_concurrent_connections_keep_order() {
    const CONNS: usize = 200;
    const EACH: usize = 100;
    let setup = tls_setup();
    let mut d = InProcess::start(&setup);
    let addr = d.tls_addr();
    let config = good_config();
    let barrier = Arc::new(Barrier::new(CONNS));
    let threads: Vec<_> = (0..CONNS)
        .map(|c| {
            let config = config.clone();
            let barrier = barrier.clone();
            std::thread::spawn(move || {
                let mut client = TlsClient::connect(addr, config).expect("handshake");
                // All 200 are connected before anyone sends.
                barrier.wait();
                for i in 0..EACH {
                    client
                        .send(&simple("app", &format!("seq={c}:{i}")))
                        .unwrap();
                }
                client.finish()
            })
        })
        .collect();
    for (c, t) in threads.into_iter().enumerate() {
        assert_eq!(t.join().unwrap(), 0, "connection {c}: server sent bytes");
    }
    let lines = wait_for_lines(&setup.log("app/root.log"), CONNS * EACH, BIG_DEADLINE);
    d.stop();
    assert_eq!(lines.len(), CONNS * EACH);
    let mut next = vec![0usize; CONNS];
    for body in bodies(&lines) {
        let (c, i) = body
            .strip_prefix("seq=")
            .and_then(|s| s.split_once(':'))
            .unwrap_or_else(|| panic!("unexpected body {body:?}"));
        let (c, i): (usize, usize) = (c.parse().unwrap(), i.parse().unwrap());
        assert_eq!(i, next[c], "connection {c}: got {i}, expected {}", next[c]);
        next[c] += 1;
    }
    assert!(next.iter().all(|&n| n == EACH), "{next:?}");
    assert_eq!(d.stat("written"), (CONNS * EACH) as u64);
    assert_eq!(d.stat("tls_refused"), 0);
}

/// Issue 4 item 1: a client that never reads sends 200,000 messages over
/// TLS 1.3 and closes at once. If the server had sent anything after the
/// handshake (session tickets), the close would be a RST and the daemon's
/// kernel would drop what it had not read yet.
#[test]
fn never_reading_client_loses_nothing() {
    const N: usize = 200_000;
    let setup = tls_setup();
    let mut d = InProcess::start(&setup);
    let config = client_config_with(&cert("client.pem"), &cert("loghog-ca.cert"), &[&TLS13]);
    let mut c = TlsClient::connect(d.tls_addr(), config).expect("handshake");
    assert_eq!(c.version(), Some(ProtocolVersion::TLSv1_3));
    let mut chunk = Vec::with_capacity(256 << 10);
    for i in 0..N {
        chunk.extend_from_slice(&simple("app", &format!("n={i}")));
        if chunk.len() >= 240 << 10 {
            c.send(&chunk).unwrap();
            chunk.clear();
        }
    }
    c.send(&chunk).unwrap();
    // Everything the server sent after the handshake would be in our receive
    // buffer by now (tickets go out right after the client's Finished).
    assert_eq!(
        c.unread_from_server(),
        0,
        "server sent bytes after the handshake"
    );
    assert_eq!(c.tls.sock.read, c.handshake_bytes);
    // Close at once: no close_notify, no waiting for the server.
    drop(c);

    let lines = wait_for_lines(&setup.log("app/root.log"), N, BIG_DEADLINE);
    d.stop();
    assert_eq!(lines.len(), N);
    for (i, body) in bodies(&lines).iter().enumerate() {
        assert_eq!(body, &format!("n={i}"), "line {i}");
    }
    assert_eq!(d.stat("written"), N as u64);
}

// === certificate scripts ===

fn mode_of(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

#[test]
fn cert_scripts_make_working_certificates() {
    let dir = tempfile::Builder::new()
        .prefix("loghogd-certs-")
        .tempdir()
        .unwrap();
    let dir = dir.path();

    let out = run_script(dir, "loghog-server-cert", &[]);
    assert!(out.stdout.contains("loghog-server.pem"), "{out:?}");
    assert_eq!(mode_of(&dir.join("loghog-ca.key")), 0o600);
    assert_eq!(mode_of(&dir.join("loghog-server.pem")), 0o600);
    assert_eq!(mode_of(&dir.join("loghog-ca.cert")), 0o644);
    let ca_before = std::fs::read(dir.join("loghog-ca.cert")).unwrap();

    // No overwriting without --force, and nothing changes.
    let mut cmd = Command::new(script("loghog-server-cert"));
    cmd.current_dir(dir);
    let out = run_with_deadline(cmd);
    assert!(!out.status.success(), "overwrote without --force\n{out:?}");
    assert!(out.stderr.contains("already exists"), "{out:?}");
    assert_eq!(
        std::fs::read(dir.join("loghog-ca.cert")).unwrap(),
        ca_before
    );

    // The client script finds the CA in the current directory by default…
    run_script(dir, "loghog-client-cert", &["alice"]);
    assert_eq!(mode_of(&dir.join("alice.pem")), 0o600);
    let mut cmd = Command::new(script("loghog-client-cert"));
    cmd.arg("alice").current_dir(dir);
    let out = run_with_deadline(cmd);
    assert!(
        !out.status.success(),
        "overwrote alice.pem without --force\n{out:?}"
    );
    assert!(out.stderr.contains("already exists"), "{out:?}");
    run_script(dir, "loghog-client-cert", &["--force", "alice"]);
    // …or in the given directory, from elsewhere.
    let elsewhere = dir.join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    run_script(
        &elsewhere,
        "loghog-client-cert",
        &["bob", dir.to_str().unwrap(), "loghog"],
    );
    assert_eq!(mode_of(&elsewhere.join("bob.pem")), 0o600);
    // Without a CA there, it says where it looked.
    let mut cmd = Command::new(script("loghog-client-cert"));
    cmd.args(["carol", elsewhere.to_str().unwrap()])
        .current_dir(&elsewhere);
    let out = run_with_deadline(cmd);
    assert!(!out.status.success(), "{out:?}");
    assert!(out.stderr.contains("CA not found"), "{out:?}");

    // --force replaces the CA (new key and certificate).
    run_script(dir, "loghog-server-cert", &["--force"]);
    assert_ne!(
        std::fs::read(dir.join("loghog-ca.cert")).unwrap(),
        ca_before
    );
    run_script(dir, "loghog-client-cert", &["--force", "alice"]);

    // The result works end to end.
    let setup = Setup::new().server_extra(&tls_server(
        &dir.join("loghog-server.pem"),
        &dir.join("loghog-ca.cert"),
    ));
    let mut d = Daemon::start(&setup);
    let ca = dir.join("loghog-ca.cert");
    deliver(
        d.tls_addr(),
        client_config(&dir.join("alice.pem"), &ca),
        "alice ",
        5,
    );
    // bob's CA was replaced by --force: refused. The new CA has the same
    // name as the one that signed bob, so webpki finds it as the issuer and
    // then fails the signature check.
    let s = attempt_tls(d.tls_addr(), client_config(&elsewhere.join("bob.pem"), &ca));
    let line = refusal_line(&d, s.local_addr().unwrap().port());
    assert!(line.contains("bad signature"), "{line}");
    wait_for_lines(&setup.log("app/root.log"), 5, DEADLINE);
    d.stop();
    assert_eq!(
        bodies(&read_lines(&setup.log("app/root.log"))),
        bodies_of(0..5, "alice ")
    );
}

// === measurement (not part of the suite) ===

/// Daemon CPU time so far (user + system), from `/proc/PID/stat`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the `(comm)`, which may hold spaces: state is field 3,
    // utime and stime are fields 14 and 15.
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f[11].parse::<f64>().unwrap() + f[12].parse::<f64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// Handshakes per second: `LOGHOG_HANDSHAKES` (default 2000) fresh TLS 1.3
/// connections, each sending one message, from `LOGHOG_HANDSHAKE_THREADS`
/// (default 1) client threads. Run with
/// `cargo test --release --test tests tls::handshake_rate -- --ignored --nocapture`.
#[test]
#[ignore = "measurement; prints handshakes/s"]
fn handshake_rate() {
    let env = |k: &str, d: usize| {
        std::env::var(k)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(d)
    };
    let n = env("LOGHOG_HANDSHAKES", 2000);
    let threads = env("LOGHOG_HANDSHAKE_THREADS", 1);
    let setup = tls_setup();
    let mut d = Daemon::start(&setup);
    let addr = d.tls_addr();
    let config = good_config();
    let cpu0 = cpu_seconds(d.pid());
    let start = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let config = config.clone();
            std::thread::spawn(move || {
                for i in (t..n).step_by(threads) {
                    let mut c = TlsClient::connect(addr, config.clone()).expect("handshake");
                    c.send(&simple("app", &format!("hs={i}"))).unwrap();
                    // Close like a LogHog client; do not wait for the server.
                    drop(c);
                }
            })
        })
        .collect();
    for w in workers {
        w.join().unwrap();
    }
    let client_done = start.elapsed();
    wait_for_lines(&setup.log("app/root.log"), n, BIG_DEADLINE);
    let elapsed = start.elapsed();
    let cpu = cpu_seconds(d.pid()) - cpu0;
    d.stop();
    assert_eq!(d.stat("written"), n as u64);
    println!(
        "handshakes: {n} from {threads} thread(s) in {:.2} s (clients done {:.2} s): {:.0}/s; daemon CPU {cpu:.2} s ({:.0} µs/handshake)",
        elapsed.as_secs_f64(),
        client_done.as_secs_f64(),
        n as f64 / elapsed.as_secs_f64(),
        cpu / n as f64 * 1e6
    );
}
