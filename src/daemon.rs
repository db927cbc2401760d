//! The daemon: [`run`] wires inputs → router → outputs on already-bound
//! listeners and serves until a shutdown future resolves (mini-redis'
//! `server::run`); [`main`] is the binary's wiring around it: load the
//! config, bind, drop privileges, turn signals into [`Remote`] requests.
//!
//! Signals (SPEC §8): SIGHUP reloads facilities.conf (and TLS certificates
//! and the `[http]` tokens file) and reopens files, keeping the old config if the new one is broken;
//! SIGTERM/SIGINT stop accepting, drain what peers already sent, flush and
//! sync every file, remove the pid file. SIGUSR1 logs the counters.
//! The only module that uses `anyhow`.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use futures_util::StreamExt;
use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM, SIGUSR1};
use tokio::sync::{mpsc, oneshot, watch, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

use crate::cli::Args;
use crate::clock::Clock;
use crate::config::{Config, ConfigError, FacilityDb};
use crate::input::tls::TlsSetup;
use crate::input::{self, InputCtx, Listeners};
use crate::output::file::{open::OpenFiles, path, scheduler, WriterCtx, Writers};
use crate::output::Outputs;
use crate::ratelimit::RateLimit;
use crate::router::RouterCtx;
use crate::stats::Stats;

/// Exit status for configuration errors (sysexits EX_CONFIG).
pub const EX_CONFIG: u8 = 78;
/// sysexits(3) `EX_UNAVAILABLE`: `--check-broker` could not reach a broker.
pub const EX_UNAVAILABLE: u8 = 69;

/// Rotation state file in `workdir`.
const STATE_FILE: &str = "rotation-state.json";

/// Runs the daemon for parsed flags; the whole life of the process.
pub fn main(args: Args) -> ExitCode {
    // Before anything reads the local time zone, and while the process
    // still has one thread.
    let tz = crate::tz::check_and_fix();
    match start(args, tz) {
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

fn start(args: Args, tz: Option<crate::tz::TzProblem>) -> anyhow::Result<ExitCode> {
    let overrides = args.overrides();
    let config = match Config::load(&args.config, &overrides) {
        Ok(c) => c,
        Err(e) => return Ok(config_error(&e)),
    };
    let facilities = match FacilityDb::load(&config.main.facilities_config) {
        Ok(f) => f,
        Err(e) => return Ok(config_error(&e)),
    };
    // Checked here so a bad certificate is a config error (exit 78); `run`
    // loads them again for itself.
    if let Err(e) = tls_setup(&config)
        .and_then(|_| syslog_tls_setup(&config))
        .and_then(|_| http_setup(&config))
    {
        return Ok(config_error(&e));
    }
    if let Err(e) = preflight(&config) {
        return Ok(config_error(&e));
    }
    let mut warnings: Vec<String> = config
        .warnings
        .iter()
        .chain(&facilities.warnings)
        .map(ToString::to_string)
        .collect();
    warnings.extend(tz.map(|p| p.to_string()));
    if args.check_config || args.check_broker || args.strict {
        for w in &warnings {
            eprintln!("loghogd: warning: {w}");
        }
        if args.strict && !warnings.is_empty() {
            eprintln!(
                "loghogd: config error: {} warning(s), which --strict makes errors",
                warnings.len()
            );
            return Ok(ExitCode::from(EX_CONFIG));
        }
    }
    if args.check_config || args.check_broker {
        print_check(&config, &facilities);
        if args.check_broker && !crate::broker::check::check(&config) {
            return Ok(ExitCode::from(EX_UNAVAILABLE));
        }
        return Ok(ExitCode::SUCCESS);
    }

    let log_sink = match crate::logging::init(
        config.log.level,
        config.log.filename.as_deref(),
        !config.main.daemon,
    ) {
        Ok(sink) => sink,
        Err(e) => {
            let f = config.log.filename.as_deref().unwrap_or(Path::new("-"));
            return Ok(config_error(&ConfigError::new(
                &config.path,
                "[log] filename",
                format!(
                    "cannot open the daemon log {} ({e}); give a file in a writable directory, or remove the key to log to stderr",
                    f.display()
                ),
            )));
        }
    };
    for w in &warnings {
        warn!("config: {w}");
    }
    raise_fd_limit();
    for dir in [
        &config.main.logdir,
        &config.main.workdir,
        &config.main.rundir,
    ] {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let mut listeners = match input::bind(&config.server.listen, &config.server.listen_ssl) {
        Ok(l) => l,
        Err(e) => {
            return Ok(config_error(&ConfigError::new(
                &config.path,
                "[server] listen_ipv4/listen_ipv6/listen_ipv4_ssl/listen_ipv6_ssl",
                format!("{e}; listen on an address of this host and a port no other program holds"),
            )))
        }
    };
    listeners.syslog = match input::syslog::bind_syslog(&config.syslog) {
        Ok(l) => l,
        Err(e) => {
            return Ok(config_error(&ConfigError::new(
                &config.path,
                "[syslog] listen_udp/listen_tcp/listen_tls/unix_socket",
                format!("{e}; listen on an address of this host and a port no other program holds (ports below 1024 and /dev/log need root)"),
            )))
        }
    };
    listeners.http = match input::http::bind_http(&config.http) {
        Ok(l) => l,
        Err(e) => {
            return Ok(config_error(&ConfigError::new(
                &config.path,
                "[http] listen",
                format!("{e}; listen on an address of this host and a port no other program holds"),
            )))
        }
    };
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
        // Opens, large writes, syncs and compressions: bounded, so a burst of
        // new files queues for threads instead of starting hundreds.
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .context("cannot start the async runtime")?;
    let result = runtime.block_on(async move {
        let signals = signal_hook_tokio::Signals::new([SIGHUP, SIGTERM, SIGINT, SIGUSR1])
            .context("cannot install signal handlers")?;
        let (remote, mut control) = control();
        control.log_sink = log_sink;
        let stop = forward_signals(signals, remote);
        run(config, facilities, listeners, control, stop).await
    });
    // Blocking work (compressions) that outlived the grace period is
    // abandoned here; its backup stays uncompressed and start-up redoes it.
    runtime.shutdown_timeout(Duration::from_secs(1));
    drop(pidfile);
    result.map(|()| ExitCode::SUCCESS)
}

/// Turns SIGHUP and SIGUSR1 into requests; resolves on SIGTERM or SIGINT.
async fn forward_signals(mut signals: signal_hook_tokio::Signals, remote: Remote) {
    while let Some(sig) = signals.next().await {
        match sig {
            // Not waited for: a reload in progress must not hold up a stop.
            SIGHUP => {
                let _ = remote.requests.send(Request::Reload(None)).await;
            }
            SIGUSR1 => {
                let _ = remote.requests.send(Request::LogStats).await;
            }
            _ => {
                info!(signal = sig, "stopping");
                return;
            }
        }
    }
}

/// What a caller can ask of a running daemon: the binary sends these on
/// SIGHUP and SIGUSR1, tests call them directly.
#[derive(Debug)]
enum Request {
    /// Re-read facilities.conf, the TLS files and the `[http]` tokens
    /// file, reopen every file; the reply (sent after all of it) says
    /// whether facilities.conf was taken.
    Reload(Option<oneshot::Sender<Result<(), String>>>),
    /// Log the counters.
    LogStats,
}

/// The caller's side of a running daemon (see [`control`]).
#[derive(Debug, Clone)]
pub struct Remote {
    requests: mpsc::Sender<Request>,
    /// The daemon's counters, live.
    pub stats: Arc<Stats>,
}

/// The daemon's side: what [`run`] takes besides its config and sockets.
#[derive(Debug)]
pub struct Control {
    requests: mpsc::Receiver<Request>,
    stats: Arc<Stats>,
    clock: Clock,
    log_sink: Option<crate::logging::LogSink>,
}

/// A connected pair: give the [`Control`] to [`run`], keep the [`Remote`].
pub fn control() -> (Remote, Control) {
    let (tx, rx) = mpsc::channel(8);
    let stats = Arc::new(Stats::default());
    (
        Remote {
            requests: tx,
            stats: stats.clone(),
        },
        Control {
            requests: rx,
            stats,
            clock: Clock::system(),
            log_sink: None,
        },
    )
}

// === impl Remote ===

impl Remote {
    /// Reloads as SIGHUP does and waits until it was applied.
    ///
    /// # Errors
    /// Why the new facilities.conf was refused (the old one stays), or that
    /// the daemon is gone.
    pub async fn reload(&self) -> Result<(), String> {
        let (tx, rx) = oneshot::channel();
        self.requests
            .send(Request::Reload(Some(tx)))
            .await
            .map_err(|_| "the daemon has stopped".to_string())?;
        rx.await
            .unwrap_or_else(|_| Err("the daemon has stopped".to_string()))
    }
}

// === impl Control ===

impl Control {
    /// Rotation reads `clock` instead of the system's (tests).
    pub fn with_clock(mut self, clock: Clock) -> Control {
        self.clock = clock;
        self
    }

    /// Rotates `path` as the daemon's own log per `[log] when` and
    /// `backup_count` (tests: the binary passes the sink tracing writes to).
    ///
    /// # Errors
    /// The file cannot be created or opened.
    pub fn with_own_log(mut self, path: &Path) -> std::io::Result<Control> {
        self.log_sink = Some(crate::logging::LogSink::open(path)?);
        Ok(self)
    }
}

/// Runs the daemon on already-bound `listeners` until `shutdown` resolves,
/// then stops as SIGTERM does: stop accepting, drain what peers already
/// sent, flush and sync every file, let compressions finish in time.
///
/// # Errors
/// The rotation state cannot be read, the TLS files cannot be loaded, or a
/// socket cannot be registered with the runtime.
pub async fn run(
    config: Config,
    facilities: FacilityDb,
    listeners: Listeners,
    control: Control,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let Control {
        mut requests,
        stats,
        clock,
        log_sink,
    } = control;
    let limits = config.limits.clone();
    let tls = tls_setup(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let syslog_tls = syslog_tls_setup(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let (http_tls, http_tokens) = http_setup(&config).map_err(|e| anyhow::anyhow!("{e}"))?;
    let state_path = config.main.workdir.join(STATE_FILE);
    let state = crate::rotation::StateDb::load(&state_path)
        .with_context(|| format!("cannot read rotation state {}", state_path.display()))?;
    let state = Arc::new(std::sync::Mutex::new(state));
    let compress_tracker = TaskTracker::new();
    let compressions = Arc::new(Semaphore::new(limits.compression_jobs.max(1)));
    let (fac_tx, fac_rx) = watch::channel(Arc::new(facilities));
    let writer_tracker = TaskTracker::new();
    let writers = Arc::new(Writers::new(WriterCtx {
        logdir: config.main.logdir.clone(),
        stats: stats.clone(),
        limiter: RateLimit::new(10, Duration::from_secs(10)),
        compressor: config.compressor.clone(),
        tracker: writer_tracker.clone(),
        state: state.clone(),
        compressions: compressions.clone(),
        compress_tracker: compress_tracker.clone(),
        new_file: Arc::new(tokio::sync::Notify::new()),
        clock: clock.clone(),
        open_files: OpenFiles::new(open_files_budget(limits.max_open_files), stats.clone()),
        max_files_per_app: limits.max_files_per_app,
        file_idle: limits.file_idle,
        registry: Default::default(),
    }));
    // Issue 16: the broker relay, for the facilities that forward.
    let (forward, relay) = match &config.forward {
        Some(section) => {
            let (f, r) =
                crate::output::forward::start(section, &config.main.workdir, stats.clone())
                    .await
                    .context("cannot start the [forward] output")?;
            (Some(f), Some(r))
        }
        None => (None, None),
    };
    let router = Arc::new(RouterCtx {
        outputs: Outputs {
            files: writers.clone(),
            forward,
        },
        stats: stats.clone(),
        limiter: RateLimit::new(20, Duration::from_secs(10)),
        facilities: fac_rx.clone(),
    });
    // Issue 16: the broker consumer writes to this daemon's files only.
    let consume_stop = CancellationToken::new();
    let consumers = TaskTracker::new();
    if let Some(section) = &config.consume {
        let local = Arc::new(RouterCtx {
            outputs: Outputs {
                files: writers.clone(),
                forward: None,
            },
            stats: stats.clone(),
            limiter: RateLimit::new(20, Duration::from_secs(10)),
            facilities: fac_rx.clone(),
        });
        crate::input::consume::start(
            section,
            local,
            state.clone(),
            stats.clone(),
            consume_stop.clone(),
            &consumers,
        )
        .await
        .context("cannot start the [consume] input")?;
    }
    let inputs = Arc::new(InputCtx::new(
        router,
        config.server.max_msg_size,
        limits.clone(),
    ));
    let token = CancellationToken::new();
    let readers = TaskTracker::new();
    // Backups a crash left uncompressed (or half-compressed) are listed now,
    // before any writer or rotation runs, and finished in the background:
    // this run's own backups are never in the list.
    match crate::rotation::recover::plan(&config.main.logdir) {
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
        let own_log = crate::logging::OwnLog {
            sink,
            when: config.log.when.clone(),
            backup_count: config.log.backup_count,
            compress: (config.compressor.format, config.compressor.level),
            state: state.clone(),
            compressions: compressions.clone(),
            compress_tracker: compress_tracker.clone(),
            clock: clock.clone(),
        };
        tokio::spawn(own_log.rotate_loop(token.clone()));
    }
    tokio::spawn(housekeeping(
        inputs.clone(),
        writers.clone(),
        stats.clone(),
        token.clone(),
    ));
    let metrics = crate::metrics::router(
        stats.clone(),
        crate::metrics::MetricsSources {
            facilities: fac_rx.clone(),
        },
    );
    let viewer_facilities = fac_rx.clone();
    let scheduler = tokio::spawn(scheduler::run(writers.clone(), fac_rx, token.clone()));
    let mut listeners = listeners;
    let http_listeners = std::mem::take(&mut listeners.http);
    if !http_listeners.is_empty() {
        let http_state = Arc::new(input::http::HttpState::new(
            inputs.router.clone(),
            &config.http,
            http_tokens.clone(),
        ));
        let viewer = config.viewer.enabled.then(|| {
            crate::viewer::router(Arc::new(crate::viewer::Viewer::new(
                crate::viewer::Files {
                    logdir: config.main.logdir.clone(),
                    state: state.clone(),
                },
                viewer_facilities,
                config.viewer.clone(),
                http_state.clone(),
            )))
        });
        input::http::run(
            http_listeners,
            http_state,
            input::http::Fragments { metrics, viewer },
            &config.http,
            http_tls.clone(),
            token.clone(),
            &readers,
        )
        .context("cannot start the http listeners")?;
    }
    input::run(
        listeners,
        inputs.clone(),
        tls.clone(),
        syslog_tls.clone(),
        token.clone(),
        &readers,
    )
    .context("cannot start the listeners")?;
    stats.listening.store(1, Relaxed);
    stats.config_loaded_seconds.store(unix_now(), Relaxed);
    info!(facilities = fac_tx.borrow().iter().count(), "loghogd ready");
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
    if std::env::var_os("NOTIFY_SOCKET").is_some() {
        tokio::spawn(notify_status(stats.clone(), token.clone()));
    }

    tokio::pin!(shutdown);
    loop {
        let req = tokio::select! {
            biased;
            () = &mut shutdown => break,
            req = requests.recv() => req,
        };
        match req {
            Some(Request::Reload(reply)) => {
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Reloading]);
                let res = reload(
                    &config,
                    &fac_tx,
                    tls.as_ref(),
                    syslog_tls.as_ref(),
                    http_tls.as_ref(),
                )
                .await;
                if let (Some(slot), Some(path)) = (&http_tokens, &config.http.tokens_file) {
                    reload_tokens(path, slot).await;
                }
                count_reload(&stats, &fac_tx, res.is_ok());
                writers.reopen_all().await;
                let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Ready]);
                if let Some(reply) = reply {
                    let _ = reply.send(res);
                }
            }
            Some(Request::LogStats) => info!("stats {}", stats.summary()),
            // Every Remote is gone: nothing can ask for anything any more,
            // but the daemon still runs until `shutdown`.
            None => {
                shutdown.as_mut().await;
                break;
            }
        }
    }
    let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Stopping]);
    stats.listening.store(0, Relaxed);
    // One grace period for the whole stop: half of it for connections to
    // drain what their peers already sent, the rest for every file to be
    // written and synced.
    let deadline = tokio::time::Instant::now() + limits.shutdown_grace;
    token.cancel();
    readers.close();
    if tokio::time::timeout(limits.shutdown_grace / 2, readers.wait())
        .await
        .is_err()
    {
        warn!("connections still sending after half the grace period; they are read no further and closed");
        inputs.stop_reading.cancel();
        if tokio::time::timeout_at(deadline, readers.wait())
            .await
            .is_err()
        {
            error!("connections did not close within the grace period");
        }
    }
    // The consumers finish their cycle (written, synced, recorded,
    // acknowledged) and hand their leases back.
    consume_stop.cancel();
    consumers.close();
    if tokio::time::timeout_at(deadline, consumers.wait())
        .await
        .is_err()
    {
        warn!("broker consumers did not stop within the grace period");
    }
    if let Some(relay) = relay {
        relay.stop(deadline).await;
    }
    let _ = scheduler.await;
    writers.close();
    drop(inputs);
    writer_tracker.close();
    if tokio::time::timeout_at(deadline, writer_tracker.wait())
        .await
        .is_err()
    {
        error!("writers did not finish within the grace period");
    }
    // Start times of files first written while draining.
    scheduler::save_state(state).await;
    compress_tracker.close();
    if tokio::time::timeout(limits.compress_grace, compress_tracker.wait())
        .await
        .is_err()
    {
        warn!("backup compression still running; it is redone at the next start");
    }
    info!("stats {}", stats.summary());
    Ok(())
}

