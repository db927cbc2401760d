//! The rotation scheduler: sleeps until the earliest scheduled rotation of
//! any live file is due, then asks that file's writer to rotate, so files
//! rotate on time even when no message arrives (the old daemon only rotated
//! on the next write).
//!
//! Due times come from the state in `workdir` ([`FileState::due`]): a
//! schedule fires when its next time after the file's last rotation (or its
//! start) has passed, so a restart neither skips nor repeats a rotation. A
//! rotation whose rename failed stays due and is retried at the next re-plan
//! ([`rotation::REPLAN_INTERVAL`]).
//!
//! The scheduler is also the one saver of that state: once per pass, so a
//! wave of rotations (3,000 per-host files at midnight) costs one save, and
//! soon after a writer's change ([`StateDb::changed`]); with backoff when
//! saving fails ([`Saver`]). It prunes the entries of files gone with all
//! their backups at start and every [`PRUNE_EVERY`].

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::{oneshot, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::{Command, Writers};
use crate::clock::Clock;
use crate::config::{Facility, FacilityDb};
use crate::rotation::{self, started_on_disk, FileState, StateDb};

/// After a new file appears, wait this long for others before re-planning.
const NEW_FILE_SETTLE: Duration = Duration::from_millis(250);

/// How long to wait for a busy writer to confirm a rotation.
const ROTATE_REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// How often the state is pruned of files that are gone (and once at start).
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

/// The first wait after a failed state save; doubled per failure.
const SAVE_RETRY_FIRST: Duration = Duration::from_secs(1);

/// The longest wait between two attempts to save the state.
const SAVE_RETRY_MAX: Duration = Duration::from_secs(300);

/// Runs until `token` is cancelled.
pub(crate) async fn run(
    writers: Arc<Writers>,
    mut facilities: watch::Receiver<Arc<FacilityDb>>,
    token: CancellationToken,
) {
    let new_file = writers.ctx().new_file.clone();
    let clock = writers.ctx().clock.clone();
    let state = writers.ctx().state.clone();
    let changed = rotation::lock(&state).changed();
    let mut saver = Saver::new(state.clone());
    let first = facilities.borrow_and_update().clone();
    prune_gone(&state, &clock).await;
    let mut next_prune = Instant::now() + PRUNE_EVERY;
    adopt_existing_files(&writers, &first).await;
    loop {
        let db = facilities.borrow_and_update().clone();
        let now = clock.now();
        let mut next: Option<DateTime<Local>> = None;
        for (path, facility, due) in plan(&writers, &db) {
            if due <= now {
                rotate(&writers, &path, &facility).await;
            } else if next.is_none_or(|n| due < n) {
                next = Some(due);
            }
        }
        if Instant::now() >= next_prune {
            prune_gone(&state, &clock).await;
            next_prune = Instant::now() + PRUNE_EVERY;
        }
        // The whole wave above, and whatever writers changed since the last
        // pass (size rotations, new files), in one save.
        saver.save().await;
        let mut sleep = rotation::sleep_before(next, clock.now());
        if let Some(retry) = saver.retry_at() {
            sleep = sleep.min(retry.saturating_duration_since(Instant::now()));
        }
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = new_file.notified() => settle(&token).await,
            // A rotation by a writer (size) or the own log: saved soon,
            // together with whatever else changes meanwhile.
            _ = changed.notified() => settle(&token).await,
            changed = facilities.changed() => {
                // The sender only goes away at shutdown.
                if changed.is_err() {
                    break;
                }
            }
            _ = token.cancelled() => break,
        }
    }
    save_state(state).await;
}

/// Changes tend to come in bursts (a relay's hosts, a wave of size
/// rotations): let the burst settle so one plan and one save cover it.
async fn settle(token: &CancellationToken) {
    tokio::select! {
        _ = tokio::time::sleep(NEW_FILE_SETTLE) => {}
        _ = token.cancelled() => {}
    }
}

/// Saves the rotation state if it changed, on a blocking thread (the save
/// fsyncs), logging a failure. For the final save at shutdown; the
/// scheduler's own saves go through [`Saver`], which backs off.
pub(crate) async fn save_state(state: Arc<Mutex<StateDb>>) {
    if let Err(err) = try_save(state).await {
        warn!(cause = %err, "cannot save rotation state");
    }
}

