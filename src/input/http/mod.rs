//! The HTTP input (issue 14): an axum router served by hyper on the
//! daemon's runtime, over plain TCP or TLS (`[http] tls`), with the
//! authentication every handler goes through ([`authorize`]: mutual-TLS
//! client certificates, bearer tokens from `tokens_file`, or anonymous on
//! loopback by opt-in) and the connection, header and body limits.
//! Handlers live in [`ingest`]; other fragments (metrics) are merged in
//! [`routes`].
//!
//! Tokens file format, one credential a line (`#` comments and blank lines
//! ignored), re-read on SIGHUP:
//! - `HASH scope...`: a bearer token, as the lowercase hex SHA-256 of the
//!   token, then its scopes separated by spaces: `write:APP`, `write:*`,
//!   `read:APP`, `read:*`, `metrics`. Make one with
//!   `printf %s "$TOKEN" | sha256sum | sed "s/ .*/ write:my-app/"`.
//! - `cert:CN scope...` (or `cert:"CN with spaces" scope...`): the scopes
//!   of a verified client certificate whose subject CN is exactly `CN`,
//!   instead of `[http] cert_scopes`.
//!
//! Only hashes are held; presented tokens are hashed and compared in
//! constant time, and never logged. Anonymous access (loopback, by
//! opt-in) gets `write:*` and `metrics`, never `read:`: any local user
//! could otherwise read every application's logs through the viewer.

pub(crate) mod ingest;

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, RwLock};
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

use crate::config::http::SCOPE_NAMES;
use crate::config::{ConfigError, Grant, HttpSection};
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
    Read(String),
}

// === impl Scope ===

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Write(app) => write!(f, "write:{app}"),
            Scope::Metrics => f.write_str("metrics"),
            Scope::Read(app) => write!(f, "read:{app}"),
        }
    }
}

impl Scope {
    /// Whether one of `grants` allows this scope.
    fn granted_by(&self, grants: &[Grant]) -> bool {
        grants.iter().any(|g| match (g, self) {
            (Grant::WriteAll, Scope::Write(_)) | (Grant::ReadAll, Scope::Read(_)) => true,
            (Grant::Write(a), Scope::Write(b)) | (Grant::Read(a), Scope::Read(b)) => a == b,
            (Grant::Metrics, Scope::Metrics) => true,
            _ => false,
        })
    }
}

/// What anonymous access on loopback is given: local programs may write
/// and the local operator may watch (`loghog-top`), but reading logs needs
/// a credential, or every local user could read every application's logs.
const ANONYMOUS_GRANTS: &[Grant] = &[Grant::WriteAll, Grant::Metrics];

/// What anonymous access gets when the operator also set
/// `allow_anonymous_read` (plain HTTP on loopback only).
const ANONYMOUS_READ_GRANTS: &[Grant] = &[Grant::WriteAll, Grant::Metrics, Grant::ReadAll];

/// The cookie the viewer's login form sets: the bearer token itself,
/// `HttpOnly` and `SameSite=Strict`, so it is checked against the tokens
/// file on every request (a reload that drops the token logs it out).
pub(crate) const TOKEN_COOKIE: &str = "loghogd_token";

/// The credentials of `tokens_file`: token SHA-256 digests and client
/// certificate CNs, with their scopes.
#[derive(Clone, Default)]
pub(crate) struct Tokens {
    /// Bearer tokens: digest → scopes.
    entries: Vec<([u8; 32], Arc<[Grant]>)>,
    /// `cert:CN` lines: exact subject CN → scopes.
    certs: HashMap<String, Arc<[Grant]>>,
}

