//! Test harness: a temp dir with both config files, the daemon on ephemeral
//! ports (the real `loghogd` binary as a [`Daemon`], or `daemon::run`
//! [`InProcess`] with its counters as data), frame builders and file pollers.
//!
//! Modelled on ripgrep's `tests/util.rs`: every test gets its own directory
//! and its own daemon, so tests run in parallel and never see each other.
//! Nothing here sleeps to dodge a race: waits poll a condition under a
//! deadline and panic with the state they saw when it passes.

#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use loghog_protocol::{frame, Message};

/// How long any wait in these tests may take before it counts as a failure.
/// Generous on purpose: CI is a loaded 2-core machine.
pub const DEADLINE: Duration = Duration::from_secs(30);

/// The exit status the daemon must use for configuration errors (EX_CONFIG).
pub const EX_CONFIG: i32 = 78;

/// A facilities.conf root facility that every simple test can use.
pub const SIMPLE_FACILITIES: &str = "\
[app]
rotate = daily
backup_count = 3

[app:web]
rotate = daily
backup_count = 3
";

// === impl Setup ===

/// A temp dir plus the content of `loghogd.conf` and `facilities.conf`.
///
/// The directory holds `loghogd.conf`, `facilities.conf`, and after start-up
/// `log/` (logdir), `lib/` (workdir) and `run/` (rundir, with the pid file).
pub struct Setup {
    /// Removed on drop; keep the `Setup` alive as long as the daemon runs.
    dir: tempfile::TempDir,
    /// Written verbatim to `facilities.conf`.
    facilities: String,
    /// Extra lines appended to the `[main]` section.
    main_extra: String,
    /// Extra lines appended to the `[server]` section.
    server_extra: String,
    /// Extra sections appended to the end of `loghogd.conf`.
    conf_extra: String,
    /// `[server] listen_ipv4`.
    listen_ipv4: String,
    /// `[server] listen_ipv6`.
    listen_ipv6: String,
    /// Extra environment variables for the daemon (e.g. `TZ`).
    env: Vec<(String, String)>,
    /// `[main] logdir` when it is not `log/` in the temp dir: two writers
    /// of issue 16 share one logdir, each with its own workdir.
    logdir: Option<PathBuf>,
}

impl Default for Setup {
    fn default() -> Setup {
        Setup::new()
    }
}

impl Setup {
    /// A fresh temp dir with [`SIMPLE_FACILITIES`].
    pub fn new() -> Setup {
        let dir = tempfile::Builder::new()
            .prefix("loghogd-test-")
            .tempdir()
            .expect("create temp dir");
        Setup {
            dir,
            facilities: SIMPLE_FACILITIES.to_string(),
            main_extra: String::new(),
            server_extra: String::new(),
            conf_extra: String::new(),
            listen_ipv4: "127.0.0.1:0".to_string(),
            listen_ipv6: String::new(),
            env: Vec::new(),
            logdir: None,
        }
    }

    /// Uses `dir` (absolute) as `[main] logdir` instead of `log/` in the temp dir.
    pub fn logdir_at(mut self, dir: &Path) -> Setup {
        self.logdir = Some(dir.to_path_buf());
        self
    }

    /// Sets an environment variable for the daemon.
    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Replaces `[server] listen_ipv4` and `listen_ipv6`.
    pub fn listen(mut self, ipv4: &str, ipv6: &str) -> Setup {
        self.listen_ipv4 = ipv4.to_string();
        self.listen_ipv6 = ipv6.to_string();
        self
    }

    /// Replaces the content of `facilities.conf`.
    pub fn facilities(mut self, text: &str) -> Setup {
        self.facilities = text.to_string();
        self
    }

    /// Appends lines to `[server]` (e.g. `max_msg_size = 1024`).
    pub fn server_extra(mut self, text: &str) -> Setup {
        self.server_extra.push_str(text);
        self.server_extra.push('\n');
        self
    }

    /// Appends lines to `[main]`.
    pub fn main_extra(mut self, text: &str) -> Setup {
        self.main_extra.push_str(text);
        self.main_extra.push('\n');
        self
    }

