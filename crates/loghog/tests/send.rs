//! `loghog-send` against the real daemon: with arguments, with standard
//! input (per line and `--multiline`), over TCP, UDP and TLS, signed and
//! compressed, and every failure exit (refused, TLS verification, name
//! resolution, usage); and, as this binary has no other client-side TLS,
//! that a `Logger` ignores what rustls logs on the client's own thread.
//!
//! Why here and not in the root package's tests/: cargo sets
//! `CARGO_BIN_EXE_loghog-send` (and builds that binary, fresh) only for
//! test targets of the package that owns it. The daemon runs in-process
//! through `loghogd::daemon::run` (a dev-dependency), on ephemeral ports, so
//! neither binary can be stale or missing whichever cargo command runs this.

use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DEADLINE: Duration = Duration::from_secs(30);

fn cert(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/certs")
        .join(name)
}

/// A daemon running in this process, with plain and TLS listeners.
struct Daemon {
    dir: tempfile::TempDir,
    addrs: Vec<(&'static str, SocketAddr)>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Daemon {
    fn start() -> Daemon {
        let dir = tempfile::Builder::new()
            .prefix("loghog-send-test-")
            .tempdir()
            .unwrap();
        let root = dir.path();
        std::fs::write(
            root.join("facilities.conf"),
            "[app]\nrotate = daily\nbackup_count = 3\n\n\
             [app:web]\nrotate = daily\nbackup_count = 3\n\n\
             [signed]\nrotate = daily\nbackup_count = 3\nsecret = from-a-file\n",
        )
        .unwrap();
        std::fs::write(
            root.join("loghogd.conf"),
            format!(
                "[main]\nlogdir = log\nworkdir = lib\nrundir = run\nfacilities_config = facilities.conf\n\
                 [server]\nlisten_ipv4 = 127.0.0.1:0\nlisten_ipv6 =\n\
                 listen_ipv4_ssl = 127.0.0.1:0\npemfile = {}\ncacert = {}\n",
                cert("loghog-server.pem").display(),
                cert("loghog-ca.cert").display()
            ),
        )
        .unwrap();
        let config =
            loghogd::config::Config::load(&root.join("loghogd.conf"), &Default::default()).unwrap();
        let facilities = loghogd::config::FacilityDb::load(&config.main.facilities_config).unwrap();
        for d in [
            &config.main.logdir,
            &config.main.workdir,
            &config.main.rundir,
        ] {
            std::fs::create_dir_all(d).unwrap();
        }
        let listeners = loghogd::bind(&config.server.listen, &config.server.listen_ssl).unwrap();
        let addrs = listeners.addrs();
        let (_remote, control) = loghogd::daemon::control();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap();
            let shutdown = async move {
                let _ = stopped.await;
            };
            let _ = rt.block_on(loghogd::daemon::run(
                config, facilities, listeners, control, shutdown,
            ));
        });
        Daemon {
            dir,
            addrs,
            stop: Some(stop),
        }
    }

    fn port(&self, transport: &str) -> String {
        let (_, a) = self.addrs.iter().find(|(t, _)| *t == transport).unwrap();
        a.port().to_string()
    }

    fn log(&self, rel: &str) -> PathBuf {
        self.dir.path().join("log").join(rel)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Runs loghog-send with `args` and `stdin`, bounded by [`DEADLINE`].
fn send(args: &[&str], stdin: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loghog-send"))
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut pipe = child.stdin.take().unwrap();
    pipe.write_all(stdin.as_bytes()).unwrap();
    drop(pipe);
    let start = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("loghog-send {args:?} did not exit within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    child.wait_with_output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Waits (bounded) until `path` has `n` lines and returns them.
fn lines(path: &Path, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let got: Vec<String> = text.lines().map(str::to_owned).collect();
        if got.len() >= n && text.ends_with('\n') {
            return got;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "{} has {} lines, wanted {n}:\n{text}",
            path.display(),
            got.len()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// `host - body` of a daemon line (the timestamp cut off).
fn tail(line: &str) -> &str {
    &line[29..]
}

#[test]
fn send_arguments_and_stdin_lines_and_multiline() {
    let d = Daemon::start();
    let port = d.port("tcp");
    let out = send(
        &[
            "--app",
            "app",
            "--module",
            "web",
            "--port",
            &port,
            "--hostname",
            "h1",
            "one",
            "two",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stderr(&out), "");
    let web = lines(&d.log("app/web.log"), 2);
    assert_eq!(
        web.iter().map(|l| tail(l)).collect::<Vec<_>>(),
        ["h1 - one", "h1 - two"]
    );

    let addr = format!("127.0.0.1:{port}");
    let stdin: String = (0..1000).map(|i| format!("line {i}\n")).collect();
    let out = send(
        &["--app", "app", "--address", &addr, "--hostname", "h2"],
        &stdin,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let root = lines(&d.log("app/root.log"), 1000);
    let want: Vec<String> = (0..1000).map(|i| format!("h2 - line {i}")).collect();
    assert_eq!(root.iter().map(|l| tail(l)).collect::<Vec<_>>(), want);

    let out = send(
        &[
            "--app",
            "app",
            "--module",
            "web",
            "--address",
            &addr,
            "--hostname",
            "h3",
            "--multiline",
        ],
        "first\nsecond\n",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let web = lines(&d.log("app/web.log"), 4);
    assert_eq!(tail(&web[2]), "h3 - first");
    assert_eq!(web[3], "second", "one message holding both lines");
}

#[test]
fn send_over_tls_udp_signed_and_compressed() {
    let d = Daemon::start();
    let (pem, ca) = (cert("client.pem"), cert("loghog-ca.cert"));
    let tls_port = d.port("tls");
    let out = send(
        &[
            "--app",
            "app",
            "--tls",
            "--pem",
            pem.to_str().unwrap(),
            "--cacert",
            ca.to_str().unwrap(),
            "--port",
            &tls_port,
            "--hostname",
            "t",
            "over tls",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let out = send(
        &[
            "--app",
            "app",
            "--udp",
            "--port",
            &d.port("udp"),
            "--hostname",
            "u",
            "over udp",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let mut root: Vec<String> = lines(&d.log("app/root.log"), 2)
        .iter()
        .map(|l| tail(l).to_owned())
        .collect();
    root.sort();
    assert_eq!(root, ["t - over tls", "u - over udp"]);

    let secret = d.dir.path().join("secret");
    std::fs::write(&secret, "from-a-file\n").unwrap();
    let out = send(
        &[
            "--app",
            "signed",
            "--port",
            &d.port("tcp"),
            "--secret-file",
            secret.to_str().unwrap(),
            "--compress",
            "--hostname",
            "s",
            "signed and compressed",
        ],
        "",
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let signed = lines(&d.log("signed/root.log"), 1);
    assert_eq!(tail(&signed[0]), "s - signed and compressed");
}

#[test]
fn send_failures_exit_non_zero_with_one_line_saying_why() {
    let d = Daemon::start();
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port().to_string()
    };
    let check = |args: &[&str], needles: &[&str]| {
        let out = send(args, "");
        let err = stderr(&out);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert_eq!(err.lines().count(), 1, "{args:?}: one line: {err}");
        assert!(err.starts_with("loghog-send: "), "{err}");
        for n in needles {
            assert!(
                err.to_lowercase().contains(n),
                "{args:?}: no {n:?} in {err}"
            );
        }
    };
    check(
        &[
            "--app",
            "app",
            "--host",
            "127.0.0.1",
            "--port",
            &dead,
            "hello",
        ],
        &["cannot connect", "refused"],
    );
    check(
        &[
            "--app",
            "app",
            "--host",
            "no-such-host.invalid",
            "--port",
            "5566",
            "hello",
        ],
        &["cannot resolve", "no-such-host.invalid"],
    );
    let (pem, other_ca) = (cert("client.pem"), cert("other-ca.cert"));
    check(
        &[
            "--app",
            "app",
            "--tls",
            "--pem",
            pem.to_str().unwrap(),
            "--cacert",
            other_ca.to_str().unwrap(),
            "--host",
            "localhost",
            "--port",
            &d.port("tls"),
            "hello",
        ],
        &["tls handshake", "certificate"],
    );
    check(
        &[
            "--app",
            "app",
            "--tls",
            "--pem",
            "/nonexistent.pem",
            "--cacert",
            "/nonexistent.cert",
            "x",
        ],
        &["/nonexistent.pem"],
    );
    // Usage errors are clap's: exit 2.
    let out = send(&["hello"], "");
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--app"));
    assert!(!d.log("app/root.log").exists(), "nothing was delivered");
}

/// The client never logs its own failures through itself: rustls logs
/// through `log` while the worker thread makes a TLS connection, and a
/// `Logger` installed as the process's logger must not queue those records
/// (they would be sent, fail or succeed, and be logged again). The only
/// test in this binary that installs a logger.
#[test]
fn logger_ignores_what_its_own_worker_logs() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;

    /// Forwards client-side rustls records (only our worker makes those
    /// here) and the test's own; counts the rustls ones it saw.
    struct ClientSide {
        inner: loghog::Logger,
        rustls_seen: Arc<AtomicUsize>,
    }
    impl log::Log for ClientSide {
        fn enabled(&self, m: &log::Metadata<'_>) -> bool {
            self.inner.enabled(m)
        }
        fn log(&self, r: &log::Record<'_>) {
            if r.target().starts_with("rustls::client") {
                self.rustls_seen.fetch_add(1, Ordering::Relaxed);
                self.inner.log(r);
            } else if r.target() == "feedback" {
                self.inner.log(r);
            }
        }
        fn flush(&self) {}
    }

    let d = Daemon::start();
    let client = loghog::Client::builder("app")
        .address(format!("localhost:{}", d.port("tls")))
        .tls(cert("client.pem"), cert("loghog-ca.cert"))
        .build()
        .unwrap();
    let rustls_seen = Arc::new(AtomicUsize::new(0));
    log::set_boxed_logger(Box::new(ClientSide {
        inner: loghog::Logger::new(client.clone()),
        rustls_seen: rustls_seen.clone(),
    }))
    .unwrap();
    log::set_max_level(log::LevelFilter::Trace);
    log::info!(target: "feedback", "first");
    client.flush(DEADLINE).unwrap();
    log::info!(target: "feedback", "barrier");
    client.flush(DEADLINE).unwrap();
    let got = lines(&d.log("app/root.log"), 2);
    assert!(
        rustls_seen.load(Ordering::Relaxed) > 0,
        "rustls logged nothing during the handshake: this test proves nothing"
    );
    assert_eq!(got.len(), 2, "only our two records: {got:#?}");
    assert!(
        got[0].ends_with(" - INFO - first") && got[1].ends_with(" - INFO - barrier"),
        "{got:#?}"
    );
    log::set_max_level(log::LevelFilter::Off);
}

/// `loghog-send --follow` as an operator runs it: the agent ships lines
/// appended after it started (not the file's old content), follows a
/// rename rotation, keeps its state file, and SIGTERM stops it with exit 0.
#[test]
fn follow_ships_appended_lines_through_a_rotation_and_stops_on_sigterm() {
    use std::io::BufRead;

    let d = Daemon::start();
    let dir = d.dir.path().join("app-logs");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("access.log");
    let state = dir.join("agent.state");
    std::fs::write(&file, "old line, there before the agent\n").unwrap();
    let address = format!("127.0.0.1:{}", d.port("tcp"));
    let mut child = Command::new(env!("CARGO_BIN_EXE_loghog-send"))
        .args([
            "--app",
            "app",
            "--module",
            "web",
            "--address",
            &address,
            "--follow",
        ])
        .arg(&file)
        .arg("--state")
        .arg(&state)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // The agent says when it has taken its first look at the files.
    let (tx, rx) = std::sync::mpsc::channel();
    let err = child.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(err).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut seen = String::new();
    let start = Instant::now();
    while !seen.contains("following") {
        assert!(
            start.elapsed() < DEADLINE,
            "the agent never started:\n{seen}"
        );
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(50)) {
            seen.push_str(&line);
            seen.push('\n');
        }
    }
    let append = |text: &str| {
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    };
    append("new 1\nnew 2\n");
    lines(&d.log("app/web.log"), 2);
    std::fs::rename(&file, dir.join("access.log.1")).unwrap();
    std::fs::write(&file, "after rotation\n").unwrap();
    let got = lines(&d.log("app/web.log"), 3);
    let bodies: Vec<&str> = got
        .iter()
        .map(|l| tail(l).split(" - ").nth(1).unwrap())
        .collect();
    assert_eq!(bodies, ["new 1", "new 2", "after rotation"]);
    assert!(state.is_file(), "no state file");

    let st = Command::new("kill")
        .args(["-s", "TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(st.success());
    let start = Instant::now();
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if start.elapsed() > DEADLINE {
            let _ = child.kill();
            panic!("the agent did not stop on SIGTERM within {DEADLINE:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    assert!(status.success(), "agent exit status {status:?}");
}
