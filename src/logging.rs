//! The daemon's own log: tracing events to `[log] filename` and, in the
//! foreground, to stderr, at `[log] level`; the file rotates per
//! `[log] when` and keeps `[log] backup_count` backups through the same
//! rotation transaction, compression limit and state as application logs
//! ([`OwnLog::rotate_loop`]), reading the daemon's (injectable) clock.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter, MakeWriterExt};

use crate::clock::Clock;
use crate::compress::Codec;
use crate::rotation::schedule::Schedule;
use crate::rotation::{self, started_on_disk, FileState, StateDb};

/// The first wait after a failed own-log rotation; it doubles per failure.
const RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two attempts of a failing own-log rotation.
const RETRY_MAX: Duration = Duration::from_secs(300);

/// The daemon's log file, shared by every tracing event and swapped by
/// rotation under the same lock, so no line is split across two files.
#[derive(Clone, Debug)]
pub struct LogSink {
    path: PathBuf,
    file: Arc<Mutex<Option<File>>>,
}

// === impl LogSink ===

impl LogSink {
    /// A sink appending to `path` (created, with its directory), not yet
    /// installed as any subscriber's writer: [`init`] does that; in-process
    /// tests give it to the daemon only to have it rotated.
    ///
    /// # Errors
    /// The file cannot be created or opened.
    pub fn open(path: &Path) -> io::Result<LogSink> {
        Ok(LogSink {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(Some(open_log(path)?))),
        })
    }

    /// Opens the live path again and swaps it in under the lock, so the
    /// next event goes to the new file and none is split between two.
    fn reopen(&self) -> io::Result<()> {
        let file = open_log(&self.path)?;
        *self.file.lock().unwrap_or_else(|e| e.into_inner()) = Some(file);
        Ok(())
    }
}

/// Holds the sink's lock for one event's write.
pub struct SinkGuard<'a>(MutexGuard<'a, Option<File>>);

impl Write for SinkGuard<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self.0.as_mut() {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for LogSink {
    type Writer = SinkGuard<'a>;
    fn make_writer(&'a self) -> SinkGuard<'a> {
        SinkGuard(self.file.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

fn open_log(path: &Path) -> io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o640)
        .open(path)
}

/// Installs the global subscriber; returns the file sink, if any, for
/// rotation.
///
/// # Errors
/// The log file cannot be created or opened.
pub fn init(
    level: tracing::Level,
    file: Option<&Path>,
    to_stderr: bool,
) -> io::Result<Option<LogSink>> {
    let sink = file.map(LogSink::open).transpose()?;
    let writer = match (sink.clone(), to_stderr) {
        (Some(s), true) => BoxMakeWriter::new(std::io::stderr.and(s)),
        (Some(s), false) => BoxMakeWriter::new(s),
        (None, _) => BoxMakeWriter::new(std::io::stderr),
    };
    let ansi = to_stderr && file.is_none() && std::io::stderr().is_terminal();
    // A second init (tests in one process) keeps the first subscriber.
    let _ = tracing_subscriber::fmt()
        .with_writer(writer)
        .with_max_level(level)
        .with_ansi(ansi)
        .with_target(false)
        .try_init();
    Ok(sink)
}

/// The daemon's own log as rotation sees it: what [`OwnLog::rotate_loop`]
/// needs from `daemon::run`.
#[derive(Debug)]
pub struct OwnLog {
    /// The file tracing writes to.
    pub sink: LogSink,
    /// `[log] when`.
    pub when: Schedule,
    /// `[log] backup_count`.
    pub backup_count: u32,
    /// `[compressor] format` and `level` (the own log is never gzip-on-write).
    pub compress: (Codec, u32),
    /// The rotation state shared with the file writers.
    pub state: Arc<Mutex<StateDb>>,
    /// The daemon's `compression_jobs` limit, shared with the file writers.
    pub compressions: Arc<Semaphore>,
    /// Compression jobs, which shutdown waits on.
    pub compress_tracker: TaskTracker,
    /// The wall clock rotation reads (a test clock in tests).
    pub clock: Clock,
}

/// Waits after failed attempts: [`RETRY_FIRST`], doubling up to
/// [`RETRY_MAX`], from the start again after a success.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Backoff {
    /// The wait after the next failure.
    next: Duration,
}

// === impl Backoff ===

impl Backoff {
    fn new() -> Backoff {
        Backoff { next: RETRY_FIRST }
    }

