//! The HTTP input (issue 14): an axum router served by hyper on the
//! daemon's runtime, over plain TCP or TLS (`[http] tls`), with the
//! authentication every handler goes through ([`authorize`]: mutual-TLS
//! client certificates, bearer tokens from `tokens_file`, or anonymous on
//! loopback by opt-in) and the connection, header and body limits.
//! Handlers live in [`ingest`]; other fragments (metrics) are merged in
//! [`routes`].
//!
//! Tokens file format, one token a line (`#` comments and blank lines
//! ignored): the lowercase hex SHA-256 of the token, then its scopes
//! separated by spaces: `write:APP`, `write:*`, `read:APP`, `read:*`,
//! `metrics`. Make a line with
//! `printf %s "$TOKEN" | sha256sum | sed "s/ .*/ write:my-app/"`.
//! Only hashes are held; presented tokens are hashed and compared in
//! constant time, and never logged.

pub(crate) mod ingest;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::{ConfigError, HttpSection};
use crate::input::tls::TlsSetup;
use crate::ratelimit::RateLimit;
use crate::router::RouterCtx;

/// How long a connection still being served at shutdown may take to
/// finish its request before it is dropped.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A permission a request needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Scope {
    /// Write messages for this application (`write:APP`).
    Write(String),
    /// Read the daemon's metrics (`metrics`).
    Metrics,
    /// Read this application's logs (`read:APP`, the viewer).
    #[allow(dead_code)] // required by the viewer
    Read(String),
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Write(app) => write!(f, "write:{app}"),
            Scope::Metrics => f.write_str("metrics"),
            Scope::Read(app) => write!(f, "read:{app}"),
        }
    }
}

/// One scope a token was given in the tokens file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Grant {
    /// `write:*`.
    WriteAll,
    /// `write:APP`.
    Write(String),
    /// `read:*`.
    ReadAll,
    /// `read:APP`.
    Read(String),
    /// `metrics`.
    Metrics,
}

impl Grant {
    fn parse(s: &str) -> Option<Grant> {
        match s {
            "metrics" => Some(Grant::Metrics),
            "write:*" => Some(Grant::WriteAll),
            "read:*" => Some(Grant::ReadAll),
            _ => {
                if let Some(app) = s.strip_prefix("write:").filter(|a| !a.is_empty()) {
                    Some(Grant::Write(app.to_owned()))
                } else {
                    s.strip_prefix("read:")
                        .filter(|a| !a.is_empty())
                        .map(|app| Grant::Read(app.to_owned()))
                }
            }
        }
    }

    fn allows(&self, scope: &Scope) -> bool {
        match (self, scope) {
            (Grant::WriteAll, Scope::Write(_)) | (Grant::ReadAll, Scope::Read(_)) => true,
            (Grant::Write(a), Scope::Write(b)) | (Grant::Read(a), Scope::Read(b)) => a == b,
            (Grant::Metrics, Scope::Metrics) => true,
            _ => false,
        }
    }
}

/// The tokens of `tokens_file`: SHA-256 digests and their scopes.
#[derive(Clone, Default)]
pub(crate) struct Tokens {
    entries: Vec<([u8; 32], Arc<[Grant]>)>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the hashes: they are as good as a password list offline.
        write!(f, "Tokens({} entries)", self.entries.len())
    }
}

// === impl Tokens ===

impl Tokens {
    /// Reads `path` (see the module docs for the format).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the line and the fix.
    pub(crate) fn load(path: &Path) -> Result<Tokens, ConfigError> {
        let text = crate::config::read_config_file(path, "[http] tokens_file")?;
        Tokens::parse(&text, path)
    }

    /// Parses the text of a tokens file; `path` names it in errors.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the line and the fix.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Tokens, ConfigError> {
        let mut entries = Vec::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let place = format!("line {}", i + 1);
            let mut words = line.split_whitespace();
            let hash = words.next().unwrap_or_default();
            let Some(digest) = decode_hex32(hash) else {
                return Err(ConfigError::new(
                    path,
                    place,
                    "the line does not start with the 64 hex digits of a token's SHA-256; \
                     make one with: printf %s \"$TOKEN\" | sha256sum",
                ));
            };
            let mut grants = Vec::new();
            for w in words {
                let Some(g) = Grant::parse(w) else {
                    return Err(ConfigError::new(
                        path,
                        place,
                        format!("\"{w}\" is not a scope; use write:APP, write:*, read:APP, read:* or metrics"),
                    ));
                };
                grants.push(g);
            }
            if grants.is_empty() {
                return Err(ConfigError::new(
                    path,
                    place,
                    "the token has no scopes; list them after the hash (e.g. write:my-app metrics)",
                ));
            }
            entries.push((digest, grants.into()));
        }
        Ok(Tokens { entries })
    }

    /// The scopes of `token`, if it is listed. Every entry is compared, in
    /// constant time, so the time taken says nothing about which matched.
    fn find(&self, token: &str) -> Option<Arc<[Grant]>> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        for (d, grants) in &self.entries {
            if bool::from(d.ct_eq(&digest)) {
                found = Some(grants.clone());
            }
        }
        found
    }
}

