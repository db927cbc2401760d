//! Per-file rotation state kept in `workdir` (SPEC §5: "the daemon remembers,
//! per file, when it last rotated"): when each live file was started (its
//! backup stamp) and when it last rotated, so a restart neither skips nor
//! repeats a rotation. Plain data: the daemon wraps the [`StateDb`] in a
//! `Mutex`, the scheduler reads it, writers update it per rotation, and one
//! saver (the scheduler) writes it out once per wave of changes
//! ([`StateDb::changed`]). [`plan_gone`] finds the entries of files that are
//! gone for good, so the state does not grow with every transient host.
//!
//! Why one atomic save per wave rather than an append-only journal: the
//! saved document stays the one JSON file that operators, tools and the
//! old layout know, and a crash mid-save still leaves the old or the new
//! file (temp + fsync + rename). A wave of 3,000 rotations costs one encode
//! and two fsyncs instead of 3,000 (issue 12: 1.37 GB written and 13 s for
//! such a wave). A journal would only save the O(entries) encode per wave,
//! which is milliseconds, at the price of a second format and compaction.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Local, SecondsFormat, SubsecRound, TimeDelta};
use serde::{Deserialize, Serialize};
use tokio::sync::Notify;

use crate::compress::{append_ext, ctx, parent_dir, sync_dir};
use crate::output::file::mark::Mark;
use crate::rotation::backup::parse_backup_name;
use crate::rotation::schedule::Schedule;

/// An entry whose file was started less than this long ago is never pruned
/// by [`plan_gone`]: a writer records a start just before it creates the
/// file, and a listing taken in between must not drop that start.
pub const PRUNE_GRACE: TimeDelta = TimeDelta::hours(1);

/// Format version written to the file; a file with another version is
/// treated like a corrupt one (ignored with a warning).
const VERSION: u32 = 1;

/// What is remembered about one live file. Times are local wall-clock
/// instants, truncated to the microsecond (the precision of backup stamps and
/// of the file), so a saved and reloaded state compares equal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    /// When the current live file was started: its backup will be named
    /// after `started.naive_local()`.
    pub started: DateTime<Local>,
    /// When the file last rotated; `None` if it never has. A schedule is due
    /// once its next time after this (or after `started`) has passed.
    pub last_rotation: Option<DateTime<Local>>,
}

impl FileState {
    /// A file started at `started` that has never rotated.
    pub fn new(started: DateTime<Local>) -> FileState {
        FileState {
            started,
            last_rotation: None,
        }
        .truncated()
    }

    /// When `schedule` next rotates this file: its first time after the
    /// last rotation, or after the start when the file never rotated or was
    /// started later (a rename failed, or the state was rebuilt). `None` for
    /// `rotate = size`. The one due-time rule for every rotating file.
    pub fn due(&self, schedule: &Schedule) -> Option<DateTime<Local>> {
        let base = self
            .last_rotation
            .map_or(self.started, |last| last.max(self.started));
        schedule.next_after(&base)
    }

    fn truncated(self) -> FileState {
        FileState {
            started: self.started.trunc_subsecs(6),
            last_rotation: self.last_rotation.map(|t| t.trunc_subsecs(6)),
        }
    }
}

/// The rotation state of every live file, keyed by the path the writer opens
/// (use one form consistently, e.g. `{logdir}/{app}/root.log` as configured).
///
/// On disk it is a small JSON document, times as RFC 3339 with microseconds
/// and the UTC offset (exact instants that survive a `TZ` or DST change):
/// `{"version":1,"files":{"/var/log/loghogd/app/root.log":
/// {"started":"2026-11-21T07:25:29.123456+01:00","last_rotation":null}}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StateDb {
    /// Where [`StateDb::save`] writes; the file [`StateDb::load`] read.
    path: PathBuf,
    /// Sorted so the saved file is stable and diffable.
    files: BTreeMap<PathBuf, FileState>,
    /// The broker consumer's positions (issue 16): `STREAM/PARTITION` →
    /// the last stream sequence whose lines are in the files, and where
    /// each of its files ended then. Saved with the rotation state because
    /// it is a fact about the files' contents.
    partitions: BTreeMap<String, Checkpoint>,
    /// Changed since the last successful save.
    unsaved: bool,
    /// Directories with renames (rotations) not yet fsynced: synced by the
    /// next [`StateDb::save`] before the state that records those
    /// rotations is written, so a crash never leaves a state that claims
    /// a rotation whose rename was lost.
    unsynced_dirs: BTreeSet<PathBuf>,
    /// Wakes the saver after a change.
    changed: Changed,
}

