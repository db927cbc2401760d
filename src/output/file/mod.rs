//! The file output: one writer task per log file ([`writer::LogFile`]),
//! found or spawned through the [`Writers`] registry keyed by path; where a
//! file is ([`path`]); and the timer that rotates files on schedule
//! ([`scheduler`]).
//!
//! The registry lock is taken only when a reader meets a file it has no
//! sender for yet; lines themselves go over each file's bounded queue.

pub(crate) mod format;
pub(crate) mod line;
pub(crate) mod path;
pub(crate) mod scheduler;
pub(crate) mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
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
}

impl Command {
    /// The batch of a `Write` handed back by a closed or full queue.
    pub(crate) fn into_batch(self) -> Batch {
        match self {
            Command::Write(b) => b,
            // Only `Write`s are sent through `Handle`.
            Command::Reopen | Command::Rotate(_) => unreachable!("only writes go through a Handle"),
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
}

/// The registry of writer tasks, keyed by output path.
#[derive(Debug)]
pub(crate) struct Writers {
    /// Open channels to writer tasks. `None` once shutdown has begun, so no
    /// new writer is spawned after the final drain started.
    map: Mutex<Option<HashMap<PathBuf, mpsc::Sender<Command>>>>,
    ctx: Arc<WriterCtx>,
}

// === impl Writers ===

impl Writers {
    /// An empty registry writing under `ctx.logdir`.
    pub(crate) fn new(ctx: WriterCtx) -> Writers {
        Writers {
            map: Mutex::new(Some(HashMap::new())),
            ctx: Arc::new(ctx),
        }
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

    /// The sender for the file of `facility` and `host`.
    pub(crate) fn sender_for(
        &self,
        facility: &Arc<Facility>,
        host: Option<&str>,
    ) -> Option<mpsc::Sender<Command>> {
        self.sender(&self.path_for(facility, host), facility)
    }

    /// The sender for `path`, spawning its writer task on first use.
    /// `None` after [`Writers::close`].
    pub(crate) fn sender(
        &self,
        path: &Path,
        facility: &Arc<Facility>,
    ) -> Option<mpsc::Sender<Command>> {
        let mut guard = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let map = guard.as_mut()?;
        if let Some(tx) = map.get(path) {
            if !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let file = writer::LogFile::new(path.to_path_buf(), facility.clone(), self.ctx.clone());
        self.ctx.tracker.spawn(file.run(rx));
        map.insert(path.to_path_buf(), tx.clone());
        Some(tx)
    }

    /// Senders of every writer alive now.
    pub(crate) fn all(&self) -> Vec<(PathBuf, mpsc::Sender<Command>)> {
        let guard = self.map.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|m| m.iter().map(|(p, t)| (p.clone(), t.clone())).collect())
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
        self.map.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
