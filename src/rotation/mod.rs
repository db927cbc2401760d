//! Rotation (SPEC §5): schedules ([`schedule`]), backup naming and retention
//! ([`backup`]), the per-file rotation times kept in `workdir` ([`state`]) and
//! start-up crash recovery ([`recover`](mod@recover)). A leaf: it imports
//! nothing above it (only `compress`), and both the file writers and the
//! daemon's own log rotate through it.
//!
//! A rotation is one transaction, [`rotate_file`] (rename, new
//! [`FileState`], save), then one background job, [`spawn_compression`]
//! (compress and prune, bounded by the daemon's `compression_jobs`). The file
//! operations are blocking: callers run them on the blocking pool.

pub mod backup;
pub mod beneath;
pub mod recover;
pub mod schedule;
pub mod state;

pub use backup::prune;
pub use state::{started_on_disk, FileState, StateDb};

use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Local};
use tokio::sync::Semaphore;
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::compress::{self, Codec};

/// Whoever sleeps towards a rotation re-plans at least this often, so a
/// wall-clock jump (NTP, suspend) or a changed state is noticed even while
/// waiting for a far rotation: the file scheduler and the own-log loop.
pub const REPLAN_INTERVAL: Duration = Duration::from_secs(30);

/// How long to sleep at `now` towards `due` (`None`: nothing scheduled):
/// until `due`, but at most [`REPLAN_INTERVAL`]; zero when `due` has passed.
pub fn sleep_before(due: Option<DateTime<Local>>, now: DateTime<Local>) -> Duration {
    match due {
        Some(due) => (due - now)
            .to_std()
            .unwrap_or(Duration::ZERO)
            .min(REPLAN_INTERVAL),
        None => REPLAN_INTERVAL,
    }
}

/// The rotation transaction for the live file `live` at `now`, blocking:
/// renames it to a backup named after when it was started (from `state`,
/// else the file's own times, else `now`) and records the new [`FileState`]
/// (started `now` when a backup was made, last rotated `now`). Returns the
/// backup, or `None` when the file was missing or empty (then only the state
/// moves on, so the schedule's next time is planned).
///
/// Neither the rename's directory nor the state is fsynced here: the next
/// [`StateDb::save`] does both, directory first, once for a whole wave of
/// rotations (the scheduler saves when [`StateDb::changed`] wakes it). A
/// crash before that save leaves the old state and possibly the old name,
/// so the rotation is simply due again; never a state that claims a
/// rotation whose rename was lost.
///
/// The caller must have stopped writing to `live` (the writer task closed
/// it; the own log swaps its handle right after).
///
/// # Errors
/// The rename failed ([`backup::rename_unsynced`]): the file stays live and `state` is
/// left as it was, so the rotation is still due and the caller decides when
/// to retry.
pub fn rotate_file(
    live: &Path,
    state: &Mutex<StateDb>,
    now: DateTime<Local>,
) -> io::Result<Option<PathBuf>> {
    rotate_file_beneath(compress::parent_dir(live), live, state, now)
}

/// [`rotate_file`] under the no-symlink rule ([`beneath`]): nothing
/// between `root` (the log directory) and `live` is followed through a
/// symlink; such a file is refused (logged, rate-limited) and stays due.
///
/// # Errors
/// As [`rotate_file`]; a refused path is `ELOOP`/`ENOTDIR`.
pub fn rotate_file_beneath(
    root: &Path,
    live: &Path,
    state: &Mutex<StateDb>,
    now: DateTime<Local>,
) -> io::Result<Option<PathBuf>> {
    let (dir, name) = match beneath::Dir::of_file(root, live) {
        Ok(d) => d,
        Err(err) => {
            if beneath::is_refusal(&err) {
                beneath::warn_refused("rotation", live, &err);
            }
            return Err(err);
        }
    };
    let known = lock(state).get(live).map(|s| s.started);
    let inner = dir.inner(name);
    let started = match known {
        Some(s) => s,
        None => started_on_disk(&inner).ok().flatten().unwrap_or(now),
    };
    let backup = backup::rename_unsynced(&inner, started.naive_local())
        .map_err(|e| dir.outer_err(e))?
        .map(|b| dir.outer(&b));
    let mut db = lock(state);
    if backup.is_some() {
        db.note_renamed(compress::parent_dir(live));
    }
    db.set(
        live,
        FileState {
            started: if backup.is_some() { now } else { started },
            last_rotation: Some(now),
        },
    );
    Ok(backup)
}

