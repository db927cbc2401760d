//! The timed part of a run: one OS thread per connection with a blocking
//! socket, all released together through a [`Gate`], each writing its
//! pre-encoded [`Stream`] in 256 KiB slices (or paced bursts at `--rate`).
//!
//! Connecting and the TLS handshake happen before the gate opens, so the
//! clock covers only data transfer and the close.

use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream, UdpSocket};
use std::sync::{Arc, Condvar, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context as _};
use rustls::{ClientConfig, ClientConnection, StreamOwned};
use rustls_pki_types::ServerName;

use crate::encode::Stream;

/// Slice size for stream writes: big enough that syscall overhead vanishes,
/// small enough that the kernel takes each slice without a long stall.
const WRITE_SLICE: usize = 256 * 1024;
/// Bound on connecting and on the TLS handshake.
const SETUP_TIMEOUT: Duration = Duration::from_secs(10);
/// Bound on each read while waiting for the peer to close (`--wait-close`).
const CLOSE_TIMEOUT: Duration = Duration::from_secs(60);

/// Transport to the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Transport {
    /// Frames concatenated on a TCP stream.
    Tcp,
    /// One frame per datagram on a connected UDP socket.
    Udp,
    /// Frames concatenated on a TLS stream (client certificate required).
    Tls,
}

