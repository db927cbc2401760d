//! Configuration: `loghogd.conf` (SPEC §6) read into a validated [`Config`],
//! and `facilities.conf` into a [`FacilityDb`] (see [`facility`]).
//!
//! Both go `text → raw::RawIni → validated type`; `parse` is pure (no disk),
//! `load` reads the file. Every error names the file, the place and the fix.

pub mod facility;
pub mod forward;
pub mod http;
pub mod raw;
pub mod syslog;
pub mod viewer;
pub mod warning;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use facility::{Facility, FacilityDb, SyncPolicy};
pub use forward::{BrokerConn, ConsumeSection, ForwardSection, StreamSettings};
pub use http::{Grant, HttpSection};
pub use syslog::SyslogSection;
pub use viewer::ViewerSection;
pub use warning::ConfigWarning;

use crate::compress::Codec;
use crate::rotation::schedule::Schedule;
use raw::{RawIni, RawSection};

/// The keys each section of loghogd.conf knows; anything else is warned about.
const KNOWN: &[(&str, &[&str])] = &[
    (
        "main",
        &[
            "daemon",
            "user",
            "logdir",
            "workdir",
            "rundir",
            "pidfile",
            "facilities_config",
        ],
    ),
    ("log", &["filename", "level", "backup_count", "when"]),
    ("compressor", &["format", "level", "compress_on_write"]),
    (
        "server",
        &[
            "listen_ipv4",
            "listen_ipv6",
            "default_port",
            "listen_ipv4_ssl",
            "listen_ipv6_ssl",
            "default_port_ssl",
            "pemfile",
            "cacert",
            "max_msg_size",
            "max_connections",
            "max_connections_per_ip",
            "idle_timeout",
            "frame_timeout",
            "handshake_timeout",
            "shutdown_timeout",
            "max_open_files",
            "max_files_per_app",
        ],
    ),
    // The old daemon kept rotation times in a file named here; ours live in
    // workdir under a fixed name, so the key is accepted and ignored.
    ("scheduler", &["db_filename"]),
    ("syslog", syslog::KEYS),
    ("http", http::KEYS),
    ("viewer", viewer::KEYS),
    ("forward", forward::FORWARD_KEYS),
    ("consume", forward::CONSUME_KEYS),
];

/// Largest `max_connections` and `max_connections_per_ip` (each connection
/// takes a file descriptor; RLIMIT_NOFILE cannot go past 2^20 by default).
const MAX_CONNECTIONS: u64 = 1 << 20;
/// Largest `idle_timeout`: a day.
const MAX_IDLE_TIMEOUT: u64 = 86_400;

/// Smallest `max_msg_size`: a frame header plus a minimal JSON message.
const MIN_MSG_SIZE: u64 = 64;
/// Largest `max_msg_size`: every connection may buffer this much.
const MAX_MSG_SIZE: u64 = 16 * 1024 * 1024;

/// A config problem: which file, where in it, what is wrong and how to fix it.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}: {place}: {problem}", file.display())]
pub struct ConfigError {
    /// The file that holds the problem.
    pub file: PathBuf,
    /// `[section] key`, `[section]` or `line N` (often with `(line N)` added).
    pub place: String,
    /// What is wrong, and the fix.
    pub problem: String,
}

impl ConfigError {
    /// Builds an error for `file` at `place`.
    pub fn new(file: &Path, place: impl Into<String>, problem: impl Into<String>) -> ConfigError {
        ConfigError {
            file: file.to_path_buf(),
            place: place.into(),
            problem: problem.into(),
        }
    }

    /// The file could not be read at all.
    pub(crate) fn unreadable(file: &Path, err: &std::io::Error, what: &str) -> ConfigError {
        ConfigError::new(
            file,
            "file",
            format!("cannot read it ({err}); check the path ({what}) and its permissions"),
        )
    }
}

/// Command-line values that override the file (SPEC §7). Paths are used as
/// given (relative to the current directory), not resolved against the file.
#[derive(Debug, Clone, Default)]
pub struct Overrides {
    /// `-F/--facilities-config`.
    pub facilities_config: Option<PathBuf>,
    /// `-p/--pid`.
    pub pidfile: Option<PathBuf>,
    /// `-l/--log`: the daemon's own log file.
    pub log_filename: Option<PathBuf>,
    /// `-L/--log-dir`.
    pub logdir: Option<PathBuf>,
    /// `--work-dir`.
    pub workdir: Option<PathBuf>,
    /// `--run-dir`.
    pub rundir: Option<PathBuf>,
    /// `--user`.
    pub user: Option<String>,
    /// `-d/--daemon` (only turns daemon mode on).
    pub daemon: bool,
}

/// The validated loghogd.conf.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of loghogd.conf, for error messages and reload.
    pub path: PathBuf,
    /// `[main]`.
    pub main: MainSection,
    /// `[log]`.
    pub log: LogSection,
    /// `[compressor]`.
    pub compressor: CompressorSection,
    /// `[server]`.
    pub server: ServerSection,
    /// `[syslog]`: the syslog listeners (issue 13).
    pub syslog: SyslogSection,
    /// `[http]`: the HTTP listener (issue 14).
    pub http: HttpSection,
    /// `[viewer]`: the log viewer's work limits (issue 15).
    pub viewer: ViewerSection,
    /// `[forward]`: relay records to NATS JetStream (issue 16); `None`
    /// when the section is absent or has no `servers`.
    pub forward: Option<ForwardSection>,
    /// `[consume]`: write the records edges relayed (issue 16); `None`
    /// when the section is absent or has no `servers`.
    pub consume: Option<ConsumeSection>,
    /// Limits that protect the daemon (defaults; not yet keys of the file).
    pub limits: Limits,
    /// What was ignored (unknown sections and keys), for the caller to
    /// report once the daemon's log is up.
    pub warnings: Vec<ConfigWarning>,
}

