//! One output file's task: owns the `File`, appends batches in arrival
//! order, applies `flush_every` and the `sync` policy, and closes with flush
//! (+ `sync_all` at reload and stop).
//!
//! The task blocks on its first queued command, drains whatever else is
//! queued, and writes it all in one vectored write (large ones on a blocking
//! thread, so a slow disk stalls only this file and, through the bounded
//! queue, the readers feeding it).
//!
//! Faults: a failed write (disk full, EIO, quota) never leaves a torn line
//! (the file is cut back to its last whole line) and loses nothing: the
//! lines stay pending and are retried with backoff, and while they are held
//! the task stops taking from its queue, so TCP senders wait and UDP counts
//! what it drops. A live file deleted or renamed under the daemon is noticed
//! within 200 ms and reopened at its path. An idle writer closes its file,
//! then ends and leaves the registry.

use std::fs::File;
use std::io::{self, IoSlice, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use super::open::{Member, Slot};
use super::{Command, WriterCtx};
use crate::config::{Facility, SyncPolicy};
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

/// While a write is failing, take commands only until this much is held;
/// then the queue fills and readers wait.
const HOLD_MAX_BYTES: usize = 4 << 20;

/// First and longest wait between retries of a failed write.
const RETRY_FIRST: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

/// How often the open file is compared with what its path names now.
/// At most five `lstat`s a second per busy file; a moved file gets at most
/// this much more before it is noticed.
const MOVED_CHECK_EVERY: Duration = Duration::from_millis(200);

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
    /// Messages in each of `pending`.
    pending_counts: Vec<u32>,
    /// Messages in `pending`.
    pending_count: u32,
    /// Bytes in `pending` (bounds how much one drain takes).
    pending_bytes: usize,
    /// Device and inode of the open file, to notice it moved.
    identity: Option<(u64, u64)>,
    /// When the path was last compared with the open file.
    checked_at: Instant,
    /// A write failed for a cause that may pass: `pending` is held and
    /// retried at `retry_at`.
    fault: Option<Fault>,
    /// When the `sync = N` policy next fsyncs (after a write).
    sync_due: Option<Instant>,
    /// This writer's place in the open-files budget.
    member: Arc<Member>,
    /// Held while `file` is open (`max_open_files`).
    slot: Option<Slot>,
    ctx: Arc<WriterCtx>,
}