/// Locks the state, recovering from a poisoned lock (the data is plain).
pub fn lock(state: &Mutex<StateDb>) -> MutexGuard<'_, StateDb> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}

/// The background half of one rotation: what [`spawn_compression`] runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompressJob {
    /// The live file whose backups are pruned.
    pub live: PathBuf,
    /// The backup [`rotate_file`] made.
    pub backup: PathBuf,
    /// `(codec, level)`, or `None` when the backup is compressed already
    /// (`compress_on_write`).
    pub compress: Option<(Codec, u32)>,
    /// How many backups of `live` to keep (`backup_count`).
    pub keep: usize,
    /// The log directory, below which no symlink is followed ([`beneath`]);
    /// `None`: only the files themselves are never followed (the daemon's
    /// own log, whose directory is the operator's choice).
    pub beneath: Option<PathBuf>,
}

/// Runs `job` ([`compress_and_prune`]) on the blocking pool once one of
/// `permits` is free (the daemon's `compression_jobs`: compressions are
/// CPU-bound, and every file writer and the own log share the limit), as a
/// task of `tracker`, which shutdown waits on for a bounded time. Failures
/// are logged; the backup then stays uncompressed until the next start's
/// recovery.
pub fn spawn_compression(job: CompressJob, permits: &Arc<Semaphore>, tracker: &TaskTracker) {
    spawn_compression_observed(job, permits, tracker, |_, _| {});
}

/// [`spawn_compression`], then `observe(took, ok)` when the job ended (or
/// could not start: `ok` false), with the time the job itself ran, not
/// counting the wait for a permit. The metrics count backlog and
/// durations through it without this leaf module knowing of them.
pub fn spawn_compression_observed(
    job: CompressJob,
    permits: &Arc<Semaphore>,
    tracker: &TaskTracker,
    observe: impl FnOnce(std::time::Duration, bool) + Send + 'static,
) {
    let permits = permits.clone();
    tracker.spawn(async move {
        // Closed only if the daemon closes it, which it does not.
        let Ok(_permit) = permits.acquire_owned().await else {
            observe(std::time::Duration::ZERO, false);
            return;
        };
        let started = std::time::Instant::now();
        let done = tokio::task::spawn_blocking(move || {
            let root = job
                .beneath
                .unwrap_or_else(|| compress::parent_dir(&job.live).to_path_buf());
            compress_and_prune_beneath(&root, &job.live, &job.backup, job.compress, job.keep)
        })
        .await;
        observe(started.elapsed(), matches!(done, Ok(Ok(_))));
        match done {
            Ok(Ok(done)) => debug!(
                backup = %done.backup.display(),
                pruned = done.pruned.len(),
                "backup compressed"
            ),
            Ok(Err(err)) => warn!(cause = %err, "backup compression failed; redone at next start"),
            Err(err) => warn!(cause = %err, "backup compression task failed"),
        }
    });
}

/// What [`compress_and_prune`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finished {
    /// The backup as it now is: compressed, or as renamed when no codec was
    /// given (`compress_on_write`).
    pub backup: PathBuf,
    /// Old backups deleted by retention.
    pub pruned: Vec<PathBuf>,
}

