//! The read-only log viewer (issue 15), served by the `[http]` listener
//! under `/`: applications → facilities, a facility's lines newest first
//! with filters (host, severity, time range, literal or regex search) and
//! cursor pagination, a messages-per-minute chart, a plain-text download
//! and a live tail (SSE), across the live file and every retained backup,
//! decompressed on the fly. No database: the files the daemon writes are
//! the index.
//!
//! Who may read: `read:APP` / `read:*` ([`Principal`] from the HTTP layer:
//! tokens, login cookie, `cert:` lines, or anonymous on loopback by
//! explicit opt-in). Which files: only those of configured facilities,
//! with paths built from the facility (a host from the URL only selects
//! among names found in the app directory). What one request may cost:
//! `[viewer]` bytes and time, and at most `max_scans` at once.
//!
//! - [`sources`]: a facility's files and how to open them
//! - [`lines`]: one line's time, host and severity per format
//! - [`scan`]: the search engine
//! - [`chart`], [`tail`], [`pages`]: the chart, the live tail, the HTML

mod chart;
mod lines;
mod pages;
mod scan;
mod sources;
mod tail;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path as UrlPath, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use axum::Extension;
use chrono::{Local, NaiveDateTime, TimeDelta};
use tokio::sync::{mpsc, watch, Semaphore};

use crate::config::{Facility, FacilityDb, ViewerSection};
use crate::input::http::{self as http, HttpState, Principal, Scope};
use scan::{Budget, Cursor, Filter, Matcher, Stop};
pub(crate) use sources::Files;
use sources::Sources;

/// The Content-Security-Policy of every viewer response: our own script
/// and stylesheet only, no inline code, no framing, forms to ourselves.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'";

const VIEWER_JS: &str = include_str!("assets/viewer.js");
const VIEWER_CSS: &str = include_str!("assets/viewer.css");

/// How long a request waits for one of the `max_scans` slots.
const SCAN_WAIT: Duration = Duration::from_secs(5);

/// What the viewer's handlers share.
#[derive(Debug)]
pub(crate) struct Viewer {
    files: Files,
    facilities: watch::Receiver<Arc<FacilityDb>>,
    limits: ViewerSection,
    scans: Arc<Semaphore>,
    /// `max_tails`: each open live tail holds one.
    tails: Arc<Semaphore>,
    /// For the login form's token check and the cookie's `Secure` flag.
    http: Arc<HttpState>,
}

impl Viewer {
    /// The viewer over `logdir`'s files.
    pub(crate) fn new(
        files: Files,
        facilities: watch::Receiver<Arc<FacilityDb>>,
        limits: ViewerSection,
        http: Arc<HttpState>,
    ) -> Viewer {
        Viewer {
            scans: Arc::new(Semaphore::new(limits.max_scans)),
            tails: Arc::new(Semaphore::new(limits.max_tails)),
            files,
            facilities,
            limits,
            http,
        }
    }

    /// The configured facility `app` / `module` (`root` for the root one).
    fn facility(&self, app: &str, module: &str) -> Option<Arc<Facility>> {
        self.facilities
            .borrow()
            .iter()
            .find(|f| f.app_id == app && f.file_stem() == module)
            .cloned()
    }

    fn budget(&self) -> Budget {
        Budget::new(self.limits.max_scan_bytes, self.limits.max_scan_time)
    }
}

/// The viewer's routes (the HTTP layer adds the [`Principal`]).
pub(crate) fn router(viewer: Arc<Viewer>) -> axum::Router {
    axum::Router::new()
        .route("/", get(index))
        .route("/app/{app}/{module}", get(facility_page))
        .route("/app/{app}/{module}/tail", get(tail_events))
        .route("/app/{app}/{module}/chart.svg", get(chart_svg))
        .route("/app/{app}/{module}/download", get(download))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route(
            "/assets/viewer.js",
            get(|| async { asset(VIEWER_JS, "text/javascript; charset=utf-8") }),
        )
        .route(
            "/assets/viewer.css",
            get(|| async { asset(VIEWER_CSS, "text/css; charset=utf-8") }),
        )
        .with_state(viewer)
        .layer(axum::middleware::map_response(secure_headers))
}

/// The headers every viewer response carries.
async fn secure_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    r
}

