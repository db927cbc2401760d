//! Which files the viewer may read for a facility, newest first: the live
//! file and every complete backup of it (SPEC §4–5 names), and, for
//! `file_per_host` facilities, which hosts have files. Paths are built
//! from the facility (never from the URL); a host from the URL only
//! selects among the names found in the app's directory. Every directory
//! and file is opened without following a symlink below the log directory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::fd::{FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use chrono::NaiveDateTime;
use nix::fcntl::{openat, OFlag};
use nix::sys::stat::Mode;

use crate::compress::Codec;
use crate::config::Facility;
use crate::output::file::path::file_path;
use crate::rotation::backup::{format_stamp, list_backups, parse_backup_name};
use crate::rotation::beneath::Dir;
use crate::rotation::StateDb;

/// One file of a facility's history.
#[derive(Debug, Clone)]
pub(crate) struct Source {
    /// The file's name in the app directory.
    pub(crate) name: String,
    /// Its generation: the stamp the file was started at (a backup's name
    /// stamp; the live file's from the rotation state), or `live` when the
    /// live file's start is unknown. Cursors name files by it, so a page
    /// link still points at the same lines after the live file rotates.
    pub(crate) generation: String,
    /// When the file was started, if known (time-range pruning).
    pub(crate) started: Option<NaiveDateTime>,
    /// How the bytes on disk are compressed.
    pub(crate) codec: Option<Codec>,
    /// The live file (still growing).
    pub(crate) live: bool,
    /// Size on disk.
    pub(crate) size: u64,
    /// Last modification.
    pub(crate) modified: Option<SystemTime>,
}

/// The generation of a live file whose start the state does not know.
pub(crate) const LIVE: &str = "live";

/// A facility's files, opened through its app directory.
#[derive(Debug)]
pub(crate) struct Sources {
    /// The app directory, opened beneath the log directory.
    dir: Dir,
    /// Newest first.
    pub(crate) files: Vec<Source>,
}

