//! TLS configuration. STUB: the TLS helper replaces it.
