//! `loghog-top`: a live terminal view of a running loghogd, read from its
//! `GET /metrics` (issue 14, item 4).
//!
//! Polls once a second and shows per-facility rates (msg/s, bytes/s) sorted
//! by rate, drops by reason, open files, connections (open now, and
//! accepted per second), what the writers have queued, and the compression
//! backlog. `--once` prints one plain-text snapshot (two scrapes one
//! interval apart, for the rates) and exits: for scripts and tests.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;
use crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::{Constraint, Layout};
use ratatui::style::{Modifier, Style};
use ratatui::text::Line;
use ratatui::widgets::{Paragraph, Row, Table};
use ratatui::Frame;

/// Scrapes larger than this are refused (a wrong URL serving a big file).
const MAX_BODY_BYTES: usize = 16 << 20;

/// How long one scrape may take, connect included.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Parser)]
#[command(
    name = "loghog-top",
    version,
    about = "Live view of a loghogd's /metrics"
)]
struct Args {
    /// The daemon's metrics URL (http:// only).
    #[arg(long, default_value = "http://127.0.0.1:5580/metrics")]
    url: String,
    /// Bearer token with the `metrics` scope (default: $LOGHOG_TOKEN; a
    /// flag shows in `ps`, the variable does not).
    #[arg(long)]
    token: Option<String>,
    /// Print one plain-text snapshot and exit.
    #[arg(long)]
    once: bool,
    /// Seconds between scrapes.
    #[arg(long, default_value_t = 1.0)]
    interval: f64,
}

/// Where and how to scrape.
#[derive(Debug, Clone)]
struct Target {
    /// `host:port` to connect to.
    authority: String,
    /// Request path and query.
    path: String,
    /// Sent as `Authorization: Bearer`.
    token: Option<String>,
}

/// One scrape, reduced to what the view shows.
#[derive(Debug, Clone, Default)]
struct Snapshot {
    /// When it was taken (rates divide by the gap between two).
    at: Option<Instant>,
    /// Daemon-wide counters and gauges by name without the `loghogd_` prefix.
    values: BTreeMap<String, f64>,
    /// `app` or `app:module` → (messages, bytes).
    facilities: BTreeMap<String, (f64, f64)>,
    /// Drop reason → count.
    drops: BTreeMap<String, f64>,
}

