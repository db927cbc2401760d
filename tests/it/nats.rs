//! Real NATS JetStream servers for the issue-16 tests: one `nats-server -js`
//! on a loopback port ([`NatsServer`], stoppable and restartable on the same
//! port and store), a three-node JetStream cluster ([`NatsCluster`], one node
//! killable), and a small raw NATS protocol client ([`NatsConn`]) over a std
//! `TcpStream` that the harness uses to wait for readiness and the tests use
//! to call the JetStream API and publish what loghogd never would (poison).
//!
//! The client is std-only on purpose: the harness must not share the code it
//! tests (the daemon's `async-nats`), and the protocol lines it needs
//! (`CONNECT`, `PING`, `SUB`, `PUB`, `HPUB`, `MSG`, `HMSG`) are few. Each
//! server logs to a file in its temp dir; when a test panics, dropping the
//! server prints the log's tail, so a CI failure shows what the broker saw.
//!
//! `nats-server` must be installed (Debian's package; `.ci/run` installs it):
//! a test that needs it fails and says so, it never skips.

#![allow(dead_code)]

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::util::DEADLINE;

/// The server binary's name, looked up on `PATH` (Debian installs it as
/// `/usr/sbin/nats-server`, which is on root's `PATH`; `/usr/bin` is tried too).
fn binary() -> PathBuf {
    for dir in std::env::var("PATH").unwrap_or_default().split(':').chain([
        "/usr/sbin",
        "/usr/bin",
        "/usr/local/bin",
    ]) {
        let p = Path::new(dir).join("nats-server");
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "nats-server is not installed; install the Debian package nats-server \
         (apt-get install nats-server; .ci/run does) to run the issue-16 broker tests"
    )
}

/// A free loopback port, found by binding port 0 and letting it go. Only for
/// cluster route ports, which every node must know before any starts (NATS
/// has no way to learn a `-1` route port in time); client ports use `-p -1`
/// and are read back from the log, with no race.
fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a probe port");
    l.local_addr().unwrap().port()
}

// === impl Node ===

/// One `nats-server` process: its name, store, log and ports, and the child
/// while it runs.
struct Node {
    /// `-n`: the server name, as the JetStream API reports leaders.
    name: String,
    /// `-sd`: kept across restarts, so streams survive them.
    store: PathBuf,
    /// stderr, appended across restarts.
    log: PathBuf,
    /// The client port; `None` until the first start picked one.
    port: Option<u16>,
    /// Cluster flags (`--cluster`, `--routes`, `--cluster_name`); empty for a single server.
    cluster_args: Vec<String>,
    /// The running process.
    child: Option<Child>,
}

impl Node {
    fn new(root: &Path, name: &str, cluster_args: Vec<String>) -> Node {
        Node {
            name: name.to_string(),
            store: root.join(format!("{name}-store")),
            log: root.join(format!("{name}.log")),
            port: None,
            cluster_args,
            child: None,
        }
    }