/// The blocking second half of a rotation, for one `spawn_blocking` job after
/// [`rename_live`] (and the state update) returned `backup`: compress it with
/// `compress = Some((codec, level))` (`None` for `compress_on_write`, whose
/// backups are gzip already), then keep only the newest `keep` backups of
/// `live`. Running both in one job per file keeps a prune from deleting a
/// backup that a slower compression is still reading.
///
/// # Errors
/// The first failure. Retention still runs when compression fails (the
/// backup then stays uncompressed until the next start's recovery).
#[cfg(test)]
pub fn compress_and_prune(
    live: &Path,
    backup: &Path,
    compress: Option<(Codec, u32)>,
    keep: usize,
) -> io::Result<Finished> {
    compress_and_prune_beneath(compress::parent_dir(live), live, backup, compress, keep)
}

/// [`compress_and_prune`] under the no-symlink rule ([`beneath`]): the
/// directory of `live` (which holds `backup`) is opened below `root`
/// without following a symlink, and every read, rename and removal goes
/// through it. A refused directory is logged (rate-limited) and nothing
/// in it is touched.
///
/// # Errors
/// As [`compress_and_prune`]; a refused path is `ELOOP`/`ENOTDIR`.
pub fn compress_and_prune_beneath(
    root: &Path,
    live: &Path,
    backup: &Path,
    compress: Option<(Codec, u32)>,
    keep: usize,
) -> io::Result<Finished> {
    let (dir, name) = match beneath::Dir::of_file(root, live) {
        Ok(d) => d,
        Err(err) => {
            if beneath::is_refusal(&err) {
                beneath::warn_refused("compression and retention", live, &err);
            }
            return Err(err);
        }
    };
    let Some(backup_name) = backup.file_name() else {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: no file name", backup.display()),
        ));
    };
    let done = compress_and_prune_in(&dir.inner(name), &dir.inner(backup_name), compress, keep)
        .map_err(|e| dir.outer_err(e))?;
    Ok(Finished {
        backup: dir.outer(&done.backup),
        pruned: done.pruned.iter().map(|p| dir.outer(p)).collect(),
    })
}