/// The [`Notify`] behind [`StateDb::changed`]; not part of the state's value.
#[derive(Debug, Clone, Default)]
struct Changed(Arc<Notify>);

impl PartialEq for Changed {
    fn eq(&self, _: &Changed) -> bool {
        true
    }
}

impl Eq for Changed {}

/// The document as stored.
#[derive(Serialize, Deserialize)]
struct Disk {
    version: u32,
    files: BTreeMap<String, DiskEntry>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    partitions: BTreeMap<String, Checkpoint>,
}

/// A broker partition's commit: every line of stream sequences up to
/// `seq` is in the files, which ended at `files` (paths relative to the
/// log directory) when it was made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Checkpoint {
    pub(crate) seq: u64,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(crate) files: BTreeMap<String, Mark>,
}

/// One file's entry as stored.
#[derive(Serialize, Deserialize)]
struct DiskEntry {
    started: String,
    #[serde(default)]
    last_rotation: Option<String>,
}

// === impl StateDb ===

impl StateDb {
    /// An empty state that will be saved to `path`.
    pub fn new(path: impl Into<PathBuf>) -> StateDb {
        StateDb {
            path: path.into(),
            ..StateDb::default()
        }
    }

    /// Reads the state saved at `path`. A missing file is an empty state (first
    /// start). A corrupt file, or one of an unknown version, is logged as a
    /// warning, moved aside to `{path}.corrupt` for inspection, and replaced by
    /// an empty state: the worst outcome is one rotation too early or late,
    /// which is better than a daemon that refuses to start. Entries with an
    /// unreadable time are dropped one by one, with a warning.
    ///
    /// # Errors
    /// Only when the file exists but cannot be read (permissions, I/O):
    /// saving would then fail too, so the caller should hear about it now.
    pub fn load(path: &Path) -> io::Result<StateDb> {
        let bytes = match fs::read(path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(StateDb::new(path)),
            Err(e) => return Err(ctx(e, "read state", path)),
        };
        match StateDb::decode(path, &bytes) {
            Ok(db) => Ok(db),
            Err(cause) => {
                tracing::warn!(
                    path = %path.display(),
                    %cause,
                    "state file is unreadable; starting with no rotation history"
                );
                let aside = append_ext(path, "corrupt");
                if let Err(e) = fs::rename(path, &aside) {
                    tracing::warn!(path = %path.display(), cause = %e, "cannot move corrupt state file aside");
                }
                Ok(StateDb::new(path))
            }
        }
    }

    /// Parses the JSON document; `path` is only remembered for saving.
    ///
    /// # Errors
    /// Invalid JSON, a wrong shape, or an unknown version, as a message.
    pub fn decode(path: &Path, bytes: &[u8]) -> Result<StateDb, String> {
        let disk: Disk = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        if disk.version != VERSION {
            return Err(format!("unknown state version {}", disk.version));
        }
        let mut db = StateDb::new(path);
        db.partitions = disk.partitions;
        for (file, entry) in disk.files {
            let started = parse_time(&entry.started);
            let last = entry.last_rotation.as_deref().map(parse_time);
            match (started, last.transpose()) {
                (Ok(started), Ok(last_rotation)) => {
                    db.files.insert(
                        PathBuf::from(file),
                        FileState {
                            started,
                            last_rotation,
                        }
                        .truncated(),
                    );
                }
                (Err(cause), _) | (_, Err(cause)) => {
                    tracing::warn!(file, %cause, "state: dropping entry with a bad time");
                }
            }
        }
        Ok(db)
    }

