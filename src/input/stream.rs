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
//!
//! `idle_timeout` and `frame_timeout` cost no timer per read: one timer per
//! connection is armed for the earlier of the two deadlines and, when it
//! fires, compared with when the connection last read and when its partial
//! frame began (both noted per read from the one clock read it already
//! takes); only then is it re-armed.

use std::io;
use std::mem::size_of;
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::sync::atomic::Ordering::{Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicUsize};
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::TcpStream;
use tokio::sync::Notify;
use tokio::time::{Instant, Sleep};
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

/// How far off a connection's timer is set when no timeout is due (no
/// `idle_timeout`, no partial frame): it then fires, finds nothing due and
/// is set again, once a day.
const NO_DEADLINE: Duration = Duration::from_secs(86_400);

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
    #[error("nothing received for {0:?} (idle_timeout)")]
    Idle(Duration),
    #[error("a frame was not complete within {0:?} (frame_timeout)")]
    FrameTimeout(Duration),
}

/// A connection's two deadlines: `idle_timeout` since it last read
/// something, `frame_timeout` since the frame now partly buffered began.
struct Deadlines {
    /// `[server] idle_timeout`; `None`: never idle.
    idle: Option<Duration>,
    /// `[server] frame_timeout`.
    frame: Duration,
    /// When the last read was handled (time spent handing its batches on,
    /// waiting on a full writer, is the daemon's, not the peer's silence).
    active_at: Instant,
    /// When the partial frame at the buffer's end began; `None` when the
    /// buffer ends at a frame boundary.
    frame_at: Option<Instant>,
}

// === impl Deadlines ===

impl Deadlines {
    fn new(limits: &crate::config::Limits, now: Instant) -> Deadlines {
        Deadlines {
            idle: limits.idle_timeout,
            frame: limits.frame_timeout,
            active_at: now,
            frame_at: None,
        }
    }

    /// The earliest instant something is due.
    fn next(&self) -> Instant {
        let idle = self
            .idle
            .map_or(self.active_at + NO_DEADLINE, |t| self.active_at + t);
        match self.frame_at {
            Some(f) => idle.min(f + self.frame),
            None => idle,
        }
    }

    /// Notes a read handled at `now`, after which the buffer holds part of
    /// a frame (`partial`), begun in this read if it `completed` one.
    /// Brings the timer forward only when a frame starts and the timer is
    /// set later than its deadline (once per frame, not once per read).
    fn read(&mut self, now: Instant, partial: bool, completed: bool, timer: Pin<&mut Sleep>) {
        self.active_at = now;
        if !partial {
            self.frame_at = None;
        } else if completed || self.frame_at.is_none() {
            self.frame_at = Some(now);
            if timer.deadline() > now + self.frame {
                timer.reset(now + self.frame);
            }
        }
    }

