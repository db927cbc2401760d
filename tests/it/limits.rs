//! Connection limits and timeouts (issue 12 items 1 and 5, the input side):
//! `max_connections` and `max_connections_per_ip` refuse at once and count,
//! `idle_timeout` and `frame_timeout` close silent and trickling peers on
//! TCP and TLS, running out of file descriptors sheds queued peers instead
//! of leaving them waiting, and 20,000 concurrent connections are served
//! (or, past `max_connections`, refused at once while the admitted work).
//!
//! Refused connections are reset at once; "at once" is shown by
//! [`wait_closed_by_peer`], which fails if the peer is left waiting (as the
//! old accept loop left it, in the kernel's queue) for [`DEADLINE`].

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use socket2::{Domain, Socket, Type};

use crate::util::*;

/// Deadline for the 20,000-connection runs on a loaded 2-core machine.
const BIG_DEADLINE: Duration = Duration::from_secs(180);

/// The connections the big tests want (issue 12).
const BIG: usize = 20_000;

// === helpers ===

/// Connects to `addr` from source address `src` (any 127.0.0.0/8 address
/// is local on Linux loopback), with the usual timeouts; `None` when the
/// daemon reset the connection before `connect` returned (refused at once).
fn try_connect_from(src: IpAddr, addr: SocketAddr) -> Option<TcpStream> {
    let sock = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    sock.bind(&SocketAddr::new(src, 0).into())
        .unwrap_or_else(|e| panic!("bind {src}: {e}"));
    match sock.connect_timeout(&addr.into(), DEADLINE) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::ConnectionReset => return None,
        Err(e) => panic!("connect {addr} from {src}: {e}"),
    }
    let s: TcpStream = sock.into();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    Some(s)
}

