//! The daemon's own log: tracing events to `[log] filename` and, in the
//! foreground, to stderr, at `[log] level`; the file rotates per
//! `[log] when` and keeps `[log] backup_count` backups, with the same
//! naming, compression and state as application logs.

use std::fs::{File, OpenOptions};
use std::io::{self, IsTerminal, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::Local;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriter, MakeWriterExt};

use crate::config::CompressorSection;
use crate::rotation::schedule::Schedule;
use crate::rotation::{self, started_on_disk, FileState, StateDb};

/// The daemon's log file, shared by every tracing event and swapped by
/// rotation under the same lock, so no line is split across two files.
#[derive(Clone, Debug)]
pub struct LogSink {
    path: PathBuf,
    file: Arc<Mutex<Option<File>>>,
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
    let sink = match file {
        Some(path) => Some(LogSink {
            path: path.to_path_buf(),
            file: Arc::new(Mutex::new(Some(open_log(path)?))),
        }),
        None => None,
    };
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

/// Rotates the daemon's own log on `when` until `token` is cancelled.
pub async fn rotate_loop(
    sink: LogSink,
    when: Schedule,
    backup_count: u32,
    compressor: CompressorSection,
    state: Arc<Mutex<StateDb>>,
    token: CancellationToken,
) {
    loop {
        let st = {
            let db = state.lock().unwrap_or_else(|e| e.into_inner());
            db.get(&sink.path)
        };
        let st = match st {
            Some(st) => st,
            None => {
                let started = started_on_disk(&sink.path)
                    .ok()
                    .flatten()
                    .unwrap_or_else(Local::now);
                let st = FileState::new(started);
                save_state(&state, &sink.path, st);
                st
            }
        };
        let base = st.last_rotation.unwrap_or(st.started).max(st.started);
        let Some(due) = when.next_after(&base) else {
            return;
        };
        let wait = (due - Local::now()).to_std().unwrap_or(Duration::ZERO);
        if !wait.is_zero() {
            tokio::select! {
                // Re-check at least every 30 s: wall-clock jumps move `due`.
                _ = tokio::time::sleep(wait.min(Duration::from_secs(30))) => continue,
                _ = token.cancelled() => return,
            }
        }
        let s = sink.clone();
        let st2 = state.clone();
        let c = compressor.clone();
        let res =
            tokio::task::spawn_blocking(move || rotate_now(&s, st.started, backup_count, &c, &st2))
                .await;
        match res {
            Ok(Ok(Some(b))) => info!(backup = %b.display(), "daemon log rotated"),
            Ok(Ok(None)) => {}
            Ok(Err(err)) => warn!(cause = %err, "daemon log rotation failed"),
            Err(err) => warn!(cause = %err, "daemon log rotation task failed"),
        }
    }
}

fn save_state(state: &Mutex<StateDb>, path: &Path, st: FileState) {
    let mut db = state.lock().unwrap_or_else(|e| e.into_inner());
    db.set(path, st);
    if let Err(err) = db.save() {
        warn!(cause = %err, "cannot save rotation state");
    }
}

/// Swaps the file under the sink's lock, then compresses and prunes.
fn rotate_now(
    sink: &LogSink,
    started: chrono::DateTime<Local>,
    backup_count: u32,
    compressor: &CompressorSection,
    state: &Mutex<StateDb>,
) -> io::Result<Option<PathBuf>> {
    let now = Local::now();
    let backup = {
        let mut file = sink.file.lock().unwrap_or_else(|e| e.into_inner());
        let backup = rotation::rename_live(&sink.path, started.naive_local())?;
        if backup.is_some() {
            *file = Some(open_log(&sink.path)?);
        }
        backup
    };
    let started = if backup.is_some() { now } else { started };
    save_state(
        state,
        &sink.path,
        FileState {
            started,
            last_rotation: Some(now),
        },
    );
    if let Some(b) = &backup {
        let compress = Some((compressor.format, compressor.level));
        rotation::compress_and_prune(&sink.path, b, compress, backup_count as usize)?;
    }
    Ok(backup)
}
