//! Issue 16 through a real broker: an edge loghogd with `[forward]` and a
//! writer loghogd with `[consume]`, both the real binary, around a real
//! `nats-server -js` (tests/it/nats.rs). Round trips for the LogHog, syslog
//! and HTTP inputs with the edge's receipt time kept; the broker down for
//! 10 s under load (the spool fills and drains); the writer SIGKILLed with a
//! second writer standing by (take-over within the lease TTL, never two
//! writers at once); one node of a three-node cluster killed with replicas
//! = 3; a poison message counted and skipped; the consumer's lag per
//! partition and its redeliveries, as `/metrics` shows them. Every case
//! checks that each message is written exactly once, in order per
//! connection.

use std::io::Write;
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use chrono::NaiveDateTime;

use crate::http::run_curl;
use crate::nats::{NatsCluster, NatsServer};
use crate::util::*;

/// The edge forwards `app`, `web` and syslog; local3 is a child of
/// `[syslog]` and inherits `forward = yes`.
const EDGE_FACILITIES: &str = "\
[app]
rotate = daily
backup_count = 3
forward = yes

[web]
rotate = daily
backup_count = 3
forward = yes

[syslog]
rotate = daily
backup_count = 3
forward = yes

[syslog:local3]
format = rfc5424
";

/// The writer writes what it consumes with its own facilities (no forward).
const WRITER_FACILITIES: &str = "\
[app]
rotate = daily
backup_count = 3

[web]
rotate = daily
backup_count = 3

[syslog]
rotate = daily
backup_count = 3

[syslog:local3]
format = rfc5424
";

/// `/metrics` on loopback without credentials, for every daemon here.
const HTTP: &str = "[http]\nlisten = 127.0.0.1:0\nallow_anonymous_on_loopback = yes\n";

/// An edge forwarding to `servers`, with `extra` in `[forward]`; syslog
/// listeners on TCP and UDP; UTC, so the test can compare receipt times.
fn edge_setup(servers: &str, extra: &str) -> Setup {
    Setup::new()
        .env("TZ", "UTC")
        .facilities(EDGE_FACILITIES)
        .conf_extra(HTTP)
        .conf_extra("[syslog]\nlisten_udp = 127.0.0.1:0\nlisten_tcp = 127.0.0.1:0\n")
        .conf_extra(&format!("[forward]\nservers = {servers}\n{extra}"))
}

/// A writer consuming from `servers`, with `extra` in `[consume]`.
fn writer_setup(servers: &str, extra: &str) -> Setup {
    Setup::new()
        .env("TZ", "UTC")
        .facilities(WRITER_FACILITIES)
        .conf_extra(HTTP)
        .conf_extra(&format!("[consume]\nservers = {servers}\n{extra}"))
}

fn now_utc() -> NaiveDateTime {
    chrono::Utc::now().naive_utc()
}

/// The timestamp a loghog-format line starts with.
fn stamp(line: &str) -> NaiveDateTime {
    let (ts, _, _) = parse_line(line);
    NaiveDateTime::parse_from_str(&ts, "%Y-%m-%d %H:%M:%S%.6f").unwrap()
}

// === metrics ===

/// The daemon's `/metrics` address.
fn metrics_addr(d: &Daemon) -> SocketAddr {
    *d.addrs("http")
        .first()
        .expect("no `listening on http` line: is [http] listen set?")
}

/// The sum of every sample of `loghogd_{name}` (all label sets), `None`
/// when the scrape fails or has no such metric.
fn metric_at(addr: SocketAddr, name: &str) -> Option<f64> {
    metric_labeled(addr, name, &[])
}

/// The sum of the samples of `loghogd_{name}` that carry every label of
/// `labels`; `None` when the scrape fails or has no such sample.
fn metric_labeled(addr: SocketAddr, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let r = run_curl(&format!("http://{addr}/metrics"), &[], None);
    if r.status != 200 {
        return None;
    }
    let scrape = crate::metrics::parse(&r.body);
    let full = format!("loghogd_{name}");
    let mut found = None;
    for s in &scrape.samples {
        if s.metric == full && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)) {
            let v = match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => continue,
            };
            *found.get_or_insert(0.0) += v;
        }
    }
    found
}

fn metric(d: &Daemon, name: &str) -> Option<f64> {
    metric_at(metrics_addr(d), name)
}

/// Waits (bounded by `deadline`) until `cond` holds for `loghogd_{name}`;
/// returns the value.
fn wait_metric(
    d: &Daemon,
    name: &str,
    deadline: Duration,
    what: &str,
    cond: impl Fn(f64) -> bool,
) -> f64 {
    wait_metric_labeled(d, name, &[], deadline, what, cond)
}

