//! HTTP ingest handlers: `POST /v1/logs` (one JSON object, or NDJSON) and
//! `POST /backend/save/` (the Daedalus form API). Each request's records go
//! through a [`Router`] like any connection's, so facilities, signatures,
//! `file_per_host`, rotation and counters are the same as for LogHog.
//!
//! Signed facilities: the request carries `X-Loghog-Signature:` the
//! lowercase hex HMAC-SHA256 (key = the facility's `secret` as UTF-8) of
//! the exact request body bytes; a record for a signed facility without a
//! matching header is refused (and counted as `bad_signature`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use loghog_protocol::normalize_module;
use serde::Deserialize;
use sha2::Sha256;

use super::{authenticate, Denied, HttpState, Peer, Principal, Scope};
use crate::config::{Facility, FacilityDb};
use crate::record::{Auth, Record, Transport};
use crate::router::Router;

/// How long a request waits for room in a full writer queue before it is
/// answered 503 (the writers are backed up: disk full, a slow disk).
const QUEUE_WAIT: Duration = Duration::from_secs(1);

/// `Retry-After` of a 503, seconds.
const RETRY_AFTER_SECS: &str = "1";

/// The header carrying the body's HMAC-SHA256.
const SIGNATURE_HEADER: &str = "x-loghog-signature";

/// One `/v1/logs` record.
#[derive(Deserialize)]
struct LogLine<'a> {
    #[serde(borrow)]
    app_id: Cow<'a, str>,
    #[serde(default, borrow)]
    module: Cow<'a, str>,
    #[serde(default, borrow)]
    host: Option<Cow<'a, str>>,
    #[serde(borrow)]
    body: Cow<'a, str>,
    #[serde(default)]
    severity: Option<serde_json::Value>,
}

/// A record that parsed, with what the line's body becomes.
#[derive(Debug)]
struct Parsed<'a> {
    line: usize,
    app_id: Cow<'a, str>,
    module: Cow<'a, str>,
    host: Option<Cow<'a, str>>,
    body: Cow<'a, str>,
}

/// A plain-text reply.
fn text(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, msg.into()).into_response()
}

fn busy(msg: String) -> Response {
    let mut r = text(StatusCode::SERVICE_UNAVAILABLE, msg);
    r.headers_mut().insert(
        header::RETRY_AFTER,
        HeaderValue::from_static(RETRY_AFTER_SECS),
    );
    r
}

/// Who sent an ingest request, and over which connection: an extractor,
/// so a request without credentials gets its 401 before the body is read
/// (the app, and so the exact `write:` scope, is only known from the body).
pub(crate) struct Writer {
    /// Checked per record against its app.
    principal: Principal,
    /// The connection's peer: its address is the default host.
    peer: Peer,
}

impl FromRequestParts<Arc<HttpState>> for Writer {
    type Rejection = Denied;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<HttpState>,
    ) -> Result<Writer, Denied> {
        let nobody = || Denied::Unauthenticated(Scope::Write("APP".into()));
        // Every connection is served with its Peer; without one, nobody.
        let peer = parts.extensions.get::<Peer>().cloned().ok_or_else(nobody)?;
        match authenticate(state, &peer, &parts.headers) {
            Principal::Nobody => Err(nobody()),
            principal => Ok(Writer { principal, peer }),
        }
    }
}

/// Reads the whole body under `max_body` and the body timeout.
async fn read_body(
    state: &HttpState,
    headers: &HeaderMap,
    body: Body,
) -> Result<Vec<u8>, Response> {
    let max = state.max_body_bytes;
    let too_large = || {
        text(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("the body is over [http] max_body ({max} bytes); send smaller batches\n"),
        )
    };
    let announced = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > max as u64) {
        return Err(too_large());
    }
    let read = async {
        let mut buf = Vec::with_capacity(announced.unwrap_or(0) as usize);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| text(StatusCode::BAD_REQUEST, format!("{e}\n")))?;
            if buf.len() + chunk.len() > max {
                return Err(too_large());
            }
            buf.extend_from_slice(&chunk);
        }
        Ok(buf)
    };
    match tokio::time::timeout(state.body_timeout, read).await {
        Ok(r) => r,
        Err(_) => Err(text(
            StatusCode::REQUEST_TIMEOUT,
            "the body did not arrive within [http] body_timeout\n",
        )),
    }
}

/// Checks the body's signature against signed facilities, once per facility.
struct SignatureCheck<'a> {
    body: &'a [u8],
    /// The decoded header, `None` when absent or not hex.
    tag: Option<Vec<u8>>,
    /// Facility (by address) → whether the header matched its secret.
    seen: HashMap<usize, bool>,
}