impl std::fmt::Display for Transport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Tls => "tls",
        })
    }
}

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct Target {
    /// Daemon address (loopback only; checked by the caller).
    pub addr: SocketAddr,
    /// Transport to use.
    pub transport: Transport,
    /// Client config and server name, for TLS only.
    pub tls: Option<(Arc<ClientConfig>, ServerName<'static>)>,
}

/// Fixed-rate sending for one connection.
#[derive(Debug, Clone, Copy)]
pub struct Pacing {
    /// Messages per second on this connection.
    pub rate: f64,
    /// Messages written per wake-up: about a millisecond's worth, so the
    /// offered load is smooth without a syscall and a sleep per message.
    pub burst: usize,
}

/// What the run measured.
#[derive(Debug)]
pub struct Report {
    /// From opening the gate to the last connection closed.
    pub elapsed: Duration,
    /// Worst delay of a burst behind its schedule, over all connections
    /// (zero when unpaced). Large values mean the generator or the daemon
    /// could not sustain `--rate`.
    pub max_lag: Duration,
    /// On-CPU time of the sender threads while sending (user + kernel),
    /// summed; `None` where /proc/thread-self/schedstat is unavailable.
    /// Unlike `elapsed` it does not depend on what else the machine runs.
    pub cpu: Option<Duration>,
}

/// Connects every stream, sends them all at once, closes them, and times it.
///
/// # Errors
/// A failed connect or handshake (before anything is sent), or the first
/// failed connection, naming how far it got.
pub fn run(
    streams: Vec<Stream>,
    target: &Target,
    pacing: Option<Pacing>,
    wait_close: bool,
) -> anyhow::Result<Report> {
    let mut conns = Vec::with_capacity(streams.len());
    for i in 0..streams.len() {
        conns.push(Conn::open(target).with_context(|| {
            format!(
                "connection {i}: connecting to {} over {}",
                target.addr, target.transport
            )
        })?);
    }

    let gate = Arc::new(Gate::default());
    let mut workers = Vec::with_capacity(conns.len());
    for (i, (conn, stream)) in conns.into_iter().zip(streams).enumerate() {
        let thread_gate = gate.clone();
        let spawned = thread::Builder::new()
            .name(format!("send-{i}"))
            .spawn(move || worker(conn, &stream, &thread_gate, pacing, wait_close));
        match spawned {
            Ok(handle) => workers.push(handle),
            Err(e) => {
                // Release the threads already parked so they exit unsent.
                gate.open(false);
                return Err(e).context("spawning a sender thread");
            }
        }
    }

    let start = Instant::now();
    gate.open(true);
    let mut max_lag = Duration::ZERO;
    let mut cpu = Some(Duration::ZERO);
    let mut first_err = None;
    for (i, handle) in workers.into_iter().enumerate() {
        let outcome = handle
            .join()
            .map_err(|_| anyhow!("connection {i}: sender thread panicked"))
            .and_then(|r| r.with_context(|| format!("connection {i}")));
        match outcome {
            Ok(done) => {
                max_lag = max_lag.max(done.max_lag);
                cpu = cpu.zip(done.cpu).map(|(a, b)| a + b);
            }
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let elapsed = start.elapsed();
    match first_err {
        Some(e) => Err(e),
        None => Ok(Report {
            elapsed,
            max_lag,
            cpu,
        }),
    }
}

/// What one sender thread measured.
struct Done {
    /// Worst pacing lag.
    max_lag: Duration,
    /// On-CPU time while sending, if measurable.
    cpu: Option<Duration>,
}

/// One connection's thread body.
fn worker(
    mut conn: Conn,
    stream: &Stream,
    gate: &Gate,
    pacing: Option<Pacing>,
    wait_close: bool,
) -> anyhow::Result<Done> {
    if !gate.wait() {
        return Ok(Done {
            max_lag: Duration::ZERO,
            cpu: None,
        });
    }
    let cpu_start = thread_cpu();
    let n = stream.len();
    let mut max_lag = Duration::ZERO;
    match pacing {
        None => conn
            .send(stream, 0, n)
            .with_context(|| format!("sending {n} messages"))?,
        Some(p) => {
            let start = Instant::now();
            let mut sent = 0;
            while sent < n {
                let elapsed = start.elapsed().as_secs_f64();
                // Message k is due at k / rate; everything due by now goes.
                let due = ((elapsed * p.rate) as usize).saturating_add(1).min(n);
                if due > sent {
                    conn.send(stream, sent, due)
                        .with_context(|| format!("sending after {sent} of {n} messages"))?;
                    sent = due;
                    let scheduled = (due - 1) as f64 / p.rate;
                    let late = start.elapsed().as_secs_f64() - scheduled;
                    max_lag = max_lag.max(Duration::from_secs_f64(late.max(0.0)));
                } else {
                    let next = (sent + p.burst).min(n) - 1;
                    let wait = next as f64 / p.rate - elapsed;
                    if wait > 0.0 {
                        thread::sleep(Duration::from_secs_f64(wait));
                    }
                }
            }
        }
    }
    conn.finish(wait_close).context("closing")?;
    let cpu = thread_cpu()
        .zip(cpu_start)
        .map(|(end, start)| end.saturating_sub(start));
    Ok(Done { max_lag, cpu })
}

/// This thread's total on-CPU time so far, from the first field of
/// `/proc/thread-self/schedstat` (nanoseconds; Linux only).
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns = stat.split_ascii_whitespace().next()?.parse::<u64>().ok()?;
    Some(Duration::from_nanos(ns))
}

/// Starting line for the sender threads.
#[derive(Debug, Default)]
struct Gate {
    /// `None` while closed; `Some(go)` once opened, `go` false meaning abort.
    state: Mutex<Option<bool>>,
    /// Wakes the parked threads when `state` is set.
    opened: Condvar,
}

// === impl Gate ===

impl Gate {
    fn open(&self, go: bool) {
        // A poisoned lock only means a thread panicked while holding it;
        // the flag inside is still meaningful.
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) = Some(go);
        self.opened.notify_all();
    }

    /// Blocks until opened; true means go.
    fn wait(&self) -> bool {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        loop {
            if let Some(go) = *state {
                return go;
            }
            state = self.opened.wait(state).unwrap_or_else(|p| p.into_inner());
        }
    }
}

/// One connected, ready-to-write socket (also used by `latency`).
pub(crate) enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
    Tls(Box<StreamOwned<ClientConnection, TcpStream>>),
}

// === impl Conn ===

