//! Backup naming and retention (SPEC §5): a rotated live file `{name}` becomes
//! `{name}.{YYYY-MM-DD-HH-MM-SS-ffffff}` (local time the file was started),
//! later `{name}.{stamp}.{xz|gz|bz2}`. The writer calls [`rename_live`] on a
//! rotation, `compress::compress_file` on the result, then [`prune`].
//! Naming and the prune plan are pure; only the functions that say so touch disk.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use chrono::{Datelike, NaiveDate, NaiveDateTime, TimeDelta, Timelike};

use crate::compress::{self, append_ext, ctx, parent_dir, Codec};

/// How far [`free_backup_path`] moves a stamp forward, in microseconds,
/// before giving up.
pub const MAX_BUMPS: u32 = 1000;

/// Length of a stamp: `YYYY-MM-DD-HH-MM-SS-ffffff`.
const STAMP_LEN: usize = 26;

/// One backup of a live file, as found on disk by [`list_backups`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backup {
    /// Full path of the backup file.
    pub path: PathBuf,
    /// Local time at which the live file it was rotated from was started.
    pub stamp: NaiveDateTime,
    /// The codec it is compressed with (for a partial: being compressed
    /// with); `None` for a backup still waiting for compression.
    pub compressed: Option<Codec>,
    /// A `.{ext}.tmp` left by a compression that did not finish. Never a
    /// valid backup: recovery removes it and compresses its source again.
    pub partial: bool,
}

/// A file name split by [`parse_backup_name`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackupName<'a> {
    /// The live file's name (`root.log`, `host1-web.log`, `root.log.gz`).
    pub live: &'a str,
    /// See [`Backup::stamp`].
    pub stamp: NaiveDateTime,
    /// See [`Backup::compressed`].
    pub compressed: Option<Codec>,
    /// See [`Backup::partial`].
    pub partial: bool,
}

/// Formats a stamp as `YYYY-MM-DD-HH-MM-SS-ffffff` (six fraction digits,
/// truncated to the microsecond).
pub fn format_stamp(t: NaiveDateTime) -> String {
    format!(
        "{:04}-{:02}-{:02}-{:02}-{:02}-{:02}-{:06}",
        t.year(),
        t.month(),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        // A leap second shows up as nanosecond >= 1e9; fold it into :59.999999.
        (t.nanosecond() / 1_000).min(999_999),
    )
}

/// Parses exactly `YYYY-MM-DD-HH-MM-SS-ffffff`; anything else is `None`.
/// Stricter than a chrono format string on purpose: a lookalike file must not
/// be mistaken for a backup and deleted by [`prune`].
pub fn parse_stamp(s: &str) -> Option<NaiveDateTime> {
    let b = s.as_bytes();
    if b.len() != STAMP_LEN {
        return None;
    }
    for (i, &c) in b.iter().enumerate() {
        let dash = matches!(i, 4 | 7 | 10 | 13 | 16 | 19);
        if dash != (c == b'-') || (!dash && !c.is_ascii_digit()) {
            return None;
        }
    }
    // Every field is ASCII digits now, so parsing cannot fail except on range.
    let num = |r: std::ops::Range<usize>| s[r].parse::<u32>().ok();
    let date = NaiveDate::from_ymd_opt(num(0..4)? as i32, num(5..7)?, num(8..10)?)?;
    date.and_hms_micro_opt(num(11..13)?, num(14..16)?, num(17..19)?, num(20..26)?)
}

/// Splits a file name of the form `{live}.{stamp}`, `{live}.{stamp}.{ext}` or
/// `{live}.{stamp}.{ext}.tmp` (ext = `xz`, `gz`, `bz2`). Pure.
pub fn parse_backup_name(file_name: &str) -> Option<BackupName<'_>> {
    let (rest, partial) = match file_name.strip_suffix(".tmp") {
        Some(r) => (r, true),
        None => (file_name, false),
    };
    let (rest, compressed) = match rest.rsplit_once('.') {
        Some((head, ext)) => match Codec::from_extension(ext) {
            Some(c) => (head, Some(c)),
            None => (rest, None),
        },
        None => (rest, None),
    };
    // We only ever write `.tmp` next to a codec extension.
    if partial && compressed.is_none() {
        return None;
    }
    let split = rest.len().checked_sub(STAMP_LEN + 1)?;
    if !rest.is_char_boundary(split) || rest.as_bytes()[split] != b'.' {
        return None;
    }
    let live = &rest[..split];
    if live.is_empty() {
        return None;
    }
    let stamp = parse_stamp(&rest[split + 1..])?;
    Some(BackupName {
        live,
        stamp,
        compressed,
        partial,
    })
}