impl Sources {
    /// The files of `facility` (for `host`, when it is `file_per_host`).
    /// A missing app directory is an empty list, not an error.
    ///
    /// # Errors
    /// The directory is a symlink or cannot be read.
    pub(crate) fn list(
        logdir: &Path,
        facility: &Facility,
        host: Option<&str>,
        state: &Mutex<StateDb>,
    ) -> io::Result<Sources> {
        let dir = match Dir::open(logdir, &logdir.join(&facility.app_id)) {
            Ok(d) => d,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Ok(Sources {
                    dir: Dir::open(logdir, logdir)?,
                    files: Vec::new(),
                })
            }
            Err(e) => return Err(e),
        };
        let mut files = Vec::new();
        for ext in ["log", "log.gz"] {
            let live = file_path(logdir, facility, host, ext);
            let Some(name) = live.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            let name = name.to_owned();
            let inner = dir.inner(&name);
            if let Ok(meta) = std::fs::symlink_metadata(&inner) {
                if meta.is_file() {
                    let started = state
                        .lock()
                        .unwrap_or_else(std::sync::PoisonError::into_inner)
                        .get(&live)
                        .map(|s| s.started.naive_local());
                    // Without a state entry (a file the daemon has not
                    // written since it started), its first line says when
                    // it began, for skipping by time.
                    let first = || (ext == "log").then(|| first_stamp(&dir, &name)).flatten();
                    files.push(Source {
                        generation: started.map_or_else(|| LIVE.to_owned(), format_stamp),
                        started: started.or_else(first),
                        codec: (ext == "log.gz").then_some(Codec::Gzip),
                        live: true,
                        size: meta.len(),
                        modified: meta.modified().ok(),
                        name: name.clone(),
                    });
                }
            }
            // A generation caught between compression's rename and the
            // removal of its source is listed once (the complete file).
            let mut by_stamp: BTreeMap<NaiveDateTime, Source> = BTreeMap::new();
            for b in list_backups(&inner).map_err(|e| dir.outer_err(e))? {
                if b.partial {
                    continue;
                }
                let Some(bname) = b.path.file_name().and_then(|n| n.to_str()) else {
                    continue;
                };
                let meta = match std::fs::symlink_metadata(&b.path) {
                    Ok(m) => m,
                    // Pruned since the directory was read.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(dir.outer_err(e)),
                };
                let codec = b.compressed.or((ext == "log.gz").then_some(Codec::Gzip));
                let src = Source {
                    name: bname.to_owned(),
                    generation: format_stamp(b.stamp),
                    started: Some(b.stamp),
                    codec,
                    live: false,
                    size: meta.len(),
                    modified: meta.modified().ok(),
                };
                // Prefer the plain copy: it is complete and seekable.
                match by_stamp.get(&b.stamp) {
                    Some(old) if old.codec.is_none() => {}
                    _ => {
                        by_stamp.insert(b.stamp, src);
                    }
                }
            }
            files.extend(by_stamp.into_values().rev());
        }
        // Newest first across both extensions (a facility that switched
        // compress_on_write has both).
        files.sort_by(|a, b| match (a.live, b.live) {
            (true, false) => std::cmp::Ordering::Less,
            (false, true) => std::cmp::Ordering::Greater,
            _ => b.started.cmp(&a.started),
        });
        Ok(Sources { dir, files })
    }

    /// Opens `source` for reading, without following a symlink.
    ///
    /// # Errors
    /// The file is gone (rotated or pruned meanwhile), or a symlink.
    pub(crate) fn open(&self, source: &Source) -> io::Result<File> {
        open_in(&self.dir, &source.name)
    }

    /// Opens `source` for a scan, and says what was opened. A plain backup
    /// that is gone was compressed since the listing (after a rotation, or
    /// by start-up recovery, [`crate::compress::compress_file`]: the
    /// `{name}.{ext}` copy is complete before the plain file is removed):
    /// its lines are in that copy, at the same decompressed offsets, so the
    /// same generation is read from there instead of being left out.
    ///
    /// # Errors
    /// The file and every compressed copy of it are gone (pruned), or the
    /// file is a symlink.
    pub(crate) fn open_current(&self, source: &Source) -> io::Result<(File, Source)> {
        let err = match self.open(source) {
            Ok(f) => return Ok((f, source.clone())),
            Err(e) => e,
        };
        if source.live || source.codec.is_some() || err.kind() != io::ErrorKind::NotFound {
            return Err(err);
        }
        for codec in Codec::ALL {
            let name = format!("{}.{}", source.name, codec.extension());
            match open_in(&self.dir, &name) {
                Ok(f) => {
                    let size = f.metadata().map_or(0, |m| m.len());
                    let moved = Source {
                        name,
                        codec: Some(codec),
                        size,
                        ..source.clone()
                    };
                    return Ok((f, moved));
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Err(err)
    }

    /// `(dev, ino)` of `name` in the app directory now, without following
    /// a symlink (the live tail notices a rotation by it).
    pub(crate) fn identity(&self, name: &str) -> Option<(u64, u64)> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::symlink_metadata(self.dir.inner(name)).ok()?;
        meta.is_file().then(|| (meta.dev(), meta.ino()))
    }
}

/// Opens `name` in `dir` for reading, without following a symlink.
fn open_in(dir: &Dir, name: &str) -> io::Result<File> {
    let flags = OFlag::O_RDONLY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC;
    let fd = openat(Some(dir.fd()), name, flags, Mode::empty())?;
    // SAFETY: `fd` was just returned by a successful openat and nothing
    // else owns it.
    Ok(File::from(unsafe { OwnedFd::from_raw_fd(fd) }))
}

/// The time of the first line of plain `name` (a `loghog` format stamp).
fn first_stamp(dir: &Dir, name: &str) -> Option<NaiveDateTime> {
    use std::os::unix::fs::FileExt;
    let file = open_in(dir, name).ok()?;
    let mut head = [0u8; 26];
    file.read_exact_at(&mut head, 0).ok()?;
    let text = std::str::from_utf8(&head).ok()?;
    NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S%.f").ok()
}

/// A decompressing reader over `file` for `codec` (plain when `None`).
/// Concatenated streams are read to the end (a `compress_on_write` file
/// is one gzip member per append).
pub(crate) fn decoder(file: File, codec: Option<Codec>) -> Box<dyn Read + Send> {
    let input = BufReader::with_capacity(256 << 10, file);
    match codec {
        Some(Codec::Xz) => Box::new(xz2::read::XzDecoder::new_multi_decoder(input)),
        Some(Codec::Gzip) => Box::new(flate2::bufread::MultiGzDecoder::new(input)),
        Some(Codec::Bzip2) => Box::new(bzip2::read::MultiBzDecoder::new(input)),
        None => Box::new(input),
    }
}

/// The hosts with files for a `file_per_host` facility, from the names in
/// its app directory (`{host}-{stem}.log[.gz]` and their backups).
pub(crate) fn hosts(logdir: &Path, facility: &Facility) -> Vec<String> {
    let Ok(dir) = Dir::open(logdir, &logdir.join(&facility.app_id)) else {
        return Vec::new();
    };
    let Ok(entries) = std::fs::read_dir(dir.inner("")) else {
        return Vec::new();
    };
    let suffix = format!("-{}.", facility.file_stem());
    let mut out: Vec<String> = Vec::new();
    for entry in entries.flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let live = parse_backup_name(&name).map_or(name.as_str(), |b| b.live);
        let Some(stem) = live
            .strip_suffix(".log")
            .or_else(|| live.strip_suffix(".log.gz"))
        else {
            continue;
        };
        let stem = format!("{stem}.");
        if let Some(host) = stem.strip_suffix(suffix.as_str()) {
            if !host.is_empty() && !out.iter().any(|h| h == host) {
                out.push(host.to_owned());
            }
        }
    }
    out.sort();
    out
}

/// Whether `host` (from a URL) is one of the hosts with files: only then
/// may it select files (the path is still built by `file_path`).
pub(crate) fn known_host<'a>(hosts: &'a [String], host: &str) -> Option<&'a str> {
    hosts
        .iter()
        .find(|h| h.as_str() == host)
        .map(String::as_str)
}

/// The shared pieces a request needs to find files.
#[derive(Debug, Clone)]
pub(crate) struct Files {
    /// `[main] logdir`.
    pub(crate) logdir: PathBuf,
    /// The rotation state (live files' start stamps).
    pub(crate) state: Arc<Mutex<StateDb>>,
}
