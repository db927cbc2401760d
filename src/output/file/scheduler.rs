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

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::{Command, Writers};
use crate::config::{Facility, FacilityDb};
use crate::rotation::{self, started_on_disk, FileState, StateDb};

/// After a new file appears, wait this long for others before re-planning.
const NEW_FILE_SETTLE: Duration = Duration::from_millis(250);

/// How long to wait for a busy writer to confirm a rotation.
const ROTATE_REPLY_TIMEOUT: Duration = Duration::from_secs(60);

/// Runs until `token` is cancelled.
pub(crate) async fn run(
    writers: Arc<Writers>,
    mut facilities: watch::Receiver<Arc<FacilityDb>>,
    token: CancellationToken,
) {
    let new_file = writers.ctx().new_file.clone();
    let clock = writers.ctx().clock.clone();
    let first = facilities.borrow_and_update().clone();
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
        let sleep = rotation::sleep_before(next, clock.now());
        save_state(writers.ctx().state.clone()).await;
        tokio::select! {
            _ = tokio::time::sleep(sleep) => {}
            _ = new_file.notified() => {
                // Files tend to appear in bursts (a relay's hosts): let the
                // burst settle so one plan and one save cover it.
                tokio::select! {
                    _ = tokio::time::sleep(NEW_FILE_SETTLE) => {}
                    _ = token.cancelled() => {}
                }
            }
            changed = facilities.changed() => {
                // The sender only goes away at shutdown.
                if changed.is_err() {
                    break;
                }
            }
            _ = token.cancelled() => break,
        }
    }
    save_state(writers.ctx().state.clone()).await;
}

/// Saves the rotation state if it changed (new files' start times), on a
/// blocking thread: the save fsyncs.
pub(crate) async fn save_state(state: Arc<Mutex<StateDb>>) {
    let res = tokio::task::spawn_blocking(move || {
        let mut db = rotation::lock(&state);
        if db.unsaved() {
            if let Err(err) = db.save() {
                warn!(path = %db.path().display(), cause = %err, "cannot save rotation state");
            }
        }
    })
    .await;
    if let Err(err) = res {
        warn!(cause = %err, "saving the rotation state failed");
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
        if added > 0 {
            if let Err(err) = st.save() {
                warn!(cause = %err, "cannot save rotation state");
            }
        }
    })
    .await;
    if let Err(err) = res {
        warn!(cause = %err, "scanning existing log files failed");
    }
}
