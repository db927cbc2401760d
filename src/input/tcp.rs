//! TCP and TLS accept loops: every connection is accepted at once and
//! either admitted (`max_connections`, `max_connections_per_ip`, see
//! [`Admission`](super::admission::Admission)) or closed at once, so the kernel's queue never fills.
//! Running out of file descriptors sheds queued connections on a reserve
//! descriptor instead of leaving them waiting; other accept errors back
//! off instead of spinning. Each admitted connection runs in its own task,
//! with its own router, whose errors are logged there.

use std::fs::File;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn, Instrument};

use super::admission::{Refusal, Slot};
use super::loghog::{LoghogDecoder, LoghogFramer};
use super::stream::ConnError;
use super::syslog::{SyslogDecoder, SyslogFramer};
use super::tls::TlsSetup;
use super::{stream, InputCtx};
use crate::escape::esc;
use crate::record::Transport;
use crate::router::Router;

/// How long a handshake still in progress at shutdown may take to finish.
const STOP_HANDSHAKE_GRACE: Duration = Duration::from_secs(2);

/// The first pause after an accept error the reserve cannot help with...
const BACKOFF_MIN: Duration = Duration::from_millis(5);
/// ...doubling up to this.
const BACKOFF_MAX: Duration = Duration::from_secs(1);

/// Which protocol a stream listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Wire {
    /// LogHog frames (SPEC §1).
    Loghog,
    /// Syslog, RFC 6587 framing (issue 13).
    Syslog,
}

impl Wire {
    fn transport(self, tls: bool) -> Transport {
        match (self, tls) {
            (Wire::Loghog, false) => Transport::Tcp,
            (Wire::Loghog, true) => Transport::Tls,
            (Wire::Syslog, false) => Transport::SyslogTcp,
            (Wire::Syslog, true) => Transport::SyslogTls,
        }
    }

    /// Serves one (plain or TLS) stream with this protocol's framer and decoder.
    async fn serve<S: stream::Source>(
        self,
        stream: S,
        router: Router,
        ctx: &InputCtx,
        token: CancellationToken,
    ) -> Result<(), stream::ConnError> {
        match self {
            Wire::Loghog => {
                let framer = LoghogFramer {
                    max_msg_size: ctx.max_msg_size,
                };
                let decoder = LoghogDecoder::new(ctx.max_msg_size);
                stream::serve(stream, framer, decoder, router, ctx, token).await
            }
            Wire::Syslog => {
                let framer = SyslogFramer::new(ctx.max_msg_size);
                let decoder = SyslogDecoder::stream(framer.framing.clone());
                stream::serve(stream, framer, decoder, router, ctx, token).await
            }
        }
    }
}

/// Accepts until `token` is cancelled.
pub(crate) async fn accept_loop(
    listener: TcpListener,
    tls: Option<TlsSetup>,
    wire: Wire,
    ctx: Arc<InputCtx>,
    token: CancellationToken,
    tracker: TaskTracker,
) {
    let mut reserve = Reserve::open();
    let mut backoff = BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            a = listener.accept() => a,
            _ = token.cancelled() => break,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = BACKOFF_MIN;
                admit(stream, peer, &tls, wire, &ctx, &token, &tracker);
            }
            Err(err) => {
                // Out of descriptors, the queued peer is closed on the
                // reserve one and the next is taken at once: it learns now
                // that it was refused instead of waiting in the queue, and
                // so does every peer behind it.
                if is_out_of_fds(&err) && reserve.shed(&listener) {
                    ctx.router
                        .stats
                        .connections_refused_no_fd
                        .fetch_add(1, Relaxed);
                    if let Some(suppressed) = ctx.conn_limiter.check() {
                        warn!(cause = %err, suppressed, "out of file descriptors: closed a queued connection at once");
                    }
                    continue;
                }
                if let Some(suppressed) = ctx.conn_limiter.check() {
                    warn!(cause = %err, retry_in = ?backoff, suppressed, "accept failed");
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(BACKOFF_MAX);
            }
        }
    }
    // Stopping: clients that connected and sent before the signal may still
    // sit in the kernel's accept queue. Accept what is queued right now and
    // let those connections drain like the others, so nothing they sent is
    // lost.
    loop {
        let queued = tokio::time::timeout(Duration::from_millis(20), listener.accept()).await;
        let Ok(Ok((stream, peer))) = queued else {
            break;
        };
        admit(stream, peer, &tls, wire, &ctx, &token, &tracker);
    }
}