fn asset(text: &'static str, kind: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        text,
    )
        .into_response()
}

/// The page for a request that lacks `scope`: 401 with the login form.
fn denied(principal: &Principal, scope: Scope) -> Response {
    let status = match principal {
        Principal::Cert(_) | Principal::Token(_) => StatusCode::FORBIDDEN,
        _ => StatusCode::UNAUTHORIZED,
    };
    let why = if status == StatusCode::FORBIDDEN {
        Some("your credential does not have this scope")
    } else {
        None
    };
    let mut r = (
        status,
        Html(pages::login(why, Some(&scope.to_string())).into_string()),
    )
        .into_response();
    if status == StatusCode::UNAUTHORIZED {
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"loghogd\""),
        );
    }
    r
}

fn not_found(what: &str) -> Response {
    (
        StatusCode::NOT_FOUND,
        Html(pages::message("not found", what).into_string()),
    )
        .into_response()
}

/// The query of a facility view, as the URL gives it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Params {
    pub(crate) host: Option<String>,
    pub(crate) severity: Option<u8>,
    pub(crate) from: Option<NaiveDateTime>,
    pub(crate) to: Option<NaiveDateTime>,
    pub(crate) q: String,
    pub(crate) regex: bool,
    pub(crate) icase: bool,
    pub(crate) cursor: Option<Cursor>,
    /// Parameters that could not be read, for the page to say.
    pub(crate) problems: Vec<String>,
}

impl Params {
    fn parse(query: Option<&str>) -> Params {
        let mut p = Params::default();
        for (k, v) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
            let v = v.trim();
            match &*k {
                "host" if !v.is_empty() => p.host = Some(v.to_owned()),
                "severity" if !v.is_empty() => match lines::severity_by_name(v) {
                    Some(s) => p.severity = Some(s),
                    None => p.problems.push("severity: not a severity name".to_owned()),
                },
                "from" | "to" if !v.is_empty() => match lines::parse_time(v) {
                    Some(t) if k == "from" => p.from = Some(t),
                    Some(t) => p.to = Some(t),
                    None => p.problems.push(format!("{k}: use YYYY-MM-DDTHH:MM[:SS]")),
                },
                "q" => p.q = v.to_owned(),
                "mode" => p.regex = v == "regex",
                "icase" => p.icase = matches!(v, "on" | "1" | "yes" | "true"),
                "cursor" if !v.is_empty() => match Cursor::parse(v) {
                    Some(c) => p.cursor = Some(c),
                    None => p
                        .problems
                        .push("cursor: not a cursor from an older link".to_owned()),
                },
                _ => {}
            }
        }
        p
    }

    /// The filters as a query string (`?…`, or empty), with the cursor
    /// when `with_cursor`.
    fn query(&self, with_cursor: bool) -> String {
        let mut s = form_urlencoded::Serializer::new(String::new());
        if let Some(h) = &self.host {
            s.append_pair("host", h);
        }
        if let Some(sev) = self.severity {
            s.append_pair("severity", lines::SEVERITIES[usize::from(sev)]);
        }
        if self.from.is_some() {
            s.append_pair("from", &self.start_text());
        }
        if self.to.is_some() {
            s.append_pair("to", &self.end_text());
        }
        if !self.q.is_empty() {
            s.append_pair("q", &self.q);
            s.append_pair("mode", if self.regex { "regex" } else { "literal" });
            if self.icase {
                s.append_pair("icase", "on");
            }
        }
        if with_cursor {
            if let Some(c) = &self.cursor {
                s.append_pair("cursor", &c.encode());
            }
        }
        let q = s.finish();
        if q.is_empty() {
            q
        } else {
            format!("?{q}")
        }
    }

    /// The live tail's query: the filters but no time range or cursor.
    fn tail_query(&self, host: Option<&str>) -> String {
        let mut p = self.clone();
        p.from = None;
        p.to = None;
        p.cursor = None;
        if let Some(h) = host {
            p.host = Some(h.to_owned());
        }
        p.query(false)
    }

    fn start_text(&self) -> String {
        self.from
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
            .unwrap_or_default()
    }

    fn end_text(&self) -> String {
        self.to
            .map(|t| t.format("%Y-%m-%dT%H:%M:%S").to_string())
            .unwrap_or_default()
    }
}