/// Under systemd, tells the manager the write rate every 10 s (the `Status:`
/// line of `systemctl status loghogd`), until `token` is cancelled.
async fn notify_status(stats: Arc<Stats>, token: CancellationToken) {
    const EVERY: Duration = Duration::from_secs(10);
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + EVERY, EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last = (
        tokio::time::Instant::now(),
        stats.written.load(std::sync::atomic::Ordering::Relaxed),
    );
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = token.cancelled() => return,
        }
        let now = (
            tokio::time::Instant::now(),
            stats.written.load(std::sync::atomic::Ordering::Relaxed),
        );
        let secs = now.0.duration_since(last.0).as_secs_f64().max(0.001);
        let rate = now.1.saturating_sub(last.1) as f64 / secs;
        let status = format!("{rate:.0} msg/s written, {} in total", now.1);
        let _ = sd_notify::notify(false, &[sd_notify::NotifyState::Status(&status)]);
        last = now;
    }
}

/// How long a reload may take to read facilities.conf before it is given
/// up (the file on a hung network mount, say); the old facilities stay.
const RELOAD_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Re-reads facilities.conf (and TLS files); a broken file keeps the old.
/// The file is read on a blocking thread under a timeout, so a slow or
/// strange file can never hold up the loop that also handles the stop.
async fn reload(
    config: &Config,
    fac_tx: &watch::Sender<Arc<FacilityDb>>,
    tls: Option<&TlsSetup>,
    syslog_tls: Option<&TlsSetup>,
    http_tls: Option<&TlsSetup>,
) -> Result<(), String> {
    let path = config.main.facilities_config.clone();
    let read = tokio::task::spawn_blocking(move || FacilityDb::load(&path));
    let loaded = match tokio::time::timeout(RELOAD_READ_TIMEOUT, read).await {
        Ok(Ok(res)) => res.map_err(|e| e.to_string()),
        Ok(Err(join)) => Err(format!("reading facilities.conf failed: {join}")),
        Err(_) => Err(format!(
            "{}: not read within {RELOAD_READ_TIMEOUT:?}",
            config.main.facilities_config.display()
        )),
    };
    let res = match loaded {
        Ok(db) => {
            for w in &db.warnings {
                warn!("config: {w}");
            }
            let n = db.iter().count();
            fac_tx.send_replace(Arc::new(db));
            info!(facilities = n, "facilities reloaded");
            Ok(())
        }
        Err(err) => {
            error!("reload failed, keeping the old facilities: {err}");
            Err(err)
        }
    };
    if let Some(tls) = tls {
        reload_tls(config, tls, false);
    }
    if let Some(tls) = syslog_tls {
        reload_tls(config, tls, config.syslog.tls_allow_anonymous);
    }
    if let Some(tls) = http_tls {
        reload_tls(config, tls, config.http.tokens_file.is_some());
    }
    res
}

