//! The file-following agent behind `loghog-send --follow FILE...`: reads
//! whole lines from files as `tail -F` does (rename rotation, copytruncate,
//! files that appear later) and ships each line as one message.
//!
//! Delivery: read a batch, ship it, flush it, and only then record the new
//! positions (inode + offset per file) in the state file, so after a
//! restart nothing is skipped and nothing is sent twice beyond the last
//! unacknowledged batch. While a flush fails (daemon down) the agent reads
//! nothing more and retries with backoff: the files are the buffer, and at
//! most `max_batch_lines` lines are ever queued in the client, so a client
//! whose `max_buffer` is at least that never has to drop one.
//!
//! Layout: [`tail`] (one path and its files), [`parse`] (`--parse`),
//! [`state`] (the state file), [`watch`] (inotify, or polling).

pub mod parse;
pub mod state;
mod tail;
pub mod watch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use parse::{Format, UnknownFormat};
pub use state::StateError;
pub use watch::WatchMode;

use state::State;
use tail::{Budget, Tail};
use watch::DirWatch;

/// Where the agent's lines go: implemented for `loghog::Client`, and by
/// tests for a bare TCP sender.
pub trait Ship {
    /// Queues one message; never blocks.
    fn send(&self, module: &str, body: &str);

    /// Returns `Ok` once everything queued before the call was written to
    /// the daemon, or an error when that did not happen within `timeout`.
    /// What was queued must stay queued after an error: the agent does not
    /// send it again.
    ///
    /// # Errors
    /// Any reason the queue could not be written (daemon down, timeout).
    fn flush(&self, timeout: Duration) -> Result<(), Box<dyn std::error::Error + Send + Sync>>;
}

/// The client ships the agent's lines: `flush` is Ok once every line
/// queued before it reached the daemon's socket; on an error the lines stay
/// queued in the client, which never drops them as long as a batch fits its
/// `max_buffer` (see [`FollowOptions::max_batch_lines`]).
impl Ship for crate::Client {
    fn send(&self, module: &str, body: &str) {
        crate::Client::send(self, module, body);
    }

    fn flush(&self, timeout: Duration) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
        crate::Client::flush(self, timeout).map_err(Into::into)
    }
}

/// How to follow.
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// Module every line is sent under (`""` is the app's root facility).
    pub module: String,
    /// `--state PATH`: where positions are kept across restarts. Without
    /// it a restart starts over at the end of every file.
    pub state_path: Option<PathBuf>,
    /// `--parse`: how a line becomes a body.
    pub format: Format,
    /// Read files that exist at the first start (and have no state entry)
    /// from the beginning instead of from their end. Files that appear
    /// later, or replace a rotated one, are always read from the beginning.
    pub from_start: bool,
    /// Lines per batch: the most ever queued in the client unflushed. Keep
    /// it at or below the client's `max_buffer`, or the client may drop.
    pub max_batch_lines: usize,
    /// Body bytes per batch (a batch ends at whichever limit comes first):
    /// bounds what the client holds when lines are long.
    pub max_batch_bytes: usize,
    /// Longer lines are cut into pieces of this many bytes, so each piece
    /// fits the daemon's `max_msg_size` (65536 by default) after JSON
    /// escaping.
    pub max_line_bytes: usize,
    /// How long one flush may take before it counts as failed.
    pub flush_timeout: Duration,
    /// The longest wait between retries of a failed flush.
    pub max_backoff: Duration,
    /// How often every file is looked at without an event (and the poll
    /// watcher's interval).
    pub poll_interval: Duration,
    /// How long a rotated-away file is still read after it was replaced and
    /// went quiet: a writer keeps writing to it until it reopens its log.
    pub rotate_wait: Duration,
    /// inotify with a polling fallback, or polling only.
    pub watch: WatchMode,
    /// Set by the caller (on SIGTERM/SIGINT) to stop [`run`] cleanly.
    pub shutdown: Arc<AtomicBool>,
}

impl Default for FollowOptions {
    fn default() -> FollowOptions {
        FollowOptions {
            module: String::new(),
            state_path: None,
            format: Format::Raw,
            from_start: false,
            max_batch_lines: 1000,
            max_batch_bytes: 4 * 1024 * 1024,
            max_line_bytes: 16 * 1024,
            flush_timeout: Duration::from_secs(5),
            max_backoff: Duration::from_secs(5),
            poll_interval: Duration::from_secs(1),
            rotate_wait: Duration::from_secs(5),
            watch: WatchMode::Auto,
            shutdown: Arc::new(AtomicBool::new(false)),
        }
    }
}

/// Why the agent stopped on its own.
#[derive(Debug)]
pub enum FollowError {
    /// The state file cannot be read (the agent will not guess where to
    /// resume) or written (positions could not be recorded).
    State(StateError),
    /// Not even the poll watcher could be started.
    Watch(notify::Error),
    /// Options that cannot work.
    Options(&'static str),
}

impl std::fmt::Display for FollowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FollowError::State(e) => write!(f, "{e}"),
            FollowError::Watch(e) => write!(f, "cannot watch files: {e}"),
            FollowError::Options(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for FollowError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            FollowError::State(e) => Some(e),
            FollowError::Watch(e) => Some(e),
            FollowError::Options(_) => None,
        }
    }
}

impl From<StateError> for FollowError {
    fn from(e: StateError) -> FollowError {
        FollowError::State(e)
    }
}

/// Follows `files` until `opts.shutdown` is set, shipping every new line:
/// [`Follower::start`] then [`Follower::run`].
///
/// # Errors
/// As [`Follower::start`], and an unwritable state file.
pub fn run(files: &[PathBuf], opts: &FollowOptions, ship: &dyn Ship) -> Result<(), FollowError> {
    Follower::start(files, opts.clone())?.run(ship)
}