impl fmt::Debug for Tokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the hashes: they are as good as a password list offline.
        write!(
            f,
            "Tokens({} tokens, {} certificates)",
            self.entries.len(),
            self.certs.len()
        )
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
    /// A [`ConfigError`] naming the line and the fix. It never quotes the
    /// line's first word or an unknown scope word: a token pasted in by
    /// mistake must not reach the daemon's log.
    pub(crate) fn parse(text: &str, path: &Path) -> Result<Tokens, ConfigError> {
        let mut tokens = Tokens::default();
        // CN → the line that named it first, for the duplicate error.
        let mut cert_lines: HashMap<String, usize> = HashMap::new();
        for (i, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let err = |problem: String| ConfigError::new(path, format!("line {}", i + 1), problem);
            if let Some(rest) = line.strip_prefix("cert:") {
                let (cn, scopes) = split_cn(rest).ok_or_else(|| {
                    err("cert: needs the certificate's subject CN right after it \
                         (cert:CN, or cert:\"CN with spaces\"), then its scopes"
                        .to_owned())
                })?;
                let grants = parse_scopes(scopes).map_err(&err)?;
                if let Some(first) = cert_lines.insert(cn.to_owned(), i + 1) {
                    return Err(err(format!(
                        "cert:{cn} is already listed on line {first}; keep one line per certificate"
                    )));
                }
                tokens.certs.insert(cn.to_owned(), grants);
                continue;
            }
            let (hash, scopes) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
            let Some(digest) = decode_hex32(hash) else {
                return Err(err(
                    "the line does not start with the 64 hex digits of a token's SHA-256 \
                     (or cert:CN); make one with: printf %s \"$TOKEN\" | sha256sum"
                        .to_owned(),
                ));
            };
            tokens
                .entries
                .push((digest, parse_scopes(scopes).map_err(&err)?));
        }
        Ok(tokens)
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

    /// The scopes a `cert:CN` line gives the certificate with subject `cn`.
    fn cert(&self, cn: &str) -> Option<Arc<[Grant]>> {
        self.certs.get(cn).cloned()
    }

    /// How many tokens and `cert:` lines there are (for the reload line).
    pub(crate) fn counts(&self) -> (usize, usize) {
        (self.entries.len(), self.certs.len())
    }
}

/// `CN scope...` or `"CN with spaces" scope...` → (CN, the rest).
fn split_cn(rest: &str) -> Option<(&str, &str)> {
    let (cn, scopes) = match rest.strip_prefix('"') {
        Some(quoted) => quoted.split_once('"')?,
        None => rest.split_once(char::is_whitespace).unwrap_or((rest, "")),
    };
    (!cn.is_empty()).then_some((cn, scopes))
}

/// The scopes after a line's credential: at least one, every one known.
fn parse_scopes(words: &str) -> Result<Arc<[Grant]>, String> {
    let mut grants = Vec::new();
    for (n, w) in words.split_whitespace().enumerate() {
        // The word itself is not quoted (see `Tokens::parse`).
        let g = Grant::parse(w).ok_or_else(|| {
            format!(
                "scope {} of the line is not a scope; use {SCOPE_NAMES}",
                n + 1
            )
        })?;
        grants.push(g);
    }
    if grants.is_empty() {
        return Err(
            "no scopes; list them after the hash or cert:CN (e.g. write:my-app metrics)".to_owned(),
        );
    }
    Ok(grants.into())
}

/// The tokens file's current contents, swapped on SIGHUP: a request reads
/// whatever is here when it is authenticated, so a new file applies to the
/// next request, on open connections too.
#[derive(Debug, Clone)]
pub(crate) struct TokenSlot {
    /// The tokens; a reload replaces the `Arc`, requests clone it.
    current: Arc<RwLock<Arc<Tokens>>>,
}

// === impl TokenSlot ===

impl TokenSlot {
    /// A slot holding `tokens`.
    pub(crate) fn new(tokens: Tokens) -> TokenSlot {
        TokenSlot {
            current: Arc::new(RwLock::new(Arc::new(tokens))),
        }
    }