/// One save if anything changed: `Ok(false)` when there was nothing to do.
async fn try_save(state: Arc<Mutex<StateDb>>) -> Result<bool, String> {
    let res = tokio::task::spawn_blocking(move || {
        let mut db = rotation::lock(&state);
        if !db.unsaved() {
            return Ok(false);
        }
        db.save()
            .map(|()| true)
            .map_err(|e| format!("{}: {e}", db.path().display()))
    })
    .await;
    res.unwrap_or_else(|join| Err(format!("save task failed: {join}")))
}

/// The scheduler's saves of the rotation state, with exponential backoff
/// after a failure (a full or read-only workdir, issue 12 item 7): one
/// attempt, and one warning, per backoff step, never a save per change.
/// The state stays right in memory meanwhile; a save that works again
/// writes all of it and is logged once.
pub(crate) struct Saver {
    /// The state this saves.
    state: Arc<Mutex<StateDb>>,
    /// The wait after the next failure.
    backoff: Duration,
    /// No attempt before this, while failing.
    retry_at: Option<Instant>,
}

// === impl Saver ===

impl Saver {
    /// A saver of `state` that has not failed yet.
    pub(crate) fn new(state: Arc<Mutex<StateDb>>) -> Saver {
        Saver {
            state,
            backoff: SAVE_RETRY_FIRST,
            retry_at: None,
        }
    }

    /// When the next attempt is due, while saves are failing.
    pub(crate) fn retry_at(&self) -> Option<Instant> {
        self.retry_at
    }

    /// Saves if the state changed and no backoff is running.
    pub(crate) async fn save(&mut self) {
        if self.retry_at.is_some_and(|t| Instant::now() < t) {
            return;
        }
        match try_save(self.state.clone()).await {
            Ok(saved) => {
                if saved && self.retry_at.is_some() {
                    info!("rotation state saved again");
                }
                self.backoff = SAVE_RETRY_FIRST;
                self.retry_at = None;
            }
            Err(cause) => {
                let retry_in = self.backoff;
                self.backoff = (self.backoff * 2).min(SAVE_RETRY_MAX);
                self.retry_at = Some(Instant::now() + retry_in);
                warn!(%cause, ?retry_in, "cannot save rotation state; retrying");
            }
        }
    }
}

/// Drops the state of files that are gone with all their backups
/// ([`rotation::state::plan_gone`]): listed off the lock on the blocking
/// pool, removed under it only if unchanged meanwhile, saved with the next save.
async fn prune_gone(state: &Arc<Mutex<StateDb>>, clock: &Clock) {
    let state = state.clone();
    let now = clock.now();
    let res = tokio::task::spawn_blocking(move || {
        let entries = rotation::lock(&state).snapshot();
        let gone = rotation::state::plan_gone(&entries, now, rotation::state::listing);
        if gone.is_empty() {
            return;
        }
        let mut db = rotation::lock(&state);
        let removed = db.remove_gone(&gone);
        info!(
            removed,
            left = db.len(),
            "rotation state: forgot files gone with all their backups"
        );
    })
    .await;
    if let Err(err) = res {
        warn!(cause = %err, "pruning the rotation state failed");
    }
}

/// Every live file with a time schedule and when it is next due.
fn plan(writers: &Writers, db: &FacilityDb) -> Vec<(PathBuf, Arc<Facility>, DateTime<Local>)> {
    let ext = writers.ctx().compressor.live_ext();
    let state = writers.ctx().state.clone();
    let state = rotation::lock(&state);
    state
        .iter()
        .filter_map(|(path, st)| {
            let facility = facility_for_path(db, writers.logdir(), ext, path)?;
            let due = st.due(&facility.rotate)?;
            Some((path.to_path_buf(), facility.clone(), due))
        })
        .collect()
}