/// Limits on connections, timing and background work. Fields rather than
/// constants so tests can shrink them.
#[derive(Debug, Clone)]
pub struct Limits {
    /// `[server] max_connections`: most TCP and TLS connections served at
    /// once, all listeners together. More are accepted and closed at once
    /// (counted), so the kernel's accept queue never fills and locks every
    /// new peer out.
    pub max_connections: usize,
    /// `[server] max_connections_per_ip`: most connections one peer address
    /// may hold, so one host cannot take every slot. Never unlimited: a
    /// cap as high as `max_connections` is the way to turn it off.
    pub max_connections_per_ip: usize,
    /// `[server] idle_timeout` (seconds): a connection that sends nothing
    /// this long is closed; `None` (the value 0) never closes one.
    pub idle_timeout: Option<Duration>,
    /// `[server] frame_timeout` (seconds): a frame whose first byte arrived
    /// must be complete within this, or the connection is closed (a peer
    /// trickling bytes holds a slot and a buffer otherwise).
    pub frame_timeout: Duration,
    /// `[server] handshake_timeout` (seconds): a silent peer may hold a TLS
    /// handshake slot at most this long.
    pub handshake_timeout: Duration,
    /// `[server] shutdown_timeout` (seconds): how long a stop may take in
    /// all: connections drain what peers
    /// already sent for at most half of it, then files are written and
    /// synced; stragglers past it are given up.
    pub shutdown_grace: Duration,
    /// At stop, how long running backup compressions may take to finish;
    /// an abandoned one leaves its backup uncompressed for the next start.
    pub compress_grace: Duration,
    /// Backup compressions at once (each takes a core).
    pub compression_jobs: usize,
    /// `[server] max_open_files`: log files held open at once. Past it the
    /// least recently written one is closed (and reopened on its next
    /// line), so many files never exhaust the descriptors connections need.
    pub max_open_files: usize,
    /// `[server] max_files_per_app`: live files (hosts, with
    /// `file_per_host`) one application may have in use at once; lines for
    /// a new host past it are dropped and counted (`too_many_files`).
    pub max_files_per_app: usize,
    /// A log file nobody wrote to for this long is closed and its writer
    /// task ends (reopened on its next line).
    pub file_idle: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 16_384,
            max_connections_per_ip: 256,
            idle_timeout: Some(Duration::from_secs(300)),
            frame_timeout: Duration::from_secs(30),
            handshake_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(10),
            compress_grace: Duration::from_secs(5),
            compression_jobs: 1,
            max_open_files: 1024,
            max_files_per_app: 10_000,
            file_idle: Duration::from_secs(60),
        }
    }
}

/// `[main]`. All paths are absolute or relative to the current directory
/// after validation (relative ones in the file are resolved against the
/// file's directory; a relative `pidfile` against `rundir`).
#[derive(Debug, Clone)]
pub struct MainSection {
    /// Fork into the background.
    pub daemon: bool,
    /// Drop privileges to this user after binding and creating directories.
    pub user: Option<String>,
    /// Where application logs go.
    pub logdir: PathBuf,
    /// State that survives restarts (rotation times).
    pub workdir: PathBuf,
    /// Runtime files.
    pub rundir: PathBuf,
    /// The pid file.
    pub pidfile: PathBuf,
    /// Path of facilities.conf.
    pub facilities_config: PathBuf,
}

/// `[log]`: the daemon's own log.
#[derive(Debug, Clone)]
pub struct LogSection {
    /// `None`: log to stderr.
    pub filename: Option<PathBuf>,
    /// Most verbose level written (`CRITICAL` reads as `ERROR`).
    pub level: tracing::Level,
    /// Backups of the daemon's log to keep.
    pub backup_count: u32,
    /// When the daemon's log rotates (never [`Schedule::Size`]).
    pub when: Schedule,
}

/// `[compressor]`.
#[derive(Debug, Clone)]
pub struct CompressorSection {
    /// Codec for rotated files.
    pub format: Codec,
    /// 0 (fastest) to 9 (smallest).
    pub level: u32,
    /// The live file is itself a gzip stream.
    pub compress_on_write: bool,
}

impl CompressorSection {
    /// The live files' extension: `log`, or `log.gz` with `compress_on_write`.
    pub fn live_ext(&self) -> &'static str {
        if self.compress_on_write {
            "log.gz"
        } else {
            "log"
        }
    }
}

/// `[server]`.
#[derive(Debug, Clone)]
pub struct ServerSection {
    /// Plain TCP+UDP listen addresses (IPv4 then IPv6), each with its port.
    pub listen: Vec<SocketAddr>,
    /// TLS listen addresses.
    pub listen_ssl: Vec<SocketAddr>,
    /// Server key + certificate in one PEM file (set when `listen_ssl` is).
    pub pemfile: Option<PathBuf>,
    /// CA that client certificates must chain to (set when `listen_ssl` is).
    pub cacert: Option<PathBuf>,
    /// Largest frame or decompressed payload accepted, in bytes (SPEC §1).
    pub max_msg_size: usize,
}

// === impl Config ===

impl Config {
    /// Reads and validates loghogd.conf at `path`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the place and the fix.
    pub fn load(path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let text = read_config_file(path, "-c/--config")?;
        Config::parse(&text, path, overrides)
    }

    /// Validates loghogd.conf given as `text`; `path` locates relative paths
    /// and names the file in errors. Touches no disk (except to resolve a
    /// listen host name other than `localhost`, and to check that the
    /// credential files `[forward]` and `[consume]` name can be read).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the file, the place and the fix.
    pub fn parse(text: &str, path: &Path, overrides: &Overrides) -> Result<Config, ConfigError> {
        let raw = RawIni::parse(text, path)?;
        let mut warnings = Vec::new();
        let sections: Vec<&str> = KNOWN.iter().map(|(name, _)| *name).collect();
        for section in &raw.sections {
            match KNOWN.iter().find(|(name, _)| *name == section.name) {
                Some((_, keys)) => warnings.extend(section.unknown_keys(path, keys)),
                None => warnings.push(ConfigWarning::unknown_section(
                    path,
                    &section.name,
                    section.line,
                    &sections,
                )),
            }
        }
        let base = path.parent().unwrap_or(Path::new("")).to_path_buf();
        let get = |name: &str| Reader {
            file: path,
            base: &base,
            section: raw.section(name),
            name: name.to_owned(),
        };
        let server = read_server(&get("server"))?;
        let has_tls_files = server.pemfile.is_some() && server.cacert.is_some();
        Ok(Config {
            path: path.to_path_buf(),
            main: read_main(&get("main"), overrides)?,
            log: read_log(&get("log"), overrides)?,
            compressor: read_compressor(&get("compressor"))?,
            syslog: syslog::read_syslog(&get("syslog"), has_tls_files)?,
            http: http::read_http(&get("http"), has_tls_files)?,
            viewer: viewer::read_viewer(&get("viewer"))?,
            forward: forward::read_forward(&get("forward"))?,
            consume: forward::read_consume(&get("consume"))?,
            server,
            limits: read_limits(&get("server"))?,
            warnings,
        })
    }

    /// Reads and validates the facilities file this config names.
    ///
    /// # Errors
    /// A [`ConfigError`] naming facilities.conf, the section and the fix.
    pub fn load_facilities(&self) -> Result<FacilityDb, ConfigError> {
        FacilityDb::load(&self.main.facilities_config)
    }
}

