//! Start-up crash recovery (SPEC §5): "backups left uncompressed by a crash
//! are compressed at start-up; a partial compressed file from a crash is
//! removed and redone". The daemon runs [`recover`] once, on the blocking
//! pool, after the config is loaded and before any writer can rotate.

use std::collections::HashSet;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::NaiveDateTime;

use crate::compress::{self, ctx, Codec};
use crate::rotation::backup::parse_backup_name;
use crate::rotation::beneath::{self, Dir};

/// What [`recover`] found and did (it also logs a summary when it did anything).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoverReport {
    /// Application directories scanned.
    pub dirs: usize,
    /// Partial `*.{xz,gz,bz2}.tmp` files removed.
    pub partials_removed: usize,
    /// Uncompressed backups compressed now.
    pub compressed: usize,
    /// Uncompressed backups removed because a complete compressed copy of
    /// the same backup already existed (a crash between rename and removal).
    pub leftovers_removed: usize,
    /// Files that could not be handled; each was logged and is left for the
    /// next start. Never a reason to refuse to start.
    pub failed: usize,
}

/// Repairs the backups in every `{logdir}/{app}/` after a crash: removes
/// every partial compression, and compresses (with `codec` at `level`) every
/// backup still uncompressed, so the partial's source is compressed again.
///
/// Only files named like our backups (`{live}.{stamp}[.{ext}[.tmp]]` where
/// `{live}` ends in `.log` or `.log.gz`) are touched. Symlinks are never
/// followed, neither for app directories nor for files ([`beneath`]: every
/// directory is opened below `logdir` with `O_NOFOLLOW`, when listed and
/// again when acted on), so nothing outside `logdir` is read, written or
/// removed; a link found is logged, rate-limited.
///
/// Backups of a `compress_on_write` live file (`*.log.gz.{stamp}`) are gzip
/// already and stay as they are. The file name decides this, not the
/// `compress_on_write` flag: plain `*.log.{stamp}` backups left from before
/// the flag was turned on are still compressed. The flag is therefore only
/// reported in the log line.
///
/// Must finish before any writer rotates: a rotation's own compression
/// racing this one over the same backup would trip over the shared `.tmp`.
///
/// # Errors
/// Only when `logdir` exists but cannot be read. A missing `logdir` is an
/// empty report (files are created on the first message). Problems with
/// single files or app directories are logged and counted in `failed`.
#[cfg(test)]
pub fn recover(
    logdir: &Path,
    codec: Codec,
    level: u32,
    compress_on_write: bool,
) -> io::Result<RecoverReport> {
    Ok(plan(logdir)?.run(logdir, codec, level, compress_on_write))
}

/// What a crash left behind, listed before the daemon writes or rotates
/// anything, so the (slow) compression that follows in the background never
/// touches a backup made by this run's own rotations.
#[derive(Debug, Default)]
pub struct RecoveryPlan {
    /// Half-written compressed files, to delete.
    partials: Vec<PathBuf>,
    /// Uncompressed backups whose complete compressed copy exists, to delete.
    leftovers: Vec<PathBuf>,
    /// Uncompressed backups, to compress.
    to_compress: Vec<PathBuf>,
    /// App directories listed.
    dirs: usize,
    /// Entries that could not be examined.
    failed: usize,
}

/// Lists what a crash left in every app directory under `logdir`.
///
/// # Errors
/// Only when `logdir` exists but cannot be read.
pub fn plan(logdir: &Path) -> io::Result<RecoveryPlan> {
    let mut plan = RecoveryPlan::default();
    let entries = match fs::read_dir(logdir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(plan),
        Err(e) => return Err(ctx(e, "list", logdir)),
    };
    for entry in entries {
        let entry = entry.map_err(|e| ctx(e, "list", logdir))?;
        let path = entry.path();
        // `DirEntry::file_type` does not follow a symlink.
        match entry.file_type() {
            Ok(t) if t.is_dir() => {}
            Ok(t) if t.is_symlink() => {
                let err = io::Error::from_raw_os_error(libc::ELOOP);
                beneath::warn_refused("recovery", &path, &err);
                continue;
            }
            Ok(_) => continue,
            Err(e) => {
                tracing::warn!(path = %path.display(), cause = %e, "recovery: cannot stat");
                plan.failed += 1;
                continue;
            }
        }
        let dir = match Dir::open(logdir, &path) {
            Ok(d) => d,
            Err(e) => {
                if beneath::is_refusal(&e) {
                    beneath::warn_refused("recovery", &path, &e);
                } else {
                    tracing::warn!(dir = %path.display(), cause = %e, "recovery: cannot open app directory");
                    plan.failed += 1;
                }
                continue;
            }
        };
        plan.dirs += 1;
        if let Err(e) = plan_dir(&dir, &mut plan) {
            tracing::warn!(dir = %path.display(), cause = %e, "recovery: cannot scan app directory");
            plan.failed += 1;
        }
    }
    Ok(plan)
}