/// Re-reads the `[http]` tokens file into `slot` (a blocking read under
/// the reload timeout, as for facilities.conf); a broken or unreadable file
/// is refused with one line naming the file, the line and the fix, and the
/// old tokens stay. Applied, it holds for the next request.
async fn reload_tokens(path: &Path, slot: &input::http::TokenSlot) {
    let p = path.to_path_buf();
    let read = tokio::task::spawn_blocking(move || input::http::Tokens::load(&p));
    let loaded = match tokio::time::timeout(RELOAD_READ_TIMEOUT, read).await {
        Ok(Ok(res)) => res.map_err(|e| e.to_string()),
        Ok(Err(join)) => Err(format!("reading {} failed: {join}", path.display())),
        Err(_) => Err(format!(
            "{}: not read within {RELOAD_READ_TIMEOUT:?}",
            path.display()
        )),
    };
    match loaded {
        Ok(tokens) => {
            let (n, certs) = tokens.counts();
            slot.replace(tokens);
            info!(tokens = n, certificates = certs, "http tokens reloaded");
        }
        Err(err) => error!("http tokens reload failed, keeping the old tokens: {err}"),
    }
}

/// Counts a reload for the metrics; an applied one also drops the
/// per-facility counters of sections it removed (bounded labels).
fn count_reload(stats: &Stats, fac_tx: &watch::Sender<Arc<FacilityDb>>, applied: bool) {
    if !applied {
        stats.reload_failures.fetch_add(1, Relaxed);
        return;
    }
    stats.reloads.fetch_add(1, Relaxed);
    stats.config_loaded_seconds.store(unix_now(), Relaxed);
    let db = fac_tx.borrow().clone();
    let sections: std::collections::HashSet<String> = db.iter().map(|f| f.section_name()).collect();
    stats.facilities.retain(|s| sections.contains(s));
}