impl<'a> SignatureCheck<'a> {
    fn new(headers: &HeaderMap, body: &'a [u8]) -> SignatureCheck<'a> {
        let tag = headers
            .get(SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .and_then(decode_hex);
        SignatureCheck {
            body,
            tag,
            seen: HashMap::new(),
        }
    }

    /// Whether a record for `facility` may be written.
    fn verify(&mut self, facility: &Arc<Facility>) -> bool {
        let Some(key) = &facility.secret else {
            return true;
        };
        let (body, tag) = (self.body, &self.tag);
        *self
            .seen
            .entry(Arc::as_ptr(facility) as usize)
            .or_insert_with(|| {
                let Some(tag) = tag else {
                    return false;
                };
                let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key.secret().as_bytes()) else {
                    return false;
                };
                mac.update(body);
                // Constant time (hmac's verify_slice).
                mac.verify_slice(tag).is_ok()
            })
    }
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let b = s.trim().as_bytes();
    if !b.len().is_multiple_of(2) {
        return None;
    }
    b.chunks(2)
        .map(|p| {
            let hi = (p[0] as char).to_digit(16)?;
            let lo = (p[1] as char).to_digit(16)?;
            Some((hi * 16 + lo) as u8)
        })
        .collect()
}

/// The line body of a record with a severity: `SEVERITY - body`, as the
/// Daedalus server wrote it.
fn with_severity<'a>(severity: Option<&str>, body: Cow<'a, str>) -> Cow<'a, str> {
    match severity {
        Some(s) if !s.is_empty() => Cow::Owned(format!("{s} - {body}")),
        _ => body,
    }
}

fn severity_text(v: &serde_json::Value) -> Result<String, String> {
    match v {
        serde_json::Value::String(s) if s.len() <= 32 && !s.chars().any(char::is_control) => {
            Ok(s.clone())
        }
        serde_json::Value::Number(n) if n.as_u64().is_some_and(|n| n <= 7) => Ok(n.to_string()),
        serde_json::Value::Null => Ok(String::new()),
        _ => Err(
            "severity must be a name (at most 32 characters) or a number from 0 to 7".to_owned(),
        ),
    }
}

fn parse_line(line: usize, bytes: &[u8]) -> Result<Parsed<'_>, String> {
    let rec: LogLine<'_> = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    let severity = rec.severity.as_ref().map(severity_text).transpose()?;
    Ok(Parsed {
        line,
        app_id: rec.app_id,
        module: rec.module,
        host: rec.host,
        body: with_severity(severity.as_deref(), rec.body),
    })
}

/// What became of a request's records.
struct Outcome {
    written: usize,
    refused_busy: u64,
    /// (line, reason) of every record not written for a reason of its own.
    rejected: Vec<(usize, String)>,
}