/// The work of [`compress_and_prune`] on paths already made safe.
fn compress_and_prune_in(
    live: &Path,
    backup: &Path,
    compress: Option<(Codec, u32)>,
    keep: usize,
) -> io::Result<Finished> {
    let compressed = match compress {
        Some((codec, level)) => compress::compress_file(backup, codec, level).map(Some),
        None => Ok(None),
    };
    let pruned = prune(live, keep);
    let backup = compressed?.unwrap_or_else(|| backup.to_owned());
    Ok(Finished {
        backup,
        pruned: pruned?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rotation::backup::{backup_path, list_backups, rename_live};
    use crate::rotation::schedule::Schedule;
    use chrono::{NaiveDate, TimeDelta, TimeZone};
    use std::fs;

    fn local(d: u32, h: u32, mi: u32, s: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(2026, 3, d, h, mi, s)
            .earliest()
            .unwrap()
    }

    /// What is at the live path before a rotation.
    #[derive(Debug, Clone, Copy)]
    enum Live {
        Missing,
        Empty,
        Content,
        Directory,
    }

    #[test]
    fn rotate_file_renames_and_moves_the_state_for_the_next_save() {
        let known = local(10, 8, 30, 15);
        let now = local(11, 0, 0, 0);
        // (what is live, state known before, backup made, started after, Err)
        let cases = [
            (Live::Content, true, true, Some(now), false),
            (Live::Content, false, true, Some(now), false),
            (Live::Empty, true, false, Some(known), false),
            (Live::Missing, true, false, Some(known), false),
            (Live::Missing, false, false, Some(now), false),
            (Live::Directory, true, false, None, true),
        ];
        for (live_kind, state_known, made, started_after, fails) in cases {
            let case = format!("{live_kind:?}, state known: {state_known}");
            let dir = tempfile::tempdir().unwrap();
            let live = dir.path().join("root.log");
            let state_path = dir.path().join("state.json");
            match live_kind {
                Live::Missing => {}
                Live::Empty => fs::write(&live, b"").unwrap(),
                Live::Content => fs::write(&live, b"a line\n").unwrap(),
                Live::Directory => fs::create_dir(&live).unwrap(),
            }
            let mut db = StateDb::new(&state_path);
            if state_known {
                db.set(&live, FileState::new(known));
            }
            let before = db.clone();
            let state = Mutex::new(db);

            let res = rotate_file(&live, &state, now);
            let mut db = state.into_inner().unwrap();
            if fails {
                res.expect_err(&case);
                assert_eq!(db, before, "{case}: a failed rename leaves the state");
                assert!(!state_path.exists(), "{case}: nothing saved");
                continue;
            }
            let backup = res.unwrap_or_else(|e| panic!("{case}: {e}"));
            assert_eq!(backup.is_some(), made, "{case}");
            if let Some(b) = &backup {
                let named_after = if state_known {
                    known.naive_local()
                } else {
                    // The file's own times: just written.
                    let stamp = b.file_name().unwrap().to_str().unwrap();
                    let stamp = backup::parse_stamp(&stamp["root.log.".len()..]).unwrap();
                    assert!((Local::now().naive_local() - stamp).num_seconds().abs() < 60);
                    stamp
                };
                assert_eq!(*b, backup_path(&live, named_after), "{case}");
                assert_eq!(fs::read(b).unwrap(), b"a line\n", "{case}");
                assert!(!live.exists(), "{case}: the live file is gone");
            }
            let want = FileState {
                started: started_after.unwrap(),
                last_rotation: Some(now),
            };
            assert_eq!(db.get(&live), Some(want), "{case}");
            assert!(db.unsaved(), "{case}: left to the wave's one save");
            assert!(!state_path.exists(), "{case}: not saved per rotation");
            db.save().unwrap();
            let saved = StateDb::load(&state_path).unwrap();
            assert_eq!(saved.get(&live), Some(want), "{case}");
        }
    }

    #[test]
    fn a_wave_of_rotations_is_one_save_that_wakes_the_saver_once() {
        let dir = tempfile::tempdir().unwrap();
        let state_path = dir.path().join("state.json");
        let state = Mutex::new(StateDb::new(&state_path));
        let changed = lock(&state).changed();
        let lives: Vec<PathBuf> = (0..50)
            .map(|i| {
                let live = dir.path().join(format!("host{i}-root.log"));
                fs::write(&live, format!("line {i}\n")).unwrap();
                live
            })
            .collect();
        let now = local(11, 0, 0, 0);
        for live in &lives {
            rotate_file(live, &state, now).unwrap().unwrap();
        }
        assert!(!state_path.exists(), "no save per rotation");
        // One stored permit, however many changes: the saver wakes once.
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap();
        rt.block_on(async {
            changed.notified().await;
            let again = tokio::time::timeout(Duration::from_millis(10), changed.notified());
            again.await.expect_err("a second permit");
        });
        let mut db = state.into_inner().unwrap();
        db.save().unwrap();
        let back = StateDb::load(&state_path).unwrap();
        assert_eq!(back.len(), 50);
        for live in &lives {
            assert_eq!(back.get(live).unwrap().last_rotation, Some(now));
            assert_eq!(backups_of(live), 1);
        }
    }

    #[test]
    fn a_failed_save_keeps_everything_for_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("root.log");
        fs::write(&live, b"x\n").unwrap();
        let workdir = dir.path().join("lib");
        let state_path = workdir.join("state.json");
        let state = Mutex::new(StateDb::new(&state_path));
        let now = local(11, 0, 0, 0);
        let backup = rotate_file(&live, &state, now).unwrap().unwrap();
        assert_eq!(fs::read(backup).unwrap(), b"x\n");
        let mut db = state.into_inner().unwrap();
        db.save().unwrap_err();
        assert!(db.unsaved(), "still to be saved");
        // The workdir appears (an operator fixed it): the next save has it all.
        fs::create_dir(&workdir).unwrap();
        db.save().unwrap();
        assert!(!db.unsaved());
        let back = StateDb::load(&state_path).unwrap();
        assert_eq!(back.get(&live).unwrap().last_rotation, Some(now));
    }

    fn backups_of(live: &Path) -> usize {
        list_backups(live).unwrap().len()
    }

    #[test]
    fn due_is_the_next_time_after_the_later_of_start_and_last_rotation() {
        let daily = Schedule::parse("daily").unwrap();
        let minute = Schedule::parse("* * * * *").unwrap();
        let size = Schedule::parse("size").unwrap();
        // (schedule, started, last_rotation, due)
        let cases = [
            (&daily, local(10, 8, 0, 0), None, Some(local(11, 0, 0, 0))),
            (
                &daily,
                local(10, 8, 0, 0),
                Some(local(10, 9, 0, 0)),
                Some(local(11, 0, 0, 0)),
            ),
            // Rotated at midnight: the next is the following midnight.
            (
                &daily,
                local(11, 0, 0, 0),
                Some(local(11, 0, 0, 0)),
                Some(local(12, 0, 0, 0)),
            ),
            // Last rotation before the start (a rebuilt state): from the start.
            (
                &daily,
                local(12, 8, 0, 0),
                Some(local(10, 9, 0, 0)),
                Some(local(13, 0, 0, 0)),
            ),
            // Rotated with nothing to rename (start kept): from the rotation.
            (
                &minute,
                local(10, 8, 0, 50),
                Some(local(10, 8, 1, 0)),
                Some(local(10, 8, 2, 0)),
            ),
            (&minute, local(10, 8, 0, 50), None, Some(local(10, 8, 1, 0))),
            (&size, local(10, 8, 0, 0), None, None),
        ];
        for (schedule, started, last_rotation, due) in cases {
            let st = FileState {
                started,
                last_rotation,
            };
            assert_eq!(st.due(schedule), due, "{schedule} {st:?}");
        }
    }

    #[test]
    fn sleep_before_is_capped_at_the_replan_interval() {
        let now = local(10, 8, 0, 0);
        let secs = |s| TimeDelta::seconds(s);
        let cases = [
            (None, REPLAN_INTERVAL),
            (Some(now + secs(10)), Duration::from_secs(10)),
            (Some(now + secs(3600)), REPLAN_INTERVAL),
            (Some(now), Duration::ZERO),
            (Some(now - secs(5)), Duration::ZERO),
        ];
        for (due, want) in cases {
            assert_eq!(sleep_before(due, now), want, "{due:?}");
        }
    }

    #[test]
    fn full_rotation_sequence_keeps_newest_and_content() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("root.log");
        let mut backups = Vec::new();
        for day in 1..=4 {
            fs::write(&live, format!("day {day}\n")).unwrap();
            let started = NaiveDate::from_ymd_opt(2026, 1, day)
                .unwrap()
                .and_hms_micro_opt(0, 0, 0, 1)
                .unwrap();
            let backup = rename_live(&live, started).unwrap().unwrap();
            let done = compress_and_prune(&live, &backup, Some((Codec::Gzip, 6)), 2).unwrap();
            assert_eq!(done.backup, compress::compressed_path(&backup, Codec::Gzip));
            backups.push(done);
        }
        assert!(backups[0].pruned.is_empty() && backups[1].pruned.is_empty());
        assert_eq!(backups[2].pruned, [backups[0].backup.clone()]);
        let left = list_backups(&live).unwrap();
        assert_eq!(left.len(), 2);
        assert_eq!(
            compress::decompress_to_vec(&left[1].path).unwrap(),
            b"day 4\n"
        );
        assert!(!live.exists());
    }

    #[test]
    fn compress_on_write_backups_are_only_pruned() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("root.log.gz");
        fs::write(&live, b"\x1f\x8b not really").unwrap();
        let started = NaiveDate::from_ymd_opt(2026, 1, 1)
            .unwrap()
            .and_hms_opt(0, 0, 0)
            .unwrap();
        let backup = rename_live(&live, started).unwrap().unwrap();
        let done = compress_and_prune(&live, &backup, None, 1).unwrap();
        assert_eq!(done.backup, backup);
        assert!(done.pruned.is_empty());
        assert_eq!(list_backups(&live).unwrap().len(), 1);
    }
}