/// A facility request, checked: the facility, its host (file_per_host),
/// and the filter.
struct Target {
    facility: Arc<Facility>,
    /// The host whose files are read (`file_per_host` only).
    file_host: Option<String>,
    /// Hosts with files (`file_per_host` only), for the form.
    hosts: Vec<String>,
    params: Params,
}

/// Finds the facility, checks `read:APP`, and picks the host's files.
#[allow(clippy::result_large_err)]
fn target(
    v: &Viewer,
    principal: &Principal,
    app: &str,
    module: &str,
    query: Option<&str>,
) -> Result<Target, Response> {
    // The scope first: whether an app exists is not told to those who
    // may not read it.
    let scope = Scope::Read(app.to_owned());
    if principal.require(scope.clone()).is_err() {
        return Err(denied(principal, scope));
    }
    let Some(facility) = v.facility(app, module) else {
        return Err(not_found("no such facility in facilities.conf"));
    };
    let params = Params::parse(query);
    let (file_host, hosts) = if facility.file_per_host {
        let hosts = sources::hosts(&v.files.logdir, &facility);
        let chosen = match params.host.as_deref() {
            Some(h) => match sources::known_host(&hosts, h) {
                Some(h) => Some(h.to_owned()),
                None => return Err(not_found("no files for that host")),
            },
            None => hosts.first().cloned(),
        };
        (chosen, hosts)
    } else {
        (None, Vec::new())
    };
    Ok(Target {
        facility,
        file_host,
        hosts,
        params,
    })
}

/// [`target`], then `adjust` on its parameters, then its filter; a bad
/// search is a 400 (the pages say it in the page instead).
#[allow(clippy::result_large_err)]
fn target_filter(
    v: &Viewer,
    principal: &Principal,
    app: &str,
    module: &str,
    req: &Request,
    adjust: impl FnOnce(&mut Params),
) -> Result<(Target, Filter), Response> {
    let mut t = target(v, principal, app, module, req.uri().query())?;
    adjust(&mut t.params);
    match t.filter() {
        Ok(f) => Ok((t, f)),
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("{e}\n")).into_response()),
    }
}

impl Target {
    /// The scan filter (the host field filter only when the host does not
    /// already pick the files).
    fn filter(&self) -> Result<Filter, String> {
        let p = &self.params;
        let matcher = if p.q.is_empty() {
            None
        } else {
            Some(Matcher::new(&p.q, p.regex, p.icase)?)
        };
        Ok(Filter {
            matcher,
            host: if self.facility.file_per_host {
                None
            } else {
                p.host.as_ref().map(|h| h.as_bytes().to_vec())
            },
            min_severity: p.severity,
            from: p.from,
            to: p.to,
            format: self.facility.format,
        })
    }

    fn sources(&self, v: &Viewer) -> std::io::Result<Sources> {
        Sources::list(
            &v.files.logdir,
            &self.facility,
            self.file_host.as_deref(),
            &v.files.state,
        )
    }
}

async fn scan_slot(v: &Viewer) -> Result<tokio::sync::OwnedSemaphorePermit, Response> {
    match tokio::time::timeout(SCAN_WAIT, v.scans.clone().acquire_owned()).await {
        Ok(Ok(p)) => Ok(p),
        _ => Err((
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "5")],
            Html(
                pages::message(
                    "busy",
                    "every scan slot ([viewer] max_scans) is taken; try again in a few seconds",
                )
                .into_string(),
            ),
        )
            .into_response()),
    }
}

/// A response body fed by a blocking scan through a channel.
fn streamed(rx: mpsc::Receiver<Bytes>, kind: &'static str) -> Response {
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx))
    });
    ([(header::CONTENT_TYPE, kind)], Body::from_stream(stream)).into_response()
}

/// What a stop says.
fn stop_text(stop: Stop, budget: &Budget) -> String {
    let why = match stop {
        Stop::Bytes => "[viewer] max_scan_bytes",
        Stop::Time => "[viewer] max_scan_seconds",
    };
    format!(
        "stopped early: scanned {} in {} files and reached {why}; narrow the time range or search, or follow the link to go on",
        pages::human_bytes(budget.scanned),
        budget.files
    )
}

