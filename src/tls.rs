//! TLS for the `[server] *_ssl` listeners (SPEC §9): PEM files → rustls configs.
//!
//! The server config demands a client certificate chaining to `cacert` (mutual
//! TLS) and never writes after the handshake; the client config is for our own
//! client and the tests. `server::tcp` wraps accepted sockets with
//! `tokio_rustls::TlsAcceptor::from(load_server_config(..)?)`.

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::crypto::ring as ring_provider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{NoServerSessionStorage, WebPkiClientVerifier};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::version::{TLS12, TLS13};
use rustls::{CertificateError, ClientConfig, RootCertStore, ServerConfig, ServerConnection};

/// Why a PEM file could not be turned into a TLS configuration.
///
/// Every variant names the file, so the message can go to the operator as is.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// The file is missing or unreadable.
    #[error("{}: cannot read: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    /// The file is not valid PEM (bad base64, a section without its END line).
    #[error("{}: not a valid PEM file: {detail}", path.display())]
    Pem { path: PathBuf, detail: String },
    /// No `CERTIFICATE` section in a file that must hold key + certificate.
    #[error("{}: no certificate found (expected a '-----BEGIN CERTIFICATE-----' section next to the private key)", path.display())]
    NoCertificate { path: PathBuf },
    /// No private key section in a file that must hold key + certificate.
    #[error("{}: no private key found (expected a 'PRIVATE KEY', 'RSA PRIVATE KEY' or 'EC PRIVATE KEY' section)", path.display())]
    NoPrivateKey { path: PathBuf },
    /// The key is passphrase-protected; a daemon cannot ask for the passphrase.
    #[error("{}: the private key is encrypted and loghogd cannot ask for a passphrase; store it unencrypted (mode 0600), e.g. `openssl pkey -in OLD -out NEW`", path.display())]
    EncryptedKey { path: PathBuf },
    /// The key parses but rustls (ring) cannot sign with it.
    #[error("{}: unusable private key: {reason}", path.display())]
    BadKey { path: PathBuf, reason: String },
    /// The key belongs to none of the certificates in the file.
    #[error("{}: the private key does not match the certificate ({subject})", path.display())]
    KeyMismatch { path: PathBuf, subject: String },
    /// The CA file holds no certificate.
    #[error("{}: no CA certificate found (expected at least one '-----BEGIN CERTIFICATE-----' section)", path.display())]
    NoCaCertificate { path: PathBuf },
    /// A CA certificate was refused as a trust anchor.
    #[error("{}: CA certificate ({subject}) not acceptable: {reason}", path.display())]
    BadCaCertificate {
        path: PathBuf,
        subject: String,
        reason: String,
    },
    /// A certificate lacks what rustls/webpki or modern clients require, as
    /// certificates made by the 2013 daemon's scripts do.
    #[error("{}: {role} certificate ({subject}) {problem}; regenerate it with `{tool}` (typical of certificates made by the old loghogd scripts)", path.display())]
    Outdated {
        path: PathBuf,
        role: &'static str,
        subject: String,
        problem: String,
        tool: &'static str,
    },
    /// rustls refused to build the configuration.
    #[error("{}: {context}: {source}", path.display())]
    Rustls {
        path: PathBuf,
        context: &'static str,
        source: rustls::Error,
    },
}

const SERVER_TOOL: &str = "loghog-server-cert";
const CLIENT_TOOL: &str = "loghog-client-cert";

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
pub fn load_server_config(pemfile: &Path, cacert: &Path) -> Result<Arc<ServerConfig>, TlsError> {
    let provider = Arc::new(ring_provider::default_provider());
    let identity = load_identity(pemfile, Role::Server)?;
    let roots = load_roots(cacert)?;

    // `builder_with_provider(..).build()` without `allow_unauthenticated()`:
    // a client without a certificate fails the handshake (SPEC §9).
    let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone())
        .build()
        .map_err(|err| TlsError::BadCaCertificate {
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

/// Builds a client configuration: client certificate + key from `pemfile`,
/// the server verified against the CA(s) in `cacert`.
///
/// Used by the Rust client and by tests; TLS 1.2 and 1.3, ring crypto.
///
/// # Errors
///
/// A [`TlsError`] naming the file and the problem.
pub fn load_client_config(pemfile: &Path, cacert: &Path) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(ring_provider::default_provider());
    let identity = load_identity(pemfile, Role::Client)?;
    let roots = load_roots(cacert)?;
    let config = ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|source| TlsError::Rustls {
            path: pemfile.to_path_buf(),
            context: "cannot enable TLS 1.2/1.3",
            source,
        })?
        .with_root_certificates(roots)
        .with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    Ok(Arc::new(config))
}

