//! The file output: one writer task per log file ([`writer::LogFile`]),
//! found or spawned through the [`Writers`] registry keyed by path; where a
//! file is ([`path`]); and the timer that rotates files on schedule
//! ([`scheduler`]).
//!
//! The registry lock is taken only when a reader meets a file it has no
//! sender for yet; lines themselves go over each file's bounded queue.
//! Writers for idle files end and leave the registry; open descriptors are
//! held to `max_open_files` by [`open::OpenFiles`].

pub(crate) mod format;
pub(crate) mod line;
pub(crate) mod mark;
pub(crate) mod open;
pub(crate) mod path;
pub(crate) mod scheduler;
pub(crate) mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::task::TaskTracker;

use super::Batch;
use crate::clock::Clock;
use crate::config::{CompressorSection, Facility};
use crate::ratelimit::RateLimit;
use crate::rotation::StateDb;
use crate::stats::Stats;

/// Batches a file's queue may hold before readers wait. Each batch is at
/// most about one read buffer of lines, so this bounds memory per file.
pub(crate) const QUEUE_BATCHES: usize = 32;

/// What a writer task can be asked to do.
#[derive(Debug)]
pub(crate) enum Command {
    /// Append these lines.
    Write(Batch),
    /// Write out what is pending and close the file; the next write reopens
    /// it (SIGHUP, or a file moved away by an operator).
    Reopen,
    /// Rotate now if the file has content; reply when the rename is done.
    Rotate(Option<oneshot::Sender<()>>),
    /// Write out everything queued before this and `fdatasync` it; reply
    /// whether all of it is on disk, and where the file then ends. The
    /// broker consumer (issue 16) records a partition's stream position
    /// only after this says yes.
    Sync(oneshot::Sender<Synced>),
}

/// The answer to [`Command::Sync`].
#[derive(Debug)]
pub(crate) struct Synced {
    /// Everything queued before the `Sync` is written and fdatasynced.
    pub(crate) ok: bool,
    /// Where the file ended then; `None` when it could not be read.
    pub(crate) mark: Option<mark::Marked>,
}

impl Command {
    /// The batch of a `Write` handed back by a closed or full queue.
    pub(crate) fn into_batch(self) -> Batch {
        match self {
            Command::Write(b) => b,
            // Only `Write`s are sent through `Handle`.
            Command::Reopen | Command::Rotate(_) | Command::Sync(_) => {
                unreachable!("only writes go through a Handle")
            }
        }
    }
}

/// What every writer task shares.
#[derive(Debug)]
pub(crate) struct WriterCtx {
    /// `[main] logdir`: every file is opened beneath it, following no link.
    pub(crate) logdir: PathBuf,
    /// Counters (`written`, `write_errors`).
    pub(crate) stats: Arc<Stats>,
    /// Keeps write-error warnings from flooding the daemon's log.
    pub(crate) limiter: RateLimit,
    /// Backup compression settings.
    pub(crate) compressor: CompressorSection,
    /// Tracks writer tasks so shutdown can wait for their final flush.
    pub(crate) tracker: TaskTracker,
    /// When each live file was started and last rotated (saved in workdir).
    pub(crate) state: Arc<Mutex<StateDb>>,
    /// Bounds concurrent backup compressions (they are CPU-bound).
    pub(crate) compressions: Arc<Semaphore>,
    /// Tracks compression jobs, so shutdown can let them finish in time.
    pub(crate) compress_tracker: TaskTracker,
    /// Wakes the rotation scheduler when a new live file appears.
    pub(crate) new_file: Arc<Notify>,
    /// The wall clock rotation decisions read (a test clock in tests).
    pub(crate) clock: Clock,
    /// `[server] max_open_files`: descriptors all writers may hold.
    pub(crate) open_files: Arc<open::OpenFiles>,
    /// `[server] max_files_per_app`.
    pub(crate) max_files_per_app: usize,
    /// A file not written to for this long is closed and its writer ends.
    pub(crate) file_idle: std::time::Duration,
    /// Every writer task by path (filled by [`Writers::new`]).
    pub(crate) registry: Registry,
}

/// Why no output could be had for a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NoOutput {
    /// Shutdown began: no new writer is started after the final drain.
    ShuttingDown,
    /// The application already has `max_files_per_app` files in use.
    TooManyFiles,
}

/// The registry of writer tasks, keyed by output path.
#[derive(Debug)]
pub(crate) struct Writers {
    ctx: Arc<WriterCtx>,
}

/// Open channels to writer tasks. `None` once shutdown has begun, so no new
/// writer is spawned after the final drain started.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    map: Mutex<Option<RegistryMap>>,
}

