//! Wiring: load the config, bind, drop privileges, start readers and
//! writers, then serve until a signal says stop.
//!
//! Signals (SPEC §8): SIGHUP reloads facilities.conf (and TLS certificates)
//! and reopens files, keeping the old config if the new one is broken;
//! SIGTERM/SIGINT stop accepting, drain what peers already sent, flush and
//! sync every file, remove the pid file. SIGUSR1 logs the counters.
//! The only module that uses `anyhow`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::Local;
use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::cli::Args;
use crate::config::{Config, ConfigError, FacilityDb};
use crate::processor::Pipeline;
use crate::server::{self, Listeners};
use crate::stats::{RateLimit, Stats};
use crate::writer::{path, WriterCtx, Writers};

/// Exit status for configuration errors (sysexits EX_CONFIG).
pub const EX_CONFIG: u8 = 78;

/// How long shutdown waits for connections to drain, then for writers to
/// flush, before giving up on the stragglers.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(20);

/// How long shutdown lets running backup compressions finish; an abandoned
/// one leaves its backup uncompressed, and the next start compresses it.
const COMPRESS_GRACE: Duration = Duration::from_secs(5);

/// Concurrent backup compressions (each uses one core).
const COMPRESSION_JOBS: usize = 1;

/// Rotation state file in `workdir`.
const STATE_FILE: &str = "rotation-state.json";

/// Runs the daemon for parsed flags; the whole life of the process.
pub fn main(args: Args) -> ExitCode {
    match run(args) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("loghogd: {err:#}");
            error!("{err:#}");
            ExitCode::FAILURE
        }
    }
}

fn config_error(err: &ConfigError) -> ExitCode {
    eprintln!("loghogd: config error: {err}");
    ExitCode::from(EX_CONFIG)
}