fn decode_hex32(s: &str) -> Option<[u8; 32]> {
    let b = s.as_bytes();
    if b.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in b.chunks(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// What the HTTP handlers share.
#[derive(Debug)]
pub(crate) struct HttpState {
    /// Ingest goes through the same router as every other input.
    pub(crate) router: Arc<RouterCtx>,
    /// Bearer tokens (`None`: no `tokens_file`).
    tokens: Option<Tokens>,
    /// Requests without credentials get every scope (loopback opt-in).
    anonymous: bool,
    /// Largest request body (413 past it).
    pub(crate) max_body_bytes: usize,
    /// Time allowed for a request's body.
    pub(crate) body_timeout: Duration,
    /// Limits the lines about refused requests and connections.
    limiter: RateLimit,
}

impl HttpState {
    /// The state for `section`, with `tokens` read from its `tokens_file`.
    pub(crate) fn new(
        router: Arc<RouterCtx>,
        section: &HttpSection,
        tokens: Option<Tokens>,
    ) -> HttpState {
        HttpState {
            router,
            tokens,
            anonymous: section.allow_anonymous_on_loopback,
            max_body_bytes: section.max_body_bytes,
            body_timeout: section.body_timeout,
            limiter: RateLimit::new(20, Duration::from_secs(10)),
        }
    }
}

/// What a connection knows about its peer, put into every request.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The peer's address.
    pub(crate) addr: SocketAddr,
    /// A client certificate chaining to `cacert` was verified in the
    /// handshake: the peer has every scope.
    pub(crate) client_cert: bool,
}

/// Why a request was not allowed. The reply names the missing scope and
/// never which tokens exist.
#[derive(Debug)]
pub(crate) enum Denied {
    /// No credentials, or a token that is not listed: 401.
    Unauthenticated(Scope),
    /// A listed token without the scope: 403.
    Forbidden(Scope),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (status, text) = match &self {
            Denied::Unauthenticated(s) => (
                StatusCode::UNAUTHORIZED,
                format!("authentication required: send a bearer token with scope {s} (or a client certificate)\n"),
            ),
            Denied::Forbidden(s) => (
                StatusCode::FORBIDDEN,
                format!("the token lacks scope {s}\n"),
            ),
        };
        let mut r = (status, text).into_response();
        if status == StatusCode::UNAUTHORIZED {
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"loghogd\""),
            );
        }
        r
    }
}

/// Who sent a request, as far as authentication goes.
#[derive(Debug, Clone)]
pub(crate) enum Principal {
    /// Every scope: a verified client certificate, or anonymous access on
    /// loopback by opt-in.
    Everything,
    /// A listed bearer token's scopes.
    Token(Arc<[Grant]>),
    /// No credentials (or a token not listed): nothing is allowed.
    Nobody,
}

impl Principal {
    /// Checks that this principal has `scope`.
    ///
    /// # Errors
    /// [`Denied`] names the scope.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), Denied> {
        match self {
            Principal::Everything => Ok(()),
            Principal::Token(grants) if grants.iter().any(|g| g.allows(&scope)) => Ok(()),
            Principal::Token(_) => Err(Denied::Forbidden(scope)),
            Principal::Nobody => Err(Denied::Unauthenticated(scope)),
        }
    }
}