/// Seconds since the UNIX epoch (0 for a clock before it).
fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Loads the TLS server config when TLS listeners are configured.
fn tls_setup(config: &Config) -> Result<Option<TlsSetup>, ConfigError> {
    if config.server.listen_ssl.is_empty() {
        return Ok(None);
    }
    Ok(Some(TlsSetup::new(load_tls(config, false)?)))
}

/// The `[http]` listener's TLS config (`tls = yes`: the `[server]`
/// certificates; clients without a certificate are let through to token
/// authentication when there is a `tokens_file`) and its tokens, in the
/// slot a reload swaps.
fn http_setup(
    config: &Config,
) -> Result<(Option<TlsSetup>, Option<input::http::TokenSlot>), ConfigError> {
    let http = &config.http;
    if !http.is_enabled() {
        return Ok((None, None));
    }
    let tls = if http.tls {
        Some(TlsSetup::new(load_tls(config, http.tokens_file.is_some())?))
    } else {
        None
    };
    let tokens = http
        .tokens_file
        .as_deref()
        .map(input::http::Tokens::load)
        .transpose()?
        .map(input::http::TokenSlot::new);
    Ok((tls, tokens))
}

/// Loads the syslog TLS port's server config (`[syslog] listen_tls`): the
/// same certificates, and clients without one when `tls_allow_anonymous`.
fn syslog_tls_setup(config: &Config) -> Result<Option<TlsSetup>, ConfigError> {
    if config.syslog.listen_tls.is_empty() {
        return Ok(None);
    }
    Ok(Some(TlsSetup::new(load_tls(
        config,
        config.syslog.tls_allow_anonymous,
    )?)))
}

