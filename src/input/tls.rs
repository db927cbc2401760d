//! The TLS listeners' server side (SPEC §9): the mutual-TLS rustls server
//! config built from `[server] pemfile`/`cacert`, the slot that SIGHUP swaps
//! it in, the client subject for the connection's log span, and the
//! reason a refused handshake is counted under ([`refusal_of`]).
//!
//! Loading and certificate diagnostics live in `loghog_protocol::tls`, which
//! the client side shares.

use std::path::Path;
use std::sync::{Arc, RwLock};

pub(crate) use loghog_protocol::tls::{describe_handshake_error, TlsError};
use loghog_protocol::tls::{load_identity, load_roots, subject_name, Role};
use rustls::crypto::ring as ring_provider;
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::version::{TLS12, TLS13};
use rustls::{ServerConfig, ServerConnection};
use tokio_rustls::TlsAcceptor;

use crate::stats::TlsRefusal;

/// The TLS acceptor, swapped on SIGHUP when certificates are reloaded.
#[derive(Clone)]
pub(crate) struct TlsSetup {
    /// Current server config; new handshakes use whatever is here.
    pub(crate) acceptor: Arc<RwLock<TlsAcceptor>>,
}

// === impl TlsSetup ===

impl TlsSetup {
    /// A slot holding `config`.
    pub(crate) fn new(config: Arc<ServerConfig>) -> TlsSetup {
        TlsSetup {
            acceptor: Arc::new(RwLock::new(TlsAcceptor::from(config))),
        }
    }

    /// The acceptor new handshakes use.
    pub(crate) fn current(&self) -> TlsAcceptor {
        self.acceptor
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a freshly loaded config (SIGHUP).
    pub(crate) fn replace(&self, config: Arc<ServerConfig>) {
        *self.acceptor.write().unwrap_or_else(|e| e.into_inner()) = TlsAcceptor::from(config);
    }
}

/// Builds the mutual-TLS server configuration for the TLS listeners.
///
/// `pemfile` holds the server's private key (PKCS#1, PKCS#8 or SEC1) and its
/// certificate chain, leaf first (a leaf placed after its CA, as the old
/// scripts did, is found by its key); `cacert` holds the CA certificate(s) that
/// client certificates must chain to. TLS 1.2 and 1.3, ring crypto.
///
/// # Errors
///
/// A [`TlsError`] naming the file and the problem, including certificates that
/// must be regenerated with `loghog-server-cert` / `loghog-client-cert`.
#[cfg(test)]
pub(crate) fn load_server_config(
    pemfile: &Path,
    cacert: &Path,
) -> Result<Arc<ServerConfig>, TlsError> {
    load_server_config_with(pemfile, cacert, false)
}

/// [`load_server_config`], optionally also accepting clients without a
/// certificate (`anonymous`: the syslog TLS port's `tls_allow_anonymous`;
/// a certificate that is presented must still chain to `cacert`).
///
/// # Errors
/// As [`load_server_config`].
pub(crate) fn load_server_config_with(
    pemfile: &Path,
    cacert: &Path,
    anonymous: bool,
) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(ring_provider::default_provider());
    let identity = load_identity(pemfile, Role::Server)?;
    let roots = load_roots(cacert)?;