/// Asserts that a connection from `src` is refused at once: reset while
/// connecting, or closed right after (never left waiting).
fn assert_refused(src: IpAddr, addr: SocketAddr) {
    if let Some(mut s) = try_connect_from(src, addr) {
        wait_closed_by_peer(&mut s);
    }
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Whether the daemon has closed `s` by now (EOF or reset), without waiting.
fn closed_now(s: &mut TcpStream) -> bool {
    s.set_nonblocking(true).unwrap();
    let mut buf = [0u8; 16];
    let r = s.read(&mut buf);
    s.set_nonblocking(false).unwrap();
    match r {
        Ok(0) => true,
        Ok(n) => panic!("daemon sent {n} bytes; it must never reply"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
        Err(_) => true,
    }
}

/// A connection from `src` that the daemon admitted: connects until the
/// `connections` counter (not a refusal counter) moves for it, since a
/// slot freed by a close is free only once the daemon has seen the close.
fn connect_admitted(d: &InProcess, src: IpAddr, addr: SocketAddr) -> TcpStream {
    let start = Instant::now();
    loop {
        let refused = || d.stat("connections_refused") + d.stat("connections_refused_per_ip");
        let (admitted_before, refused_before) = (d.stat("connections"), refused());
        let Some(s) = try_connect_from(src, addr) else {
            continue; // refused at once; the slot is not free yet
        };
        loop {
            if d.stat("connections") > admitted_before {
                return s;
            }
            if refused() > refused_before {
                break;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "connection neither admitted nor refused"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(
            start.elapsed() < DEADLINE,
            "still refused after {DEADLINE:?}; stats: {}",
            d.remote.stats.summary()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `cond` every few milliseconds until it holds, at most `deadline`.
fn wait_until(what: &str, deadline: Duration, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(
            start.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

// === max_connections ===

/// With `max_connections = 3`, a fourth peer is accepted and reset at once
/// (counted, not left in the kernel's queue), the three keep working, and
/// a new peer is admitted once one of them has closed.
#[test]
fn past_max_connections_a_peer_is_refused_at_once_and_admitted_when_a_slot_frees() {
    let setup = Setup::new();
    let mut d = InProcess::start_with(&setup, |c| c.limits.max_connections = 3);
    let addr = d.tcp_addr();
    let lo = ip("127.0.0.1");
    let mut held: Vec<TcpStream> = (0..3).map(|_| connect_admitted(&d, lo, addr)).collect();

    assert_refused(lo, addr);
    d.wait_stat("connections_refused", 1);

    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(&simple("app", &format!("held {i}"))).unwrap();
    }
    let log = setup.log("app/root.log");
    wait_for_lines(&log, 3, DEADLINE);

    drop(held.remove(0));
    let mut fresh = connect_admitted(&d, lo, addr);
    fresh.write_all(&simple("app", "fresh")).unwrap();
    let lines = wait_for_lines(&log, 4, DEADLINE);
    assert!(bodies(&lines).contains(&"fresh".to_string()), "{lines:?}");
    for s in &mut held {
        assert!(
            !closed_now(s),
            "a refusal must not touch admitted connections"
        );
    }
    drop((held, fresh));
    d.stop();
    assert_eq!(d.stat("connections"), 4);
    assert!(d.stat("connections_refused") >= 1);
    assert_eq!(d.stat("connections_refused_per_ip"), 0);
    assert_eq!(d.stat("written"), 4);
}

/// Refusals are logged rate-limited with their reason: 60 refused peers
/// leave at most the limiter's 20 lines, and every refusal is counted.
#[test]
fn refusals_are_logged_rate_limited_with_the_reason() {
    let setup = Setup::new().server_extra("max_connections = 1");
    let mut d = Daemon::start(&setup);
    let addr = d.tcp_addr();
    let mut held = connect(addr);
    held.write_all(&simple("app", "held")).unwrap();
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    for _ in 0..60 {
        assert_refused(ip("127.0.0.1"), addr);
    }
    let text = d.wait_for_log("max_connections (1) reached");
    drop(held);
    d.stop();
    let lines = text.matches("connection refused").count();
    assert!((1..=20).contains(&lines), "{lines} refusal lines:\n{text}");
    assert_eq!(d.stat("connections_refused"), 60);
}

// === max_connections_per_ip ===

/// With `max_connections_per_ip = 2`, a third connection from 127.0.0.1 is
/// refused at once while 127.0.0.2 still gets in; lines from 127.0.0.2
/// carry its address, which shows the source binding took.
#[test]
fn per_ip_cap_refuses_only_that_address() {
    let setup = Setup::new();
    let mut d = InProcess::start_with(&setup, |c| c.limits.max_connections_per_ip = 2);
    let addr = d.tcp_addr();
    let (one, two) = (ip("127.0.0.1"), ip("127.0.0.2"));
    let mut held: Vec<TcpStream> = (0..2).map(|_| connect_admitted(&d, one, addr)).collect();

    assert_refused(one, addr);
    d.wait_stat("connections_refused_per_ip", 1);

    let mut other = connect_admitted(&d, two, addr);
    other.write_all(&simple("app", "from two")).unwrap();
    for (i, s) in held.iter_mut().enumerate() {
        s.write_all(&simple("app", &format!("from one {i}")))
            .unwrap();
    }
    let lines = wait_for_lines(&setup.log("app/root.log"), 3, DEADLINE);
    let hosts: Vec<(String, String)> = lines
        .iter()
        .map(|l| {
            let (_, host, body) = parse_line(l);
            (host, body)
        })
        .collect();
    assert!(
        hosts.contains(&("127.0.0.2".to_string(), "from two".to_string())),
        "{hosts:?}"
    );
    drop((held, other));
    d.stop();
    assert_eq!(d.stat("connections_refused_per_ip"), 1);
    assert_eq!(d.stat("connections_refused"), 0);
    assert_eq!(d.stat("connections"), 3);
}

// === idle_timeout ===

/// `idle_timeout = 2 s`: a peer that sent one message and then nothing is
/// closed (not before 2 s), while one that keeps sending every 100 ms for
/// twice that stays open; only the silent one is counted.
#[test]
fn silent_tcp_connection_is_closed_after_idle_timeout_and_a_busy_one_is_not() {
    const IDLE: Duration = Duration::from_secs(2);
    let setup = Setup::new();
    let mut d = InProcess::start_with(&setup, |c| c.limits.idle_timeout = Some(IDLE));
    let addr = d.tcp_addr();
    let mut silent = connect(addr);
    silent.write_all(&simple("app", "then silence")).unwrap();
    let sent_at = Instant::now();
    let mut busy = connect(addr);
    let busy_thread = std::thread::spawn(move || {
        for i in 0..40 {
            busy.write_all(&simple("app", &format!("busy {i}")))
                .unwrap();
            std::thread::sleep(Duration::from_millis(100));
        }
        busy
    });
    wait_closed_by_peer(&mut silent);
    let waited = sent_at.elapsed();
    assert!(waited >= IDLE, "closed after {waited:?}, before {IDLE:?}");
    let mut busy = busy_thread.join().unwrap();
    assert!(
        !closed_now(&mut busy),
        "a busy connection was closed as idle"
    );
    busy.write_all(&simple("app", "busy last")).unwrap();
    wait_for_lines(&setup.log("app/root.log"), 42, DEADLINE);
    drop(busy);
    d.stop();
    assert_eq!(d.stat("idle_closed"), 1);
    assert_eq!(d.stat("written"), 42);
}

/// The same over TLS: the idle clock starts after the handshake, and a
/// silent authenticated client is closed.
#[test]
fn silent_tls_connection_is_closed_after_idle_timeout() {
    const IDLE: Duration = Duration::from_secs(1);
    let setup = tls_setup();
    let mut d = InProcess::start_with(&setup, |c| c.limits.idle_timeout = Some(IDLE));
    let mut tls = tls_connect(d.tls_addr());
    tls.write_all(&simple("app", "tls then silence")).unwrap();
    tls.flush().unwrap();
    let sent_at = Instant::now();
    wait_tls_closed(&mut tls);
    assert!(
        sent_at.elapsed() >= IDLE,
        "closed after {:?}",
        sent_at.elapsed()
    );
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    d.stop();
    assert_eq!(d.stat("idle_closed"), 1);
    assert_eq!(d.stat("tls_refused"), 0);
}

// === frame_timeout ===

/// `frame_timeout = 1 s`: a peer that sends a frame's header and then one
/// byte every 100 ms (never idle) is closed and counted; the complete
/// frame before it is written.
#[test]
fn trickled_tcp_frame_is_closed_after_frame_timeout() {
    let setup = Setup::new();
    let mut d = InProcess::start_with(&setup, |c| {
        c.limits.frame_timeout = Duration::from_secs(1);
        c.limits.idle_timeout = Some(Duration::from_secs(60));
    });
    let mut s = connect(d.tcp_addr());
    s.write_all(&simple("app", "whole")).unwrap();
    s.write_all(&raw_frame(200, 0, b"")).unwrap();
    let started = Instant::now();
    trickle(&d, |b| s.write_all(b).and_then(|()| s.flush()));
    wait_closed_by_peer(&mut s);
    assert!(started.elapsed() >= Duration::from_secs(1));
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    d.stop();
    assert_eq!(d.stat("frame_timeout_closed"), 1);
    assert_eq!(d.stat("idle_closed"), 0);
    assert_eq!(d.stat("written"), 1);
}

/// The same over TLS.
#[test]
fn trickled_tls_frame_is_closed_after_frame_timeout() {
    let setup = tls_setup();
    let mut d = InProcess::start_with(&setup, |c| c.limits.frame_timeout = Duration::from_secs(1));
    let mut tls = tls_connect(d.tls_addr());
    tls.write_all(&simple("app", "whole")).unwrap();
    tls.write_all(&raw_frame(200, 0, b"")).unwrap();
    tls.flush().unwrap();
    trickle(&d, |b| tls.write_all(b).and_then(|()| tls.flush()));
    wait_tls_closed(&mut tls);
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    d.stop();
    assert_eq!(d.stat("frame_timeout_closed"), 1);
    assert_eq!(d.stat("written"), 1);
}

/// Writes one byte every 100 ms until the daemon counts a frame timeout
/// (or a write fails because it closed), at most [`DEADLINE`].
fn trickle(d: &InProcess, mut write: impl FnMut(&[u8]) -> io::Result<()>) {
    let start = Instant::now();
    while d.stat("frame_timeout_closed") == 0 {
        assert!(start.elapsed() < DEADLINE, "frame never timed out");
        if write(b"x").is_err() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    d.wait_stat("frame_timeout_closed", 1);
}

// === TLS client ===

fn cert(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

fn tls_setup() -> Setup {
    Setup::new().server_extra(&format!(
        "listen_ipv4_ssl = 127.0.0.1:0\npemfile = {}\ncacert = {}",
        cert("loghog-server.pem").display(),
        cert("loghog-ca.cert").display()
    ))
}

/// A handshaken client with the fixture certificate.
fn tls_connect(addr: SocketAddr) -> StreamOwned<ClientConnection, TcpStream> {
    let config: Arc<ClientConfig> =
        loghog::tls::client_config(&cert("client.pem"), &cert("loghog-ca.cert"), true)
            .expect("client config");
    let name = ServerName::try_from("localhost").unwrap();
    let mut conn = ClientConnection::new(config, name).unwrap();
    let mut tcp = connect(addr);
    while conn.is_handshaking() {
        conn.complete_io(&mut tcp).expect("handshake");
    }
    StreamOwned::new(conn, tcp)
}

/// Waits (bounded by the socket's read timeout) until the daemon closes.
fn wait_tls_closed(tls: &mut StreamOwned<ClientConnection, TcpStream>) {
    let mut buf = [0u8; 64];
    match tls.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("daemon sent {n} bytes of application data"),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::TimedOut => {
            panic!("daemon did not close the TLS connection within {DEADLINE:?}")
        }
        Err(_) => {} // EOF without close_notify, or a reset: closed
    }
}

// === out of file descriptors ===

/// The real binary with its descriptor limit lowered to what it holds plus
/// 8: the first few connections are served, the rest are closed at once
/// on the reserve descriptor (not left in the kernel's queue, where the old
/// accept loop left them while it backed off), UDP goes on, and once the
/// connections close a new one is served.
#[test]
fn out_of_file_descriptors_closes_queued_peers_at_once_and_recovers() {
    const FREE: usize = 8;
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let addr = d.tcp_addr();
    let log = setup.log("app/root.log");
    send_tcp(addr, &simple("app", "before"));
    wait_for_lines(&log, 1, DEADLINE);
    // root.log is open now: writing needs no new descriptor.
    let fds = || {
        std::fs::read_dir(format!("/proc/{}/fd", d.pid()))
            .expect("list the daemon's descriptors")
            .count()
    };
    let open = fds();
    set_fd_limit(d.pid(), (open + FREE) as u64);

    // A connection the daemon accepts and sheds before connect() returns
    // comes back as ECONNRESET: shed already (None), not a test failure.
    let mut held: Vec<Option<TcpStream>> = (0..FREE * 3)
        .map(|_| match TcpStream::connect_timeout(&addr, DEADLINE) {
            Ok(s) => {
                s.set_read_timeout(Some(DEADLINE)).unwrap();
                Some(s)
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => None,
            Err(e) => panic!("connect to daemon: {e}"),
        })
        .collect();
    if let Some(last) = held.iter_mut().rev().find_map(Option::as_mut) {
        wait_closed_by_peer(last);
    }
    d.wait_for_log("out of file descriptors");
    send_udp(d.udp_addr(), &[simple("app", "udp while out of fds")]);
    wait_for_lines(&log, 2, DEADLINE);
    let shed = held
        .iter_mut()
        .map(|s| s.as_mut().is_none_or(closed_now))
        .filter(|c| *c)
        .count();
    assert!(shed >= FREE, "only {shed} of {} connections shed", FREE * 3);

    drop(held);
    wait_until("the daemon closes the connections", DEADLINE, || {
        fds() <= open
    });
    send_tcp(addr, &simple("app", "after"));
    let lines = wait_for_lines(&log, 3, DEADLINE);
    assert_eq!(
        bodies(&lines),
        ["before", "udp while out of fds", "after"],
        "{lines:?}"
    );
    d.stop();
    assert!(d.stat("connections_refused_no_fd") >= FREE as u64);
}

/// Sets another process's RLIMIT_NOFILE (soft and hard) to `n`.
fn set_fd_limit(pid: u32, n: u64) {
    let lim = libc::rlimit {
        rlim_cur: n,
        rlim_max: n,
    };
    // SAFETY: prlimit reads the struct we pass and writes nothing (old is null).
    let rc = unsafe {
        libc::prlimit(
            pid as libc::pid_t,
            libc::RLIMIT_NOFILE,
            &lim,
            std::ptr::null_mut(),
        )
    };
    assert_eq!(rc, 0, "prlimit: {}", io::Error::last_os_error());
}

// === 20,000 connections ===

/// The soft RLIMIT_NOFILE of process `pid` (from /proc).
fn fd_limit_of(pid: u32) -> u64 {
    let text = std::fs::read_to_string(format!("/proc/{pid}/limits")).expect("read limits");
    let line = text
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .expect("a `Max open files` line");
    line.split_whitespace()
        .nth(3)
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("unreadable: {line}"))
}

/// Descriptors process `pid` holds now.
fn fds_of(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("list descriptors")
        .count() as u64
}

/// Asks the daemon for its counters (SIGUSR1) and waits for the line, so
/// [`Daemon::stat`] reads them while it runs.
fn refresh_stats(d: &Daemon) {
    let before = d.stderr_text().matches("stats received=").count();
    d.signal("USR1");
    d.wait_for_log_count("stats received=", before + 1);
}

/// Clients in a child process (`tests/python/many_connections.py`), so
/// their descriptors count against its own limit, not this test binary's,
/// where every other test opens its own.
struct Crowd {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
    /// Connections it opened (at most what was asked for).
    n: usize,
}

impl Crowd {
    /// Opens up to `wanted` connections to `port` from 127.0.`net`.x,
    /// sending "c{i} n0" on each when `send`.
    fn open(port: u16, wanted: usize, net: u8, send: bool) -> Crowd {
        let python = std::env::var("LOGHOG_PYTHON")
            .ok()
            .filter(|p| !p.is_empty())
            .unwrap_or_else(|| "python3".to_string());
        let script =
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/many_connections.py");
        let mut child = Command::new(&python)
            .arg(&script)
            .args([port.to_string(), wanted.to_string(), net.to_string()])
            .arg(if send { "1" } else { "0" })
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {python} {}: {e}", script.display()));
        let stdin = child.stdin.take().unwrap();
        let stdout = BufReader::new(child.stdout.take().unwrap());
        let mut crowd = Crowd {
            child,
            stdin,
            stdout,
            n: 0,
        };
        let line = crowd.line();
        crowd.n = line
            .strip_prefix("connected ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("many_connections.py said {line:?}"));
        crowd
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .read_line(&mut line)
            .expect("read from many_connections.py");
        assert!(
            !line.is_empty(),
            "many_connections.py exited: {:?}",
            self.child.try_wait()
        );
        line.trim().to_string()
    }

    fn ask(&mut self, cmd: &str) -> String {
        writeln!(self.stdin, "{cmd}").expect("write to many_connections.py");
        self.stdin.flush().unwrap();
        self.line()
    }

    /// (closed by the daemon, still open).
    fn classify(&mut self) -> (usize, usize) {
        let answer = self.ask("classify");
        let nums: Vec<usize> = answer
            .split_whitespace()
            .filter_map(|w| w.parse().ok())
            .collect();
        assert_eq!(nums.len(), 2, "{answer:?}");
        (nums[0], nums[1])
    }

    /// Closes every connection and waits (bounded) for the process to end.
    fn finish(mut self) {
        let _ = writeln!(self.stdin, "exit");
        let _ = self.stdin.flush();
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                assert!(st.success(), "many_connections.py: {st:?}");
                return;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "many_connections.py did not exit"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Crowd {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Says how many connections a big test runs, and why when fewer than
/// [`BIG`]: no process may hold more descriptors than the hard limit, and
/// raising it takes CAP_SYS_RESOURCE.
fn report_size(test: &str, n: usize, why: &str) {
    if n < BIG {
        println!("{test}: {n} connections instead of {BIG}: {why}");
    } else {
        println!("{test}: {n} connections");
    }
    assert!(n >= 1000, "{test}: only {n} connections possible ({why})");
}

/// 20,000 concurrent connections (from 100 source addresses, so none passes
/// the default `max_connections_per_ip`) each send a message while all are
/// open: every one is admitted and written exactly once, none is closed,
/// and a fresh client on another connection still gets through. The real
/// binary holds the server side (its own descriptor limit), a child process
/// the clients.
#[test]
fn twenty_thousand_concurrent_connections_are_all_served() {
    // Past the default 16,384, which the other test exercises.
    let setup = Setup::new().server_extra("max_connections = 30000");
    let mut d = Daemon::start(&setup);
    let (limit, held) = (fd_limit_of(d.pid()), fds_of(d.pid()));
    // Room for the daemon's own descriptors, the fresh client and the
    // accept reserve.
    let room = limit.saturating_sub(held + 16) as usize;
    let mut crowd = Crowd::open(d.tcp_addr().port(), BIG.min(room), 1, true);
    let n = crowd.n;
    report_size(
        "twenty_thousand_concurrent_connections_are_all_served",
        n,
        &format!(
            "the daemon's RLIMIT_NOFILE is {limit} and it holds {held} descriptors of its own"
        ),
    );
    let log = setup.log("app/root.log");
    let lines = wait_for_lines(&log, n, BIG_DEADLINE);
    check_numbers(&lines, n, 1);

    send_tcp(d.tcp_addr(), &simple("app", "fresh"));
    let lines = wait_for_lines(&log, n + 1, BIG_DEADLINE);
    assert_eq!(parse_line(&lines[n]).2, "fresh");
    assert_eq!(
        crowd.classify(),
        (0, n),
        "the daemon closed served connections"
    );
    // A figure for the report, not a check: what the connections cost.
    let status = std::fs::read_to_string(format!("/proc/{}/status", d.pid())).unwrap_or_default();
    let rss: Vec<&str> = status
        .lines()
        .filter(|l| l.starts_with("VmRSS") || l.starts_with("VmHWM") || l.starts_with("Threads"))
        .collect();
    println!("daemon with {n} open connections: {}", rss.join(", "));
    crowd.finish();
    d.stop();
    assert_eq!(d.stat("connections"), n as u64 + 1);
    assert_eq!(d.stat("written"), n as u64 + 1);
    assert_eq!(d.stat("connections_refused"), 0);
    assert_eq!(d.stat("connections_refused_per_ip"), 0);
    assert_eq!(d.stat("connections_refused_no_fd"), 0);
}

/// 20,000 connections against `max_connections` of a quarter of them: the
/// rest are reset at once and counted, the admitted ones deliver, a new
/// peer is refused while the cap is reached and admitted once one admitted
/// connection has closed.
#[test]
fn twenty_thousand_connections_past_max_connections_are_refused_at_once() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes only the struct we pass.
    assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
    // The clients' process has this hard limit too.
    let wanted = BIG.min(lim.rlim_max.saturating_sub(64) as usize);
    let cap = wanted / 4;
    let setup = Setup::new().server_extra(&format!("max_connections = {cap}"));
    let mut d = Daemon::start(&setup);
    let addr = d.tcp_addr();
    let mut crowd = Crowd::open(addr.port(), wanted, 2, false);
    let n = crowd.n;
    report_size(
        "twenty_thousand_connections_past_max_connections_are_refused_at_once",
        n,
        &format!("RLIMIT_NOFILE's hard limit is {}", lim.rlim_max),
    );
    wait_until("every connection admitted or refused", BIG_DEADLINE, || {
        refresh_stats(&d);
        d.stat("connections") + d.stat("connections_refused") >= n as u64
    });
    assert_eq!(d.stat("connections"), cap as u64);
    assert_eq!(d.stat("connections_refused"), (n - cap) as u64);
    assert_eq!(crowd.classify(), (n - cap, cap));

    assert_eq!(crowd.ask("send"), format!("sent {cap}"));
    let log = setup.log("app/root.log");
    let lines = wait_for_lines(&log, cap, BIG_DEADLINE);
    check_numbers(&lines, cap, 1);

    assert_refused(ip("127.0.0.1"), addr);
    assert_eq!(crowd.ask("close-one"), "ok");
    // The slot is free once the daemon has seen the close: retry until a
    // new peer's message is written (a refused one is never read).
    let start = Instant::now();
    let mut attempt = 0;
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "no slot freed within {DEADLINE:?}"
        );
        attempt += 1;
        if let Some(mut s) = try_connect_from(ip("127.0.0.1"), addr) {
            s.write_all(&simple("app", &format!("fresh {attempt}")))
                .unwrap();
            let mut written = false;
            wait_until("written or refused", DEADLINE, || {
                written = read(&log).contains(&format!(" - fresh {attempt}\n"));
                written || closed_now(&mut s)
            });
            if written {
                break;
            }
        }
    }
    crowd.finish();
    d.stop();
    assert_eq!(d.stat("connections"), cap as u64 + 1);
    assert_eq!(d.stat("written"), cap as u64 + 1);
    assert!(d.stat("connections_refused") > (n - cap) as u64);
}

// === the Python client after an idle close ===

/// The published Python client (loghog 0.7) against `idle_timeout = 1 s`:
/// after the daemon closed its quiet connection, nothing is lost. The
/// client notices the close when it next logs, keeps that message and
/// sends it, on a new connection, with the one after (the lateness the
/// man page warns about). Needs `LOGHOG_PYTHON` as the compat tests do.
#[test]
fn python_client_loses_nothing_after_an_idle_close() {
    let Some(python) = std::env::var("LOGHOG_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
    else {
        if std::env::var("LOGHOG_SKIP_PYTHON").as_deref() == Ok("1")
            && std::env::var_os("CI").is_none()
        {
            eprintln!("SKIPPED: Python client idle-close test (LOGHOG_SKIP_PYTHON=1)");
            return;
        }
        panic!(
            "LOGHOG_PYTHON is not set: run scripts/test (or set LOGHOG_SKIP_PYTHON=1 outside CI)"
        );
    };
    let setup = Setup::new().facilities("[pyapp]\nrotate = daily\nbackup_count = 1\n");
    let mut d = InProcess::start_with(&setup, |c| {
        c.limits.idle_timeout = Some(Duration::from_secs(1))
    });
    let port = d.tcp_addr().port();
    let log = setup.log("pyapp/root.log");
    let script = format!(
        "import logging, loghog, sys, time\n\
         h = loghog.LoghogHandler('pyapp', port={port}, hostname='py')\n\
         log = logging.getLogger('root.idle'); log.setLevel(logging.INFO)\n\
         log.addHandler(h); log.propagate = False\n\
         log.info('one')\n\
         print('sent one', flush=True)\n\
         sys.stdin.readline()\n\
         log.info('two'); log.info('three')\n\
         print('held', len(h.buffer), flush=True)\n"
    );
    let mut child = Command::new(&python)
        .args(["-c", &script])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {python}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "sent one");
    wait_for_lines(&log, 1, DEADLINE);
    d.wait_stat("idle_closed", 1);
    writeln!(stdin, "go").unwrap();
    line.clear();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "held 0", "the client kept messages unsent");
    let lines = wait_for_lines(&log, 3, DEADLINE);
    assert_eq!(bodies(&lines), ["one", "two", "three"]);
    assert!(child.wait().unwrap().success());
    d.stop();
    assert_eq!(d.stat("idle_closed"), 1);
    assert_eq!(d.stat("connections"), 2);
}
