//! Writers: one task per output file ([`file::LogFile`]), found or spawned
//! through the [`Writers`] registry keyed by path.
//!
//! Readers format lines themselves and hand whole [`Batch`]es over a bounded
//! channel, so the writer only appends bytes; a full channel makes TCP
//! readers wait (backpressure) and UDP readers drop and count. The registry
//! lock is taken only when a reader meets a file it has no sender for yet.

pub mod file;
pub mod path;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, oneshot, Notify, Semaphore};
use tokio_util::task::TaskTracker;

use crate::config::{CompressorSection, Facility};
use crate::rotation::StateDb;
use crate::stats::{RateLimit, Stats};

/// Batches a file's queue may hold before readers wait. Each batch is at
/// most about one read buffer of lines, so this bounds memory per file.
pub const QUEUE_BATCHES: usize = 32;

/// Formatted lines for one file, from one reader, in arrival order.
#[derive(Debug)]
pub struct Batch {
    /// The facility the lines were routed to; its current settings
    /// (flush_every, max_size) travel with the data, so a reload reaches the
    /// writer without a separate message.
    pub facility: Arc<Facility>,
    /// Complete lines, each ending in `\n`.
    pub data: Vec<u8>,
    /// How many messages `data` holds.
    pub count: u32,
    /// End offset of each message in `data`, kept only for facilities with
    /// `max_size` (empty otherwise), so a size rotation can cut between the
    /// message that crosses the limit and the next one.
    pub ends: Vec<u32>,
}

/// What a writer task can be asked to do.
#[derive(Debug)]
pub enum Command {
    /// Append these lines.
    Write(Batch),
    /// Write out what is pending and close the file; the next write reopens
    /// it (SIGHUP, or a file moved away by an operator).
    Reopen,
    /// Rotate now if the file has content; reply when the rename is done.
    Rotate(Option<oneshot::Sender<()>>),
}

/// What every writer task shares.
#[derive(Debug)]
pub struct WriterCtx {
    /// Counters (`written`, `write_errors`).
    pub stats: Arc<Stats>,
    /// Keeps write-error warnings from flooding the daemon's log.
    pub limiter: RateLimit,
    /// Backup compression settings.
    pub compressor: CompressorSection,
    /// Tracks writer tasks so shutdown can wait for their final flush.
    pub tracker: TaskTracker,
    /// When each live file was started and last rotated (saved in workdir).
    pub state: Arc<Mutex<StateDb>>,
    /// Bounds concurrent backup compressions (they are CPU-bound).
    pub compressions: Arc<Semaphore>,
    /// Tracks compression jobs, so shutdown can let them finish in time.
    pub compress_tracker: TaskTracker,
    /// Wakes the rotation scheduler when a new live file appears.
    pub new_file: Arc<Notify>,
}

/// The registry of writer tasks, keyed by output path.
#[derive(Debug)]
pub struct Writers {
    /// Open channels to writer tasks. `None` once shutdown has begun, so no
    /// new writer is spawned after the final drain started.
    map: Mutex<Option<HashMap<PathBuf, mpsc::Sender<Command>>>>,
    ctx: Arc<WriterCtx>,
}

// === impl Writers ===

impl Writers {
    /// An empty registry.
    pub fn new(ctx: WriterCtx) -> Writers {
        Writers {
            map: Mutex::new(Some(HashMap::new())),
            ctx: Arc::new(ctx),
        }
    }

    /// The shared writer context.
    pub fn ctx(&self) -> &Arc<WriterCtx> {
        &self.ctx
    }

    /// The sender for `path`, spawning its writer task on first use.
    /// `None` after [`Writers::close`].
    pub fn sender(&self, path: &Path, facility: &Arc<Facility>) -> Option<mpsc::Sender<Command>> {
        let mut guard = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let map = guard.as_mut()?;
        if let Some(tx) = map.get(path) {
            if !tx.is_closed() {
                return Some(tx.clone());
            }
        }
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        let file = file::LogFile::new(path.to_path_buf(), facility.clone(), self.ctx.clone());
        self.ctx.tracker.spawn(file.run(rx));
        map.insert(path.to_path_buf(), tx.clone());
        Some(tx)
    }

    /// Senders of every writer alive now.
    pub fn all(&self) -> Vec<(PathBuf, mpsc::Sender<Command>)> {
        let guard = self.map.lock().unwrap_or_else(|e| e.into_inner());
        guard
            .as_ref()
            .map(|m| m.iter().map(|(p, t)| (p.clone(), t.clone())).collect())
            .unwrap_or_default()
    }

    /// Asks every writer to close and reopen its file (SIGHUP).
    pub async fn reopen_all(&self) {
        for (_, tx) in self.all() {
            let _ = tx.send(Command::Reopen).await;
        }
    }

    /// Drops the registry's senders: each writer finishes once the readers
    /// holding its other senders are gone, after writing what they sent.
    pub fn close(&self) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).take();
    }
}