fn read_main(r: &Reader<'_>, o: &Overrides) -> Result<MainSection, ConfigError> {
    let rundir = o
        .rundir
        .clone()
        .unwrap_or(r.path("rundir")?.unwrap_or_else(|| "/run/loghogd".into()));
    // A relative pidfile in the file lives in rundir (the old default was
    // just "loghogd.pid").
    let pidfile = match o.pidfile.clone() {
        Some(p) => p,
        None => {
            let p = r
                .raw_path("pidfile")?
                .unwrap_or_else(|| "loghogd.pid".into());
            normalize(&if p.is_absolute() { p } else { rundir.join(p) })
        }
    };
    Ok(MainSection {
        daemon: o.daemon || r.bool("daemon", false)?,
        user: o.user.clone().or_else(|| r.str("user").map(str::to_owned)),
        logdir: o.logdir.clone().unwrap_or(
            r.path("logdir")?
                .unwrap_or_else(|| "/var/log/loghogd".into()),
        ),
        workdir: o.workdir.clone().unwrap_or(
            r.path("workdir")?
                .unwrap_or_else(|| "/var/lib/loghogd".into()),
        ),
        rundir,
        pidfile,
        facilities_config: o.facilities_config.clone().unwrap_or(
            r.path("facilities_config")?
                .unwrap_or_else(|| "/etc/loghogd/facilities.conf".into()),
        ),
    })
}

fn read_log(r: &Reader<'_>, o: &Overrides) -> Result<LogSection, ConfigError> {
    let level = match r.str("level") {
        None => tracing::Level::INFO,
        Some(v) => parse_level(v).ok_or_else(|| {
            r.error(
                "level",
                format!("level = \"{v}\" is not a log level; use DEBUG, INFO, WARNING, ERROR or CRITICAL"),
            )
        })?,
    };
    let when = match r.str("when") {
        None => Schedule::parse_log_when("midnight").map_err(|e| r.error("when", e.to_string()))?,
        Some(v) => {
            let when =
                Schedule::parse_log_when(v).map_err(|e| r.error("when", format!("when = {e}")))?;
            if when.is_size() {
                return Err(r.error(
                    "when",
                    "when = \"size\" needs a size, and [log] has none; use a schedule such as midnight or H",
                ));
            }
            when
        }
    };
    Ok(LogSection {
        filename: match &o.log_filename {
            Some(p) => Some(p.clone()),
            None => r.path("filename")?,
        },
        level,
        backup_count: r.number("backup_count", 14, 0, 100_000)? as u32,
        when,
    })
}

fn read_compressor(r: &Reader<'_>) -> Result<CompressorSection, ConfigError> {
    let format = match r.str("format") {
        None => Codec::Xz,
        Some(v) => Codec::parse(v).ok_or_else(|| {
            r.error(
                "format",
                format!("format = \"{v}\" is not a compression format; use xz, gzip or bzip2"),
            )
        })?,
    };
    Ok(CompressorSection {
        format,
        level: r.number("level", 6, 0, 9)? as u32,
        compress_on_write: r.bool("compress_on_write", false)?,
    })
}

fn read_server(r: &Reader<'_>) -> Result<ServerSection, ConfigError> {
    let port = r.number("default_port", 5566, 0, 65535)? as u16;
    let port_ssl = r.number("default_port_ssl", 5577, 0, 65535)? as u16;
    let addrs = |key: &str, family: Family, port: u16, absent: &[SocketAddr]| match r
        .section
        .and_then(|s| s.get(key))
    {
        None => Ok(absent.to_vec()),
        Some(entry) => parse_addrs(&entry.value, family, port)
            .map_err(|problem| r.error(key, format!("{key} = \"{}\": {problem}", entry.value))),
    };
    let default_v4 = [SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port)];
    let mut listen = addrs("listen_ipv4", Family::V4, port, &default_v4)?;
    listen.extend(addrs("listen_ipv6", Family::V6, port, &[])?);
    let mut listen_ssl = addrs("listen_ipv4_ssl", Family::V4, port_ssl, &[])?;
    listen_ssl.extend(addrs("listen_ipv6_ssl", Family::V6, port_ssl, &[])?);

    // Two listeners on one address and port would fail at bind time with a
    // less helpful message; port 0 (ephemeral, used by tests) never clashes.
    let mut seen: Vec<SocketAddr> = Vec::new();
    for addr in listen.iter().chain(&listen_ssl) {
        if addr.port() != 0 && seen.contains(addr) {
            return Err(ConfigError::new(
                r.file,
                "[server]",
                format!(
                    "{addr} is listed twice (plain and TLS listeners cannot share an \
                     address and port); give one of them another port"
                ),
            ));
        }
        seen.push(*addr);
    }

    let pemfile = r.path("pemfile")?;
    let cacert = r.path("cacert")?;
    if !listen_ssl.is_empty() {
        for (key, value) in [("pemfile", &pemfile), ("cacert", &cacert)] {
            if value.is_none() {
                return Err(r.error(
                    key,
                    format!(
                        "TLS listeners are configured (listen_ipv4_ssl/listen_ipv6_ssl) \
                         but {key} is not set; set {key} (see loghog-server-cert) or \
                         leave listen_ipv4_ssl and listen_ipv6_ssl empty"
                    ),
                ));
            }
        }
    }
    let max_msg_size = r.number("max_msg_size", 65536, MIN_MSG_SIZE, MAX_MSG_SIZE)?;
    Ok(ServerSection {
        listen,
        listen_ssl,
        pemfile,
        cacert,
        // At most 16 MiB, so it fits any usize we build for.
        max_msg_size: usize::try_from(max_msg_size).unwrap_or(usize::MAX),
    })
}

/// The `[server]` limits; absent keys keep the defaults of [`Limits`].
fn read_limits(r: &Reader<'_>) -> Result<Limits, ConfigError> {
    let d = Limits::default();
    let secs = |key: &str, default: Duration, max: u64| -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(r.number(
            key,
            default.as_secs(),
            1,
            max,
        )?))
    };
    let max_connections = r.number(
        "max_connections",
        d.max_connections as u64,
        1,
        MAX_CONNECTIONS,
    )? as usize;
    let max_connections_per_ip = r.number(
        "max_connections_per_ip",
        d.max_connections_per_ip as u64,
        1,
        MAX_CONNECTIONS,
    )? as usize;
    // 0 turns the idle timeout off: an application that logs once an hour
    // over one connection (the Python 0.7 client keeps it open) would
    // otherwise find it closed every time and send that message only with
    // its next one.
    let idle = r.number(
        "idle_timeout",
        d.idle_timeout.map_or(0, |t| t.as_secs()),
        0,
        MAX_IDLE_TIMEOUT,
    )?;
    Ok(Limits {
        max_connections,
        max_connections_per_ip,
        idle_timeout: (idle > 0).then(|| Duration::from_secs(idle)),
        frame_timeout: secs("frame_timeout", d.frame_timeout, 3600)?,
        handshake_timeout: secs("handshake_timeout", d.handshake_timeout, 3600)?,
        shutdown_grace: secs("shutdown_timeout", d.shutdown_grace, 3600)?,
        max_open_files: r.number("max_open_files", d.max_open_files as u64, 16, 1 << 20)? as usize,
        max_files_per_app: r.number("max_files_per_app", d.max_files_per_app as u64, 1, 1 << 24)?
            as usize,
        ..d
    })
}

