//! The Rust client (`crates/loghog`) against the real daemon: every
//! transport, signing, compression, a daemon restart in the middle of a
//! stream, flush and close with the daemon down, and the `log` and
//! `tracing` integrations end to end. (`loghog-send` is tested by
//! crates/loghog/tests/send.rs, the one test target that cargo builds the
//! binary for.)

use std::path::PathBuf;
use std::time::{Duration, Instant};

use loghog::{Client, Error};

use crate::util::{bodies, parse_line, wait_for_lines, Daemon, InProcess, Setup, DEADLINE};

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

/// A setup with a TLS listener using the checked-in server certificate.
fn tls_setup() -> Setup {
    Setup::new().server_extra(&format!(
        "listen_ipv4_ssl = 127.0.0.1:0\npemfile = {}\ncacert = {}",
        cert("loghog-server.pem").display(),
        cert("loghog-ca.cert").display()
    ))
}

/// An address where nothing listens (bound, then released).
fn dead_address() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().to_string()
}

fn numbered(prefix: &str, range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| format!("{prefix}{i}")).collect()
}

/// Polls `cond` until it holds, panicking with `what` after [`DEADLINE`].
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < DEADLINE, "never happened: {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[test]
fn client_tcp_delivers_in_order_with_module_and_hostname() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let client = Client::builder("app")
        .address(d.tcp_addr().to_string())
        .hostname("h1")
        .build()
        .unwrap();
    for (i, body) in numbered("tcp ", 0..500).iter().enumerate() {
        client.send("", body);
        if i % 100 == 0 {
            client.send("web.requests", &format!("web {i}"));
        }
    }
    client.send("root", "quote \" backslash \\ tab\t café 😀");
    client.flush(DEADLINE).unwrap();
    let lines = wait_for_lines(&setup.log("app/root.log"), 501, DEADLINE);
    let mut want = numbered("tcp ", 0..500);
    want.push("quote \" backslash \\ tab\t café 😀".into());
    assert_eq!(bodies(&lines), want);
    assert!(lines.iter().all(|l| parse_line(l).1 == "h1"));
    let web = wait_for_lines(&setup.log("app/web.log"), 5, DEADLINE);
    assert_eq!(
        bodies(&web),
        ["web 0", "web 100", "web 200", "web 300", "web 400"]
    );
    assert_eq!(client.dropped(), 0);

    // Without .hostname(): the machine's name, as Python's gethostname().
    let named = Client::builder("app")
        .address(d.tcp_addr().to_string())
        .build()
        .unwrap();
    named.send("", "named");
    named.flush(DEADLINE).unwrap();
    let lines = wait_for_lines(&setup.log("app/root.log"), 502, DEADLINE);
    let machine = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert_eq!(parse_line(&lines[501]).1, machine.trim());
}

#[test]
fn client_udp_delivers_one_datagram_per_message() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let client = Client::builder("app")
        .address(d.udp_addr().to_string())
        .udp()
        .hostname("u1")
        .build()
        .unwrap();
    for body in numbered("udp ", 0..50) {
        client.send("web", &body);
    }
    client.flush(DEADLINE).unwrap();
    let lines = wait_for_lines(&setup.log("app/web.log"), 50, DEADLINE);
    assert_eq!(bodies(&lines), numbered("udp ", 0..50));
    assert_eq!(parse_line(&lines[0]).1, "u1");
}

#[test]
fn client_tls_verifies_the_daemon_and_delivers() {
    let setup = tls_setup();
    let d = Daemon::start(&setup);
    let port = d.tls_addr().port();
    // By name: the certificate's SAN has localhost.
    let client = Client::builder("app")
        .address(format!("localhost:{port}"))
        .tls(cert("client.pem"), cert("loghog-ca.cert"))
        .build()
        .unwrap();
    for body in numbered("tls ", 0..100) {
        client.send("", &body);
    }
    client.flush(DEADLINE).unwrap();
    // By IP address, with the name to check given separately.
    let by_ip = Client::builder("app")
        .address(format!("127.0.0.1:{port}"))
        .tls(cert("client.pem"), cert("loghog-ca.cert"))
        .tls_server_name("localhost")
        .build()
        .unwrap();
    by_ip.send("web", "by ip");
    by_ip.flush(DEADLINE).unwrap();
    let lines = wait_for_lines(&setup.log("app/root.log"), 100, DEADLINE);
    assert_eq!(bodies(&lines), numbered("tls ", 0..100));
    assert_eq!(
        bodies(&wait_for_lines(&setup.log("app/web.log"), 1, DEADLINE)),
        ["by ip"]
    );
}