/// Whether an accept failed for want of file descriptors (the process's or
/// the system's).
fn is_out_of_fds(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::EMFILE | libc::ENFILE))
}

/// Serves the connection if [`Admission`](super::admission::Admission) has room for it, else closes it
/// at once, counted and (rate-limited) logged.
fn admit(
    stream: TcpStream,
    peer: SocketAddr,
    tls: &Option<TlsSetup>,
    wire: Wire,
    ctx: &Arc<InputCtx>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) {
    match ctx.admission.admit(peer.ip()) {
        Ok(slot) => spawn_handler(stream, peer, slot, tls, wire, ctx, token, tracker),
        Err(why) => refuse(stream, peer, why, ctx),
    }
}

/// Closes a refused connection at once with a reset (no TIME_WAIT left on
/// this side for every refused peer; the peer's next read or write fails
/// at once).
fn refuse(stream: TcpStream, peer: SocketAddr, why: Refusal, ctx: &InputCtx) {
    let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
    drop(stream);
    let stats = &ctx.router.stats;
    let (counter, key, limit) = match why {
        Refusal::Full => (
            &stats.connections_refused,
            "max_connections",
            ctx.admission.max_total(),
        ),
        Refusal::PerIp => (
            &stats.connections_refused_per_ip,
            "max_connections_per_ip",
            ctx.admission.max_per_ip(),
        ),
    };
    counter.fetch_add(1, Relaxed);
    if let Some(suppressed) = ctx.conn_limiter.check() {
        warn!(%peer, reason = %format_args!("{key} ({limit}) reached"), suppressed, "connection refused");
    }
}

// The accept loop's state, handed down once per connection.
#[allow(clippy::too_many_arguments)]
fn spawn_handler(
    stream: TcpStream,
    peer: SocketAddr,
    slot: Slot,
    tls: &Option<TlsSetup>,
    wire: Wire,
    ctx: &Arc<InputCtx>,
    token: &CancellationToken,
    tracker: &TaskTracker,
) {
    ctx.router.stats.connections.fetch_add(1, Relaxed);
    let _ = stream.set_nodelay(true);
    let _ = socket2::SockRef::from(&stream).set_keepalive(true);
    let ctx = ctx.clone();
    let token = token.clone();
    let tls = tls.clone();
    let transport = wire.transport(tls.is_some());
    // Open from admission to the end of the task, whichever way it ends
    // (a refused handshake included): the guard is dropped with the task.
    let open = ctx.router.stats.open_connection(transport.as_str());
    let span = tracing::info_span!("conn", %peer, transport = transport.as_str());
    tracker.spawn(
        async move {
            let _slot = slot;
            let _open = open;
            handle(stream, peer, tls, wire, ctx, token).await;
        }
        .instrument(span),
    );
}

// === impl Reserve ===

/// A descriptor held back for the moment the process runs out: closing it
/// lets one queued connection be accepted and closed at once.
struct Reserve(Option<File>);

impl Reserve {
    fn open() -> Reserve {
        Reserve(File::open("/dev/null").ok())
    }

    /// Frees the reserve, accepts one queued connection on it, closes that
    /// at once and takes the reserve back. False when nothing was shed (no
    /// reserve: it could not be reopened last time; or another thread took
    /// the freed descriptor first): then the caller backs off.
    fn shed(&mut self, listener: &TcpListener) -> bool {
        let Some(fd) = self.0.take() else {
            *self = Reserve::open();
            return false;
        };
        drop(fd);
        // The listener is non-blocking: nothing queued is WouldBlock.
        let shed = match socket2::SockRef::from(listener).accept() {
            Ok((sock, _)) => {
                let _ = sock.set_linger(Some(Duration::ZERO));
                true
            }
            Err(_) => false,
        };
        *self = Reserve::open();
        shed
    }
}