    // `builder_with_provider(..).build()` without `allow_unauthenticated()`:
    // a client without a certificate fails the handshake (SPEC §9).
    let builder = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
    let builder = if anonymous {
        builder.allow_unauthenticated()
    } else {
        builder
    };
    let verifier = builder.build().map_err(|err| TlsError::BadCaCertificate {
        path: cacert.to_path_buf(),
        subject: "all".to_owned(),
        reason: err.to_string(),
    })?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|source| TlsError::Rustls {
            path: pemfile.to_path_buf(),
            context: "cannot enable TLS 1.2/1.3",
            source,
        })?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));

    // The server must write NOTHING once the handshake is done. LogHog clients
    // only write and never read, so any record we send after the handshake sits
    // unread in the client's receive buffer; when the client then closes, its
    // kernel answers the unread data with a TCP RST instead of a FIN, and the
    // RST makes OUR kernel discard whatever the client sent that we had not
    // read yet (seen in practice: 11,504 of 200,000 messages lost). So:
    // - no TLS 1.3 NewSessionTicket messages (rustls sends 2 by default, right
    //   after the client's Finished, i.e. after the client stopped reading),
    //   and none on request either (RFC 9149 `ticket_request`);
    // - no session cache or tickets at all: resumption is pointless for
    //   long-lived logging connections and would let a session outlive a
    //   client certificate that has since expired. This is also a second
    //   guard: rustls only sends a (stateful) TLS 1.3 ticket it could store;
    // - no early data and no 0.5-RTT data.
    // rustls writes nothing else on its own: it initiates a KeyUpdate only when
    // its own write sequence nears the AEAD limit (we never write), and answers
    // one only if the client asks, which Python's ssl module cannot do. Callers
    // must not write either: see `server::tcp` (no replies, and no
    // close_notify while the client may still be sending).
    config.send_tls13_tickets = 0;
    config.max_tls13_tickets = 0;
    config.session_storage = Arc::new(NoServerSessionStorage {});
    // `ticketer` is rustls' `NeverProducesTickets` unless set, so TLS 1.2
    // sends no NewSessionTicket (and its only copy is inside the handshake).
    config.max_early_data_size = 0;
    config.send_half_rtt_data = false;

    tracing::debug!(pemfile = %pemfile.display(), cacert = %cacert.display(), "tls server config loaded");
    Ok(Arc::new(config))
}

/// The [`TlsRefusal`] a failed handshake is counted under; `None` (the
/// error) is a handshake that ran out of time.
///
/// Kept beside [`describe_handshake_error`], which words the same cases for
/// the log: the metric label is the fixed-list version of that line.
pub(crate) fn refusal_of(err: Option<&std::io::Error>) -> TlsRefusal {
    use rustls::CertificateError as C;
    use rustls::Error as E;
    use std::io::ErrorKind as K;
    let Some(err) = err else {
        return TlsRefusal::HandshakeTimeout;
    };
    let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    else {
        return match err.kind() {
            K::TimedOut => TlsRefusal::HandshakeTimeout,
            K::UnexpectedEof | K::ConnectionReset | K::ConnectionAborted | K::BrokenPipe => {
                TlsRefusal::ClientAborted
            }
            _ => TlsRefusal::Other,
        };
    };
    match tls {
        E::NoCertificatesPresented => TlsRefusal::NoCertificate,
        E::InvalidCertificate(cert) => match cert {
            C::UnknownIssuer => TlsRefusal::UnknownCa,
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => TlsRefusal::Expired,
            C::BadSignature => TlsRefusal::BadSignature,
            _ => TlsRefusal::BadCertificate,
        },
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => TlsRefusal::NotTls,
        E::PeerIncompatible(_) => TlsRefusal::Incompatible,
        E::AlertReceived(_) => TlsRefusal::ClientAborted,
        _ => TlsRefusal::Other,
    }
}