#[test]
fn client_tls_refuses_a_daemon_it_cannot_verify_and_is_refused_by_one_that_cannot_verify_it() {
    let setup = tls_setup();
    let d = Daemon::start(&setup);
    let port = d.tls_addr().port();
    let attempt = |b: loghog::Builder| {
        let client = b
            .address(format!("localhost:{port}"))
            .give_up_after(1)
            .build()
            .unwrap();
        client.send("", "must not arrive");
        let err = client.flush(DEADLINE).unwrap_err();
        assert!(matches!(err, Error::Dropped { .. }), "{err}");
        assert_eq!(client.dropped(), 1);
        err.cause().clone()
    };
    // The daemon's certificate is from a CA we do not trust.
    let err = attempt(Client::builder("app").tls(cert("client.pem"), cert("other-ca.cert")));
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(err.to_string().contains("certificate"), "{err}");
    // Trusted CA, but the certificate does not carry the name we check.
    let err = attempt(
        Client::builder("app")
            .tls(cert("client.pem"), cert("loghog-ca.cert"))
            .tls_server_name("not-the-daemon.example"),
    );
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    // The daemon refuses our certificate (another CA): TLS 1.3 reports that
    // only after the handshake, and the client waits for the verdict.
    let err = attempt(Client::builder("app").tls(cert("other-client.pem"), cert("loghog-ca.cert")));
    assert!(matches!(err, Error::Tls { .. }), "{err}");
    assert!(!setup.log("app/root.log").exists());
}

#[test]
fn client_signs_for_a_secret_set_only_on_a_sub_facility() {
    let setup = Setup::new().facilities(
        "[app]\nrotate = daily\nbackup_count = 3\n\n\
         [app:secure]\nrotate = daily\nbackup_count = 3\nsecret = s3cr;et\n",
    );
    let d = Daemon::start(&setup);
    let signed = Client::builder("app")
        .address(d.tcp_addr().to_string())
        .secret("s3cr;et")
        .build()
        .unwrap();
    for body in numbered("signed ", 0..20) {
        signed.send("secure.deeper", &body);
    }
    signed.send("", "signed to the root, which has no secret");
    signed.flush(DEADLINE).unwrap();
    // Unsigned to the sub-facility: refused; the root message after it on
    // the same connection shows the daemon has processed it.
    let unsigned = Client::builder("app")
        .address(d.tcp_addr().to_string())
        .build()
        .unwrap();
    unsigned.send("secure", "unsigned: must not be written");
    unsigned.send("", "barrier");
    unsigned.flush(DEADLINE).unwrap();
    let root = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    let mut root = bodies(&root);
    root.sort(); // two connections: no order between them
    assert_eq!(root, ["barrier", "signed to the root, which has no secret"]);
    let secure = wait_for_lines(&setup.log("app/secure.log"), 20, DEADLINE);
    assert_eq!(bodies(&secure), numbered("signed ", 0..20));
}

#[test]
fn client_compresses_every_message() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let client = Client::builder("app")
        .address(d.tcp_addr().to_string())
        .compress(true)
        .build()
        .unwrap();
    // The daemon's 64 KiB limit applies before compression too: 60 KB of
    // text is sent (as ~1 KB), 100 KB is dropped and counted.
    let long = "compressible text ".repeat(60_000 / 18);
    client.send("", &long);
    client.send("", &"x".repeat(100_000));
    for body in numbered("z ", 0..20) {
        client.send("", &body);
    }
    client.flush(DEADLINE).unwrap();
    let lines = wait_for_lines(&setup.log("app/root.log"), 21, DEADLINE);
    let got = bodies(&lines);
    assert_eq!(got[0], long);
    assert_eq!(got[1..], numbered("z ", 0..20));
    assert_eq!(client.dropped(), 1);
}

#[test]
fn client_buffers_across_a_daemon_restart_and_drops_only_the_oldest_past_max_buffer() {
    let setup = Setup::new();
    let mut d1 = Daemon::start(&setup);
    let addr = d1.tcp_addr();
    let client = Client::builder("app")
        .address(addr.to_string())
        .max_buffer(100)
        .build()
        .unwrap();
    for body in numbered("before ", 0..50) {
        client.send("", &body);
    }
    client.flush(DEADLINE).unwrap();
    wait_for_lines(&setup.log("app/root.log"), 50, DEADLINE);
    d1.stop();

    // The daemon is down: 150 messages, of which the newest 100 are kept.
    for body in numbered("during ", 0..150) {
        client.send("", &body);
    }
    wait_until("50 dropped", || client.dropped() == 50);
    assert!(matches!(
        client.flush(Duration::from_millis(50)),
        Err(Error::Timeout { unsent: 100, .. })
    ));
    assert_eq!(client.pending(), 100);
    assert!(client.last_error().is_some());

    let setup = setup.listen(&addr.to_string(), "");
    let _d2 = Daemon::start(&setup);
    client.flush(DEADLINE).unwrap();
    let lines = wait_for_lines(&setup.log("app/root.log"), 150, DEADLINE);
    let mut want = numbered("before ", 0..50);
    want.extend(numbered("during ", 50..150));
    assert_eq!(bodies(&lines), want);
    assert_eq!(client.dropped(), 50);
}

