//! Metrics (issue 14, items 3 to 5): what a real daemon counts, rendered as
//! `/metrics` text and read back with a real Prometheus parser, and
//! `loghog-top` against a small HTTP server serving rendered metrics
//! (`--once`, and the live view in a 40×10 tmux window). Also: TLS
//! refusals under their reason, connections open per input (back to 0
//! however they end), a scheduled rotation counted once, and the writer
//! queue gauge holding exactly the lines a full disk keeps back.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::{Duration, Instant};

use loghogd::config::FacilityDb;
use loghogd::metrics::{check_health, render, MetricsSources};
use loghogd::stats::Stats;

use crate::util::*;

fn sources(text: &str) -> MetricsSources {
    let db = FacilityDb::parse(text, Path::new("facilities.conf")).expect("facilities");
    let (tx, rx) = tokio::sync::watch::channel(Arc::new(db));
    // The sender may go: the receiver keeps the last value.
    drop(tx);
    MetricsSources { facilities: rx }
}

pub(crate) fn parse(text: &str) -> prometheus_parse::Scrape {
    prometheus_parse::Scrape::parse(text.lines().map(|l| Ok(l.to_string())))
        .expect("prometheus text")
}

pub(crate) fn value(scrape: &prometheus_parse::Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    let found: Vec<_> = scrape
        .samples
        .iter()
        .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
        .collect();
    assert_eq!(found.len(), 1, "{name} {labels:?}: {found:?}");
    match found[0].value {
        prometheus_parse::Value::Counter(v) | prometheus_parse::Value::Gauge(v) => v,
        ref other => panic!("{name}: {other:?}"),
    }
}

#[test]
fn metrics_count_what_was_sent_per_facility_and_input() {
    let setup = Setup::new();
    let mut d = InProcess::start(&setup);
    let frames: Vec<u8> = (0..5)
        .flat_map(|i| simple("app", &format!("root message {i}")))
        .chain((0..3).flat_map(|i| frame("app", "web", &format!("web {i}"), &Opts::default())))
        .collect();
    send_tcp(d.tcp_addr(), &frames);
    send_udp(
        d.udp_addr(),
        &[simple("app", "by udp 1"), simple("app", "by udp 2")],
    );
    // Unknown app: a drop, counted under its reason.
    send_tcp(d.tcp_addr(), &simple("nobody", "lost"));
    d.wait_stat("written", 10);
    d.wait_stat("unknown_app", 1);

    let src = sources(&read(&setup.facilities_path()));
    let s = parse(&render(&d.remote.stats, &src));
    let root = [("app", "app"), ("module", "")];
    let web = [("app", "app"), ("module", "web")];
    assert_eq!(value(&s, "loghogd_facility_messages_total", &root), 7.0);
    assert_eq!(value(&s, "loghogd_facility_messages_total", &web), 3.0);
    // The bytes routed are the bytes in the files.
    let file_bytes = |rel: &str| std::fs::metadata(setup.log(rel)).expect("log file").len() as f64;
    assert_eq!(
        value(&s, "loghogd_facility_bytes_total", &root),
        file_bytes("app/root.log")
    );
    assert_eq!(
        value(&s, "loghogd_facility_bytes_total", &web),
        file_bytes("app/web.log")
    );
    assert_eq!(
        value(&s, "loghogd_input_received_total", &[("input", "tcp")]),
        9.0
    );
    assert_eq!(
        value(&s, "loghogd_input_received_total", &[("input", "udp")]),
        2.0
    );
    assert_eq!(value(&s, "loghogd_received_total", &[]), 11.0);
    assert_eq!(value(&s, "loghogd_written_total", &[]), 10.0);
    assert_eq!(
        value(
            &s,
            "loghogd_dropped_messages_total",
            &[("reason", "unknown_app")]
        ),
        1.0
    );
    assert_eq!(value(&s, "loghogd_listening", &[]), 1.0);
    assert_eq!(check_health(&d.remote.stats), Ok(()));

    // A reload that removes a facility counts, and the removed one's
    // counter goes with it.
    setup.write_facilities("[app]\nrotate = daily\nbackup_count = 3\n");
    d.reload().expect("reload");
    setup.write_facilities("[app\nbroken");
    d.reload().expect_err("broken facilities.conf");
    let src = sources("[app]\nrotate = daily\nbackup_count = 3\n");
    let s = parse(&render(&d.remote.stats, &src));
    assert_eq!(value(&s, "loghogd_reloads_total", &[]), 1.0);
    assert_eq!(value(&s, "loghogd_reload_failures_total", &[]), 1.0);
    assert_eq!(d.remote.stats.facilities.get("app:web"), (0, 0));
    assert_eq!(d.remote.stats.facilities.get("app").0, 7);

    d.stop();
    assert_eq!(d.stat("listening"), 0);
    assert!(check_health(&d.remote.stats).is_err());
}

