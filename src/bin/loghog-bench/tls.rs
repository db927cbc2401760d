//! TLS client side of the generator: a rustls `ClientConfig` with a client
//! certificate (mutual TLS, SPEC §9), built here rather than in the crate's
//! `tls` module so the bench stays self-contained.
//!
//! Inputs mirror the Python client's `ssl_info`: one PEM with the client's
//! key and certificate, and the CA certificate that signed the server.

use std::path::Path;
use std::sync::Arc;

use anyhow::{bail, Context as _};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

/// Builds the client config.
///
/// With `check_name` false the server's chain is still verified against the
/// CA, but a certificate that does not name the host we dialled is accepted:
/// that is what the Python client does (it passes `cacert` and never checks
/// the host name), and the daemon's certificates are made for it.
///
/// # Errors
/// Unreadable or empty PEM files, a key that does not match, or a CA that
/// rustls will not take as a trust anchor.
pub fn load_client_config(
    pemfile: &Path,
    cacert: &Path,
    check_name: bool,
) -> anyhow::Result<Arc<ClientConfig>> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());

    let mut roots = RootCertStore::empty();
    let ca_certs = read_certs(cacert).context("reading --tls-ca")?;
    for cert in ca_certs {
        roots
            .add(cert)
            .with_context(|| format!("{}: not a usable CA certificate", cacert.display()))?;
    }
    let roots = Arc::new(roots);

    let chain = read_certs(pemfile).context("reading --tls-pem")?;
    let key = PrivateKeyDer::from_pem_file(pemfile)
        .with_context(|| format!("{}: no private key found", pemfile.display()))?;

    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS protocol versions")?;
    let builder = if check_name {
        builder.with_root_certificates(roots)
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .context("building the server certificate verifier")?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnlyVerifier { inner }))
    };
    let config = builder
        .with_client_auth_cert(chain, key)
        .with_context(|| format!("{}: client key and certificate", pemfile.display()))?;
    Ok(Arc::new(config))
}

/// The name to present for `host`: `name` if given, else the address itself.
///
/// # Errors
/// A name rustls does not accept as a DNS name or IP address.
pub fn server_name(
    name: Option<&str>,
    ip: std::net::IpAddr,
) -> anyhow::Result<ServerName<'static>> {
    match name {
        Some(n) => ServerName::try_from(n.to_string())
            .with_context(|| format!("--tls-server-name {n:?} is not a valid DNS name or IP")),
        None => Ok(ServerName::IpAddress(ip.into())),
    }
}

fn read_certs(path: &Path) -> anyhow::Result<Vec<CertificateDer<'static>>> {
    let certs = CertificateDer::pem_file_iter(path)
        .with_context(|| format!("opening {}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("{}: bad PEM", path.display()))?;
    if certs.is_empty() {
        bail!("{}: no CERTIFICATE block", path.display());
    }
    Ok(certs)
}

/// Full WebPKI verification of the server's chain, minus the host name match.
#[derive(Debug)]
struct ChainOnlyVerifier {
    /// Does all the real work; only its name-mismatch verdict is overruled.
    inner: Arc<WebPkiServerVerifier>,
}

// === impl ChainOnlyVerifier ===

impl ServerCertVerifier for ChainOnlyVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // WebPKI checks the name last, after the chain, validity period and
        // revocation, so a name error means everything else passed.
        match self.inner.verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        ) {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}