// === handlers ===

async fn index(
    State(v): State<Arc<Viewer>>,
    Extension(principal): Extension<Principal>,
) -> Response {
    let facilities: Vec<Arc<Facility>> = v
        .facilities
        .borrow()
        .iter()
        .filter(|f| principal.require(Scope::Read(f.app_id.clone())).is_ok())
        .cloned()
        .collect();
    if facilities.is_empty() && principal.require(Scope::Read("*".into())).is_err() {
        if let Principal::Anonymous { .. } | Principal::Nobody = principal {
            return denied(&principal, Scope::Read("APP".into()));
        }
    }
    let Ok(permit) = scan_slot(&v).await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "busy\n").into_response();
    };
    let v2 = v.clone();
    let rows = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut budget = v2.budget();
        facilities
            .iter()
            .map(|f| index_row(&v2, f, &mut budget))
            .collect::<Vec<_>>()
    })
    .await
    .unwrap_or_default();
    Html(pages::index(&rows).into_string()).into_response()
}

/// One facility's row: files, size, last write and today's count.
fn index_row(v: &Viewer, f: &Facility, budget: &mut Budget) -> pages::FacilityRow {
    let hosts = if f.file_per_host {
        sources::hosts(&v.files.logdir, f)
    } else {
        Vec::new()
    };
    let now = Local::now().naive_local();
    let midnight = now.date().and_hms_opt(0, 0, 0).unwrap_or(now);
    let key = lines::key_of(&midnight);
    let mut row = pages::FacilityRow {
        app: f.app_id.clone(),
        module: f.file_stem().to_owned(),
        files: 0,
        bytes: 0,
        last_write: None,
        today: None,
        per_minute: None,
        hosts: hosts.len(),
        at_least: false,
    };
    let mut newest = None;
    let host_list: Vec<Option<&str>> = if f.file_per_host {
        hosts.iter().map(|h| Some(h.as_str())).collect()
    } else {
        vec![None]
    };
    for host in host_list {
        // Many hosts, many directory reads: the page's time budget holds.
        if budget.expired() {
            row.at_least = true;
            break;
        }
        let Ok(s) = Sources::list(&v.files.logdir, f, host, &v.files.state) else {
            continue;
        };
        row.files += s.files.len();
        row.bytes += s.files.iter().map(|x| x.size).sum::<u64>();
        for src in &s.files {
            newest = newest.max(src.modified);
        }
        if let Some(live) = s.files.iter().find(|x| x.live) {
            if let Some((n, capped)) = scan::count_since(&s, live, f.format, &key, budget) {
                *row.today.get_or_insert(0) += n;
                row.at_least |= capped;
            }
        }
    }
    row.last_write = newest.map(|t| {
        chrono::DateTime::<Local>::from(t)
            .format("%Y-%m-%d %H:%M:%S")
            .to_string()
    });
    let minutes = (now - midnight).num_seconds() as f64 / 60.0;
    row.per_minute = row.today.map(|n| n as f64 / minutes.max(1.0));
    row
}