#[test]
fn client_flush_with_the_daemon_down_returns_at_its_timeout_and_close_is_bounded() {
    let client = Client::builder("app")
        .address(dead_address())
        .close_timeout(Duration::from_millis(200))
        .build()
        .unwrap();
    client.send("", "nowhere to go");
    let start = Instant::now();
    let err = client.flush(Duration::from_millis(300)).unwrap_err();
    let took = start.elapsed();
    assert!(
        took >= Duration::from_millis(300),
        "returned early: {took:?}"
    );
    assert!(took < DEADLINE);
    match &err {
        Error::Timeout { unsent, cause } => {
            assert_eq!(*unsent, 1);
            assert!(
                matches!(cause.as_deref(), Some(Error::Connect { .. })),
                "{err}"
            );
        }
        other => panic!("expected a timeout, got {other}"),
    }
    assert!(err.to_string().contains("cannot connect"), "{err}");
    // Dropping the last handle waits for its close timeout, not for ever.
    let start = Instant::now();
    drop(client);
    let took = start.elapsed();
    assert!(took >= Duration::from_millis(200), "{took:?}");
    assert!(took < DEADLINE, "{took:?}");
}

#[test]
fn client_dropping_the_last_handle_flushes() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let client = Client::builder("app")
        .address(d.tcp_addr().to_string())
        .build()
        .unwrap();
    let clone = client.clone();
    let thread = std::thread::spawn(move || {
        for body in numbered("clone ", 0..20) {
            clone.send("", &body);
        }
    });
    thread.join().unwrap();
    for body in numbered("last ", 0..20) {
        client.send("", &body);
    }
    drop(client);
    let lines = wait_for_lines(&setup.log("app/root.log"), 40, DEADLINE);
    let mut want = numbered("clone ", 0..20);
    want.extend(numbered("last ", 0..20));
    assert_eq!(bodies(&lines), want);
}

#[test]
fn client_log_integration_end_to_end() {
    // The only test in this binary that installs a `log` logger.
    let setup = Setup::new().facilities(
        "[app]\nrotate = daily\nbackup_count = 3\n\n[app:myapp.db]\nrotate = daily\nbackup_count = 3\n",
    );
    let d = Daemon::start(&setup);
    let client = Client::builder("app")
        .address(d.tcp_addr().to_string())
        .build()
        .unwrap();
    loghog::init_log(client.clone(), log::LevelFilter::Info).unwrap();
    log::info!(target: "myapp::db", "connected to {}", "db1");
    log::debug!(target: "myapp::db", "below the level: not sent");
    log::warn!(target: "myapp::db", "slow query\ntook 3 s");
    log::logger().flush();

    // A formatter of one's own, through the same trait.
    let custom = loghog::Logger::new(client.clone()).format(|out, record| {
        out.push_str(&format!("<{}> {}", record.level(), record.args()));
    });
    log::Log::log(
        &custom,
        &log::Record::builder()
            .target("myapp::db")
            .level(log::Level::Error)
            .args(format_args!("custom {}", 1))
            .build(),
    );
    client.flush(DEADLINE).unwrap();
    let lines = wait_for_lines(&setup.log("app/myapp.db.log"), 4, DEADLINE);
    assert_eq!(
        bodies(&lines[..1]),
        ["INFO - connected to db1"],
        "module from the target, LEVEL - message"
    );
    // A body with a newline is one message; the daemon writes it as is.
    assert_eq!(bodies(&lines[1..2]), ["WARN - slow query"]);
    assert_eq!(lines[2], "took 3 s");
    assert_eq!(bodies(&lines[3..]), ["<ERROR> custom 1"]);
}