/// The client certificate's subject CN, for the connection's log span.
///
/// Falls back to `sha256:` and the first 8 bytes of the certificate's SHA-256
/// when it has no CN. Control characters are replaced and the result is capped
/// at 64 characters, so a hostile certificate cannot forge log lines. `None`
/// before the handshake or without a client certificate.
pub fn peer_subject(conn: &ServerConnection) -> Option<String> {
    let cert = conn.peer_certificates()?.first()?;
    let cn = Cert::parse(cert.as_ref()).and_then(|c| c.subject_cn);
    Some(match cn {
        Some(cn) => sanitize(&cn),
        None => fingerprint(cert.as_ref()),
    })
}

/// A short reason for a failed TLS handshake, for the log line that reports it.
///
/// Understands the `io::Error`s that `tokio_rustls` returns (a `rustls::Error`
/// inside) and plain socket errors; a timeout should be passed as an error of
/// kind `TimedOut`.
pub fn describe_handshake_error(err: &io::Error) -> String {
    if let Some(tls) = err
        .get_ref()
        .and_then(|e| e.downcast_ref::<rustls::Error>())
    {
        return describe_rustls_error(tls);
    }
    match err.kind() {
        io::ErrorKind::TimedOut => "handshake timed out".to_owned(),
        io::ErrorKind::UnexpectedEof => {
            "client closed the connection during the handshake".to_owned()
        }
        io::ErrorKind::ConnectionReset => {
            "client reset the connection during the handshake".to_owned()
        }
        _ => format!("handshake failed: {err}"),
    }
}

fn describe_rustls_error(err: &rustls::Error) -> String {
    use rustls::Error as E;
    match err {
        E::NoCertificatesPresented => "client sent no certificate (a client certificate signed by cacert is required)".to_owned(),
        E::InvalidCertificate(cert) => describe_certificate_error(cert),
        E::InvalidMessage(_) | E::InappropriateMessage { .. } => {
            "not a TLS client (plain TCP sent to the TLS port?)".to_owned()
        }
        E::PeerIncompatible(why) => {
            format!("client's TLS is incompatible (needs TLS 1.2+ with modern ciphers): {why:?}")
        }
        E::AlertReceived(alert) => format!(
            "client aborted the handshake ({alert:?}); does it trust the server certificate (its cacert) and the name it connects to?"
        ),
        other => format!("handshake failed: {other}"),
    }
}

fn describe_certificate_error(err: &CertificateError) -> String {
    use CertificateError as C;
    match err {
        C::UnknownIssuer => "client certificate not signed by the configured CA (unknown issuer)".to_owned(),
        C::Expired | C::ExpiredContext { .. } => "client certificate expired".to_owned(),
        C::NotValidYet | C::NotValidYetContext { .. } => "client certificate not valid yet (check clocks)".to_owned(),
        C::Revoked => "client certificate revoked".to_owned(),
        C::BadSignature => "client certificate has a bad signature".to_owned(),
        C::InvalidPurpose | C::InvalidPurposeContext { .. } => format!(
            "client certificate is not for client authentication (extendedKeyUsage): regenerate with `{CLIENT_TOOL}`"
        ),
        C::BadEncoding => "client certificate is malformed".to_owned(),
        C::UnsupportedSignatureAlgorithmContext { .. }
        | C::UnsupportedSignatureAlgorithmForPublicKeyContext { .. } => format!(
            "client certificate uses an unsupported signature algorithm or key size (e.g. RSA < 2048 bits): regenerate with `{CLIENT_TOOL}`"
        ),
        C::Other(other) => {
            // rustls wraps webpki errors it has no variant for; their Debug
            // names are stable enough to recognise the old-scripts cases.
            let text = format!("{other:?}");
            if text.contains("UnsupportedCertVersion") {
                format!("client certificate is X.509 v1 (made by the old loghogd scripts?): regenerate with `{CLIENT_TOOL}`")
            } else if text.contains("CaUsedAsEndEntity") || text.contains("EndEntityUsedAsCa") {
                format!("client certificate chain has a CA/end-entity mix-up (basicConstraints): regenerate with `{CLIENT_TOOL}`")
            } else {
                format!("client certificate rejected: {other}")
            }
        }
        other => format!("client certificate rejected: {other:?}"),
    }
}

