//! PEM/DER loading and certificate diagnostics for both ends of a LogHog TLS
//! connection (SPEC §9): a key + certificate file into a rustls
//! [`CertifiedKey`], a CA file into a [`RootCertStore`], and messages that tell
//! an operator what is wrong with a certificate and how to fix it.
//!
//! The daemon builds its server config from these (`loghogd`'s `input::tls`),
//! the client crate its client config (`loghog::tls`).

use std::fmt::Write as _;
use std::io;
use std::path::{Path, PathBuf};

use rustls::crypto::ring as ring_provider;
use rustls::pki_types::pem::{PemObject, SectionKind};
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::{CertifiedKey, SigningKey};
use rustls::{CertificateError, RootCertStore};

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

pub fn describe_rustls_error(err: &rustls::Error) -> String {
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
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// The daemon's `pemfile`.
    Server,
    /// A client's PEM (the Python client's `ssl_info['pemfile']`).
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
pub fn load_identity(path: &Path, role: Role) -> Result<CertifiedKey, TlsError> {
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
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
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
pub fn describe_subject(cert: &CertificateDer<'_>) -> String {
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

pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { '?' } else { c })
        .take(64)
        .collect()
}

/// `sha256:` + the first 8 bytes of the certificate's SHA-256, in hex.
pub fn fingerprint(der: &[u8]) -> String {
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

/// The first commonName of a certificate's subject, exactly as it is
/// written (not sanitized: for matching, e.g. loghogd's per-certificate
/// scopes; sanitize it before it reaches a log line). `None` when the
/// certificate has no string CN or cannot be read.
pub fn subject_cn(cert: &CertificateDer<'_>) -> Option<String> {
    Cert::parse(cert.as_ref()).and_then(|c| c.subject_cn)
}

/// The subject's CN of a peer's certificate for a log line, or `sha256:` and
/// the first 8 bytes of its SHA-256 when it has no CN. Control characters are
/// replaced and the result is capped at 64 characters, so a hostile
/// certificate cannot forge log lines.
pub fn subject_name(cert: &CertificateDer<'_>) -> String {
    match Cert::parse(cert.as_ref()).and_then(|c| c.subject_cn) {
        Some(cn) => sanitize(&cn),
        None => fingerprint(cert.as_ref()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cert(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/certs")
            .join(name)
    }

    #[test]
    fn identities_and_roots_load() {
        load_identity(&cert("client.pem"), Role::Client).unwrap();
        load_identity(&cert("loghog-server.pem"), Role::Server).unwrap();
        assert!(!load_roots(&cert("loghog-ca.cert")).unwrap().is_empty());
        let err = load_identity(&cert("v1-server.pem"), Role::Client)
            .err()
            .unwrap();
        assert!(err.to_string().contains("loghog-client-cert"), "{err}");
        let err = load_roots(&cert("client.pem")).err().unwrap();
        assert!(err.to_string().contains("CA:TRUE"), "{err}");
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
        assert_eq!(subject_cn(&der("client.pem")).as_deref(), Some("client"));
        assert!(Cert::parse(b"\x30\x82\xff").is_none());
        assert!(Cert::parse(&[]).is_none());
        assert!(fingerprint(b"x").starts_with("sha256:") && fingerprint(b"x").len() == 23);
        assert_eq!(sanitize("a\nb"), "a?b");
    }
}