/// Who sent the request with `headers` over the connection of `peer`: a
/// client certificate wins, then a bearer token, then anonymous access.
pub(crate) fn authenticate(state: &HttpState, peer: &Peer, headers: &HeaderMap) -> Principal {
    if peer.client_cert {
        return Principal::Everything;
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (kind, rest) = v.split_once(' ')?;
            kind.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
    if let (Some(token), Some(tokens)) = (bearer, &state.tokens) {
        return match tokens.find(token) {
            Some(grants) => Principal::Token(grants),
            None => {
                if let Some(suppressed) = state.limiter.check() {
                    warn!(peer = %peer.addr, suppressed, "http request with a token that is not listed");
                }
                Principal::Nobody
            }
        };
    }
    if state.anonymous {
        return Principal::Everything;
    }
    Principal::Nobody
}

/// Checks `scope` for a request in one step (for handlers that know it
/// before reading the body, such as metrics).
///
/// # Errors
/// [`Denied`] names the scope.
#[allow(dead_code)] // used by the metrics fragment (issue 14 item 3)
pub(crate) fn authorize(
    state: &HttpState,
    peer: &Peer,
    headers: &HeaderMap,
    scope: Scope,
) -> Result<(), Denied> {
    authenticate(state, peer, headers).require(scope)
}

/// Every route the HTTP server answers. The one place other fragments are
/// mounted: the metrics and healthz router is `.merge`d here.
pub(crate) fn routes(state: Arc<HttpState>, metrics: axum::Router) -> axum::Router {
    use axum::routing::post;
    // `/metrics` and `/healthz` need the `metrics` scope like any other
    // endpoint (anonymous only on loopback, when the operator opted in).
    let metrics = metrics.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        require_metrics,
    ));
    axum::Router::new()
        .route("/v1/logs", post(ingest::logs))
        .route("/backend/save/", post(ingest::daedalus))
        .with_state(state)
        .merge(metrics)
}

/// The `metrics` scope check in front of the metrics routes.
async fn require_metrics(
    axum::extract::State(state): axum::extract::State<Arc<HttpState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let allowed = match req.extensions().get::<Peer>() {
        Some(peer) => authorize(&state, peer, req.headers(), Scope::Metrics),
        // Every connection is served with its Peer; without one, nobody.
        None => Err(Denied::Unauthenticated(Scope::Metrics)),
    };
    match allowed {
        Ok(()) => next.run(req).await,
        Err(denied) => denied.into_response(),
    }
}

/// Binds every `[http] listen` address.
///
/// # Errors
/// The first address that cannot be bound, named in the error.
pub fn bind_http(section: &HttpSection) -> io::Result<Vec<std::net::TcpListener>> {
    section
        .listen
        .iter()
        .map(|addr| {
            super::bind_tcp(*addr).map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen on {addr} (http): {e}"))
            })
        })
        .collect()
}

/// The accept loop's shared state.
struct Server {
    /// The routes, cloned into every connection.
    app: axum::Router,
    /// HTTPS when set.
    tls: Option<TlsSetup>,
    /// `max_connections`.
    slots: Arc<Semaphore>,
    /// Time for a request head and a TLS handshake.
    header_timeout: Duration,
    /// For the lines about refused connections.
    state: Arc<HttpState>,
}