fn load_tls(config: &Config, anonymous: bool) -> Result<Arc<rustls::ServerConfig>, ConfigError> {
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
    crate::input::tls::load_server_config_with(pem, ca, anonymous).map_err(|e| ConfigError {
        file: config.path.clone(),
        place: "[server] pemfile/cacert".into(),
        problem: e.to_string(),
    })
}

/// Swaps in freshly read certificates; broken ones keep the old.
fn reload_tls(config: &Config, tls: &TlsSetup, anonymous: bool) {
    match load_tls(config, anonymous) {
        Ok(cfg) => {
            tls.replace(cfg);
            info!("tls certificates reloaded");
        }
        Err(err) => error!("tls reload failed, keeping the old certificates: {err}"),
    }
}

/// The start-up problems that come from the configuration and can be found
/// without side effects (so `--check-config` finds them too): an unknown
/// user, a directory path that is a file, a daemon log path that is a
/// directory, a listen address the host does not have.
fn preflight(config: &Config) -> Result<(), ConfigError> {
    let m = &config.main;
    if let Some(user) = &m.user {
        match nix::unistd::User::from_name(user) {
            Ok(Some(_)) => {}
            Ok(None) => {
                return Err(ConfigError::new(
                    &config.path,
                    "[main] user (or --user)",
                    format!("no such user \"{user}\"; create it (e.g. `adduser --system {user}`) or name an existing one"),
                ))
            }
            Err(e) => {
                return Err(ConfigError::new(
                    &config.path,
                    "[main] user (or --user)",
                    format!("cannot look up user \"{user}\": {e}"),
                ))
            }
        }
    }
    for (key, dir) in [
        ("[main] logdir (or -L)", &m.logdir),
        ("[main] workdir (or --work-dir)", &m.workdir),
        ("[main] rundir (or --run-dir)", &m.rundir),
    ] {
        if dir.exists() && !dir.is_dir() {
            return Err(ConfigError::new(
                &config.path,
                key,
                format!(
                    "{} exists and is not a directory; point it at a directory",
                    dir.display()
                ),
            ));
        }
    }
    // An address this host does not have: a bind to it on port 0 (no port
    // taken, the socket closed at once) says so without side effects.
    let syslog = &config.syslog;
    for addr in config
        .server
        .listen
        .iter()
        .chain(&config.server.listen_ssl)
        .chain(&syslog.listen_udp)
        .chain(&syslog.listen_tcp)
        .chain(&syslog.listen_tls)
    {
        let probe = std::net::SocketAddr::new(addr.ip(), 0);
        if let Err(e) = std::net::UdpSocket::bind(probe) {
            if e.raw_os_error() == Some(libc::EADDRNOTAVAIL) {
                return Err(ConfigError::new(
                    &config.path,
                    "[server] listen_ipv4/listen_ipv6/listen_ipv4_ssl/listen_ipv6_ssl or [syslog] listen_*",
                    format!("cannot listen on {addr}: {e}; listen on an address of this host"),
                ));
            }
        }
    }
    if let Some(f) = &config.log.filename {
        if f.is_dir() {
            return Err(ConfigError::new(
                &config.path,
                "[log] filename (or -l)",
                format!("{} is a directory; name a file in it", f.display()),
            ));
        }
    }
    Ok(())
}