    /// Appends whole sections to `loghogd.conf`.
    pub fn conf_extra(mut self, text: &str) -> Setup {
        self.conf_extra.push_str(text);
        self.conf_extra.push('\n');
        self
    }

    /// The temp dir.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Path of `loghogd.conf`.
    pub fn conf_path(&self) -> PathBuf {
        self.root().join("loghogd.conf")
    }

    /// Path of `facilities.conf`.
    pub fn facilities_path(&self) -> PathBuf {
        self.root().join("facilities.conf")
    }

    /// The logdir (`log/` in the temp dir unless [`Setup::logdir_at`] moved it).
    pub fn logdir(&self) -> PathBuf {
        match &self.logdir {
            Some(dir) => dir.clone(),
            None => self.root().join("log"),
        }
    }

    /// `{logdir}/{rel}`, e.g. `log("app/root.log")`.
    pub fn log(&self, rel: &str) -> PathBuf {
        self.logdir().join(rel)
    }

    /// The pid file: `run/loghogd.pid`.
    pub fn pidfile(&self) -> PathBuf {
        self.root().join("run").join("loghogd.pid")
    }

    /// The text of `loghogd.conf`.
    pub fn conf_text(&self) -> String {
        format!(
            "[main]\n\
             logdir = {}\n\
             workdir = lib\n\
             rundir = run\n\
             pidfile = loghogd.pid\n\
             facilities_config = facilities.conf\n\
             {}\n\
             [server]\n\
             listen_ipv4 = {}\n\
             listen_ipv6 = {}\n\
             {}\n\
             {}",
            // Relative unless moved: as every test before issue 16 wrote it.
            self.logdir
                .as_ref()
                .map_or_else(|| "log".to_string(), |d| d.display().to_string()),
            self.main_extra,
            self.listen_ipv4,
            self.listen_ipv6,
            self.server_extra,
            self.conf_extra
        )
    }

    /// Writes both config files into the temp dir.
    pub fn write(&self) {
        std::fs::write(self.conf_path(), self.conf_text()).expect("write loghogd.conf");
        self.write_facilities(&self.facilities);
    }

    /// Overwrites `facilities.conf` (for SIGHUP tests).
    pub fn write_facilities(&self, text: &str) {
        std::fs::write(self.facilities_path(), text).expect("write facilities.conf");
    }

    /// Runs the binary to completion with `-c loghogd.conf` plus `args`
    /// (config files are written first). For `--check-config` and start-up errors.
    pub fn run(&self, args: &[&str]) -> Output {
        self.write();
        let mut cmd = Command::new(bin());
        cmd.arg("-c").arg(self.conf_path()).args(args);
        cmd.env("NO_COLOR", "1").stdin(Stdio::null());
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        run_with_deadline(cmd)
    }

    /// As [`Setup::run`], with extra environment variables (e.g. `TZ`).
    pub fn run_env(&self, args: &[&str], env: &[(&str, &str)]) -> Output {
        self.write();
        let mut cmd = Command::new(bin());
        cmd.arg("-c").arg(self.conf_path()).args(args);
        cmd.env("NO_COLOR", "1").stdin(Stdio::null());
        cmd.envs(env.iter().copied());
        run_with_deadline(cmd)
    }
}

/// Path of the binary under test.
pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_loghogd")
}

/// What a finished run of the binary printed.
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    /// stdout and stderr together, for "the message names X" checks that
    /// do not care which stream it went to.
    pub fn all(&self) -> String {
        format!("{}\n{}", self.stdout, self.stderr)
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "status: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.status, self.stdout, self.stderr
        )
    }
}

/// Runs `cmd` with piped output and kills it if it outlives [`DEADLINE`].
/// Panics if it does not start.
pub fn run_with_deadline(mut cmd: Command) -> Output {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let out = drain(child.stdout.take().unwrap());
    let err = drain(child.stderr.take().unwrap());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{cmd:?} did not exit within {DEADLINE:?}\nstdout:\n{}\nstderr:\n{}",
                out.text(),
                err.text()
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The pipes close when the process exits; wait for the readers to finish.
    Output {
        status,
        stdout: out.finish(),
        stderr: err.finish(),
    }
}

