//! One stream connection (plain TCP or TLS): read into a buffer, take every
//! complete frame out of it with the connection's [`Framer`], hand each to its
//! [`Decoder`] (which routes the record), flush the batches, read on.
//!
//! The read buffer only grows to the frame being assembled, never to a
//! length a peer merely announced: a framer refuses a length over
//! `max_msg_size` before anything is allocated, and the connection closes.
//!
//! A connection that sends small bursts back to back (the load a fleet
//! sends: many clients, a few messages each every millisecond) would cost a
//! wake-up, a read, a batch and a write per burst. Such a connection is
//! *coalesced* ([`Source`]): the kernel is asked to wake the reader only once
//! a full read is waiting (`SO_RCVLOWAT`), and whatever less is there is
//! collected on a coarse tick shared by all connections. The data waits in
//! the kernel's socket buffer, never in the daemon's, so `flush_every = 1`
//! still means every line read is handed to its writer at once.

use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::{Decoder, Framer, InputCtx};
use crate::router::Router;

/// A connection's first read buffer: small, since most connections are
/// quiet and a thousand of them should not cost 64 MiB.
const READ_BUF_MIN: usize = 8 << 10;

/// A busy connection's read buffer grows up to this (fewer, larger reads)...
const READ_BUF_MAX: usize = 64 << 10;

/// ...while all connections' buffers together stay under this (or each
/// holds READ_BUF_MIN): at 64 KiB each, a thousand busy connections' read
/// buffers and the batches made from them took 290 MB; 64 took 30 MB.
const READ_BUDGET: usize = 2 << 20;

/// After shutdown is signalled, keep reading while the peer still has data
/// in flight; a connection quiet this long is done.
const DRAIN_IDLE: Duration = Duration::from_millis(250);

/// The coalescing tick: a coalesced connection's data waits in the kernel at
/// most about this long. Reads within one tick of each other put a
/// connection in coalescing mode; a tick with nothing to read takes it out
/// (a quiet connection is read as soon as a byte comes). Measured at 100k
/// msg/s over 64 connections: 2 ms cost 1.9 CPU-s per million messages
/// (3 messages per read), 5 ms 1.1-1.3 (8 per read) for a p50 latency of
/// about 3 ms.
const TICK: Duration = Duration::from_millis(5);

/// A stream whose small arrivals can be left in the kernel and collected on
/// the shared tick. Streams that cannot (TLS: its records are decrypted in
/// user space) keep the defaults and are always read on readiness.
pub(crate) trait Source: AsyncRead + Unpin {
    /// Asks the kernel to report the stream readable only once `bytes` are
    /// waiting (1: on every byte).
    ///
    /// # Errors
    /// The stream cannot (then it is never coalesced).
    fn wake_at(&self, bytes: usize) -> io::Result<()> {
        let _ = bytes;
        Err(io::ErrorKind::Unsupported.into())
    }

    /// Reads whatever is waiting now into `buf`'s spare room, whether or not
    /// the stream was reported readable. `WouldBlock` when nothing is.
    ///
    /// # Errors
    /// `WouldBlock`, or the read's error.
    fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        let _ = buf;
        Err(io::ErrorKind::Unsupported.into())
    }
}

impl Source for TcpStream {
    fn wake_at(&self, bytes: usize) -> io::Result<()> {
        let value = libc::c_int::try_from(bytes).unwrap_or(libc::c_int::MAX);
        // SAFETY: a valid socket descriptor (borrowed from `self`), and a
        // pointer to a c_int with its size, as SO_RCVLOWAT takes.
        let rc = unsafe {
            libc::setsockopt(
                self.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVLOWAT,
                (&raw const value).cast(),
                size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            Ok(())
        } else {
            Err(io::Error::last_os_error())
        }
    }

    fn read_now(&mut self, buf: &mut BytesMut) -> io::Result<usize> {
        if buf.capacity() == buf.len() {
            buf.reserve(READ_BUF_MIN);
        }
        // tokio's `try_read` would not even try: it trusts its readiness
        // flag, which SO_RCVLOWAT keeps clear while less is waiting. A
        // non-blocking recv returns what is there (below the low-water mark
        // too) or WouldBlock.
        let sock = socket2::SockRef::from(&*self);
        let n = loop {
            match sock.recv(buf.spare_capacity_mut()) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other?,
            }
        };
        // SAFETY: recv initialised the first `n` bytes of the spare room.
        unsafe { buf.set_len(buf.len() + n) };
        Ok(n)
    }
}