    /// The wait after one more failure.
    fn fail(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(RETRY_MAX);
        wait
    }
}

// === impl OwnLog ===

impl OwnLog {
    /// Rotates the daemon's own log on `when` until `token` is cancelled.
    /// A failed rotation (say the log directory is not writable, issue 12)
    /// is logged once and retried after a wait that doubles per failure.
    pub async fn rotate_loop(self, token: CancellationToken) {
        let mut backoff = Backoff::new();
        loop {
            let st = match self.file_state().await {
                Ok(st) => st,
                Err(err) => {
                    warn!(cause = %err, "daemon log rotation task failed");
                    return;
                }
            };
            let Some(due) = st.due(&self.when) else {
                return;
            };
            let wait = rotation::sleep_before(Some(due), self.clock.now());
            if !wait.is_zero() {
                tokio::select! {
                    // Re-planned every REPLAN_INTERVAL: wall-clock jumps move `due`.
                    _ = tokio::time::sleep(wait) => continue,
                    _ = token.cancelled() => return,
                }
            }
            let sink = self.sink.clone();
            let state = self.state.clone();
            let now = self.clock.now();
            let res = tokio::task::spawn_blocking(move || rotate_now(&sink, &state, now)).await;
            let err = match res {
                Ok(Ok(rotated)) => {
                    backoff = Backoff::new();
                    self.finish(rotated);
                    continue;
                }
                Ok(Err(err)) => err.to_string(),
                Err(err) => err.to_string(),
            };
            let retry_in = backoff.fail();
            warn!(cause = %err, ?retry_in, "daemon log rotation failed");
            tokio::select! {
                _ = tokio::time::sleep(retry_in) => {}
                _ = token.cancelled() => return,
            }
        }
    }

    /// The own log's state, recorded (from the file's times, else now) the
    /// first time this daemon sees it.
    async fn file_state(&self) -> Result<FileState, tokio::task::JoinError> {
        let path = self.sink.path.clone();
        let state = self.state.clone();
        let now = self.clock.now();
        tokio::task::spawn_blocking(move || {
            let mut db = rotation::lock(&state);
            if let Some(st) = db.get(&path) {
                return st;
            }
            let started = started_on_disk(&path).ok().flatten().unwrap_or(now);
            let st = FileState::new(started);
            db.set(&path, st);
            if let Err(err) = db.save() {
                warn!(cause = %err, "cannot save rotation state");
            }
            st
        })
        .await
    }

    /// Logs a rotation and hands its backup to compression.
    fn finish(&self, rotated: Rotated) {
        if let Err(err) = &rotated.reopened {
            // Events still go to the old handle (the backup, if one was
            // made); the next rotation tries to reopen again.
            warn!(path = %self.sink.path.display(), cause = %err, "cannot open a new daemon log; writing on into the old file");
        }
        let Some(backup) = rotated.backup else {
            return;
        };
        info!(backup = %backup.display(), "daemon log rotated");
        if rotated.reopened.is_err() {
            // Still being written: start-up recovery compresses it.
            return;
        }
        let job = rotation::CompressJob {
            live: self.sink.path.clone(),
            backup,
            compress: Some(self.compress),
            keep: self.backup_count as usize,
            beneath: None,
        };
        rotation::spawn_compression(job, &self.compressions, &self.compress_tracker);
    }
}

/// What one own-log rotation did.
struct Rotated {
    /// The backup made, if the file had content.
    backup: Option<PathBuf>,
    /// Whether the live path could be opened again.
    reopened: io::Result<()>,
}

/// The rotation transaction, then the sink's switch to a fresh file. Events
/// logged between the rename and the switch land at the end of the backup,
/// which is compressed only afterwards. The live path is reopened after
/// every rotation, so a file an operator deleted comes back.
fn rotate_now(sink: &LogSink, state: &Mutex<StateDb>, now: DateTime<Local>) -> io::Result<Rotated> {
    let backup = rotation::rotate_file(&sink.path, state, now)?;
    Ok(Rotated {
        backup,
        reopened: sink.reopen(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let mut b = Backoff::new();
        let waits: Vec<u64> = (0..12).map(|_| b.fail().as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }
}