    /// The JSON document [`StateDb::save`] writes. Pure. Paths that are not
    /// UTF-8 (loghogd never creates one) are left out with a warning.
    pub fn encode(&self) -> Vec<u8> {
        let mut files = BTreeMap::new();
        for (path, state) in &self.files {
            let Some(key) = path.to_str() else {
                tracing::warn!(path = %path.display(), "state: not saving a non-UTF-8 path");
                continue;
            };
            files.insert(
                key.to_owned(),
                DiskEntry {
                    started: format_time(state.started),
                    last_rotation: state.last_rotation.map(format_time),
                },
            );
        }
        let disk = Disk {
            version: VERSION,
            files,
            partitions: self.partitions.clone(),
        };
        // Serializing strings and integers into a Vec cannot fail; fall back to
        // an empty document rather than panic if it ever did.
        let mut out = serde_json::to_vec_pretty(&disk).unwrap_or_default();
        out.push(b'\n');
        out
    }

    /// Writes the state atomically: first fsyncs the directories of the
    /// rotations it records ([`StateDb::note_renamed`]), then writes
    /// `{path}.tmp` in the same directory, `sync_all`, renames it over
    /// `path` and fsyncs that directory. A crash leaves either the old or
    /// the new state, never a torn one. O(entries): call it once per wave
    /// of changes, not per change (the scheduler does, on [`StateDb::changed`]).
    ///
    /// # Errors
    /// Any I/O error (the `.tmp` is removed then); the previous state stays,
    /// and so does everything this save should have written.
    pub fn save(&mut self) -> io::Result<()> {
        while let Some(dir) = self.unsynced_dirs.first() {
            // A directory that is gone has no rename left to make durable.
            match sync_dir(dir) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(ctx(e, "fsync directory", dir)),
            }
            self.unsynced_dirs.pop_first();
        }
        let tmp = append_ext(&self.path, "tmp");
        let result = (|| {
            let mut file = OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&tmp)
                .map_err(|e| ctx(e, "create", &tmp))?;
            file.write_all(&self.encode())
                .map_err(|e| ctx(e, "write", &tmp))?;
            file.sync_all().map_err(|e| ctx(e, "fsync", &tmp))?;
            fs::rename(&tmp, &self.path).map_err(|e| ctx(e, "rename into", &self.path))
        })();
        if let Err(err) = result {
            let _ = fs::remove_file(&tmp);
            return Err(err);
        }
        let dir = parent_dir(&self.path);
        sync_dir(dir).map_err(|e| ctx(e, "fsync directory", dir))?;
        self.unsaved = false;
        Ok(())
    }

    /// Whether something changed since the last successful save.
    pub fn unsaved(&self) -> bool {
        self.unsaved
    }

    /// Where the state is saved.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The last commit of broker partition `key` (`STREAM/N`); empty
    /// (sequence 0) when there was none.
    pub(crate) fn partition(&self, key: &str) -> Checkpoint {
        self.partitions.get(key).cloned().unwrap_or_default()
    }

    /// Records partition `key`'s commit (in memory until [`StateDb::save`]).
    pub(crate) fn set_partition(&mut self, key: &str, c: &Checkpoint) {
        if self.partitions.get(key) != Some(c) {
            self.unsaved = true;
            self.partitions.insert(key.to_owned(), c.clone());
        }
    }

    /// The state of the live file `live`, if known.
    pub fn get(&self, live: &Path) -> Option<FileState> {
        self.files.get(live).copied()
    }

    /// Records the state of `live` (times truncated to the microsecond).
    /// In memory only until [`StateDb::save`]; wakes [`StateDb::changed`].
    pub fn set(&mut self, live: &Path, state: FileState) {
        self.unsaved = true;
        self.files.insert(live.to_owned(), state.truncated());
        self.changed.0.notify_one();
    }

    /// Records that a file in `dir` was renamed and the directory not yet
    /// fsynced: the next [`StateDb::save`] syncs it first.
    pub fn note_renamed(&mut self, dir: &Path) {
        self.unsynced_dirs.insert(dir.to_owned());
    }

    /// Notified (one stored permit) whenever the state changes, so one
    /// saver can coalesce a wave of changes into one save.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.0.clone()
    }

    /// Forgets `live` and returns what was known.
    pub fn remove(&mut self, live: &Path) -> Option<FileState> {
        let old = self.files.remove(live);
        if old.is_some() {
            self.unsaved = true;
            self.changed.0.notify_one();
        }
        old
    }

    /// Removes the entries [`plan_gone`] found, each only if it still holds
    /// the state the plan saw (a rotation or a new start since then keeps
    /// it). Returns how many went.
    pub fn remove_gone(&mut self, gone: &[(PathBuf, FileState)]) -> usize {
        let mut removed = 0;
        for (path, seen) in gone {
            if self.files.get(path) == Some(seen) {
                self.remove(path);
                removed += 1;
            }
        }
        removed
    }

    /// A copy of every entry, for work done without the lock ([`plan_gone`]).
    pub fn snapshot(&self) -> Vec<(PathBuf, FileState)> {
        self.files.iter().map(|(p, s)| (p.clone(), *s)).collect()
    }

    /// Every known file and its state, sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&Path, &FileState)> {
        self.files.iter().map(|(p, s)| (p.as_path(), s))
    }

    /// How many files are known.
    pub fn len(&self) -> usize {
        self.files.len()
    }

    /// Whether no file is known.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }
}