/// The coalescing tick shared by all of a daemon's connections: one timer
/// and one wake-up per tick for every connection waiting on it. (A timer per
/// connection, re-armed per read, made the runtime wake its parked worker
/// for nearly every re-arm: 13 eventfd writes per 100 messages.)
///
/// The timer runs only while connections wait: a tick that found no waiter
/// is the last, and the next waiter starts it again.
#[derive(Debug, Default)]
pub(crate) struct Ticker {
    tick: Arc<Notify>,
    /// Waits begun since the last tick.
    waits: Arc<AtomicUsize>,
    /// A ticking task exists.
    running: Arc<AtomicBool>,
}

// === impl Ticker ===

impl Ticker {
    /// Resolves at the next tick.
    async fn wait(&self) {
        let tick = self.tick.notified();
        tokio::pin!(tick);
        // Registered before counted: a tick that sees the count wakes us.
        tick.as_mut().enable();
        self.waits.fetch_add(1, SeqCst);
        if !self.running.swap(true, SeqCst) {
            let (notify, waits, running) =
                (self.tick.clone(), self.waits.clone(), self.running.clone());
            tokio::spawn(async move {
                let mut every = tokio::time::interval(TICK);
                every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                every.tick().await; // the first tick is immediate
                loop {
                    every.tick().await;
                    let waited = waits.swap(0, SeqCst);
                    notify.notify_waiters();
                    if waited == 0 {
                        running.store(false, SeqCst);
                        // A wait that came in just now saw `running` still
                        // set and started nothing: keep ticking for it.
                        if waits.load(SeqCst) == 0 || running.swap(true, SeqCst) {
                            return;
                        }
                    }
                }
            });
        }
        tick.await;
    }
}

/// Why a connection ended early.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ConnError {
    #[error("read failed: {0}")]
    Io(#[from] io::Error),
    #[error("{0}; closing the connection")]
    Untrusted(String),
    #[error("connection closed inside a frame ({0} bytes unread)")]
    Truncated(usize),
}

