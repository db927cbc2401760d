//! Committed ends of log files, for the broker consumer's exactly-once
//! take-over (issue 16): a [`Mark`] is where a file ended when a cycle of
//! lines was made durable, with a checksum of the bytes just before that
//! end. A writer that takes a partition over (or restarts) cuts each of
//! the partition's files back to its last mark, so lines a dead owner
//! wrote after its last commit are not there twice once the new owner
//! writes them again.
//!
//! A file is only ever cut when the bytes before the mark are the marked
//! ones (the checksum matches) and the file is longer: a file that was
//! rotated, shortened or written elsewhere is left alone, so a cut can
//! repeat nothing and never removes a committed line. Everything below
//! the log directory is opened without following a symlink.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;
use serde::{Deserialize, Serialize};

use crate::rotation::beneath::Dir;

/// How many bytes before the end the checksum covers.
const TAIL: u64 = 64;

/// Where a file ended at a commit: `[size, crc32 of the TAIL bytes
/// before size]`, as stored in the rotation state and the lease.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mark(pub(crate) u64, pub(crate) u32);

/// A file's mark, with the file's path (absolute, below the log directory).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Marked {
    pub(crate) path: PathBuf,
    pub(crate) mark: Mark,
}

/// What [`cut_back`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cut {
    /// The file ends at its mark (or is missing, or shorter).
    Nothing,
    /// The file was cut back by this many bytes.
    Shortened(u64),
    /// The bytes before the mark are not the marked ones: left alone.
    Differs,
}

fn open(logdir: &Path, path: &Path, flags: OFlag) -> io::Result<File> {
    let (dir, name) = Dir::of_file(logdir, path)?;
    let fd = openat(
        Some(dir.fd()),
        name,
        flags | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // SAFETY: `fd` was just returned by a successful openat and nothing
    // else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The checksum of the `TAIL` bytes before `size` (fewer at the start).
fn tail_crc(f: &File, size: u64) -> io::Result<u32> {
    let start = size.saturating_sub(TAIL);
    let mut buf = vec![0; usize::try_from(size - start).unwrap_or(0)];
    f.read_exact_at(&mut buf, start)?;
    Ok(crc32fast::hash(&buf))
}

/// The mark of `path` as it is on disk now.
///
/// # Errors
/// The file cannot be opened or read.
pub(crate) fn read(logdir: &Path, path: &Path) -> io::Result<Mark> {
    let f = open(logdir, path, OFlag::O_RDONLY)?;
    let size = f.metadata()?.len();
    Ok(Mark(size, tail_crc(&f, size)?))
}

/// Cuts `path` back to `mark` when it is longer and its bytes before the
/// mark are the marked ones; the cut is fdatasynced.
///
/// # Errors
/// The file cannot be opened, read, cut or synced.
pub(crate) fn cut_back(logdir: &Path, path: &Path, mark: Mark) -> io::Result<Cut> {
    let f = match open(logdir, path, OFlag::O_RDWR) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Cut::Nothing),
        Err(e) => return Err(e),
    };
    let len = f.metadata()?.len();
    if len <= mark.0 {
        return Ok(Cut::Nothing);
    }
    if tail_crc(&f, mark.0)? != mark.1 {
        return Ok(Cut::Differs);
    }
    f.set_len(mark.0)?;
    f.sync_data()?;
    Ok(Cut::Shortened(len - mark.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
        let base = tempfile::tempdir().unwrap();
        let logdir = base.path().join("log");
        std::fs::create_dir_all(logdir.join("app")).unwrap();
        let f = logdir.join("app/root.log");
        (base, logdir, f)
    }

    #[test]
    fn a_file_grown_past_its_mark_is_cut_back_to_it() {
        let (_base, logdir, f) = setup();
        std::fs::write(&f, "one\ntwo\n").unwrap();
        let m = read(&logdir, &f).unwrap();
        assert_eq!(m.0, 8);
        std::fs::write(&f, "one\ntwo\nthree\n").unwrap();
        assert_eq!(cut_back(&logdir, &f, m).unwrap(), Cut::Shortened(6));
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "one\ntwo\n");
        // Again: nothing more to cut.
        assert_eq!(cut_back(&logdir, &f, m).unwrap(), Cut::Nothing);
    }

    #[test]
    fn a_file_whose_bytes_before_the_mark_differ_is_left_alone() {
        let (_base, logdir, f) = setup();
        std::fs::write(&f, "one\ntwo\n").unwrap();
        let m = read(&logdir, &f).unwrap();
        // Rotated and regrown: another file at the same path.
        std::fs::write(&f, "ten\nsix\nlonger\n").unwrap();
        assert_eq!(cut_back(&logdir, &f, m).unwrap(), Cut::Differs);
        assert_eq!(std::fs::read_to_string(&f).unwrap(), "ten\nsix\nlonger\n");
        // Shorter than the mark, or missing: nothing to do.
        std::fs::write(&f, "o\n").unwrap();
        assert_eq!(cut_back(&logdir, &f, m).unwrap(), Cut::Nothing);
        std::fs::remove_file(&f).unwrap();
        assert_eq!(cut_back(&logdir, &f, m).unwrap(), Cut::Nothing);
    }

    #[test]
    fn long_files_are_checked_by_their_last_bytes_and_links_are_not_followed() {
        let (base, logdir, f) = setup();
        let body: String = (0..100).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&f, &body).unwrap();
        let m = read(&logdir, &f).unwrap();
        std::fs::write(&f, format!("{body}extra\n")).unwrap();
        assert_eq!(cut_back(&logdir, &f, m).unwrap(), Cut::Shortened(6));
        // A symlinked file is refused, not followed.
        let outside = base.path().join("outside.log");
        std::fs::write(&outside, format!("{body}more\n")).unwrap();
        let link = logdir.join("app/link.log");
        std::os::unix::fs::symlink(&outside, &link).unwrap();
        cut_back(&logdir, &link, m).unwrap_err();
        read(&logdir, &link).unwrap_err();
        assert!(std::fs::read_to_string(&outside)
            .unwrap()
            .ends_with("more\n"));
    }
}
