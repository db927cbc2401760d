//! Configuration: `loghogd.conf` (SPEC §6) read into a validated [`Config`],
//! and `facilities.conf` into a [`FacilityDb`] (see [`facility`]).
//!
//! STUB: the config helper replaces this file; the types are the contract.

pub mod facility;
pub mod raw;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

pub use facility::{Facility, FacilityDb};

use crate::compress::Codec;
use crate::rotation::schedule::Schedule;

/// A config problem: which file, where in it, what is wrong and how to fix it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {place}: {problem}", file.display())]
pub struct ConfigError {
    /// The file that holds the problem.
    pub file: PathBuf,
    /// `[section] key`, `[section]` or `line N`.
    pub place: String,
    /// What is wrong, and the fix.
    pub problem: String,
}

/// Command-line values that override the file (SPEC §7).
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    pub facilities_config: Option<PathBuf>,
    pub pidfile: Option<PathBuf>,
    pub log_filename: Option<PathBuf>,
    pub logdir: Option<PathBuf>,
    pub workdir: Option<PathBuf>,
    pub rundir: Option<PathBuf>,
    pub user: Option<String>,
    pub daemon: bool,
}

/// The validated loghogd.conf.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of loghogd.conf, for error messages and reload.
    pub path: PathBuf,
    pub main: MainSection,
    pub log: LogSection,
    pub compressor: CompressorSection,
    pub server: ServerSection,
}

/// `[main]`. All paths are absolute or relative to the current directory
/// after validation (relative ones in the file are resolved against the
/// file's directory; a relative `pidfile` against `rundir`).
#[derive(Debug, Clone)]
pub struct MainSection {
    pub daemon: bool,
    pub user: Option<String>,
    pub logdir: PathBuf,
    pub workdir: PathBuf,
    pub rundir: PathBuf,
    pub pidfile: PathBuf,
    pub facilities_config: PathBuf,
}

/// `[log]`: the daemon's own log.
#[derive(Debug, Clone)]
pub struct LogSection {
    pub filename: Option<PathBuf>,
    pub level: tracing::Level,
    pub backup_count: u32,
    pub when: Schedule,
}

/// `[compressor]`.
#[derive(Debug, Clone)]
pub struct CompressorSection {
    pub format: Codec,
    pub level: u32,
    pub compress_on_write: bool,
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerSection {
    /// Plain TCP+UDP listen addresses (IPv4 then IPv6), each with its port.
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses.
    pub listen_ssl: Vec<SocketAddr>,
    pub pemfile: Option<PathBuf>,
    pub cacert: Option<PathBuf>,
    pub max_msg_size: usize,
}

impl Config {
    /// Reads and validates loghogd.conf at `path`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the place and the fix.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let _ = (path, overrides);
        todo!()
    }
}