/// The entries of `entries` whose live file no longer exists and has no
/// backup left (issue 12: 45,000 transient hosts grew the state to 6.2 MB),
/// started at least [`PRUNE_GRACE`] before `now`. Blocking: reads each
/// entry's directory once (O(directory entries), not O(files²)).
///
/// Only a clear answer prunes: a directory that is missing counts as empty,
/// but one that cannot be read, or that is reached through a symlink
/// (`symlink_metadata`), keeps all its entries. `listing(dir)` gives a
/// directory's file names, or `None` for "cannot tell": the daemon passes
/// [`listing`].
pub fn plan_gone(
    entries: &[(PathBuf, FileState)],
    now: DateTime<Local>,
    mut listing: impl FnMut(&Path) -> Option<HashSet<String>>,
) -> Vec<(PathBuf, FileState)> {
    let mut by_dir: HashMap<&Path, Vec<&(PathBuf, FileState)>> = HashMap::new();
    for e in entries {
        if now - e.1.started >= PRUNE_GRACE {
            by_dir.entry(parent_dir(&e.0)).or_default().push(e);
        }
    }
    let mut gone = Vec::new();
    for (dir, entries) in by_dir {
        let Some(names) = listing(dir) else {
            continue;
        };
        // Live names that still have something on disk: the file itself,
        // or a backup (compressed, partial or not) of it.
        let mut alive: HashSet<&str> = HashSet::new();
        for n in &names {
            alive.insert(n);
            if let Some(b) = parse_backup_name(n) {
                alive.insert(b.live);
            }
        }
        for e in entries {
            let name = e.0.file_name().and_then(|n| n.to_str());
            if name.is_some_and(|n| !alive.contains(n)) {
                gone.push(e.clone());
            }
        }
    }
    gone.sort_by(|a, b| a.0.cmp(&b.0));
    gone
}

/// The file names in `dir` for [`plan_gone`]: empty when `dir` does not
/// exist, `None` (keep every entry) when it is a symlink, not a directory,
/// or cannot be read.
pub fn listing(dir: &Path) -> Option<HashSet<String>> {
    match fs::symlink_metadata(dir) {
        Ok(m) if m.file_type().is_dir() => {}
        Ok(_) => return None,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Some(HashSet::new()),
        Err(_) => return None,
    }
    let mut names = HashSet::new();
    for entry in fs::read_dir(dir).ok()? {
        let entry = entry.ok()?;
        // A name that is not UTF-8 is none of ours.
        if let Ok(n) = entry.file_name().into_string() {
            names.insert(n);
        }
    }
    Some(names)
}