impl Conn {
    pub(crate) fn open(target: &Target) -> anyhow::Result<Conn> {
        match target.transport {
            Transport::Tcp => Ok(Conn::Tcp(connect_tcp(target.addr)?)),
            Transport::Udp => {
                let local: SocketAddr = if target.addr.is_ipv4() {
                    ([127, 0, 0, 1], 0).into()
                } else {
                    (std::net::Ipv6Addr::LOCALHOST, 0).into()
                };
                let sock = UdpSocket::bind(local).context("binding a UDP socket")?;
                sock.connect(target.addr)
                    .context("connecting the UDP socket")?;
                Ok(Conn::Udp(sock))
            }
            Transport::Tls => {
                let (config, name) = target
                    .tls
                    .clone()
                    .ok_or_else(|| anyhow!("TLS transport without a TLS config"))?;
                let sock = connect_tcp(target.addr)?;
                let tls = ClientConnection::new(config, name).context("starting TLS")?;
                let mut stream = StreamOwned::new(tls, sock);
                // Handshake now, under a timeout, so the clock never sees it.
                stream.sock.set_read_timeout(Some(SETUP_TIMEOUT))?;
                stream.sock.set_write_timeout(Some(SETUP_TIMEOUT))?;
                while stream.conn.is_handshaking() {
                    stream
                        .conn
                        .complete_io(&mut stream.sock)
                        .context("TLS handshake")?;
                }
                stream.sock.set_read_timeout(None)?;
                stream.sock.set_write_timeout(None)?;
                Ok(Conn::Tls(Box::new(stream)))
            }
        }
    }

    /// Writes messages `from..to` of `stream`.
    pub(crate) fn send(&mut self, stream: &Stream, from: usize, to: usize) -> io::Result<()> {
        match self {
            Conn::Tcp(s) => write_slices(s, &stream.bytes[stream.range(from, to)]),
            Conn::Tls(s) => write_slices(s.as_mut(), &stream.bytes[stream.range(from, to)]),
            Conn::Udp(s) => {
                for i in from..to {
                    let datagram = &stream.bytes[stream.range(i, i + 1)];
                    let n = s.send(datagram)?;
                    if n != datagram.len() {
                        return Err(io::Error::other(format!(
                            "datagram {i} truncated: {n} of {} bytes sent",
                            datagram.len()
                        )));
                    }
                }
                Ok(())
            }
        }
    }

    /// Ends the stream cleanly (close_notify for TLS, then FIN), and with
    /// `wait_close` waits for the peer to close too, which tells us the
    /// daemon has read everything we sent.
    pub(crate) fn finish(self, wait_close: bool) -> io::Result<()> {
        match self {
            Conn::Udp(_) => Ok(()),
            Conn::Tcp(mut s) => {
                s.shutdown(Shutdown::Write)?;
                if wait_close {
                    drain_until_eof(&mut s)?;
                }
                Ok(())
            }
            Conn::Tls(mut s) => {
                s.conn.send_close_notify();
                s.flush()?;
                while s.conn.wants_write() {
                    s.conn.write_tls(&mut s.sock)?;
                }
                s.sock.shutdown(Shutdown::Write)?;
                if wait_close {
                    match drain_until_eof(s.as_mut()) {
                        // A server may close without its own close_notify;
                        // for our purpose that is still "it read everything".
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => {}
                        other => other?,
                    }
                }
                Ok(())
            }
        }
    }
}

fn connect_tcp(addr: SocketAddr) -> anyhow::Result<TcpStream> {
    let sock = TcpStream::connect_timeout(&addr, SETUP_TIMEOUT).context("TCP connect")?;
    // Paced bursts are small; Nagle would hold them back and skew latency.
    sock.set_nodelay(true).context("setting TCP_NODELAY")?;
    Ok(sock)
}

fn write_slices(w: &mut impl Write, bytes: &[u8]) -> io::Result<()> {
    for slice in bytes.chunks(WRITE_SLICE) {
        w.write_all(slice)?;
    }
    w.flush()
}

fn drain_until_eof<R: Read + AsSocket + ?Sized>(r: &mut R) -> io::Result<()> {
    r.set_close_timeout()?;
    let mut buf = [0u8; 4096];
    loop {
        match r.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("peer did not close within {CLOSE_TIMEOUT:?} (--wait-close)"),
                ))
            }
            Err(e) => return Err(e),
        }
    }
}

/// Lets [`drain_until_eof`] bound its reads on both plain and TLS streams.
trait AsSocket {
    fn set_close_timeout(&self) -> io::Result<()>;
}

impl AsSocket for TcpStream {
    fn set_close_timeout(&self) -> io::Result<()> {
        self.set_read_timeout(Some(CLOSE_TIMEOUT))
    }
}

impl AsSocket for StreamOwned<ClientConnection, TcpStream> {
    fn set_close_timeout(&self) -> io::Result<()> {
        self.sock.set_read_timeout(Some(CLOSE_TIMEOUT))
    }
}