async fn handle(
    stream: TcpStream,
    peer: SocketAddr,
    tls: Option<TlsSetup>,
    wire: Wire,
    ctx: Arc<InputCtx>,
    token: CancellationToken,
) {
    debug!("connected");
    let result = match tls {
        None => {
            let router = Router::new(ctx.router.clone(), peer.ip(), wire.transport(false));
            wire.serve(stream, router, &ctx, token).await
        }
        Some(tls) => {
            let acceptor = tls.current();
            let hs = tokio::time::timeout(ctx.limits.handshake_timeout, acceptor.accept(stream));
            tokio::pin!(hs);
            // A client mid-handshake when the daemon stops may already have
            // sent messages behind it: give it a short while to finish.
            let hs = tokio::select! {
                r = &mut hs => r,
                _ = token.cancelled() => match tokio::time::timeout(STOP_HANDSHAKE_GRACE, &mut hs).await {
                    Ok(r) => r,
                    Err(_) => return,
                },
            };
            let stream = match hs {
                Ok(Ok(s)) => s,
                Ok(Err(err)) => {
                    let why = super::tls::refusal_of(Some(&err));
                    ctx.router.stats.count_tls_refusal(why);
                    if let Some(suppressed) = ctx.router.limiter.check() {
                        let reason = super::tls::describe_handshake_error(&err);
                        warn!(reason = %esc(&reason), suppressed, "tls handshake refused");
                    }
                    return;
                }
                Err(_) => {
                    let why = super::tls::refusal_of(None);
                    ctx.router.stats.count_tls_refusal(why);
                    if let Some(suppressed) = ctx.router.limiter.check() {
                        warn!(
                            reason = "handshake timed out",
                            suppressed, "tls handshake refused"
                        );
                    }
                    return;
                }
            };
            if let Some(subject) = super::tls::peer_subject(stream.get_ref().1) {
                // The subject is the client's to choose (any CA-signed
                // name): escaped like every client string.
                info!(client = %esc(&subject), "tls client authenticated");
            }
            let router = Router::new(ctx.router.clone(), peer.ip(), wire.transport(true));
            let stream = CloseNotifyOptional(stream);
            wire.serve(stream, router, &ctx, token).await
        }
    };
    match result {
        Ok(()) => debug!("closed"),
        // The normal end of a quiet client's connection, not a fault.
        Err(ConnError::Idle(after)) => debug!(idle_for = ?after, "closed as idle"),
        Err(err @ ConnError::FrameTimeout(_)) => {
            if let Some(suppressed) = ctx.conn_limiter.check() {
                warn!(cause = %err, suppressed, "connection closed");
            }
        }
        // Rate-limited like every warning a peer can cause: 5,000 peers
        // closing mid-frame must not write 5,000 lines (issue 12).
        Err(err) => {
            if let Some(suppressed) = ctx.router.limiter.check() {
                let cause = err.to_string();
                warn!(cause = %esc(&cause), suppressed, "connection closed on error");
            }
        }
    }
}

// === impl CloseNotifyOptional ===

/// A TLS stream whose end without a `close_notify` is a plain EOF.
///
/// LogHog clients (the Python `loghog` client included) close the socket
/// without a `close_notify`; rustls reports that as `UnexpectedEof`, which
/// would log every normal close as an error. The wire framing is
/// length-prefixed, so a cut inside a frame is still caught by
/// `stream::serve` (`Truncated`), as on plain TCP.
struct CloseNotifyOptional<S>(S);

/// TLS is read on readiness only: its bytes must go through rustls.
impl<S: AsyncRead + Unpin> stream::Source for CloseNotifyOptional<S> {}

impl<S: AsyncRead + Unpin> AsyncRead for CloseNotifyOptional<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match Pin::new(&mut self.0).poll_read(cx, buf) {
            // Nothing was put in `buf`, so Ok reads as EOF.
            Poll::Ready(Err(err)) if err.kind() == io::ErrorKind::UnexpectedEof => {
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}