/// The agent between start-up and its loop: state loaded, files found and
/// positioned, watcher running.
///
/// Split from [`Follower::run`] so a caller learns of a bad state file
/// before it detaches, and knows the moment from which a newly created
/// file is read from its start (files present at `start` begin at their
/// end, unless `from_start` or the state says otherwise).
pub struct Follower {
    /// One per followed path, in the order given.
    tails: Vec<Tail>,
    /// Wakes the loop when a watched directory changes.
    watch: DirWatch,
    /// As given to [`Follower::start`].
    opts: FollowOptions,
    /// Which path reads first next turn: rotates, so one busy file cannot
    /// starve the others of batch space.
    first: usize,
    /// When the state file's directory was last synced.
    dir_synced: Instant,
}

/// How often the state file's directory is synced (see [`Follower::run`]).
const DIR_SYNC_INTERVAL: Duration = Duration::from_secs(1);

// === impl Follower ===

impl Follower {
    /// Loads the state, opens every file that exists and starts watching.
    ///
    /// # Errors
    /// An unreadable state file (the agent will not guess where to resume),
    /// no usable watcher, or options that cannot work (no files, zero batch
    /// or line size).
    pub fn start(files: &[PathBuf], opts: FollowOptions) -> Result<Follower, FollowError> {
        if files.is_empty() {
            return Err(FollowError::Options("no files to follow"));
        }
        if opts.max_batch_lines == 0 || opts.max_batch_bytes == 0 || opts.max_line_bytes == 0 {
            return Err(FollowError::Options(
                "max_batch_lines, max_batch_bytes and max_line_bytes must be positive",
            ));
        }
        let state = match &opts.state_path {
            Some(p) => State::load(p)?,
            None => State::default(),
        };
        // The watcher first: a file created after this returns must raise
        // an event, whatever the first look below saw.
        let watch =
            DirWatch::start(files, opts.watch, opts.poll_interval).map_err(FollowError::Watch)?;
        let mut tails: Vec<Tail> = files
            .iter()
            .map(|f| Tail::restore(f, state.get(f), &opts))
            .collect();
        for tail in &mut tails {
            tail.refresh(&opts);
        }
        tracing::info!(
            files = files.len(),
            inotify = watch.is_native(),
            "following"
        );
        Ok(Follower {
            tails,
            watch,
            opts,
            first: 0,
            dir_synced: Instant::now() - DIR_SYNC_INTERVAL,
        })
    }

    /// The loop: until `shutdown` is set, ship each batch, flush it and
    /// record the positions; wait for an event or the poll interval when
    /// there is nothing to read. Blocks the calling thread.
    ///
    /// Returns `Ok` after a shutdown request; a batch whose flush had not
    /// succeeded by then is not recorded, so it is sent again after a
    /// restart.
    ///
    /// # Errors
    /// The state file cannot be written.
    pub fn run(mut self, ship: &dyn Ship) -> Result<(), FollowError> {
        let opts = &self.opts;
        loop {
            if opts.shutdown.load(Ordering::Relaxed) {
                return Ok(());
            }
            self.watch.watch_missing();
            for tail in &mut self.tails {
                tail.refresh(opts);
            }
            let mut budget = Budget {
                lines: opts.max_batch_lines,
                bytes: opts.max_batch_bytes,
            };
            let mut progressed = false;
            let count = self.tails.len();
            for i in 0..count {
                let at = (self.first + i) % count;
                progressed |= self.tails[at].collect(&mut budget, opts, ship);
            }
            self.first = (self.first + 1) % count;
            if !progressed {
                self.watch.wait(opts.poll_interval, &opts.shutdown);
                continue;
            }
            if !flush_until_done(ship, opts) {
                return Ok(());
            }
            for tail in &mut self.tails {
                tail.ack();
            }
            if let Some(path) = &opts.state_path {
                let snapshot = State {
                    version: 0,
                    files: self.tails.iter().map(Tail::snapshot).collect(),
                };
                // Syncing the directory (the rename) costs several times the
                // file's fsync; once a second bounds what a power loss can
                // roll back to a second of batches, sent again, never lost.
                let sync_dir = self.dir_synced.elapsed() >= DIR_SYNC_INTERVAL;
                snapshot.save(path, sync_dir)?;
                if sync_dir {
                    self.dir_synced = Instant::now();
                }
            }
        }
    }
}

/// Flushes, retrying with exponential backoff while it fails: the agent
/// reads nothing meanwhile. Returns `false` when a shutdown was requested
/// before a flush succeeded.
fn flush_until_done(ship: &dyn Ship, opts: &FollowOptions) -> bool {
    let mut delay = Duration::from_millis(100).min(opts.max_backoff);
    let mut failing_since: Option<Instant> = None;
    loop {
        match ship.flush(opts.flush_timeout) {
            Ok(()) => {
                if let Some(since) = failing_since {
                    tracing::info!(
                        after_ms = since.elapsed().as_millis() as u64,
                        "daemon reachable again, reading on"
                    );
                }
                return true;
            }
            Err(e) => {
                if failing_since.is_none() {
                    tracing::warn!(cause = %e, "flush failed, pausing reads until the daemon takes lines again");
                    failing_since = Some(Instant::now());
                }
            }
        }
        let until = Instant::now() + delay;
        while Instant::now() < until {
            if opts.shutdown.load(Ordering::Relaxed) {
                return false;
            }
            std::thread::sleep(
                watch::STOP_CHECK.min(until.saturating_duration_since(Instant::now())),
            );
        }
        delay = (delay * 2).min(opts.max_backoff);
    }
}