/// A facility's rates between two snapshots.
#[derive(Debug, Clone, PartialEq)]
struct FacilityRate {
    name: String,
    msgs_per_sec: f64,
    bytes_per_sec: f64,
    total_msgs: f64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("loghog-top: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> anyhow::Result<()> {
    let token = args
        .token
        .clone()
        .or_else(|| std::env::var("LOGHOG_TOKEN").ok());
    let target = parse_url(&args.url, token)?;
    let interval = Duration::try_from_secs_f64(args.interval)
        .ok()
        .filter(|d| !d.is_zero())
        .context("--interval must be a positive number of seconds")?;
    if args.once {
        let first = scrape(&target)?;
        // Rates need two samples; this wait is the measurement window.
        std::thread::sleep(interval);
        let second = scrape(&target)?;
        print!("{}", render_text(&first, &second));
        return Ok(());
    }
    let mut terminal = ratatui::try_init().context("cannot set up the terminal")?;
    let res = watch(&mut terminal, &target, interval);
    ratatui::restore();
    res
}

/// The live view: scrape every `interval`, redraw on every key or resize,
/// exit on `q`, Esc or Ctrl-C.
fn watch(
    terminal: &mut ratatui::DefaultTerminal,
    target: &Target,
    interval: Duration,
) -> anyhow::Result<()> {
    let mut prev = Snapshot::default();
    let mut cur = Snapshot::default();
    let mut error: Option<String> = None;
    let mut next = Instant::now();
    loop {
        if Instant::now() >= next {
            match scrape(target) {
                Ok(s) => {
                    prev = std::mem::replace(&mut cur, s);
                    error = None;
                }
                Err(e) => error = Some(format!("{e:#}")),
            }
            next = Instant::now() + interval;
        }
        terminal.draw(|f| draw(f, target, &prev, &cur, error.as_deref()))?;
        let wait = next.saturating_duration_since(Instant::now());
        if event::poll(wait)? {
            match event::read()? {
                Event::Key(k) if k.kind != KeyEventKind::Release => {
                    let ctrl_c =
                        k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                    if matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c {
                        return Ok(());
                    }
                }
                // A resize is redrawn at the top of the loop.
                _ => {}
            }
        }
    }
}

fn draw(f: &mut Frame, target: &Target, prev: &Snapshot, cur: &Snapshot, error: Option<&str>) {
    let area = f.area();
    if area.width == 0 || area.height == 0 {
        return;
    }
    let [head, drops, table] = Layout::vertical([
        Constraint::Length(3),
        Constraint::Length(1),
        Constraint::Min(0),
    ])
    .areas(area);
    let title = match error {
        Some(e) => format!("loghog-top {}{} - {e}", target.authority, target.path),
        None => format!("loghog-top {}{}  (q quits)", target.authority, target.path),
    };
    let g = |n: &str| cur.values.get(n).copied().unwrap_or(0.0);
    let rate = |n: &str| counter_rate(prev, cur, |s| s.values.get(n).copied());
    let header = vec![
        Line::styled(title, Style::default().add_modifier(Modifier::BOLD)),
        Line::raw(format!(
            "in {:.0}/s  written {:.0}/s  open files {}  writers {}",
            rate("received_total"),
            rate("written_total"),
            g("open_files"),
            g("writers"),
        )),
        Line::raw(format!(
            "connections {} open {:.1}/s  queued {}  compress backlog {}  healthy writes {}",
            g("connections_open"),
            rate("connections_total"),
            human_size(g("writer_queue_bytes")),
            g("compress_backlog"),
            if g("writers_faulted") == 0.0 {
                "yes"
            } else {
                "NO"
            },
        )),
    ];
    f.render_widget(Paragraph::new(header), head);
    f.render_widget(Paragraph::new(drops_line(cur)), drops);
    // Narrow terminals drop the totals column before the name shrinks.
    let totals = table.width >= 60;
    let rows = facility_rates(prev, cur).into_iter().map(|r| {
        let mut cells = vec![
            r.name,
            format!("{:.1}", r.msgs_per_sec),
            human_bytes(r.bytes_per_sec),
        ];
        if totals {
            cells.push(format!("{}", r.total_msgs));
        }
        Row::new(cells)
    });
    let mut widths = vec![
        Constraint::Min(8),
        Constraint::Length(9),
        Constraint::Length(10),
    ];
    let mut titles = vec!["facility", "msg/s", "bytes/s"];
    if totals {
        widths.push(Constraint::Length(12));
        titles.push("messages");
    }
    let table_widget = Table::new(rows, widths)
        .header(Row::new(titles).style(Style::default().add_modifier(Modifier::REVERSED)));
    f.render_widget(table_widget, table);
}

/// `drops: reason=n ...` (non-zero only), or that there are none.
fn drops_line(cur: &Snapshot) -> String {
    let parts: Vec<String> = cur
        .drops
        .iter()
        .filter(|(_, v)| **v > 0.0)
        .map(|(k, v)| format!("{k}={v}"))
        .collect();
    if parts.is_empty() {
        "drops: none".to_string()
    } else {
        format!("drops: {}", parts.join(" "))
    }
}

/// The plain-text snapshot of `--once`.
fn render_text(prev: &Snapshot, cur: &Snapshot) -> String {
    let g = |n: &str| cur.values.get(n).copied().unwrap_or(0.0);
    let rate = |n: &str| counter_rate(prev, cur, |s| s.values.get(n).copied());
    let mut out = format!(
        "received/s {:.1}\nwritten/s {:.1}\nopen_files {}\nwriters {}\nconnections_open {}\nconnections/s {:.1}\nwriter_queue_bytes {}\ncompress_backlog {}\nwriters_faulted {}\n{}\n",
        rate("received_total"),
        rate("written_total"),
        g("open_files"),
        g("writers"),
        g("connections_open"),
        rate("connections_total"),
        g("writer_queue_bytes"),
        g("compress_backlog"),
        g("writers_faulted"),
        drops_line(cur),
    );
    out.push_str(&format!(
        "{:<32} {:>12} {:>12} {:>14}\n",
        "facility", "msg/s", "bytes/s", "messages"
    ));
    for r in facility_rates(prev, cur) {
        out.push_str(&format!(
            "{:<32} {:>12.1} {:>12.1} {:>14}\n",
            r.name, r.msgs_per_sec, r.bytes_per_sec, r.total_msgs
        ));
    }
    out
}

/// Per-second increase of a counter; 0 without two samples, and 0 (not a
/// negative rate) across a counter reset (daemon restart).
fn counter_rate(prev: &Snapshot, cur: &Snapshot, get: impl Fn(&Snapshot) -> Option<f64>) -> f64 {
    let (Some(t0), Some(t1)) = (prev.at, cur.at) else {
        return 0.0;
    };
    let secs = t1.saturating_duration_since(t0).as_secs_f64();
    match (get(prev), get(cur)) {
        (Some(a), Some(b)) if secs > 0.0 && b >= a => (b - a) / secs,
        _ => 0.0,
    }
}

/// Every facility of `cur`, busiest first (then by name, for stability).
fn facility_rates(prev: &Snapshot, cur: &Snapshot) -> Vec<FacilityRate> {
    let mut rates: Vec<FacilityRate> = cur
        .facilities
        .iter()
        .map(|(name, (msgs, _))| FacilityRate {
            name: name.clone(),
            msgs_per_sec: counter_rate(prev, cur, |s| s.facilities.get(name).map(|v| v.0)),
            bytes_per_sec: counter_rate(prev, cur, |s| s.facilities.get(name).map(|v| v.1)),
            total_msgs: *msgs,
        })
        .collect();
    rates.sort_by(|a, b| {
        b.msgs_per_sec
            .total_cmp(&a.msgs_per_sec)
            .then_with(|| a.name.cmp(&b.name))
    });
    rates
}

fn human_bytes(per_sec: f64) -> String {
    human_size(per_sec)
}

/// `1.5KiB` and the like.
fn human_size(bytes: f64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = bytes;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1}{}", UNITS[unit])
}