async fn facility_page(
    State(v): State<Arc<Viewer>>,
    Extension(principal): Extension<Principal>,
    UrlPath((app, module)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    let t = match target(&v, &principal, &app, &module, req.uri().query()) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let (filter, mut error) = match t.filter() {
        Ok(f) => (Some(f), None),
        Err(e) => (None, Some(e)),
    };
    if !t.params.problems.is_empty() {
        error = Some(t.params.problems.join("; "));
    }
    let head = pages::facility_head(&pages::FacilityHead {
        app: &app,
        module: &module,
        params: &t.params,
        hosts: &t.hosts,
        host: t.file_host.as_deref(),
        error,
    });
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    let _ = tx.try_send(Bytes::from(head));
    let Some(filter) = filter else {
        let _ = tx.try_send(Bytes::from(pages::facility_tail(
            "no search run",
            None,
            None,
        )));
        return streamed(rx, "text/html; charset=utf-8");
    };
    let permit = match scan_slot(&v).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let base = pages::facility_href(&app, &module);
    let limit = v.limits.page_lines;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut budget = v.budget();
        let sources = match t.sources(&v) {
            Ok(s) => s,
            Err(e) => {
                let _ = tx.blocking_send(Bytes::from(pages::facility_tail(
                    &format!("cannot list the files: {e}"),
                    None,
                    None,
                )));
                return;
            }
        };
        let format = t.facility.format;
        let mut buf = String::with_capacity(64 << 10);
        let mut emit = |src: &sources::Source, _off: u64, line: &[u8]| {
            let year = src.started.map_or(2000, |s| chrono::Datelike::year(&s));
            pages::line(&mut buf, line, format, year);
            if buf.len() >= 32 << 10 {
                let chunk = std::mem::replace(&mut buf, String::with_capacity(64 << 10));
                return tx.blocking_send(Bytes::from(chunk)).is_ok();
            }
            true
        };
        let out = scan::newest_first(
            &sources,
            &filter,
            t.params.cursor.as_ref(),
            limit,
            &mut budget,
            &mut emit,
        );
        if out.abandoned {
            return;
        }
        let _ = tx.blocking_send(Bytes::from(std::mem::take(&mut buf)));
        let mut more = t.params.clone();
        let (stopped, next) = match &out.stopped {
            Some((stop, at)) => {
                let mut text = stop_text(*stop, &budget);
                if let Some(name) = &out.skipped {
                    text.push_str(&format!(
                        "; {name} (compressed) was not searched to its end and is left out: \
                         narrow the time range to search it"
                    ));
                }
                (Some(text), at.clone())
            }
            None => (None, out.next.clone()),
        };
        let older = next.map(|c| {
            more.cursor = Some(c);
            if let Some(h) = &t.file_host {
                more.host = Some(h.clone());
            }
            format!("{base}{}", more.query(true))
        });
        let mut summary = format!(
            "{} lines shown; scanned {} in {} of {} files",
            out.shown,
            pages::human_bytes(budget.scanned),
            budget.files,
            sources.files.len()
        );
        for e in &out.errors {
            summary.push_str("; unreadable: ");
            summary.push_str(e);
        }
        let _ = tx.blocking_send(Bytes::from(pages::facility_tail(
            &summary,
            stopped.as_deref(),
            older.as_deref(),
        )));
    });
    streamed(rx, "text/html; charset=utf-8")
}

async fn chart_svg(
    State(v): State<Arc<Viewer>>,
    Extension(principal): Extension<Principal>,
    UrlPath((app, module)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    // No range chosen: the last hour.
    let now = Local::now().naive_local();
    let (mut from, mut to) = (now, now);
    let (t, filter) = match target_filter(&v, &principal, &app, &module, &req, |p| {
        to = p.to.unwrap_or(now);
        from = p
            .from
            .unwrap_or_else(|| to.checked_sub_signed(TimeDelta::hours(1)).unwrap_or(to));
        p.from = Some(from);
        p.to = Some(to);
    }) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let permit = match scan_slot(&v).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let svg = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut buckets = chart::Buckets::new(from, to);
        let mut budget = v.budget();
        let note = match t.sources(&v) {
            Ok(sources) => {
                let format = t.facility.format;
                let mut emit = |src: &sources::Source, _: u64, line: &[u8]| {
                    let year = src.started.map_or(2000, |s| chrono::Datelike::year(&s));
                    if let Some(time) = lines::parse(line, format, year).time {
                        buckets.add(&time);
                    }
                    true
                };
                let out = scan::oldest_first(&sources, &filter, &mut budget, &mut emit);
                out.stopped.map(|_| "stopped early: [viewer] scan limits")
            }
            Err(_) => Some("cannot list the files"),
        };
        buckets.svg(note)
    })
    .await
    .unwrap_or_default();
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

