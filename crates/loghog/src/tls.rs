//! The client side of LogHog over TLS (SPEC §9): a rustls [`ClientConfig`]
//! that presents the client's certificate (mutual TLS) and verifies the
//! daemon's certificate against the CA that signed it.
//!
//! Inputs mirror the Python client's `ssl_info`: one PEM with the client's
//! key and certificate, and the CA certificate. Loading and its diagnostics
//! come from `loghog_protocol::tls`, shared with the daemon.

use std::path::Path;
use std::sync::Arc;

pub use loghog_protocol::tls::TlsError;
use loghog_protocol::tls::{load_identity, load_roots, Role};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::WebPkiServerVerifier;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::version::{TLS12, TLS13};
use rustls::{CertificateError, ClientConfig, DigitallySignedStruct, SignatureScheme};

/// Builds the client config from the client's key + certificate PEM and the
/// CA file. TLS 1.2 and 1.3, ring crypto.
///
/// With `check_name` the server's certificate must also name the host that
/// is dialled (or the name given to the connector). Without it, the chain is
/// still fully verified against the CA but the name is not matched: that is
/// what the Python client does (it passes `cacert` and never checks the host
/// name), so the load generator can reach a daemon by any address.
///
/// # Errors
/// A [`TlsError`] naming the file and the problem (unreadable, no key, a key
/// that does not match, a CA that cannot be a trust anchor, certificates made
/// by the old scripts).
pub fn client_config(
    pemfile: &Path,
    cacert: &Path,
    check_name: bool,
) -> Result<Arc<ClientConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let identity = load_identity(pemfile, Role::Client)?;
    let roots = Arc::new(load_roots(cacert)?);
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(&[&TLS13, &TLS12])
        .map_err(|source| TlsError::Rustls {
            path: pemfile.to_path_buf(),
            context: "cannot enable TLS 1.2/1.3",
            source,
        })?;
    let builder = if check_name {
        builder.with_root_certificates(roots)
    } else {
        let inner = WebPkiServerVerifier::builder_with_provider(roots, provider)
            .build()
            .map_err(|err| TlsError::BadCaCertificate {
                path: cacert.to_path_buf(),
                subject: "all".to_owned(),
                reason: err.to_string(),
            })?;
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ChainOnlyVerifier { inner }))
    };
    let config =
        builder.with_client_cert_resolver(Arc::new(rustls::sign::SingleCertAndKey::from(identity)));
    Ok(Arc::new(config))
}

/// The name to present for a server: `name` if given, else the address.
///
/// # Errors
/// A name that is neither a valid DNS name nor an IP address.
pub fn server_name(
    name: Option<&str>,
    ip: std::net::IpAddr,
) -> Result<ServerName<'static>, rustls::pki_types::InvalidDnsNameError> {
    match name {
        Some(n) => ServerName::try_from(n.to_string()),
        None => Ok(ServerName::IpAddress(ip.into())),
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn cert(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../../tests/certs")
            .join(name)
    }

    #[test]
    fn client_config_loads_and_refuses_old_certificates() {
        client_config(&cert("client.pem"), &cert("loghog-ca.cert"), true).unwrap();
        client_config(&cert("client.pem"), &cert("loghog-ca.cert"), false).unwrap();
        let err = client_config(&cert("v1-server.pem"), &cert("loghog-ca.cert"), true)
            .err()
            .unwrap();
        assert!(err.to_string().contains("loghog-client-cert"), "{err}");
    }
}
