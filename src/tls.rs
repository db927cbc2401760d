//! TLS configuration. STUB: the TLS helper replaces it.

/// STUB until the TLS module lands.
pub fn describe_handshake_error(err: &std::io::Error) -> String {
    err.to_string()
}

/// STUB until the TLS module lands.
pub fn peer_subject(_conn: &rustls::ServerConnection) -> Option<String> {
    None
}

/// STUB until the TLS module lands.
#[derive(Debug, thiserror::Error)]
#[error("tls stub")]
pub struct TlsError;

/// STUB until the TLS module lands.
pub fn load_server_config(
    _pemfile: &std::path::Path,
    _cacert: &std::path::Path,
) -> Result<std::sync::Arc<rustls::ServerConfig>, TlsError> {
    Err(TlsError)
}