/// Checks, then routes `records`: every record's app must be in the
/// principal's scopes before anything is written (so a 403 writes
/// nothing); then each record is checked against its facility and signature,
/// and the good ones are written with one bounded flush.
async fn deliver(
    state: &HttpState,
    peer: &Peer,
    principal: &Principal,
    sig: &mut SignatureCheck<'_>,
    records: &[Parsed<'_>],
    mut rejected: Vec<(usize, String)>,
) -> Result<Outcome, Response> {
    for r in records {
        principal
            .require(Scope::Write(r.app_id.to_string()))
            .map_err(IntoResponse::into_response)?;
    }
    let db: Arc<FacilityDb> = state.router.facilities.borrow().clone();
    let mut router = Router::new(state.router.clone(), peer.addr.ip(), Transport::Http);
    router.begin_chunk();
    let mut written = 0;
    for r in records {
        let verified = match db.lookup(&r.app_id, normalize_module(&r.module)) {
            None => {
                rejected.push((r.line, format!("no facility for app_id \"{}\"", r.app_id)));
                true // routed all the same: the router counts it (unknown_app)
            }
            Some(f) => {
                let ok = sig.verify(f);
                if ok {
                    written += 1;
                } else {
                    rejected.push((
                        r.line,
                        "the facility is signed and X-Loghog-Signature is missing or wrong"
                            .to_owned(),
                    ));
                }
                ok
            }
        };
        router.route(&Record {
            app_id: &r.app_id,
            module: &r.module,
            host: r.host.as_deref(),
            body: &r.body,
            auth: Auth::Http { verified },
            syslog: None,
        });
    }
    let refused_busy = router.flush_within(QUEUE_WAIT).await;
    Ok(Outcome {
        written,
        refused_busy,
        rejected,
    })
}

/// `POST /v1/logs`: `application/json` (one object) or
/// `application/x-ndjson` (one object a line; also when no Content-Type, or
/// curl's default form type, is sent). 204 when every record was queued; 400 lists the bad lines (the
/// others are written); 413 past `max_body`; 503 + `Retry-After` when a
/// writer stayed backed up.
pub(crate) async fn logs(
    State(state): State<Arc<HttpState>>,
    Writer { principal, peer }: Writer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map(|v| {
            v.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        });
    let one_object = match kind.as_deref() {
        Some("application/json") => true,
        // curl -d sends its form type: take that as NDJSON too, so a
        // `curl -d @batch.ndjson` one-liner works.
        None
        | Some("application/x-ndjson")
        | Some("application/ndjson")
        | Some("application/x-www-form-urlencoded") => false,
        Some(other) => {
            return text(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!("Content-Type {other} is not taken; send application/json or application/x-ndjson\n"),
            )
        }
    };
    let bytes = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let mut records = Vec::new();
    let mut rejected = Vec::new();
    let mut bad_lines = 0u64;
    let lines: Vec<(usize, &[u8])> = if one_object {
        vec![(1, &bytes[..])]
    } else {
        bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .map(|(i, l)| (i + 1, l.strip_suffix(b"\r").unwrap_or(l)))
            .filter(|(_, l)| !l.iter().all(u8::is_ascii_whitespace))
            .collect()
    };
    for (n, line) in lines {
        match parse_line(n, line) {
            Ok(p) => records.push(p),
            Err(reason) => {
                bad_lines += 1;
                rejected.push((n, reason));
            }
        }
    }
    if bad_lines > 0 {
        state
            .router
            .stats
            .bad_frames
            .fetch_add(bad_lines, std::sync::atomic::Ordering::Relaxed);
    }
    let mut sig = SignatureCheck::new(&headers, &bytes);
    let out = match deliver(&state, &peer, &principal, &mut sig, &records, rejected).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    if out.refused_busy > 0 {
        return busy(format!(
            "the writers are backed up: {} of {} records were not accepted; retry later\n",
            out.refused_busy,
            records.len()
        ));
    }
    if out.rejected.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    let mut msg = String::new();
    let mut rejected = out.rejected;
    rejected.sort_by_key(|(n, _)| *n);
    for (n, reason) in &rejected {
        msg.push_str(&format!("line {n}: {reason}\n"));
    }
    msg.push_str(&format!(
        "{} records were written, {} were not (the lines above)\n",
        out.written,
        rejected.len()
    ));
    text(StatusCode::BAD_REQUEST, msg)
}

/// `POST /backend/save/`: the Daedalus server's API, for its published
/// client and `curl -d`: form fields `application`, `host`, `severity`,
/// `message`, `timestamp` (the Content-Type may be absent; the line is
/// stamped at receipt like every other). Answers exactly 201
/// `{"status": "ok"}`, which that client checks for.
pub(crate) async fn daedalus(
    State(state): State<Arc<HttpState>>,
    Writer { principal, peer }: Writer,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match read_body(&state, &headers, body).await {
        Ok(b) => b,
        Err(r) => return r,
    };
    let error = |status: StatusCode, reason: String| {
        let body = serde_json::json!({"status": "error", "reason": reason}).to_string();
        (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
    };
    let (mut app, mut host, mut severity, mut message) = (None, None, None, None);
    for (k, v) in form_urlencoded::parse(&bytes) {
        match &*k {
            "application" => app = Some(v),
            "host" => host = Some(v),
            "severity" => severity = Some(v),
            "message" => message = Some(v),
            _ => {} // timestamp: the line is stamped at receipt
        }
    }
    let (Some(app), Some(message)) = (app, message) else {
        return error(
            StatusCode::BAD_REQUEST,
            "the form needs the fields application and message".to_owned(),
        );
    };
    let records = [Parsed {
        line: 1,
        app_id: app,
        module: Cow::Borrowed(""),
        host: host.filter(|h| !h.is_empty()),
        body: with_severity(severity.as_deref(), message),
    }];
    let mut sig = SignatureCheck::new(&headers, &bytes);
    let out = match deliver(&state, &peer, &principal, &mut sig, &records, Vec::new()).await {
        Ok(o) => o,
        Err(r) => return r,
    };
    if out.refused_busy > 0 {
        return busy("the writers are backed up; retry later\n".to_owned());
    }
    if let Some((_, reason)) = out.rejected.into_iter().next() {
        return error(StatusCode::BAD_REQUEST, reason);
    }
    (
        StatusCode::CREATED,
        [(header::CONTENT_TYPE, "application/json")],
        r#"{"status": "ok"}"#,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_with_severity_and_escapes() {
        let p = parse_line(
            3,
            br#"{"app_id":"a","module":"web","host":"h","body":"x \u00e9","severity":"ERROR"}"#,
        )
        .unwrap();
        assert_eq!((p.line, &*p.app_id, &*p.module), (3, "a", "web"));
        assert_eq!(p.host.as_deref(), Some("h"));
        assert_eq!(p.body, "ERROR - x é");
        let p = parse_line(1, br#"{"app_id":"a","body":"b"}"#).unwrap();
        assert_eq!((&*p.module, p.host.is_none(), &*p.body), ("", true, "b"));
        assert!(parse_line(1, br#"{"body":"b"}"#)
            .unwrap_err()
            .contains("app_id"));
        assert!(parse_line(1, br#"{"app_id":"a","body":"b","severity":[1]}"#).is_err());
    }

    #[test]
    fn hex_decodes() {
        assert_eq!(decode_hex("00ff10"), Some(vec![0, 255, 16]));
        assert_eq!(decode_hex("0g"), None);
        assert_eq!(decode_hex("abc"), None);
    }
}
