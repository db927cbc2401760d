//! The background thread: owns the connection, takes everything queued in
//! one swap, writes it in as few writes as the socket allows, and on any
//! failure puts back what was not written, reconnects with exponential
//! backoff (100 ms doubling to 30 s, with jitter) and tries again.
//!
//! It never logs: a `log`/`tracing` integration whose connection fails
//! must not queue that failure to itself. Errors are kept in the shared
//! state (`Client::last_error`), and anything logged on this thread (rustls
//! logs through `log`) is ignored by [`Logger`](crate::Logger) and
//! [`Layer`](crate::Layer) because [`in_worker`] says so.

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs, UdpSocket};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::queue::{Batch, Shared};
use crate::Error;

thread_local! {
    /// Set on the worker thread only.
    static IN_WORKER: Cell<bool> = const { Cell::new(false) };
}

/// True on a client's worker thread, where nothing may be logged through a
/// client (it would feed its own queue).
#[cfg_attr(not(any(feature = "log", feature = "tracing")), allow(dead_code))]
pub(crate) fn in_worker() -> bool {
    IN_WORKER.with(Cell::get)
}

/// First reconnect delay.
const BACKOFF_START: Duration = Duration::from_millis(100);
/// Longest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// TLS plaintext handed to rustls per flush: a frame counts as written only
/// once the records holding it are on the socket.
#[cfg(feature = "tls")]
const TLS_CHUNK: usize = 64 * 1024;

/// How the worker reaches the daemon.
#[derive(Clone)]
pub(crate) enum Transport {
    Tcp,
    Udp,
    #[cfg(feature = "tls")]
    Tls {
        config: Arc<rustls::ClientConfig>,
        server_name: rustls::pki_types::ServerName<'static>,
    },
}

/// Everything the worker needs besides the queue.
pub(crate) struct Settings {
    /// `host:port`, resolved on every connection attempt.
    pub(crate) address: String,
    pub(crate) transport: Transport,
    pub(crate) connect_timeout: Duration,
    pub(crate) write_timeout: Duration,
    /// Drop everything queued after this many failed attempts in a row.
    pub(crate) give_up_after: Option<u32>,
}

/// One established connection.
enum Conn {
    Tcp(TcpStream),
    Udp(UdpSocket),
    #[cfg(feature = "tls")]
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

/// The worker thread's state.
pub(crate) struct Worker {
    shared: Arc<Shared>,
    settings: Settings,
    /// A second handle on the TCP socket, so the last `Client` handle can
    /// shut it down and unblock a write stalled on a daemon that stopped
    /// reading.
    pub(crate) socket: Arc<std::sync::Mutex<Option<TcpStream>>>,
    /// The spare buffers swapped with the queue's.
    batch: Batch,
    /// xorshift state for the backoff jitter.
    rng: u64,
}

// === impl Worker ===

impl Worker {
    pub(crate) fn new(shared: Arc<Shared>, settings: Settings) -> Worker {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Worker {
            shared,
            settings,
            socket: Arc::new(std::sync::Mutex::new(None)),
            batch: Batch::default(),
            rng: seed | 1,
        }
    }

    /// The thread's body; returns when the last handle asks it to stop.
    pub(crate) fn run(mut self) {
        IN_WORKER.with(|w| w.set(true));
        let mut conn: Option<(Conn, SocketAddr)> = None;
        let mut backoff = Duration::ZERO;
        let mut failures = 0u32;
        // Whether the current connection has written a batch: a connection
        // that fails after working is re-made at once, one that fails at
        // once goes through the backoff.
        let mut proven = false;
        while self.next_batch() {
            let failed = match &mut conn {
                Some((c, addr)) => match write(c, *addr, &self.batch) {
                    Ok(()) => {
                        let len = self.batch.data().len();
                        self.shared.settle(&mut self.batch, len);
                        backoff = Duration::ZERO;
                        failures = 0;
                        proven = true;
                        continue;
                    }
                    Err((err, written)) => {
                        self.shared.settle(&mut self.batch, written);
                        self.set_socket(None);
                        conn = None;
                        let quick = std::mem::take(&mut proven);
                        Some((err, quick))
                    }
                },
                None => {
                    self.shared.settle(&mut self.batch, 0);
                    match connect(&self.settings) {
                        Ok((c, addr)) => {
                            if let Conn::Tcp(s) = &c {
                                self.set_socket(s.try_clone().ok());
                            }
                            #[cfg(feature = "tls")]
                            if let Conn::Tls(s) = &c {
                                self.set_socket(s.sock.try_clone().ok());
                            }
                            conn = Some((c, addr));
                            None
                        }
                        Err(err) => Some((err, false)),
                    }
                }
            };
            if let Some((err, quick)) = failed {
                failures += 1;
                let give_up = self.settings.give_up_after.is_some_and(|n| failures >= n);
                {
                    let mut st = self.shared.lock();
                    st.last_error = Some(err);
                    if give_up {
                        self.shared.abandon(&mut st);
                    }
                }
                if give_up {
                    failures = 0;
                }
                if !quick {
                    backoff = if backoff.is_zero() {
                        BACKOFF_START
                    } else {
                        (backoff * 2).min(BACKOFF_MAX)
                    };
                    let jittered = backoff.mul_f64(0.5 + 0.5 * self.uniform());
                    if !self.pause(jittered) {
                        break;
                    }
                }
            }
        }
        self.set_socket(None);
    }

