//! One output file's task: owns the `File`, appends batches in arrival
//! order, applies `flush_every`, and closes with flush + `sync_all`.
//!
//! The task blocks on its first queued command, drains whatever else is
//! queued, and writes it all in one vectored write on a blocking thread
//! (never on an async worker, so a slow disk stalls only this file and,
//! through the bounded queue, the readers feeding it).

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::{Command, WriterCtx};
use crate::config::Facility;
use crate::output::Batch;
use crate::rotation::{self, lock, started_on_disk, FileState};

/// Stop draining the queue into one write once this much is pending.
const MAX_PENDING_BYTES: usize = 1 << 20;

/// A drain smaller than this first lets runnable readers add to it.
const YIELD_BELOW_BYTES: usize = 64 << 10;

/// Drains up to this size are written on the async worker itself.
const INLINE_WRITE_MAX: usize = 64 << 10;

/// Lines held back by `flush_every` still reach the disk after this long.
const PENDING_FLUSH_AFTER: Duration = Duration::from_secs(1);

/// An idle file's descriptor is closed after this long (the task stays).
const IDLE_CLOSE_AFTER: Duration = Duration::from_secs(60);

/// The state of one output file.
pub(crate) struct LogFile {
    /// The live file's path.
    path: PathBuf,
    /// Open handle; `None` until the first write and after Reopen/idle.
    file: Option<File>,
    /// Bytes in the live file, for `max_size`.
    size: u64,
    /// The open file is a regular file (not a FIFO or device an operator
    /// pointed the path at), so a small write to it cannot block for long.
    regular: bool,
    /// Latest settings for this file (from the newest batch).
    facility: Arc<Facility>,
    /// Batches not yet handed to the OS.
    pending: Vec<Vec<u8>>,
    /// Messages in `pending`.
    pending_count: u32,
    /// Bytes in `pending` (bounds how much one drain takes).
    pending_bytes: usize,
    ctx: Arc<WriterCtx>,
}

// === impl LogFile ===

impl LogFile {
    /// A writer for `path` that opens the file on its first write.
    pub(crate) fn new(path: PathBuf, facility: Arc<Facility>, ctx: Arc<WriterCtx>) -> LogFile {
        LogFile {
            path,
            file: None,
            size: 0,
            regular: false,
            facility,
            pending: Vec::new(),
            pending_count: 0,
            pending_bytes: 0,
            ctx,
        }
    }