// === Reader: typed access to one section ===

/// One section of loghogd.conf (possibly absent) with typed getters whose
/// errors name the key and the fix.
struct Reader<'a> {
    file: &'a Path,
    /// Directory of loghogd.conf: relative paths resolve against it.
    base: &'a Path,
    section: Option<&'a RawSection>,
    name: String,
}

impl Reader<'_> {
    /// The value of `key`; `None` when absent or empty.
    fn str(&self, key: &str) -> Option<&str> {
        let v = self.section?.get(key)?.value.as_str();
        (!v.is_empty()).then_some(v)
    }

    fn error(&self, key: &str, problem: impl Into<String>) -> ConfigError {
        let place = match self.section {
            Some(s) => s.place(key),
            None => format!("[{}] {key}", self.name),
        };
        ConfigError::new(self.file, place, problem)
    }

    fn bool(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.str(key) {
            None => Ok(default),
            Some(v) => parse_bool(v).ok_or_else(|| {
                self.error(
                    key,
                    format!("{key} = \"{v}\" is not a boolean; use yes or no"),
                )
            }),
        }
    }

    fn number(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let Some(v) = self.str(key) else {
            return Ok(default);
        };
        match v.parse::<u64>() {
            Ok(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.error(
                key,
                format!("{key} = \"{v}\" is not valid; use a whole number from {min} to {max}"),
            )),
        }
    }

    /// The path as written, unresolved; `None` when the key is absent.
    ///
    /// # Errors
    /// The key is present with an empty value: that is a mistake (an
    /// unfinished edit), not a request for the default.
    fn raw_path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        match self.section.and_then(|s| s.get(key)) {
            None => Ok(None),
            Some(e) if e.value.is_empty() => Err(self.error(
                key,
                format!("{key} is empty; give a path, or remove the line to use the default"),
            )),
            Some(e) => Ok(Some(PathBuf::from(&e.value))),
        }
    }

    /// The addresses of `key`, comma-separated, IPv4 and IPv6 mixed (the
    /// keys of the new sections, which have no old per-family layout to
    /// keep): each item is checked by its own family, and one without a
    /// port gets `port`. Empty when the key is absent.
    fn mixed_addrs(&self, key: &str, port: u16) -> Result<Vec<SocketAddr>, ConfigError> {
        let Some(entry) = self.section.and_then(|s| s.get(key)) else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for item in entry
            .value
            .split(',')
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let family = if item.starts_with('[') || item.matches(':').count() > 1 {
                Family::V6
            } else {
                Family::V4
            };
            let mut one = parse_addrs(item, family, port).map_err(|problem| {
                self.error(key, format!("{key} = \"{}\": {problem}", entry.value))
            })?;
            out.append(&mut one);
        }
        Ok(out)
    }

    /// A size in bytes: a whole number, optionally with a binary `K`, `M`
    /// or `G` suffix (`256K` is 262144), from `min` to `max`.
    fn size(&self, key: &str, default: u64, min: u64, max: u64) -> Result<u64, ConfigError> {
        let Some(v) = self.str(key) else {
            return Ok(default);
        };
        match parse_size(v) {
            Some(n) if (min..=max).contains(&n) => Ok(n),
            _ => Err(self.error(
                key,
                format!(
                    "{key} = \"{v}\" is not valid; use a size from {} to {} (bytes, or with a K, M or G suffix)",
                    show_size(min),
                    show_size(max)
                ),
            )),
        }
    }

    /// A duration: whole seconds, or a number with an `s`, `m`, `h` or `d`
    /// suffix (`2m` is 120 s), from `min` to `max`.
    fn duration(
        &self,
        key: &str,
        default: Duration,
        min: Duration,
        max: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = self.str(key) else {
            return Ok(default);
        };
        match parse_duration(v) {
            Some(d) if d >= min && d <= max => Ok(d),
            _ => Err(self.error(
                key,
                format!(
                    "{key} = \"{v}\" is not valid; use a duration from {} to {} (seconds, or with an s, m, h or d suffix)",
                    show_duration(min),
                    show_duration(max)
                ),
            )),
        }
    }

    /// The path, resolved against the directory of loghogd.conf and
    /// normalized (no `.` or `..` left), so one file has one name in logs
    /// and in the rotation state.
    fn path(&self, key: &str) -> Result<Option<PathBuf>, ConfigError> {
        Ok(self
            .raw_path(key)?
            .map(|p| normalize(&resolve(self.base, p))))
    }
}

/// Largest config file read: a facilities.conf for thousands of apps is a
/// few hundred KiB; anything far beyond is not a config file.
const MAX_CONFIG_FILE: u64 = 16 << 20;

/// Reads a config file, which must be a regular file of sane size: a FIFO
/// or device at the path (or a file being written without end) must not
/// block or exhaust the daemon. `what` names the flag or key that set it.
///
/// # Errors
/// A [`ConfigError`] saying what the path is and what to do.
pub(crate) fn read_config_file(path: &Path, what: &str) -> Result<String, ConfigError> {
    use std::io::Read;
    let meta = std::fs::metadata(path).map_err(|e| ConfigError::unreadable(path, &e, what))?;
    if !meta.is_file() {
        return Err(ConfigError::new(
            path,
            "file",
            format!("is not a regular file; point {what} at a file"),
        ));
    }
    let file = std::fs::File::open(path).map_err(|e| ConfigError::unreadable(path, &e, what))?;
    let mut text = String::new();
    file.take(MAX_CONFIG_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| ConfigError::unreadable(path, &e, what))?;
    if text.len() as u64 > MAX_CONFIG_FILE {
        return Err(ConfigError::new(
            path,
            "file",
            format!("is larger than {MAX_CONFIG_FILE} bytes; is {what} the right file?"),
        ));
    }
    Ok(text)
}

/// `p` if absolute, else `p` under `base`.
fn resolve(base: &Path, p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        base.join(p)
    }
}

/// Removes `.` and `..` components without touching the disk (`a/b/../c`
/// is `a/c`); a `..` above the start of a relative path is kept.
pub fn normalize(p: &Path) -> PathBuf {
    use std::path::Component;
    let mut out = PathBuf::new();
    for c in p.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                let popped =
                    matches!(out.components().next_back(), Some(Component::Normal(_))) && out.pop();
                if !popped && !out.has_root() {
                    out.push("..");
                }
            }
            other => out.push(other),
        }
    }
    if out.as_os_str().is_empty() {
        out.push(".");
    }
    out
}