/// `{live}.{stamp}`: the backup name for a live file started at `started`
/// (local time). Pure; see [`free_backup_path`] for a name not yet taken.
pub fn backup_path(live: &Path, started: NaiveDateTime) -> PathBuf {
    append_ext(live, &format_stamp(started))
}

/// Like [`backup_path`], but if `exists` says that name (or its compressed
/// or partial form) is taken, the stamp is moved forward one microsecond at a
/// time until it is free, so that two rotations within one microsecond (a
/// clock step backwards, a tiny `max_size`) never overwrite a backup.
/// Returns the path and the stamp actually used, or `None` if
/// [`MAX_BUMPS`] successive microseconds are all taken (something other than
/// rotation is creating these names). Pure apart from `exists`.
pub fn free_backup_path(
    live: &Path,
    started: NaiveDateTime,
    mut exists: impl FnMut(&Path) -> bool,
) -> Option<(PathBuf, NaiveDateTime)> {
    let mut stamp = started;
    for _ in 0..=MAX_BUMPS {
        let path = backup_path(live, stamp);
        let taken = exists(&path)
            || Codec::ALL.into_iter().any(|c| {
                exists(&compress::compressed_path(&path, c))
                    || exists(&compress::partial_path(&path, c))
            });
        if !taken {
            return Some((path, stamp));
        }
        stamp += TimeDelta::microseconds(1);
    }
    None
}

/// Every backup of `live` in its directory, oldest first (ties by path).
/// Only regular files named exactly `{name}.{stamp}[.{ext}[.tmp]]` count:
/// `web.log.{stamp}` is not a backup of `root.log`, nor `host-web.log.{stamp}`
/// of `web.log`. Symlinks are never listed.
///
/// # Errors
/// The directory cannot be read, or `live` has no UTF-8 file name.
pub fn list_backups(live: &Path) -> io::Result<Vec<Backup>> {
    let name = live_name(live)?;
    let dir = parent_dir(live);
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).map_err(|e| ctx(e, "list", dir))? {
        let entry = entry.map_err(|e| ctx(e, "list", dir))?;
        let file_name = entry.file_name();
        let Some(parsed) = file_name.to_str().and_then(parse_backup_name) else {
            continue;
        };
        if parsed.live != name {
            continue;
        }
        // `DirEntry::file_type` does not follow symlinks.
        if !entry.file_type().is_ok_and(|t| t.is_file()) {
            continue;
        }
        out.push(Backup {
            path: entry.path(),
            stamp: parsed.stamp,
            compressed: parsed.compressed,
            partial: parsed.partial,
        });
    }
    out.sort_by(|a, b| a.stamp.cmp(&b.stamp).then_with(|| a.path.cmp(&b.path)));
    Ok(out)
}

/// The backups to delete so that only the newest `keep` remain. Pure.
///
/// Counts generations by stamp, so a backup caught between compression's
/// rename and the removal of its source (`x.{stamp}` and `x.{stamp}.xz`) is
/// one backup, kept or deleted whole. Partials are never counted nor
/// returned: one may be a compression still running, and recovery owns them.
pub fn plan_prune(backups: &[Backup], keep: usize) -> Vec<PathBuf> {
    let mut complete: Vec<&Backup> = backups.iter().filter(|b| !b.partial).collect();
    // Newest first.
    complete.sort_by(|a, b| b.stamp.cmp(&a.stamp).then_with(|| a.path.cmp(&b.path)));
    let mut generations = 0;
    let mut last_stamp = None;
    let mut doomed = Vec::new();
    for b in complete {
        if last_stamp != Some(b.stamp) {
            generations += 1;
            last_stamp = Some(b.stamp);
        }
        if generations > keep {
            doomed.push(b.path.clone());
        }
    }
    doomed
}