/// Serves one connection until EOF, an error, or shutdown (after draining).
///
/// # Errors
/// A read error, an oversize length field, or EOF in the middle of a frame;
/// every complete frame before it has been handed on.
pub(crate) async fn serve<S, F, D>(
    mut stream: S,
    mut framer: F,
    mut decoder: D,
    mut router: Router,
    ctx: &InputCtx,
    token: CancellationToken,
) -> Result<(), ConnError>
where
    S: Source,
    F: Framer,
    D: Decoder,
{
    let _open = OpenStream::new(&ctx.open_streams);
    let mut read_size = READ_BUF_MIN;
    let mut buf = BytesMut::with_capacity(read_size);
    let mut draining = token.is_cancelled();
    // One waiter on the token for the connection's life: a fresh
    // `cancelled()` per read was a lock and a list insert per read.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);
    // Coalescing: the low-water mark set in the kernel (0: off).
    let mut wake_at = 0;
    // The last read left the buffer full: read again without waiting.
    let mut more = false;
    let mut last_read = Instant::now();
    loop {
        let n = if draining {
            tokio::select! {
                biased;
                // The stop's drain time is up: what is read so far is
                // handed on below, the rest of the stream is not read.
                () = ctx.stop_reading.cancelled() => 0,
                r = tokio::time::timeout(DRAIN_IDLE, stream.read_buf(&mut buf)) => match r {
                    Ok(r) => r?,
                    Err(_) => 0,
                },
            }
        } else if wake_at > 0 {
            if more && token.is_cancelled() {
                draining = true;
                wake_at = stop_coalescing(&stream);
                continue;
            } else if more {
                match stream.read_now(&mut buf) {
                    Ok(n) => n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                        more = false;
                        continue;
                    }
                    Err(e) => return Err(e.into()),
                }
            } else {
                tokio::select! {
                    biased;
                    _ = &mut cancelled => {
                        draining = true;
                        wake_at = stop_coalescing(&stream);
                        continue;
                    }
                    // A full read is waiting.
                    r = stream.read_buf(&mut buf) => r?,
                    () = ctx.ticker.wait() => match stream.read_now(&mut buf) {
                        Ok(n) => n,
                        // Quiet for a whole tick: wake on every byte again.
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                            wake_at = stop_coalescing(&stream);
                            continue;
                        }
                        Err(e) => return Err(e.into()),
                    },
                }
            }
        } else {
            tokio::select! {
                biased;
                _ = &mut cancelled => {
                    draining = true;
                    continue;
                }
                r = stream.read_buf(&mut buf) => r?,
            }
        };
        // A read that filled all the room there was means more is waiting:
        // read bigger next time.
        let cap =
            (READ_BUDGET / ctx.open_streams.load(Relaxed).max(1)).clamp(READ_BUF_MIN, READ_BUF_MAX);
        let full = buf.capacity() == buf.len();
        if full && read_size < cap {
            read_size *= 2;
        }
        read_size = read_size.min(cap);
        if n == 0 {
            if let Some(len) = framer.at_eof(&buf).filter(|l| *l <= buf.len()) {
                decoder.decode(&buf[..len], &mut router);
                buf.advance(len);
            }
            router.flush().await;
            return match buf.len() {
                0 => Ok(()),
                rest => Err(ConnError::Truncated(rest)),
            };
        }
        more = full;
        if !draining {
            // A short read soon after the last one: small bursts. Leave them
            // in the kernel until a full read or the tick.
            let now = Instant::now();
            if wake_at != read_size && (wake_at > 0 || (!full && now - last_read < TICK)) {
                wake_at = match stream.wake_at(read_size) {
                    Ok(()) => read_size,
                    Err(_) => 0,
                };
            }
            last_read = now;
        }
        router.begin_chunk();
        loop {
            match framer.check(&buf) {
                Ok(Some(len)) => {
                    decoder.decode(&buf[..len], &mut router);
                    buf.advance(len);
                    if router.needs_flush() {
                        router.flush().await;
                    }
                }
                Ok(None) => break,
                Err(err) => {
                    router.flush().await;
                    ctx.router.stats.oversize_closed.fetch_add(1, Relaxed);
                    return Err(ConnError::Untrusted(err.to_string()));
                }
            }
        }
        router.flush().await;
        let need = framer.need(&buf);
        reserve_for_next(&mut buf, need, read_size);
    }
}

/// Back to waking on every byte (before draining, or after a quiet tick);
/// returns the new low-water mark (0: not coalescing).
fn stop_coalescing<S: Source>(stream: &S) -> usize {
    // Lowering SO_RCVLOWAT on a socket that took a higher one cannot fail
    // short of a broken descriptor, whose next read fails too. (Lowering it
    // also makes the kernel report what is already waiting as readable.)
    let _ = stream.wake_at(1);
    0
}

/// Counts a connection in `open_streams` while it lives.
pub(crate) struct OpenStream<'a>(&'a AtomicUsize);

impl<'a> OpenStream<'a> {
    pub(crate) fn new(open: &'a AtomicUsize) -> OpenStream<'a> {
        open.fetch_add(1, Relaxed);
        OpenStream(open)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Relaxed);
    }
}

/// Makes room for the rest of a partly received frame of `need` bytes (its
/// length is already known to be within the cap) or for a normal read of
/// `read_size`.
fn reserve_for_next(buf: &mut BytesMut, need: usize, read_size: usize) {
    let want = need.max(read_size);
    if buf.capacity() < want || buf.capacity() - buf.len() < read_size / 4 {
        buf.reserve(want.saturating_sub(buf.len()).max(read_size / 4));
    }
    // Shrink back after one big frame so an idle connection holds little.
    if buf.is_empty() && buf.capacity() > 4 * read_size {
        *buf = BytesMut::with_capacity(read_size);
    }
}
