//! The no-symlink rule for everything rotation does to files below the log
//! directory (issue 12 item 4), the same rule the writers open files by
//! (`output::file::path::open_beneath`): the root (the operator's `logdir`)
//! may be a link, but no directory below it is followed through one.
//!
//! A [`Dir`] is a directory opened by an `openat` walk from the root with
//! `O_NOFOLLOW | O_DIRECTORY` on every component. The path-based code of
//! backup naming, compression and retention then works on
//! `/proc/self/fd/{fd}/{name}` ([`Dir::inner`]), which the kernel resolves
//! through the opened directory itself, so a directory swapped for a link
//! after the walk is not followed either. Paths are mapped back
//! ([`Dir::outer`]) before anything is logged or returned.

use std::ffi::OsStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;
use std::time::Duration;

use nix::fcntl::{openat, OFlag};
use nix::sys::stat::{mkdirat, Mode};

use crate::ratelimit::RateLimit;

/// A directory below a root, opened without following a symlink.
#[derive(Debug)]
pub struct Dir {
    /// The directory's path as configured, for messages and results.
    path: PathBuf,
    /// The open directory; paths through it are [`Dir::inner`].
    fd: OwnedFd,
}

// === impl Dir ===

impl Dir {
    /// Opens `dir`, which must be `root` or below it, walking from `root`
    /// with `O_NOFOLLOW` on every component below it.
    ///
    /// # Errors
    /// `dir` is not below `root` or leaves it (`..`), a component is a
    /// symlink (`ELOOP`) or not a directory (`ENOTDIR`; see
    /// [`is_refusal`]), or the usual open errors.
    pub fn open(root: &Path, dir: &Path) -> io::Result<Dir> {
        Dir::walk(root, dir, false)
    }

    /// Walks from `root` to `dir`; with `create`, each missing directory
    /// is made on the way (mode 0750) with `mkdirat` relative to its
    /// already opened parent.
    fn walk(root: &Path, dir: &Path, create: bool) -> io::Result<Dir> {
        let rel = dir.strip_prefix(root).map_err(|_| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not under {}", dir.display(), root.display()),
            )
        })?;
        let mut parts: Vec<&OsStr> = Vec::new();
        for c in rel.components() {
            match c {
                Component::Normal(p) => parts.push(p),
                Component::CurDir => {}
                _ => {
                    return Err(io::Error::new(
                        io::ErrorKind::InvalidInput,
                        format!("{} leaves {}", dir.display(), root.display()),
                    ))
                }
            }
        }
        let mut fd = owned(openat(
            None,
            root,
            OFlag::O_DIRECTORY | OFlag::O_CLOEXEC | OFlag::O_RDONLY,
            Mode::empty(),
        )?);
        let flags = OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC | OFlag::O_RDONLY;
        for p in parts {
            if create {
                match mkdirat(Some(fd.as_raw_fd()), p, Mode::from_bits_truncate(0o750)) {
                    Ok(()) | Err(nix::errno::Errno::EEXIST) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            fd = owned(openat(Some(fd.as_raw_fd()), p, flags, Mode::empty())?);
        }
        Ok(Dir {
            path: dir.to_path_buf(),
            fd,
        })
    }

    /// Opens the directory holding `file` below `root` ([`Dir::open`]) and
    /// returns it with the file's name.
    ///
    /// # Errors
    /// As [`Dir::open`]; `file` has no file name.
    pub fn of_file<'a>(root: &Path, file: &'a Path) -> io::Result<(Dir, &'a OsStr)> {
        Dir::parent_of(root, file, false)
    }

    /// [`Dir::of_file`], creating the directories on the way.
    ///
    /// # Errors
    /// As [`Dir::open`], the usual mkdir errors; `file` has no file name.
    pub fn of_file_creating<'a>(root: &Path, file: &'a Path) -> io::Result<(Dir, &'a OsStr)> {
        Dir::parent_of(root, file, true)
    }

    fn parent_of<'a>(root: &Path, file: &'a Path, create: bool) -> io::Result<(Dir, &'a OsStr)> {
        let name = file.file_name().ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{}: no file name", file.display()),
            )
        })?;
        let parent = file.parent().unwrap_or(Path::new(""));
        Ok((Dir::walk(root, parent, create)?, name))
    }

    /// The open directory, for `*at` calls relative to it.
    pub fn fd(&self) -> std::os::fd::RawFd {
        self.fd.as_raw_fd()
    }

    /// The directory as configured.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `name` in this directory, as a path the kernel resolves through the
    /// open directory (`/proc/self/fd/{fd}/{name}`; the directory itself
    /// for an empty name).
    pub fn inner(&self, name: impl AsRef<OsStr>) -> PathBuf {
        let base = PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()));
        let name = name.as_ref();
        if name.is_empty() {
            base
        } else {
            base.join(name)
        }
    }

    /// A path from [`Dir::inner`] (or anything below it) as configured.
    pub fn outer(&self, inner: &Path) -> PathBuf {
        match inner.strip_prefix(self.inner("")) {
            Ok(rest) => self.path.join(rest),
            Err(_) => inner.to_path_buf(),
        }
    }

    /// `err` (from a path through [`Dir::inner`]) with the configured path
    /// in its message instead of the `/proc` one.
    pub fn outer_err(&self, err: io::Error) -> io::Error {
        let inner = self.inner("");
        let text = err.to_string();
        let inner = inner.to_string_lossy();
        if text.contains(inner.as_ref()) {
            let path = self.path.to_string_lossy();
            io::Error::new(err.kind(), text.replace(inner.as_ref(), path.as_ref()))
        } else {
            err
        }
    }
}

