//! The file-following agent (`loghog::follow`, issue 10 item 3) against the
//! real daemon: rename rotation, copytruncate, files that appear later,
//! partial lines, an agent restart and a daemon restart, each checked
//! line by line (every line exactly once, in order per file).
//!
//! The agent ships through [`TcpShip`], a minimal real LogHog TCP sender
//! built on `loghog_protocol`, so these tests need nothing but the agent
//! and the daemon. Duplicates are checked after a graceful stop of both
//! (SIGTERM drains everything the daemon read), never by waiting for
//! nothing.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loghog::follow::{FollowError, FollowOptions, Follower, Format, Ship, WatchMode};
use loghog_protocol::{frame, Message};

use crate::util::*;

// === impl TcpShip ===

/// A LogHog TCP sender as small as it can be while honest about delivery:
/// `send` queues a frame, `flush` writes the queue, reconnecting when the
/// daemon closed the connection, and keeps whatever it could not write.
struct TcpShip {
    addr: SocketAddr,
    inner: Mutex<Outbox>,
    /// Flushes that failed (daemon down): proves a test went through an outage.
    failed_flushes: AtomicUsize,
    /// The most messages ever queued unwritten: the agent promises at most
    /// `max_batch_lines`.
    max_queued: AtomicUsize,
}

/// Frames waiting for the socket, and the socket.
struct Outbox {
    queue: Vec<u8>,
    /// Messages in `queue` (whole or partly unwritten).
    queued: usize,
    conn: Option<TcpStream>,
}

impl TcpShip {
    fn new(addr: SocketAddr) -> TcpShip {
        TcpShip {
            addr,
            inner: Mutex::new(Outbox {
                queue: Vec::new(),
                queued: 0,
                conn: None,
            }),
            failed_flushes: AtomicUsize::new(0),
            max_queued: AtomicUsize::new(0),
        }
    }
}

/// Whether the daemon closed `s`: it never writes, so a readable socket
/// means end of stream (or an error).
fn peer_closed(s: &TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut byte = [0u8; 1];
    let closed = match (&*s).read(&mut byte) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    closed || s.set_nonblocking(false).is_err()
}

impl Ship for TcpShip {
    fn send(&self, module: &str, body: &str) {
        let msg = Message {
            version: 1,
            app_id: "app".into(),
            module: module.into(),
            stamp: 1358363502,
            nsecs: 0,
            body: body.into(),
            hostname: Some("agent".into()),
            signature: None,
        };
        let mut payload = Vec::with_capacity(body.len() + 96);
        msg.encode(&mut payload);
        let mut out = self.inner.lock().unwrap();
        frame::encode(&payload, false, &mut out.queue);
        out.queued += 1;
        self.max_queued.fetch_max(out.queued, Ordering::Relaxed);
    }

    fn flush(&self, timeout: Duration) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let res = self.write_queue(timeout);
        if res.is_err() {
            self.failed_flushes.fetch_add(1, Ordering::Relaxed);
        }
        res
    }
}

impl TcpShip {
    fn write_queue(
        &self,
        timeout: Duration,
    ) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        let mut out = self.inner.lock().unwrap();
        if out.queue.is_empty() {
            return Ok(());
        }
        if out.conn.as_ref().is_some_and(peer_closed) {
            out.conn = None;
        }
        if out.conn.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, timeout)?;
            s.set_write_timeout(Some(timeout))?;
            s.set_nodelay(true)?;
            out.conn = Some(s);
        }
        let Outbox {
            queue,
            queued,
            conn,
        } = &mut *out;
        let Some(s) = conn.as_mut() else {
            return Err("not connected".into());
        };
        let mut written = 0;
        let res = loop {
            if written == queue.len() {
                break Ok(());
            }
            match s.write(&queue[written..]) {
                Ok(0) => break Err("connection closed".into()),
                Ok(n) => written += n,
                Err(e) => break Err(e.into()),
            }
        };
        queue.drain(..written);
        if queue.is_empty() {
            *queued = 0;
        }
        if res.is_err() {
            *conn = None;
        }
        res
    }
}

// === impl Agent ===

/// `follow::run` on its own thread; stopped (flag, then bounded join) by
/// [`Agent::stop`] or on drop.
struct Agent {
    shutdown: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<Result<(), FollowError>>>,
}

impl Agent {
    /// Returns once the agent has looked at every file: a file created
    /// after this is read from its start.
    fn start(files: &[PathBuf], opts: FollowOptions, addr: SocketAddr) -> Agent {
        Agent::start_with(files, opts, Arc::new(TcpShip::new(addr)))
    }