async fn rotate(writers: &Writers, path: &Path, facility: &Arc<Facility>) {
    if !writers.has(path) && move_state_of_missing_file(writers, path).await {
        return;
    }
    let Some(tx) = writers.sender(path, facility) else {
        return; // shutting down
    };
    let (reply, done) = oneshot::channel();
    if tx.send(Command::Rotate(Some(reply))).await.is_err() {
        return;
    }
    debug!(path = %path.display(), "scheduled rotation");
    if tokio::time::timeout(ROTATE_REPLY_TIMEOUT, done)
        .await
        .is_err()
    {
        warn!(path = %path.display(), "writer did not confirm the rotation in time");
    }
}

/// A due file that has no writer and no live file (a host that went
/// quiet, whose backups keep its entry): only its state moves on, here,
/// instead of starting a writer task for it every time it is due. `false`
/// when the file exists after all (its writer rotates it).
///
/// Nothing is renamed here, ever: a live file that appears meanwhile (its
/// host is back) was started after the due time, so it belongs to the new
/// period, and a rename from here would pull it from under its new writer.
/// So every rotation is a writer's, counted once in `rotations`.
async fn move_state_of_missing_file(writers: &Writers, path: &Path) -> bool {
    let ctx = writers.ctx().clone();
    let path = path.to_path_buf();
    let res = tokio::task::spawn_blocking(move || {
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            _ => return false,
        }
        let now = ctx.clock.now();
        let mut db = rotation::lock(&ctx.state);
        let started = db.get(&path).map_or(now, |st| st.started);
        db.set(
            &path,
            FileState {
                started,
                last_rotation: Some(now),
            },
        );
        true
    })
    .await;
    res.unwrap_or(false)
}

/// Finds which configured facility writes `path` (`{logdir}/{app}/{name}`),
/// preferring the longest module match for file-per-host names.
pub(crate) fn facility_for_path<'a>(
    db: &'a FacilityDb,
    logdir: &Path,
    ext: &str,
    path: &Path,
) -> Option<&'a Arc<Facility>> {
    let rel = path.strip_prefix(logdir).ok()?;
    let mut parts = rel.components();
    let app = parts.next()?.as_os_str().to_str()?;
    let name = parts.next()?.as_os_str().to_str()?;
    if parts.next().is_some() {
        return None;
    }
    let stem = name.strip_suffix(ext)?.strip_suffix('.')?;
    db.iter()
        .filter(|f| f.app_id == app)
        .filter(|f| {
            if f.file_per_host {
                stem.strip_suffix(f.file_stem())
                    .is_some_and(|host| host.len() > 1 && host.ends_with('-'))
            } else {
                stem == f.file_stem()
            }
        })
        .max_by_key(|f| (!f.file_per_host, f.file_stem().len()))
}

/// Live files already on disk (from an earlier run, or the old daemon)
/// that the state does not know get an entry, so they rotate on schedule
/// without waiting for a message.
async fn adopt_existing_files(writers: &Writers, db: &Arc<FacilityDb>) {
    let logdir = writers.logdir().to_path_buf();
    let ext = writers.ctx().compressor.live_ext();
    let state = writers.ctx().state.clone();
    let db = db.clone();
    let res = tokio::task::spawn_blocking(move || {
        let mut found = Vec::new();
        let mut apps: Vec<&str> = db.iter().map(|f| f.app_id.as_str()).collect();
        apps.dedup();
        for app in apps {
            let Ok(entries) = std::fs::read_dir(logdir.join(app)) else {
                continue;
            };
            for e in entries.flatten() {
                let path = e.path();
                let is_file = e.file_type().map(|t| t.is_file()).unwrap_or(false);
                if is_file && facility_for_path(&db, &logdir, ext, &path).is_some() {
                    found.push(path);
                }
            }
        }
        let mut st = rotation::lock(&state);
        let mut added = 0;
        for path in found {
            if st.get(&path).is_none() {
                if let Ok(Some(started)) = started_on_disk(&path) {
                    st.set(&path, FileState::new(started));
                    added += 1;
                }
            }
        }
        // Saved by the scheduler's first pass, which follows.
        debug!(added, "adopted live files the state did not know");
    })
    .await;
    if let Err(err) = res {
        warn!(cause = %err, "scanning existing log files failed");
    }
}
