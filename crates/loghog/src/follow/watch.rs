//! Wake-ups for the agent's loop: `notify` watches the DIRECTORY of every
//! followed file (a rename or a new file shows there, and inotify reports
//! writes to the files inside it), with its poll watcher as the fallback
//! when inotify cannot be used (limits exhausted, a filesystem without it).
//!
//! An event only says "look again": the loop re-checks every file itself,
//! so a missed or coalesced event costs latency, never data, and the loop
//! also looks on a timer whatever the watcher says.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use notify::{PollWatcher, RecommendedWatcher, RecursiveMode, Watcher};

/// How often a wait looks at the shutdown flag.
pub const STOP_CHECK: Duration = Duration::from_millis(100);

/// Which watcher to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum WatchMode {
    /// inotify (the platform's watcher), polling when it cannot be set up.
    #[default]
    Auto,
    /// Always poll (network filesystems, where inotify sees no remote writes).
    Poll,
}

/// The live watcher, whichever it is.
enum Backend {
    Native(RecommendedWatcher),
    Poll(PollWatcher),
}

/// Watches directories and turns their events into wake-ups.
pub struct DirWatch {
    /// The watcher; dropped with `DirWatch`, which stops it.
    backend: Backend,
    /// Directories watched so far; one that did not exist yet is retried
    /// on every [`DirWatch::watch_missing`].
    watched: BTreeSet<PathBuf>,
    /// Directories to watch (parents of every followed file).
    wanted: BTreeSet<PathBuf>,
    /// One message per event; the content does not matter.
    events: Receiver<()>,
}

// === impl DirWatch ===

impl DirWatch {
    /// Starts a watcher for the parent directories of `files`.
    ///
    /// # Errors
    /// Only when not even the poll watcher can be created.
    pub fn start(
        files: &[PathBuf],
        mode: WatchMode,
        poll_interval: Duration,
    ) -> Result<DirWatch, notify::Error> {
        let (tx, events) = mpsc::channel();
        let poll_tx = tx.clone();
        let backend = match mode {
            WatchMode::Auto => match RecommendedWatcher::new(
                move |_res: notify::Result<notify::Event>| {
                    let _ = tx.send(());
                },
                notify::Config::default(),
            ) {
                Ok(w) => Some(Backend::Native(w)),
                Err(e) => {
                    tracing::warn!(cause = %e, "file watcher unavailable, polling instead");
                    None
                }
            },
            WatchMode::Poll => None,
        };
        let backend = match backend {
            Some(b) => b,
            None => Backend::Poll(PollWatcher::new(
                move |_res: notify::Result<notify::Event>| {
                    let _ = poll_tx.send(());
                },
                notify::Config::default()
                    .with_poll_interval(poll_interval)
                    .with_compare_contents(false),
            )?),
        };
        let wanted = files.iter().map(|f| parent_dir(f)).collect();
        let mut watch = DirWatch {
            backend,
            watched: BTreeSet::new(),
            wanted,
            events,
        };
        watch.watch_missing();
        Ok(watch)
    }

    /// Whether inotify (or the platform's native watcher) is in use.
    pub fn is_native(&self) -> bool {
        matches!(self.backend, Backend::Native(_))
    }

    /// Adds a watch for every wanted directory not watched yet (a directory
    /// that appears after start-up, e.g. a log dir created by the service).
    pub fn watch_missing(&mut self) {
        for dir in &self.wanted {
            if self.watched.contains(dir) {
                continue;
            }
            let res = match &mut self.backend {
                Backend::Native(w) => w.watch(dir, RecursiveMode::NonRecursive),
                Backend::Poll(w) => w.watch(dir, RecursiveMode::NonRecursive),
            };
            if res.is_ok() {
                self.watched.insert(dir.clone());
            }
        }
    }

    /// Waits until an event arrives, `timeout` passes or `stop` is set,
    /// then swallows every event already queued (one look covers them all).
    /// `stop` is checked every [`STOP_CHECK`], so a shutdown is prompt
    /// even with a long poll interval.
    pub fn wait(&self, timeout: Duration, stop: &AtomicBool) {
        let start = Instant::now();
        loop {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            let left = timeout.saturating_sub(start.elapsed());
            if left.is_zero() {
                return;
            }
            match self.events.recv_timeout(left.min(STOP_CHECK)) {
                Ok(()) => {
                    while self.events.try_recv().is_ok() {}
                    return;
                }
                Err(RecvTimeoutError::Timeout) => {}
                // The watcher is gone (it never is while `self` lives):
                // the timer alone paces the loop then.
                Err(RecvTimeoutError::Disconnected) => std::thread::sleep(left.min(STOP_CHECK)),
            }
        }
    }
}

/// The directory a followed file lives in (`.` for a bare file name).
fn parent_dir(file: &Path) -> PathBuf {
    match file.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}
