//! Rotation (SPEC §5): schedules ([`schedule`]), backup naming and retention
//! ([`backup`]), the per-file rotation times kept in `workdir` ([`state`]) and
//! start-up crash recovery ([`recover`](mod@recover)). The file operations are blocking:
//! the writer runs them on the blocking pool, off the async workers. A
//! rotation is [`rename_live`], a [`StateDb`] update, then [`compress_and_prune`].

pub mod backup;
pub mod recover;
pub mod schedule;
pub mod state;

pub use backup::{prune, rename_live};
pub use state::{started_on_disk, FileState, StateDb};

use std::io;
use std::path::{Path, PathBuf};

use crate::compress::{self, Codec};

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
pub fn compress_and_prune(
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
    use crate::rotation::backup::list_backups;
    use chrono::NaiveDate;
    use std::fs;

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