    /// As [`Agent::start`], shipping through `ship` (which the test keeps
    /// to read its counters).
    fn start_with(files: &[PathBuf], opts: FollowOptions, ship: Arc<TcpShip>) -> Agent {
        let shutdown = opts.shutdown.clone();
        let follower = Follower::start(files, opts).unwrap_or_else(|e| panic!("start: {e}"));
        let thread = std::thread::spawn(move || follower.run(&*ship));
        Agent {
            shutdown,
            thread: Some(thread),
        }
    }

    /// Asks the agent to stop and waits (bounded); panics if `run` failed.
    fn stop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            join_within(thread, "follow::run");
        }
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.shutdown.store(true, Ordering::Relaxed);
    }
}

/// Options for tests: a short rotation grace so rotated files close soon.
fn options() -> FollowOptions {
    FollowOptions {
        rotate_wait: Duration::from_millis(300),
        max_backoff: Duration::from_millis(200),
        flush_timeout: Duration::from_secs(2),
        ..FollowOptions::default()
    }
}

/// Appends `{tag} {n}` for every `n` in `range` with one write.
fn append(path: &Path, tag: &str, range: std::ops::Range<usize>) {
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("open {}: {e}", path.display()));
    write_lines(&mut f, tag, range);
}

/// Writes `{tag} {n}` lines to an open file (a writer that has not reopened
/// its log after a rotation).
fn write_lines(f: &mut File, tag: &str, range: std::ops::Range<usize>) {
    let mut text = String::new();
    for n in range {
        text.push_str(&format!("{tag} {n}\n"));
    }
    f.write_all(text.as_bytes()).expect("append lines");
}

/// Checks that `bodies` hold, for every `(tag, count)`, exactly the lines
/// `{tag} 0` .. `{tag} {count-1}`, each once and in order, and nothing else.
fn check_tagged(bodies: &[String], expected: &[(&str, usize)]) {
    let mut next = vec![0usize; expected.len()];
    for body in bodies {
        let (tag, n) = body
            .split_once(' ')
            .unwrap_or_else(|| panic!("unexpected body {body:?}"));
        let n: usize = n
            .parse()
            .unwrap_or_else(|_| panic!("unexpected body {body:?}"));
        let at = expected
            .iter()
            .position(|(t, _)| *t == tag)
            .unwrap_or_else(|| panic!("unexpected tag in {body:?}"));
        assert_eq!(
            n, next[at],
            "{tag}: expected line {} next, got {n} (lost, duplicated or reordered)",
            next[at]
        );
        next[at] += 1;
    }
    let want: Vec<usize> = expected.iter().map(|(_, c)| *c).collect();
    assert_eq!(next, want, "lines per tag {expected:?}");
}

/// Stops the agent, then the daemon (which drains what it read), and
/// returns every body in the app's root log.
fn finish(agent: &mut Agent, daemon: &mut Daemon, setup: &Setup) -> Vec<String> {
    agent.stop();
    daemon.stop();
    let text = read(&setup.log("app/root.log"));
    bodies(&text.lines().map(str::to_string).collect::<Vec<_>>())
}

/// Waits until the app's root log holds `n` lines.
fn wait_lines(setup: &Setup, n: usize) -> Vec<String> {
    wait_for_lines(&setup.log("app/root.log"), n, DEADLINE)
}

// === rotation ===

#[test]
fn agent_follows_rename_rotation_and_drains_the_old_file() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let log = setup.root().join("access.log");
    let mut agent = Agent::start(std::slice::from_ref(&log), options(), d.tcp_addr());

    // The file does not exist yet: it is read from its start when it appears.
    let mut writer = File::create(&log).unwrap();
    write_lines(&mut writer, "a", 0..300);
    wait_lines(&setup, 300);
    std::fs::rename(&log, setup.root().join("access.log.1")).unwrap();
    // The writer has not reopened yet: more lines go to the renamed file,
    // before and after the new file exists.
    write_lines(&mut writer, "a", 300..400);
    append(&log, "b", 0..300);
    write_lines(&mut writer, "a", 400..450);
    append(&log, "b", 300..600);
    wait_lines(&setup, 1050);

    let bodies = finish(&mut agent, &mut d, &setup);
    check_tagged(&bodies, &[("a", 450), ("b", 600)]);
}

