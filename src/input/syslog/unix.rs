//! The local syslog socket (`/dev/log`, `/run/systemd/journal/syslog`): a
//! datagram socket that `syslog(3)`, `logger(1)` and journald's forwarding
//! write to. It is created at start with the configured mode (a stale one
//! from a crash is replaced; anything that is not a socket is refused) and
//! removed at stop. `SO_PASSCRED` makes the kernel attach each sender's
//! pid/uid/gid, which the line formats offer (a message's own pid can lie).

use std::io::{self, IoSliceMut};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use nix::sys::socket::{recvmsg, sockopt, ControlMessageOwned, MsgFlags, UnixCredentials};
use tokio::io::Interest;
use tokio::net::UnixDatagram;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::SyslogDecoder;
use crate::input::InputCtx;
use crate::record::{Credentials, Transport};
use crate::router::Router;

/// Datagrams taken per wake-up before the batches are handed on.
const PER_CHUNK: usize = 256;

/// The bound socket and the path to remove at stop.
#[derive(Debug)]
pub struct UnixSocket {
    sock: std::os::unix::net::UnixDatagram,
    path: PathBuf,
}

// === impl UnixSocket ===

impl UnixSocket {
    /// Creates the socket at `path` with permission bits `mode`.
    ///
    /// # Errors
    /// `path` exists and is not a socket, or cannot be bound or chmod-ed.
    pub fn bind(path: &Path, mode: u32) -> io::Result<UnixSocket> {
        match std::fs::symlink_metadata(path) {
            Ok(m) if m.file_type().is_socket() => std::fs::remove_file(path)?,
            Ok(_) => {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    format!(
                        "{} exists and is not a socket; remove it or choose another unix_socket",
                        path.display()
                    ),
                ))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let sock = std::os::unix::net::UnixDatagram::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))?;
        nix::sys::socket::setsockopt(&sock, sockopt::PassCred, &true).map_err(io::Error::from)?;
        // Best effort, as for UDP: a burst from many local programs.
        let _ = nix::sys::socket::setsockopt(&sock, sockopt::RcvBuf, &(4 << 20));
        sock.set_nonblocking(true)?;
        Ok(UnixSocket {
            sock,
            path: path.to_path_buf(),
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Registers the socket with the runtime; the guard removes the path
    /// when the receive loop ends.
    pub(crate) fn into_tokio(self) -> io::Result<(UnixDatagram, PathGuard)> {
        let guard = PathGuard(self.path);
        Ok((UnixDatagram::from_std(self.sock)?, guard))
    }
}

/// Removes the socket's path when dropped (the stop).
#[derive(Debug)]
pub(crate) struct PathGuard(PathBuf);

impl Drop for PathGuard {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0) {
            if e.kind() != io::ErrorKind::NotFound {
                warn!(path = %self.0.display(), cause = %e, "cannot remove the syslog socket");
            }
        }
    }
}

/// Receives until `token` is cancelled, takes what is queued, and removes
/// the socket.
pub(crate) async fn recv_loop(
    (sock, _guard): (UnixDatagram, PathGuard),
    ctx: Arc<InputCtx>,
    token: CancellationToken,
) {
    let mut router = Router::new(
        ctx.router.clone(),
        std::net::Ipv4Addr::LOCALHOST.into(),
        Transport::SyslogUnix,
    );
    let mut decoder = SyslogDecoder::datagram(super::local_hostname());
    let mut buf = vec![0u8; ctx.max_msg_size + 1];
    let mut cmsg = nix::cmsg_space!(UnixCredentials);
    let mut stopping = false;
    let mut drained = 0;
    loop {
        if !stopping {
            tokio::select! {
                r = sock.readable() => if let Err(err) = r {
                    warn!(cause = %err, "syslog unix socket failed");
                    return;
                },
                _ = token.cancelled() => stopping = true,
            }
        }
        router.begin_chunk();
        let mut empty = false;
        for _ in 0..PER_CHUNK {
            let got = sock.try_io(Interest::READABLE, || {
                recv_one(sock.as_raw_fd(), &mut buf, &mut cmsg)
            });
            match got {
                Ok((len, truncated, cred)) => {
                    if truncated || len > ctx.max_msg_size {
                        router.reject(&"syslog datagram over max_msg_size");
                    } else {
                        decoder.decode_message(&buf[..len], cred, &mut router);
                    }
                }
                Err(e) => {
                    if let Some(all_read) = super::after_recv_error(&e, "unix", &ctx) {
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

/// One datagram: (length, truncated, the sender's credentials).
fn recv_one(
    fd: std::os::fd::RawFd,
    buf: &mut [u8],
    cmsg: &mut Vec<u8>,
) -> io::Result<(usize, bool, Option<Credentials>)> {
    let mut iov = [IoSliceMut::new(buf)];
    let msg =
        recvmsg::<()>(fd, &mut iov, Some(cmsg), MsgFlags::MSG_DONTWAIT).map_err(io::Error::from)?;
    let mut cred = None;
    if let Ok(cmsgs) = msg.cmsgs() {
        for c in cmsgs {
            if let ControlMessageOwned::ScmCredentials(uc) = c {
                cred = Some(Credentials {
                    pid: uc.pid(),
                    uid: uc.uid(),
                    gid: uc.gid(),
                });
            }
        }
    }
    Ok((msg.bytes, msg.flags.contains(MsgFlags::MSG_TRUNC), cred))
}