// === loading ===

/// Which side a key + certificate file is for; picks messages and checks.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Server,
    Client,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Server => "server",
            Role::Client => "client",
        }
    }

    fn tool(self) -> &'static str {
        match self {
            Role::Server => SERVER_TOOL,
            Role::Client => CLIENT_TOOL,
        }
    }
}

fn read_file(path: &Path) -> Result<Vec<u8>, TlsError> {
    std::fs::read(path).map_err(|source| TlsError::Read {
        path: path.to_path_buf(),
        source,
    })
}

/// Every PEM section of a file, in order; sections of unknown kinds are skipped.
fn parse_sections(path: &Path, bytes: &[u8]) -> Result<Vec<(SectionKind, Vec<u8>)>, TlsError> {
    <(SectionKind, Vec<u8>)>::pem_slice_iter(bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|err| TlsError::Pem {
            path: path.to_path_buf(),
            detail: err.to_string(),
        })
}

/// Loads key + chain from one PEM file and checks that they belong together.
fn load_identity(path: &Path, role: Role) -> Result<CertifiedKey, TlsError> {
    let bytes = read_file(path)?;
    // The PEM parser skips section kinds it does not know (PKCS#8
    // "ENCRYPTED PRIVATE KEY") or chokes on legacy encryption headers, so
    // look for those first to say something useful.
    let text = String::from_utf8_lossy(&bytes);
    if text.contains("ENCRYPTED PRIVATE KEY") || text.contains("Proc-Type: 4,ENCRYPTED") {
        return Err(TlsError::EncryptedKey {
            path: path.to_path_buf(),
        });
    }
    let sections = parse_sections(path, &bytes)?;
    let mut chain: Vec<CertificateDer<'static>> = Vec::new();
    let mut key: Option<PrivateKeyDer<'static>> = None;
    for (kind, der) in sections {
        match kind {
            SectionKind::Certificate => chain.push(CertificateDer::from(der)),
            // The first key wins; a second one is most likely a stray copy,
            // and the key/certificate match below catches the rest.
            _ if key.is_none() => key = PrivateKeyDer::from_pem(kind, der),
            _ => {}
        }
    }
    let Some(key) = key else {
        return Err(TlsError::NoPrivateKey {
            path: path.to_path_buf(),
        });
    };
    if chain.is_empty() {
        return Err(TlsError::NoCertificate {
            path: path.to_path_buf(),
        });
    }

    let signing_key = ring_provider::sign::any_supported_type(&key).map_err(|err| {
        // ring refuses RSA keys under 2048 bits, which the old scripts made.
        let reason = match key_rsa_bits(&key) {
            Some(bits) if bits < 2048 => format!(
                "{bits}-bit RSA key; at least 2048 bits are required: regenerate with `{}`",
                role.tool()
            ),
            _ => format!("{err} (supported: RSA 2048-8192, ECDSA P-256/P-384, Ed25519)"),
        };
        TlsError::BadKey {
            path: path.to_path_buf(),
            reason,
        }
    })?;

    put_leaf_first(path, &mut chain, signing_key.as_ref())?;
    check_leaf(path, role, &chain[0])?;
    Ok(CertifiedKey::new(chain, signing_key))
}