/// Spawns an accept loop per listener on `tracker`; they stop accepting
/// when `token` is cancelled, and connections finish their request.
///
/// # Errors
/// A socket cannot be registered with the runtime.
pub(crate) fn run(
    listeners: Vec<std::net::TcpListener>,
    state: Arc<HttpState>,
    metrics: axum::Router,
    section: &HttpSection,
    tls: Option<TlsSetup>,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<()> {
    let server = Arc::new(Server {
        app: routes(state.clone(), metrics),
        tls,
        slots: Arc::new(Semaphore::new(section.max_connections)),
        header_timeout: section.header_timeout,
        state,
    });
    for l in listeners {
        let l = TcpListener::from_std(l)?;
        let scheme = if server.tls.is_some() {
            "https"
        } else {
            "http"
        };
        match l.local_addr() {
            Ok(a) => info!("listening on {scheme} {a}"),
            Err(e) => info!("listening on {scheme} (address unknown: {e})"),
        }
        tracker.spawn(accept_loop(
            l,
            server.clone(),
            token.clone(),
            tracker.clone(),
        ));
    }
    Ok(())
}

async fn accept_loop(
    listener: TcpListener,
    server: Arc<Server>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            () = token.cancelled() => return,
        };
        let (stream, addr) = match accepted {
            Ok(a) => {
                backoff = Duration::from_millis(5);
                a
            }
            Err(err) => {
                // Out of descriptors and the like: back off, never spin.
                if let Some(suppressed) = server.state.limiter.check() {
                    warn!(cause = %err, suppressed, "http accept failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                continue;
            }
        };
        let Ok(permit) = server.slots.clone().try_acquire_owned() else {
            server
                .state
                .router
                .stats
                .connections_refused
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(suppressed) = server.state.limiter.check() {
                warn!(peer = %addr, suppressed, "http connection refused: [http] max_connections reached");
            }
            continue; // dropping the stream closes it
        };
        let stats = &server.state.router.stats;
        stats
            .connections
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let open = stats.open_connection(crate::record::Transport::Http.as_str());
        let server = server.clone();
        let token = token.clone();
        tracker.spawn(async move {
            if let Err(err) = serve(stream, addr, &server, token).await {
                debug!(peer = %addr, cause = %err, "http connection ended");
            }
            drop(open);
            drop(permit);
        });
    }
}

/// Serves one connection: the TLS handshake (under the header timeout),
/// then HTTP/1.1 with keep-alive until the peer closes, a timeout, or
/// shutdown (the request in progress finishes first).
async fn serve(
    stream: TcpStream,
    addr: SocketAddr,
    server: &Server,
    token: CancellationToken,
) -> Result<(), String> {
    let _ = stream.set_nodelay(true);
    match &server.tls {
        None => {
            let peer = Peer {
                addr,
                client_cert: false,
            };
            serve_http(TokioIo::new(stream), peer, server, token).await
        }
        Some(tls) => {
            let handshake = tls.current().accept(stream);
            let tls_stream = match tokio::time::timeout(server.header_timeout, handshake).await {
                Ok(Ok(s)) => s,
                Ok(Err(e)) => {
                    let why = crate::input::tls::refusal_of(Some(&e));
                    server.state.router.stats.count_tls_refusal(why);
                    if let Some(suppressed) = server.state.limiter.check() {
                        warn!(peer = %addr, cause = %e, suppressed, "https handshake refused");
                    }
                    return Ok(());
                }
                Err(_) => {
                    let why = crate::input::tls::refusal_of(None);
                    server.state.router.stats.count_tls_refusal(why);
                    return Err("tls handshake timed out".to_owned());
                }
            };
            let client_cert = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .is_some_and(|c| !c.is_empty());
            let peer = Peer { addr, client_cert };
            serve_http(TokioIo::new(tls_stream), peer, server, token).await
        }
    }
}

async fn serve_http<I>(
    io: TokioIo<I>,
    peer: Peer,
    server: &Server,
    token: CancellationToken,
) -> Result<(), String>
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let app = server.app.clone();
    let svc = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        req.extensions_mut().insert(peer.clone());
        let mut app = app.clone();
        async move {
            let req = req.map(Body::new);
            tower::Service::call(&mut app, req).await
        }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(server.header_timeout)
        .keep_alive(true)
        .serve_connection(io, svc);
    tokio::pin!(conn);
    let res = tokio::select! {
        r = conn.as_mut() => r,
        () = token.cancelled() => {
            conn.as_mut().graceful_shutdown();
            match tokio::time::timeout(SHUTDOWN_GRACE, conn.as_mut()).await {
                Ok(r) => r,
                Err(_) => return Err("still busy at shutdown; closed".to_owned()),
            }
        }
    };
    res.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hash(token: &str) -> String {
        Sha256::digest(token.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect()
    }

    #[test]
    fn tokens_parse_and_scopes() {
        let text = format!(
            "# comment\n\n{} write:app-a metrics\n{} write:*\n",
            hash("s3cret"),
            hash("all")
        );
        let t = Tokens::parse(&text, Path::new("/t")).unwrap();
        let a = t.find("s3cret").unwrap();
        let p = Principal::Token(a);
        assert!(p.require(Scope::Write("app-a".into())).is_ok());
        assert!(p.require(Scope::Metrics).is_ok());
        assert!(matches!(
            p.require(Scope::Write("app-b".into())),
            Err(Denied::Forbidden(Scope::Write(a))) if a == "app-b"
        ));
        assert!(matches!(
            p.require(Scope::Read("app-a".into())),
            Err(Denied::Forbidden(_))
        ));
        let all = Principal::Token(t.find("all").unwrap());
        assert!(all.require(Scope::Write("x".into())).is_ok());
        assert!(all.require(Scope::Metrics).is_err());
        assert!(t.find("nope").is_none());
        assert!(!format!("{t:?}").contains(&hash("all")));
    }

    #[test]
    fn tokens_file_errors_name_line_and_fix() {
        for (text, fix) in [
            ("abc write:x\n", "sha256sum"),
            (&*format!("{} write:\n", hash("x")), "not a scope"),
            (&*format!("{}\n", hash("x")), "no scopes"),
        ] {
            let e = Tokens::parse(text, Path::new("/etc/t"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("/etc/t") && e.contains("line 1") && e.contains(fix),
                "{e}"
            );
        }
    }
}