    /// The timer fired at `now`: the timeout due, or the timer set again.
    fn check(&self, now: Instant, timer: Pin<&mut Sleep>) -> Result<(), ConnError> {
        if self.frame_at.is_some_and(|f| now >= f + self.frame) {
            return Err(ConnError::FrameTimeout(self.frame));
        }
        if let Some(idle) = self.idle.filter(|t| now >= self.active_at + *t) {
            return Err(ConnError::Idle(idle));
        }
        timer.reset(self.next());
        Ok(())
    }
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
    let mut deadlines = Deadlines::new(&ctx.limits, last_read);
    let timer = tokio::time::sleep_until(deadlines.next());
    tokio::pin!(timer);
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
                    () = &mut timer => {
                        deadlines.check(Instant::now(), timer.as_mut()).inspect_err(|e| count(e, ctx))?;
                        continue;
                    }
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
                () = &mut timer => {
                    deadlines.check(Instant::now(), timer.as_mut()).inspect_err(|e| count(e, ctx))?;
                    continue;
                }
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
        router.begin_chunk();
        let mut completed = false;
        loop {
            match framer.check(&buf) {
                Ok(Some(len)) => {
                    completed = true;
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
        if !draining {
            // The one clock read per read, taken once its batches are handed
            // on (a writer that made us wait is not the peer's silence).
            let now = Instant::now();
            // A short read soon after the last one: small bursts. Leave them
            // in the kernel until a full read or the tick.
            if wake_at != read_size && (wake_at > 0 || (!full && now - last_read < TICK)) {
                wake_at = match stream.wake_at(read_size) {
                    Ok(()) => read_size,
                    Err(_) => 0,
                };
            }
            last_read = now;
            deadlines.read(now, !buf.is_empty(), completed, timer.as_mut());
        }
        let need = framer.need(&buf);
        reserve_for_next(&mut buf, need, read_size);
    }
}

/// Counts a connection closed by one of its timeouts.
fn count(err: &ConnError, ctx: &InputCtx) {
    let stats = &ctx.router.stats;
    match err {
        ConnError::Idle(_) => stats.idle_closed.fetch_add(1, Relaxed),
        ConnError::FrameTimeout(_) => stats.frame_timeout_closed.fetch_add(1, Relaxed),
        _ => return,
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(idle: Option<u64>, frame: u64) -> crate::config::Limits {
        crate::config::Limits {
            idle_timeout: idle.map(Duration::from_secs),
            frame_timeout: Duration::from_secs(frame),
            ..Default::default()
        }
    }

    /// The timer is armed for the idle deadline, brought forward once when
    /// a frame starts (not per read), and a check says which is due.
    #[tokio::test(start_paused = true)]
    async fn deadlines_arm_once_per_frame_and_say_what_is_due() {
        let t0 = Instant::now();
        let mut d = Deadlines::new(&limits(Some(300), 30), t0);
        let timer = tokio::time::sleep_until(d.next());
        tokio::pin!(timer);
        assert_eq!(timer.deadline(), t0 + Duration::from_secs(300));

        // A read ends inside a frame: the timer comes forward to its end.
        let t1 = t0 + Duration::from_secs(1);
        d.read(t1, true, false, timer.as_mut());
        assert_eq!(timer.deadline(), t1 + Duration::from_secs(30));
        // Frames completing and starting later leave the timer alone.
        d.read(t1 + Duration::from_secs(2), true, true, timer.as_mut());
        assert_eq!(timer.deadline(), t1 + Duration::from_secs(30));

        // At the (old) deadline the current frame is not due yet: re-armed.
        let fired = t1 + Duration::from_secs(30);
        d.check(fired, timer.as_mut()).unwrap();
        assert_eq!(timer.deadline(), t1 + Duration::from_secs(32));
        // The frame still incomplete 30 s after it began.
        let err = d.check(t1 + Duration::from_secs(32), timer.as_mut());
        assert!(matches!(err, Err(ConnError::FrameTimeout(_))), "{err:?}");

        // Whole frames only: idle is what is due, 300 s after the last read.
        let t2 = t1 + Duration::from_secs(40);
        d.read(t2, false, true, timer.as_mut());
        d.check(t2 + Duration::from_secs(299), timer.as_mut())
            .unwrap();
        assert_eq!(timer.deadline(), t2 + Duration::from_secs(300));
        let err = d.check(t2 + Duration::from_secs(300), timer.as_mut());
        assert!(matches!(err, Err(ConnError::Idle(_))), "{err:?}");
    }

    #[tokio::test(start_paused = true)]
    async fn no_idle_timeout_never_closes_a_quiet_connection() {
        let t0 = Instant::now();
        let d = Deadlines::new(&limits(None, 30), t0);
        let timer = tokio::time::sleep_until(d.next());
        tokio::pin!(timer);
        let day = t0 + NO_DEADLINE;
        d.check(day, timer.as_mut()).unwrap();
        assert!(timer.deadline() >= day);
    }
}