impl RecoveryPlan {
    /// Whether there is nothing to do.
    pub fn is_empty(&self) -> bool {
        self.partials.is_empty() && self.leftovers.is_empty() && self.to_compress.is_empty()
    }

    /// Carries the plan out (blocking; compression is slow).
    pub fn run(
        self,
        logdir: &Path,
        codec: Codec,
        level: u32,
        compress_on_write: bool,
    ) -> RecoverReport {
        let mut report = RecoverReport {
            dirs: self.dirs,
            failed: self.failed,
            ..RecoverReport::default()
        };
        for p in &self.partials {
            match beneath_do(logdir, p, |inner| fs::remove_file(inner)) {
                Ok(()) => report.partials_removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), cause = %e, "recovery: cannot remove partial");
                    report.failed += 1;
                }
            }
        }
        for p in &self.leftovers {
            match beneath_do(logdir, p, |inner| fs::remove_file(inner)) {
                Ok(()) => report.leftovers_removed += 1,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %p.display(), cause = %e, "recovery: cannot remove compressed source");
                    report.failed += 1;
                }
            }
        }
        for p in &self.to_compress {
            match beneath_do(logdir, p, |inner| {
                compress::compress_file(inner, codec, level)
            }) {
                Ok(_) => report.compressed += 1,
                Err(e) => {
                    tracing::warn!(path = %p.display(), cause = %e, "recovery: cannot compress backup");
                    report.failed += 1;
                }
            }
        }
        if report.partials_removed + report.compressed + report.leftovers_removed + report.failed
            > 0
        {
            tracing::info!(
                logdir = %logdir.display(),
                partials_removed = report.partials_removed,
                compressed = report.compressed,
                leftovers_removed = report.leftovers_removed,
                failed = report.failed,
                compress_on_write,
                "recovered backups left by an unclean stop"
            );
        }
        report
    }
}

/// Runs `op` on `path` (below `logdir`) as reached through its directory
/// opened without following a symlink ([`Dir`]), so a directory swapped
/// for a link since the plan was made is refused (and logged), not followed.
fn beneath_do<T>(
    logdir: &Path,
    path: &Path,
    op: impl FnOnce(&Path) -> io::Result<T>,
) -> io::Result<T> {
    let (dir, name) = Dir::of_file(logdir, path).inspect_err(|e| {
        if beneath::is_refusal(e) {
            beneath::warn_refused("recovery", path, e);
        }
    })?;
    op(&dir.inner(name)).map_err(|e| dir.outer_err(e))
}

/// One backup found in an app directory.
struct Found {
    path: PathBuf,
    live: String,
    stamp: NaiveDateTime,
    compressed: Option<Codec>,
    partial: bool,
}