async fn download(
    State(v): State<Arc<Viewer>>,
    Extension(principal): Extension<Principal>,
    UrlPath((app, module)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    let (t, filter) = match target_filter(&v, &principal, &app, &module, &req, |_| {}) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let permit = match scan_slot(&v).await {
        Ok(p) => p,
        Err(r) => return r,
    };
    let (tx, rx) = mpsc::channel::<Bytes>(16);
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let mut budget = v.budget();
        let Ok(sources) = t.sources(&v) else {
            let _ = tx.blocking_send(Bytes::from_static(b"# loghogd: cannot list the files\n"));
            return;
        };
        let mut buf: Vec<u8> = Vec::with_capacity(256 << 10);
        let mut emit = |_: &sources::Source, _: u64, line: &[u8]| {
            buf.extend_from_slice(line);
            buf.push(b'\n');
            if buf.len() >= 128 << 10 {
                let chunk = std::mem::replace(&mut buf, Vec::with_capacity(256 << 10));
                return tx.blocking_send(Bytes::from(chunk)).is_ok();
            }
            true
        };
        let out = scan::oldest_first(&sources, &filter, &mut budget, &mut emit);
        if out.abandoned {
            return;
        }
        if let Some((stop, _)) = out.stopped {
            // Said in-band, on a line of its own that no log line can be
            // (every log line starts with its timestamp).
            buf.extend_from_slice(format!("# loghogd: {}\n", stop_text(stop, &budget)).as_bytes());
        }
        let _ = tx.blocking_send(Bytes::from(buf));
    });
    let mut r = streamed(rx, "text/plain; charset=utf-8");
    let name: String = format!("{app}-{module}.log")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{name}\"")) {
        r.headers_mut().insert(header::CONTENT_DISPOSITION, v);
    }
    r
}

async fn tail_events(
    State(v): State<Arc<Viewer>>,
    Extension(principal): Extension<Principal>,
    UrlPath((app, module)): UrlPath<(String, String)>,
    req: Request,
) -> Response {
    // The tail is of what comes next: no time range.
    let (t, filter) = match target_filter(&v, &principal, &app, &module, &req, |p| {
        p.from = None;
        p.to = None;
    }) {
        Ok(t) => t,
        Err(r) => return r,
    };
    let Ok(permit) = v.tails.clone().try_acquire_owned() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::RETRY_AFTER, "30")],
            "every live tail slot ([viewer] max_tails) is taken\n",
        )
            .into_response();
    };
    let (tx, rx) = mpsc::channel::<tail::TailEvent>(256);
    let follow = tail::follow(
        v.files.clone(),
        t.facility.clone(),
        t.file_host.clone(),
        filter,
        tx,
    );
    tokio::spawn(async move {
        let _permit = permit;
        follow.await;
    });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let ev = match rx.recv().await? {
            tail::TailEvent::Line(line) => {
                // SSE data may not hold CR or LF (the file's lines hold
                // neither, but a crafted file might).
                let text: String = String::from_utf8_lossy(&line)
                    .chars()
                    .map(|c| if c == '\r' || c == '\n' { ' ' } else { c })
                    .collect();
                Event::default().event("line").data(text)
            }
            tail::TailEvent::Rotated => Event::default()
                .event("rotated")
                .data("the live file rotated"),
        };
        Some((Ok::<_, Infallible>(ev), rx))
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

async fn login_form() -> Response {
    Html(pages::login(None, None).into_string()).into_response()
}

/// `POST /login`: a listed token becomes the login cookie.
async fn login(State(v): State<Arc<Viewer>>, headers: HeaderMap, body: Bytes) -> Response {
    let _ = headers;
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, t)| t.trim().to_owned())
        .unwrap_or_default();
    // Only cookie-safe tokens (printable ASCII without `;`, `,`, space or
    // quotes) can round-trip in a cookie.
    let cookie_safe = !token.is_empty()
        && token
            .bytes()
            .all(|b| b.is_ascii_graphic() && !b";,\"\\".contains(&b));
    if !cookie_safe || !http::token_is_listed(&v.http, &token) {
        return (
            StatusCode::UNAUTHORIZED,
            Html(pages::login(Some("that token is not listed"), None).into_string()),
        )
            .into_response();
    }
    let secure = if v.http.tls { "; Secure" } else { "" };
    let cookie = format!(
        "{}={token}; Path=/; HttpOnly; SameSite=Strict{secure}",
        http::TOKEN_COOKIE
    );
    let mut r = Redirect::to("/").into_response();
    if let Ok(c) = HeaderValue::from_str(&cookie) {
        r.headers_mut().insert(header::SET_COOKIE, c);
    }
    r
}

/// `POST /logout`: forgets the cookie.
async fn logout() -> Response {
    let mut r = Redirect::to("/login").into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("loghogd_token=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0"),
    );
    r
}