/// Moves the certificate that matches `key` to the front of `chain`.
///
/// rustls sends `chain[0]` as the leaf. The old scripts wrote the CA before
/// the server certificate, so rather than failing on an order problem, find
/// the right one by its public key.
fn put_leaf_first(
    path: &Path,
    chain: &mut [CertificateDer<'static>],
    key: &dyn SigningKey,
) -> Result<(), TlsError> {
    let Some(spki) = key.public_key() else {
        // ring always knows the public key; without it, let rustls decide.
        return Ok(());
    };
    let matches = |cert: &CertificateDer<'_>| {
        Cert::parse(cert.as_ref()).is_some_and(|c| c.spki == spki.as_ref())
    };
    if matches(&chain[0]) {
        return Ok(());
    }
    match chain.iter().position(matches) {
        Some(pos) => {
            tracing::warn!(
                path = %path.display(),
                "certificate matching the private key is not the first in the file; using it as the leaf"
            );
            chain[..=pos].rotate_right(1);
            Ok(())
        }
        None => Err(TlsError::KeyMismatch {
            path: path.to_path_buf(),
            subject: describe_subject(&chain[0]),
        }),
    }
}

/// Refuses leaf certificates that rustls/webpki or hostname-checking clients
/// would reject later, at handshake time, with a much vaguer message.
fn check_leaf(path: &Path, role: Role, cert: &CertificateDer<'_>) -> Result<(), TlsError> {
    let outdated = |problem: String| TlsError::Outdated {
        path: path.to_path_buf(),
        role: role.name(),
        subject: describe_subject(cert),
        problem,
        tool: role.tool(),
    };
    let Some(info) = Cert::parse(cert.as_ref()) else {
        return Err(TlsError::Rustls {
            path: path.to_path_buf(),
            context: "cannot parse the certificate",
            source: CertificateError::BadEncoding.into(),
        });
    };
    if info.version < 3 {
        return Err(outdated(format!(
            "is X.509 v{} (no extensions), which rustls rejects",
            info.version
        )));
    }
    if info.is_ca == Some(true) {
        return Err(outdated(
            "is a CA certificate (basicConstraints CA:TRUE), not a server or client certificate"
                .to_owned(),
        ));
    }
    if let Some(bits) = info.rsa_bits.filter(|&b| b < 2048) {
        return Err(outdated(format!(
            "has a {bits}-bit RSA key; at least 2048 bits are required"
        )));
    }
    if role == Role::Server && !info.has_san {
        return Err(outdated(
            "has no subjectAltName; clients that check the server name (rustls, Python with check_hostname) ignore the CN and reject it".to_owned(),
        ));
    }
    Ok(())
}

/// Loads the CA certificate(s) that peers must chain to.
fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let bytes = read_file(path)?;
    let sections = parse_sections(path, &bytes)?;
    let mut roots = RootCertStore::empty();
    for (kind, der) in sections {
        if kind != SectionKind::Certificate {
            continue;
        }
        let cert = CertificateDer::from(der);
        let subject = describe_subject(&cert);
        let outdated = |problem: &str| TlsError::Outdated {
            path: path.to_path_buf(),
            role: "CA",
            subject: subject.clone(),
            problem: problem.to_owned(),
            tool: SERVER_TOOL,
        };
        // webpki itself would take a v1 or non-CA certificate as a trust
        // anchor, but everything such a CA signed (old-style v1 leaves) fails
        // later, one handshake at a time, and strict clients reject the CA
        // itself; better to stop at start-up with the fix in the message.
        let info = Cert::parse(cert.as_ref()).ok_or_else(|| TlsError::BadCaCertificate {
            path: path.to_path_buf(),
            subject: subject.clone(),
            reason: "not a valid X.509 certificate".to_owned(),
        })?;
        if info.version < 3 {
            return Err(outdated("is X.509 v1 (no basicConstraints extension)"));
        }
        if info.is_ca != Some(true) {
            return Err(outdated(
                "is not a CA certificate (no basicConstraints CA:TRUE)",
            ));
        }
        if info.rsa_bits.is_some_and(|b| b < 2048) {
            return Err(outdated(
                "has an RSA key under 2048 bits, which rustls cannot verify",
            ));
        }
        roots.add(cert).map_err(|err| TlsError::BadCaCertificate {
            path: path.to_path_buf(),
            subject,
            reason: err.to_string(),
        })?;
    }
    if roots.is_empty() {
        return Err(TlsError::NoCaCertificate {
            path: path.to_path_buf(),
        });
    }
    Ok(roots)
}