/// A best guess at when an existing live file was started, for a file the
/// state does not know (first start after an upgrade from the Python daemon,
/// or a lost state file): its creation time where the file system records
/// one, else its last modification. `None` when the file does not exist.
///
/// # Errors
/// The file exists but cannot be stat'ed, or the platform reports neither time.
pub fn started_on_disk(live: &Path) -> io::Result<Option<DateTime<Local>>> {
    let meta = match fs::symlink_metadata(live) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ctx(e, "stat", live)),
    };
    let time = meta
        .created()
        .or_else(|_| meta.modified())
        .map_err(|e| ctx(e, "file times of", live))?;
    Ok(Some(DateTime::<Local>::from(time).trunc_subsecs(6)))
}

fn format_time(t: DateTime<Local>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, false)
}

fn parse_time(s: &str) -> Result<DateTime<Local>, String> {
    DateTime::parse_from_rfc3339(s)
        .map(|t| t.with_timezone(&Local))
        .map_err(|e| format!("{s:?}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32, us: u32) -> DateTime<Local> {
        Local
            .with_ymd_and_hms(y, mo, d, h, mi, s)
            .earliest()
            .unwrap()
            + chrono::TimeDelta::microseconds(us.into())
    }

    #[test]
    fn missing_file_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let db = StateDb::load(&dir.path().join("state.json")).unwrap();
        assert!(db.is_empty());
        assert_eq!(db.path(), dir.path().join("state.json"));
    }

    #[test]
    fn save_load_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        let mut db = StateDb::new(&path);
        let root = Path::new("/var/log/loghogd/app/root.log");
        let web = Path::new("/var/log/loghogd/app/host1-web.log");
        let started = local(2026, 11, 21, 7, 25, 29, 123_456);
        db.set(root, FileState::new(started));
        db.set(
            web,
            FileState {
                // Sub-microsecond digits are dropped, consistently in memory and on disk.
                started: started + chrono::TimeDelta::nanoseconds(789),
                last_rotation: Some(local(2026, 11, 22, 0, 0, 0, 0)),
            },
        );
        db.save().unwrap();
        assert!(!dir.path().join("state.json.tmp").exists());

        let back = StateDb::load(&path).unwrap();
        assert_eq!(back, db);
        assert_eq!(back.get(root), Some(FileState::new(started)));
        assert_eq!(back.get(web).unwrap().started, started);
        assert_eq!(back.len(), 2);

        // Overwrite with fewer entries.
        let mut db = back;
        assert!(db.remove(root).is_some());
        db.save().unwrap();
        let back = StateDb::load(&path).unwrap();
        assert_eq!(back.iter().map(|(p, _)| p).collect::<Vec<_>>(), [web]);
    }

    #[test]
    fn file_format_is_readable_json() {
        let mut db = StateDb::new("s.json");
        db.set(
            Path::new("a/root.log"),
            FileState::new(local(2026, 1, 2, 3, 4, 5, 6)),
        );
        let v: serde_json::Value = serde_json::from_slice(&db.encode()).unwrap();
        assert_eq!(v["version"], 1);
        let started = v["files"]["a/root.log"]["started"].as_str().unwrap();
        assert!(
            started.starts_with("2026-01-02T03:04:05.000006"),
            "{started}"
        );
        assert!(v["files"]["a/root.log"]["last_rotation"].is_null());
    }

    #[test]
    fn corrupt_file_starts_empty_and_is_kept_aside() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        for junk in [
            &b"{\"version\":1,\"files\":{"[..],
            b"\x00\xff",
            b"[]",
            b"{\"version\":99,\"files\":{}}",
        ] {
            fs::write(&path, junk).unwrap();
            let mut db = StateDb::load(&path).unwrap();
            assert!(db.is_empty());
            assert_eq!(
                fs::read(dir.path().join("state.json.corrupt")).unwrap(),
                junk
            );
            // And it can be saved over.
            db.save().unwrap();
            assert!(StateDb::load(&path).unwrap().is_empty());
        }
    }

    #[test]
    fn bad_entry_is_dropped_alone() {
        let json = br#"{"version":1,"files":{
            "a.log":{"started":"2026-01-02T03:04:05.000006+00:00","last_rotation":null},
            "b.log":{"started":"yesterday"},
            "c.log":{"started":"2026-01-02T03:04:05Z","last_rotation":"soon"}}}"#;
        let db = StateDb::decode(Path::new("s.json"), json).unwrap();
        assert_eq!(db.len(), 1);
        assert!(db.get(Path::new("a.log")).is_some());
    }

    #[test]
    fn save_into_missing_dir_fails_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut db = StateDb::new(dir.path().join("no/such/state.json"));
        db.save().unwrap_err();
    }

    #[test]
    fn started_on_disk_reads_file_times() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("root.log");
        assert_eq!(started_on_disk(&live).unwrap(), None);
        let before = Local::now() - chrono::TimeDelta::seconds(5);
        fs::write(&live, b"x").unwrap();
        let t = started_on_disk(&live).unwrap().unwrap();
        assert!(t >= before && t <= Local::now() + chrono::TimeDelta::seconds(5));
    }

    #[test]
    fn gone_files_without_backups_are_pruned_and_others_kept() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        fs::create_dir(&app).unwrap();
        let now = local(2026, 3, 10, 12, 0, 0, 0);
        let old = FileState::new(now - TimeDelta::days(2));
        let fresh = FileState::new(now - TimeDelta::minutes(5));
        let mut db = StateDb::new(dir.path().join("state.json"));
        let mut gone = Vec::new();
        for i in 0..200 {
            let live = app.join(format!("transient{i}-root.log"));
            db.set(&live, old);
            gone.push(live);
        }
        let live_file = app.join("live-root.log");
        fs::write(&live_file, b"x\n").unwrap();
        let with_backup = app.join("kept-root.log");
        fs::write(
            app.join("kept-root.log.2026-03-01-00-00-00-000000.xz"),
            b"x",
        )
        .unwrap();
        let partial_only = app.join("partial-root.log");
        fs::write(
            app.join("partial-root.log.2026-03-01-00-00-00-000000.gz.tmp"),
            b"x",
        )
        .unwrap();
        let just_started = app.join("new-root.log");
        let missing_dir = dir.path().join("gone-app/root.log");
        for p in [&live_file, &with_backup, &partial_only, &missing_dir] {
            db.set(p, old);
        }
        db.set(&just_started, fresh);
        #[cfg(unix)]
        let linked = {
            // Behind a symlinked directory: cannot tell, so kept.
            std::os::unix::fs::symlink(dir.path().join("nowhere"), dir.path().join("link"))
                .unwrap();
            let p = dir.path().join("link/root.log");
            db.set(&p, old);
            p
        };
        db.save().unwrap();

        let plan = plan_gone(&db.snapshot(), now, listing);
        let mut want: Vec<PathBuf> = gone.clone();
        want.push(missing_dir.clone());
        want.sort();
        assert_eq!(
            plan.iter().map(|(p, _)| p.clone()).collect::<Vec<_>>(),
            want
        );
        // An entry that changed since the plan (a rotation, a restart of the
        // file) stays.
        db.set(&gone[0], FileState::new(now));
        assert_eq!(db.remove_gone(&plan), want.len() - 1);
        assert!(db.unsaved());
        db.save().unwrap();
        let back = StateDb::load(db.path()).unwrap();
        for kept in [
            &live_file,
            &with_backup,
            &partial_only,
            &just_started,
            &gone[0],
        ] {
            assert!(back.get(kept).is_some(), "{}", kept.display());
        }
        #[cfg(unix)]
        assert!(back.get(&linked).is_some());
        assert!(back.get(&missing_dir).is_none());
        assert!(back.get(&gone[1]).is_none());
        assert_eq!(back.len(), 5 + usize::from(cfg!(unix)));
    }

    #[test]
    fn is_send_and_sync() {
        fn check<T: Send + Sync>() {}
        check::<StateDb>();
        check::<FileState>();
    }
}