/// Prints every facility with its file, rule and next three rotations,
/// then `[forward]` and `[consume]` when set.
fn print_check(config: &Config, facilities: &FacilityDb) {
    println!("{}: ok", config.path.display());
    println!("{}: ok", config.main.facilities_config.display());
    let ext = config.compressor.live_ext();
    let now = chrono::Local::now();
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
        // The syslog keys, only where they differ from the defaults.
        let mut syslog = String::new();
        if f.format != crate::output::file::format::LineFormat::Loghog {
            syslog.push_str(&format!(" format={}", f.format.as_str()));
        }
        if f.min_severity < 7 {
            let name = crate::record::SEVERITY_NAMES[usize::from(f.min_severity)];
            syslog.push_str(&format!(" min_severity={name}"));
        }
        if !f.syslog_tags.is_empty() {
            syslog.push_str(&format!(" syslog_tags={}", f.syslog_tags.join(",")));
        }
        if f.forward {
            syslog.push_str(" forward=yes");
        }
        if !f.syslog_facilities.is_empty() {
            let names: Vec<&str> = f
                .syslog_facilities
                .iter()
                .map(|c| crate::record::FACILITY_NAMES[usize::from(*c)])
                .collect();
            syslog.push_str(&format!(" syslog_facilities={}", names.join(",")));
        }
        println!(
            "[{}] file={} rotate={}{} backup_count={}{} next={}",
            f.section_name(),
            file.display(),
            f.rotate.describe(),
            size,
            f.backup_count,
            syslog,
            if next.is_empty() {
                "-".to_string()
            } else {
                next.join(",")
            }
        );
    }
    // The relay (issue 16): where records go and which facilities send
    // them; credential files by path only.
    if let Some(fw) = &config.forward {
        let forwarding: Vec<String> = facilities
            .iter()
            .filter(|f| f.forward)
            .map(|f| f.section_name())
            .collect();
        println!("{}", fw.describe(&forwarding));
    }
    if let Some(c) = &config.consume {
        println!("{}", c.describe());
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

/// How often [`housekeeping`] runs.
const HOUSEKEEPING_EVERY: Duration = Duration::from_secs(10);

/// Work no event triggers: the counts of warnings that rate limits held
/// back in a burst that then ended (else they would never be reported),
/// and giving memory back after many writers ended (a wave of transient
/// hosts leaves glibc's arenas holding what their tasks used).
async fn housekeeping(
    inputs: Arc<InputCtx>,
    writers: Arc<Writers>,
    stats: Arc<Stats>,
    token: CancellationToken,
) {
    let mut tick = tokio::time::interval(HOUSEKEEPING_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut writers_before = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = token.cancelled() => break,
        }
        for (what, n) in [
            ("peer", inputs.router.limiter.take_suppressed()),
            ("connection", inputs.conn_limiter.take_suppressed()),
            ("file", writers.ctx().limiter.take_suppressed()),
            (
                "symlink",
                crate::rotation::beneath::take_suppressed_refusals(),
            ),
        ] {
            if n > 0 {
                warn!(
                    suppressed = n,
                    kind = what,
                    "more warnings of this kind were suppressed by the rate limit"
                );
            }
        }
        let now = stats.writers.load(std::sync::atomic::Ordering::Relaxed);
        if writers_before.saturating_sub(now) >= 256 {
            trim_heap().await;
        }
        writers_before = now;
    }
}

/// Returns free heap memory to the system (glibc keeps freed memory in
/// its arenas; after thousands of writer tasks ended, that is most of it).
async fn trim_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists.
    let _ = tokio::task::spawn_blocking(|| unsafe { libc::malloc_trim(0) }).await;
}

/// Threads for blocking file work (tokio's default is 512).
const BLOCKING_THREADS: usize = 64;

/// `max_open_files`, held to a quarter of the descriptors the process may
/// have: the rest is for connections, the state file, compression and the
/// daemon's own log, so log files can never take the descriptors accepting
/// needs.
fn open_files_budget(configured: usize) -> usize {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit only writes the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 {
        usize::try_from(lim.rlim_cur).unwrap_or(usize::MAX)
    } else {
        1024
    };
    let budget = configured.min((soft / 4).max(16));
    if budget < configured {
        info!(
            max_open_files = configured,
            used = budget,
            nofile = soft,
            "max_open_files lowered to a quarter of the open-files limit (raise LimitNOFILE to use more)"
        );
    }
    budget
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