/// `CN=...` for error messages, or the fingerprint when there is no CN.
fn describe_subject(cert: &CertificateDer<'_>) -> String {
    match Cert::parse(cert.as_ref()).and_then(|c| c.subject_cn) {
        Some(cn) => format!("CN={}", sanitize(&cn)),
        None => fingerprint(cert.as_ref()),
    }
}

/// Size of an RSA private key's modulus, for the "too small" message.
fn key_rsa_bits(key: &PrivateKeyDer<'_>) -> Option<usize> {
    // PKCS#1 RSAPrivateKey ::= SEQUENCE { version INTEGER, modulus INTEGER, ... }
    let pkcs1 = match key {
        PrivateKeyDer::Pkcs1(k) => k.secret_pkcs1_der().to_vec(),
        PrivateKeyDer::Pkcs8(k) => {
            // PrivateKeyInfo ::= SEQUENCE { version, AlgorithmIdentifier, OCTET STRING key }
            let mut info = Der::new(k.secret_pkcs8_der()).expect(0x30)?;
            info.expect(0x02)?;
            let alg = info.expect(0x30)?;
            if alg.peek_tlv(0x06)? != OID_RSA_ENCRYPTION {
                return None;
            }
            info.take(0x04)?.to_vec()
        }
        _ => return None,
    };
    let mut seq = Der::new(&pkcs1).expect(0x30)?;
    seq.expect(0x02)?;
    Some(integer_bits(seq.take(0x02)?))
}

fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(64)
        .collect()
}

/// `sha256:` + the first 8 bytes of the certificate's SHA-256, in hex.
fn fingerprint(der: &[u8]) -> String {
    let mut out = String::from("sha256:");
    // The hash comes from the ring provider's TLS 1.3 suite, so no extra
    // dependency is needed for a log-only fingerprint.
    let hash = ring_provider::cipher_suite::TLS13_AES_128_GCM_SHA256
        .tls13()
        .map(|suite| suite.common.hash_provider.hash(der));
    match hash {
        Some(digest) => {
            for byte in digest.as_ref().iter().take(8) {
                let _ = write!(out, "{byte:02x}");
            }
        }
        None => out.push('?'),
    }
    out
}

// === minimal X.509 reading ===

const OID_COMMON_NAME: &[u8] = &[0x55, 0x04, 0x03];
const OID_BASIC_CONSTRAINTS: &[u8] = &[0x55, 0x1d, 0x13];
const OID_SUBJECT_ALT_NAME: &[u8] = &[0x55, 0x1d, 0x11];
const OID_RSA_ENCRYPTION: &[u8] = &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01];

/// The few certificate facts loghogd checks or logs.
///
/// rustls exposes none of these and an X.509 crate would be a big dependency
/// for a handful of fields, so the certificate is walked directly (RFC 5280
/// §4.1); anything unexpected makes `parse` return `None`.
struct Cert {
    /// 1 or 3 (2 is never seen in practice).
    version: u8,
    /// The first commonName of the subject, if it is a string type.
    subject_cn: Option<String>,
    /// basicConstraints cA; `None` when the extension is absent.
    is_ca: Option<bool>,
    /// Whether a subjectAltName extension is present.
    has_san: bool,
    /// Modulus size for RSA keys.
    rsa_bits: Option<usize>,
    /// The complete SubjectPublicKeyInfo TLV, to match against the private key.
    spki: Vec<u8>,
}