/// Lists one app directory's crash leftovers into `plan`.
fn plan_dir(dir: &Dir, plan: &mut RecoveryPlan) -> io::Result<()> {
    let mut found = Vec::new();
    for entry in fs::read_dir(dir.inner("")).map_err(|e| dir.outer_err(e))? {
        let entry = entry?;
        let file_name = entry.file_name();
        let Some(parsed) = file_name.to_str().and_then(parse_backup_name) else {
            continue;
        };
        // Only names the writer can produce; leave anything else alone.
        if !(parsed.live.ends_with(".log") || parsed.live.ends_with(".log.gz")) {
            continue;
        }
        let path = dir.path().join(&file_name);
        match entry.file_type() {
            Ok(t) if t.is_file() => {}
            Ok(t) if t.is_symlink() => {
                let err = io::Error::from_raw_os_error(libc::ELOOP);
                beneath::warn_refused("recovery", &path, &err);
                continue;
            }
            _ => continue,
        }
        found.push(Found {
            live: parsed.live.to_owned(),
            stamp: parsed.stamp,
            compressed: parsed.compressed,
            partial: parsed.partial,
            path,
        });
    }

    // Complete compressed copies: the rename that creates them happens only
    // after their data is synced, so one that exists is whole.
    let done: HashSet<(&str, NaiveDateTime)> = found
        .iter()
        .filter(|f| f.compressed.is_some() && !f.partial)
        .map(|f| (f.live.as_str(), f.stamp))
        .collect();

    plan.partials
        .extend(found.iter().filter(|f| f.partial).map(|f| f.path.clone()));
    for f in found.iter().filter(|f| f.compressed.is_none()) {
        if f.live.ends_with(".gz") {
            continue; // compress_on_write backup: gzip already.
        }
        if done.contains(&(f.live.as_str(), f.stamp)) {
            plan.leftovers.push(f.path.clone());
        } else {
            plan.to_compress.push(f.path.clone());
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::compress::{compressed_path, decompress_to_vec, partial_path};

    const STAMP_A: &str = "2026-11-21-07-25-29-123456";
    const STAMP_B: &str = "2026-11-22-00-00-00-000000";

    fn files(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn missing_logdir_is_empty_report() {
        let dir = tempfile::tempdir().unwrap();
        let r = recover(&dir.path().join("nope"), Codec::Xz, 6, false).unwrap();
        assert_eq!(r, RecoverReport::default());
    }

    #[test]
    fn redoes_partial_and_compresses_leftover() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("my-app");
        fs::create_dir(&app).unwrap();
        // Crash during compression: the source is intact, a partial .xz.tmp sits next to it.
        let a = app.join(format!("root.log.{STAMP_A}"));
        fs::write(&a, b"first backup\n").unwrap();
        fs::write(partial_path(&a, Codec::Xz), b"\xfd7zXZ truncated").unwrap();
        // Crash before compression started: just an uncompressed backup.
        let b = app.join(format!("web.log.{STAMP_B}"));
        fs::write(&b, b"second backup\n").unwrap();
        // The live files and an unrelated file are left alone.
        fs::write(app.join("root.log"), b"live\n").unwrap();
        fs::write(
            app.join("notes.txt.2026-11-21-07-25-29-123456"),
            b"not ours",
        )
        .unwrap();

        let r = recover(dir.path(), Codec::Xz, 6, false).unwrap();
        assert_eq!(
            r,
            RecoverReport {
                dirs: 1,
                partials_removed: 1,
                compressed: 2,
                leftovers_removed: 0,
                failed: 0
            }
        );
        assert_eq!(
            files(&app),
            [
                "notes.txt.2026-11-21-07-25-29-123456".to_owned(),
                "root.log".into(),
                format!("root.log.{STAMP_A}.xz"),
                format!("web.log.{STAMP_B}.xz"),
            ]
        );
        assert_eq!(
            decompress_to_vec(&compressed_path(&a, Codec::Xz)).unwrap(),
            b"first backup\n"
        );
        assert_eq!(
            decompress_to_vec(&compressed_path(&b, Codec::Xz)).unwrap(),
            b"second backup\n"
        );

        // Idempotent.
        let r = recover(dir.path(), Codec::Xz, 6, false).unwrap();
        assert_eq!(
            r,
            RecoverReport {
                dirs: 1,
                ..Default::default()
            }
        );
    }

    #[test]
    fn leftover_source_next_to_complete_copy_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        fs::create_dir(&app).unwrap();
        let a = app.join(format!("root.log.{STAMP_A}"));
        fs::write(&a, b"payload\n").unwrap();
        let gz = compress::compress_file(&a, Codec::Gzip, 6).unwrap();
        fs::write(&a, b"payload\n").unwrap(); // as if the removal never happened
        let r = recover(dir.path(), Codec::Xz, 6, false).unwrap();
        assert_eq!(r.leftovers_removed, 1);
        assert_eq!(r.compressed, 0);
        assert_eq!(files(&app), [format!("root.log.{STAMP_A}.gz")]);
        assert_eq!(decompress_to_vec(&gz).unwrap(), b"payload\n");
    }

    #[test]
    fn compress_on_write_backups_stay() {
        let dir = tempfile::tempdir().unwrap();
        let app = dir.path().join("app");
        fs::create_dir(&app).unwrap();
        let name = format!("root.log.gz.{STAMP_A}");
        fs::write(app.join(&name), b"gzip members").unwrap();
        let r = recover(dir.path(), Codec::Bzip2, 6, true).unwrap();
        assert_eq!(
            r,
            RecoverReport {
                dirs: 1,
                ..Default::default()
            }
        );
        assert_eq!(files(&app), [name]);
    }

    #[cfg(unix)]
    #[test]
    fn symlinks_are_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let logdir = dir.path().join("logs");
        fs::create_dir(&logdir).unwrap();
        // An app "directory" that is a link to somewhere else.
        let victim = outside.path().join(format!("root.log.{STAMP_A}"));
        fs::write(&victim, b"outside").unwrap();
        fs::write(partial_path(&victim, Codec::Xz), b"outside partial").unwrap();
        std::os::unix::fs::symlink(outside.path(), logdir.join("linked-app")).unwrap();
        // A backup-named link inside a real app dir.
        let app = logdir.join("app");
        fs::create_dir(&app).unwrap();
        std::os::unix::fs::symlink(&victim, app.join(format!("web.log.{STAMP_B}"))).unwrap();

        let r = recover(&logdir, Codec::Xz, 6, false).unwrap();
        assert_eq!(
            r,
            RecoverReport {
                dirs: 1,
                ..Default::default()
            }
        );
        assert_eq!(fs::read(&victim).unwrap(), b"outside");
        assert!(partial_path(&victim, Codec::Xz).exists());
    }
}
