//! `GET /metrics` (Prometheus text exposition format 0.0.4) and
//! `GET /healthz`, as an axum [`Router`] the HTTP server mounts behind its
//! `metrics` scope (issue 14, item 3).
//!
//! Everything is read from [`Stats`] at scrape time: the hot paths only add
//! to atomics, once per chunk or batch. Labels are bounded: drop reasons,
//! TLS refusal reasons and inputs are fixed lists, facilities are the
//! configured ones only.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use tokio::sync::watch;

use crate::config::FacilityDb;
use crate::stats::{
    Stats, BUCKETS_SECONDS, DROP_REASONS, GAUGES, STREAM_INPUTS, TLS_REFUSALS, TRANSPORTS,
};

/// Every metric name starts with this.
const PREFIX: &str = "loghogd_";

/// The exposition format's content type.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the metrics read besides [`Stats`].
#[derive(Debug, Clone)]
pub struct MetricsSources {
    /// The facilities in use: the per-facility series are exactly these
    /// (zero until a message arrives), so a reload that removes one removes
    /// its series too.
    pub facilities: watch::Receiver<Arc<FacilityDb>>,
}

/// Shared state of the metrics routes.
#[derive(Debug, Clone)]
struct Scrape {
    stats: Arc<Stats>,
    sources: MetricsSources,
}

/// The `/metrics` and `/healthz` routes, for the HTTP server to `.merge`.
pub fn router(stats: Arc<Stats>, sources: MetricsSources) -> Router {
    Router::new()
        .route("/metrics", get(serve_metrics))
        .route("/healthz", get(serve_health))
        .with_state(Scrape { stats, sources })
}

async fn serve_metrics(State(s): State<Scrape>) -> impl IntoResponse {
    let body = render(&s.stats, &s.sources);
    ([(header::CONTENT_TYPE, CONTENT_TYPE)], body)
}

async fn serve_health(State(s): State<Scrape>) -> impl IntoResponse {
    match check_health(&s.stats) {
        Ok(()) => (StatusCode::OK, "ok\n".to_string()),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, format!("{why}\n")),
    }
}

/// Healthy means: the listeners accept (set once they run, cleared when a
/// stop begins) and no writer is holding lines after a failed write. A
/// writer leaves the fault state on its next successful write, or when it
/// gives the lines up (counted in `write_errors`), so "the last write
/// succeeded" is exactly `writers_faulted == 0`.
///
/// # Errors
/// The reason the daemon is not healthy, for the 503 body.
pub fn check_health(stats: &Stats) -> Result<(), String> {
    if stats.listening.load(Relaxed) == 0 {
        return Err("not listening".to_string());
    }
    match stats.writers_faulted.load(Relaxed) {
        0 => Ok(()),
        n => Err(format!("{n} writer(s) retrying a failed write")),
    }
}