#[derive(Debug, Default)]
struct RegistryMap {
    files: HashMap<PathBuf, mpsc::Sender<Command>>,
    /// Files in use per application, for `max_files_per_app`.
    per_app: HashMap<Box<str>, usize>,
}

// === impl Writers ===

impl Writers {
    /// An empty registry writing under `ctx.logdir`.
    pub(crate) fn new(ctx: WriterCtx) -> Writers {
        *ctx.registry.map.lock().unwrap_or_else(|e| e.into_inner()) = Some(RegistryMap::default());
        Writers { ctx: Arc::new(ctx) }
    }

    /// The shared writer context.
    pub(crate) fn ctx(&self) -> &Arc<WriterCtx> {
        &self.ctx
    }

    /// `[main] logdir`.
    pub(crate) fn logdir(&self) -> &Path {
        &self.ctx.logdir
    }

    /// The live file for `facility` (and `host` with `file_per_host`).
    pub(crate) fn path_for(&self, facility: &Facility, host: Option<&str>) -> PathBuf {
        path::file_path(
            &self.ctx.logdir,
            facility,
            host,
            self.ctx.compressor.live_ext(),
        )
    }

    /// The sender for the file of `facility` and `host`, spawning its
    /// writer on first use unless the app is at `max_files_per_app`.
    pub(crate) fn sender_for(
        &self,
        facility: &Arc<Facility>,
        host: Option<&str>,
    ) -> Result<mpsc::Sender<Command>, NoOutput> {
        self.get_or_spawn(&self.path_for(facility, host), facility, true)
    }

    /// The sender for `path`, spawning its writer task on first use (the
    /// scheduler: a due rotation is never refused). `None` after
    /// [`Writers::close`].
    pub(crate) fn sender(
        &self,
        path: &Path,
        facility: &Arc<Facility>,
    ) -> Option<mpsc::Sender<Command>> {
        self.get_or_spawn(path, facility, false).ok()
    }

    fn get_or_spawn(
        &self,
        path: &Path,
        facility: &Arc<Facility>,
        capped: bool,
    ) -> Result<mpsc::Sender<Command>, NoOutput> {
        let mut guard = self.ctx.registry.lock();
        let map = guard.as_mut().ok_or(NoOutput::ShuttingDown)?;
        if let Some(tx) = map.files.get(path) {
            return Ok(tx.clone());
        }
        let in_use = map
            .per_app
            .get(facility.app_id.as_str())
            .copied()
            .unwrap_or(0);
        if capped && in_use >= self.ctx.max_files_per_app {
            return Err(NoOutput::TooManyFiles);
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let file = writer::LogFile::new(path.to_path_buf(), facility.clone(), self.ctx.clone());
        self.ctx.stats.writers.fetch_add(1, Relaxed);
        self.ctx.tracker.spawn(file.run(rx));
        map.files.insert(path.to_path_buf(), tx.clone());
        *map.per_app
            .entry(facility.app_id.as_str().into())
            .or_default() += 1;
        Ok(tx)
    }

    /// Whether a writer for `path` is alive now.
    pub(crate) fn has(&self, path: &Path) -> bool {
        self.ctx
            .registry
            .lock()
            .as_ref()
            .is_some_and(|m| m.files.contains_key(path))
    }

    /// Senders of every writer alive now.
    pub(crate) fn all(&self) -> Vec<(PathBuf, mpsc::Sender<Command>)> {
        let guard = self.ctx.registry.lock();
        guard
            .as_ref()
            .map(|m| {
                m.files
                    .iter()
                    .map(|(p, t)| (p.clone(), t.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Asks every writer to close and reopen its file (SIGHUP).
    pub(crate) async fn reopen_all(&self) {
        for (_, tx) in self.all() {
            let _ = tx.send(Command::Reopen).await;
        }
    }

    /// Drops the registry's senders: each writer finishes once the readers
    /// holding its other senders are gone, after writing what they sent.
    pub(crate) fn close(&self) {
        self.ctx.registry.lock().take();
    }
}

// === impl Registry ===

impl Registry {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<RegistryMap>> {
        self.map.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Removes the idle writer of `path` if nothing but the registry can
    /// reach its queue (no reader caches a sender): then, under this lock,
    /// nobody can send to it any more, and the task may end. `true` when
    /// removed (the writer's queue then closes once it is empty).
    pub(crate) fn retire(&self, path: &Path, app_id: &str) -> bool {
        let mut guard = self.lock();
        let Some(map) = guard.as_mut() else {
            return false; // shutting down: the registry let go already
        };
        let Some(tx) = map.files.get(path) else {
            return false;
        };
        if tx.strong_count() > 1 {
            return false;
        }
        map.files.remove(path);
        if let Some(n) = map.per_app.get_mut(app_id) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.per_app.remove(app_id);
            }
        }
        true
    }
}
