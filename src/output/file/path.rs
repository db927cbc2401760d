//! Where a facility's lines go (SPEC §4), and the guard that keeps
//! client-supplied host names from steering a file outside
//! `{logdir}/{app_id}/`.
//!
//! App ids and module paths come from facilities.conf and are validated
//! there; the host name is the only client string that reaches a path.
//! Files are opened by [`open_beneath`], which follows no symlink below
//! the log directory, so a link planted there cannot redirect a write.

use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::config::Facility;
use crate::escape::is_invisible;
use crate::rotation::beneath::Dir;

/// Longest host name used in a file name; longer ones are cut (at a char
/// boundary) so `{host}-{module}.log` stays under NAME_MAX (255).
const MAX_HOST_IN_NAME: usize = 128;

/// The live file for `facility` (and `host` when it has `file_per_host`).
/// `ext` is `log` or `log.gz` (compress_on_write).
pub fn file_path(logdir: &Path, facility: &Facility, host: Option<&str>, ext: &str) -> PathBuf {
    let stem = facility.file_stem();
    let name = match host {
        Some(h) => format!("{}-{}.{}", safe_host(h), stem, ext),
        None => format!("{stem}.{ext}"),
    };
    logdir.join(&facility.app_id).join(name)
}

/// Makes a client-supplied host name safe as part of one file name: no path
/// separators, NUL or control characters, never `.`/`..`/empty, bounded
/// length. Safe names pass through unchanged (the common case allocates
/// nothing beyond the result).
pub fn safe_host(host: &str) -> String {
    let mut out = String::with_capacity(host.len().min(MAX_HOST_IN_NAME));
    for c in host.chars() {
        if out.len() + c.len_utf8() > MAX_HOST_IN_NAME {
            break;
        }
        // Invisible and bidi characters would make two hosts' files look
        // alike (or a name read backwards) in a listing.
        let bad = c == '/' || c == '\\' || c.is_control() || is_invisible(c);
        out.push(if bad { '_' } else { c });
    }
    // A name made only of dots would be `.`/`..` or a hidden-file lookalike.
    if out.is_empty() || out.chars().all(|c| c == '.') {
        out = format!("_{out}");
    }
    out
}

/// Whether `host` can be used as-is (so the per-connection route cache can
/// compare the raw name).
#[cfg(test)]
pub fn is_safe_host(host: &str) -> bool {
    !host.is_empty()
        && host.len() <= MAX_HOST_IN_NAME
        && !host.chars().all(|c| c == '.')
        && !host
            .chars()
            .any(|c| c == '/' || c == '\\' || c.is_control() || is_invisible(c))
}

/// Opens `file` (under `logdir`) for appending, creating it (mode 0640)
/// and the directories between (0750) as needed, without following a
/// symlink anywhere below `logdir`: each directory is opened relative to
/// the one above with `O_NOFOLLOW | O_DIRECTORY`, and the file with
/// `O_NOFOLLOW`. `logdir` itself is the operator's choice and may be a link.
///
/// # Errors
/// `file` is not below `logdir`, a component is a symlink (`ELOOP`,
/// `ENOTDIR`), or the usual open and mkdir errors.
pub(crate) fn open_beneath(logdir: &Path, file: &Path) -> io::Result<File> {
    let (dir, name) = Dir::of_file_creating(logdir, file)?;
    let flags =
        OFlag::O_WRONLY | OFlag::O_APPEND | OFlag::O_CREAT | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(Some(dir.fd()), name, flags, Mode::from_bits_truncate(0o640))?;
    // SAFETY: `fd` was just returned by a successful openat and nothing else
    // owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlinks_below_the_logdir_are_never_followed() {
        let base = tempfile::tempdir().unwrap();
        let logdir = base.path().join("log");
        let outside = base.path().join("outside");
        std::fs::create_dir_all(&logdir).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        // A fresh file and its app directory are created.
        let f = logdir.join("app/root.log");
        open_beneath(&logdir, &f).unwrap();
        assert!(f.is_file());
        // A symlinked app directory is refused, not followed.
        std::os::unix::fs::symlink(&outside, logdir.join("evil")).unwrap();
        open_beneath(&logdir, &logdir.join("evil/root.log")).unwrap_err();
        assert!(!outside.join("root.log").exists());
        // So is a symlink at the file's own path.
        std::os::unix::fs::symlink(outside.join("x"), logdir.join("app/x.log")).unwrap();
        open_beneath(&logdir, &logdir.join("app/x.log")).unwrap_err();
        assert!(!outside.join("x").exists());
        // And a path that leaves the logdir.
        open_beneath(&logdir, &logdir.join("app/../../outside/y.log")).unwrap_err();
        open_beneath(&logdir, &outside.join("z.log")).unwrap_err();
        // The logdir itself may be a link (the operator chose it).
        let link = base.path().join("loglink");
        std::os::unix::fs::symlink(&logdir, &link).unwrap();
        open_beneath(&link, &link.join("app/root.log")).unwrap();
    }

    #[test]
    fn hostile_hosts_stay_in_one_component() {
        for h in [
            "",
            ".",
            "..",
            "../../etc",
            "a/b",
            "a\0b",
            "x\ny",
            "\\..\\",
            "....",
            "web\u{202E}gol.01",
            "a\u{200B}b",
        ] {
            let s = safe_host(h);
            assert!(
                !s.contains('/') && !s.contains('\0') && !s.contains('\\'),
                "{h:?} → {s:?}"
            );
            assert!(s != "." && s != ".." && !s.is_empty(), "{h:?} → {s:?}");
            assert!(!s.chars().any(char::is_control));
            assert!(is_safe_host(&s), "{s:?}");
        }
        assert_eq!(safe_host("web-01.example.com"), "web-01.example.com");
        let long = "é".repeat(200);
        assert!(safe_host(&long).len() <= MAX_HOST_IN_NAME);
    }
}
