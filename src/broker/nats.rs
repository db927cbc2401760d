//! The NATS connection both broker sides share (issue 16): connect options
//! from `[forward]`/`[consume]` (servers, TLS, credentials or NKey), and
//! the JetStream stream both sides create if it is missing, so edges and
//! writers may start in either order.
//!
//! The stream keeps records until a writer acknowledges them (work-queue
//! retention: one consumer per partition subject) and refuses new ones
//! when full (discard new), so a full broker slows the edges down through
//! their spools instead of dropping what it holds.

use std::time::Duration;

use async_nats::jetstream::{self, stream};

use crate::config::{BrokerConn, StreamSettings};

/// How long a JetStream request (publish ack, KV update, fetch) may take
/// before it counts as failed.
pub(crate) const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// Connects to the servers of `conn`. Returns at once: the client keeps
/// connecting (and reconnecting) in the background, so an edge starts and
/// spools while the broker is down.
///
/// # Errors
/// The credentials or NKey file cannot be read, or the options are invalid.
pub(crate) async fn connect(conn: &BrokerConn, name: &str) -> anyhow::Result<async_nats::Client> {
    connect_with(conn, name, true).await
}

/// Connects to the servers of `conn` once, without retrying: for
/// `--check-broker`, which must say why a connection fails (a certificate
/// that does not chain to `tls_ca`, an NKey the server does not know)
/// instead of waiting on a client that keeps retrying in silence.
///
/// # Errors
/// As [`connect`], and every server refused or could not be reached (the
/// error names the cause).
pub(crate) async fn connect_once(
    conn: &BrokerConn,
    name: &str,
) -> anyhow::Result<async_nats::Client> {
    connect_with(conn, name, false).await
}

/// [`connect`] (`retry`: in the background for ever) or [`connect_once`].
async fn connect_with(
    conn: &BrokerConn,
    name: &str,
    retry: bool,
) -> anyhow::Result<async_nats::Client> {
    let mut opts = async_nats::ConnectOptions::new();
    if let Some(path) = &conn.creds {
        opts = opts
            .credentials_file(path)
            .await
            .map_err(|e| anyhow::anyhow!("cannot read NATS credentials {}: {e}", path.display()))?;
    }
    if let Some(path) = &conn.nkey {
        let seed = std::fs::read_to_string(path)
            .map_err(|e| anyhow::anyhow!("cannot read NKey seed {}: {e}", path.display()))?;
        opts = opts.nkey(seed.trim().to_owned());
    }
    if let Some(ca) = &conn.tls_ca {
        opts = opts.add_root_certificates(ca.clone()).require_tls(true);
    }
    if let (Some(cert), Some(key)) = (&conn.tls_cert, &conn.tls_key) {
        opts = opts
            .add_client_certificate(cert.clone(), key.clone())
            .require_tls(true);
    }
    if conn.servers.iter().any(|s| s.starts_with("tls://")) {
        opts = opts.require_tls(true);
    }
    if retry {
        opts = opts.retry_on_initial_connect().max_reconnects(None);
    }
    let client = opts
        .name(name)
        .connection_timeout(REQUEST_TIMEOUT)
        .request_timeout(Some(REQUEST_TIMEOUT))
        .connect(conn.servers.as_slice())
        .await?;
    Ok(client)
}

/// The subject of partition `p`.
pub(crate) fn subject(s: &StreamSettings, p: u32) -> String {
    format!("{}.{p}", s.subject_prefix)
}

/// The stream as configured.
pub(crate) fn stream_config(s: &StreamSettings) -> stream::Config {
    stream::Config {
        name: s.stream.clone(),
        subjects: vec![format!("{}.*", s.subject_prefix)],
        retention: stream::RetentionPolicy::WorkQueue,
        discard: stream::DiscardPolicy::New,
        storage: stream::StorageType::File,
        num_replicas: s.replicas,
        max_age: s.max_age,
        max_bytes: if s.max_bytes == 0 {
            -1
        } else {
            i64::try_from(s.max_bytes).unwrap_or(i64::MAX)
        },
        duplicate_window: s.duplicate_window,
        description: Some("loghogd records, one subject per partition".to_owned()),
        ..Default::default()
    }
}

/// Finds the stream, creating it when missing.
///
/// # Errors
/// The broker cannot be reached or refuses the stream.
pub(crate) async fn ensure_stream(
    js: &jetstream::Context,
    s: &StreamSettings,
) -> anyhow::Result<stream::Stream> {
    let mut stream = js
        .get_or_create_stream(stream_config(s))
        .await
        .map_err(|e| anyhow::anyhow!("stream {}: {e}", s.stream))?;
    // An existing stream keeps its settings (another daemon, or an
    // operator, made it); a replica count other than ours is worth saying.
    if let Ok(info) = stream.info().await {
        if info.config.num_replicas != s.replicas {
            tracing::warn!(stream = %s.stream, configured = s.replicas, actual = info.config.num_replicas, "the stream exists with another replica count; it is kept as it is");
        }
    }
    Ok(stream)
}