/// A failing write being retried.
struct Fault {
    since: Instant,
    retry_at: Instant,
    backoff: Duration,
    attempts: u64,
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
            pending_counts: Vec::new(),
            pending_count: 0,
            pending_bytes: 0,
            identity: None,
            checked_at: Instant::now(),
            fault: None,
            sync_due: None,
            member: ctx.open_files.member(),
            slot: None,
            ctx,
        }
    }

    /// Runs until every sender is gone, then writes what is left and closes.
    pub(crate) async fn run(mut self, mut rx: mpsc::Receiver<Command>) {
        // One idle timer, re-armed only when it fires: arming a fresh one
        // for every command was a timer-wheel insert and removal per batch.
        let idle_after = self.ctx.file_idle;
        let idle = tokio::time::sleep(idle_after);
        tokio::pin!(idle);
        let mut last_command = Instant::now();
        let member = self.member.clone();
        loop {
            // While a write fails, hold at most HOLD_MAX_BYTES: then stop
            // taking, so the queue fills and TCP readers wait.
            let taking = self.fault.is_none() || self.pending_bytes < HOLD_MAX_BYTES;
            let retry_at = self.fault.as_ref().map(|f| f.retry_at);
            let cmd = tokio::select! {
                cmd = rx.recv(), if taking => cmd,
                () = sleep_until(retry_at), if retry_at.is_some() => {
                    self.write_out().await;
                    continue;
                }
                _ = tokio::time::sleep(PENDING_FLUSH_AFTER), if self.pending_count > 0 && self.fault.is_none() => {
                    self.write_out().await;
                    continue;
                }
                () = sleep_until(self.sync_due), if self.sync_due.is_some() => {
                    self.sync_now().await;
                    continue;
                }
                () = member.evict.notified() => {
                    // Over max_open_files and written longest ago: close
                    // (reopened on the next line).
                    self.write_out().await;
                    self.close(false).await;
                    continue;
                }
                () = &mut idle, if self.fault.is_none() => {
                    if last_command.elapsed() >= idle_after {
                        self.write_out().await;
                        self.close(false).await;
                        // Leave the registry when no reader holds our queue;
                        // the queue then closes and `recv` ends the loop.
                        self.ctx.registry.retire(&self.path, &self.facility.app_id);
                        idle.as_mut().reset(Instant::now() + idle_after);
                    } else {
                        idle.as_mut().reset(last_command + idle_after);
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
        // Stopping: one last attempt even while a fault is being retried.
        if let Some(f) = self.fault.as_mut() {
            f.retry_at = Instant::now();
        }
        self.write_out().await;
        if self.fault.is_some() && self.pending_count > 0 {
            let lost = self.pending_count;
            self.discard_pending();
            warn!(path = %self.path.display(), lost, "still cannot write at stop; lines lost");
        }
        self.close(true).await;
        if self.fault.take().is_some() {
            self.ctx.stats.writers_faulted.fetch_sub(1, Relaxed);
        }
        self.ctx.stats.writers.fetch_sub(1, Relaxed);
        debug!(path = %self.path.display(), "writer finished");
    }

    /// Takes whatever else is queued, so one write covers it all.
    async fn drain(&mut self, rx: &mut mpsc::Receiver<Command>) {
        let max = if self.fault.is_some() {
            HOLD_MAX_BYTES
        } else {
            MAX_PENDING_BYTES
        };
        while self.pending_bytes < max {
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
                self.close(true).await;
            }
            Command::Rotate(done) => {
                self.write_out().await;
                self.rotate().await;
                if let Some(done) = done {
                    let _ = done.send(());
                }
            }
            Command::Sync(done) => {
                if let Some(f) = self.fault.as_mut() {
                    f.retry_at = Instant::now();
                }
                self.write_out().await;
                let ok = self.pending.is_empty() && self.sync_now().await;
                let mark = if ok { self.mark().await } else { None };
                let _ = done.send(super::Synced { ok, mark });
            }
        }
    }

    fn push(&mut self, b: Batch) {
        if b.count == 0 {
            self.dequeued(b.data.len(), 0);
            return;
        }
        self.pending_bytes += b.data.len();
        self.pending_count += b.count;
        self.pending.push(b.data);
        self.pending_counts.push(b.count);
    }

    /// Takes lines off the queue gauges: `bytes` in `messages` of what the
    /// readers queued left `pending` (written, or dropped and counted).
    fn dequeued(&self, bytes: usize, messages: u32) {
        self.ctx.stats.dequeued(bytes as u64, u64::from(messages));
    }

    /// Drops everything pending, counting it as lost to write errors.
    fn discard_pending(&mut self) {
        self.ctx
            .stats
            .write_errors
            .fetch_add(u64::from(self.pending_count), Relaxed);
        self.dequeued(self.pending_bytes, self.pending_count);
        self.pending.clear();
        self.pending_counts.clear();
        self.pending_count = 0;
        self.pending_bytes = 0;
        if self.fault.take().is_some() {
            self.ctx.stats.writers_faulted.fetch_sub(1, Relaxed);
        }
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
            if self.fault.is_some() {
                // Writes are failing: hold it all; the limit is applied
                // again once writing works.
                return b;
            }
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
    /// member with `compress_on_write`). While a fault is being retried,
    /// does nothing before its retry time.
    async fn write_out(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        if self
            .fault
            .as_ref()
            .is_some_and(|f| Instant::now() < f.retry_at)
        {
            return;
        }
        self.check_moved().await;
        if self.file.is_none() {
            self.note_start().await;
            if self.slot.is_none() {
                self.slot = Some(self.ctx.open_files.slot(&self.member).await);
            }
        }
        let gzip = self
            .ctx
            .compressor
            .compress_on_write
            .then_some(self.ctx.compressor.level);
        let bytes = self.pending_bytes;
        let before = self.size;
        let result = match self.file.as_mut() {
            // A small append to an open file is a copy into the page cache:
            // done here, it costs microseconds, where handing it to a
            // blocking thread and back costs two thread wake-ups. With a
            // thousand files each getting a line at a time that hand-off was
            // most of the daemon's CPU. Larger drains still go to a blocking
            // thread, so a slow disk cannot stall a worker for long.
            Some(file)
                if self.regular
                    && gzip.is_none()
                    && bytes <= INLINE_WRITE_MAX
                    && self.fault.is_none() =>
            {
                write_all_vectored(file, &self.pending)
            }
            _ => self.write_blocking(gzip).await,
        };
        match result {
            Ok(written) => {
                let count = self.pending_count;
                self.dequeued(self.pending_bytes, count);
                self.pending.clear();
                self.pending_counts.clear();
                self.pending_count = 0;
                self.pending_bytes = 0;
                self.size += written;
                self.ctx.stats.written.fetch_add(u64::from(count), Relaxed);
                self.ctx.open_files.touch(&self.member);
                if let Some(f) = self.fault.take() {
                    self.ctx.stats.writers_faulted.fetch_sub(1, Relaxed);
                    info!(path = %self.path.display(), after = ?f.since.elapsed(), attempts = f.attempts, "writing resumed; no line lost");
                }
                if let (SyncPolicy::Every(every), None) = (self.facility.sync, self.sync_due) {
                    self.sync_due = Some(Instant::now() + every);
                }
                if let Some(max) = self.facility.max_size {
                    if self.size >= max {
                        self.rotate().await;
                    }
                }
            }
            Err((partial, err)) => {
                let size = if self.file.is_some() {
                    self.size
                } else {
                    before
                };
                self.write_failed(size, partial, gzip.is_some(), &err).await;
            }
        }
    }

    /// Opens the file if needed (taking its size) and writes `pending` on a
    /// blocking thread; returns the bytes the file grew by, or how many
    /// bytes were written before the error.
    async fn write_blocking(&mut self, gzip: Option<u32>) -> Result<u64, (u64, io::Error)> {
        let file = self.file.take();
        let path = self.path.clone();
        let logdir = self.ctx.logdir.clone();
        let pending = std::mem::take(&mut self.pending);
        // Retrying after a failure: reserve the space first, so a disk that
        // is still full refuses the retry whole instead of taking half a
        // line that must then be cut off again.
        let reserve = (self.fault.is_some() && gzip.is_none()).then_some(self.pending_bytes);
        let job = tokio::task::spawn_blocking(move || {
            let mut opened = None;
            let mut file = match file {
                Some(f) => f,
                None => match open_file(&logdir, &path) {
                    Ok((f, meta)) => {
                        opened = Some(meta);
                        f
                    }
                    Err(err) => return (pending, None, None, Err((0, err))),
                },
            };
            if let Some(len) = reserve {
                if let Err(err) = reserve_space(&file, len) {
                    return (pending, Some(file), opened, Err((0, err)));
                }
            }
            let written = match gzip {
                Some(level) => write_gzip_member(&mut file, &pending, level),
                None => write_all_vectored(&mut file, &pending),
            };
            (pending, Some(file), opened, written)
        });
        match job.await {
            Ok((pending, file, opened, written)) => {
                self.pending = pending;
                if let Some(meta) = opened {
                    // Freshly opened: what was there before this write.
                    self.size = meta.len;
                    self.regular = meta.regular;
                    self.identity = Some(meta.identity);
                    self.checked_at = Instant::now();
                }
                if file.is_none() {
                    self.slot = None; // the open failed
                }
                self.file = file;
                written
            }
            // The pending lines went with the task: count them as lost.
            Err(join) => {
                self.slot = None;
                Err((0, io::Error::other(join.to_string())))
            }
        }
    }

    /// A write failed after `partial` bytes (the file held `before`).
    /// Cuts the file back to its last whole line, keeps what was not
    /// written, and either holds it for a retry (a cause that may pass:
    /// disk full, EIO, quota) or, for a cause that will not (a symlink in
    /// the way, permissions), drops it and counts it.
    async fn write_failed(&mut self, before: u64, partial: u64, gzip: bool, err: &io::Error) {
        let kept = if gzip {
            // A cut gzip member cannot be finished: drop all of it.
            if partial > 0 {
                self.truncate_to(before).await;
            }
            0
        } else {
            let whole = whole_lines_prefix(&self.pending, partial);
            if whole < partial {
                self.truncate_to(before + whole).await;
            }
            whole
        };
        if kept > 0 {
            let done = self.take_written_prefix(kept);
            self.size = before + kept;
            self.ctx.stats.written.fetch_add(u64::from(done), Relaxed);
        }
        if self.pending.is_empty() && self.pending_count > 0 {
            // The lines were lost with a failed blocking task.
            self.discard_pending();
        }
        if !is_transient(err) {
            let lost = self.pending_count;
            self.discard_pending();
            if let Some(suppressed) = self.ctx.limiter.check() {
                warn!(path = %self.path.display(), cause = %err, lost, suppressed, "write failed; lines dropped");
            }
            return;
        }
        self.ctx.stats.write_retries.fetch_add(1, Relaxed);
        let now = Instant::now();
        match self.fault.as_mut() {
            Some(f) => {
                f.backoff = (f.backoff * 2).min(RETRY_MAX);
                f.retry_at = now + f.backoff;
                f.attempts += 1;
            }
            None => {
                // One line per episode for this file (and through the shared
                // limiter, so thousands of files cannot flood the log).
                if let Some(suppressed) = self.ctx.limiter.check() {
                    warn!(path = %self.path.display(), cause = %err, held = self.pending_count, suppressed, "write failed; holding the lines and retrying (senders wait)");
                }
                self.ctx.stats.writers_faulted.fetch_add(1, Relaxed);
                self.fault = Some(Fault {
                    since: now,
                    retry_at: now + RETRY_FIRST,
                    backoff: RETRY_FIRST,
                    attempts: 1,
                });
            }
        }
    }

    /// Removes the first `n` bytes of `pending` (whole lines written before
    /// a failure); returns how many messages they held. A message whose
    /// body has newlines may straddle the cut: it counts as written once
    /// its last line is.
    fn take_written_prefix(&mut self, n: u64) -> u32 {
        let mut left = usize::try_from(n).unwrap_or(usize::MAX);
        let mut done = 0;
        let mut whole = 0;
        for (buf, count) in self.pending.iter_mut().zip(self.pending_counts.iter_mut()) {
            if left == 0 {
                break;
            }
            if buf.len() <= left {
                left -= buf.len();
                done += *count;
                whole += 1;
            } else {
                let lines = memchr::memchr_iter(b'\n', &buf[..left]).count();
                let lines = u32::try_from(lines)
                    .unwrap_or(u32::MAX)
                    .min(count.saturating_sub(1));
                buf.drain(..left);
                *count -= lines;
                done += lines;
                left = 0;
            }
        }
        self.pending.drain(..whole);
        self.pending_counts.drain(..whole);
        let before = self.pending_bytes;
        self.pending_bytes = self.pending.iter().map(Vec::len).sum();
        self.pending_count -= done;
        self.dequeued(before.saturating_sub(self.pending_bytes), done);
        done
    }

    /// Cuts the open file back to `len` bytes (a torn line never stays).
    async fn truncate_to(&mut self, len: u64) {
        let Some(file) = self.file.take() else {
            return;
        };
        let job = tokio::task::spawn_blocking(move || {
            let res = file.set_len(len);
            (file, res)
        });
        match job.await {
            Ok((file, res)) => {
                if let Err(err) = res {
                    warn!(path = %self.path.display(), cause = %err, "cannot cut a partly written line off");
                }
                self.file = Some(file);
            }
            Err(err) => {
                self.slot = None;
                warn!(path = %self.path.display(), cause = %err, "truncate task failed");
            }
        }
    }

    /// Every [`MOVED_CHECK_EVERY`] at most, compares the open file with what its path
    /// names now: an operator's `rm` or `mv` (or logrotate without
    /// copytruncate) leaves us writing into a file nobody reads. Then the
    /// file is closed, so the next write reopens it at its path.
    async fn check_moved(&mut self) {
        let Some(identity) = self.identity else {
            return;
        };
        if self.file.is_none() || self.checked_at.elapsed() < MOVED_CHECK_EVERY {
            return;
        }
        self.checked_at = Instant::now();
        // One lstat, on the worker: the directory entry is in the dcache.
        let what = match std::fs::symlink_metadata(&self.path) {
            Ok(m) if (m.dev(), m.ino()) == identity => return,
            Ok(_) => "replaced or renamed",
            Err(e) if e.kind() == io::ErrorKind::NotFound => "deleted or renamed",
            Err(_) => return, // cannot tell; the write will report real trouble
        };
        self.ctx.stats.files_reopened.fetch_add(1, Relaxed);
        if let Some(suppressed) = self.ctx.limiter.check() {
            warn!(path = %self.path.display(), suppressed, "live file was {what} under the daemon; reopening it at its path");
        }
        self.close(true).await;
    }

    /// `sync = N`: flush the file's data to the disk now.
    async fn sync_now(&mut self) -> bool {
        self.sync_due = None;
        let Some(file) = self.file.take() else {
            // Nothing open: everything written was synced at its close.
            return true;
        };
        let job = tokio::task::spawn_blocking(move || {
            let res = file.sync_data();
            (file, res)
        });
        match job.await {
            Ok((file, res)) => {
                self.file = Some(file);
                if let Err(err) = res {
                    if let Some(suppressed) = self.ctx.limiter.check() {
                        warn!(path = %self.path.display(), cause = %err, suppressed, "sync failed");
                    }
                    return false;
                }
                true
            }
            Err(err) => {
                self.slot = None;
                warn!(path = %self.path.display(), cause = %err, "sync task failed");
                false
            }
        }
    }

    /// Where the live file ends now, for the broker consumer's commit.
    async fn mark(&self) -> Option<super::mark::Marked> {
        let (logdir, path) = (self.ctx.logdir.clone(), self.path.clone());
        let read = tokio::task::spawn_blocking(move || {
            super::mark::read(&logdir, &path).map(|mark| super::mark::Marked { path, mark })
        })
        .await;
        match read {
            Ok(Ok(m)) => Some(m),
            Ok(Err(err)) => {
                if let Some(suppressed) = self.ctx.limiter.check() {
                    warn!(path = %self.path.display(), cause = %err, suppressed, "cannot read where the file ends");
                }
                None
            }
            Err(_) => None,
        }
    }

    /// Drops the handle, syncing it first when `sync` asks (reload and
    /// stop always do; an eviction under `sync = never` need not).
    async fn close(&mut self, sync: bool) {
        self.sync_due = None;
        self.identity = None;
        if let Some(file) = self.file.take() {
            if sync || self.facility.sync != SyncPolicy::Never {
                let path = self.path.clone();
                let res = tokio::task::spawn_blocking(move || file.sync_all()).await;
                if let Ok(Err(err)) = res {
                    warn!(path = %path.display(), cause = %err, "sync failed");
                }
            }
            // Else the OS writes it back; close(2) costs nothing here.
        }
        // Only once the descriptor is closed may another file take the slot.
        self.slot = None;
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
        // Under `sync = never`, no fsync here: it would stall this file's
        // writes for as long as the disk takes to flush up to max_size bytes.
        // The compression job reads the data and syncs its output before the
        // backup is removed. The other policies sync first, so the backup is
        // whole on disk before it is renamed.
        let file = self.file.take();
        self.identity = None;
        self.sync_due = None;
        self.size = 0;
        let sync = self.facility.sync.at_rotation();
        let path = self.path.clone();
        let state = self.ctx.state.clone();
        let clock = self.ctx.clock.clone();
        let logdir = self.ctx.logdir.clone();
        let renamed = tokio::task::spawn_blocking(move || {
            if let (Some(f), true) = (&file, sync) {
                if let Err(err) = f.sync_all() {
                    warn!(path = %path.display(), cause = %err, "sync before rotation failed");
                }
            }
            drop(file);
            rotation::rotate_file_beneath(&logdir, &path, &state, clock.now())
        })
        .await;
        self.slot = None; // the descriptor is closed
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
        self.ctx.stats.rotations.fetch_add(1, Relaxed);
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
        let stats = self.ctx.stats.clone();
        stats.compress_backlog.fetch_add(1, Relaxed);
        rotation::spawn_compression_observed(
            job,
            &self.ctx.compressions,
            &self.ctx.compress_tracker,
            move |took, ok| {
                stats.compress_backlog.fetch_sub(1, Relaxed);
                if ok {
                    stats.compress_seconds.observe(took);
                } else {
                    stats.compress_failures.fetch_add(1, Relaxed);
                }
            },
        );
    }
}

/// What opening a live file found.
struct Opened {
    len: u64,
    regular: bool,
    identity: (u64, u64),
}

/// Opens `path` beneath `logdir` (no symlink followed) for appending.
fn open_file(logdir: &std::path::Path, path: &std::path::Path) -> io::Result<(File, Opened)> {
    let f = super::path::open_beneath(logdir, path)?;
    let meta = f.metadata()?;
    let opened = Opened {
        len: meta.len(),
        regular: meta.is_file(),
        identity: (meta.dev(), meta.ino()),
    };
    Ok((f, opened))
}

/// Writes `bufs` as one gzip member; returns what the file grew by.
fn write_gzip_member(
    file: &mut File,
    bufs: &[Vec<u8>],
    level: u32,
) -> Result<u64, (u64, io::Error)> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(level.min(9)));
    for b in bufs {
        enc.write_all(b).map_err(|e| (0, e))?;
    }
    let member = enc.finish().map_err(|e| (0, e))?;
    write_all_vectored(file, std::slice::from_ref(&member))
}

/// `write_all` over several buffers with as few `writev` calls as possible;
/// on failure, how many bytes did reach the file.
fn write_all_vectored(file: &mut File, bufs: &[Vec<u8>]) -> Result<u64, (u64, io::Error)> {
    let mut slices: Vec<IoSlice<'_>> = bufs.iter().map(|b| IoSlice::new(b)).collect();
    let mut rest: &mut [IoSlice<'_>] = &mut slices;
    let mut done = 0u64;
    // writev takes at most IOV_MAX (1024) slices per call.
    while !rest.is_empty() {
        let n = rest.len().min(1024);
        match file.write_vectored(&rest[..n]) {
            Ok(0) => return Err((done, io::ErrorKind::WriteZero.into())),
            Ok(written) => {
                done += written as u64;
                IoSlice::advance_slices(&mut rest, written);
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err((done, e)),
        }
    }
    Ok(done)
}

/// Allocates `len` bytes past the end of `file` without changing its size
/// (`fallocate(FALLOC_FL_KEEP_SIZE)`): an error means the write would not
/// fit. Filesystems without fallocate say so and are written to directly.
fn reserve_space(file: &File, len: usize) -> io::Result<()> {
    use nix::fcntl::{fallocate, FallocateFlags};
    use std::os::fd::AsRawFd;
    let end = i64::try_from(file.metadata()?.len()).unwrap_or(i64::MAX);
    let len = i64::try_from(len).unwrap_or(i64::MAX);
    match fallocate(
        file.as_raw_fd(),
        FallocateFlags::FALLOC_FL_KEEP_SIZE,
        end,
        len,
    ) {
        Ok(()) => Ok(()),
        Err(nix::errno::Errno::EOPNOTSUPP | nix::errno::Errno::ENOSYS) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Length of the longest prefix of the first `written` bytes of `bufs`
/// (taken as one stream) that ends with a newline.
fn whole_lines_prefix(bufs: &[Vec<u8>], written: u64) -> u64 {
    let mut start = 0u64;
    let mut whole = 0u64;
    for b in bufs {
        if start >= written {
            break;
        }
        let here = usize::try_from(written - start)
            .unwrap_or(usize::MAX)
            .min(b.len());
        if let Some(i) = memchr::memrchr(b'\n', &b[..here]) {
            whole = start + i as u64 + 1;
        }
        start += b.len() as u64;
    }
    whole
}

/// Whether a write error may pass by itself (space freed, a disk
/// recovering), so holding the lines and retrying is right; the rest (a
/// symlink refused, permissions, a directory in the way) would fail forever.
fn is_transient(err: &io::Error) -> bool {
    let permanent = matches!(
        err.raw_os_error(),
        Some(
            libc::ELOOP
                | libc::EISDIR
                | libc::ENOTDIR
                | libc::EACCES
                | libc::EPERM
                | libc::EROFS
                | libc::ENAMETOOLONG
                | libc::EINVAL
                | libc::EXDEV
        )
    );
    !permanent && err.kind() != io::ErrorKind::InvalidInput
}

/// Sleeps until `at`, or forever for `None` (a disabled select branch).
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_lines_prefix_stops_at_the_last_newline_written() {
        let bufs = vec![b"a\nbb\n".to_vec(), b"ccc\ndd".to_vec(), b"\n".to_vec()];
        let got: Vec<u64> = (0..=12).map(|w| whole_lines_prefix(&bufs, w)).collect();
        assert_eq!(got, [0, 0, 2, 2, 2, 5, 5, 5, 5, 9, 9, 9, 12]);
    }

    #[test]
    fn disk_full_and_eio_are_retried_a_symlink_is_not() {
        for errno in [libc::ENOSPC, libc::EIO, libc::EDQUOT, libc::EFBIG] {
            assert!(
                is_transient(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
        for errno in [libc::ELOOP, libc::EACCES, libc::EISDIR] {
            assert!(
                !is_transient(&io::Error::from_raw_os_error(errno)),
                "{errno}"
            );
        }
    }
}