/// `N`, `NK`, `NM` or `NG` (binary multiples, either case) in bytes.
pub(crate) fn parse_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let (digits, shift) = match v.as_bytes().last()?.to_ascii_uppercase() {
        b'K' => (&v[..v.len() - 1], 10),
        b'M' => (&v[..v.len() - 1], 20),
        b'G' => (&v[..v.len() - 1], 30),
        _ => (v, 0),
    };
    let n: u64 = digits.trim_end().parse().ok()?;
    n.checked_mul(1 << shift)
}

/// `N` (seconds) or `Ns`, `Nm`, `Nh`, `Nd`.
pub(crate) fn parse_duration(v: &str) -> Option<Duration> {
    let v = v.trim();
    let (digits, unit) = match v.as_bytes().last()?.to_ascii_lowercase() {
        b's' => (&v[..v.len() - 1], 1),
        b'm' => (&v[..v.len() - 1], 60),
        b'h' => (&v[..v.len() - 1], 3600),
        b'd' => (&v[..v.len() - 1], 86_400),
        _ => (v, 1),
    };
    let n: u64 = digits.trim_end().parse().ok()?;
    n.checked_mul(unit).map(Duration::from_secs)
}

/// A byte count the way the config writes it: `256K`, `1G`, `100`.
pub(crate) fn show_size(n: u64) -> String {
    for (shift, unit) in [(30, "G"), (20, "M"), (10, "K")] {
        if n != 0 && n.is_multiple_of(1 << shift) {
            return format!("{}{unit}", n >> shift);
        }
    }
    n.to_string()
}

/// A duration the way the config writes it: `7d`, `2m`, `90s`.
pub(crate) fn show_duration(d: Duration) -> String {
    let s = d.as_secs();
    for (unit, name) in [(86_400, "d"), (3600, "h"), (60, "m")] {
        if s != 0 && s.is_multiple_of(unit) {
            return format!("{}{name}", s / unit);
        }
    }
    format!("{s}s")
}

/// ConfigParser's booleans (SPEC §6), case-insensitive.
pub fn parse_bool(v: &str) -> Option<bool> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "on" | "1" => Some(true),
        "no" | "false" | "off" | "0" => Some(false),
        _ => None,
    }
}

/// Python logging level names. Python's `CRITICAL` has no `tracing`
/// counterpart and reads as `ERROR`; `WARN` is Python's alias of `WARNING`.
pub fn parse_level(v: &str) -> Option<tracing::Level> {
    match v.to_ascii_uppercase().as_str() {
        "DEBUG" => Some(tracing::Level::DEBUG),
        "INFO" => Some(tracing::Level::INFO),
        "WARNING" | "WARN" => Some(tracing::Level::WARN),
        "ERROR" | "CRITICAL" => Some(tracing::Level::ERROR),
        _ => None,
    }
}

/// Which key a listen address came from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn matches(self, ip: &IpAddr) -> bool {
        matches!(
            (self, ip),
            (Family::V4, IpAddr::V4(_)) | (Family::V6, IpAddr::V6(_))
        )
    }
}

/// A comma-separated address list: `127.0.0.1, 10.0.0.5:16655`,
/// `[::1], [::2]:5588`, `localhost:15566`. Empty means no listener.
/// The error text says which item is wrong and how to write it.
fn parse_addrs(value: &str, family: Family, default_port: u16) -> Result<Vec<SocketAddr>, String> {
    let mut out = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let addr = parse_addr(item, family, default_port)?;
        if !family.matches(&addr.ip()) {
            let (is, key) = match family {
                Family::V4 => ("an IPv6", "listen_ipv6"),
                Family::V6 => ("an IPv4", "listen_ipv4"),
            };
            return Err(format!(
                "\"{item}\" is {is} address; move it to {key} (or its _ssl twin)"
            ));
        }
        out.push(addr);
    }
    Ok(out)
}

fn parse_addr(item: &str, family: Family, default_port: u16) -> Result<SocketAddr, String> {
    let port = |p: &str| {
        p.parse::<u16>().map_err(|_| {
            format!("\"{p}\" in \"{item}\" is not a port; use a number from 0 to 65535")
        })
    };
    // `[v6]` or `[v6]:port`.
    if let Some(rest) = item.strip_prefix('[') {
        let (host, tail) = rest
            .split_once(']')
            .ok_or_else(|| format!("\"{item}\" has no closing ']'; write [::1] or [::1]:5588"))?;
        let ip: Ipv6Addr = host
            .parse()
            .map_err(|_| format!("\"{host}\" in \"{item}\" is not an IPv6 address"))?;
        let port = match tail {
            "" => default_port,
            t => match t.strip_prefix(':') {
                Some(p) => port(p)?,
                None => return Err(format!("\"{item}\": write [address]:port, e.g. [::1]:5588")),
            },
        };
        return Ok(SocketAddr::new(ip.into(), port));
    }
    // A bare address (`::1` too, which cannot carry a port without brackets).
    if let Ok(ip) = item.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, default_port));
    }
    let (host, port) = match item.rsplit_once(':') {
        Some((host, p)) if !host.contains(':') => (host, port(p)?),
        Some(_) => {
            return Err(format!(
                "\"{item}\" is not an address; write IPv6 addresses in brackets, e.g. [::1]:5588"
            ))
        }
        None => (item, default_port),
    };
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(SocketAddr::new(ip, port));
    }
    if host.eq_ignore_ascii_case("localhost") {
        let ip: IpAddr = match family {
            Family::V4 => Ipv4Addr::LOCALHOST.into(),
            Family::V6 => Ipv6Addr::LOCALHOST.into(),
        };
        return Ok(SocketAddr::new(ip, port));
    }
    let resolved = (host, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve \"{host}\" ({e}); use an IP address"))?;
    let want = match family {
        Family::V4 => "IPv4",
        Family::V6 => "IPv6",
    };
    resolved
        .into_iter()
        .find(|a| family.matches(&a.ip()))
        .ok_or_else(|| format!("\"{host}\" has no {want} address; use an IP address"))
}

/// What the section parsers' unit tests share: loghogd.conf text parsed as
/// /etc/loghogd/loghogd.conf, and the check that errors name the file, the
/// key and the fix.
#[cfg(test)]
pub(crate) mod testing {
    use std::path::Path;

    use super::{Config, ConfigError, Overrides};

