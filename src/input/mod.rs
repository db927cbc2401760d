//! Inputs: binding every configured address, and running the TCP, TLS and
//! UDP loops (LogHog, and syslog: [`syslog`]; HTTP ingest: [`http`]) until shutdown. Each reader turns what it receives into
//! [`Record`](crate::record::Record)s through a [`Framer`] (where a frame
//! ends) and a [`Decoder`] (what it says) and hands them to its router.
//!
//! Sockets are bound before anything else runs (and before privileges are
//! dropped), then passed in already bound, so tests and the daemon share
//! [`run`] unchanged.

pub(crate) mod admission;
pub(crate) mod consume;
pub(crate) mod http;
pub(crate) mod loghog;
pub(crate) mod stream;
pub(crate) mod syslog;
pub(crate) mod tcp;
pub(crate) mod tls;
pub(crate) mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::AtomicUsize;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::config::Limits;
use crate::ratelimit::RateLimit;
use crate::router::{Router, RouterCtx};

/// Splits a byte stream into frames.
///
/// `check` is the cheap first step of two (mini-redis' `Frame::check`): it
/// looks at the buffered bytes and says how long the frame at their start
/// is, `Ok(None)` while it is incomplete (not an error). An error means the
/// stream can no longer be trusted (a length over the cap): the connection
/// is closed without reading or allocating what was announced.
pub(crate) trait Framer {
    /// Why a stream was given up.
    type Error: std::fmt::Display;

    /// The length of the complete frame at the start of `buf`.
    ///
    /// # Errors
    /// The stream cannot be framed any more.
    fn check(&mut self, buf: &[u8]) -> Result<Option<usize>, Self::Error>;

    /// How many bytes the frame at the start of `buf` needs in all, as far
    /// as is known yet (sizes the next read; within the cap by `check`).
    fn need(&self, buf: &[u8]) -> usize;

    /// At the end of the stream: the length of a last frame that only the
    /// end delimits (a syslog line without its LF), `None` if what is left
    /// is a truncated frame.
    fn at_eof(&mut self, buf: &[u8]) -> Option<usize> {
        let _ = buf;
        None
    }
}

/// Turns one frame into a record and routes it, or tells the router why
/// it could not (a bad frame is dropped alone; the stream goes on).
pub(crate) trait Decoder {
    /// Decodes `frame` (exactly what [`Framer::check`] delimited).
    fn decode(&mut self, frame: &[u8], router: &mut Router);
}

/// What every input shares.
#[derive(Debug)]
pub(crate) struct InputCtx {
    /// Routers are made from this, one per reader.
    pub(crate) router: Arc<RouterCtx>,
    /// `[server] max_msg_size`.
    pub(crate) max_msg_size: usize,
    /// Connection and timing limits.
    pub(crate) limits: Limits,
    /// `max_connections` and `max_connections_per_ip`, for every TCP and
    /// TLS listener together.
    pub(crate) admission: Arc<admission::Admission>,
    /// Limits the lines about connections refused, timed out or not
    /// accepted: apart from the router's, so a connection flood cannot
    /// hide the bad frames (nor the other way round).
    pub(crate) conn_limiter: RateLimit,
    /// Stream connections being served now (sizes their read buffers).
    pub(crate) open_streams: AtomicUsize,
    /// The tick coalesced stream connections are read on.
    pub(crate) ticker: stream::Ticker,
    /// Cancelled when the stop's drain time is up: connections still
    /// draining (a peer that never stops sending) stop reading, hand on
    /// what they have read and close, so a stop under load ends in time.
    pub(crate) stop_reading: CancellationToken,
}

// === impl InputCtx ===

impl InputCtx {
    /// The inputs' shared state for `router`'s daemon under `limits`.
    pub(crate) fn new(router: Arc<RouterCtx>, max_msg_size: usize, limits: Limits) -> InputCtx {
        InputCtx {
            router,
            max_msg_size,
            admission: Arc::new(admission::Admission::new(
                limits.max_connections,
                limits.max_connections_per_ip,
            )),
            limits,
            conn_limiter: RateLimit::new(20, Duration::from_secs(10)),
            open_streams: AtomicUsize::default(),
            ticker: stream::Ticker::default(),
            stop_reading: CancellationToken::new(),
        }
    }
}

/// Kernel receive buffer asked for UDP sockets, so bursts survive while a
/// reader is busy (the kernel caps it at net.core.rmem_max).
const UDP_RCVBUF: usize = 8 << 20;

/// Every bound socket, ready to serve. Held as std sockets so binding can
/// happen before the async runtime exists (and before privileges drop).
#[derive(Debug, Default)]
pub struct Listeners {
    /// LogHog over TCP.
    pub tcp: Vec<std::net::TcpListener>,
    /// LogHog datagrams, on the same addresses as `tcp`.
    pub udp: Vec<std::net::UdpSocket>,
    /// LogHog over mutual TLS.
    pub tls: Vec<std::net::TcpListener>,
    /// The `[syslog]` listeners (see [`syslog::bind_syslog`]).
    pub syslog: syslog::SyslogListeners,
    /// The `[http]` listeners (see [`http::bind_http`]); served by
    /// `daemon::run` with the HTTP state.
    pub http: Vec<std::net::TcpListener>,
}