#[test]
fn agent_follows_copytruncate() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let log = setup.root().join("app.log");
    append(&log, "pre", 0..5);
    let opts = FollowOptions {
        from_start: true,
        ..options()
    };
    let mut agent = Agent::start(std::slice::from_ref(&log), opts, d.tcp_addr());

    append(&log, "a", 0..400);
    wait_lines(&setup, 405);
    // logrotate's copytruncate: copy, then truncate in place; the writer
    // goes on appending at the (now small) end.
    std::fs::copy(&log, setup.root().join("app.log.1")).unwrap();
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "b", 0..250);
    wait_lines(&setup, 655);

    let bodies = finish(&mut agent, &mut d, &setup);
    check_tagged(&bodies, &[("pre", 5), ("a", 400), ("b", 250)]);
}

#[test]
fn agent_polling_fallback_follows_rotation_and_truncation() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let log = setup.root().join("poll.log");
    let opts = FollowOptions {
        watch: WatchMode::Poll,
        poll_interval: Duration::from_millis(50),
        ..options()
    };
    let mut agent = Agent::start(std::slice::from_ref(&log), opts, d.tcp_addr());
    append(&log, "a", 0..100);
    wait_lines(&setup, 100);
    std::fs::rename(&log, setup.root().join("poll.log.1")).unwrap();
    append(&log, "b", 0..100);
    wait_lines(&setup, 200);
    OpenOptions::new()
        .write(true)
        .open(&log)
        .unwrap()
        .set_len(0)
        .unwrap();
    append(&log, "c", 0..100);
    wait_lines(&setup, 300);

    let bodies = finish(&mut agent, &mut d, &setup);
    check_tagged(&bodies, &[("a", 100), ("b", 100), ("c", 100)]);
}

// === files, lines ===

#[test]
fn agent_picks_up_files_that_appear_later_and_skips_old_content() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let existing = setup.root().join("existing.log");
    append(&existing, "old", 0..50);
    // Both a file and its directory appear after the agent started.
    let later = setup.root().join("later").join("new.log");
    let files = [existing.clone(), later.clone()];
    let mut agent = Agent::start(&files, options(), d.tcp_addr());

    std::fs::create_dir(setup.root().join("later")).unwrap();
    append(&later, "late", 0..100);
    // Once the late file's lines arrive, the agent has looked at the
    // existing file and placed itself at its end.
    wait_lines(&setup, 100);
    append(&existing, "new", 0..100);
    wait_lines(&setup, 200);

    let bodies = finish(&mut agent, &mut d, &setup);
    check_tagged(&bodies, &[("late", 100), ("new", 100)]);
}

#[test]
fn agent_sends_a_partial_line_once_it_is_complete() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let log = setup.root().join("partial.log");
    let mut agent = Agent::start(std::slice::from_ref(&log), options(), d.tcp_addr());

    let mut f = File::create(&log).unwrap();
    // One write: when "first" has arrived, the agent has read "par" too.
    f.write_all(b"first\r\npar").unwrap();
    wait_lines(&setup, 1);
    f.write_all(b"tial\nafter\n").unwrap();
    wait_lines(&setup, 3);

    let bodies = finish(&mut agent, &mut d, &setup);
    assert_eq!(bodies, ["first", "partial", "after"]);
}

#[test]
fn agent_parses_clf_into_key_values() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let log = setup.root().join("access.log");
    let opts = FollowOptions {
        format: Format::Clf,
        module: "web".into(),
        ..options()
    };
    let mut agent = Agent::start(std::slice::from_ref(&log), opts, d.tcp_addr());
    std::fs::write(
        &log,
        "127.0.0.1 - - [02/Dec/2026:10:00:00 +0000] \"GET /index.html HTTP/1.1\" 200 612 \"-\" \"curl/8.5.0\"\nnot an access log line\n",
    )
    .unwrap();
    let lines = wait_for_lines(&setup.log("app/web.log"), 2, DEADLINE);
    agent.stop();
    d.stop();
    assert_eq!(
        bodies(&lines),
        [
            "host=127.0.0.1 ident=- user=- time=\"02/Dec/2026:10:00:00 +0000\" method=GET path=/index.html protocol=HTTP/1.1 status=200 bytes=612 referer=- agent=curl/8.5.0",
            "not an access log line",
        ]
    );
}

// === restarts ===