#[test]
fn client_tracing_integration_end_to_end() {
    use tracing_subscriber::prelude::*;
    let setup = Setup::new().facilities(
        "[app]\nrotate = daily\nbackup_count = 3\n\n[app:myapp.auth]\nrotate = daily\nbackup_count = 3\n",
    );
    let d = Daemon::start(&setup);
    let client = Client::builder("app")
        .address(d.tcp_addr().to_string())
        .build()
        .unwrap();
    let plain = tracing_subscriber::registry().with(loghog::Layer::new(client.clone()));
    tracing::subscriber::with_default(plain, || {
        let span = tracing::info_span!("request", id = 7);
        let _in = span.enter();
        tracing::info!(target: "myapp::auth", user = "bob", attempts = 3, "logged in");
        tracing::warn!(target: "myapp::auth", "no fields");
    });
    let spans =
        tracing_subscriber::registry().with(loghog::Layer::new(client.clone()).with_spans(true));
    tracing::subscriber::with_default(spans, || {
        let outer = tracing::info_span!("request");
        let _o = outer.enter();
        let inner = tracing::info_span!("db");
        let _i = inner.enter();
        tracing::error!(target: "myapp::auth", ok = false, "failed");
    });
    client.flush(DEADLINE).unwrap();
    let lines = wait_for_lines(&setup.log("app/myapp.auth.log"), 3, DEADLINE);
    assert_eq!(
        bodies(&lines),
        [
            "INFO - logged in user=bob attempts=3",
            "WARN - no fields",
            "ERROR - request: db: failed ok=false",
        ]
    );
}

/// Throughput of one client over one TCP connection into the daemon, and
/// what `send` costs its caller. Prints figures, asserts only delivery.
/// `cargo test --release -p loghogd --test tests client_throughput -- --ignored --nocapture`
#[test]
#[ignore]
fn client_throughput() {
    const N: usize = 1_000_000;
    let setup = Setup::new().facilities("[bench]\nrotate = daily\nbackup_count = 3\nflush_every = 1000\n\n[bench:web]\nrotate = daily\nbackup_count = 3\n");
    // In-process, so "on disk" is read from the `written` counter (lines
    // handed to the kernel) instead of by re-reading a growing file.
    let d = InProcess::start(&setup);
    let client = Client::builder("bench")
        .address(d.tcp_addr().to_string())
        .hostname("bench-host")
        .max_buffer(N)
        .max_buffer_bytes(2 << 30)
        .build()
        .unwrap();
    // Warm the connection and the buffers.
    client.send("", "warm-up");
    client.flush(DEADLINE).unwrap();
    let pad = "x".repeat(200 - 12);
    let bodies: Vec<String> = (0..N).map(|i| format!("{i:011} {pad}")).collect();
    assert_eq!(bodies[0].len(), 200);
    // Round 0 grows the queue's buffers (page faults); round 1 reuses them.
    for round in 0..2 {
        let cpu0 = thread_cpu();
        let start = Instant::now();
        for b in &bodies {
            client.send("web", b);
        }
        let sent = start.elapsed();
        let cpu = thread_cpu() - cpu0;
        client.flush(Duration::from_secs(120)).unwrap();
        let written = start.elapsed();
        let want = (round + 1) * N + 1;
        d.wait_stat("written", want as u64);
        let on_disk = start.elapsed();
        assert_eq!(client.dropped(), 0);
        println!(
            "client_throughput round {round}: {N} x 200-byte bodies: send {:.1} ns/call wall, \
             {:.1} ns/call of the caller's CPU; {:.0} msg/s written to the socket, {:.0} msg/s on disk",
            sent.as_nanos() as f64 / N as f64,
            cpu.as_nanos() as f64 / N as f64,
            N as f64 / written.as_secs_f64(),
            N as f64 / on_disk.as_secs_f64(),
        );
    }
    // Steady state: an application logging in bursts the worker keeps up
    // with. The queue's buffers no longer grow (in the rounds above they
    // grow to hold most of the million, and the kernel zeroing those new
    // pages is charged to the caller); only the send calls are timed.
    const BURST: usize = 10_000;
    let mut cpu = Duration::ZERO;
    for chunk in bodies.chunks(BURST) {
        let cpu0 = thread_cpu();
        for b in chunk {
            client.send("web", b);
        }
        cpu += thread_cpu() - cpu0;
        client.flush(Duration::from_secs(120)).unwrap();
    }
    d.wait_stat("written", 3 * N as u64 + 1);
    assert_eq!(client.dropped(), 0);
    // Every line is in the file (the warm-up went to bench/root.log).
    let lines = wait_for_lines(&setup.log("bench/web.log"), 3 * N, Duration::from_secs(120));
    assert_eq!(lines.len(), 3 * N);
    println!(
        "client_throughput steady state: {N} x 200-byte bodies in bursts of {BURST}: \
         send {:.1} ns/call of the caller's CPU",
        cpu.as_nanos() as f64 / N as f64,
    );
}

/// CPU time of the calling thread: the cost of `send` without the time the
/// thread spent waiting for a core on a busy machine.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