    /// `text` as /etc/loghogd/loghogd.conf, without overrides.
    pub(crate) fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(
            text,
            Path::new("/etc/loghogd/loghogd.conf"),
            &Overrides::default(),
        )
    }

    /// Every `(text, key, fix)`: `text` is refused with an error that names
    /// the file, `key` and `fix`.
    pub(crate) fn assert_errors(cases: &[(&str, &str, &str)]) {
        for (text, key, fix) in cases {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains("/etc/loghogd/loghogd.conf"), "{e}");
            assert!(e.contains(key), "{e}");
            assert!(e.contains(fix), "{e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::parse;
    use super::*;

    /// The old daemon's shipped loghogd.conf, verbatim.
    const OLD_SHIPPED: &str = "\
[main]
daemon = no ; The init script will typically provide the --daemon cmd option
workdir = /var/lib/loghogd
logdir = /var/log/loghogd
rundir = /var/run/loghogd
facilities_config = /etc/loghogd/facilities.conf
pidfile = /var/run/loghogd/loghogd.pid
user = loghog

[log]
backup_count = 14
when = midnight
filename = /var/log/loghogd/loghogd.log
level = DEBUG

[scheduler]
db_filename = schedules

[server]
; Comma separated list of addresses. e.g.: [::1], [::17] or 127.0.0.1, 192.168.1.10
; You may also specify a port with each address: [::0]:5588 or localhost:15566, 192.168.1.10:16655

listen_ipv4 = 127.0.0.1
default_port = 5566

# IPv6 supported systems should use it
; listen_ipv6 = [::1]
listen_ipv6 = 

; Listen on SSL as well
default_port_ssl = 5577
listen_ipv4_ssl = 127.0.0.1
pemfile = certs/loghog-server.pem
cacert = certs/loghog-ca.cert

# IPv6 supported systems should use it
; listen_ipv6_ssl = [::1]
listen_ipv6_ssl = 
";

    fn sa(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn old_shipped_config_parses() {
        let c = parse(OLD_SHIPPED).unwrap();
        assert!(!c.main.daemon);
        assert_eq!(c.main.user.as_deref(), Some("loghog"));
        assert_eq!(c.main.workdir, Path::new("/var/lib/loghogd"));
        assert_eq!(c.main.logdir, Path::new("/var/log/loghogd"));
        assert_eq!(c.main.rundir, Path::new("/var/run/loghogd"));
        assert_eq!(c.main.pidfile, Path::new("/var/run/loghogd/loghogd.pid"));
        assert_eq!(
            c.main.facilities_config,
            Path::new("/etc/loghogd/facilities.conf")
        );
        assert_eq!(
            c.log.filename.as_deref(),
            Some(Path::new("/var/log/loghogd/loghogd.log"))
        );
        assert_eq!(c.log.level, tracing::Level::DEBUG);
        assert_eq!(c.log.backup_count, 14);
        assert_eq!(c.log.when.describe(), "daily (0 0 * * *)");
        assert_eq!(c.server.listen, [sa("127.0.0.1:5566")]);
        assert_eq!(c.server.listen_ssl, [sa("127.0.0.1:5577")]);
        assert_eq!(
            c.server.pemfile.as_deref(),
            Some(Path::new("/etc/loghogd/certs/loghog-server.pem"))
        );
        assert_eq!(
            c.server.cacert.as_deref(),
            Some(Path::new("/etc/loghogd/certs/loghog-ca.cert"))
        );
        assert_eq!(c.server.max_msg_size, 65536);
        assert_eq!(c.compressor.format, Codec::Xz);
        assert_eq!(c.compressor.level, 6);
        assert!(!c.compressor.compress_on_write);
    }

    #[test]
    fn defaults_for_an_empty_file() {
        let c = parse("").unwrap();
        assert!(!c.main.daemon);
        assert_eq!(c.main.user, None);
        assert_eq!(c.main.logdir, Path::new("/var/log/loghogd"));
        assert_eq!(c.main.workdir, Path::new("/var/lib/loghogd"));
        assert_eq!(c.main.rundir, Path::new("/run/loghogd"));
        assert_eq!(c.main.pidfile, Path::new("/run/loghogd/loghogd.pid"));
        assert_eq!(
            c.main.facilities_config,
            Path::new("/etc/loghogd/facilities.conf")
        );
        assert_eq!(c.log.filename, None);
        assert_eq!(c.log.level, tracing::Level::INFO);
        assert_eq!(c.log.backup_count, 14);
        assert_eq!(c.log.when, Schedule::parse("daily").unwrap());
        assert_eq!(c.server.listen, [sa("127.0.0.1:5566")]);
        assert!(c.server.listen_ssl.is_empty());
        assert_eq!(c.server.max_msg_size, 65536);
    }

    #[test]
    fn relative_paths_resolve_against_the_config_dir() {
        let text = "[main]\nlogdir = ../../var/log\nworkdir = lib\nrundir = run\npidfile = d.pid\n\
                    facilities_config = facilities.conf\n[log]\nfilename = own.log\n";
        let c = Config::parse(
            text,
            Path::new("etc/dev/loghogd.conf"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.main.logdir, Path::new("var/log"));
        assert_eq!(c.main.workdir, Path::new("etc/dev/lib"));
        assert_eq!(c.main.rundir, Path::new("etc/dev/run"));
        assert_eq!(c.main.pidfile, Path::new("etc/dev/run/d.pid"));
        assert_eq!(
            c.main.facilities_config,
            Path::new("etc/dev/facilities.conf")
        );
        assert_eq!(
            c.log.filename.as_deref(),
            Some(Path::new("etc/dev/own.log"))
        );
        // A bare file name next to the config: relative to the current dir.
        let c = Config::parse(
            "[main]\nlogdir = logs\n",
            Path::new("loghogd.conf"),
            &Overrides::default(),
        )
        .unwrap();
        assert_eq!(c.main.logdir, Path::new("logs"));
    }

    #[test]
    fn overrides_win_and_stay_as_given() {
        let o = Overrides {
            facilities_config: Some("f.conf".into()),
            pidfile: Some("p.pid".into()),
            log_filename: Some("own.log".into()),
            logdir: Some("logs".into()),
            workdir: Some("work".into()),
            rundir: Some("run".into()),
            user: Some("nobody".into()),
            daemon: true,
        };
        let c = Config::parse(OLD_SHIPPED, Path::new("/etc/loghogd/loghogd.conf"), &o).unwrap();
        assert!(c.main.daemon);
        assert_eq!(c.main.user.as_deref(), Some("nobody"));
        assert_eq!(c.main.facilities_config, Path::new("f.conf"));
        assert_eq!(c.main.pidfile, Path::new("p.pid"));
        assert_eq!(c.main.logdir, Path::new("logs"));
        assert_eq!(c.main.workdir, Path::new("work"));
        assert_eq!(c.main.rundir, Path::new("run"));
        assert_eq!(c.log.filename.as_deref(), Some(Path::new("own.log")));
        // --run-dir moves a relative pidfile from the file with it.
        let o = Overrides {
            rundir: Some("/tmp/run".into()),
            ..Overrides::default()
        };
        let c = Config::parse("[main]\npidfile = x.pid\n", Path::new("/etc/l.conf"), &o).unwrap();
        assert_eq!(c.main.pidfile, Path::new("/tmp/run/x.pid"));
    }

    #[test]
    fn address_lists() {
        let table: &[(&str, &[&str])] = &[
            (
                "listen_ipv4 = 127.0.0.1, 10.0.0.5:16655",
                &["127.0.0.1:5566", "10.0.0.5:16655"],
            ),
            ("listen_ipv4 =", &[]),
            ("listen_ipv4 = \"\"", &[]),
            ("listen_ipv4 = localhost", &["127.0.0.1:5566"]),
            ("listen_ipv4 = localhost:15566", &["127.0.0.1:15566"]),
            ("listen_ipv4 = 127.0.0.1:0", &["127.0.0.1:0"]),
            ("listen_ipv4 = 0.0.0.0,", &["0.0.0.0:5566"]),
            (
                "listen_ipv4 =\nlisten_ipv6 = [::1], [::2]:5588",
                &["[::1]:5566", "[::2]:5588"],
            ),
            ("listen_ipv4 =\nlisten_ipv6 = ::1", &["[::1]:5566"]),
            ("listen_ipv4 =\nlisten_ipv6 = localhost:7", &["[::1]:7"]),
            (
                "default_port = 9\nlisten_ipv6 = [::]",
                &["127.0.0.1:9", "[::]:9"],
            ),
            (
                "listen_ipv4 = 127.0.0.1:0\nlisten_ipv6 = [::1]:0",
                &["127.0.0.1:0", "[::1]:0"],
            ),
        ];
        for (body, want) in table {
            let c = parse(&format!("[server]\n{body}\n")).unwrap_or_else(|e| panic!("{body}: {e}"));
            let want: Vec<SocketAddr> = want.iter().map(|s| sa(s)).collect();
            assert_eq!(c.server.listen, want, "{body}");
        }
        let c = parse(
            "[server]\nlisten_ipv4_ssl = 10.1.1.1, localhost:99\nlisten_ipv6_ssl = [::1]\n\
             default_port_ssl = 7000\npemfile = /p.pem\ncacert = /ca.pem\n",
        )
        .unwrap();
        assert_eq!(
            c.server.listen_ssl,
            [sa("10.1.1.1:7000"), sa("127.0.0.1:99"), sa("[::1]:7000")]
        );
    }

    #[test]
    fn values_of_each_type() {
        let c = parse(
            "[main]\ndaemon = ON\n[log]\nlevel = critical\nwhen = W6\nbackup_count = 0\n\
             [compressor]\nformat = GZIP\nlevel = 9\ncompress_on_write = yes\n\
             [server]\nmax_msg_size = 64\n",
        )
        .unwrap();
        assert!(c.main.daemon);
        assert_eq!(c.log.level, tracing::Level::ERROR);
        assert_eq!(c.log.when.describe(), "W6 (0 0 * * 0)");
        assert_eq!(c.log.backup_count, 0);
        assert_eq!(c.compressor.format, Codec::Gzip);
        assert_eq!(c.compressor.level, 9);
        assert!(c.compressor.compress_on_write);
        assert_eq!(c.server.max_msg_size, 64);
        for (v, want) in [
            ("xz", Codec::Xz),
            ("gzip", Codec::Gzip),
            ("bzip2", Codec::Bzip2),
        ] {
            assert_eq!(Codec::parse(v), Some(want));
        }
        for (v, want) in [
            ("WARN", tracing::Level::WARN),
            ("warning", tracing::Level::WARN),
            ("Debug", tracing::Level::DEBUG),
        ] {
            assert_eq!(parse_level(v), Some(want));
        }
        for v in ["yes", "true", "on", "1", "YES"] {
            assert_eq!(parse_bool(v), Some(true), "{v}");
        }
        for v in ["no", "false", "off", "0", "Off"] {
            assert_eq!(parse_bool(v), Some(false), "{v}");
        }
        assert_eq!(parse_bool("maybe"), None);
    }

    #[test]
    fn every_error_names_file_place_and_fix() {
        let table = [
            ("[main]\ndaemon = maybe\n", "[main] daemon (line 2)", "use yes or no"),
            ("[log]\nlevel = LOUD\n", "[log] level (line 2)", "use DEBUG, INFO, WARNING"),
            ("[log]\nwhen = fortnightly\n", "[log] when (line 2)", "when = \"fortnightly\" is not a schedule; use midnight, H, D, W0-W6"),
            ("[log]\nwhen = size\n", "[log] when (line 2)", "use a schedule"),
            ("[log]\nbackup_count = -1\n", "[log] backup_count (line 2)", "whole number from 0"),
            ("[compressor]\nformat = zip\n", "[compressor] format (line 2)", "use xz, gzip or bzip2"),
            ("[compressor]\nlevel = 10\n", "[compressor] level (line 2)", "from 0 to 9"),
            ("[server]\nmax_msg_size = 63\n", "[server] max_msg_size (line 2)", "from 64 to 16777216"),
            ("[server]\nmax_msg_size = 16777217\n", "[server] max_msg_size (line 2)", "from 64 to 16777216"),
            ("[server]\ndefault_port = 70000\n", "[server] default_port (line 2)", "from 0 to 65535"),
            ("[server]\nlisten_ipv4 = [::1]\n", "[server] listen_ipv4 (line 2)", "move it to listen_ipv6"),
            ("[server]\nlisten_ipv6 = 127.0.0.1\n", "[server] listen_ipv6 (line 2)", "move it to listen_ipv4"),
            ("[server]\nlisten_ipv4 = 1.2.3.4:http\n", "[server] listen_ipv4 (line 2)", "use a number from 0 to 65535"),
            ("[server]\nlisten_ipv6 = fe80::x:5588\n", "[server] listen_ipv6 (line 2)", "in brackets"),
            ("[server]\nlisten_ipv6 = [::1\n", "[server] listen_ipv6 (line 2)", "no closing ']'"),
            ("[server]\nlisten_ipv4_ssl = 127.0.0.1\n", "[server] pemfile", "set pemfile"),
            ("[server]\nlisten_ipv4_ssl = 127.0.0.1\npemfile = a.pem\n", "[server] cacert", "set cacert"),
            (
                "[server]\nlisten_ipv4 = 127.0.0.1:7\nlisten_ipv4_ssl = 127.0.0.1:7\npemfile=a\ncacert=b\n",
                "[server]",
                "give one of them another port",
            ),
            ("[main]\nnot a line\n", "line 2", "is not a [section]"),
        ];
        for (text, place, fix) in table {
            let err = parse(text).expect_err(text);
            assert_eq!(err.file, Path::new("/etc/loghogd/loghogd.conf"), "{text}");
            assert_eq!(err.place, place, "{text}");
            assert!(err.problem.contains(fix), "{text}: {}", err.problem);
            assert!(
                err.to_string().starts_with("/etc/loghogd/loghogd.conf: "),
                "{err}"
            );
        }
    }

    #[test]
    fn unknown_keys_and_sections_are_not_errors() {
        let c =
            parse("[main]\ncolour = blue\n[extra]\nx = 1\n[scheduler]\ndb_filename = s\n").unwrap();
        assert_eq!(c.main.logdir, Path::new("/var/log/loghogd"));
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(
            w[0].contains("[main] colour (line 2): unknown key `colour` ignored"),
            "{w:?}"
        );
        assert!(w[1].contains("unknown section [extra] ignored"), "{w:?}");
    }

    #[test]
    fn typos_are_warnings_that_suggest_the_key() {
        let c = parse("[mian]\nuser = x\n[server]\ndefault_prot = 5599\n").unwrap();
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert!(
            w[0].contains("[mian] (line 1)") && w[0].ends_with("did you mean [main]?"),
            "{w:?}"
        );
        assert!(w[1].ends_with("did you mean `default_port`?"), "{w:?}");
        assert_eq!(c.server.listen, [sa("127.0.0.1:5566")]);
    }

    #[test]
    fn empty_path_values_are_errors_not_defaults() {
        for key in [
            "logdir",
            "workdir",
            "rundir",
            "pidfile",
            "facilities_config",
        ] {
            let err = parse(&format!("[main]\n{key} =\n")).unwrap_err();
            assert_eq!(err.place, format!("[main] {key} (line 2)"), "{err}");
            assert!(err.problem.contains("is empty"), "{err}");
        }
        let err = parse("[log]\nfilename =\n").unwrap_err();
        assert!(err.place.starts_with("[log] filename"), "{err}");
    }

    #[test]
    fn limits_are_read_from_the_server_section() {
        let c =
            parse("[server]\nmax_connections = 100\nhandshake_timeout = 3\nshutdown_timeout = 4\n")
                .unwrap();
        assert_eq!(c.limits.max_connections, 100);
        assert_eq!(c.limits.handshake_timeout, Duration::from_secs(3));
        assert_eq!(c.limits.shutdown_grace, Duration::from_secs(4));
        assert_eq!(
            parse("").unwrap().limits.shutdown_grace,
            Duration::from_secs(10)
        );
        let err = parse("[server]\nshutdown_timeout = 0\n").unwrap_err();
        assert!(err.problem.contains("from 1 to 3600"), "{err}");
    }

    #[test]
    fn connection_limits_and_timeouts_are_read_and_range_checked() {
        let d = parse("").unwrap().limits;
        assert_eq!(d.max_connections_per_ip, 256);
        assert_eq!(d.idle_timeout, Some(Duration::from_secs(300)));
        assert_eq!(d.frame_timeout, Duration::from_secs(30));
        let c =
            parse("[server]\nmax_connections_per_ip = 8\nidle_timeout = 60\nframe_timeout = 5\n")
                .unwrap()
                .limits;
        assert_eq!(c.max_connections_per_ip, 8);
        assert_eq!(c.idle_timeout, Some(Duration::from_secs(60)));
        assert_eq!(c.frame_timeout, Duration::from_secs(5));
        let off = parse("[server]\nidle_timeout = 0\n").unwrap().limits;
        assert_eq!(off.idle_timeout, None);
        for (text, place, range) in [
            (
                "max_connections_per_ip = 0",
                "max_connections_per_ip",
                "from 1 to 1048576",
            ),
            (
                "max_connections = 0",
                "max_connections",
                "from 1 to 1048576",
            ),
            ("idle_timeout = 86401", "idle_timeout", "from 0 to 86400"),
            ("idle_timeout = -1", "idle_timeout", "from 0 to 86400"),
            ("frame_timeout = 0", "frame_timeout", "from 1 to 3600"),
        ] {
            let err = parse(&format!("[server]\n{text}\n")).unwrap_err();
            assert_eq!(err.place, format!("[server] {place} (line 2)"), "{err}");
            assert!(err.problem.contains(range), "{text}: {err}");
        }
    }

    #[test]
    fn sizes_and_durations() {
        for (v, want) in [
            ("0", Some(0)),
            ("100", Some(100)),
            ("1K", Some(1024)),
            ("256k", Some(256 << 10)),
            ("64M", Some(64 << 20)),
            ("10 G", Some(10 << 30)),
            ("K", None),
            ("1T", None),
            ("-1K", None),
            ("1.5M", None),
            ("99999999999999999999G", None),
            ("18014398509481984G", None),
        ] {
            assert_eq!(parse_size(v), want, "{v}");
        }
        for (v, want) in [
            ("0", Some(0)),
            ("90", Some(90)),
            ("90s", Some(90)),
            ("2m", Some(120)),
            ("36H", Some(36 * 3600)),
            ("7d", Some(7 * 86_400)),
            ("d", None),
            ("7 days", None),
            ("1w", None),
            ("-5s", None),
            ("999999999999999999d", None),
        ] {
            assert_eq!(parse_duration(v), want.map(Duration::from_secs), "{v}");
        }
        assert_eq!(show_size(256 << 10), "256K");
        assert_eq!(show_size(3 << 30), "3G");
        assert_eq!(show_size(1000), "1000");
        assert_eq!(show_size(0), "0");
        assert_eq!(show_duration(Duration::from_secs(604_800)), "7d");
        assert_eq!(show_duration(Duration::from_secs(90)), "90s");
        assert_eq!(show_duration(Duration::from_secs(7200)), "2h");
        assert_eq!(show_duration(Duration::ZERO), "0s");
    }

    #[test]
    fn paths_are_normalized_once() {
        for (p, want) in [
            ("/a/b/../c", "/a/c"),
            ("a/./b/", "a/b"),
            ("../x", "../x"),
            ("a/../../x", "../x"),
            ("/../x", "/x"),
            ("./", "."),
        ] {
            assert_eq!(normalize(Path::new(p)), Path::new(want), "{p}");
        }
        let c = parse("[main]\nlogdir = /var/log/../log/./loghogd\n").unwrap();
        assert_eq!(c.main.logdir, Path::new("/var/log/loghogd"));
    }

    /// The README's development config (`-c etc/dev/loghogd.conf`) and the
    /// facilities file it names parse; nothing more is checked, since both
    /// are there to be edited (a new facility, another port).
    #[test]
    fn the_dev_config_parses() {
        let path = Path::new("etc/dev/loghogd.conf");
        let c = Config::load(path, &Overrides::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        c.load_facilities()
            .unwrap_or_else(|e| panic!("{}: {e}", c.main.facilities_config.display()));
    }

    #[test]
    fn the_reference_config_parses() {
        let text = include_str!("../../etc/loghogd.conf");
        let c = parse(text).unwrap();
        assert_eq!(c.main.logdir, Path::new("/var/log/loghogd"));
        assert_eq!(c.server.listen, [sa("127.0.0.1:5566")]);
    }
}