// === impl Captured ===

/// Output of a child pipe, collected by a thread (so the child never blocks
/// on a full pipe), readable while the child still runs.
#[derive(Clone)]
pub struct Captured {
    text: Arc<Mutex<String>>,
    done: Arc<Mutex<bool>>,
}

fn drain(pipe: impl Read + Send + 'static) -> Captured {
    let cap = Captured {
        text: Arc::new(Mutex::new(String::new())),
        done: Arc::new(Mutex::new(false)),
    };
    let c = cap.clone();
    std::thread::spawn(move || {
        let mut r = BufReader::new(pipe);
        let mut line = Vec::new();
        loop {
            line.clear();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let s = strip_ansi(&String::from_utf8_lossy(&line));
                    c.text.lock().unwrap().push_str(&s);
                }
            }
        }
        *c.done.lock().unwrap() = true;
    });
    cap
}

impl Captured {
    /// Everything read so far.
    pub fn text(&self) -> String {
        self.text.lock().unwrap().clone()
    }

    /// Waits (bounded) until the pipe is closed, then returns everything.
    fn finish(&self) -> String {
        let start = Instant::now();
        while !*self.done.lock().unwrap() && start.elapsed() < Duration::from_secs(5) {
            std::thread::sleep(Duration::from_millis(5));
        }
        self.text()
    }
}