/// Splits `http://host:port/path` (no TLS here yet: put the HTTP server on
/// localhost, or scrape through a TLS-terminating proxy).
fn parse_url(url: &str, token: Option<String>) -> anyhow::Result<Target> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("{url}: only http:// URLs are supported");
    };
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/metrics"),
    };
    if authority.is_empty() {
        bail!("{url}: no host");
    }
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Ok(Target {
        authority,
        path: path.to_string(),
        token,
    })
}

/// One `GET` over HTTP/1.1 with `Connection: close`, parsed.
fn scrape(target: &Target) -> anyhow::Result<Snapshot> {
    let body = fetch(target)?;
    let text = String::from_utf8(body).context("the metrics are not UTF-8")?;
    parse_metrics(&text)
}

fn fetch(target: &Target) -> anyhow::Result<Vec<u8>> {
    let addr = target
        .authority
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", target.authority))?
        .next()
        .with_context(|| format!("{} has no address", target.authority))?;
    let mut conn = TcpStream::connect_timeout(&addr, SCRAPE_TIMEOUT)
        .with_context(|| format!("cannot connect to {}", target.authority))?;
    conn.set_read_timeout(Some(SCRAPE_TIMEOUT))?;
    conn.set_write_timeout(Some(SCRAPE_TIMEOUT))?;
    let mut req = format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nAccept: text/plain\r\nConnection: close\r\n",
        target.path, target.authority
    );
    if let Some(t) = &target.token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    req.push_str("\r\n");
    conn.write_all(req.as_bytes())?;
    let mut raw = Vec::new();
    conn.take(MAX_BODY_BYTES as u64 + 1)
        .read_to_end(&mut raw)
        .context("reading the reply")?;
    if raw.len() > MAX_BODY_BYTES {
        bail!("reply over {MAX_BODY_BYTES} bytes");
    }
    parse_response(&raw)
}

/// Status check and body of a `Connection: close` reply (chunked or not).
fn parse_response(raw: &[u8]) -> anyhow::Result<Vec<u8>> {
    let end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .context("malformed HTTP reply")?;
    let head = std::str::from_utf8(&raw[..end]).context("malformed HTTP reply")?;
    let body = &raw[end + 4..];
    let mut lines = head.split("\r\n");
    let status = lines.next().unwrap_or_default();
    let code = status.split(' ').nth(1).unwrap_or_default();
    if code != "200" {
        bail!("{status}");
    }
    let chunked = lines.any(|l| {
        l.split_once(':').is_some_and(|(k, v)| {
            k.trim().eq_ignore_ascii_case("transfer-encoding")
                && v.trim().eq_ignore_ascii_case("chunked")
        })
    });
    if !chunked {
        return Ok(body.to_vec());
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let nl = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .context("malformed chunk")?;
        let size_text = std::str::from_utf8(&rest[..nl]).context("malformed chunk")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16).context("malformed chunk size")?;
        rest = &rest[nl + 2..];
        if size == 0 {
            return Ok(out);
        }
        if rest.len() < size {
            bail!("truncated chunk");
        }
        out.extend_from_slice(&rest[..size]);
        rest = rest.get(size + 2..).unwrap_or_default();
    }
}