    /// Waits for frames and takes them all; false when told to stop.
    fn next_batch(&mut self) -> bool {
        let mut st = self.shared.lock();
        loop {
            if st.stop {
                return false;
            }
            if !st.frames.is_empty() {
                self.shared.take(&mut st, &mut self.batch);
                return true;
            }
            st.worker_idle = true;
            st = self.shared.wake.wait(st).unwrap_or_else(|e| e.into_inner());
            st.worker_idle = false;
        }
    }

    /// Sleeps for the backoff, unless told to stop (then false).
    fn pause(&self, dur: Duration) -> bool {
        let deadline = Instant::now() + dur;
        let mut st = self.shared.lock();
        loop {
            if st.stop {
                return false;
            }
            let now = Instant::now();
            if now >= deadline {
                return true;
            }
            st = self
                .shared
                .wake
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn set_socket(&self, s: Option<TcpStream>) {
        *self.socket.lock().unwrap_or_else(|e| e.into_inner()) = s;
    }

    /// A number in [0, 1).
    fn uniform(&mut self) -> f64 {
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        (self.rng >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Resolves the address and tries every resulting address in turn.
fn connect(settings: &Settings) -> Result<(Conn, SocketAddr), Error> {
    let addrs: Vec<SocketAddr> = settings
        .address
        .to_socket_addrs()
        .map_err(|e| Error::Resolve {
            address: settings.address.clone(),
            source: Arc::new(e),
        })?
        .collect();
    let mut last = Error::Resolve {
        address: settings.address.clone(),
        source: Arc::new(io::Error::new(
            io::ErrorKind::NotFound,
            "the name has no addresses",
        )),
    };
    for addr in addrs {
        match connect_one(settings, addr) {
            Ok(c) => return Ok((c, addr)),
            Err(e) => last = e,
        }
    }
    Err(last)
}

fn connect_one(settings: &Settings, addr: SocketAddr) -> Result<Conn, Error> {
    let connect_err = |e: io::Error| Error::Connect {
        address: addr,
        source: Arc::new(e),
    };
    if let Transport::Udp = settings.transport {
        let local: SocketAddr = if addr.is_ipv4() {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let sock = UdpSocket::bind(local).map_err(connect_err)?;
        sock.connect(addr).map_err(connect_err)?;
        return Ok(Conn::Udp(sock));
    }
    let start = Instant::now();
    let sock = TcpStream::connect_timeout(&addr, settings.connect_timeout).map_err(connect_err)?;
    // Frames are batched here; Nagle would only add latency.
    let _ = sock.set_nodelay(true);
    sock.set_write_timeout(Some(settings.write_timeout))
        .map_err(connect_err)?;
    match &settings.transport {
        #[cfg(feature = "tls")]
        Transport::Tls {
            config,
            server_name,
        } => handshake(sock, addr, config, server_name, start, settings).map(Conn::Tls),
        _ => {
            let _ = start;
            Ok(Conn::Tcp(sock))
        }
    }
}

/// The TLS handshake, then (TLS 1.3) one round trip's wait for the daemon's
/// verdict on our certificate: a TLS 1.3 client finishes its handshake
/// before the server has checked the client certificate, and frames written
/// before a refusal would be lost without an error.
#[cfg(feature = "tls")]
fn handshake(
    mut sock: TcpStream,
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
    server_name: &rustls::pki_types::ServerName<'static>,
    start: Instant,
    settings: &Settings,
) -> Result<Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>, Error> {
    let tls_err = |reason: String| Error::Tls {
        address: addr,
        reason,
    };
    let mut conn = rustls::ClientConnection::new(config.clone(), server_name.clone())
        .map_err(|e| tls_err(e.to_string()))?;
    sock.set_read_timeout(Some(settings.connect_timeout))
        .map_err(|e| tls_err(e.to_string()))?;
    while conn.is_handshaking() {
        conn.complete_io(&mut sock)
            .map_err(|e| tls_err(e.to_string()))?;
    }
    if conn.protocol_version() == Some(rustls::ProtocolVersion::TLSv1_3) {
        let window = start.elapsed() * 2 + Duration::from_millis(50);
        sock.set_read_timeout(Some(window))
            .map_err(|e| tls_err(e.to_string()))?;
        match conn.read_tls(&mut sock) {
            Ok(0) => {
                return Err(tls_err(
                    "the daemon closed the connection after the handshake (is our certificate signed by its CA?)".into(),
                ))
            }
            Ok(_) => match conn.process_new_packets() {
                Err(e) => return Err(tls_err(format!("the daemon refused us: {e}"))),
                Ok(st) if st.peer_has_closed() => {
                    return Err(tls_err("the daemon closed the connection".into()))
                }
                Ok(_) => {}
            },
            Err(e) if matches!(e.kind(), io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut) => {}
            Err(e) => return Err(tls_err(e.to_string())),
        }
    }
    sock.set_read_timeout(None)
        .map_err(|e| tls_err(e.to_string()))?;
    Ok(Box::new(rustls::StreamOwned::new(conn, sock)))
}

/// Writes the whole batch. On failure: the error and how many bytes are
/// known to be on the socket.
fn write(conn: &mut Conn, addr: SocketAddr, batch: &Batch) -> Result<(), (Error, usize)> {
    let write_err = |e: io::Error| Error::Write {
        address: addr,
        source: Arc::new(e),
    };
    let data = batch.data();
    match conn {
        Conn::Tcp(s) => {
            if peer_closed(s) {
                return Err((closed(addr), 0));
            }
            let mut off = 0;
            while off < data.len() {
                match s.write(&data[off..]) {
                    Ok(0) => return Err((write_err(io::ErrorKind::WriteZero.into()), off)),
                    Ok(n) => off += n,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err((write_err(e), off)),
                }
            }
            Ok(())
        }
        Conn::Udp(s) => {
            let mut off = 0;
            for m in &batch.frames {
                let frame = &data[off..off + m.len as usize];
                if let Err(e) = s.send(frame) {
                    return Err((write_err(e), off));
                }
                off += m.len as usize;
            }
            Ok(())
        }
        #[cfg(feature = "tls")]
        Conn::Tls(s) => {
            if tls_peer_closed(s) {
                return Err((closed(addr), 0));
            }
            let mut off = 0;
            for chunk in data.chunks(TLS_CHUNK) {
                if let Err(e) = s.write_all(chunk).and_then(|()| s.flush()) {
                    return Err((write_err(e), off));
                }
                off += chunk.len();
            }
            Ok(())
        }
    }
}

fn closed(addr: SocketAddr) -> Error {
    Error::Write {
        address: addr,
        source: Arc::new(io::Error::new(
            io::ErrorKind::ConnectionReset,
            "the daemon closed the connection",
        )),
    }
}

/// Whether the daemon has closed `s`. It never sends anything, so anything
/// readable is the end of the stream (or a reset). Checked before each
/// batch so that a batch is not written into a connection already closed.
fn peer_closed(s: &mut TcpStream) -> bool {
    if s.set_nonblocking(true).is_err() {
        return true;
    }
    let mut buf = [0u8; 64];
    let gone = !matches!(s.read(&mut buf), Err(e) if e.kind() == io::ErrorKind::WouldBlock);
    gone || s.set_nonblocking(false).is_err()
}

/// As [`peer_closed`], through rustls: the daemon sends nothing after the
/// handshake but session tickets, an alert or `close_notify`.
#[cfg(feature = "tls")]
fn tls_peer_closed(s: &mut rustls::StreamOwned<rustls::ClientConnection, TcpStream>) -> bool {
    if s.sock.set_nonblocking(true).is_err() {
        return true;
    }
    let gone = loop {
        match s.conn.read_tls(&mut s.sock) {
            Ok(0) => break true,
            Ok(_) => match s.conn.process_new_packets() {
                Ok(st) if st.peer_has_closed() => break true,
                Ok(_) => {}
                Err(_) => break true,
            },
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    gone || s.sock.set_nonblocking(false).is_err()
}
