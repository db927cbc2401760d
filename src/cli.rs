//! Command-line flags (SPEC §7), parsed with clap. Parsing only: the daemon
//! turns these into config [`Overrides`](crate::config::Overrides).

use std::path::PathBuf;

use clap::Parser;

use crate::config::Overrides;

/// loghogd: receives LogHog messages over TCP, UDP and TLS and writes,
/// rotates and compresses per-facility log files.
#[derive(Debug, Parser)]
#[command(name = "loghogd", version, about, long_about = None)]
pub struct Args {
    /// Path of loghogd.conf.
    #[arg(
        short = 'c',
        long = "config",
        value_name = "PATH",
        default_value = "/etc/loghogd/loghogd.conf"
    )]
    pub config: PathBuf,
    /// Path of facilities.conf (overrides [main] facilities_config).
    #[arg(short = 'F', long = "facilities-config", value_name = "PATH")]
    pub facilities_config: Option<PathBuf>,
    /// Validate both files, print every facility with its file, rule and next rotations, and exit.
    #[arg(long = "check-config")]
    pub check_config: bool,
    /// With or without --check-config: also connect to the [forward] and [consume] brokers, check JetStream, the stream and the lease bucket, and exit 69 if one is unreachable.
    #[arg(long = "check-broker")]
    pub check_broker: bool,
    /// Treat config warnings (unknown sections and keys, an unusable TZ) as errors (exit 78).
    #[arg(long = "strict")]
    pub strict: bool,
    /// Fork into the background (overrides [main] daemon).
    #[arg(short = 'd', long = "daemon")]
    pub daemon: bool,
    /// Pid file (overrides [main] pidfile).
    #[arg(short = 'p', long = "pid", value_name = "PATH")]
    pub pidfile: Option<PathBuf>,
    /// The daemon's own log file (overrides [log] filename).
    #[arg(short = 'l', long = "log", value_name = "PATH")]
    pub log: Option<PathBuf>,
    /// Where application logs go (overrides [main] logdir).
    #[arg(short = 'L', long = "log-dir", value_name = "PATH")]
    pub log_dir: Option<PathBuf>,
    /// State directory (overrides [main] workdir).
    #[arg(long = "work-dir", value_name = "PATH")]
    pub work_dir: Option<PathBuf>,
    /// Runtime directory (overrides [main] rundir).
    #[arg(long = "run-dir", value_name = "PATH")]
    pub run_dir: Option<PathBuf>,
    /// Drop privileges to this user after binding (overrides [main] user).
    #[arg(long = "user", value_name = "NAME")]
    pub user: Option<String>,
}

impl Args {
    /// The command-line values that override the config file.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            facilities_config: self.facilities_config.clone(),
            pidfile: self.pidfile.clone(),
            log_filename: self.log.clone(),
            logdir: self.log_dir.clone(),
            workdir: self.work_dir.clone(),
            rundir: self.run_dir.clone(),
            user: self.user.clone(),
            daemon: self.daemon,
        }
    }
}