/// Reads the families the view shows out of the exposition text.
fn parse_metrics(text: &str) -> anyhow::Result<Snapshot> {
    let scrape = prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .context("not Prometheus text")?;
    let mut snap = Snapshot {
        at: Some(Instant::now()),
        ..Snapshot::default()
    };
    for s in &scrape.samples {
        let Some(name) = s.metric.strip_prefix("loghogd_") else {
            continue;
        };
        let v = match s.value {
            prometheus_parse::Value::Counter(v)
            | prometheus_parse::Value::Gauge(v)
            | prometheus_parse::Value::Untyped(v) => v,
            _ => continue,
        };
        match name {
            "facility_messages_total" | "facility_bytes_total" => {
                let app = s.labels.get("app").unwrap_or_default();
                let module = s.labels.get("module").unwrap_or_default();
                let key = if module.is_empty() {
                    app.to_string()
                } else {
                    format!("{app}:{module}")
                };
                let e = snap.facilities.entry(key).or_default();
                if name == "facility_messages_total" {
                    e.0 = v;
                } else {
                    e.1 = v;
                }
            }
            "dropped_messages_total" => {
                let reason = s.labels.get("reason").unwrap_or("unknown");
                snap.drops.insert(reason.to_string(), v);
            }
            // One gauge per input; the view shows them all together.
            "connections_open" => {
                *snap.values.entry(name.to_string()).or_default() += v;
            }
            _ if s.labels.is_empty() => {
                snap.values.insert(name.to_string(), v);
            }
            _ => {}
        }
    }
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# TYPE loghogd_received_total counter\nloghogd_received_total 10\n# TYPE loghogd_open_files gauge\nloghogd_open_files 2\n# TYPE loghogd_dropped_messages_total counter\nloghogd_dropped_messages_total{reason=\"bad_frames\"} 3\n# TYPE loghogd_facility_messages_total counter\nloghogd_facility_messages_total{app=\"a\",module=\"\"} 5\nloghogd_facility_messages_total{app=\"a\",module=\"x.y\"} 50\n# TYPE loghogd_facility_bytes_total counter\nloghogd_facility_bytes_total{app=\"a\",module=\"x.y\"} 5000\n";

    #[test]
    fn rates_sort_busiest_first_and_survive_resets() {
        let mut a = parse_metrics(TEXT).expect("parse");
        let mut b = parse_metrics(&TEXT.replace(" 50\n", " 150\n").replace(" 10\n", " 4\n"))
            .expect("parse");
        let t = Instant::now();
        a.at = Some(t);
        b.at = Some(t + Duration::from_secs(2));
        let r = facility_rates(&a, &b);
        assert_eq!(r[0].name, "a:x.y");
        assert_eq!(r[0].msgs_per_sec, 50.0);
        assert_eq!(r[1].name, "a");
        // received went down: a restart, not a negative rate.
        assert_eq!(
            counter_rate(&a, &b, |s| s.values.get("received_total").copied()),
            0.0
        );
        assert_eq!(b.drops.get("bad_frames"), Some(&3.0));
        let open = parse_metrics(
            "# TYPE loghogd_connections_open gauge\nloghogd_connections_open{input=\"tcp\"} 2\nloghogd_connections_open{input=\"http\"} 1\nloghogd_writer_queue_bytes 1536\n",
        )
        .expect("parse");
        assert_eq!(open.values.get("connections_open"), Some(&3.0));
        let text = render_text(&open, &open);
        assert!(text.contains("connections_open 3\n"), "{text}");
        assert!(text.contains("writer_queue_bytes 1536\n"), "{text}");
        assert_eq!(human_size(1536.0), "1.5KiB");
        assert!(render_text(&a, &b).contains("drops: bad_frames=3"));
    }

    #[test]
    fn urls_and_replies_parse() {
        let t = parse_url("http://127.0.0.1:5580/metrics", None).expect("url");
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("127.0.0.1:5580", "/metrics")
        );
        let t = parse_url("http://[::1]", None).expect("url");
        assert_eq!(
            (t.authority.as_str(), t.path.as_str()),
            ("[::1]:80", "/metrics")
        );
        assert!(parse_url("https://x/metrics", None).is_err());
        let body = parse_response(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n")
            .expect("chunked");
        assert_eq!(body, b"abcde");
        let err = parse_response(b"HTTP/1.1 403 Forbidden\r\n\r\nmissing scope metrics")
            .expect_err("403");
        assert!(err.to_string().contains("403"), "{err}");
    }
}
