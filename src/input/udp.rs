//! UDP receive loop: one datagram is exactly one LogHog frame. Datagrams
//! that are not (short, long, bad) are dropped and counted; under overload a
//! full output queue drops and counts too, since UDP has no way to slow a
//! sender down.

use std::io;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::loghog::LoghogDecoder;
use super::InputCtx;
use crate::record::Transport;
use crate::router::Router;

/// Datagrams taken per wake-up before the batches are handed on.
const MAX_DATAGRAMS_PER_CHUNK: usize = 256;

/// Receives until `token` is cancelled, then takes what is already queued
/// in the socket and stops.
pub(crate) async fn recv_loop(sock: UdpSocket, ctx: Arc<InputCtx>, token: CancellationToken) {
    let local_ip = sock
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let mut reader = Reader {
        router: Router::new(ctx.router.clone(), local_ip, Transport::Udp),
        decoder: LoghogDecoder::new(ctx.max_msg_size),
        ctx,
    };
    // The largest UDP payload is 65,507 bytes; one more byte tells a
    // datagram over that from one that exactly fills the buffer.
    let mut buf = vec![0u8; 65_536];
    loop {
        let first = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = token.cancelled() => break,
        };
        reader.router.begin_chunk();
        reader.handle(first, &buf);
        for _ in 1..MAX_DATAGRAMS_PER_CHUNK {
            match sock.try_recv_from(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                r => reader.handle(r, &buf),
            }
        }
        reader.router.try_flush().await;
        // The writer this just woke waits in this worker's run queue; a
        // socket that always has data would otherwise keep it from running
        // until the queue is full and batches are dropped.
        tokio::task::yield_now().await;
    }
    // Shutdown: what the kernel already holds was sent to us; take it.
    reader.router.begin_chunk();
    loop {
        match sock.try_recv_from(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            r => reader.handle(r, &buf),
        }
    }
    reader.router.flush().await;
}

/// One UDP socket's reader state.
struct Reader {
    router: Router,
    decoder: LoghogDecoder,
    ctx: Arc<InputCtx>,
}

impl Reader {
    fn handle(&mut self, r: io::Result<(usize, std::net::SocketAddr)>, buf: &[u8]) {
        let (n, peer) = match r {
            Ok(x) => x,
            Err(err) => {
                // ICMP errors and the like surface here; they are not fatal.
                if let Some(suppressed) = self.ctx.router.limiter.check() {
                    warn!(cause = %err, suppressed, "udp receive failed");
                }
                return;
            }
        };
        self.router.set_peer(peer.ip());
        self.decoder.decode_datagram(&buf[..n], &mut self.router);
    }
}