/// Renders every metric in the Prometheus text format.
pub fn render(stats: &Stats, extra: &MetricsSources) -> String {
    let mut out = String::with_capacity(8192);
    family(
        &mut out,
        "build_info",
        "gauge",
        "the running loghogd's version",
    );
    let _ = writeln!(
        out,
        "{PREFIX}build_info{{version=\"{}\"}} 1",
        env!("CARGO_PKG_VERSION")
    );
    stats.for_each(|name, help, value| {
        // Rendered below with a `reason` label; the labels sum to these.
        if DROP_REASONS.contains(&name) || name == "tls_refused" {
            return;
        }
        if GAUGES.contains(&name) {
            family(&mut out, name, "gauge", help);
            sample(&mut out, name, "", value);
        } else {
            let total = format!("{name}_total");
            family(&mut out, &total, "counter", help);
            sample(&mut out, &total, "", value);
        }
    });
    // Issue 16: the consumer's lag, per owned partition.
    if let Ok(lag) = stats.consume_lag_by.lock() {
        if !lag.is_empty() {
            family(
                &mut out,
                "consume_partition_lag",
                "gauge",
                "messages of an owned partition not yet written",
            );
            for (p, n) in lag.iter() {
                sample(
                    &mut out,
                    "consume_partition_lag",
                    &format!("partition=\"{p}\""),
                    *n,
                );
            }
        }
    }
    let loaded = stats.config_loaded_seconds.load(Relaxed);
    if loaded > 0 {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        family(
            &mut out,
            "config_age_seconds",
            "gauge",
            "seconds since the facilities in use were loaded",
        );
        sample(
            &mut out,
            "config_age_seconds",
            "",
            now.saturating_sub(loaded),
        );
    }
    family(
        &mut out,
        "dropped_messages_total",
        "counter",
        "messages lost, by reason (each loss counted once)",
    );
    stats.for_each_drop(|reason, value| {
        sample(
            &mut out,
            "dropped_messages_total",
            &label("reason", reason),
            value,
        );
    });
    by_label(
        &mut out,
        ("input_received_total", "counter"),
        "well-formed messages received, by input",
        ("input", &TRANSPORTS),
        &stats.received_by,
    );
    by_label(
        &mut out,
        ("tls_refused_total", "counter"),
        "TLS handshakes refused, by reason",
        ("reason", &TLS_REFUSALS),
        &stats.tls_refused_by,
    );
    by_label(
        &mut out,
        ("connections_open", "gauge"),
        "connections open now, by input",
        ("input", &STREAM_INPUTS),
        &stats.connections_open,
    );
    let (buckets, count, sum) = stats.compress_seconds.snapshot();
    family(
        &mut out,
        "compress_duration_seconds",
        "histogram",
        "how long each successful backup compression ran",
    );
    for (le, n) in BUCKETS_SECONDS.iter().zip(buckets) {
        let _ = writeln!(
            out,
            "{PREFIX}compress_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "{PREFIX}compress_duration_seconds_bucket{{le=\"+Inf\"}} {count}"
    );
    let _ = writeln!(out, "{PREFIX}compress_duration_seconds_sum {sum}");
    let _ = writeln!(out, "{PREFIX}compress_duration_seconds_count {count}");
    let db = extra.facilities.borrow().clone();
    let mut msgs = String::new();
    let mut bytes = String::new();
    for f in db.iter() {
        let (m, b) = stats.facilities.get(&f.section_name());
        let labels = format!("{},{}", label("app", &f.app_id), label("module", &f.module));
        sample(&mut msgs, "facility_messages_total", &labels, m);
        sample(&mut bytes, "facility_bytes_total", &labels, b);
    }
    family(
        &mut out,
        "facility_messages_total",
        "counter",
        "messages routed to each configured facility",
    );
    out.push_str(&msgs);
    family(
        &mut out,
        "facility_bytes_total",
        "counter",
        "bytes of lines routed to each configured facility",
    );
    out.push_str(&bytes);
    out
}

/// `# HELP` and `# TYPE` of one family.
fn family(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {PREFIX}{name} {help}");
    let _ = writeln!(out, "# TYPE {PREFIX}{name} {kind}");
}

/// A family with one sample per name of a fixed list, `key="name"`, read
/// from the atomics indexed like the list.
fn by_label(
    out: &mut String,
    (name, kind): (&str, &str),
    help: &str,
    (key, names): (&str, &[&str]),
    values: &[AtomicU64],
) {
    family(out, name, kind, help);
    for (n, v) in names.iter().zip(values) {
        sample(out, name, &label(key, n), v.load(Relaxed));
    }
}

/// One sample line; `labels` is `a="x",b="y"` or empty.
fn sample(out: &mut String, name: &str, labels: &str, value: u64) {
    out.push_str(PREFIX);
    out.push_str(name);
    if !labels.is_empty() {
        out.push('{');
        out.push_str(labels);
        out.push('}');
    }
    out.push(' ');
    out.push_str(itoa::Buffer::new().format(value));
    out.push('\n');
}

/// `key="value"` with the value escaped as the format requires.
fn label(key: &str, value: &str) -> String {
    let mut s = String::with_capacity(key.len() + value.len() + 3);
    s.push_str(key);
    s.push_str("=\"");
    for c in value.chars() {
        match c {
            '\\' => s.push_str("\\\\"),
            '"' => s.push_str("\\\""),
            '\n' => s.push_str("\\n"),
            c => s.push(c),
        }
    }
    s.push('"');
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Transport;
    use axum::body::Body;
    use axum::http::Request;
    use http_body_util::BodyExt;
    use tower::ServiceExt;

    fn db(text: &str) -> FacilityDb {
        FacilityDb::parse(text, std::path::Path::new("facilities.conf")).expect("facilities")
    }

    fn sources(text: &str) -> MetricsSources {
        let (_tx, rx) = watch::channel(Arc::new(db(text)));
        MetricsSources { facilities: rx }
    }

    const FACILITIES: &str = "[web]\nrotate = daily\nbackup_count = 3\n\n[web:api.v1]\nrotate = daily\nbackup_count = 3\n\n[odd\"app]\nrotate = daily\nbackup_count = 3\n";

    fn parse(text: &str) -> prometheus_parse::Scrape {
        prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
            .expect("prometheus text")
    }

    fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<_> = scrape
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
        match found[0].value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            ref other => panic!("{name}: {other:?}"),
        }
    }

    #[test]
    fn transports_are_indexed_in_enum_order() {
        for t in [
            Transport::Tcp,
            Transport::Udp,
            Transport::Tls,
            Transport::SyslogUdp,
            Transport::SyslogTcp,
            Transport::SyslogTls,
            Transport::SyslogUnix,
            Transport::Http,
            Transport::Broker,
        ] {
            assert_eq!(TRANSPORTS[t as usize], t.as_str());
        }
    }

    #[test]
    fn rendered_text_parses_with_the_values_set() {
        let stats = Stats::default();
        let src = sources(FACILITIES);
        stats.received.store(12, Relaxed);
        stats.open_files.store(3, Relaxed);
        stats.bad_signature.store(4, Relaxed);
        stats.received_by[Transport::Udp as usize].store(5, Relaxed);
        stats.count_tls_refusal(crate::stats::TlsRefusal::NotTls);
        stats.count_tls_refusal(crate::stats::TlsRefusal::NotTls);
        stats.queued(300, 2);
        let stats = Arc::new(stats);
        let _open = stats.open_connection("tls");
        let web = stats.facilities.counter("web:api.v1");
        web.messages.store(7, Relaxed);
        web.bytes.store(700, Relaxed);
        // A section no longer configured must not show.
        stats.facilities.counter("gone").messages.store(1, Relaxed);
        let text = render(&stats, &src);
        let s = parse(&text);
        assert_eq!(value(&s, "loghogd_received_total", &[]), 12.0);
        assert_eq!(value(&s, "loghogd_open_files", &[]), 3.0);
        assert_eq!(
            value(
                &s,
                "loghogd_dropped_messages_total",
                &[("reason", "bad_signature")]
            ),
            4.0
        );
        assert_eq!(
            value(
                &s,
                "loghogd_dropped_messages_total",
                &[("reason", "udp_dropped")]
            ),
            0.0
        );
        assert_eq!(
            value(&s, "loghogd_input_received_total", &[("input", "udp")]),
            5.0
        );
        // TLS refusals only by reason (their sum is the SIGUSR1 total), and
        // every reason and stream input is present, zero or not.
        assert_eq!(
            value(&s, "loghogd_tls_refused_total", &[("reason", "unknown_ca")]),
            0.0
        );
        assert_eq!(
            value(&s, "loghogd_tls_refused_total", &[("reason", "not_tls")]),
            2.0
        );
        assert_eq!(
            s.samples
                .iter()
                .filter(|x| x.metric == "loghogd_tls_refused_total")
                .count(),
            TLS_REFUSALS.len()
        );
        assert_eq!(
            value(&s, "loghogd_connections_open", &[("input", "syslog-tls")]),
            0.0
        );
        assert_eq!(
            value(&s, "loghogd_connections_open", &[("input", "tls")]),
            1.0
        );
        assert_eq!(value(&s, "loghogd_writer_queue_bytes", &[]), 300.0);
        assert_eq!(value(&s, "loghogd_writer_queue_messages", &[]), 2.0);
        let api = [("app", "web"), ("module", "api.v1")];
        assert_eq!(value(&s, "loghogd_facility_messages_total", &api), 7.0);
        assert_eq!(value(&s, "loghogd_facility_bytes_total", &api), 700.0);
        let root = [("app", "web"), ("module", "")];
        assert_eq!(value(&s, "loghogd_facility_messages_total", &root), 0.0);
        assert!(!text.contains("gone"), "{text}");
        // The quote is escaped (prometheus-parse keeps escapes as sent).
        let odd = [("app", r#"odd\"app"#)];
        assert_eq!(value(&s, "loghogd_facility_messages_total", &odd), 0.0);
        stats
            .compress_seconds
            .observe(std::time::Duration::from_millis(70));
        stats
            .compress_seconds
            .observe(std::time::Duration::from_secs(2));
        let s = parse(&render(&stats, &src));
        let hist = s
            .samples
            .iter()
            .find(|x| x.metric == "loghogd_compress_duration_seconds")
            .expect("histogram");
        let prometheus_parse::Value::Histogram(ref h) = hist.value else {
            panic!("{hist:?}");
        };
        let at = |le: f64| h.iter().find(|b| b.less_than == le).map(|b| b.count);
        assert_eq!(at(0.05), Some(0.0));
        assert_eq!(at(0.1), Some(1.0));
        assert_eq!(at(5.0), Some(2.0));
        assert_eq!(at(f64::INFINITY), Some(2.0));
        let build = s
            .samples
            .iter()
            .find(|x| x.metric == "loghogd_build_info")
            .expect("build_info");
        assert_eq!(build.labels.get("version"), Some(env!("CARGO_PKG_VERSION")));
        // Every family has exactly one TYPE line, and counters end in _total.
        let mut types: Vec<&str> = text.lines().filter(|l| l.starts_with("# TYPE ")).collect();
        let n = types.len();
        types.sort_unstable();
        types.dedup();
        assert_eq!(types.len(), n);
        for t in &types {
            if t.ends_with(" counter") {
                assert!(
                    t.split(' ').nth(2).is_some_and(|m| m.ends_with("_total")),
                    "{t}"
                );
            }
        }
    }

    async fn get(router: Router, path: &str) -> (StatusCode, String, Option<String>) {
        let res = router
            .oneshot(Request::get(path).body(Body::empty()).expect("request"))
            .await
            .expect("response");
        let status = res.status();
        let ct = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let body = res.into_body().collect().await.expect("body").to_bytes();
        (status, String::from_utf8(body.to_vec()).expect("utf-8"), ct)
    }

    #[tokio::test]
    async fn routes_serve_metrics_and_health() {
        let stats = Arc::new(Stats::default());
        let app = router(stats.clone(), sources(FACILITIES));
        let (status, body, ct) = get(app.clone(), "/metrics").await;
        assert_eq!(status, StatusCode::OK);
        assert_eq!(ct.as_deref(), Some(CONTENT_TYPE));
        assert_eq!(value(&parse(&body), "loghogd_written_total", &[]), 0.0);

        // Not listening yet: 503.
        let (status, body, _) = get(app.clone(), "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("not listening"), "{body}");
        stats.listening.store(1, Relaxed);
        let (status, _, _) = get(app.clone(), "/healthz").await;
        assert_eq!(status, StatusCode::OK);
        stats.writers_faulted.store(1, Relaxed);
        let (status, body, _) = get(app.clone(), "/healthz").await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
        assert!(body.contains("retrying"), "{body}");
        let (status, _, _) = get(app, "/nope").await;
        assert_eq!(status, StatusCode::NOT_FOUND);
    }

    /// Rendering cost with many facilities (run with `--ignored --nocapture`).
    #[test]
    #[ignore = "measurement, prints numbers"]
    fn render_cost() {
        for n in [10usize, 100, 1000] {
            let mut text = String::new();
            for i in 0..n {
                let _ = write!(text, "[app{i}]\nrotate = daily\nbackup_count = 3\n\n");
            }
            let stats = Stats::default();
            let src = sources(&text);
            for i in 0..n {
                stats
                    .facilities
                    .counter(&format!("app{i}"))
                    .messages
                    .store(i as u64, Relaxed);
            }
            let rounds = 2000 / n.max(1) * 10 + 10;
            let t = std::time::Instant::now();
            let mut len = 0;
            for _ in 0..rounds {
                len += render(&stats, &src).len();
            }
            let per = t.elapsed() / rounds as u32;
            println!(
                "render: {n} facilities: {per:?} per scrape, {} bytes",
                len / rounds
            );
        }
    }
}