/// [`wait_metric`] for the samples carrying every label of `labels`.
fn wait_metric_labeled(
    d: &Daemon,
    name: &str,
    labels: &[(&str, &str)],
    deadline: Duration,
    what: &str,
    cond: impl Fn(f64) -> bool,
) -> f64 {
    let start = Instant::now();
    loop {
        let v = metric_labeled(metrics_addr(d), name, labels);
        if let Some(v) = v.filter(|&v| cond(v)) {
            return v;
        }
        assert!(
            start.elapsed() < deadline,
            "loghogd_{name}{labels:?} never {what} within {deadline:?} (last {v:?}); stderr:\n{}",
            d.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

// === load ===

/// Senders that keep writing `c{conn} n{seq:06} {tail}` frames for app
/// `app` (root module) on their own TCP connections until told to stop.
struct Load {
    stop: Arc<AtomicBool>,
    /// Messages written so far, all connections together.
    sent: Arc<AtomicUsize>,
    threads: Vec<JoinHandle<usize>>,
}

impl Load {
    /// `conns` connections to `addr`, each a burst of 10 messages every 2 ms
    /// (about 5,000 messages/s per connection): steady load, not a flood.
    fn start(addr: SocketAddr, conns: usize) -> Load {
        Load::with(addr, conns, Some(Duration::from_millis(2)), "load")
    }

    /// `conns` connections, each writing bursts of 10 messages ending in
    /// `tail`, `pace` apart (`None`: as fast as the edge takes them).
    fn with(addr: SocketAddr, conns: usize, pace: Option<Duration>, tail: &str) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicUsize::new(0));
        let threads = (0..conns)
            .map(|c| {
                let (stop, sent, tail) = (stop.clone(), sent.clone(), tail.to_owned());
                let mut s: TcpStream = connect(addr);
                // Held back for as long as a full spool lasts in a test.
                s.set_write_timeout(Some(Duration::from_secs(120)))
                    .expect("set the write timeout");
                std::thread::spawn(move || {
                    let mut seq = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let mut bytes = Vec::new();
                        for _ in 0..10 {
                            bytes.extend(simple("app", &format!("c{c} n{seq:06} {tail}")));
                            seq += 1;
                        }
                        // Blocks while the edge holds readers back (a full spool).
                        s.write_all(&bytes).expect("write to the edge");
                        sent.fetch_add(10, Ordering::Relaxed);
                        // Pacing, as a real client sends; nothing waits out a race.
                        if let Some(pace) = pace {
                            std::thread::sleep(pace);
                        }
                    }
                    seq
                })
            })
            .collect();
        Load {
            stop,
            sent,
            threads,
        }
    }

    /// Messages written so far, all connections together.
    fn sent(&self) -> usize {
        self.sent.load(Ordering::Relaxed)
    }

    /// Stops the senders, closes their connections; messages sent per connection.
    fn finish(self) -> Vec<usize> {
        self.stop.store(true, Ordering::Relaxed);
        self.threads
            .into_iter()
            .map(|t| t.join().expect("sender thread"))
            .collect()
    }
}

/// Checks that `lines` hold, for each connection `c`, `c{c} n0..counts[c]`
/// exactly once and in order.
fn check_sequences(lines: &[String], counts: &[usize]) {
    let mut next = vec![0usize; counts.len()];
    for line in lines {
        let (_, _, body) = parse_line(line);
        let mut it = body.split(' ');
        let c: usize = it.next().unwrap()[1..].parse().unwrap();
        let n: usize = it.next().unwrap()[1..].parse().unwrap();
        assert_eq!(
            n, next[c],
            "connection {c}: expected message {} next, got {n} (lost, duplicated or reordered)",
            next[c]
        );
        next[c] += 1;
    }
    assert_eq!(next, counts, "messages per connection");
}