/// The client certificate's subject CN, for the connection's log span (see
/// [`subject_name`]). `None` before the handshake or without a certificate.
pub(crate) fn peer_subject(conn: &ServerConnection) -> Option<String> {
    Some(subject_name(conn.peer_certificates()?.first()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io;
    use std::path::PathBuf;

    use loghog_protocol::tls::TlsError;
    use rustls::crypto::ring as ring_provider;
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    use rustls::sign::CertifiedKey;
    use rustls::ClientConfig;

    use std::net::SocketAddr;
    use std::time::Duration;

    use rustls::pki_types::ServerName;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};
    use tokio_rustls::{TlsAcceptor, TlsConnector};

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn cert(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/certs")
            .join(name)
    }

    fn ca() -> PathBuf {
        cert("loghog-ca.cert")
    }

    fn server_config() -> Arc<ServerConfig> {
        load_server_config(&cert("loghog-server.pem"), &ca()).unwrap()
    }

    fn client_config(pem: &str) -> Arc<ClientConfig> {
        loghog::tls::client_config(&cert(pem), &ca(), true).unwrap()
    }

    /// The PEM sections of a fixture, as text, so tests can recombine them.
    fn pem_blocks(name: &str) -> Vec<String> {
        let text = std::fs::read_to_string(cert(name)).unwrap();
        let mut blocks = Vec::new();
        let mut current = String::new();
        for line in text.lines() {
            current.push_str(line);
            current.push('\n');
            if line.starts_with("-----END ") {
                blocks.push(std::mem::take(&mut current));
            }
        }
        blocks
    }

    fn write_temp(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn server_err(pem: &Path, cacert: &Path) -> TlsError {
        match load_server_config(pem, cacert) {
            Ok(_) => panic!("{} loaded, expected an error", pem.display()),
            Err(err) => err,
        }
    }

    // === loading ===

    #[test]
    fn server_config_loads_every_key_format() {
        for pem in [
            "loghog-server.pem",    // EC P-256, PKCS#8 (the scripts)
            "server-ec-sec1.pem",   // EC P-256, SEC1
            "server-rsa-pkcs1.pem", // RSA 2048, PKCS#1
            "server-rsa-pkcs8.pem", // RSA 2048, PKCS#8
        ] {
            let config = load_server_config(&cert(pem), &ca());
            assert!(
                config.is_ok(),
                "{pem}: {}",
                config.err().map(|e| e.to_string()).unwrap_or_default()
            );
        }
    }

    #[test]
    fn server_config_never_sends_tickets() {
        let config = server_config();
        assert_eq!(config.send_tls13_tickets, 0);
        assert_eq!(config.max_tls13_tickets, 0);
        assert_eq!(config.max_early_data_size, 0);
        assert!(!config.send_half_rtt_data);
        assert!(!config.ticketer.enabled());
    }

    #[test]
    fn missing_file_is_named() {
        let err = server_err(&cert("no-such.pem"), &ca());
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("no-such.pem"), "{err}");
        let err = server_err(&cert("loghog-server.pem"), &cert("no-such-ca.cert"));
        assert!(matches!(err, TlsError::Read { .. }), "{err}");
        assert!(err.to_string().contains("no-such-ca.cert"), "{err}");
    }

    #[test]
    fn key_only_cert_only_and_garbage_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = pem_blocks("loghog-server.pem");
        let key_only = write_temp(&dir, "key-only.pem", &blocks[0]);
        let cert_only = write_temp(&dir, "cert-only.pem", &blocks[1]);
        let garbage = write_temp(&dir, "garbage.pem", "this is not PEM\n\x01\x02");
        let broken = write_temp(
            &dir,
            "broken.pem",
            "-----BEGIN CERTIFICATE-----\nnot base64 at all!\n-----END CERTIFICATE-----\n",
        );

        let err = server_err(&key_only, &ca());
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().contains("key-only.pem"), "{err}");
        let err = server_err(&cert_only, &ca());
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
        let err = server_err(&garbage, &ca());
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
        let err = server_err(&broken, &ca());
        assert!(matches!(err, TlsError::Pem { .. }), "{err}");

        // A CA file without certificates, and one holding only a key.
        let err = server_err(&cert("loghog-server.pem"), &garbage);
        assert!(matches!(err, TlsError::NoCaCertificate { .. }), "{err}");
        let err = server_err(&cert("loghog-server.pem"), &key_only);
        assert!(matches!(err, TlsError::NoCaCertificate { .. }), "{err}");
    }

    #[test]
    fn encrypted_key_is_explained() {
        let dir = tempfile::tempdir().unwrap();
        let blocks = pem_blocks("loghog-server.pem");
        let text = format!(
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n{}",
            blocks[1]
        );
        let err = server_err(&write_temp(&dir, "enc.pem", &text), &ca());
        assert!(matches!(err, TlsError::EncryptedKey { .. }), "{err}");
    }

    #[test]
    fn mismatched_key_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let client_key = &pem_blocks("client.pem")[0];
        let server_cert = &pem_blocks("loghog-server.pem")[1];
        let pem = write_temp(&dir, "mismatch.pem", &format!("{client_key}{server_cert}"));
        let err = server_err(&pem, &ca());
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
        assert!(err.to_string().contains("CN=loghog"), "{err}");
    }

    #[test]
    fn leaf_after_its_ca_is_found_by_its_key() {
        // The old scripts wrote the CA certificate before the server's.
        let dir = tempfile::tempdir().unwrap();
        let blocks = pem_blocks("loghog-server.pem");
        let ca_cert = std::fs::read_to_string(ca()).unwrap();
        let pem = write_temp(
            &dir,
            "ca-first.pem",
            &format!("{}{ca_cert}{}", blocks[0], blocks[1]),
        );
        load_server_config(&pem, &ca()).unwrap();
    }

    #[test]
    fn old_style_certificates_ask_for_regeneration() {
        let err = server_err(&cert("v1-server.pem"), &ca());
        let text = err.to_string();
        assert!(matches!(err, TlsError::Outdated { .. }), "{text}");
        assert!(
            text.contains("X.509 v1") && text.contains("loghog-server-cert"),
            "{text}"
        );

        let err = server_err(&cert("server-nosan.pem"), &ca());
        let text = err.to_string();
        assert!(
            text.contains("subjectAltName") && text.contains("loghog-server-cert"),
            "{text}"
        );

        let err = server_err(&cert("loghog-server.pem"), &cert("v1-ca.cert"));
        let text = err.to_string();
        assert!(
            text.contains("v1-ca.cert") && text.contains("X.509 v1"),
            "{text}"
        );
        assert!(text.contains("loghog-server-cert"), "{text}");

        // A leaf certificate given as the CA: no basicConstraints CA:TRUE.
        let err = server_err(&cert("loghog-server.pem"), &cert("client.pem"));
        let text = err.to_string();
        assert!(
            text.contains("CA:TRUE") && text.contains("regenerate"),
            "{text}"
        );
    }

    #[test]
    fn client_config_loads() {
        loghog::tls::client_config(&cert("client.pem"), &ca(), true).unwrap();
        let err = loghog::tls::client_config(&cert("v1-server.pem"), &ca(), true)
            .err()
            .unwrap();
        assert!(err.to_string().contains("loghog-client-cert"), "{err}");
    }

    /// Regenerates `tests/certs/` with the shipped scripts (needs openssl).
    #[test]
    #[ignore = "rewrites the checked-in fixtures; run on demand"]
    fn regenerate_fixtures() {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/make-test-certs");
        let status = std::process::Command::new(script).status().unwrap();
        assert!(status.success());
    }

    // === handshakes ===

    /// What the server side of one connection saw.
    struct Served {
        subject: Option<String>,
        received: Vec<u8>,
    }

    async fn listen() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    /// Accepts one connection, handshakes and reads to EOF, as the daemon will:
    /// never writing, and dropping the stream without a close_notify.
    fn serve_one(
        listener: TcpListener,
        config: Arc<ServerConfig>,
    ) -> tokio::task::JoinHandle<io::Result<Served>> {
        tokio::spawn(async move {
            let (tcp, _) = listener.accept().await?;
            let handshake = TlsAcceptor::from(config).accept(tcp);
            let mut tls = tokio::time::timeout(TIMEOUT, handshake)
                .await
                .map_err(|_| {
                    io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out")
                })??;
            let subject = peer_subject(tls.get_ref().1);
            let mut received = Vec::new();
            tls.read_to_end(&mut received).await?;
            assert!(
                !tls.get_ref().1.wants_write(),
                "server has TLS data queued to send"
            );
            Ok(Served { subject, received })
        })
    }

    async fn connect(
        addr: SocketAddr,
        config: Arc<ClientConfig>,
    ) -> io::Result<tokio_rustls::client::TlsStream<TcpStream>> {
        let tcp = TcpStream::connect(addr).await?;
        let name = ServerName::try_from("localhost").unwrap();
        TlsConnector::from(config).connect(name, tcp).await
    }

    /// Runs a client that sends `payload` and closes; returns the server's view.
    async fn exchange(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
        payload: &[u8],
    ) -> io::Result<Served> {
        let (listener, addr) = listen().await;
        let served = serve_one(listener, server);
        // The client may or may not notice a refusal (in TLS 1.3 the server
        // judges the client certificate after the client considers itself
        // connected), so only the server's verdict counts.
        if let Ok(mut tls) = connect(addr, client).await {
            let _ = tls.write_all(payload).await;
            let _ = tls.shutdown().await;
        }
        tokio::time::timeout(TIMEOUT, served)
            .await
            .unwrap()
            .unwrap()
    }

    #[tokio::test]
    async fn ca_signed_client_is_accepted() {
        let served = exchange(
            server_config(),
            client_config("client.pem"),
            b"hello loghog",
        )
        .await
        .unwrap();
        assert_eq!(served.received, b"hello loghog");
        assert_eq!(served.subject.as_deref(), Some("client"));
    }

    #[tokio::test]
    async fn rsa_server_and_tls12_work() {
        let server = load_server_config(&cert("server-rsa-pkcs1.pem"), &ca()).unwrap();
        let client =
            ClientConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
                .with_protocol_versions(&[&TLS12])
                .unwrap()
                .with_root_certificates(load_roots(&ca()).unwrap())
                .with_client_cert_resolver(
                    client_config("client.pem")
                        .client_auth_cert_resolver
                        .clone(),
                );
        let served = exchange(server, Arc::new(client), b"over tls 1.2")
            .await
            .unwrap();
        assert_eq!(served.received, b"over tls 1.2");
    }

    /// A client that trusts our CA and sends no certificate.
    fn no_certificate_client() -> ClientConfig {
        ClientConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
            .with_protocol_versions(&[&TLS13, &TLS12])
            .unwrap()
            .with_root_certificates(load_roots(&ca()).unwrap())
            .with_no_client_auth()
    }

    async fn refused(client: Arc<ClientConfig>) -> String {
        match exchange(server_config(), client, b"should not arrive").await {
            Ok(served) => panic!("accepted, received {:?}", served.received),
            Err(err) => describe_handshake_error(&err),
        }
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let client = no_certificate_client();
        let reason = refused(Arc::new(client)).await;
        assert!(reason.contains("no certificate"), "{reason}");
    }

    #[tokio::test]
    async fn client_from_another_ca_is_refused() {
        let reason = refused(client_config("other-client.pem")).await;
        assert!(reason.contains("unknown issuer"), "{reason}");
    }

    #[tokio::test]
    async fn expired_client_is_refused() {
        let reason = refused(client_config("expired-client.pem")).await;
        assert!(reason.contains("expired"), "{reason}");
    }

    #[tokio::test]
    async fn old_style_client_is_told_to_regenerate() {
        // load_client_config (and rustls' own key check) refuse v1
        // certificates, so build this identity by hand.
        let path = cert("v1-client.pem");
        let chain = CertificateDer::pem_file_iter(&path)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&path).unwrap();
        let key = ring_provider::sign::any_supported_type(&key).unwrap();
        let identity = rustls::sign::SingleCertAndKey::from(CertifiedKey::new(chain, key));
        let client =
            ClientConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
                .with_protocol_versions(&[&TLS13])
                .unwrap()
                .with_root_certificates(load_roots(&ca()).unwrap())
                .with_client_cert_resolver(Arc::new(identity));
        let reason = refused(Arc::new(client)).await;
        assert!(
            reason.contains("X.509 v1") && reason.contains("loghog-client-cert"),
            "{reason}"
        );
    }

    #[tokio::test]
    async fn plain_tcp_on_the_tls_port_is_described() {
        let (listener, addr) = listen().await;
        let served = serve_one(listener, server_config());
        let mut tcp = TcpStream::connect(addr).await.unwrap();
        // A plain LogHog frame header: length 5, flags 0.
        tcp.write_all(b"\0\0\0\x05\0\0\0\0hello").await.unwrap();
        let err = tokio::time::timeout(TIMEOUT, served)
            .await
            .unwrap()
            .unwrap()
            .err()
            .unwrap();
        let reason = describe_handshake_error(&err);
        assert!(reason.contains("not a TLS client"), "{reason}");
        assert_eq!(refusal_of(Some(&err)), TlsRefusal::NotTls);
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out");
        assert_eq!(describe_handshake_error(&timeout), "handshake timed out");
    }

    #[tokio::test]
    async fn refusals_are_counted_under_their_reason() {
        let no_cert = no_certificate_client();
        for (client, want) in [
            (Arc::new(no_cert), TlsRefusal::NoCertificate),
            (client_config("other-client.pem"), TlsRefusal::UnknownCa),
            (client_config("expired-client.pem"), TlsRefusal::Expired),
        ] {
            match exchange(server_config(), client, b"refused").await {
                Ok(served) => panic!("accepted, received {:?}", served.received),
                Err(err) => assert_eq!(refusal_of(Some(&err)), want, "{err}"),
            }
        }
        assert_eq!(refusal_of(None), TlsRefusal::HandshakeTimeout);
        let eof = io::Error::from(io::ErrorKind::UnexpectedEof);
        assert_eq!(refusal_of(Some(&eof)), TlsRefusal::ClientAborted);
        let odd = io::Error::other("something else");
        assert_eq!(refusal_of(Some(&odd)), TlsRefusal::Other);
    }

    /// The regression test for lost messages: after the handshake the server
    /// must not send a single byte (TLS 1.3 session tickets included), because
    /// LogHog clients never read and unread data turns their close into a RST.
    /// Counts the raw bytes the client socket receives after the handshake.
    async fn bytes_after_handshake(
        server: Arc<ServerConfig>,
        client: Arc<ClientConfig>,
    ) -> Vec<u8> {
        let (listener, addr) = listen().await;
        let served = serve_one(listener, server);
        let mut tls = connect(addr, client).await.unwrap();
        tls.write_all(b"one message").await.unwrap();
        // close_notify + FIN, but keep reading the raw socket afterwards.
        tls.shutdown().await.unwrap();
        let (mut tcp, conn) = tls.into_inner();
        assert!(!conn.is_handshaking());
        let served = tokio::time::timeout(TIMEOUT, served)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(served.received, b"one message");
        // The server task has finished and dropped its socket, so this read
        // ends at its FIN, after anything it ever sent.
        let mut raw = Vec::new();
        tokio::time::timeout(TIMEOUT, tcp.read_to_end(&mut raw))
            .await
            .unwrap()
            .unwrap();
        raw
    }

    #[tokio::test]
    async fn server_sends_nothing_after_the_handshake() {
        for versions in [&[&TLS13][..], &[&TLS12][..]] {
            let client =
                ClientConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
                    .with_protocol_versions(versions)
                    .unwrap()
                    .with_root_certificates(load_roots(&ca()).unwrap())
                    .with_client_cert_resolver(
                        client_config("client.pem")
                            .client_auth_cert_resolver
                            .clone(),
                    );
            let raw = bytes_after_handshake(server_config(), Arc::new(client)).await;
            assert!(
                raw.is_empty(),
                "{versions:?}: server sent {} bytes after the handshake",
                raw.len()
            );
        }
    }

    #[tokio::test]
    async fn the_byte_count_would_catch_session_tickets() {
        // Guard for the test above: with rustls' defaults (2 tickets, an
        // in-memory session cache) the same check sees bytes, so it can fail
        // when it should. Either setting alone keeps the wire quiet.
        let cache = || rustls::server::ServerSessionMemoryCache::new(256);
        let mut defaults = (*server_config()).clone();
        defaults.send_tls13_tickets = 2;
        defaults.session_storage = cache();
        let raw = bytes_after_handshake(Arc::new(defaults), client_config("client.pem")).await;
        assert!(!raw.is_empty());

        let mut cache_only = (*server_config()).clone();
        cache_only.session_storage = cache();
        let raw = bytes_after_handshake(Arc::new(cache_only), client_config("client.pem")).await;
        assert!(raw.is_empty(), "send_tls13_tickets = 0 alone must suffice");

        let mut tickets_only = (*server_config()).clone();
        tickets_only.send_tls13_tickets = 2;
        let raw = bytes_after_handshake(Arc::new(tickets_only), client_config("client.pem")).await;
        assert!(raw.is_empty(), "no session storage alone must suffice");
    }
}