impl Listeners {
    /// The bound addresses: (transport, address) for each listener, for tests
    /// that bound port 0 and for the start-up log.
    pub fn addrs(&self) -> Vec<(&'static str, SocketAddr)> {
        let tcp = self.tcp.iter().filter_map(|l| l.local_addr().ok());
        let udp = self.udp.iter().filter_map(|u| u.local_addr().ok());
        let tls = self.tls.iter().filter_map(|l| l.local_addr().ok());
        let http = self.http.iter().filter_map(|l| l.local_addr().ok());
        tcp.map(|a| ("tcp", a))
            .chain(udp.map(|a| ("udp", a)))
            .chain(tls.map(|a| ("tls", a)))
            .chain(self.syslog.addrs())
            .chain(http.map(|a| ("http", a)))
            .collect()
    }
}

/// Binds plain TCP+UDP on every `plain` address (the same port for both,
/// also when port 0 asks for an ephemeral one) and TCP on every `tls` one.
///
/// # Errors
/// The first address that cannot be bound, named in the error.
pub fn bind(plain: &[SocketAddr], tls: &[SocketAddr]) -> io::Result<Listeners> {
    let mut l = Listeners::default();
    for addr in plain {
        let (t, u) = bind_pair(*addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr}: {e}")))?;
        l.tcp.push(t);
        l.udp.push(u);
    }
    for addr in tls {
        let t = bind_tcp(*addr)
            .map_err(|e| io::Error::new(e.kind(), format!("cannot listen on {addr} (tls): {e}")))?;
        l.tls.push(t);
    }
    Ok(l)
}

fn bind_pair(addr: SocketAddr) -> io::Result<(std::net::TcpListener, std::net::UdpSocket)> {
    if addr.port() != 0 {
        return Ok((bind_tcp(addr)?, bind_udp(addr)?));
    }
    // Ephemeral: take the port TCP got for UDP too; another process may hold
    // it for UDP, so retry a few times.
    let mut last = None;
    for _ in 0..20 {
        let t = bind_tcp(addr)?;
        let port = t.local_addr()?.port();
        match bind_udp(SocketAddr::new(addr.ip(), port)) {
            Ok(u) => return Ok((t, u)),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| io::Error::other("no free port")))
}

fn new_socket(addr: SocketAddr, ty: Type, proto: Protocol) -> io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), ty, Some(proto))?;
    if addr.is_ipv6() {
        // Keep [::] from also claiming IPv4, which listen_ipv4 may bind.
        s.set_only_v6(true)?;
    }
    s.set_nonblocking(true)?;
    Ok(s)
}

pub(crate) fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let s = new_socket(addr, Type::STREAM, Protocol::TCP)?;
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = new_socket(addr, Type::DGRAM, Protocol::UDP)?;
    // Best effort: a smaller buffer only means more drops under overload.
    // SO_RCVBUFFORCE passes net.core.rmem_max when the daemon may (root or
    // CAP_NET_ADMIN, before dropping privileges); otherwise SO_RCVBUF gets
    // what rmem_max allows.
    if nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBufForce, &UDP_RCVBUF)
        .is_err()
    {
        let _ = s.set_recv_buffer_size(UDP_RCVBUF);
    }
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// Spawns every listener's loop on `tracker` (call inside the runtime). The
/// loops stop accepting when `token` is cancelled; connections then drain
/// what their peers already sent and finish.
///
/// # Errors
/// A socket cannot be registered with the runtime.
pub(crate) fn run(
    listeners: Listeners,
    ctx: Arc<InputCtx>,
    tls: Option<tls::TlsSetup>,
    syslog_tls: Option<tls::TlsSetup>,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<()> {
    syslog::run(
        listeners.syslog,
        ctx.clone(),
        syslog_tls,
        token.clone(),
        tracker,
    )?;
    for l in listeners.tcp {
        let l = TcpListener::from_std(l)?;
        log_listening("tcp", &l.local_addr());
        tracker.spawn(tcp::accept_loop(
            l,
            None,
            tcp::Wire::Loghog,
            ctx.clone(),
            token.clone(),
            tracker.clone(),
        ));
    }
    for u in listeners.udp {
        let u = UdpSocket::from_std(u)?;
        log_listening("udp", &u.local_addr());
        tracker.spawn(udp::recv_loop(u, ctx.clone(), token.clone()));
    }
    if let Some(tls) = tls {
        for l in listeners.tls {
            let l = TcpListener::from_std(l)?;
            log_listening("tls", &l.local_addr());
            tracker.spawn(tcp::accept_loop(
                l,
                Some(tls.clone()),
                tcp::Wire::Loghog,
                ctx.clone(),
                token.clone(),
                tracker.clone(),
            ));
        }
    }
    Ok(())
}

fn log_listening(transport: &str, addr: &io::Result<SocketAddr>) {
    match addr {
        Ok(a) => info!("listening on {transport} {a}"),
        Err(e) => info!("listening on {transport} (address unknown: {e})"),
    }
}
