//! Syslog datagrams (RFC 5426): one message per datagram, taken in batches
//! with `recvmmsg(2)` (up to [`BATCH`] datagrams per system call), so a
//! burst costs few wake-ups and the kernel's buffer drains fast. Like the
//! LogHog UDP loop, a full output queue drops and counts (UDP cannot slow
//! its senders down).

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;
use std::sync::Arc;

use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::SyslogDecoder;
use crate::input::InputCtx;
use crate::record::Transport;
use crate::router::Router;

/// Datagrams per `recvmmsg` call.
const BATCH: usize = 32;

/// Calls per wake-up before the batches are handed on.
const CALLS_PER_CHUNK: usize = 8;

/// One receive batch: buffers and where each datagram came from.
struct Slots {
    /// `BATCH` buffers of `size` bytes, end to end.
    data: Vec<u8>,
    /// Each buffer's size: `max_msg_size` + 1, so a longer datagram shows.
    size: usize,
    addrs: [libc::sockaddr_storage; BATCH],
    /// (length, truncated) of each datagram received by the last call.
    got: Vec<(usize, bool)>,
}

// === impl Slots ===

impl Slots {
    fn new(max_msg_size: usize) -> Slots {
        let size = max_msg_size.min(65_535) + 1;
        Slots {
            data: vec![0; size * BATCH],
            size,
            // SAFETY: sockaddr_storage is plain data; all zeroes is valid.
            addrs: unsafe { zeroed() },
            got: Vec::with_capacity(BATCH),
        }
    }

    /// One non-blocking `recvmmsg`; `WouldBlock` when nothing waits.
    fn recv(&mut self, fd: libc::c_int) -> io::Result<usize> {
        // SAFETY: zeroed iovec/mmsghdr are valid (null pointers, zero
        // lengths) and every one used is filled in below.
        let mut iov: [libc::iovec; BATCH] = unsafe { zeroed() };
        let mut hdrs: [libc::mmsghdr; BATCH] = unsafe { zeroed() };
        for (i, (chunk, addr)) in self
            .data
            .chunks_exact_mut(self.size)
            .zip(self.addrs.iter_mut())
            .enumerate()
        {
            iov[i] = libc::iovec {
                iov_base: chunk.as_mut_ptr().cast(),
                iov_len: chunk.len(),
            };
            hdrs[i].msg_hdr.msg_name = (addr as *mut libc::sockaddr_storage).cast();
            hdrs[i].msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            hdrs[i].msg_hdr.msg_iov = &mut iov[i];
            hdrs[i].msg_hdr.msg_iovlen = 1;
        }
        // SAFETY: `hdrs` points at BATCH valid headers whose buffers and
        // address slots live in `self` for the call; the call is
        // non-blocking and writes only inside them.
        let n = unsafe {
            libc::recvmmsg(
                fd,
                hdrs.as_mut_ptr(),
                BATCH as libc::c_uint,
                libc::MSG_DONTWAIT,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        let n = n as usize;
        self.got.clear();
        self.got.extend(hdrs[..n].iter().map(|h| {
            (
                h.msg_len as usize,
                h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0,
            )
        }));
        Ok(n)
    }

    fn datagram(&self, i: usize) -> &[u8] {
        let (len, _) = self.got[i];
        &self.data[i * self.size..i * self.size + len.min(self.size)]
    }

    fn peer(&self, i: usize) -> Option<IpAddr> {
        let a = &self.addrs[i];
        match i32::from(a.ss_family) {
            libc::AF_INET => {
                // SAFETY: the kernel wrote a sockaddr_in for AF_INET.
                let v4 =
                    unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in>() };
                Some(IpAddr::V4(Ipv4Addr::from(u32::from_be(v4.sin_addr.s_addr))))
            }
            libc::AF_INET6 => {
                // SAFETY: the kernel wrote a sockaddr_in6 for AF_INET6.
                let v6 =
                    unsafe { &*(a as *const libc::sockaddr_storage).cast::<libc::sockaddr_in6>() };
                Some(IpAddr::V6(v6.sin6_addr.s6_addr.into()))
            }
            _ => None,
        }
    }
}

/// Why a syslog datagram was dropped.
#[derive(Debug, thiserror::Error)]
#[error("syslog datagram over max_msg_size ({0} bytes)")]
struct TooLong(usize);

/// Receives until `token` is cancelled, then takes what is already queued.
pub(crate) async fn recv_loop(sock: UdpSocket, ctx: Arc<InputCtx>, token: CancellationToken) {
    let local_ip = sock
        .local_addr()
        .map(|a| a.ip())
        .unwrap_or(Ipv4Addr::UNSPECIFIED.into());
    let mut router = Router::new(ctx.router.clone(), local_ip, Transport::SyslogUdp);
    let mut decoder = SyslogDecoder::datagram(None);
    let mut slots = Slots::new(ctx.max_msg_size);
    let fd = sock.as_raw_fd();
    let mut stopping = false;
    let mut drained = 0;
    loop {
        if !stopping {
            tokio::select! {
                r = sock.readable() => if let Err(err) = r {
                    warn!(cause = %err, "syslog udp socket failed");
                    return;
                },
                _ = token.cancelled() => stopping = true,
            }
        }
        router.begin_chunk();
        let mut empty = false;
        for _ in 0..CALLS_PER_CHUNK {
            match sock.try_io(Interest::READABLE, || slots.recv(fd)) {
                Ok(n) => {
                    for i in 0..n {
                        handle(&slots, i, &mut router, &mut decoder, ctx.max_msg_size);
                    }
                    if n < BATCH {
                        empty = true;
                        break;
                    }
                }
                Err(e) => {
                    if let Some(all_read) = super::after_recv_error(&e, "udp", &ctx) {
                        empty = all_read;
                        break;
                    }
                }
            }
        }
        if super::end_chunk(&mut router, stopping, empty, &mut drained).await {
            return;
        }
    }
}

fn handle(
    slots: &Slots,
    i: usize,
    router: &mut Router,
    decoder: &mut SyslogDecoder,
    max_msg_size: usize,
) {
    if let Some(peer) = slots.peer(i) {
        router.set_peer(peer);
    }
    let (len, truncated) = slots.got[i];
    if truncated || len > max_msg_size {
        router.reject(&TooLong(max_msg_size));
        return;
    }
    decoder.decode_message(slots.datagram(i), None, router);
}