/// What the daemon's `/metrics` would serve now, parsed.
fn scrape(d: &InProcess, setup: &Setup) -> prometheus_parse::Scrape {
    let src = sources(&read(&setup.facilities_path()));
    parse(&render(&d.remote.stats, &src))
}

/// Polls (bounded) until the sample `name{labels}` of a fresh scrape is
/// `want`; panics with the last value seen.
fn wait_metric(d: &InProcess, setup: &Setup, name: &str, labels: &[(&str, &str)], want: f64) {
    let start = Instant::now();
    loop {
        let got = value(&scrape(d, setup), name, labels);
        if got == want {
            return;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{name} {labels:?} stayed at {got} (want {want}); stats: {}",
            d.remote.stats.summary()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The label set `reason="r"`.
fn by_reason(r: &str) -> [(&'static str, &str); 1] {
    [("reason", r)]
}

/// The label set `input="i"`.
fn by_input(i: &str) -> [(&'static str, &str); 1] {
    [("input", i)]
}

/// Every refusal the fixtures can produce is counted under its own
/// reason, the reasons sum to the SIGUSR1 total, and no refused
/// connection stays counted as open.
#[test]
fn tls_refusals_are_counted_by_reason() {
    use crate::tls::{attempt_tls, cert, client_config, good_config, tls_server, TlsClient};
    let setup = Setup::new().server_extra(&tls_server(
        &cert("loghog-server.pem"),
        &cert("loghog-ca.cert"),
    ));
    // Long enough for any real handshake on a loaded machine; the silent
    // peer below is the only one that waits it out.
    let d = InProcess::start_with(&setup, |c| {
        c.limits.handshake_timeout = Duration::from_secs(2)
    });
    let addr = d.tls_addr();
    let no_cert = {
        let base = good_config();
        rustls::ClientConfig::builder_with_provider(base.crypto_provider().clone())
            .with_protocol_versions(&[&rustls::version::TLS13, &rustls::version::TLS12])
            .expect("versions")
            .with_root_certificates(crate::tls::roots(&cert("loghog-ca.cert")))
            .with_no_client_auth()
    };
    // Each refused peer is kept open until counted: judged on what it
    // sent, not on a reset.
    let mut held = Vec::new();
    let mut counted = |why: &str, sock: std::net::TcpStream| {
        held.push(sock);
        wait_metric(
            &d,
            &setup,
            "loghogd_tls_refused_total",
            &by_reason(why),
            1.0,
        );
        assert_eq!(d.stat("tls_refused"), held.len() as u64, "after {why}");
    };
    counted("no_certificate", attempt_tls(addr, Arc::new(no_cert)));
    let ca = cert("loghog-ca.cert");
    let other = client_config(&cert("other-client.pem"), &ca);
    counted("unknown_ca", attempt_tls(addr, other));
    let expired = client_config(&cert("expired-client.pem"), &ca);
    counted("expired", attempt_tls(addr, expired));
    let mut plain = connect(addr);
    // The daemon may have closed before the frame goes out.
    let _ = std::io::Write::write_all(&mut plain, &simple("app", "plain"));
    counted("not_tls", plain);
    // Says nothing: refused when the handshake timeout runs out.
    counted("handshake_timeout", connect(addr));
    // A good client still gets through, and is not counted as refused.
    let mut good = TlsClient::connect(addr, good_config()).expect("good handshake");
    good.send(&crate::tls::batch("good ", 0..3)).expect("send");
    assert_eq!(good.finish(), 0);
    d.wait_stat("written", 3);
    drop(held);
    let s = scrape(&d, &setup);
    for r in loghogd::stats::TLS_REFUSALS {
        let want = match r {
            "no_certificate" | "unknown_ca" | "expired" | "not_tls" | "handshake_timeout" => 1.0,
            _ => 0.0,
        };
        assert_eq!(
            value(&s, "loghogd_tls_refused_total", &by_reason(r)),
            want,
            "{r}"
        );
    }
    assert_eq!(d.stat("tls_refused"), 5, "the SIGUSR1 total is the sum");
    assert!(
        !s.samples
            .iter()
            .any(|x| x.metric == "loghogd_tls_refused_total" && x.labels.is_empty()),
        "no unlabeled sample beside the reasons"
    );
    // Refused in the handshake, or served and closed: none stays open.
    wait_metric(
        &d,
        &setup,
        "loghogd_connections_open",
        &[("input", "tls")],
        0.0,
    );
}

/// The HTTPS listener counts its refusals under the same reasons, and its
/// connections (served or refused) in `connections` and, while open, in
/// `connections_open{input="http"}`.
#[test]
fn https_refusals_are_counted_by_reason_too() {
    use crate::tls::cert;
    let setup = Setup::new()
        .server_extra(&format!(
            "pemfile = {}\ncacert = {}",
            cert("loghog-server.pem").display(),
            cert("loghog-ca.cert").display()
        ))
        // A certificate gets `cert_scopes` (default `write:*` only).
        .conf_extra("[http]\nlisten = 127.0.0.1:0\ntls = yes\ncert_scopes = write:* metrics\n");
    let d = InProcess::start(&setup);
    let port = d.addr("http").port();
    let resolve = format!("localhost:{port}:127.0.0.1");
    let ca = cert("loghog-ca.cert");
    // The HTTP status curl got, 0 when the handshake was refused.
    let get = |client: Option<&str>| -> u16 {
        let mut cmd = Command::new("curl");
        cmd.args([
            "-s",
            "--max-time",
            "20",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
        ])
        .args(["--resolve", &resolve, "--cacert"])
        .arg(&ca);
        if let Some(pem) = client {
            cmd.arg("--cert").arg(cert(pem));
        }
        let out = cmd
            .arg(format!("https://localhost:{port}/metrics"))
            .output()
            .expect("run curl");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0)
    };
    assert_eq!(get(Some("client.pem")), 200);
    assert_eq!(get(Some("other-client.pem")), 0);
    wait_metric(
        &d,
        &setup,
        "loghogd_tls_refused_total",
        &by_reason("unknown_ca"),
        1.0,
    );
    assert_eq!(get(None), 0);
    wait_metric(
        &d,
        &setup,
        "loghogd_tls_refused_total",
        &by_reason("no_certificate"),
        1.0,
    );
    assert_eq!(d.stat("tls_refused"), 2);
    wait_metric(
        &d,
        &setup,
        "loghogd_connections_open",
        &by_input("http"),
        0.0,
    );
    assert_eq!(d.stat("connections"), 3);
}

/// Connections count as open per input from admission until they close,
/// on every input with connections, and go back to 0 however they end (a
/// client's close, the daemon closing one on an oversize frame); HTTP
/// connections count in `connections` like the others.
#[test]
fn connections_open_go_up_per_input_and_back_to_zero() {
    use crate::tls::{cert, good_config, tls_server, TlsClient};
    let setup = Setup::new()
        .server_extra(&tls_server(
            &cert("loghog-server.pem"),
            &cert("loghog-ca.cert"),
        ))
        .conf_extra("[syslog]\nlisten_tcp = 127.0.0.1:0\n")
        .conf_extra(
            "[http]\nlisten = 127.0.0.1:0\nallow_anonymous_on_loopback = yes\nheader_timeout = 60\n",
        );
    let d = InProcess::start(&setup);
    let tcp: Vec<_> = (0..3).map(|_| connect(d.tcp_addr())).collect();
    let tls: Vec<_> = (0..2)
        .map(|_| TlsClient::connect(d.tls_addr(), good_config()).expect("handshake"))
        .collect();
    let syslog = connect(d.addr("syslog-tcp"));
    let http: Vec<_> = (0..2).map(|_| connect(d.addr("http"))).collect();
    for (input, n) in [
        ("tcp", 3.0),
        ("tls", 2.0),
        ("syslog-tcp", 1.0),
        ("syslog-tls", 0.0),
        ("http", 2.0),
    ] {
        wait_metric(&d, &setup, "loghogd_connections_open", &by_input(input), n);
    }
    // Closed by the daemon on an error: counted while open, then not.
    let mut bad = connect(d.tcp_addr());
    std::io::Write::write_all(&mut bad, &raw_frame(u32::MAX, 0, b"")).expect("write");
    d.wait_stat("oversize_closed", 1);
    wait_closed_by_peer(&mut bad);
    wait_metric(
        &d,
        &setup,
        "loghogd_connections_open",
        &by_input("tcp"),
        3.0,
    );
    assert_eq!(d.stat("connections"), 3 + 2 + 1 + 2 + 1);

    drop((tcp, syslog, http, bad));
    for c in tls {
        assert_eq!(c.finish(), 0);
    }
    for input in loghogd::stats::STREAM_INPUTS {
        wait_metric(
            &d,
            &setup,
            "loghogd_connections_open",
            &by_input(input),
            0.0,
        );
    }
}

/// A file whose writer ended (idle) rotates on schedule through the
/// scheduler and is counted once in `rotations`; a due file that is gone
/// only moves its state on (no backup, no count).
#[test]
fn a_scheduled_rotation_is_counted_once() {
    let setup = Setup::new().facilities(
        "[app]\nrotate = hourly\nbackup_count = 3\n\n[app:gone]\nrotate = hourly\nbackup_count = 3\n",
    );
    // The daemon's rotation clock runs `shift` seconds ahead of the system's.
    let shift = Arc::new(std::sync::atomic::AtomicI64::new(0));
    let ahead = shift.clone();
    let clock = loghogd::clock::Clock::from_fn(move || {
        chrono::Local::now() + chrono::Duration::seconds(ahead.load(Relaxed))
    });
    let d = InProcess::start_with_clock(
        &setup,
        |c| c.limits.file_idle = Duration::from_millis(200),
        clock,
    );
    let mut frames = simple("app", "one");
    frames.extend(simple("app", "two"));
    frames.extend(frame("app", "gone", "soon gone", &Opts::default()));
    send_tcp(d.tcp_addr(), &frames);
    d.wait_stat("written", 3);
    std::fs::remove_file(setup.log("app/gone.log")).expect("remove gone.log");
    // Both writers end once idle: the rotation below starts its own.
    let start = Instant::now();
    while d.stat("writers") != 0 {
        assert!(start.elapsed() < DEADLINE, "writers stayed alive");
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(d.stat("rotations"), 0);

    // Two hours on: both files are due; a reload makes the scheduler plan.
    shift.store(2 * 3600, Relaxed);
    d.reload().expect("reload");
    let state_file = setup.root().join("lib/rotation-state.json");
    let live_gone = setup.log("app/gone.log");
    let moved_after = chrono::Local::now() + chrono::Duration::seconds(3600);
    let start = Instant::now();
    // The state is saved once per scheduler pass, after its rotations:
    // once the gone file's period has moved on, the pass is over.
    loop {
        let moved = crate::rotation::file_state(&state_file, &live_gone)
            .and_then(|(_, last)| last)
            .is_some_and(|last| last > moved_after);
        if moved && d.stat("rotations") >= 1 {
            break;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no scheduled rotation; stats: {}",
            d.remote.stats.summary()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(d.stat("rotations"), 1, "root.log once, gone.log not at all");
    let s = scrape(&d, &setup);
    assert_eq!(value(&s, "loghogd_rotations_total", &[]), 1.0);
    // Listed once its compression is done (no temp file beside it).
    let start = Instant::now();
    while d.stat("compress_backlog") != 0 {
        assert!(start.elapsed() < DEADLINE, "compression never finished");
        std::thread::sleep(Duration::from_millis(10));
    }
    let backups: Vec<String> = log_files(&setup)
        .into_iter()
        .filter(|f| f != "app/root.log")
        .collect();
    assert_eq!(backups.len(), 1, "{backups:?}");
    assert!(backups[0].starts_with("app/root.log."), "{backups:?}");
    assert!(!live_gone.exists());
}

/// While a full disk holds a writer's lines, the queue gauges show exactly
/// them (bytes and messages: every message is written or queued, and the
/// bytes held are the bytes written once space returns); then they drain
/// to 0.
#[test]
fn writer_queue_holds_what_a_full_disk_keeps_back_then_drains() {
    use crate::faults::Tmpfs;
    let setup = Setup::new();
    let fs = Tmpfs::mount(&setup.logdir(), "64k");
    // Fill the filesystem, so the first write already fails.
    let filler = setup.logdir().join("filler");
    {
        let mut f = std::fs::File::create(&filler).expect("filler");
        let block = vec![b'x'; 4096];
        while std::io::Write::write_all(&mut f, &block).is_ok() {}
    }
    let d = InProcess::start(&setup);
    const N: u64 = 40;
    let frames: Vec<u8> = (0..N)
        .flat_map(|i| simple("app", &format!("held {i:04}")))
        .collect();
    send_tcp(d.tcp_addr(), &frames);
    d.wait_stat("writers_faulted", 1);
    let live = setup.log("app/root.log");
    let start = Instant::now();
    let (queued_bytes, size_held) = loop {
        let s = scrape(&d, &setup);
        let msgs = value(&s, "loghogd_writer_queue_messages", &[]);
        let written = value(&s, "loghogd_written_total", &[]);
        if msgs > 0.0 && msgs + written == N as f64 {
            let size = std::fs::metadata(&live).map_or(0, |m| m.len());
            break (value(&s, "loghogd_writer_queue_bytes", &[]), size);
        }
        assert!(
            start.elapsed() < DEADLINE,
            "held lines never all queued: {}",
            d.remote.stats.summary()
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(queued_bytes > 0.0);
    std::fs::remove_file(&filler).expect("free the space");
    d.wait_stat("written", N);
    wait_metric(&d, &setup, "loghogd_writer_queue_bytes", &[], 0.0);
    wait_metric(&d, &setup, "loghogd_writer_queue_messages", &[], 0.0);
    let size = std::fs::metadata(&live).expect("root.log").len();
    assert_eq!(
        size - size_held,
        queued_bytes as u64,
        "the gauge held exactly the bytes written afterwards"
    );
    assert_eq!(d.stat("write_errors"), 0);
    let mut d = d;
    d.stop();
    drop(fs);
}

/// Serves `/metrics` on 127.0.0.1:0 from its own runtime thread; every
/// scrape first adds 100 messages to `app:busy` and 10 to `app`, so two
/// scrapes show a rate order that does not depend on timing. Requires
/// `Authorization: Bearer s3cret`.
struct SampleServer {
    addr: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

const SAMPLE_FACILITIES: &str = "[app]\nrotate = daily\nbackup_count = 3\n\n[app:busy]\nrotate = daily\nbackup_count = 3\n\n[app:idle]\nrotate = daily\nbackup_count = 3\n";

impl SampleServer {
    fn start() -> SampleServer {
        use axum::http::{HeaderMap, StatusCode};
        let stats = Arc::new(Stats::default());
        stats.open_files.store(4, Relaxed);
        stats.compress_backlog.store(2, Relaxed);
        stats.bad_signature.store(9, Relaxed);
        // tcp 2 + http 1: loghog-top shows their sum.
        stats.connections_open[0].store(2, Relaxed);
        stats.connections_open[4].store(1, Relaxed);
        stats.writer_queue_bytes.store(2048, Relaxed);
        let src = sources(SAMPLE_FACILITIES);
        let handler = move |headers: HeaderMap| {
            let stats = stats.clone();
            let src = src.clone();
            async move {
                let authorized = headers
                    .get("authorization")
                    .is_some_and(|v| v.as_bytes() == b"Bearer s3cret");
                if !authorized {
                    return (StatusCode::FORBIDDEN, "missing scope metrics".to_string());
                }
                let busy = stats.facilities.counter("app:busy");
                busy.messages.fetch_add(100, Relaxed);
                busy.bytes.fetch_add(100 * 64, Relaxed);
                stats
                    .facilities
                    .counter("app")
                    .messages
                    .fetch_add(10, Relaxed);
                (StatusCode::OK, render(&stats, &src))
            }
        };
        let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.set_nonblocking(true).expect("nonblocking");
        let addr = listener.local_addr().expect("addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await
                    .expect("serve");
            });
        });
        SampleServer {
            addr,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }
}

impl Drop for SampleServer {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn top() -> Command {
    Command::new(env!("CARGO_BIN_EXE_loghog-top"))
}

#[test]
fn top_once_prints_facilities_busiest_first() {
    let server = SampleServer::start();
    let mut cmd = top();
    cmd.args(["--once", "--interval", "0.2", "--url", &server.url()])
        .env("LOGHOG_TOKEN", "s3cret");
    let out = run_with_deadline(cmd);
    let stdout = out.stdout.clone();
    assert!(out.status.success(), "{out:?}");
    let rows: Vec<&str> = stdout
        .lines()
        .skip_while(|l| !l.starts_with("facility"))
        .skip(1)
        .collect();
    let names: Vec<&str> = rows
        .iter()
        .filter_map(|r| r.split_whitespace().next())
        .collect();
    assert_eq!(names, ["app:busy", "app", "app:idle"], "{stdout}");
    // Two scrapes: the totals of the second.
    let total = |name: &str| {
        rows.iter()
            .find(|r| r.split_whitespace().next() == Some(name))
            .and_then(|r| r.split_whitespace().last())
            .map(str::to_string)
    };
    assert_eq!(total("app:busy").as_deref(), Some("200"), "{stdout}");
    assert_eq!(total("app:idle").as_deref(), Some("0"), "{stdout}");
    assert!(stdout.contains("open_files 4\n"), "{stdout}");
    assert!(stdout.contains("compress_backlog 2\n"), "{stdout}");
    assert!(stdout.contains("connections_open 3\n"), "{stdout}");
    assert!(stdout.contains("writer_queue_bytes 2048\n"), "{stdout}");
    assert!(stdout.contains("drops: bad_signature=9\n"), "{stdout}");

    // Without the token: the server's refusal, and a failure exit.
    let mut cmd = top();
    cmd.args(["--once", "--url", &server.url()])
        .env_remove("LOGHOG_TOKEN");
    let out = run_with_deadline(cmd);
    assert!(!out.status.success());
    assert!(out.stderr.contains("403"), "{out:?}");
}

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn cmd(&self, args: &[&str]) -> std::process::Output {
        Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux must be installed (.ci/run installs it)")
    }

    fn capture(&self) -> String {
        String::from_utf8_lossy(&self.cmd(&["capture-pane", "-p", "-t", "top"]).stdout).to_string()
    }

    fn wait_for(&self, what: &str, ok: impl Fn(&str) -> bool) -> String {
        let start = Instant::now();
        loop {
            let screen = self.capture();
            if ok(&screen) {
                return screen;
            }
            assert!(start.elapsed() < DEADLINE, "{what}; the screen:\n{screen}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]);
    }
}

#[test]
fn top_live_view_fits_a_tiny_window_survives_resizes_and_quits_on_q() {
    let server = SampleServer::start();
    let dir = tempfile::tempdir().expect("tempdir");
    let status = dir.path().join("status");
    let tmux = Tmux {
        socket: format!("loghog-top-test-{}", std::process::id()),
    };
    let script = format!(
        "LOGHOG_TOKEN=s3cret '{}' --url '{}'; echo \"exit=$?\" > '{}'",
        env!("CARGO_BIN_EXE_loghog-top"),
        server.url(),
        status.display()
    );
    let out = tmux.cmd(&[
        "new-session",
        "-d",
        "-s",
        "top",
        "-x",
        "40",
        "-y",
        "10",
        &script,
    ]);
    assert!(out.status.success(), "{out:?}");
    // Once two scrapes are in, the busiest facility is listed first (the
    // first scrape has no rates yet and lists by name: `app` first).
    let first_row = |screen: &str| {
        screen
            .lines()
            .skip_while(|l| !l.starts_with("facility"))
            .nth(1)
            .unwrap_or_default()
            .to_string()
    };
    let screen = tmux.wait_for("the busiest facility on top", |s| {
        first_row(s).starts_with("app:busy ") && s.contains("open files 4")
    });
    assert!(screen.contains("connections 3 open"), "{screen}");
    assert!(screen.contains("drops: bad_signature=9"), "{screen}");
    // Tiny, then back: still alive and drawing.
    for (x, y) in [("5", "2"), ("1", "1"), ("60", "12")] {
        let out = tmux.cmd(&["resize-window", "-t", "top", "-x", x, "-y", y]);
        assert!(out.status.success(), "{out:?}");
    }
    // The totals column appears only at 60 columns: proof of a redraw
    // after the tiny sizes, by a process that is still running.
    tmux.wait_for("redrawn at 60x12 after the resizes", |s| {
        s.lines()
            .any(|l| l.starts_with("facility") && l.contains("messages"))
    });
    assert!(
        !status.exists(),
        "exited during the resizes: {:?}",
        std::fs::read_to_string(&status)
    );
    let out = tmux.cmd(&["send-keys", "-t", "top", "q"]);
    assert!(out.status.success(), "{out:?}");
    let start = Instant::now();
    loop {
        if let Ok(text) = std::fs::read_to_string(&status) {
            if text.ends_with('\n') {
                assert_eq!(text.trim(), "exit=0");
                break;
            }
        }
        assert!(
            start.elapsed() < DEADLINE,
            "q did not end loghog-top: {}",
            tmux.capture()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