impl Cert {
    fn parse(der: &[u8]) -> Option<Cert> {
        let mut tbs = Der::new(der).expect(0x30)?.expect(0x30)?;
        let mut version = 1;
        if tbs.peek_tag() == Some(0xa0) {
            let v = tbs.expect(0xa0)?.take(0x02)?;
            version = v.last().copied()?.checked_add(1)?;
        }
        tbs.take(0x02)?; // serialNumber
        tbs.take(0x30)?; // signature AlgorithmIdentifier
        tbs.take(0x30)?; // issuer
        tbs.take(0x30)?; // validity
        let subject = tbs.expect(0x30)?;
        let spki = tbs.take_tlv(0x30)?;

        let mut cert = Cert {
            version,
            subject_cn: common_name(subject),
            is_ca: None,
            has_san: false,
            rsa_bits: rsa_bits(spki),
            spki: spki.to_vec(),
        };
        while let Some((tag, content)) = tbs.item() {
            if tag != 0xa3 {
                continue; // issuerUniqueID / subjectUniqueID
            }
            let mut exts = Der::new(content).expect(0x30)?;
            while let Some((_, ext)) = exts.item() {
                let mut ext = Der::new(ext);
                let oid = ext.take(0x06)?;
                if ext.peek_tag() == Some(0x01) {
                    ext.take(0x01)?; // critical
                }
                let value = ext.take(0x04)?;
                if oid == OID_SUBJECT_ALT_NAME {
                    cert.has_san = true;
                } else if oid == OID_BASIC_CONSTRAINTS {
                    // BasicConstraints ::= SEQUENCE { cA BOOLEAN DEFAULT FALSE, ... }
                    let mut bc = Der::new(value).expect(0x30)?;
                    let ca = bc.peek_tag() == Some(0x01) && bc.take(0x01)?.iter().any(|&b| b != 0);
                    cert.is_ca = Some(ca);
                }
            }
        }
        Some(cert)
    }
}

/// Name ::= SEQUENCE OF SET OF SEQUENCE { type OID, value ANY }
fn common_name(mut name: Der<'_>) -> Option<String> {
    while let Some((_, rdn)) = name.item() {
        let mut rdn = Der::new(rdn);
        while let Some((_, atv)) = rdn.item() {
            let mut atv = Der::new(atv);
            if atv.take(0x06)? != OID_COMMON_NAME {
                continue;
            }
            let (tag, value) = atv.item()?;
            // UTF8String, PrintableString, T61String, IA5String: treat as UTF-8.
            return match tag {
                0x0c | 0x13 | 0x14 | 0x16 => Some(String::from_utf8_lossy(value).into_owned()),
                _ => None,
            };
        }
    }
    None
}

/// SubjectPublicKeyInfo TLV → RSA modulus bits, `None` for other key types.
fn rsa_bits(spki_tlv: &[u8]) -> Option<usize> {
    let mut spki = Der::new(spki_tlv).expect(0x30)?;
    let alg = spki.expect(0x30)?;
    if alg.peek_tlv(0x06)? != OID_RSA_ENCRYPTION {
        return None;
    }
    // BIT STRING: one "unused bits" byte, then RSAPublicKey ::= SEQUENCE { n, e }
    let bits = spki.take(0x03)?;
    let mut key = Der::new(bits.get(1..)?).expect(0x30)?;
    Some(integer_bits(key.take(0x02)?))
}

/// Bit length of a non-negative DER INTEGER's content.
fn integer_bits(int: &[u8]) -> usize {
    let int = match int.iter().position(|&b| b != 0) {
        Some(first) => &int[first..],
        None => return 0,
    };
    int.len() * 8 - int[0].leading_zeros() as usize
}

/// A cursor over concatenated DER TLVs with single-byte tags (all X.509 needs).
#[derive(Clone, Copy)]
struct Der<'a> {
    rest: &'a [u8],
}