/// Deletes all but the newest `keep` backups of `live` (see [`plan_prune`])
/// and returns what it deleted. A file that fails to go is logged and
/// skipped: retention is retried at the next rotation anyway.
///
/// # Errors
/// Only when the backups cannot be listed.
pub fn prune(live: &Path, keep: usize) -> io::Result<Vec<PathBuf>> {
    let backups = list_backups(live)?;
    let mut removed = Vec::new();
    for path in plan_prune(&backups, keep) {
        match fs::remove_file(&path) {
            Ok(()) => removed.push(path),
            // Someone (a concurrent prune, the operator) was first: same result.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(path = %path.display(), cause = %e, "cannot remove old backup")
            }
        }
    }
    Ok(removed)
}

/// Renames the live file to its backup name ([`free_backup_path`] with
/// `started`, the local time the file was started) and fsyncs the directory.
/// Returns the backup path, or `None` when the live file does not exist or is
/// empty: nothing to keep, so no backup is made and an empty file stays.
///
/// The writer must have flushed and closed (or at least stopped writing) the
/// file first. Assumes it is the only one creating backups of `live`
/// (one writer task per file), since the free-name check and the rename are
/// two steps.
///
/// # Errors
/// `live` is not a regular file (`InvalidInput`), no free name was found
/// (`AlreadyExists`, see [`free_backup_path`]), or the rename or directory
/// sync failed. After a failed sync the rename may or may not survive a crash;
/// either way no data is lost.
#[cfg(test)]
pub fn rename_live(live: &Path, started: NaiveDateTime) -> io::Result<Option<PathBuf>> {
    let backup = rename_unsynced(live, started)?;
    if backup.is_some() {
        compress::sync_dir(parent_dir(live)).map_err(|e| ctx(e, "fsync directory of", live))?;
    }
    Ok(backup)
}

/// [`rename_live`] without the directory fsync, for a caller that syncs
/// the directory once for many renames ([`crate::rotation::rotate_file`],
/// through [`crate::rotation::StateDb::save`]).
///
/// # Errors
/// As [`rename_live`], minus the sync.
pub fn rename_unsynced(live: &Path, started: NaiveDateTime) -> io::Result<Option<PathBuf>> {
    let meta = match fs::symlink_metadata(live) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(ctx(e, "stat", live)),
    };
    if !meta.file_type().is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("rotate {}: not a regular file", live.display()),
        ));
    }
    if meta.len() == 0 {
        return Ok(None);
    }
    let (backup, _) = free_backup_path(live, started, |p| fs::symlink_metadata(p).is_ok())
        .ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!(
                    "rotate {}: no free backup name near {}",
                    live.display(),
                    format_stamp(started)
                ),
            )
        })?;
    fs::rename(live, &backup).map_err(|e| ctx(e, "rename to backup", live))?;
    Ok(Some(backup))
}