    /// Runs until every sender is gone, then writes what is left and closes.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // One idle timer, re-armed only when it fires: arming a fresh one
        // for every command was a timer-wheel insert and removal per batch.
        let idle = tokio::time::sleep(IDLE_CLOSE_AFTER);
        tokio::pin!(idle);
        let mut last_command = Instant::now();
        loop {
            let cmd = tokio::select! {
                cmd = rx.recv() => cmd,
                _ = tokio::time::sleep(PENDING_FLUSH_AFTER), if self.pending_count > 0 => {
                    self.write_out().await;
                    continue;
                }
                () = &mut idle, if self.file.is_some() => {
                    if last_command.elapsed() >= IDLE_CLOSE_AFTER {
                        self.close().await;
                        idle.as_mut().reset(Instant::now() + IDLE_CLOSE_AFTER);
                    } else {
                        idle.as_mut().reset(last_command + IDLE_CLOSE_AFTER);
                    }
                    continue;
                }
            };
            last_command = Instant::now();
            let Some(cmd) = cmd else { break };
            self.apply(cmd).await;
            self.drain(&mut rx).await;
            if self.pending_bytes < YIELD_BELOW_BYTES && self.pending_count > 0 {
                // Readers woken together (by one coalescing tick, or one
                // burst over many connections) run one after another, and
                // this task, woken by the first, would otherwise run between
                // each two of them: a write per reader. Let the readers that
                // are already runnable go first, then write what they all
                // handed over at once. This waits for no timer and no input,
                // only for tasks ready to run now.
                tokio::task::yield_now().await;
                self.drain(&mut rx).await;
            }
            if self.pending_count >= self.facility.flush_every.max(1) {
                self.write_out().await;
            }
        }
        self.write_out().await;
        self.close().await;
        debug!(path = %self.path.display(), "writer finished");
    }

    /// Takes whatever else is queued, so one write covers it all.
    async fn drain(&mut self, rx: &mut mpsc::Receiver<Command>) {
        while self.pending_bytes < MAX_PENDING_BYTES {
            match rx.try_recv() {
                Ok(cmd) => self.apply(cmd).await,
                Err(_) => break,
            }
        }
    }

    async fn apply(&mut self, cmd: Command) {
        match cmd {
            Command::Write(batch) => {
                self.facility = batch.facility.clone();
                let tail = self.split_at_max_size(batch).await;
                self.push(tail);
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

    fn push(&mut self, b: Batch) {
        self.pending_bytes += b.data.len();
        self.pending_count += b.count;
        self.pending.push(b.data);
    }

    /// With `max_size`, writes out the messages up to and including the one
    /// that reaches the limit (which rotates the file) and returns the rest,
    /// repeatedly, so no file grows more than one message past `max_size`
    /// however large a batch is. Gzip-on-write files are measured after
    /// compression, so they rotate after the write that crosses instead.
    async fn split_at_max_size(&mut self, mut b: Batch) -> Batch {
        let Some(max) = self.facility.max_size else {
            return b;
        };
        if self.ctx.compressor.compress_on_write || b.ends.len() != b.count as usize {
            return b;
        }
        if self.file.is_none() && self.pending.is_empty() {
            // Not opened yet (or closed by Reopen/idle): the file may hold
            // what an earlier run wrote, or be a new one after an operator
            // moved it away, so count what is really there.
            let path = self.path.clone();
            self.size = tokio::task::spawn_blocking(move || std::fs::metadata(path))
                .await
                .ok()
                .and_then(Result::ok)
                .map_or(0, |m| m.len());
        }
        loop {
            let used = self.size + self.pending_bytes as u64;
            if used >= max {
                // An earlier batch of this drain already reaches the limit:
                // it goes into this file, and nothing of `b` does.
                if self.pending.is_empty() {
                    self.rotate().await;
                } else {
                    self.write_out().await;
                }
                continue;
            }
            let need = max - used;
            let idx = b.ends.partition_point(|&e| (e as u64) < need);
            if idx + 1 >= b.ends.len() {
                return b; // crossing at the last message, or not at all
            }
            let cut = b.ends[idx];
            let tail = Batch {
                facility: b.facility.clone(),
                data: b.data.split_off(cut as usize),
                count: b.count - (idx as u32 + 1),
                ends: b.ends[idx + 1..].iter().map(|e| e - cut).collect(),
            };
            b.count = idx as u32 + 1;
            b.ends.truncate(idx + 1);
            self.push(b);
            self.write_out().await;
            b = tail;
        }
    }

    /// Hands everything pending to the OS in one vectored write (one gzip
    /// member with `compress_on_write`).
    async fn write_out(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self.file.is_none() {
            self.note_start().await;
        }
        let pending = std::mem::take(&mut self.pending);
        let count = std::mem::take(&mut self.pending_count);
        let bytes = std::mem::take(&mut self.pending_bytes);
        let gzip = self
            .ctx
            .compressor
            .compress_on_write
            .then_some(self.ctx.compressor.level);
        let result = match self.file.as_mut() {
            // A small append to an open file is a copy into the page cache:
            // done here, it costs microseconds, where handing it to a
            // blocking thread and back costs two thread wake-ups. With a
            // thousand files each getting a line at a time that hand-off was
            // most of the daemon's CPU. Larger drains still go to a blocking
            // thread, so a slow disk cannot stall a worker for long.
            Some(file) if self.regular && gzip.is_none() && bytes <= INLINE_WRITE_MAX => {
                write_all_vectored(file, &pending).map(|()| bytes as u64)
            }
            _ => self.write_blocking(pending, gzip).await,
        };
        match result {
            Ok(written) => {
                self.size += written;
                self.ctx.stats.written.fetch_add(count as u64, Relaxed);
                if let Some(max) = self.facility.max_size {
                    if self.size >= max {
                        self.rotate().await;
                    }
                }
            }
            Err(err) => self.write_failed(count, &err.to_string()),
        }
    }

    /// Opens the file if needed (taking its size) and writes `pending` on a
    /// blocking thread; returns the bytes the file grew by.
    async fn write_blocking(
        &mut self,
        pending: Vec<Vec<u8>>,
        gzip: Option<u32>,
    ) -> io::Result<u64> {
        let file = self.file.take();
        let path = self.path.clone();
        let logdir = self.ctx.logdir.clone();
        let job = tokio::task::spawn_blocking(move || {
            let mut file = match file {
                Some(f) => (f, None),
                None => {
                    let f = super::path::open_beneath(&logdir, &path)?;
                    let meta = f.metadata()?;
                    (f, Some((meta.len(), meta.is_file())))
                }
            };
            let written = match gzip {
                Some(level) => {
                    let mut enc = flate2::write::GzEncoder::new(
                        Vec::new(),
                        flate2::Compression::new(level.min(9)),
                    );
                    for b in &pending {
                        enc.write_all(b)?;
                    }
                    let member = enc.finish()?;
                    file.0.write_all(&member)?;
                    member.len()
                }
                None => {
                    write_all_vectored(&mut file.0, &pending)?;
                    pending.iter().map(Vec::len).sum()
                }
            };
            Ok::<_, io::Error>((file, written as u64))
        });
        match job.await {
            Ok(Ok(((file, opened_len), written))) => {
                if let Some((len, regular)) = opened_len {
                    // Freshly opened: what was there before this write.
                    self.size = len;
                    self.regular = regular;
                }
                self.file = Some(file);
                Ok(written)
            }
            Ok(Err(err)) => Err(err),
            Err(join) => Err(io::Error::other(join.to_string())),
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

    /// Records when the live file was started, the first time this daemon
    /// opens it (a file left by an earlier run keeps its recorded start),
    /// and wakes the scheduler to plan its rotation and save the state.
    async fn note_start(&mut self) {
        let path = self.path.clone();
        let state = self.ctx.state.clone();
        let known = lock(&state).get(&path).is_some();
        if known {
            return;
        }
        let clock = self.ctx.clock.clone();
        let started = tokio::task::spawn_blocking(move || {
            let started = started_on_disk(&path)
                .ok()
                .flatten()
                .unwrap_or_else(|| clock.now());
            // Saved by the scheduler, which wakes for it: a thousand new
            // files then cost one save, not a thousand saves of a growing
            // file. Lost in a crash, a start is read back from the disk.
            lock(&state).set(&path, FileState::new(started));
            started
        })
        .await;
        if started.is_ok() {
            self.ctx.new_file.notify_one();
        }
    }

    /// Rotates now through the one rotation transaction
    /// ([`rotation::rotate_file`]): the live file becomes a backup named after
    /// the time it was started, the state moves on, and compression plus
    /// retention run in the background. An empty or missing file only moves
    /// the state on. A failed rename leaves the file live and the rotation
    /// due: the scheduler retries it at its next re-plan, a size rotation at
    /// the next write.
    async fn rotate(&mut self) {
        // No fsync here: it would stall this file's writes for as long as the
        // disk takes to flush up to max_size bytes. The compression job reads
        // the data and syncs its output before the backup is removed.
        self.file = None;
        self.size = 0;
        let path = self.path.clone();
        let state = self.ctx.state.clone();
        let clock = self.ctx.clock.clone();
        let logdir = self.ctx.logdir.clone();
        let renamed = tokio::task::spawn_blocking(move || {
            rotation::rotate_file_beneath(&logdir, &path, &state, clock.now())
        })
        .await;
        let backup = match renamed {
            Ok(Ok(Some(b))) => b,
            Ok(Ok(None)) => return,
            Ok(Err(err)) => {
                // Retried on every write or re-plan while the cause lasts.
                if let Some(suppressed) = self.ctx.limiter.check() {
                    warn!(path = %self.path.display(), cause = %err, suppressed, "rotation failed; file stays live");
                }
                return;
            }
            Err(err) => {
                warn!(path = %self.path.display(), cause = %err, "rotation task failed");
                return;
            }
        };
        info!(path = %self.path.display(), backup = %backup.display(), "rotated");
        self.spawn_compression(backup);
    }

    /// Compresses `backup` and prunes old backups off the async workers,
    /// within the daemon's limit on concurrent compressions.
    fn spawn_compression(&self, backup: PathBuf) {
        let c = &self.ctx.compressor;
        let job = rotation::CompressJob {
            live: self.path.clone(),
            backup,
            compress: (!c.compress_on_write).then_some((c.format, c.level)),
            keep: self.facility.backup_count as usize,
            beneath: Some(self.ctx.logdir.clone()),
        };
        rotation::spawn_compression(job, &self.ctx.compressions, &self.ctx.compress_tracker);
    }
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