    /// Spawns the server; returns once it logged its client port and
    /// `Server is ready`, or an error with the log if it exits or takes
    /// longer than [`DEADLINE`].
    fn spawn(&mut self) -> Result<(), String> {
        assert!(self.child.is_none(), "{} is already running", self.name);
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("open the nats-server log");
        // Only what this run logs counts when waiting for its lines.
        let from = log.metadata().map(|m| m.len()).unwrap_or(0) as usize;
        let port = self.port.map_or("-1".to_string(), |p| p.to_string());
        let child = Command::new(binary())
            .args(["-js", "-sd"])
            .arg(&self.store)
            .args(["-a", "127.0.0.1", "-p", &port, "-n", &self.name])
            .args(&self.cluster_args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .map_err(|e| format!("spawn {}: {e}", binary().display()))?;
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let text = self.log_text();
            let run = text.get(from..).unwrap_or("");
            if let Some(p) = client_port(run) {
                if run.contains("Server is ready") {
                    self.port = Some(p);
                    return Ok(());
                }
            }
            if let Some(st) = self.child.as_mut().unwrap().try_wait().expect("try_wait") {
                self.child = None;
                return Err(format!(
                    "nats-server {} exited ({st:?}) before it was ready:\n{run}",
                    self.name
                ));
            }
            if start.elapsed() > DEADLINE {
                self.kill();
                return Err(format!(
                    "nats-server {} not ready within {DEADLINE:?}:\n{run}",
                    self.name
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGKILL, then reaps the process: a crash, nothing flushed on purpose.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM (nats-server's clean shutdown), reaped within [`DEADLINE`];
    /// SIGKILL if it does not go.
    fn terminate(&mut self) {
        if let Some(mut child) = self.child.take() {
            crate::util::send_signal(child.id(), "TERM");
            let start = Instant::now();
            while child.try_wait().expect("try_wait").is_none() {
                if start.elapsed() > DEADLINE {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!("nats-server {} ignored SIGTERM for {DEADLINE:?}", self.name);
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn running(&self) -> bool {
        self.child.is_some()
    }

    fn addr(&self) -> SocketAddr {
        let port = self
            .port
            .unwrap_or_else(|| panic!("{} never started", self.name));
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    fn url(&self) -> String {
        format!("nats://{}", self.addr())
    }

    fn log_text(&self) -> String {
        let mut s = String::new();
        if let Ok(mut f) = File::open(&self.log) {
            let mut b = Vec::new();
            let _ = f.read_to_end(&mut b);
            s = String::from_utf8_lossy(&b).into_owned();
        }
        s
    }

    /// Prints the log's tail to stderr (the test's output) for a failure.
    fn dump(&self) {
        let text = self.log_text();
        let cut = text.len().saturating_sub(6000);
        let at = (cut..=text.len())
            .find(|&i| text.is_char_boundary(i))
            .unwrap_or(text.len());
        eprintln!(
            "--- nats-server {} log ({}) ---\n{}",
            self.name,
            self.log.display(),
            &text[at..]
        );
    }
}

/// The port of the last `Listening for client connections on 127.0.0.1:PORT`.
fn client_port(text: &str) -> Option<u16> {
    let needle = "Listening for client connections on ";
    let at = text.rfind(needle)? + needle.len();
    let addr: String = text[at..]
        .chars()
        .take_while(|c| !c.is_whitespace())
        .collect();
    addr.rsplit_once(':')?.1.parse().ok()
}

/// Waits (bounded by `deadline`) until `$JS.API.INFO` on `addr` answers without
/// an error: JetStream is enabled and, in a cluster, has a meta leader.
fn wait_jetstream(addr: SocketAddr, deadline: Duration) -> Result<(), String> {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < deadline {
        match NatsConn::connect(addr)
            .and_then(|mut c| c.js_within("$JS.API.INFO", "", Duration::from_secs(1)))
        {
            Ok(_) => return Ok(()),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!(
        "JetStream on {addr} not ready within {deadline:?}: {last}"
    ))
}

// === impl NatsServer ===

/// A single JetStream server on a loopback port, in its own temp dir;
/// killed on drop (its log printed if the test is failing).
pub struct NatsServer {
    /// The store and the log; removed on drop.
    dir: tempfile::TempDir,
    node: Node,
}

impl NatsServer {
    /// Starts `nats-server -js` on a free loopback port and waits until
    /// JetStream answers.
    pub fn start() -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("loghogd-nats-")
            .tempdir()
            .expect("create temp dir");
        let node = Node::new(dir.path(), "nats1", Vec::new());
        let mut s = NatsServer { dir, node };
        if let Err(e) = s
            .node
            .spawn()
            .and_then(|()| wait_jetstream(s.addr(), DEADLINE))
        {
            panic!("{e}");
        }
        s
    }

    /// `nats://127.0.0.1:PORT`: the same across restarts.
    pub fn url(&self) -> String {
        self.node.url()
    }

    /// The client address.
    pub fn addr(&self) -> SocketAddr {
        self.node.addr()
    }

    /// SIGKILL: the broker is gone at once (port closed, nothing flushed on
    /// purpose; acknowledged data is in the kernel's page cache and survives).
    pub fn stop(&mut self) {
        self.node.kill();
    }

    /// SIGTERM: a clean shutdown.
    pub fn terminate(&mut self) {
        self.node.terminate();
    }

    /// Starts it again on the same port with the same store, and waits until
    /// JetStream answers (streams recovered from the store).
    pub fn restart(&mut self) {
        if self.node.running() {
            self.node.kill();
        }
        if let Err(e) = self
            .node
            .spawn()
            .and_then(|()| wait_jetstream(self.addr(), DEADLINE))
        {
            panic!("{e}");
        }
    }

    /// Whether the process is running (not stopped).
    pub fn running(&self) -> bool {
        self.node.running()
    }

    /// Everything the server logged, across restarts.
    pub fn log_text(&self) -> String {
        self.node.log_text()
    }

    /// A new raw connection.
    pub fn conn(&self) -> NatsConn {
        NatsConn::connect(self.addr())
            .unwrap_or_else(|e| panic!("connect to nats-server {}: {e}", self.url()))
    }

    /// The temp dir (store and log).
    pub fn root(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.node.dump();
        }
        self.node.kill();
    }
}

// === impl NatsServer: with a config file ===

impl NatsServer {
    /// Starts `nats-server -js -c FILE` with `config` (nats-server's config
    /// syntax: a `tls {}` or `authorization {}` block) on a free loopback
    /// port (the command line's port, address and store win over the
    /// file). Ready once it logged `Server is ready`: the raw client here
    /// speaks neither TLS nor NKey, so JetStream is not probed through it.
    pub fn start_with_config(config: &str) -> NatsServer {
        let dir = tempfile::Builder::new()
            .prefix("loghogd-nats-")
            .tempdir()
            .expect("create temp dir");
        let conf = dir.path().join("nats.conf");
        std::fs::write(&conf, config).expect("write nats.conf");
        let args = vec!["-c".to_string(), conf.display().to_string()];
        let node = Node::new(dir.path(), "nats1", args);
        let mut s = NatsServer { dir, node };
        if let Err(e) = s.node.spawn() {
            panic!("{e}");
        }
        s
    }

    /// Waits until JetStream answers the raw client: for a config whose
    /// `no_auth_user` lets a client in without credentials.
    pub fn wait_jetstream(&self) {
        if let Err(e) = wait_jetstream(self.addr(), DEADLINE) {
            panic!("{e}\n{}", self.log_text());
        }
    }

    /// `tls://127.0.0.1:PORT`, for a server started with a `tls {}` block.
    pub fn tls_url(&self) -> String {
        format!("tls://{}", self.addr())
    }
}

// === impl NatsCluster ===

/// A JetStream cluster of nodes `node1`..`nodeN` on loopback, each with its
/// own store; every node is given every route. Killed on drop.
pub struct NatsCluster {
    dir: tempfile::TempDir,
    nodes: Vec<Node>,
}

impl NatsCluster {
    /// Starts `n` nodes and waits until every one answers `$JS.API.INFO`
    /// (routes up, a JetStream meta leader elected). Retries with fresh route
    /// ports if a probed port was taken in between (a node then exits early).
    pub fn start(n: usize) -> NatsCluster {
        let mut attempt = 0;
        loop {
            attempt += 1;
            match NatsCluster::try_start(n) {
                Ok(c) => return c,
                Err(e) if attempt < 3 => eprintln!("nats cluster attempt {attempt}: {e}"),
                Err(e) => panic!("nats cluster of {n} did not form: {e}"),
            }
        }
    }

    fn try_start(n: usize) -> Result<NatsCluster, String> {
        let dir = tempfile::Builder::new()
            .prefix("loghogd-nats-cluster-")
            .tempdir()
            .expect("create temp dir");
        let route_ports: Vec<u16> = (0..n).map(|_| free_port()).collect();
        let routes = route_ports
            .iter()
            .map(|p| format!("nats://127.0.0.1:{p}"))
            .collect::<Vec<_>>()
            .join(",");
        let nodes = route_ports
            .iter()
            .enumerate()
            .map(|(i, p)| {
                let args = vec![
                    "--cluster_name".to_string(),
                    "loghog-test".to_string(),
                    "--cluster".to_string(),
                    format!("nats://127.0.0.1:{p}"),
                    "--routes".to_string(),
                    routes.clone(),
                ];
                Node::new(dir.path(), &format!("node{}", i + 1), args)
            })
            .collect();
        let mut c = NatsCluster { dir, nodes };
        // Each spawn only waits for its own client listener: JetStream
        // needs the routes, so readiness is checked once all are up.
        for node in &mut c.nodes {
            node.spawn()?;
        }
        for node in &c.nodes {
            wait_jetstream(node.addr(), DEADLINE)?;
        }
        Ok(c)
    }

    /// How many nodes (running or killed).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// `nats://127.0.0.1:PORT` of node `i` (0-based).
    pub fn url(&self, i: usize) -> String {
        self.nodes[i].url()
    }

    /// Every node's URL, comma-separated, as `[forward] servers` takes them.
    pub fn urls(&self) -> String {
        (0..self.len())
            .map(|i| self.url(i))
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Client address of node `i`.
    pub fn addr(&self, i: usize) -> SocketAddr {
        self.nodes[i].addr()
    }

    /// The server name of node `i` (`node{i+1}`), as JetStream names leaders.
    pub fn name(&self, i: usize) -> &str {
        &self.nodes[i].name
    }

    /// The index of the node called `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// SIGKILL node `i`.
    pub fn kill(&mut self, i: usize) {
        self.nodes[i].kill();
    }

    /// Whether node `i` runs.
    pub fn running(&self, i: usize) -> bool {
        self.nodes[i].running()
    }

    /// A new raw connection to node `i`.
    pub fn conn(&self, i: usize) -> NatsConn {
        NatsConn::connect(self.addr(i))
            .unwrap_or_else(|e| panic!("connect to {}: {e}", self.url(i)))
    }

    /// A connection to the first running node.
    pub fn any_conn(&self) -> NatsConn {
        let i = (0..self.len())
            .find(|&i| self.running(i))
            .expect("no node is running");
        self.conn(i)
    }
}

impl Drop for NatsCluster {
    fn drop(&mut self) {
        let panicking = std::thread::panicking();
        for n in &mut self.nodes {
            if panicking {
                n.dump();
            }
            n.kill();
        }
    }
}

// === impl NatsConn ===

/// A message delivered to a subscription (`MSG` or `HMSG`).
#[derive(Debug)]
pub struct Msg {
    pub subject: String,
    pub sid: u64,
    pub reply: Option<String>,
    /// The raw header block (`NATS/1.0 ...\r\nKey: value\r\n...`), for `HMSG`.
    pub headers: Option<String>,
    pub payload: Vec<u8>,
}

impl Msg {
    /// The status code of a header-only status message (`NATS/1.0 503`:
    /// no responders), if it is one.
    pub fn status(&self) -> Option<u16> {
        let first = self.headers.as_deref()?.lines().next()?;
        first.strip_prefix("NATS/1.0 ")?.get(..3)?.parse().ok()
    }

    /// The payload as UTF-8 (lossy).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.payload).into_owned()
    }
}

/// A raw NATS protocol connection: synchronous, one subscriber at a time,
/// answers the server's `PING`s while it reads.
pub struct NatsConn {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    next_sid: u64,
    /// Unique per connection, so replies never cross between connections.
    inbox: String,
    next_reply: u64,
}

impl NatsConn {
    /// Connects, reads `INFO`, sends `CONNECT` (headers and no-responders
    /// on, so a request to nobody fails at once) and round-trips a `PING`.
    pub fn connect(addr: SocketAddr) -> Result<NatsConn, String> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))
            .map_err(|e| format!("connect {addr}: {e}"))?;
        stream
            .set_write_timeout(Some(DEADLINE))
            .map_err(|e| e.to_string())?;
        let _ = stream.set_nodelay(true);
        let nonce = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let mut c = NatsConn {
            stream,
            buf: Vec::new(),
            next_sid: 1,
            inbox: format!("_INBOX.t{}x{nonce}", std::process::id()),
            next_reply: 0,
        };
        let info = c.read_line(Duration::from_secs(5))?;
        if !info.starts_with("INFO ") {
            return Err(format!("expected INFO from {addr}, got {info:?}"));
        }
        c.write(
            b"CONNECT {\"verbose\":false,\"pedantic\":false,\"headers\":true,\
              \"no_responders\":true,\"name\":\"loghogd-test\",\"lang\":\"rust-raw\",\
              \"version\":\"0\",\"protocol\":1}\r\n",
        )?;
        c.flush(Duration::from_secs(5))?;
        Ok(c)
    }

    fn write(&mut self, bytes: &[u8]) -> Result<(), String> {
        self.stream
            .write_all(bytes)
            .map_err(|e| format!("write to nats: {e}"))
    }

    /// `PING`, then reads until the `PONG`: everything sent before was
    /// processed by the server (a subscription is in place).
    pub fn flush(&mut self, timeout: Duration) -> Result<(), String> {
        self.write(b"PING\r\n")?;
        let end = Instant::now() + timeout;
        loop {
            let line = self.read_line(end.saturating_duration_since(Instant::now()))?;
            match line.as_str() {
                "PONG" => return Ok(()),
                "PING" => self.write(b"PONG\r\n")?,
                l if l.starts_with("-ERR") => return Err(format!("nats: {l}")),
                // +OK, INFO updates (cluster topology): nothing to do.
                _ => {}
            }
        }
    }

    /// Reads more bytes into the buffer, waiting at most `timeout`.
    fn fill(&mut self, timeout: Duration) -> Result<(), String> {
        if timeout.is_zero() {
            return Err("timed out waiting for nats".to_string());
        }
        self.stream
            .set_read_timeout(Some(timeout))
            .map_err(|e| e.to_string())?;
        let mut chunk = [0u8; 64 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err("nats closed the connection".to_string()),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if e.kind() == std::io::ErrorKind::WouldBlock
                    || e.kind() == std::io::ErrorKind::TimedOut =>
            {
                Err("timed out waiting for nats".to_string())
            }
            Err(e) => Err(format!("read from nats: {e}")),
        }
    }

    /// One control line (without CRLF).
    fn read_line(&mut self, timeout: Duration) -> Result<String, String> {
        let end = Instant::now() + timeout;
        loop {
            if let Some(at) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line = String::from_utf8_lossy(&self.buf[..at]).into_owned();
                self.buf.drain(..at + 2);
                return Ok(line);
            }
            self.fill(end.saturating_duration_since(Instant::now()))?;
        }
    }

    /// Exactly `n` bytes plus the CRLF after them.
    fn read_payload(&mut self, n: usize, timeout: Duration) -> Result<Vec<u8>, String> {
        let end = Instant::now() + timeout;
        while self.buf.len() < n + 2 {
            self.fill(end.saturating_duration_since(Instant::now()))?;
        }
        let out = self.buf[..n].to_vec();
        self.buf.drain(..n + 2);
        Ok(out)
    }

    /// Subscribes to `subject`; returns the subscription id.
    pub fn sub(&mut self, subject: &str) -> Result<u64, String> {
        let sid = self.next_sid;
        self.next_sid += 1;
        self.write(format!("SUB {subject} {sid}\r\n").as_bytes())?;
        Ok(sid)
    }

    /// Unsubscribes `sid`.
    pub fn unsub(&mut self, sid: u64) -> Result<(), String> {
        self.write(format!("UNSUB {sid}\r\n").as_bytes())
    }

    /// `PUB` (no headers) or `HPUB` (with `headers`), with an optional reply subject.
    pub fn publish(
        &mut self,
        subject: &str,
        reply: Option<&str>,
        headers: &[(&str, &str)],
        payload: &[u8],
    ) -> Result<(), String> {
        let reply = reply.map(|r| format!(" {r}")).unwrap_or_default();
        let mut out = Vec::with_capacity(payload.len() + 128);
        if headers.is_empty() {
            out.extend_from_slice(format!("PUB {subject}{reply} {}\r\n", payload.len()).as_bytes());
        } else {
            let mut h = String::from("NATS/1.0\r\n");
            for (k, v) in headers {
                h.push_str(&format!("{k}: {v}\r\n"));
            }
            h.push_str("\r\n");
            out.extend_from_slice(
                format!(
                    "HPUB {subject}{reply} {} {}\r\n",
                    h.len(),
                    h.len() + payload.len()
                )
                .as_bytes(),
            );
            out.extend_from_slice(h.as_bytes());
        }
        out.extend_from_slice(payload);
        out.extend_from_slice(b"\r\n");
        self.write(&out)
    }

    /// The next message for any subscription, within `timeout`.
    pub fn next_msg(&mut self, timeout: Duration) -> Result<Msg, String> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let line = self.read_line(left)?;
            let mut f = line.split(' ');
            match f.next().unwrap_or("") {
                "PING" => self.write(b"PONG\r\n")?,
                "MSG" => {
                    let f: Vec<&str> = f.collect();
                    let (subject, sid, reply, n) = match f.as_slice() {
                        [s, sid, n] => (*s, *sid, None, *n),
                        [s, sid, r, n] => (*s, *sid, Some(*r), *n),
                        _ => return Err(format!("bad MSG line {line:?}")),
                    };
                    let n: usize = n.parse().map_err(|_| format!("bad MSG line {line:?}"))?;
                    let payload = self.read_payload(n, left)?;
                    return Ok(Msg {
                        subject: subject.to_string(),
                        sid: sid.parse().unwrap_or(0),
                        reply: reply.map(str::to_string),
                        headers: None,
                        payload,
                    });
                }
                "HMSG" => {
                    let f: Vec<&str> = f.collect();
                    let (subject, sid, reply, hn, tn) = match f.as_slice() {
                        [s, sid, h, t] => (*s, *sid, None, *h, *t),
                        [s, sid, r, h, t] => (*s, *sid, Some(*r), *h, *t),
                        _ => return Err(format!("bad HMSG line {line:?}")),
                    };
                    let bad = || format!("bad HMSG line {line:?}");
                    let hn: usize = hn.parse().map_err(|_| bad())?;
                    let tn: usize = tn.parse().map_err(|_| bad())?;
                    if hn > tn {
                        return Err(bad());
                    }
                    let all = self.read_payload(tn, left)?;
                    return Ok(Msg {
                        subject: subject.to_string(),
                        sid: sid.parse().unwrap_or(0),
                        reply: reply.map(str::to_string),
                        headers: Some(String::from_utf8_lossy(&all[..hn]).into_owned()),
                        payload: all[hn..].to_vec(),
                    });
                }
                "-ERR" => return Err(format!("nats: {line}")),
                _ => {} // +OK, PONG, INFO
            }
        }
    }

    /// A request: subscribes a fresh inbox, publishes with it as the reply
    /// subject, returns the first answer (an error for "no responders").
    pub fn request(
        &mut self,
        subject: &str,
        headers: &[(&str, &str)],
        payload: &[u8],
        timeout: Duration,
    ) -> Result<Msg, String> {
        self.next_reply += 1;
        let inbox = format!("{}.{}", self.inbox, self.next_reply);
        let sid = self.sub(&inbox)?;
        self.publish(subject, Some(&inbox), headers, payload)?;
        let end = Instant::now() + timeout;
        let res = loop {
            let m = match self.next_msg(end.saturating_duration_since(Instant::now())) {
                Ok(m) => m,
                Err(e) => break Err(format!("{subject}: {e}")),
            };
            // A late answer to an earlier, timed-out request: not ours.
            if m.sid != sid {
                continue;
            }
            if m.status() == Some(503) {
                break Err(format!("{subject}: no responders"));
            }
            break Ok(m);
        };
        let _ = self.unsub(sid);
        res
    }

    /// A JetStream API call: `body` (JSON, or empty) to `subject`; the reply
    /// parsed, and an `error` member turned into `Err`.
    pub fn js(&mut self, subject: &str, body: &str) -> Result<serde_json::Value, String> {
        self.js_within(subject, body, Duration::from_secs(5))
    }

    /// As [`NatsConn::js`], waiting at most `timeout` for the reply (short
    /// while a cluster elects leaders: a request nobody took is not retried
    /// by the server, so waiting long on it only delays the next try).
    pub fn js_within(
        &mut self,
        subject: &str,
        body: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, String> {
        let m = self.request(subject, &[], body.as_bytes(), timeout)?;
        let v: serde_json::Value = serde_json::from_slice(&m.payload)
            .map_err(|e| format!("{subject}: reply is not JSON ({e}): {}", m.text()))?;
        if let Some(err) = v.get("error") {
            return Err(format!("{subject}: {err}"));
        }
        Ok(v)
    }

    /// A JetStream publish (a request to the stream's subject): waits for the
    /// stream's `PubAck` and returns it (`{"stream":..,"seq":..}`).
    pub fn js_publish(
        &mut self,
        subject: &str,
        msg_id: Option<&str>,
        payload: &[u8],
    ) -> Result<serde_json::Value, String> {
        let headers: Vec<(&str, &str)> = msg_id.map(|id| ("Nats-Msg-Id", id)).into_iter().collect();
        let m = self.request(subject, &headers, payload, Duration::from_secs(5))?;
        let v: serde_json::Value = serde_json::from_slice(&m.payload)
            .map_err(|e| format!("publish {subject}: ack is not JSON ({e}): {}", m.text()))?;
        if let Some(err) = v.get("error") {
            return Err(format!("publish {subject}: {err}"));
        }
        Ok(v)
    }

    /// `$JS.API.STREAM.INFO.<stream>`.
    pub fn stream_info(&mut self, stream: &str) -> Result<serde_json::Value, String> {
        self.js(&format!("$JS.API.STREAM.INFO.{stream}"), "")
    }
}

// === the harness's own tests ===

/// A single server: a PUB/SUB round trip over the raw protocol; a
/// JetStream stream that keeps a message; stopped, it refuses connections;
/// restarted on the same port, the stream and its message are still there.
#[test]
fn nats_server_round_trips_and_restarts_on_its_port_with_its_store() {
    let mut s = NatsServer::start();
    let url = s.url();
    let mut c = s.conn();
    let sid = c.sub("harness.ping").unwrap();
    c.flush(DEADLINE).unwrap();
    c.publish("harness.ping", None, &[], b"hello nats").unwrap();
    let m = c.next_msg(DEADLINE).unwrap();
    assert_eq!((m.subject.as_str(), m.sid), ("harness.ping", sid));
    assert_eq!(m.payload, b"hello nats");
    // With headers too (HPUB → HMSG), as the poison test publishes.
    c.publish(
        "harness.ping",
        None,
        &[("Nats-Msg-Id", "x.0.1")],
        b"with id",
    )
    .unwrap();
    let m = c.next_msg(DEADLINE).unwrap();
    assert_eq!(m.payload, b"with id");
    assert!(
        m.headers
            .as_deref()
            .unwrap_or("")
            .contains("Nats-Msg-Id: x.0.1"),
        "{m:?}"
    );

    let created = c
        .js(
            "$JS.API.STREAM.CREATE.KEEP",
            r#"{"name":"KEEP","subjects":["keep.>"],"storage":"file","num_replicas":1}"#,
        )
        .unwrap();
    assert_eq!(created["config"]["name"], "KEEP", "{created}");
    let ack = c.js_publish("keep.a", Some("m1"), b"kept").unwrap();
    assert_eq!(
        (ack["stream"].as_str(), ack["seq"].as_u64()),
        (Some("KEEP"), Some(1))
    );
    // The duplicate window drops a re-publish with the same id.
    let dup = c.js_publish("keep.a", Some("m1"), b"kept").unwrap();
    assert_eq!(dup["duplicate"], true, "{dup}");
    drop(c);

    s.stop();
    assert!(!s.running());
    assert!(
        TcpStream::connect_timeout(&s.addr(), Duration::from_secs(2)).is_err(),
        "a stopped server still accepts connections on {url}"
    );
    s.restart();
    assert_eq!(s.url(), url, "restart keeps the port");
    let info = s.conn().stream_info("KEEP").unwrap();
    assert_eq!(info["state"]["messages"], 1, "the store survived: {info}");
}

/// Three nodes form a JetStream cluster; a stream with replicas = 3 is
/// created; with its leader SIGKILLed, a surviving node answers
/// `STREAM.INFO` without error within 10 s, keeps the message, and takes a
/// new publish.
#[test]
fn nats_cluster_of_three_keeps_an_r3_stream_when_its_leader_dies() {
    let mut cl = NatsCluster::start(3);
    assert_eq!(cl.len(), 3);
    for i in 0..3 {
        assert!(cl.running(i));
        let info = cl.conn(i).js("$JS.API.INFO", "").unwrap();
        assert!(info.get("memory").is_some(), "node{}: {info}", i + 1);
    }
    let mut c = cl.conn(0);
    // The meta leader may still settle: retry creation briefly.
    let start = Instant::now();
    let created = loop {
        match c.js(
            "$JS.API.STREAM.CREATE.R3",
            r#"{"name":"R3","subjects":["r3.>"],"storage":"file","num_replicas":3}"#,
        ) {
            Ok(v) => break v,
            Err(e) if start.elapsed() < DEADLINE => {
                eprintln!("stream create: {e}");
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => panic!("{e}"),
        }
    };
    assert_eq!(created["config"]["num_replicas"], 3, "{created}");
    let ack = c.js_publish("r3.a", Some("one"), b"replicated").unwrap();
    assert_eq!(ack["seq"], 1, "{ack}");
    // Wait until both followers are current, so the kill tests failover.
    let start = Instant::now();
    let leader = loop {
        let info = c.stream_info("R3").unwrap();
        let replicas = info["cluster"]["replicas"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let current = replicas.iter().filter(|r| r["current"] == true).count();
        if let (Some(leader), 2) = (info["cluster"]["leader"].as_str(), current) {
            break leader.to_string();
        }
        assert!(start.elapsed() < DEADLINE, "replicas never current: {info}");
        std::thread::sleep(Duration::from_millis(100));
    };
    drop(c);
    let dead = cl
        .index_of(&leader)
        .unwrap_or_else(|| panic!("leader {leader:?}"));
    cl.kill(dead);
    assert!(!cl.running(dead));
    let survivor = (dead + 1) % 3;
    let mut c = cl.conn(survivor);
    let start = Instant::now();
    let info = loop {
        match c.js_within("$JS.API.STREAM.INFO.R3", "", Duration::from_secs(1)) {
            Ok(v) if v["cluster"]["leader"].as_str().is_some_and(|l| l != leader) => break v,
            Ok(v) => eprintln!("stream info (old leader still named): {}", v["cluster"]),
            Err(e) => eprintln!("stream info: {e}"),
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the R3 stream did not get a new leader within 10 s of killing {leader}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(info["state"]["messages"], 1, "{info}");
    let ack = c
        .js_publish("r3.a", Some("two"), b"after the kill")
        .unwrap();
    assert_eq!(ack["seq"], 2, "{ack}");
}