/// The file name of `live` as UTF-8 (every name loghogd creates is).
fn live_name(live: &Path) -> io::Result<&str> {
    live.file_name().and_then(|n| n.to_str()).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: not a UTF-8 file name", live.display()),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> NaiveDateTime {
        NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f").unwrap()
    }

    fn touch(p: &Path, content: &[u8]) {
        fs::write(p, content).unwrap();
    }

    fn names(paths: &[PathBuf]) -> Vec<String> {
        paths
            .iter()
            .map(|p| p.file_name().unwrap().to_str().unwrap().to_owned())
            .collect()
    }

    #[test]
    fn backup_name_format_is_exact() {
        let p = backup_path(
            Path::new("/var/log/loghogd/app/root.log"),
            t("2026-11-21 07:25:29.123456"),
        );
        assert_eq!(
            p,
            Path::new("/var/log/loghogd/app/root.log.2026-11-21-07-25-29-123456")
        );
        // Sub-microsecond digits are truncated, zero fractions still get six digits.
        assert_eq!(
            format_stamp(t("2026-01-02 03:04:05.000000999")),
            "2026-01-02-03-04-05-000000"
        );
        let p = backup_path(Path::new("root.log.gz"), t("2026-01-02 03:04:05.5"));
        assert_eq!(p, Path::new("root.log.gz.2026-01-02-03-04-05-500000"));
    }

    #[test]
    fn stamp_round_trips_and_rejects_lookalikes() {
        let s = "2026-11-21-07-25-29-123456";
        assert_eq!(format_stamp(parse_stamp(s).unwrap()), s);
        for bad in [
            "2026-11-21-07-25-29-12345",
            "2026-11-21-07-25-29-1234567",
            "2026-13-21-07-25-29-123456",
            "2026-02-30-07-25-29-123456",
            "2026-11-21-24-25-29-123456",
            "2026-11-21T07-25-29-123456",
            "2026-11-21-07-25-29-12345x",
            "+026-11-21-07-25-29-123456",
            "",
        ] {
            assert_eq!(parse_stamp(bad), None, "{bad}");
        }
    }

    #[test]
    fn parse_backup_names() {
        let b = parse_backup_name("host1-web.log.2026-11-21-07-25-29-123456.xz").unwrap();
        assert_eq!(b.live, "host1-web.log");
        assert_eq!(b.compressed, Some(Codec::Xz));
        assert!(!b.partial);
        let b = parse_backup_name("root.log.2026-11-21-07-25-29-123456.bz2.tmp").unwrap();
        assert_eq!(
            (b.live, b.compressed, b.partial),
            ("root.log", Some(Codec::Bzip2), true)
        );
        let b = parse_backup_name("root.log.gz.2026-11-21-07-25-29-123456").unwrap();
        assert_eq!((b.live, b.compressed), ("root.log.gz", None));
        for bad in [
            "root.log",
            "root.log.gz",
            "root.log.2026-11-21-07-25-29-123456.zst",
            "root.log.2026-11-21-07-25-29-123456.tmp",
            "root.log.2026-11-21-07-25-29-123456.xz.tmp.tmp",
            "root.log-2026-11-21-07-25-29-123456",
            ".2026-11-21-07-25-29-123456",
            "root.log.1",
        ] {
            assert_eq!(parse_backup_name(bad), None, "{bad}");
        }
    }

    #[test]
    fn free_backup_path_bumps_by_one_microsecond() {
        let live = Path::new("d/root.log");
        let started = t("2026-11-21 07:25:29.999999");
        let taken = [
            backup_path(live, started),
            compress::compressed_path(&backup_path(live, t("2026-11-21 07:25:30")), Codec::Gzip),
        ];
        let (p, stamp) = free_backup_path(live, started, |p| taken.iter().any(|q| q == p)).unwrap();
        assert_eq!(stamp, t("2026-11-21 07:25:30.000001"));
        assert_eq!(p, Path::new("d/root.log.2026-11-21-07-25-30-000001"));
        let found = free_backup_path(live, started, |_| false);
        assert_eq!(found, Some((backup_path(live, started), started)));
        assert_eq!(free_backup_path(live, started, |_| true), None);
    }

    #[test]
    fn listing_ignores_lookalikes_and_sorts_oldest_first() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        let live = d.join("web.log");
        for name in [
            "web.log",
            "web.log.2026-03-01-00-00-00-000000.xz",
            "web.log.2026-01-01-00-00-00-000000",
            "web.log.2026-02-01-00-00-00-000000.gz",
            "web.log.2026-04-01-00-00-00-000000.xz.tmp",
            // Not backups of web.log:
            "host-web.log.2026-01-05-00-00-00-000000",
            "root.log.2026-01-05-00-00-00-000000",
            "web.log.gz.2026-01-05-00-00-00-000000",
            "web.log.2026-01-05",
            "web.log.old",
            "xweb.log.2026-01-05-00-00-00-000000",
        ] {
            touch(&d.join(name), b"x");
        }
        // A directory with a backup's name is not a backup.
        fs::create_dir(d.join("web.log.2026-05-01-00-00-00-000000")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink("/etc/passwd", d.join("web.log.2026-06-01-00-00-00-000000"))
            .unwrap();

        let backups = list_backups(&live).unwrap();
        let paths: Vec<PathBuf> = backups.iter().map(|b| b.path.clone()).collect();
        assert_eq!(
            names(&paths),
            [
                "web.log.2026-01-01-00-00-00-000000",
                "web.log.2026-02-01-00-00-00-000000.gz",
                "web.log.2026-03-01-00-00-00-000000.xz",
                "web.log.2026-04-01-00-00-00-000000.xz.tmp",
            ]
        );
        assert_eq!(backups[0].compressed, None);
        assert_eq!(backups[1].compressed, Some(Codec::Gzip));
        assert!(backups[3].partial && !backups[2].partial);

        let gz_live = list_backups(&d.join("web.log.gz")).unwrap();
        assert_eq!(gz_live.len(), 1);
        assert_eq!(list_backups(&d.join("host-web.log")).unwrap().len(), 1);
    }

    fn backup(name: &str, stamp: &str, partial: bool) -> Backup {
        Backup {
            path: PathBuf::from(name),
            stamp: t(stamp),
            compressed: None,
            partial,
        }
    }

    #[test]
    fn plan_prune_keeps_newest_and_ignores_partials() {
        let backups = [
            backup("a3", "2026-01-03 00:00:00", false),
            backup("a1", "2026-01-01 00:00:00", false),
            backup("a2", "2026-01-02 00:00:00", false),
            backup("a4.xz.tmp", "2026-01-04 00:00:00", true),
            backup("a0.xz.tmp", "2025-01-01 00:00:00", true),
        ];
        assert_eq!(plan_prune(&backups, 2), [PathBuf::from("a1")]);
        assert_eq!(plan_prune(&backups, 3), Vec::<PathBuf>::new());
        assert_eq!(plan_prune(&backups, 10), Vec::<PathBuf>::new());
        let mut all = plan_prune(&backups, 0);
        all.sort();
        assert_eq!(all, [PathBuf::from("a1"), "a2".into(), "a3".into()]);
    }

    #[test]
    fn plan_prune_counts_a_half_compressed_backup_once() {
        let backups = [
            backup("b1", "2026-01-01 00:00:00", false),
            backup("b2", "2026-01-02 00:00:00", false),
            backup("b2.xz", "2026-01-02 00:00:00", false),
        ];
        assert_eq!(plan_prune(&backups, 1), [PathBuf::from("b1")]);
        let mut doomed = plan_prune(&backups, 0);
        doomed.sort();
        assert_eq!(doomed, [PathBuf::from("b1"), "b2".into(), "b2.xz".into()]);
    }

    #[test]
    fn prune_keeps_newest_n_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("root.log");
        touch(&live, b"live");
        for day in 1..=5 {
            let p = backup_path(&live, t(&format!("2026-01-0{day} 00:00:00")));
            touch(&compress::compressed_path(&p, Codec::Xz), b"x");
        }
        touch(
            &dir.path().join("web.log.2020-01-01-00-00-00-000000"),
            b"other",
        );
        let removed = prune(&live, 3).unwrap();
        assert_eq!(removed.len(), 2);
        let left: Vec<PathBuf> = list_backups(&live)
            .unwrap()
            .into_iter()
            .map(|b| b.path)
            .collect();
        assert_eq!(
            names(&left),
            [
                "root.log.2026-01-03-00-00-00-000000.xz",
                "root.log.2026-01-04-00-00-00-000000.xz",
                "root.log.2026-01-05-00-00-00-000000.xz",
            ]
        );
        assert!(live.exists());
        assert!(dir
            .path()
            .join("web.log.2020-01-01-00-00-00-000000")
            .exists());
    }

    #[test]
    fn rename_live_moves_content_and_skips_missing_or_empty() {
        let dir = tempfile::tempdir().unwrap();
        let live = dir.path().join("root.log");
        let started = t("2026-11-21 07:25:29.123456");
        assert_eq!(rename_live(&live, started).unwrap(), None);
        touch(&live, b"");
        assert_eq!(rename_live(&live, started).unwrap(), None);
        assert!(live.exists(), "an empty live file is left alone");

        touch(&live, b"line 1\n");
        let first = rename_live(&live, started).unwrap().unwrap();
        assert_eq!(
            first.file_name().unwrap(),
            "root.log.2026-11-21-07-25-29-123456"
        );
        assert_eq!(fs::read(&first).unwrap(), b"line 1\n");
        assert!(!live.exists());

        // Same start time again (e.g. clock stepped back): no overwrite.
        touch(&live, b"line 2\n");
        let second = rename_live(&live, started).unwrap().unwrap();
        assert_eq!(
            second.file_name().unwrap(),
            "root.log.2026-11-21-07-25-29-123457"
        );
        assert_eq!(fs::read(&first).unwrap(), b"line 1\n");
        assert_eq!(fs::read(&second).unwrap(), b"line 2\n");
    }
}