impl<'a> Der<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Der { rest: bytes }
    }

    fn peek_tag(&self) -> Option<u8> {
        self.rest.first().copied()
    }

    /// The next TLV as (tag, content, whole TLV); `None` at the end or on bad DER.
    fn next_tlv(&mut self) -> Option<(u8, &'a [u8], &'a [u8])> {
        let (&tag, after_tag) = self.rest.split_first()?;
        let (&first, after_len) = after_tag.split_first()?;
        let (len, body) = if first < 0x80 {
            (usize::from(first), after_len)
        } else {
            let n = usize::from(first & 0x7f);
            if n == 0 || n > 4 || after_len.len() < n {
                return None;
            }
            let len = after_len[..n]
                .iter()
                .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
            (len, &after_len[n..])
        };
        if body.len() < len {
            return None;
        }
        let header = self.rest.len() - body.len();
        let whole = &self.rest[..header + len];
        self.rest = &body[len..];
        Some((tag, &body[..len], whole))
    }

    fn item(&mut self) -> Option<(u8, &'a [u8])> {
        self.next_tlv().map(|(tag, content, _)| (tag, content))
    }

    /// The content of the next TLV, which must have tag `tag`.
    fn take(&mut self, tag: u8) -> Option<&'a [u8]> {
        self.take_tlv(tag)
            .and_then(|tlv| Der::new(tlv).item().map(|(_, c)| c))
    }

    /// The whole next TLV (header included), which must have tag `tag`.
    fn take_tlv(&mut self, tag: u8) -> Option<&'a [u8]> {
        match self.next_tlv()? {
            (t, _, whole) if t == tag => Some(whole),
            _ => None,
        }
    }

    /// A cursor over the content of the next TLV, which must have tag `tag`.
    fn expect(&mut self, tag: u8) -> Option<Der<'a>> {
        self.take(tag).map(Der::new)
    }

    /// The content of the first TLV, if it has tag `tag`, without consuming.
    fn peek_tlv(&self, tag: u8) -> Option<&'a [u8]> {
        let mut copy = *self;
        copy.take(tag)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        load_client_config(&cert(pem), &ca()).unwrap()
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
        load_client_config(&cert("client.pem"), &ca()).unwrap();
        let err = load_client_config(&cert("v1-server.pem"), &ca())
            .err()
            .unwrap();
        assert!(err.to_string().contains("loghog-client-cert"), "{err}");
    }

    #[test]
    fn der_walker_reads_the_fixtures() {
        let der = |name: &str| {
            let path = cert(name);
            CertificateDer::pem_file_iter(&path)
                .unwrap()
                .next()
                .unwrap()
                .unwrap()
        };
        let ca = Cert::parse(der("loghog-ca.cert").as_ref()).unwrap();
        assert_eq!((ca.version, ca.is_ca, ca.has_san), (3, Some(true), false));
        assert_eq!(ca.subject_cn.as_deref(), Some("loghog CA"));
        let server = Cert::parse(der("loghog-server.pem").as_ref()).unwrap();
        assert_eq!(
            (server.version, server.is_ca, server.has_san),
            (3, Some(false), true)
        );
        assert_eq!(server.rsa_bits, None);
        let rsa = Cert::parse(der("server-rsa-pkcs1.pem").as_ref()).unwrap();
        assert_eq!(rsa.rsa_bits, Some(2048));
        let v1 = Cert::parse(der("v1-server.pem").as_ref()).unwrap();
        assert_eq!((v1.version, v1.is_ca, v1.has_san), (1, None, false));
        assert_eq!(v1.subject_cn.as_deref(), Some("v1-server"));
        assert!(Cert::parse(b"\x30\x82\xff").is_none());
        assert!(Cert::parse(&[]).is_none());
        assert!(fingerprint(b"x").starts_with("sha256:") && fingerprint(b"x").len() == 23);
        assert_eq!(sanitize("a\nb"), "a?b");
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

    async fn refused(client: Arc<ClientConfig>) -> String {
        match exchange(server_config(), client, b"should not arrive").await {
            Ok(served) => panic!("accepted, received {:?}", served.received),
            Err(err) => describe_handshake_error(&err),
        }
    }

    #[tokio::test]
    async fn client_without_certificate_is_refused() {
        let client =
            ClientConfig::builder_with_provider(Arc::new(ring_provider::default_provider()))
                .with_protocol_versions(&[&TLS13, &TLS12])
                .unwrap()
                .with_root_certificates(load_roots(&ca()).unwrap())
                .with_no_client_auth();
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
        let timeout = io::Error::new(io::ErrorKind::TimedOut, "tls handshake timed out");
        assert_eq!(describe_handshake_error(&timeout), "handshake timed out");
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