#[test]
fn agent_restart_resumes_from_its_state_across_a_rotation() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let log = setup.root().join("app.log");
    let state = setup.root().join("agent.state");
    let opts = FollowOptions {
        state_path: Some(state.clone()),
        ..options()
    };
    let files = [log.clone()];
    let mut agent = Agent::start(&files, opts.clone(), d.tcp_addr());
    append(&log, "a", 0..300);
    wait_lines(&setup, 300);
    agent.stop();
    assert!(state.exists(), "no state file after acknowledged batches");

    // While the agent is down: more lines, a rotation, and lines in the
    // new file. The rotated file is found again by its inode.
    append(&log, "a", 300..500);
    std::fs::rename(&log, setup.root().join("app.log.1")).unwrap();
    append(&log, "b", 0..200);
    let opts = FollowOptions {
        shutdown: Arc::new(AtomicBool::new(false)),
        ..opts
    };
    let mut agent = Agent::start(&files, opts, d.tcp_addr());
    append(&log, "b", 200..300);
    wait_lines(&setup, 800);

    let bodies = finish(&mut agent, &mut d, &setup);
    check_tagged(&bodies, &[("a", 500), ("b", 300)]);
}

#[test]
fn agent_restart_rereads_a_file_truncated_and_rewritten_while_stopped() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let log = setup.root().join("app.log");
    let state = setup.root().join("agent.state");
    let opts = FollowOptions {
        state_path: Some(state.clone()),
        ..options()
    };
    let files = [log.clone()];
    let mut agent = Agent::start(&files, opts.clone(), d.tcp_addr());
    append(&log, "a", 0..100);
    wait_lines(&setup, 100);
    agent.stop();

    // While the agent is down the file is truncated in place and rewritten
    // past the old offset: same inode, longer than before, so only the head
    // fingerprint tells it is not the file that was read.
    let f = OpenOptions::new().write(true).open(&log).unwrap();
    f.set_len(0).unwrap();
    drop(f);
    append(&log, "b", 0..300);
    let opts = FollowOptions {
        shutdown: Arc::new(AtomicBool::new(false)),
        ..opts
    };
    let mut agent = Agent::start(&files, opts, d.tcp_addr());
    wait_lines(&setup, 400);

    let bodies = finish(&mut agent, &mut d, &setup);
    check_tagged(&bodies, &[("a", 100), ("b", 300)]);
}