/// [`wait_for_lines`], showing the daemons' own logs when the lines do
/// not all come.
fn wait_for_lines_or(
    path: &std::path::Path,
    n: usize,
    deadline: Duration,
    ds: &[&Daemon],
) -> Vec<String> {
    let start = Instant::now();
    loop {
        let lines: Vec<String> = std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(str::to_owned)
            .collect();
        if lines.len() >= n {
            return lines;
        }
        if start.elapsed() > deadline {
            let logs: Vec<String> = ds.iter().map(|d| d.stderr_text()).collect();
            panic!(
                "{} has {} lines, wanted {n} within {deadline:?}; the daemons said:\n{}",
                path.display(),
                lines.len(),
                logs.join("\n-----\n")
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Waits for every message of `counts` in `path`, checks each is there
/// exactly once and in order per connection, and that a moment later
/// nothing more came (no duplicate from a re-publish); returns the lines.
fn all_once_in_order(path: &std::path::Path, counts: &[usize], ds: &[&Daemon]) -> Vec<String> {
    let total: usize = counts.iter().sum();
    let lines = wait_for_lines_or(path, total, DEADLINE * 2, ds);
    check_sequences(&lines, counts);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        read(path).lines().count(),
        total,
        "lines after a second more"
    );
    lines
}

// === (a) round trips ===

/// LogHog over TCP, syslog (RFC 5424 octet-counted over TCP, and logger(1)
/// over UDP) and HTTP NDJSON, all sent to the edge before the writer even
/// starts: each arrives once, in order, in the writer's files; loghog-format
/// lines start with the edge's receipt time (before the writer existed),
/// and the RFC 5424 lines keep their syslog fields.
#[test]
fn broker_round_trip_loghog_syslog_and_http_in_order_with_the_edge_time() {
    let nats = NatsServer::start();
    let edge_s = edge_setup(&nats.url(), "");
    let mut edge = Daemon::start(&edge_s);
    let t0 = now_utc();

    let bytes: Vec<u8> = (0..1000)
        .flat_map(|i| simple("app", &format!("c0 n{i:06} loghog")))
        .collect();
    send_tcp(edge.tcp_addr(), &bytes);

    let mut c = connect(edge.addrs("syslog-tcp")[0]);
    for i in 0..50 {
        let m = format!(
            "<155>1 2026-12-03T05:00:00.123456+00:00 web01 zookeeper 42 ID47 \
             [zoo@123 tiger=\"hungry\"] z{i:03}"
        );
        c.write_all(format!("{} {m}", m.len()).as_bytes()).unwrap();
    }
    drop(c);
    let udp = edge.addrs("syslog-udp")[0];
    let out = Command::new("logger")
        .args(["-n", "127.0.0.1", "-P", &udp.port().to_string(), "-d"])
        .args(["-t", "cron", "-p", "cron.info", "job done"])
        .output()
        .expect("run logger (bsdutils)");
    assert!(out.status.success(), "logger: {out:?}");

    let http = metrics_addr(&edge);
    for p in 0..3 {
        let body: String = (0..20)
            .map(|i| {
                format!(
                    "{{\"app_id\":\"web\",\"module\":\"\",\"host\":\"h1\",\"body\":\"c0 n{:06} http\"}}\n",
                    p * 20 + i
                )
            })
            .collect();
        let r = run_curl(
            &format!("http://{http}/v1/logs"),
            &["-H", "Content-Type: application/x-ndjson"],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 204, "{}", r.body);
    }

    // Everything is in the stream before any writer exists.
    let total = 1000 + 50 + 1 + 60;
    wait_metric(
        &edge,
        "forward_published_records_total",
        DEADLINE,
        "counted every record",
        |v| v >= total as f64,
    );
    let t_writer = now_utc();
    let writer_s = writer_setup(&nats.url(), "");
    let mut writer = Daemon::start(&writer_s);

    let app = wait_for_lines(&writer_s.log("app/root.log"), 1000, DEADLINE);
    check_numbers(&app, 1, 1000);
    let web = wait_for_lines(&writer_s.log("web/root.log"), 60, DEADLINE);
    check_numbers(&web, 1, 60);
    for line in app.iter().chain(&web) {
        let t = stamp(line);
        assert!(
            t0 - chrono::Duration::seconds(1) <= t && t <= t_writer,
            "{line:?}: not the edge's receipt time ({t0} .. {t_writer}; the writer started at {t_writer})"
        );
    }
    assert!(
        app.iter().all(|l| parse_line(l).1 == "127.0.0.1"),
        "{app:?}"
    );
    assert!(web.iter().all(|l| parse_line(l).1 == "h1"), "{web:?}");

    let l3 = wait_for_lines(&writer_s.log("syslog/local3.log"), 50, DEADLINE);
    assert_eq!(l3.len(), 50);
    for (i, line) in l3.iter().enumerate() {
        assert!(line.starts_with("<155>1 "), "{line}");
        assert!(
            line.contains(" web01 zookeeper 42 ID47 [zoo@123 tiger=\"hungry\"] "),
            "{line}"
        );
        assert!(line.ends_with(&format!("] z{i:03}")), "{line}");
    }
    let root = wait_for_lines(&writer_s.log("syslog/root.log"), 1, DEADLINE);
    assert_eq!(root.len(), 1, "{root:?}");
    let (_, _, body) = parse_line(&root[0]);
    assert!(
        body.starts_with("cron") && body.ends_with(": job done"),
        "{root:?}"
    );

    // Nothing more arrives later (no duplicates after a redelivery).
    wait_metric(
        &writer,
        "consume_written_records_total",
        DEADLINE,
        "counted every record",
        |v| v >= total as f64,
    );
    assert_eq!(
        metric(&writer, "consume_written_records_total"),
        Some(total as f64)
    );
    assert_eq!(read(&writer_s.log("app/root.log")).lines().count(), 1000);
    edge.stop();
    writer.stop();
}

// === (b) the broker down under load ===

/// Load on two connections; the broker is SIGKILLed for 10 s and restarted
/// on the same port and store. While it is down the edge spools
/// (`loghogd_forward_spool_bytes` > 0); after it returns the spool drains to
/// 0 and every message is written once, in order, with the time the edge
/// received it (lines received during the outage carry outage times).
#[test]
fn broker_down_10s_under_load_spools_and_drains_every_message_once_in_order() {
    let mut nats = NatsServer::start();
    let writer_s = writer_setup(&nats.url(), "");
    let mut writer = Daemon::start(&writer_s);
    let edge_s = edge_setup(&nats.url(), "");
    let mut edge = Daemon::start(&edge_s);
    let path = writer_s.log("app/root.log");

    let load = Load::start(edge.tcp_addr(), 2);
    wait_for_lines(&path, 500, DEADLINE);
    // A clean stop (SIGTERM): a SIGKILLed single node can lose what it
    // had acknowledged but not yet written out, and with it the duplicate
    // window's ids; a node SIGKILLed is the cluster test's case.
    nats.terminate();
    let t_down = now_utc();
    let down = Instant::now();
    wait_metric(
        &edge,
        "forward_spool_bytes",
        Duration::from_secs(8),
        "rose above 0 while the broker was down",
        |v| v > 0.0,
    );
    let mut grew = false;
    let mut last = 0.0;
    while down.elapsed() < Duration::from_secs(10) {
        let v = metric(&edge, "forward_spool_bytes").unwrap_or(0.0);
        grew |= v > last && last > 0.0;
        last = v;
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        grew,
        "the spool did not grow under load while the broker was down"
    );
    let t_up = now_utc();
    nats.restart();
    // Load goes on across the reconnect.
    std::thread::sleep(Duration::from_secs(1));
    let counts = load.finish();
    let total: usize = counts.iter().sum();

    let lines = wait_for_lines_or(&path, total, DEADLINE * 2, &[&edge, &writer]);
    check_sequences(&lines, &counts);
    wait_metric(
        &edge,
        "forward_spool_bytes",
        DEADLINE,
        "drained to 0",
        |v| v == 0.0,
    );
    // Receipt times: per connection never going back, and some inside the
    // outage (they waited in the spool and kept the edge's time).
    let mut last = [NaiveDateTime::MIN; 2];
    let mut in_outage = 0;
    for line in &lines {
        let t = stamp(line);
        let c: usize = parse_line(line).2[1..2].parse().unwrap();
        assert!(t >= last[c], "time went back on connection {c}: {line}");
        last[c] = t;
        if t > t_down + chrono::Duration::seconds(1) && t < t_up - chrono::Duration::seconds(1) {
            in_outage += 1;
        }
    }
    assert!(
        in_outage > 1000,
        "only {in_outage} lines carry a receipt time inside the outage ({t_down} .. {t_up})"
    );
    // A moment later nothing more came (no duplicate from a re-publish).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read(&path).lines().count(), total);
    edge.stop();
    writer.stop();
}

/// Bytes in the spool segments under the edge's workdir.
fn spooled_bytes(edge: &Setup) -> u64 {
    let base = edge.root().join("lib/spool/LOGHOG");
    let mut total = 0;
    for part in std::fs::read_dir(&base).unwrap().flatten() {
        if !part.path().is_dir() {
            continue; // edge-id
        }
        for f in std::fs::read_dir(part.path()).unwrap().flatten() {
            if f.file_name().to_string_lossy().ends_with(".seg") {
                total += f.metadata().unwrap().len();
            }
        }
    }
    total
}

/// Load while the broker goes away for `outage`, then a SIGTERM to the
/// edge: the block in flight (from memory, or already spooled) and
/// everything queued are in the spool when it exits; started again once
/// the broker is back, it publishes them, and the writer has every message
/// exactly once, in order. `extra` goes to the edge's `[forward]`.
fn edge_stopped_while_the_broker_is_down_loses_nothing(extra: &str, outage: Duration) {
    let mut nats = NatsServer::start();
    let writer_s = writer_setup(&nats.url(), "");
    let mut writer = Daemon::start(&writer_s);
    let edge_s = edge_setup(&nats.url(), extra);
    let mut edge = Daemon::start(&edge_s);
    let path = writer_s.log("app/root.log");

    let load = Load::start(edge.tcp_addr(), 2);
    wait_for_lines(&path, 500, DEADLINE);
    nats.terminate(); // clean: see broker_down_10s_…
    std::thread::sleep(outage);
    let counts = load.finish();
    let total: usize = counts.iter().sum();
    edge.stop();
    let before = read(&path).lines().count();
    assert!(
        before < total,
        "the broker was down, yet {before} of {total} arrived"
    );
    assert!(
        spooled_bytes(&edge_s) > 0,
        "the edge stopped with records not published, and its spool is empty"
    );

    nats.restart();
    let mut edge = Daemon::start(&edge_s);
    all_once_in_order(&path, &counts, &[&edge, &writer]);
    edge.stop();
    writer.stop();
}

/// The stop comes 0.3 s into the outage, long before `spill_after`: the
/// block in flight is only in memory, and the stop spools it.
#[test]
fn broker_edge_sigterm_while_the_broker_is_down_spools_what_is_in_memory() {
    edge_stopped_while_the_broker_is_down_loses_nothing(
        "spill_after = 1h\n",
        Duration::from_millis(300),
    );
}

/// `spill_after = 0`: every block is spooled and synced before it is
/// published; the same outage and stop lose nothing either.
#[test]
fn broker_edge_spooling_every_block_first_loses_nothing_across_an_outage_and_a_stop() {
    edge_stopped_while_the_broker_is_down_loses_nothing(
        "spill_after = 0\n",
        Duration::from_secs(3),
    );
}

/// The broker away and the spool full (1M): the TCP sender is held back,
/// not dropped, and syslog datagrams for the same partition are dropped
/// and counted; once the broker is back the sender goes on, and every
/// message it wrote arrives exactly once, in order.
#[test]
fn broker_full_spool_holds_tcp_senders_back_and_counts_udp_drops() {
    let mut nats = NatsServer::start();
    let writer_s = writer_setup(&nats.url(), "partitions = 1\n");
    let mut writer = Daemon::start(&writer_s);
    let edge_s = edge_setup(
        &nats.url(),
        "partitions = 1\nspool_max_bytes = 1M\nbatch_bytes = 64K\n",
    );
    let mut edge = Daemon::start(&edge_s);
    let path = writer_s.log("app/root.log");

    // One sender as fast as the edge takes it, 500-byte bodies.
    let load = Load::with(edge.tcp_addr(), 1, None, &"x".repeat(500));
    wait_for_lines(&path, 100, DEADLINE);
    // A clean stop: a SIGKILLed single node can lose what it acknowledged
    // but had not yet written out, and with it the duplicate window's ids
    // (the cluster test covers a node killed).
    nats.terminate();
    wait_metric(
        &edge,
        "forward_spool_bytes",
        DEADLINE,
        "near its 1M limit while the broker is down",
        |v| v >= f64::from(800u32 << 10),
    );
    // Held back: no progress for 2 s (once the socket buffers are full).
    let start = Instant::now();
    let mut last = (load.sent(), Instant::now());
    loop {
        std::thread::sleep(Duration::from_millis(250));
        let now = load.sent();
        if now != last.0 {
            last = (now, Instant::now());
        } else if last.1.elapsed() >= Duration::from_secs(2) {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "the sender was never held back ({now} messages written)"
        );
    }
    let spooled = metric(&edge, "forward_spool_bytes").unwrap();
    assert!(
        spooled <= f64::from((1u32 << 20) + (128 << 10)),
        "the spool passed its bound: {spooled} bytes"
    );

    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let to = edge.addrs("syslog-udp")[0];
    for i in 0..200 {
        let msg = format!("<134>1 2026-12-03T00:00:00Z h app - - - dropped {i}");
        udp.send_to(msg.as_bytes(), to).unwrap();
    }
    wait_metric(
        &edge,
        "dropped_messages_total",
        DEADLINE,
        "counted the syslog datagrams the full spool could not take",
        |v| v > 0.0,
    );

    nats.restart();
    let held = load.sent();
    let t = Instant::now();
    while load.sent() < held + 1000 {
        assert!(
            t.elapsed() < DEADLINE,
            "the sender was not let go after the broker came back"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    let counts = load.finish();
    all_once_in_order(&path, &counts, &[&edge, &writer]);
    edge.stop();
    writer.stop();
}

// === (c) a writer killed, another takes over ===

/// What the monitor saw of one writer at one moment: owned partitions and
/// records written, or `None` when its `/metrics` did not answer.
#[derive(Clone, Copy, Debug)]
struct Seen {
    owned: f64,
    written: f64,
}

/// One monitor sample: when, writer A, writer B.
type Sample = (Instant, Option<Seen>, Option<Seen>);

fn seen(addr: SocketAddr) -> Option<Seen> {
    Some(Seen {
        owned: metric_at(addr, "consume_owned_partitions")?,
        written: metric_at(addr, "consume_written_records_total").unwrap_or(0.0),
    })
}

/// Writer A owns every partition (lease_ttl = 3 s); writer B (same logdir,
/// its own workdir and name) stands by and owns none. A is SIGKILLed
/// mid-stream: B owns every partition within the TTL (plus a scrape's
/// slack); the file holds every message once, in order; a monitor sampling
/// both writers every 100 ms never saw B own or write anything while A
/// lived, nor the two own more than all partitions together.
#[test]
fn broker_writer_sigkilled_a_standby_takes_over_within_the_ttl_exactly_once() {
    const PARTS: f64 = 4.0;
    let nats = NatsServer::start();
    let a_s = writer_setup(&nats.url(), "name = wa\nlease_ttl = 3s\npartitions = 4\n");
    let mut a = Daemon::start(&a_s);
    wait_metric(&a, "consume_owned_partitions", DEADLINE, "reached 4", |v| {
        v == PARTS
    });
    let b_s = writer_setup(&nats.url(), "name = wb\nlease_ttl = 3s\npartitions = 4\n")
        .logdir_at(&a_s.logdir());
    let mut b = Daemon::start(&b_s);
    let (a_m, b_m) = (metrics_addr(&a), metrics_addr(&b));

    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let watching = Arc::new(AtomicBool::new(true));
    let monitor = {
        let (samples, watching) = (samples.clone(), watching.clone());
        std::thread::spawn(move || {
            while watching.load(Ordering::Relaxed) {
                let s = (Instant::now(), seen(a_m), seen(b_m));
                samples.lock().unwrap().push(s);
                std::thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // B is watched standing by for a while before any load, so the
    // "never owned or wrote while A lived" check has samples to check.
    let start = Instant::now();
    while samples
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.2.is_some())
        .count()
        < 10
    {
        assert!(start.elapsed() < DEADLINE, "B's /metrics never answered");
        std::thread::sleep(Duration::from_millis(50));
    }
    let edge_s = edge_setup(&nats.url(), "partitions = 4\n");
    let mut edge = Daemon::start(&edge_s);
    let path = a_s.log("app/root.log");
    let load = Load::start(edge.tcp_addr(), 2);
    wait_for_lines(&path, 2000, DEADLINE);
    send_signal(a.pid(), "KILL");
    a.wait_exit(DEADLINE);
    let killed = Instant::now();
    wait_metric(
        &b,
        "consume_owned_partitions",
        DEADLINE,
        "took over all 4",
        |v| v == PARTS,
    );
    let took = killed.elapsed();
    assert!(
        took <= Duration::from_secs(3 + 2),
        "take-over took {took:?} (lease_ttl = 3s)"
    );
    std::thread::sleep(Duration::from_secs(2));
    let counts = load.finish();
    let total: usize = counts.iter().sum();
    let lines = wait_for_lines(&path, total, DEADLINE * 2);
    check_sequences(&lines, &counts);
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(read(&path).lines().count(), total, "lines after the last");

    watching.store(false, Ordering::Relaxed);
    monitor.join().unwrap();
    let samples = samples.lock().unwrap();
    let before: Vec<_> = samples.iter().filter(|s| s.0 < killed).collect();
    // B's gauge must be there (at 0) while it stands by, or nothing was checked.
    let b_answered = before.iter().filter(|s| s.2.is_some()).count();
    assert!(
        b_answered > 5,
        "B answered too few samples before the kill: {before:?}"
    );
    for (t, sa, sb) in &before {
        if let Some(sb) = sb {
            assert!(
                sb.owned == 0.0 && sb.written == 0.0,
                "B owned or wrote while A lived ({:?} before the kill): {sb:?}",
                killed - *t
            );
        }
        if let (Some(sa), Some(sb)) = (sa, sb) {
            assert!(sa.owned + sb.owned <= PARTS, "{sa:?} {sb:?}");
        }
    }
    let b_wrote = seen(b_m).map_or(0.0, |s| s.written);
    assert!(b_wrote > 0.0, "B never wrote after the take-over");
    edge.stop();
    b.stop();
}

// === (d) a cluster node killed ===

/// Replicas = 3 on a three-node cluster; under load, the node leading the
/// stream is SIGKILLed: nothing is lost or duplicated, order kept.
#[test]
fn broker_cluster_node_killed_under_load_with_three_replicas_loses_nothing() {
    let mut cl = NatsCluster::start(3);
    let edge_s = edge_setup(&cl.urls(), "replicas = 3\n");
    let mut edge = Daemon::start(&edge_s);
    // The writer creates the stream if it is first: the same replicas.
    let writer_s = writer_setup(&cl.urls(), "replicas = 3\n");
    let mut writer = Daemon::start(&writer_s);
    let path = writer_s.log("app/root.log");
    let load = Load::start(edge.tcp_addr(), 2);
    wait_for_lines(&path, 1000, DEADLINE);

    let info = cl.any_conn().stream_info("LOGHOG").unwrap();
    assert_eq!(info["config"]["num_replicas"], 3, "{info}");
    let leader = info["cluster"]["leader"].as_str().unwrap().to_string();
    let i = cl.index_of(&leader).unwrap();
    cl.kill(i);
    std::thread::sleep(Duration::from_secs(5));
    let counts = load.finish();
    all_once_in_order(&path, &counts, &[&edge, &writer]);
    edge.stop();
    writer.stop();
}

// === (e) poison ===

/// The start of a block of the design's format: magic, record count.
fn block_header(records: u32) -> Vec<u8> {
    let mut block = b"LHB1".to_vec();
    block.extend_from_slice(&records.to_le_bytes());
    block
}

/// One `record` of the design's block format (little-endian), no syslog meta.
fn encode_record(out: &mut Vec<u8>, micros: i64, app: &str, host: &str, key: &str, body: &str) {
    let mut r = Vec::new();
    r.extend_from_slice(&micros.to_le_bytes());
    r.push(0); // flags: no syslog meta
    for s in [app, "", host, key] {
        r.extend_from_slice(&(s.len() as u16).to_le_bytes());
        r.extend_from_slice(s.as_bytes());
    }
    r.extend_from_slice(&(body.len() as u32).to_le_bytes());
    r.extend_from_slice(body.as_bytes());
    out.extend_from_slice(&(r.len() as u32).to_le_bytes());
    out.extend_from_slice(&r);
}

/// Between good messages, two messages published straight to `loghog.0`
/// (one partition): garbage that is no block at all, and a block whose first
/// record cannot be parsed but whose second can. Both count as poison (2:
/// the whole first block, the first record of the second), the good record
/// inside the second is written, and the messages after them still are.
#[test]
fn broker_poison_is_counted_and_skipped_and_never_blocks_its_partition() {
    let nats = NatsServer::start();
    let edge_s = edge_setup(&nats.url(), "partitions = 1\n");
    let mut edge = Daemon::start(&edge_s);
    let writer_s = writer_setup(&nats.url(), "partitions = 1\n");
    let mut writer = Daemon::start(&writer_s);
    let path = writer_s.log("app/root.log");

    let first: Vec<u8> = (0..5)
        .flat_map(|i| simple("app", &format!("c0 n{i:06} good")))
        .collect();
    send_tcp(edge.tcp_addr(), &first);
    wait_for_lines(&path, 5, DEADLINE);

    let mut c = nats.conn();
    let ack = c
        .js_publish("loghog.0", Some("poison.0.1"), b"this is not a block")
        .unwrap();
    assert_eq!(ack["stream"], "LOGHOG", "{ack}");
    let mut block = block_header(2);
    // A record too short for its fixed fields: skipped by its length.
    block.extend_from_slice(&5u32.to_le_bytes());
    block.extend_from_slice(&[0xff; 5]);
    let micros = chrono::Utc::now().timestamp_micros();
    encode_record(
        &mut block,
        micros,
        "app",
        "poisoner",
        "app/root",
        "inside a poisoned block",
    );
    c.js_publish("loghog.0", Some("poison.0.2"), &block)
        .unwrap();

    let second: Vec<u8> = (5..10)
        .flat_map(|i| simple("app", &format!("c0 n{i:06} good")))
        .collect();
    send_tcp(edge.tcp_addr(), &second);
    let lines = wait_for_lines(&path, 11, DEADLINE);
    let mut want: Vec<String> = (0..5).map(|i| format!("c0 n{i:06} good")).collect();
    want.push("inside a poisoned block".to_string());
    want.extend((5..10).map(|i| format!("c0 n{i:06} good")));
    assert_eq!(bodies(&lines), want);
    assert_eq!(parse_line(&lines[5]).1, "poisoner");
    wait_metric(
        &writer,
        "consume_poison_total",
        DEADLINE,
        "counted both",
        |v| v >= 2.0,
    );
    assert_eq!(metric(&writer, "consume_poison_total"), Some(2.0));
    edge.stop();
    writer.stop();
}

// === (f) lag and redeliveries ===

/// A block of the design's format holding one record for `app/root`.
fn one_record_block(host: &str, body: &str) -> Vec<u8> {
    let mut block = block_header(1);
    let micros = chrono::Utc::now().timestamp_micros();
    encode_record(&mut block, micros, "app", host, "app/root", body);
    block
}

/// Waits until the stream `LOGHOG` exists (the edge creates it with its
/// first record).
fn wait_stream(c: &mut crate::nats::NatsConn) {
    let start = Instant::now();
    loop {
        match c.stream_info("LOGHOG") {
            Ok(_) => return,
            Err(e) => assert!(start.elapsed() < DEADLINE, "no stream LOGHOG: {e}"),
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// 2,000 one-record blocks wait in partition 0, and one in partition 1,
/// before the writer starts; it takes one block per fetch
/// (`fetch_batch = 1`). `loghogd_consume_partition_lag{partition="0"}` is
/// seen above 0 (below what was waiting) and falling while the backlog is
/// written, partition 1's is 0 once its block is; once every line is in
/// the file, both are 0.
#[test]
fn broker_consumer_lag_per_partition_falls_to_zero_as_the_backlog_is_written() {
    const N: usize = 2000;
    let nats = NatsServer::start();
    // The edge creates the stream (two partitions) with its first record.
    let edge_s = edge_setup(&nats.url(), "partitions = 2\n");
    let mut edge = Daemon::start(&edge_s);
    send_tcp(edge.tcp_addr(), &simple("app", "c2 n000000 edge"));
    let mut c = nats.conn();
    wait_stream(&mut c);
    for i in 0..N {
        let b = one_record_block("h", &format!("c0 n{i:06} backlog"));
        c.js_publish("loghog.0", Some(&format!("lag.0.{i}")), &b)
            .unwrap();
    }
    let b = one_record_block("h", "c1 n000000 backlog");
    c.js_publish("loghog.1", Some("lag.1.0"), &b).unwrap();

    let writer_s = writer_setup(&nats.url(), "partitions = 2\nfetch_batch = 1\n");
    let mut writer = Daemon::start(&writer_s);
    let addr = metrics_addr(&writer);
    let lag = |p: &str| metric_labeled(addr, "consume_partition_lag", &[("partition", p)]);
    let start = Instant::now();
    let mut seen0: Vec<f64> = Vec::new();
    let mut seen1_zero = false;
    while !(seen1_zero && seen0.len() >= 2 && seen0[seen0.len() - 1] < seen0[0]) {
        if let Some(v) = lag("0").filter(|&v| v > 0.0) {
            // N blocks, and the edge's record if it hashed to partition 0.
            assert!(
                v <= N as f64,
                "partition 0's lag {v} with {N} blocks waiting"
            );
            seen0.push(v);
        }
        seen1_zero |= lag("1") == Some(0.0);
        assert!(
            start.elapsed() < DEADLINE,
            "never saw partition 0's lag above 0 and falling, and partition 1's at 0 \
             (partition 0: {seen0:?}; partition 1 at 0: {seen1_zero}); stderr:\n{}",
            writer.stderr_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let lines = wait_for_lines_or(
        &writer_s.log("app/root.log"),
        N + 1,
        DEADLINE * 2,
        &[&writer],
    );
    for p in ["0", "1"] {
        wait_metric_labeled(
            &writer,
            "consume_partition_lag",
            &[("partition", p)],
            DEADLINE,
            "came back to 0",
            |v| v == 0.0,
        );
    }
    check_sequences(&lines, &[N, 1, 1]);
    edge.stop();
    writer.stop();
}

/// The broker refuses the writer's acknowledgements (its NKey user may
/// not publish to `$JS.ACK.>`), as if every ack were lost just after the
/// commit: the writer writes and commits each block, and the blocks stay
/// in the stream. Restarted, it is given every one of them again: each is
/// counted in `loghogd_consume_redeliveries_total` and skipped, and no
/// line is written twice.
#[test]
fn broker_blocks_delivered_again_after_their_commit_are_counted_as_redeliveries_and_skipped() {
    let keys = tempfile::tempdir().unwrap();
    let (seed, public) = crate::broker_auth::nkey_seed(keys.path(), "writer.nk");
    let nats = NatsServer::start_with_config(&format!(
        "authorization {{\n  users = [\n    {{ user: open, password: open }}\n    \
         {{ nkey: \"{public}\", permissions: {{ publish: {{ deny: [\"$JS.ACK.>\"] }} }} }}\n  ]\n}}\n\
         no_auth_user: open\n"
    ));
    nats.wait_jetstream();
    let writer_s = writer_setup(
        &nats.url(),
        &format!("partitions = 1\nnkey = {}\n", seed.display()),
    );
    let mut writer = Daemon::start(&writer_s);
    let edge_s = edge_setup(&nats.url(), "partitions = 1\n");
    let mut edge = Daemon::start(&edge_s);
    let path = writer_s.log("app/root.log");
    for part in 0..5 {
        let bytes: Vec<u8> = (part * 100..part * 100 + 100)
            .flat_map(|i| simple("app", &format!("c0 n{i:06} once")))
            .collect();
        send_tcp(edge.tcp_addr(), &bytes);
        wait_for_lines_or(&path, part * 100 + 100, DEADLINE, &[&writer, &edge]);
    }
    wait_metric(
        &writer,
        "consume_written_records_total",
        DEADLINE,
        "counted all 500",
        |v| v >= 500.0,
    );
    assert_eq!(metric(&writer, "consume_redeliveries_total"), Some(0.0));
    writer.stop();
    let log = nats.log_text();
    assert!(
        log.contains("Publish Violation") && log.contains("Subject \"$JS.ACK.LOGHOG."),
        "the broker did not refuse the writer's acks:\n{log}"
    );
    let blocks = nats.conn().stream_info("LOGHOG").unwrap()["state"]["messages"]
        .as_u64()
        .unwrap();
    assert!(blocks >= 1, "the unacknowledged blocks left the stream");

    let mut writer = Daemon::start(&writer_s);
    wait_metric(
        &writer,
        "consume_redeliveries_total",
        DEADLINE,
        "counted the blocks delivered again",
        |v| v >= blocks as f64,
    );
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(
        metric(&writer, "consume_redeliveries_total"),
        Some(blocks as f64)
    );
    assert_eq!(metric(&writer, "consume_written_records_total"), Some(0.0));
    let lines = all_once_in_order(&path, &[500], &[&writer, &edge]);
    assert_eq!(lines.len(), 500);
    edge.stop();
    writer.stop();
}