fn run(args: Args) -> anyhow::Result<ExitCode> {
    let overrides = args.overrides();
    let config = match Config::load(&args.config, &overrides) {
        Ok(c) => c,
        Err(e) => return Ok(config_error(&e)),
    };
    let facilities = match FacilityDb::load(&config.main.facilities_config) {
        Ok(f) => f,
        Err(e) => return Ok(config_error(&e)),
    };
    let tls = match tls_setup(&config) {
        Ok(t) => t,
        Err(e) => return Ok(config_error(&e)),
    };
    if args.check_config {
        print_check(&config, &facilities);
        return Ok(ExitCode::SUCCESS);
    }

    let log_sink = crate::logging::init(
        config.log.level,
        config.log.filename.as_deref(),
        !config.main.daemon,
    )
    .with_context(|| {
        let f = config.log.filename.as_deref().unwrap_or(Path::new("-"));
        format!("cannot open the daemon log {}", f.display())
    })?;
    raise_fd_limit();
    for dir in [
        &config.main.logdir,
        &config.main.workdir,
        &config.main.rundir,
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let listeners = server::bind(&config.server.listen, &config.server.listen_ssl)?;
    if let Some(user) = &config.main.user {
        crate::privileges::drop_to(
            user,
            &[
                &config.main.logdir,
                &config.main.workdir,
                &config.main.rundir,
            ],
        )
        .with_context(|| format!("cannot switch to user {user}"))?;
    }
    if config.main.daemon {
        crate::privileges::daemonize().context("cannot fork into the background")?;
    }
    let pidfile = PidFile::create(&config.main.pidfile)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("loghogd")
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(serve(args, config, facilities, listeners, tls, log_sink));
    // Blocking work (compressions) that outlived the grace period is
    // abandoned here; its backup stays uncompressed and start-up redoes it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(pidfile);
    result.map(|()| ExitCode::SUCCESS)
}

async fn serve(
    args: Args,
    config: Config,
    facilities: FacilityDb,
    listeners: Listeners,
    tls: Option<server::tcp::TlsSetup>,
    log_sink: Option<crate::logging::LogSink>,
) -> anyhow::Result<()> {
    let mut signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])
        .context("cannot install signal handlers")?;
    let stats = Arc::new(Stats::default());
    let state_path = config.main.workdir.join(STATE_FILE);
    let state = crate::rotation::StateDb::load(&state_path)
        .with_context(|| format!("cannot read rotation state {}", state_path.display()))?;
    let state = Arc::new(std::sync::Mutex::new(state));
    let compress_tracker = TaskTracker::new();
    let (fac_tx, fac_rx) = watch::channel(Arc::new(facilities));
    let writer_tracker = TaskTracker::new();
    let writers = Writers::new(WriterCtx {
        stats: stats.clone(),
        limiter: RateLimit::new(10, Duration::from_secs(10)),
        compressor: config.compressor.clone(),
        tracker: writer_tracker.clone(),
        state: state.clone(),
        compressions: Arc::new(tokio::sync::Semaphore::new(COMPRESSION_JOBS)),
        compress_tracker: compress_tracker.clone(),
        new_file: Arc::new(tokio::sync::Notify::new()),
    });
    let pipeline = Arc::new(Pipeline {
        writers,
        stats: stats.clone(),
        limiter: RateLimit::new(20, Duration::from_secs(10)),
        max_msg_size: config.server.max_msg_size,
        logdir: config.main.logdir.clone(),
        file_ext: if config.compressor.compress_on_write {
            "log.gz"
        } else {
            "log"
        },
        facilities: fac_rx,
        open_streams: Default::default(),
    });
    let token = CancellationToken::new();
    let readers = TaskTracker::new();
    // Backups a crash left uncompressed (or half-compressed) are listed now,
    // before any writer or rotation runs, and finished in the background:
    // this run's own backups are never in the list.
    let leftovers = crate::rotation::recover::plan(&config.main.logdir);
    match leftovers {
        Ok(plan) if !plan.is_empty() => {
            let c = config.compressor.clone();
            let logdir = config.main.logdir.clone();
            compress_tracker.spawn_blocking(move || {
                plan.run(&logdir, c.format, c.level, c.compress_on_write);
            });
        }
        Ok(_) => {}
        Err(err) => warn!(cause = %err, "cannot list backups left by a crash"),
    }
    if let Some(sink) = log_sink {
        tokio::spawn(crate::logging::rotate_loop(
            sink,
            config.log.when.clone(),
            config.log.backup_count,
            config.compressor.clone(),
            state.clone(),
            token.clone(),
        ));
    }
    let scheduler = tokio::spawn(crate::rotation::scheduler::run(
        pipeline.clone(),
        token.clone(),
    ));
    server::run(
        listeners,
        pipeline.clone(),
        tls.clone(),
        token.clone(),
        &readers,
    )
    .context("cannot start the listeners")?;
    info!(facilities = fac_tx.borrow().iter().count(), "loghogd ready");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);

    while let Some(sig) = signals.next().await {
        match sig {
            SIGHUP => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                reload(&args, &config, &fac_tx, tls.as_ref());
                pipeline.writers.reopen_all().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
            }
            SIGUSR1 => info!("stats {}", stats.summary()),
            _ => {
                info!(signal = sig, "stopping");
                break;
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    token.cancel();
    readers.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, readers.wait())
        .await
        .is_err()
    {
        warn!("connections still open after the grace period; closing them");
    }
    let _ = scheduler.await;
    pipeline.writers.close();
    drop(pipeline);
    writer_tracker.close();
    if tokio::time::timeout(SHUTDOWN_GRACE, writer_tracker.wait())
        .await
        .is_err()
    {
        error!("writers did not finish within the grace period");
    }
    // Start times of files first written while draining.
    crate::rotation::scheduler::save_state(state).await;
    compress_tracker.close();
    if tokio::time::timeout(COMPRESS_GRACE, compress_tracker.wait())
        .await
        .is_err()
    {
        warn!("backup compression still running; it is redone at the next start");
    }
    info!("stats {}", stats.summary());
    Ok(())
}

/// Re-reads facilities.conf (and TLS files); a broken file keeps the old.
fn reload(
    args: &Args,
    config: &Config,
    fac_tx: &watch::Sender<Arc<FacilityDb>>,
    tls: Option<&server::tcp::TlsSetup>,
) {
    let _ = args;
    match FacilityDb::load(&config.main.facilities_config) {
        Ok(db) => {
            let n = db.iter().count();
            fac_tx.send_replace(Arc::new(db));
            info!(facilities = n, "facilities reloaded");
        }
        Err(err) => error!("reload failed, keeping the old facilities: {err}"),
    }
    if let Some(tls) = tls {
        reload_tls(config, tls);
    }
}