/// Whether `err` is the no-symlink rule refusing a path: a component below
/// the root is a symlink (`ELOOP` from `O_NOFOLLOW`) or not a directory.
pub fn is_refusal(err: &io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ELOOP) | Some(libc::ENOTDIR))
}

/// Limits [`warn_refused`]'s lines.
static REFUSALS: OnceLock<RateLimit> = OnceLock::new();

/// Refusal warnings suppressed in a window that is over (see
/// [`RateLimit::take_suppressed`]).
pub(crate) fn take_suppressed_refusals() -> u64 {
    REFUSALS.get().map_or(0, RateLimit::take_suppressed)
}

/// Logs that `path` was not touched because a symlink (or a non-directory)
/// sits between the log directory and it: rate-limited, since whoever
/// planted it may plant many, with the count of lines held back.
pub fn warn_refused(what: &str, path: &Path, err: &io::Error) {
    let limit = REFUSALS.get_or_init(|| RateLimit::new(10, Duration::from_secs(60)));
    if let Some(suppressed) = limit.check() {
        tracing::warn!(
            path = %path.display(),
            cause = %err,
            suppressed,
            "{what}: not following a symlink below the log directory"
        );
    }
}

fn owned(fd: std::os::fd::RawFd) -> OwnedFd {
    // SAFETY: `fd` was just returned by a successful openat and nothing else
    // owns it.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn a_symlinked_directory_is_refused_and_paths_map_back() {
        let base = tempfile::tempdir().unwrap();
        let root = base.path().join("log");
        let outside = base.path().join("outside");
        fs::create_dir_all(root.join("app")).unwrap();
        fs::create_dir_all(&outside).unwrap();
        fs::write(outside.join("secret.log"), b"x").unwrap();
        std::os::unix::fs::symlink(&outside, root.join("evil")).unwrap();

        let err = Dir::open(&root, &root.join("evil")).unwrap_err();
        assert!(is_refusal(&err), "{err}");
        let err = Dir::of_file(&root, &root.join("evil/secret.log")).unwrap_err();
        assert!(is_refusal(&err), "{err}");
        Dir::open(&root, &outside).unwrap_err();
        Dir::open(&root, &root.join("app/../../outside")).unwrap_err();

        let file = root.join("app/root.log");
        let (dir, name) = Dir::of_file(&root, &file).unwrap();
        assert_eq!(name, "root.log");
        fs::write(dir.inner(name), b"through the fd\n").unwrap();
        assert_eq!(
            fs::read(root.join("app/root.log")).unwrap(),
            b"through the fd\n"
        );
        assert_eq!(dir.outer(&dir.inner(name)), root.join("app/root.log"));
        let err = fs::read(dir.inner("nope")).unwrap_err();
        let err = dir.outer_err(io::Error::new(
            err.kind(),
            format!("open {}: {err}", dir.inner("nope").display()),
        ));
        assert!(
            err.to_string()
                .contains(&root.join("app/nope").display().to_string()),
            "{err}"
        );

        // Swapped for a link after the open: the open directory is used.
        fs::rename(root.join("app"), base.path().join("moved")).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("app")).unwrap();
        fs::write(dir.inner("after.log"), b"y").unwrap();
        assert!(base.path().join("moved/after.log").exists());
        assert!(!outside.join("after.log").exists());

        // The root itself may be a link.
        let link = base.path().join("loglink");
        std::os::unix::fs::symlink(&root, &link).unwrap();
        Dir::open(&link, &link.join("evil")).unwrap_err();
        Dir::open(&link, &link).unwrap();
    }
}