/// Removes ANSI colour sequences, in case the daemon colours its log even
/// into a pipe.
fn strip_ansi(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            chars.next();
            for c2 in chars.by_ref() {
                if c2.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

// === impl Daemon ===

/// A running `loghogd` in the foreground; killed on drop.
pub struct Daemon {
    child: Child,
    stderr: Captured,
    stdout: Captured,
    tcp: Vec<SocketAddr>,
    udp: Vec<SocketAddr>,
    /// TLS listeners (`listen_ipv4_ssl`); empty unless configured.
    tls: Vec<SocketAddr>,
    /// Set once the exit status has been collected.
    exited: Option<ExitStatus>,
}

impl Daemon {
    /// Writes the config files, starts the daemon and waits (bounded) for its
    /// `loghogd ready` line. Panics with its stderr if it exits or never gets ready.
    pub fn start(setup: &Setup) -> Daemon {
        Daemon::start_with(setup, &[])
    }

    /// As [`Daemon::start`], with extra command-line arguments.
    pub fn start_with(setup: &Setup, args: &[&str]) -> Daemon {
        setup.write();
        let mut child = Command::new(bin())
            .arg("-c")
            .arg(setup.conf_path())
            .args(args)
            .env("NO_COLOR", "1")
            .envs(setup.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn loghogd");
        let stderr = drain(child.stderr.take().unwrap());
        let stdout = drain(child.stdout.take().unwrap());
        let mut d = Daemon {
            child,
            stderr,
            stdout,
            tcp: Vec::new(),
            udp: Vec::new(),
            tls: Vec::new(),
            exited: None,
        };
        let start = Instant::now();
        loop {
            if d.stderr_text().contains("loghogd ready") {
                break;
            }
            if let Some(st) = d.child.try_wait().expect("try_wait") {
                let st_err = d.stderr.finish();
                panic!(
                    "loghogd exited ({st:?}) before it was ready\nconfig:\n{}\nstderr:\n{st_err}",
                    setup.conf_text()
                );
            }
            if start.elapsed() > DEADLINE {
                panic!(
                    "loghogd not ready within {DEADLINE:?}\nstderr:\n{}",
                    d.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let text = d.stderr_text();
        d.tcp = listening(&text, "tcp");
        d.udp = listening(&text, "udp");
        d.tls = listening(&text, "tls");
        assert!(
            !d.tcp.is_empty() && !d.udp.is_empty(),
            "no `listening on tcp|udp ADDR` lines before ready:\n{text}"
        );
        d
    }

    /// The (first) plain TCP listener.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp[0]
    }

    /// The (first) UDP listener.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp[0]
    }

    /// The (first) TLS listener; panics when none was announced.
    pub fn tls_addr(&self) -> SocketAddr {
        *self
            .tls
            .first()
            .expect("no `listening on tls ADDR` line: is listen_ipv4_ssl set?")
    }

    /// Every listener of `proto` (`http`, `syslog-udp`, ...) the daemon
    /// announced before it was ready.
    pub fn addrs(&self, proto: &str) -> Vec<SocketAddr> {
        listening(&self.stderr_text(), proto)
    }

    /// Every TCP listener announced.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp
    }

    /// Every UDP listener announced.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp
    }

    /// Process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the daemon logged to stderr so far (ANSI stripped).
    pub fn stderr_text(&self) -> String {
        self.stderr.text()
    }

    /// Everything the daemon wrote to stdout so far.
    pub fn stdout_text(&self) -> String {
        self.stdout.text()
    }

    /// Sends `sig` (`"HUP"`, `"TERM"`, `"INT"`) to the daemon.
    pub fn signal(&self, sig: &str) {
        send_signal(self.child.id(), sig);
    }

    /// Waits (bounded) until stderr contains `needle`; returns the stderr text.
    pub fn wait_for_log(&self, needle: &str) -> String {
        self.wait_for_log_count(needle, 1)
    }

    /// Waits (bounded) until stderr contains `needle` at least `n` times.
    pub fn wait_for_log_count(&self, needle: &str, n: usize) -> String {
        let start = Instant::now();
        loop {
            let t = self.stderr_text();
            if t.matches(needle).count() >= n {
                return t;
            }
            if start.elapsed() > DEADLINE {
                panic!("daemon never logged {n}× {needle:?} within {DEADLINE:?}; stderr:\n{t}");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits (bounded) for the process to exit and returns its status.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        if let Some(st) = self.exited {
            return st;
        }
        let start = Instant::now();
        loop {
            if let Some(st) = self.child.try_wait().expect("try_wait") {
                self.exited = Some(st);
                // Let the reader thread collect the last lines (the stats line).
                self.stderr.finish();
                return st;
            }
            if start.elapsed() > deadline {
                panic!(
                    "loghogd did not exit within {deadline:?}; stderr:\n{}",
                    self.stderr_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM, then waits for exit and asserts status 0. Returns stderr.
    pub fn stop(&mut self) -> String {
        self.signal("TERM");
        let st = self.wait_exit(DEADLINE);
        let err = self.stderr_text();
        assert!(
            st.success(),
            "loghogd exited with {st:?} after SIGTERM; stderr:\n{err}"
        );
        err
    }

    /// After exit: the counters of the `stats ` line (e.g. `received`, `written`).
    pub fn stat(&self, name: &str) -> u64 {
        let text = self.stderr_text();
        let line = text
            .lines()
            .rev()
            .find(|l| l.contains("stats "))
            .unwrap_or_else(|| panic!("no `stats ` line in stderr:\n{text}"));
        let key = format!("{name}=");
        let at = line
            .find(&key)
            .unwrap_or_else(|| panic!("no `{key}` in stats line: {line}"));
        let digits: String = line[at + key.len()..]
            .chars()
            .take_while(|c| c.is_ascii_digit())
            .collect();
        digits
            .parse()
            .unwrap_or_else(|_| panic!("bad `{key}` value in stats line: {line}"))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if self.exited.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// === impl InProcess ===

/// A daemon running inside the test process, through `daemon::run` on its
/// own runtime thread: no subprocess, sockets bound before it starts, its
/// counters readable as data. It logs nothing the test can read (tracing is
/// process-global), so tests that check log lines use [`Daemon`].
pub struct InProcess {
    /// The daemon's handle: counters (`remote.stats`) and reload.
    pub remote: loghogd::daemon::Remote,
    /// Every bound listener: (transport, address).
    addrs: Vec<(&'static str, SocketAddr)>,
    /// Resolves the daemon's shutdown future.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    /// The runtime thread; yields what `run` returned.
    thread: Option<std::thread::JoinHandle<Result<(), String>>>,
    /// For reload requests from sync tests.
    rt: tokio::runtime::Handle,
}

impl InProcess {
    /// Writes the config files, loads them as the binary would, binds
    /// every listener and starts the daemon. Panics on any error.
    pub fn start(setup: &Setup) -> InProcess {
        InProcess::start_with(setup, |_| {})
    }

    /// As [`InProcess::start`], after `adjust` changed the loaded config
    /// (e.g. shorter limits).
    pub fn start_with(
        setup: &Setup,
        adjust: impl FnOnce(&mut loghogd::config::Config),
    ) -> InProcess {
        InProcess::start_with_clock(setup, adjust, loghogd::clock::Clock::system())
    }

    /// As [`InProcess::start_with`], with rotation reading `clock` (a test
    /// moves it to make a schedule due).
    pub fn start_with_clock(
        setup: &Setup,
        adjust: impl FnOnce(&mut loghogd::config::Config),
        clock: loghogd::clock::Clock,
    ) -> InProcess {
        let (config, facilities, listeners) = load_and_bind(setup, adjust);
        let addrs = listeners.addrs();
        let (remote, control) = loghogd::daemon::control();
        let control = control.with_clock(clock);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (rt_tx, rt_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())?;
            let _ = rt_tx.send(rt.handle().clone());
            let shutdown = async move {
                let _ = stopped.await;
            };
            let res = rt.block_on(loghogd::daemon::run(
                config, facilities, listeners, control, shutdown,
            ));
            rt.shutdown_timeout(Duration::from_secs(1));
            res.map_err(|e| format!("{e:#}"))
        });
        let rt = rt_rx.recv().expect("daemon runtime started");
        InProcess {
            remote,
            addrs,
            stop: Some(stop),
            thread: Some(thread),
            rt,
        }
    }

    fn first(&self, transport: &str) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(t, _)| *t == transport)
            .map(|(_, a)| *a)
            .unwrap_or_else(|| panic!("no {transport} listener is configured"))
    }

    /// The (first) plain TCP listener.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.first("tcp")
    }

    /// The (first) listener of `transport` (`syslog-udp`, `syslog-tcp`,
    /// `syslog-tls`, `http`, or any of the above).
    pub fn addr(&self, transport: &str) -> SocketAddr {
        self.first(transport)
    }

    /// The (first) UDP listener.
    pub fn udp_addr(&self) -> SocketAddr {
        self.first("udp")
    }

    /// The (first) TLS listener.
    pub fn tls_addr(&self) -> SocketAddr {
        self.first("tls")
    }

    /// A counter by name (`Stats::for_each` names).
    pub fn stat(&self, name: &str) -> u64 {
        self.remote
            .stats
            .get(name)
            .unwrap_or_else(|| panic!("no counter {name:?}"))
    }

    /// Waits (bounded) until counter `name` reaches at least `n`.
    pub fn wait_stat(&self, name: &str, n: u64) {
        let start = Instant::now();
        while self.stat(name) < n {
            assert!(
                start.elapsed() < DEADLINE,
                "counter {name} stayed at {} (< {n}) for {DEADLINE:?}; stats: {}",
                self.stat(name),
                self.remote.stats.summary()
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Reloads as SIGHUP does; the error says why facilities.conf was refused.
    pub fn reload(&self) -> Result<(), String> {
        let remote = self.remote.clone();
        self.rt.block_on(async move { remote.reload().await })
    }

    /// Stops as SIGTERM does and waits (bounded) until `run` returned.
    pub fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            join_within(thread, "daemon::run");
        }
    }
}

/// Joins `thread` (which runs `what`), waiting at most [`DEADLINE`]; panics
/// if it does not finish, panicked, or returned an error.
pub fn join_within<E: std::fmt::Display>(
    thread: std::thread::JoinHandle<Result<(), E>>,
    what: &str,
) {
    let start = Instant::now();
    while !thread.is_finished() {
        assert!(
            start.elapsed() < DEADLINE,
            "{what} did not stop within {DEADLINE:?}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    match thread.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => panic!("{what} failed: {e}"),
        Err(_) => panic!("the thread running {what} panicked"),
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // Not joined: a test that panicked should report its own failure.
    }
}

/// Writes the config files, loads both as the binary does (no overrides),
/// creates the daemon's directories and binds every listener.
pub fn load_and_bind(
    setup: &Setup,
    adjust: impl FnOnce(&mut loghogd::config::Config),
) -> (
    loghogd::config::Config,
    loghogd::config::FacilityDb,
    loghogd::Listeners,
) {
    setup.write();
    let mut config = loghogd::config::Config::load(&setup.conf_path(), &Default::default())
        .unwrap_or_else(|e| panic!("loghogd.conf: {e}"));
    adjust(&mut config);
    let facilities = loghogd::config::FacilityDb::load(&config.main.facilities_config)
        .unwrap_or_else(|e| panic!("facilities.conf: {e}"));
    for dir in [
        &config.main.logdir,
        &config.main.workdir,
        &config.main.rundir,
    ] {
        std::fs::create_dir_all(dir).expect("create daemon dirs");
    }
    let mut listeners = loghogd::bind(&config.server.listen, &config.server.listen_ssl)
        .unwrap_or_else(|e| panic!("bind: {e}"));
    listeners.syslog =
        loghogd::bind_syslog(&config.syslog).unwrap_or_else(|e| panic!("bind [syslog]: {e}"));
    listeners.http =
        loghogd::bind_http(&config.http).unwrap_or_else(|e| panic!("bind [http]: {e}"));
    (config, facilities, listeners)
}

/// Sends a signal by name through the shell's `kill` builtin (no libc or nix
/// dependency, and no need for procps' `/bin/kill`).
pub fn send_signal(pid: u32, sig: &str) {
    let st = Command::new("sh")
        .args(["-c", "kill -s \"$1\" \"$2\"", "sh", sig, &pid.to_string()])
        .status()
        .expect("run sh -c kill");
    assert!(st.success(), "kill -s {sig} {pid} failed: {st:?}");
}

/// Parses every `listening on {proto} ADDR` from the daemon's log.
fn listening(text: &str, proto: &str) -> Vec<SocketAddr> {
    let needle = format!("listening on {proto} ");
    let mut out = Vec::new();
    for line in text.lines() {
        if let Some(at) = line.find(&needle) {
            let rest = &line[at + needle.len()..];
            let token: String = rest
                .chars()
                .take_while(|c| !c.is_whitespace() && *c != '"' && *c != ',')
                .collect();
            let addr: SocketAddr = token
                .parse()
                .unwrap_or_else(|_| panic!("cannot parse address {token:?} in line: {line}"));
            assert_ne!(addr.port(), 0, "daemon announced port 0: {line}");
            out.push(addr);
        }
    }
    out
}

// === frames ===

/// Options for [`frame`]: what to add to a well-formed message.
#[derive(Clone, Debug, Default)]
pub struct Opts {
    /// `hostname` field; absent when `None`.
    pub hostname: Option<String>,
    /// Sign with this secret (correct signature).
    pub secret: Option<String>,
    /// Put this exact string in `signature` (overrides `secret`).
    pub signature: Option<String>,
    /// zlib-compress the payload (flag 0x01).
    pub compress: bool,
    /// `stamp`; 1358363502 when `None`.
    pub stamp: Option<i64>,
    /// `nsecs`; 12043 when `None`.
    pub nsecs: Option<i64>,
}

impl Opts {
    pub fn host(h: &str) -> Opts {
        Opts {
            hostname: Some(h.to_string()),
            ..Opts::default()
        }
    }
    pub fn signed(secret: &str) -> Opts {
        Opts {
            secret: Some(secret.to_string()),
            ..Opts::default()
        }
    }
    pub fn compressed() -> Opts {
        Opts {
            compress: true,
            ..Opts::default()
        }
    }
}

/// Builds the message for [`frame`].
pub fn message<'a>(app: &'a str, module: &'a str, body: &'a str, opts: &'a Opts) -> Message<'a> {
    let mut m = Message {
        version: 1,
        app_id: app.into(),
        module: module.into(),
        stamp: opts.stamp.unwrap_or(1358363502),
        nsecs: opts.nsecs.unwrap_or(12043),
        body: body.into(),
        hostname: opts.hostname.as_deref().map(Into::into),
        signature: None,
    };
    if let Some(sig) = &opts.signature {
        m.signature = Some(sig.as_str().into());
    } else if let Some(secret) = &opts.secret {
        m.signature = Some(loghog_protocol::sign::sign(secret, &m).into());
    }
    m
}

/// One complete wire frame for a message.
pub fn frame(app: &str, module: &str, body: &str, opts: &Opts) -> Vec<u8> {
    let m = message(app, module, body, opts);
    let mut payload = Vec::new();
    m.encode(&mut payload);
    let mut out = Vec::new();
    frame::encode(&payload, opts.compress, &mut out);
    out
}

/// A plain frame for app `app`, root module, with `body`.
pub fn simple(app: &str, body: &str) -> Vec<u8> {
    frame(app, "", body, &Opts::default())
}

/// A frame with an arbitrary header and payload (no checks), for hostile input.
pub fn raw_frame(len: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(8 + payload.len());
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// A frame with a correct length for an arbitrary payload, flags as given.
pub fn payload_frame(payload: &[u8], flags: u32) -> Vec<u8> {
    raw_frame(payload.len() as u32, flags, payload)
}

/// zlib as Python's `zlib.compress` writes it.
pub fn zlib(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

// === sockets ===

/// Connects to `addr`, writes `bytes`, closes. The daemon never replies.
pub fn send_tcp(addr: SocketAddr, bytes: &[u8]) {
    let mut s = connect(addr);
    s.write_all(bytes).expect("write to daemon");
    s.flush().unwrap();
}

/// Connects to `addr` with timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, DEADLINE).expect("connect to daemon");
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s
}

/// Sends each datagram to `addr` from one socket.
pub fn send_udp(addr: SocketAddr, datagrams: &[Vec<u8>]) {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
    for d in datagrams {
        s.send_to(d, addr).expect("send datagram");
    }
}

/// Waits (bounded) until the peer closes `s` (EOF or reset). Panics if it
/// stays open for [`DEADLINE`].
pub fn wait_closed_by_peer(s: &mut TcpStream) {
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => {}
        Ok(n) => panic!("daemon sent {n} bytes; it must never reply"),
        Err(e)
            if e.kind() == std::io::ErrorKind::WouldBlock
                || e.kind() == std::io::ErrorKind::TimedOut =>
        {
            panic!("daemon did not close the connection within {DEADLINE:?}")
        }
        Err(_) => {} // reset: closed too
    }
}

// === files ===

/// Reads a file as lossy UTF-8; empty when it does not exist yet.
pub fn read(path: &Path) -> String {
    match std::fs::read(path) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(_) => String::new(),
    }
}

/// Waits (bounded) until `path` holds at least `n` complete lines and
/// returns all complete lines (so a caller can assert an exact count).
///
/// Reads only what was appended since the last poll, so waiting for a
/// 100k-line file does not re-read megabytes every few milliseconds.
pub fn wait_for_lines(path: &Path, n: usize, deadline: Duration) -> Vec<String> {
    let start = Instant::now();
    let mut data: Vec<u8> = Vec::new();
    let mut complete = 0usize;
    loop {
        if let Ok(mut f) = std::fs::File::open(path) {
            use std::io::{Seek, SeekFrom};
            if f.seek(SeekFrom::Start(data.len() as u64)).is_ok() {
                let before = data.len();
                let _ = f.read_to_end(&mut data);
                complete += data[before..].iter().filter(|&&b| b == b'\n').count();
            }
        }
        if complete >= n {
            let end = data
                .iter()
                .rposition(|&b| b == b'\n')
                .map(|i| i + 1)
                .unwrap_or(0);
            return String::from_utf8_lossy(&data[..end])
                .lines()
                .map(str::to_string)
                .collect();
        }
        if start.elapsed() > deadline {
            let text = String::from_utf8_lossy(&data);
            panic!(
                "{} has {complete} lines, wanted {n} within {deadline:?}; content:\n{}",
                path.display(),
                tail(&text)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Waits (bounded) until `cond(content)` holds for `path`; returns the content.
pub fn wait_for_content(path: &Path, what: &str, cond: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    loop {
        let text = read(path);
        if cond(&text) {
            return text;
        }
        if start.elapsed() > DEADLINE {
            panic!(
                "{} never got {what} within {DEADLINE:?}; content:\n{}",
                path.display(),
                tail(&text)
            );
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn tail(text: &str) -> &str {
    let cut = text.len().saturating_sub(2000);
    let mut at = cut;
    while !text.is_char_boundary(at) {
        at += 1;
    }
    &text[at..]
}

/// Checks that `lines` hold every `c{conn} n{seq}` exactly once, in order per
/// connection.
pub fn check_numbers(lines: &[String], conns: usize, per_conn: usize) {
    let mut next = vec![0usize; conns];
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
    assert_eq!(next, vec![per_conn; conns], "messages per connection");
    assert_eq!(lines.len(), conns * per_conn, "total line count");
}

/// Splits a log line into (timestamp, hostname, body), checking the exact
/// format `YYYY-MM-DD HH:MM:SS.ffffff - {hostname} - {body}`. The hostname
/// must not contain ` - ` (true for all the names these tests use).
pub fn parse_line(line: &str) -> (String, String, String) {
    let ts = line
        .get(..26)
        .unwrap_or_else(|| panic!("line too short: {line:?}"));
    let shape = ts.bytes().enumerate().all(|(i, b)| match i {
        4 | 7 => b == b'-',
        10 => b == b' ',
        13 | 16 => b == b':',
        19 => b == b'.',
        _ => b.is_ascii_digit(),
    });
    assert!(
        shape,
        "timestamp not `YYYY-MM-DD HH:MM:SS.ffffff`: {line:?}"
    );
    chrono::NaiveDateTime::parse_from_str(ts, "%Y-%m-%d %H:%M:%S%.6f")
        .unwrap_or_else(|e| panic!("timestamp {ts:?} is not a valid time: {e}"));
    let rest = line[26..]
        .strip_prefix(" - ")
        .unwrap_or_else(|| panic!("no ` - ` after the timestamp: {line:?}"));
    let (host, body) = rest
        .split_once(" - ")
        .unwrap_or_else(|| panic!("no ` - ` after the hostname: {line:?}"));
    (ts.to_string(), host.to_string(), body.to_string())
}

/// The bodies of `lines` (each checked by [`parse_line`]).
pub fn bodies(lines: &[String]) -> Vec<String> {
    lines.iter().map(|l| parse_line(l).2).collect()
}

/// The (hostname, body) of each of `lines` (each checked by [`parse_line`]).
pub fn hosts_and_bodies(lines: &[String]) -> Vec<(String, String)> {
    lines
        .iter()
        .map(|l| {
            let (_, host, body) = parse_line(l);
            (host, body)
        })
        .collect()
}

/// Every regular file under `dir`, recursively (symlinks reported, not followed).
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd {
            let e = e.unwrap();
            let ft = e.file_type().unwrap();
            if ft.is_dir() {
                stack.push(e.path());
            } else {
                out.push(e.path());
            }
        }
    }
    out.sort();
    out
}

/// Files under `{logdir}` as paths relative to it, sorted.
pub fn log_files(setup: &Setup) -> Vec<String> {
    let base = setup.logdir();
    walk(&base)
        .into_iter()
        .map(|p| {
            p.strip_prefix(&base)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}
