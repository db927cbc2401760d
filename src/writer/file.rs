//! One output file's task: owns the `File`, appends batches in arrival
//! order, applies `flush_every`, and closes with flush + `sync_all`.
//!
//! The task blocks on its first queued command, drains whatever else is
//! queued, and writes it all in one vectored write on a blocking thread
//! (never on an async worker, so a slow disk stalls only this file and,
//! through the bounded queue, the readers feeding it).

use std::fs::{File, OpenOptions};
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tracing::{debug, warn};

use super::{Batch, Command, WriterCtx};
use crate::config::Facility;

/// Stop draining the queue into one write once this much is pending.
const MAX_PENDING_BYTES: usize = 4 << 20;

/// Lines held back by `flush_every` still reach the disk after this long.
const PENDING_FLUSH_AFTER: Duration = Duration::from_secs(1);

/// An idle file's descriptor is closed after this long (the task stays).
const IDLE_CLOSE_AFTER: Duration = Duration::from_secs(60);

/// The state of one output file.
pub struct LogFile {
    /// The live file's path.
    path: PathBuf,
    /// Open handle; `None` until the first write and after Reopen/idle.
    file: Option<File>,
    /// Bytes in the live file, for `max_size`.
    size: u64,
    /// Latest settings for this file (from the newest batch).
    facility: Arc<Facility>,
    /// Batches not yet handed to the OS.
    pending: Vec<Vec<u8>>,
    /// Messages in `pending`.
    pending_count: u32,
    /// Bytes in `pending`.
    pending_bytes: usize,
    ctx: Arc<WriterCtx>,
}

// === impl LogFile ===

impl LogFile {
    /// A writer for `path` that opens the file on its first write.
    pub fn new(path: PathBuf, facility: Arc<Facility>, ctx: Arc<WriterCtx>) -> LogFile {
        LogFile {
            path,
            file: None,
            size: 0,
            facility,
            pending: Vec::new(),
            pending_count: 0,
            pending_bytes: 0,
            ctx,
        }
    }

    /// Runs until every sender is gone, then writes what is left and closes.
    pub async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        loop {
            let cmd = tokio::select! {
                cmd = rx.recv() => cmd,
                _ = tokio::time::sleep(PENDING_FLUSH_AFTER), if self.pending_count > 0 => {
                    self.write_out().await;
                    continue;
                }
                _ = tokio::time::sleep(IDLE_CLOSE_AFTER), if self.file.is_some() => {
                    self.close().await;
                    continue;
                }
            };
            let Some(cmd) = cmd else { break };
            self.apply(cmd).await;
            // Take whatever else is queued so one write covers it all.
            while self.pending_bytes < MAX_PENDING_BYTES {
                match rx.try_recv() {
                    Ok(cmd) => self.apply(cmd).await,
                    Err(_) => break,
                }
            }
            if self.pending_count >= self.facility.flush_every.max(1) {
                self.write_out().await;
            }
        }
        self.write_out().await;
        self.close().await;
        debug!(path = %self.path.display(), "writer finished");
    }

    async fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Write(Batch {
                facility,
                data,
                count,
            }) => {
                self.facility = facility;
                self.pending_bytes += data.len();
                self.pending_count += count;
                self.pending.push(data);
            }
            Command::Reopen => {
                self.write_out().await;
                self.close().await;
            }
            Command::Rotate(done) => {
                self.write_out().await;
                self.rotate().await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
        }
    }

    /// Hands everything pending to the OS in one vectored write.
    async fn write_out(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let pending = std::mem::take(&mut self.pending);
        let count = std::mem::take(&mut self.pending_count);
        let bytes = std::mem::take(&mut self.pending_bytes);
        let file = self.file.take();
        let path = self.path.clone();
        let result = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(f) => f,
                None => open_append(&path)?,
            };
            let size = file.metadata().map(|m| m.len()).unwrap_or(0);
            write_all_vectored(&mut file, &pending)?;
            Ok::<_, io::Error>((file, size))
        })
        .await;
        match result {
            Ok(Ok((file, size_before))) => {
                self.size = size_before + bytes as u64;
                self.file = Some(file);
                self.ctx.stats.written.fetch_add(count as u64, Relaxed);
                if let Some(max) = self.facility.max_size {
                    if self.size >= max {
                        self.rotate().await;
                    }
                }
            }
            Ok(Err(err)) => self.write_failed(count, &err.to_string()),
            Err(join) => self.write_failed(count, &join.to_string()),
        }
    }

    fn write_failed(&mut self, count: u32, err: &str) {
        self.ctx.stats.write_errors.fetch_add(count as u64, Relaxed);
        if let Some(suppressed) = self.ctx.limiter.check() {
            warn!(path = %self.path.display(), cause = err, lost = count, suppressed, "write failed");
        }
    }

    /// Flushes and syncs the file, then drops the handle.
    async fn close(&mut self) {
        if let Some(file) = self.file.take() {
            let path = self.path.clone();
            let res = tokio::task::spawn_blocking(move || file.sync_all()).await;
            if let Ok(Err(err)) = res {
                warn!(path = %path.display(), cause = %err, "sync failed");
            }
        }
    }

    /// Rotation hook: closes the live file so the next write starts a new one.
    async fn rotate(&mut self) {
        self.close().await;
        self.size = 0;
    }
}

/// Opens (creating) the live file for appending, and its app directory.
/// `O_NOFOLLOW`: a symlink planted at the file's path is refused, not followed.
fn open_append(path: &std::path::Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
}

/// `write_all` over several buffers with as few `writev` calls as possible.
fn write_all_vectored(file: &mut File, bufs: &[Vec<u8>]) -> io::Result<()> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    // writev takes at most IOV_MAX (1024) slices per call.
    while !rest.is_empty() {
        let n = rest.len().min(1024);
        match file.write_vectored(&rest[..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(written) => IoSlice::advance_slices(&mut rest, written),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(())
}