    /// The tokens requests check now.
    fn current(&self) -> Arc<Tokens> {
        // A poisoned lock still holds a whole `Arc` (replace is one store).
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Swaps in a freshly read tokens file.
    pub(crate) fn replace(&self, tokens: Tokens) {
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(tokens);
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
    /// Bearer tokens and `cert:` lines (`None`: no `tokens_file`); the
    /// daemon swaps the contents on SIGHUP.
    tokens: Option<TokenSlot>,
    /// Scopes of a verified client certificate without a `cert:` line.
    cert_scopes: Arc<[Grant]>,
    /// Requests without credentials get [`ANONYMOUS_GRANTS`] (loopback
    /// opt-in).
    anonymous: bool,
    /// Anonymous requests may also read ([`ANONYMOUS_READ_GRANTS`]).
    anonymous_read: bool,
    /// HTTPS: the login cookie is marked `Secure`.
    pub(crate) tls: bool,
    /// Largest request body (413 past it).
    pub(crate) max_body_bytes: usize,
    /// Time allowed for a request's body.
    pub(crate) body_timeout: Duration,
    /// Limits the lines about refused requests and connections.
    limiter: RateLimit,
}

impl HttpState {
    /// The state for `section`, with the contents of its `tokens_file`.
    pub(crate) fn new(
        router: Arc<RouterCtx>,
        section: &HttpSection,
        tokens: Option<TokenSlot>,
    ) -> HttpState {
        HttpState {
            router,
            tokens,
            cert_scopes: section.cert_scopes.clone(),
            anonymous: section.allow_anonymous_on_loopback,
            anonymous_read: section.allow_anonymous_read,
            tls: section.tls,
            max_body_bytes: section.max_body_bytes,
            body_timeout: section.body_timeout,
            limiter: RateLimit::new(20, Duration::from_secs(10)),
        }
    }
}

/// A client certificate that chained to `cacert` in the handshake.
#[derive(Debug, Clone)]
pub(crate) struct ClientCert {
    /// The leaf's subject CN, as written: the key of its `cert:` line.
    pub(crate) cn: Option<Arc<str>>,
}

/// What a connection knows about its peer, put into every request.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    /// The peer's address.
    pub(crate) addr: SocketAddr,
    /// The verified client certificate, if the peer sent one.
    pub(crate) client_cert: Option<ClientCert>,
}

/// Why a request was not allowed. The reply names the missing scope and
/// never which tokens exist.
#[derive(Debug)]
pub(crate) enum Denied {
    /// No credentials, a token that is not listed, or anonymous access
    /// that does not cover the scope: 401.
    Unauthenticated(Scope),
    /// A credential without the scope: 403; the string names its kind.
    Forbidden(Scope, &'static str),
}

impl IntoResponse for Denied {
    fn into_response(self) -> Response {
        let (status, text) = match &self {
            Denied::Unauthenticated(s) => (
                StatusCode::UNAUTHORIZED,
                format!("authentication required: send a bearer token with scope {s} (or a client certificate)\n"),
            ),
            Denied::Forbidden(s, who) => (
                StatusCode::FORBIDDEN,
                format!("the {who} lacks scope {s}\n"),
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
    /// A verified client certificate: its `cert:` line's scopes, else
    /// `cert_scopes`.
    Cert(Arc<[Grant]>),
    /// A listed bearer token's scopes.
    Token(Arc<[Grant]>),
    /// No credentials, on loopback by opt-in: [`ANONYMOUS_GRANTS`], or
    /// [`ANONYMOUS_READ_GRANTS`] when `read` (`allow_anonymous_read`).
    Anonymous { read: bool },
    /// No credentials (or a token not listed): nothing is allowed.
    Nobody,
}

impl Principal {
    /// Checks that this principal has `scope`.
    ///
    /// # Errors
    /// [`Denied`] names the scope.
    pub(crate) fn require(&self, scope: Scope) -> Result<(), Denied> {
        let (grants, who): (&[Grant], _) = match self {
            Principal::Cert(g) => (g, "client certificate"),
            Principal::Token(g) => (g, "token"),
            // A credential would help here, so 401 rather than 403.
            Principal::Anonymous { read } => {
                let grants = if *read {
                    ANONYMOUS_READ_GRANTS
                } else {
                    ANONYMOUS_GRANTS
                };
                if scope.granted_by(grants) {
                    return Ok(());
                }
                return Err(Denied::Unauthenticated(scope));
            }
            Principal::Nobody => return Err(Denied::Unauthenticated(scope)),
        };
        if scope.granted_by(grants) {
            Ok(())
        } else {
            Err(Denied::Forbidden(scope, who))
        }
    }
}

/// Who sent the request with `headers` over the connection of `peer`: a
/// client certificate wins (a token sent with it is not looked at), then a
/// bearer token, then anonymous access.
pub(crate) fn authenticate(state: &HttpState, peer: &Peer, headers: &HeaderMap) -> Principal {
    let tokens = state.tokens.as_ref().map(TokenSlot::current);
    if let Some(cert) = &peer.client_cert {
        let line = cert
            .cn
            .as_deref()
            .zip(tokens.as_deref())
            .and_then(|(cn, t)| t.cert(cn));
        return Principal::Cert(line.unwrap_or_else(|| state.cert_scopes.clone()));
    }
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let (kind, rest) = v.split_once(' ')?;
            kind.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .or_else(|| token_cookie(headers));
    if let (Some(token), Some(tokens)) = (bearer, &tokens) {
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
    // Anonymous access is for programs on this host. A browser tricked by
    // DNS rebinding (a site's name re-pointed at 127.0.0.1) reaches the
    // loopback listener too, but names that site in `Host`.
    if state.anonymous && host_is_loopback(headers) {
        return Principal::Anonymous {
            read: state.anonymous_read,
        };
    }
    Principal::Nobody
}

/// Whether the request's `Host` names this host by a loopback name or
/// address (`localhost`, `127.0.0.1`, `[::1]`, any port). A request without
/// one (HTTP/1.0) did not come from a browser and is let through.
fn host_is_loopback(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST) else {
        return true;
    };
    let Ok(host) = host.to_str() else {
        return false;
    };
    let name = match host.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(""),
        None => host.rsplit_once(':').map_or(host, |(name, port)| {
            if port.bytes().all(|b| b.is_ascii_digit()) {
                name
            } else {
                host
            }
        }),
    };
    name.eq_ignore_ascii_case("localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// The token of the viewer's login cookie, if the request carries one.
fn token_cookie(headers: &HeaderMap) -> Option<&str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == TOKEN_COOKIE && !value.is_empty()).then_some(value)
        })
}

/// Whether `token` is listed in the tokens file (the viewer's login form
/// checks it before it sets the cookie).
pub(crate) fn token_is_listed(state: &HttpState, token: &str) -> bool {
    state
        .tokens
        .as_ref()
        .is_some_and(|slot| slot.current().find(token).is_some())
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
/// mounted: the metrics and healthz router and the viewer are `.merge`d
/// here; every viewer request carries its [`Principal`] as an extension,
/// and the viewer checks `read:APP` once it knows the application.
pub(crate) fn routes(
    state: Arc<HttpState>,
    metrics: axum::Router,
    viewer: Option<axum::Router>,
) -> axum::Router {
    use axum::routing::post;
    // `/metrics` and `/healthz` need the `metrics` scope like any other
    // endpoint (anonymous only on loopback, when the operator opted in).
    let metrics = metrics.route_layer(axum::middleware::from_fn_with_state(
        state.clone(),
        require_metrics,
    ));
    let viewer = viewer.map(|v| {
        v.layer(axum::middleware::from_fn_with_state(
            state.clone(),
            with_principal,
        ))
    });
    let app = axum::Router::new()
        .route("/v1/logs", post(ingest::logs))
        .route("/backend/save/", post(ingest::daedalus))
        .with_state(state)
        .merge(metrics);
    match viewer {
        Some(v) => app.merge(v),
        None => app,
    }
}

/// Puts the request's [`Principal`] into its extensions (for the viewer,
/// which checks the scope per application).
async fn with_principal(
    axum::extract::State(state): axum::extract::State<Arc<HttpState>>,
    mut req: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let principal = match req.extensions().get::<Peer>() {
        Some(peer) => authenticate(&state, peer, req.headers()),
        None => Principal::Nobody,
    };
    req.extensions_mut().insert(principal);
    next.run(req).await
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

/// The routers other modules serve on the HTTP listener.
pub(crate) struct Fragments {
    /// `/metrics` and `/healthz`.
    pub(crate) metrics: axum::Router,
    /// The log viewer, unless `[viewer] enabled = no`.
    pub(crate) viewer: Option<axum::Router>,
}

/// Spawns an accept loop per listener on `tracker`; they stop accepting
/// when `token` is cancelled, and connections finish their request.
///
/// # Errors
/// A socket cannot be registered with the runtime.
pub(crate) fn run(
    listeners: Vec<std::net::TcpListener>,
    state: Arc<HttpState>,
    fragments: Fragments,
    section: &HttpSection,
    tls: Option<TlsSetup>,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<()> {
    let server = Arc::new(Server {
        app: routes(state.clone(), fragments.metrics, fragments.viewer),
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
                client_cert: None,
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
            // The leaf (first) certificate: rustls verified the chain.
            let client_cert = tls_stream
                .get_ref()
                .1
                .peer_certificates()
                .and_then(|c| c.first())
                .map(|leaf| ClientCert {
                    cn: loghog_protocol::tls::subject_cn(leaf).map(Arc::from),
                });
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
            Err(Denied::Forbidden(Scope::Write(a), "token")) if a == "app-b"
        ));
        assert!(matches!(
            p.require(Scope::Read("app-a".into())),
            Err(Denied::Forbidden(..))
        ));
        let all = Principal::Token(t.find("all").unwrap());
        assert!(all.require(Scope::Write("x".into())).is_ok());
        assert!(all.require(Scope::Metrics).is_err());
        assert!(t.find("nope").is_none());
        assert!(!format!("{t:?}").contains(&hash("all")));
    }

    #[test]
    fn cert_lines_give_a_certificate_its_scopes() {
        let text = format!(
            "cert:host-1 write:app-a metrics\ncert:\"Web Front 2\" read:app-b\n{} write:*\n",
            hash("t")
        );
        let t = Tokens::parse(&text, Path::new("/t")).unwrap();
        assert_eq!(t.counts(), (1, 2));
        let host = Principal::Cert(t.cert("host-1").unwrap());
        assert!(host.require(Scope::Metrics).is_ok());
        assert!(host.require(Scope::Write("app-a".into())).is_ok());
        assert!(matches!(
            host.require(Scope::Write("app-b".into())),
            Err(Denied::Forbidden(_, "client certificate"))
        ));
        let web = Principal::Cert(t.cert("Web Front 2").unwrap());
        assert!(web.require(Scope::Read("app-b".into())).is_ok());
        // CNs match exactly: no case folding, no prefixes.
        assert!(t.cert("HOST-1").is_none() && t.cert("host").is_none());
    }

    #[test]
    fn anonymous_writes_and_scrapes_but_never_reads() {
        let anon = Principal::Anonymous { read: false };
        assert!(anon.require(Scope::Write("any".into())).is_ok());
        assert!(anon.require(Scope::Metrics).is_ok());
        assert!(matches!(
            anon.require(Scope::Read("any".into())),
            Err(Denied::Unauthenticated(Scope::Read(_)))
        ));
        assert!(Principal::Nobody.require(Scope::Metrics).is_err());
        // allow_anonymous_read adds read:* (loopback, plain HTTP only).
        let reader = Principal::Anonymous { read: true };
        assert!(reader.require(Scope::Read("any".into())).is_ok());
        assert!(reader.require(Scope::Metrics).is_ok());
    }

    #[test]
    fn tokens_file_errors_name_line_and_fix() {
        for (text, fix) in [
            ("abc write:x\n", "sha256sum"),
            (&*format!("{} write:\n", hash("x")), "not a scope"),
            (&*format!("{}\n", hash("x")), "no scopes"),
            ("cert: metrics\n", "subject CN"),
            ("cert:\"open metrics\n", "subject CN"),
            ("cert:h\n", "no scopes"),
            ("cert:h metrix\n", "scope 1 of the line is not a scope"),
        ] {
            let e = Tokens::parse(text, Path::new("/etc/t"))
                .unwrap_err()
                .to_string();
            assert!(
                e.contains("/etc/t") && e.contains("line 1") && e.contains(fix),
                "{text}: {e}"
            );
        }
        let e = Tokens::parse("cert:h metrics\n\ncert:h write:*\n", Path::new("/etc/t"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 3") && e.contains("line 1"), "{e}");
        // A token pasted where its hash belongs, or among the scopes, is
        // not repeated in the error (it would reach the daemon's log).
        for text in [
            "plain-secret-token write:x\n",
            &*format!("{} write:x plain-secret-token\n", hash("x")),
        ] {
            let e = Tokens::parse(text, Path::new("/etc/t"))
                .unwrap_err()
                .to_string();
            assert!(!e.contains("plain-secret-token"), "{e}");
        }
    }

    #[test]
    fn anonymous_access_needs_a_loopback_host_name() {
        let host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, HeaderValue::from_str(h).unwrap());
            host_is_loopback(&m)
        };
        for ok in [
            "127.0.0.1:5580",
            "localhost",
            "LOCALHOST:80",
            "[::1]:5580",
            "127.1.2.3",
        ] {
            assert!(host(ok), "{ok}");
        }
        // DNS rebinding: the attacker's name, pointed at 127.0.0.1.
        for bad in [
            "evil.example:5580",
            "evil.example",
            "10.0.0.1",
            "[::2]:1",
            "localhost.evil",
        ] {
            assert!(!host(bad), "{bad}");
        }
        assert!(host_is_loopback(&HeaderMap::new()));
    }

    #[test]
    fn a_replaced_slot_applies_to_the_next_lookup() {
        let slot = TokenSlot::new(
            Tokens::parse(&format!("{} metrics\n", hash("a")), Path::new("/t")).unwrap(),
        );
        assert!(slot.current().find("a").is_some());
        slot.replace(Tokens::parse(&format!("{} metrics\n", hash("b")), Path::new("/t")).unwrap());
        assert!(slot.current().find("a").is_none());
        assert!(slot.current().find("b").is_some());
    }
}
