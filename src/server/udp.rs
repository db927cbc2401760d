//! UDP receive loop: one datagram is exactly one frame. Datagrams that are
//! not (short, long, bad) are dropped and counted; under overload a full
//! writer queue drops and counts too, since UDP has no way to slow a sender.

use std::io;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::processor::{Pipeline, Processor, Transport};
use crate::protocol::{Header, HEADER_LEN};

/// Datagrams taken per wake-up before the batches are handed on.
const MAX_DATAGRAMS_PER_CHUNK: usize = 256;

/// Receives until `token` is cancelled, then takes what is already queued
/// in the socket and stops.
pub async fn recv_loop(sock: UdpSocket, pipeline: Arc<Pipeline>, token: CancellationToken) {
    let local_ip = sock
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(std::net::Ipv4Addr::UNSPECIFIED.into());
    let mut proc = Processor::new(pipeline.clone(), local_ip, Transport::Udp);
    // The largest UDP payload is 65,507 bytes; one more byte tells a
    // datagram over that from one that exactly fills the buffer.
    let mut buf = vec![0u8; 65_536];
    loop {
        let first = tokio::select! {
            r = sock.recv_from(&mut buf) => r,
            _ = token.cancelled() => break,
        };
        proc.begin_chunk();
        handle(&mut proc, &pipeline, first, &buf);
        for _ in 1..MAX_DATAGRAMS_PER_CHUNK {
            match sock.try_recv_from(&mut buf) {
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                r => handle(&mut proc, &pipeline, r, &buf),
            }
        }
        proc.try_flush().await;
        // The writer this just woke waits in this worker's run queue; a
        // socket that always has data would otherwise keep it from running
        // until the queue is full and batches are dropped.
        tokio::task::yield_now().await;
    }
    // Shutdown: what the kernel already holds was sent to us; take it.
    proc.begin_chunk();
    loop {
        match sock.try_recv_from(&mut buf) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            r => handle(&mut proc, &pipeline, r, &buf),
        }
    }
    proc.flush().await;
}

fn handle(
    proc: &mut Processor,
    pipeline: &Pipeline,
    r: io::Result<(usize, std::net::SocketAddr)>,
    buf: &[u8],
) {
    let (n, peer) = match r {
        Ok(x) => x,
        Err(err) => {
            // ICMP errors and the like surface here; they are not fatal.
            if pipeline.limiter.check().is_some() {
                warn!(cause = %err, "udp receive failed");
            }
            return;
        }
    };
    proc.set_peer(peer.ip());
    let dgram = &buf[..n];
    match Header::check(dgram, pipeline.max_msg_size) {
        Ok(h) if h.frame_len() == n => proc.process(h, &dgram[HEADER_LEN..]),
        other => proc.reject_datagram(n, other.err()),
    }
}
