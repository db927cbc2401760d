//! One stream connection (plain TCP or TLS): read into a buffer, take every
//! complete frame out of it with the connection's [`Framer`], hand each to its
//! [`Decoder`] (which routes the record), flush the batches, read on.
//!
//! The read buffer only grows to the frame being assembled, never to a
//! length a peer merely announced: a framer refuses a length over
//! `max_msg_size` before anything is allocated, and the connection closes.

use std::io;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::time::Duration;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncRead, AsyncReadExt};
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
    S: AsyncRead + Unpin,
    F: Framer,
    D: Decoder,
{
    let _open = OpenStream::new(&ctx.open_streams);
    let mut read_size = READ_BUF_MIN;
    let mut buf = BytesMut::with_capacity(read_size);
    let mut draining = token.is_cancelled();
    loop {
        let n = if draining {
            match tokio::time::timeout(DRAIN_IDLE, stream.read_buf(&mut buf)).await {
                Ok(r) => r?,
                Err(_) => 0,
            }
        } else {
            tokio::select! {
                r = stream.read_buf(&mut buf) => r?,
                _ = token.cancelled() => {
                    draining = true;
                    continue;
                }
            }
        };
        // A read that filled all the room there was means more is waiting:
        // read bigger next time.
        let cap =
            (READ_BUDGET / ctx.open_streams.load(Relaxed).max(1)).clamp(READ_BUF_MIN, READ_BUF_MAX);
        if buf.capacity() == buf.len() && read_size < cap {
            read_size *= 2;
        }
        read_size = read_size.min(cap);
        if n == 0 {
            router.flush().await;
            return match buf.len() {
                0 => Ok(()),
                rest => Err(ConnError::Truncated(rest)),
            };
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
