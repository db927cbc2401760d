//! Metrics (issue 14, items 3 to 5): what a real daemon counts, rendered as
//! `/metrics` text and read back with a real Prometheus parser, and
//! `loghog-top` against a small HTTP server serving rendered metrics
//! (`--once`, and the live view in a 40×10 tmux window).

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
