//! Listeners: binding every configured address, and running the TCP, TLS
//! and UDP loops until shutdown.
//!
//! Sockets are bound before anything else runs (and before privileges are
//! dropped), then passed in already bound, so tests and the daemon share
//! [`run`] unchanged.

pub mod connection;
pub mod tcp;
pub mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpListener, UdpSocket};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::info;

use crate::processor::Pipeline;

/// Kernel receive buffer asked for UDP sockets, so bursts survive while a
/// reader is busy (the kernel caps it at net.core.rmem_max).
const UDP_RCVBUF: usize = 8 << 20;

/// Every bound socket, ready to serve. Held as std sockets so binding can
/// happen before the async runtime exists (and before privileges drop).
#[derive(Debug, Default)]
pub struct Listeners {
    pub tcp: Vec<std::net::TcpListener>,
    pub udp: Vec<std::net::UdpSocket>,
    pub tls: Vec<std::net::TcpListener>,
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

fn bind_tcp(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
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
pub fn run(
    listeners: Listeners,
    pipeline: Arc<Pipeline>,
    tls: Option<tcp::TlsSetup>,
    token: CancellationToken,
    tracker: &TaskTracker,
) -> io::Result<()> {
    for l in listeners.tcp {
        let l = TcpListener::from_std(l)?;
        log_listening("tcp", &l.local_addr());
        tracker.spawn(tcp::accept_loop(
            l,
            None,
            pipeline.clone(),
            token.clone(),
            tracker.clone(),
        ));
    }
    for u in listeners.udp {
        let u = UdpSocket::from_std(u)?;
        log_listening("udp", &u.local_addr());
        tracker.spawn(udp::recv_loop(u, pipeline.clone(), token.clone()));
    }
    if let Some(tls) = tls {
        for l in listeners.tls {
            let l = TcpListener::from_std(l)?;
            log_listening("tls", &l.local_addr());
            tracker.spawn(tcp::accept_loop(
                l,
                Some(tls.clone()),
                pipeline.clone(),
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