/// A port free for both TCP and UDP on 127.0.0.1, so a restarted daemon
/// comes back where the agent's sender connects.
fn free_port() -> u16 {
    for _ in 0..50 {
        let tcp = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = tcp.local_addr().unwrap().port();
        if std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no port free for both TCP and UDP");
}

#[test]
fn agent_waits_out_a_daemon_restart_without_loss_or_duplicates() {
    let port = free_port();
    let setup = Setup::new().listen(&format!("127.0.0.1:{port}"), "");
    let mut d = Daemon::start(&setup);
    let log = setup.root().join("app.log");
    let opts = FollowOptions {
        state_path: Some(setup.root().join("agent.state")),
        max_batch_lines: 64,
        ..options()
    };
    let ship = Arc::new(TcpShip::new(d.tcp_addr()));
    let mut agent = Agent::start_with(std::slice::from_ref(&log), opts, ship.clone());
    append(&log, "a", 0..300);
    wait_lines(&setup, 300);

    d.stop();
    // The daemon is down: the agent reads one batch, fails to flush it and
    // pauses; the file holds the rest.
    append(&log, "a", 300..1000);
    let start = Instant::now();
    while ship.failed_flushes.load(Ordering::Relaxed) < 2 {
        assert!(start.elapsed() < DEADLINE, "the agent never tried to flush");
        std::thread::sleep(Duration::from_millis(5));
    }
    let mut d = Daemon::start(&setup);
    append(&log, "a", 1000..1200);
    wait_lines(&setup, 1200);

    let bodies = finish(&mut agent, &mut d, &setup);
    check_tagged(&bodies, &[("a", 1200)]);
    let most = ship.max_queued.load(Ordering::Relaxed);
    assert!(
        most <= 64,
        "{most} messages were queued unflushed; max_batch_lines is 64"
    );
}

// === throughput (measured, not asserted) ===

/// Lines per second the writer appends in the paced run.
const BENCH_RATE: usize = 200_000;

/// A typical nginx access line (~90 bytes with its number).
const BENCH_LINE: &str =
    "127.0.0.1 - - [02/Dec/2026:10:00:00 +0000] \"GET /index.html HTTP/1.1\" 200 612";

/// `cargo test --release -p loghogd --test tests agent_throughput -- --ignored --nocapture`
///
/// Two runs against the real daemon, with a state file (fsync + rename per
/// batch), printed, never asserted:
/// (1) a backlog of 1M lines read from the start as fast as agent and
/// daemon go; (2) a writer appending at 200,000 lines/s for 5 s while a
/// monitor counts the daemon's lines every 20 ms: the largest lag seen,
/// and how long after the writer stopped the last line arrived.
#[test]
#[ignore]
fn agent_throughput() {
    // (1) backlog
    {
        let setup = Setup::new();
        let mut d = Daemon::start(&setup);
        let log = setup.root().join("backlog.log");
        let total = 1_000_000;
        let mut text = String::with_capacity(total * (BENCH_LINE.len() + 12));
        for n in 0..total {
            text.push_str(&format!("{BENCH_LINE} {n}\n"));
        }
        std::fs::write(&log, &text).unwrap();
        let opts = FollowOptions {
            from_start: true,
            state_path: Some(setup.root().join("agent.state")),
            ..options()
        };
        let monitor = LineMonitor::start(setup.log("app/root.log"));
        let start = Instant::now();
        let mut agent = Agent::start(std::slice::from_ref(&log), opts, d.tcp_addr());
        monitor.wait_for(total, &start);
        let secs = start.elapsed().as_secs_f64();
        agent.stop();
        d.stop();
        println!(
            "agent backlog: {total} lines in {secs:.2} s = {:.0} lines/s through agent and daemon",
            total as f64 / secs
        );
    }
    // (2) paced writer
    {
        let setup = Setup::new();
        let mut d = Daemon::start(&setup);
        let log = setup.root().join("paced.log");
        let opts = FollowOptions {
            state_path: Some(setup.root().join("agent.state")),
            ..options()
        };
        let mut agent = Agent::start(std::slice::from_ref(&log), opts, d.tcp_addr());
        let monitor = LineMonitor::start(setup.log("app/root.log"));
        let mut f = File::create(&log).unwrap();
        let secs = 5;
        let total = BENCH_RATE * secs;
        let slice = BENCH_RATE / 1000; // lines per millisecond
        let start = Instant::now();
        let mut n = 0;
        let mut text = String::new();
        let mut max_lag = 0usize;
        while n < total {
            text.clear();
            for i in n..n + slice {
                text.push_str(&format!("{BENCH_LINE} {i}\n"));
            }
            f.write_all(text.as_bytes()).unwrap();
            n += slice;
            max_lag = max_lag.max(n.saturating_sub(monitor.count()));
            let due = Duration::from_secs_f64(n as f64 / BENCH_RATE as f64);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait); // pacing the writer, not a race
            }
        }
        let wrote = start.elapsed();
        let at_stop = monitor.count();
        monitor.wait_for(total, &start);
        let tail = start.elapsed() - wrote;
        agent.stop();
        d.stop();
        println!(
            "agent paced: {total} lines written at {:.0} lines/s over {:.2} s; largest lag seen {max_lag} lines \
             ({:.1} ms of input); {} lines behind when the writer stopped, last line delivered {:.0} ms later",
            total as f64 / wrote.as_secs_f64(),
            wrote.as_secs_f64(),
            max_lag as f64 * 1000.0 / BENCH_RATE as f64,
            total - at_stop.min(total),
            tail.as_secs_f64() * 1000.0
        );
    }
}

/// Counts the complete lines of a growing file on its own thread (every
/// 20 ms, reading only what was appended), so the bench can sample the
/// daemon's progress without re-reading 100 MB.
struct LineMonitor {
    count: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
}

impl LineMonitor {
    fn start(path: PathBuf) -> LineMonitor {
        let count = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (count.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut file = None;
            let mut buf = vec![0u8; 1 << 20];
            while !st.load(Ordering::Relaxed) {
                if file.is_none() {
                    file = File::open(&path).ok();
                }
                if let Some(f) = file.as_mut() {
                    while let Ok(n @ 1..) = f.read(&mut buf) {
                        let lines = buf[..n].iter().filter(|&&b| b == b'\n').count();
                        c.fetch_add(lines, Ordering::Relaxed);
                    }
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        LineMonitor { count, stop }
    }

    fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits (bounded: 300 s from `since`) until `n` lines were counted.
    fn wait_for(&self, n: usize, since: &Instant) {
        while self.count() < n {
            assert!(
                since.elapsed() < Duration::from_secs(300),
                "only {} of {n} lines arrived",
                self.count()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for LineMonitor {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