/// Loads the TLS server config when TLS listeners are configured.
fn tls_setup(config: &Config) -> Result<Option<server::tcp::TlsSetup>, ConfigError> {
    if config.server.listen_ssl.is_empty() {
        return Ok(None);
    }
    let cfg = load_tls(config)?;
    Ok(Some(server::tcp::TlsSetup {
        acceptor: Arc::new(std::sync::RwLock::new(tokio_rustls::TlsAcceptor::from(cfg))),
    }))
}

fn load_tls(config: &Config) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
    let missing = |key: &str| {
        ConfigError {
        file: config.path.clone(),
        place: format!("[server] {key}"),
        problem: format!("TLS listeners are configured but {key} is not set; set it or empty listen_ipv4_ssl/listen_ipv6_ssl"),
    }
    };
    let pem = config
        .server
        .pemfile
        .as_deref()
        .ok_or_else(|| missing("pemfile"))?;
    let ca = config
        .server
        .cacert
        .as_deref()
        .ok_or_else(|| missing("cacert"))?;
    crate::tls::load_server_config(pem, ca).map_err(|e| ConfigError {
        file: config.path.clone(),
        place: "[server] pemfile/cacert".into(),
        problem: e.to_string(),
    })
}

/// Swaps in freshly read certificates; broken ones keep the old.
fn reload_tls(config: &Config, tls: &server::tcp::TlsSetup) {
    match load_tls(config) {
        Ok(cfg) => {
            *tls.acceptor.write().unwrap_or_else(|e| e.into_inner()) =
                tokio_rustls::TlsAcceptor::from(cfg);
            info!("tls certificates reloaded");
        }
        Err(err) => error!("tls reload failed, keeping the old certificates: {err}"),
    }
}

/// Prints every facility with its file, rule and next three rotations.
fn print_check(config: &Config, facilities: &FacilityDb) {
    println!("{}: ok", config.path.display());
    println!("{}: ok", config.main.facilities_config.display());
    let ext = if config.compressor.compress_on_write {
        "log.gz"
    } else {
        "log"
    };
    let now = Local::now();
    for f in facilities.iter() {
        let host = f.file_per_host.then_some("{hostname}");
        let file = path::file_path(&config.main.logdir, f, None, ext);
        let file = match host {
            Some(h) => file.with_file_name(format!("{h}-{}.{ext}", f.file_stem())),
            None => file,
        };
        let mut next = Vec::new();
        let mut t = now;
        for _ in 0..3 {
            match f.rotate.next_after(&t) {
                Some(n) => {
                    next.push(n.to_rfc3339_opts(chrono::SecondsFormat::Secs, false));
                    t = n;
                }
                None => break,
            }
        }
        let size = f
            .max_size
            .map(|s| format!(" max_size={s}"))
            .unwrap_or_default();
        println!(
            "[{}] file={} rotate={}{} backup_count={} next={}",
            f.section_name(),
            file.display(),
            f.rotate.describe(),
            size,
            f.backup_count,
            if next.is_empty() {
                "-".to_string()
            } else {
                next.join(",")
            }
        );
    }
}

/// Raises the soft open-files limit to the hard one: every connection and
/// every open log file is a descriptor, and 1024 is low for a log server.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read/write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

/// The pid file: written at start, removed when dropped.
struct PidFile {
    path: PathBuf,
}

impl PidFile {
    fn create(path: &Path) -> anyhow::Result<PidFile> {
        if let Ok(old) = std::fs::read_to_string(path) {
            if let Ok(pid) = old.trim().parse::<i32>() {
                // SAFETY: kill with signal 0 only checks that the process exists.
                let alive = pid > 0 && unsafe { libc::kill(pid, 0) } == 0;
                if alive && pid != std::process::id() as i32 {
                    anyhow::bail!(
                        "pid file {} names a running process ({pid}); is loghogd already running?",
                        path.display()
                    );
                }
            }
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create {}", dir.display()))?;
        }
        std::fs::write(path, format!("{}\n", std::process::id()))
            .with_context(|| format!("cannot write pid file {}", path.display()))?;
        Ok(PidFile {
            path: path.to_path_buf(),
        })
    }
}

impl Drop for PidFile {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.path) {
            warn!(path = %self.path.display(), cause = %e, "cannot remove pid file");
        }
    }
}
