//! Compatibility with the REAL published Python client (`loghog` 0.7 from
//! PyPI), over TCP, UDP, TCP with zlib compression and TCP with signing, and
//! the same three stream modes over TLS (`ssl_info`, SPEC §9).
//!
//! `scripts/test` creates the venv and exports `LOGHOG_PYTHON`. Without it
//! these tests fail (always under `CI`); outside CI they can be skipped only
//! by setting `LOGHOG_SKIP_PYTHON=1` explicitly, and say so. Never silently.

use std::path::PathBuf;
use std::process::Command;

use crate::util::*;

const SECRET: &str = "py-s3cret";
const COUNT: usize = 50;

/// The interpreter with `loghog` 0.7 installed, or `None` when the tests may
/// be skipped (explicitly asked for, outside CI). Panics otherwise.
fn python() -> Option<String> {
    match std::env::var("LOGHOG_PYTHON") {
        Ok(p) if !p.is_empty() => Some(p),
        _ => {
            let hint = "LOGHOG_PYTHON is not set: run the suite with scripts/test, which creates \
                        the venv (target/venv-loghog, with `pip install 'setuptools<58' wheel` and \
                        `pip install --no-build-isolation loghog==0.7`) and exports it";
            if std::env::var_os("CI").is_some() {
                panic!("{hint} (CI is set, so the Python compatibility tests may not be skipped)");
            }
            if std::env::var("LOGHOG_SKIP_PYTHON").as_deref() == Ok("1") {
                eprintln!("SKIPPED: Python compatibility test (LOGHOG_SKIP_PYTHON=1)");
                return None;
            }
            panic!("{hint}; or set LOGHOG_SKIP_PYTHON=1 to skip these tests explicitly");
        }
    }
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/python/compat.py")
}

fn facilities(secret: Option<&str>) -> String {
    let secret = secret
        .map(|s| format!("secret = {s}\n"))
        .unwrap_or_default();
    format!(
        "[pyapp]\nrotate = daily\nbackup_count = 3\n{secret}\n\
         [pyapp:web]\nrotate = daily\nbackup_count = 3\n\n\
         [pyapp:web.requests]\nrotate = daily\nbackup_count = 3\n"
    )
}

/// Splits a file into (hostname, body) records: a record starts at a line
/// with a valid `timestamp - host - ` prefix; other lines continue the body.
fn records(text: &str) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    for line in text.lines() {
        let starts = line.len() >= 29
            && line.is_char_boundary(26)
            && chrono::NaiveDateTime::parse_from_str(&line[..26], "%Y-%m-%d %H:%M:%S%.6f").is_ok()
            && line[26..].starts_with(" - ");
        if starts {
            let (_, host, body) = parse_line(line);
            out.push((host, body));
        } else {
            let last = out
                .last_mut()
                .unwrap_or_else(|| panic!("file does not start with a record: {text:?}"));
            last.1.push('\n');
            last.1.push_str(line);
        }
    }
    out
}

/// `tests/certs/{name}`.
fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

/// The daemon a mode runs against: in-process, counters read from `Stats`;
/// for TLS the real binary, whose log must show that the Python client's
/// close (no `close_notify`) is not taken for an error.
enum Under {
    InProcess(InProcess),
    Binary(Daemon),
}

impl Under {
    fn port(&self, mode: &str) -> u16 {
        let addr = match (self, mode) {
            (Under::InProcess(d), "udp") => d.udp_addr(),
            (Under::InProcess(d), _) => d.tcp_addr(),
            (Under::Binary(d), _) => d.tls_addr(),
        };
        addr.port()
    }

    fn stop(&mut self) {
        match self {
            Under::InProcess(d) => d.stop(),
            Under::Binary(d) => {
                d.stop();
            }
        }
    }

    fn stat(&self, name: &str) -> u64 {
        match self {
            Under::InProcess(d) => d.stat(name),
            Under::Binary(d) => d.stat(name),
        }
    }
}

fn run_mode(mode: &str) {
    let Some(py) = python() else { return };
    let signed = mode.ends_with("-signed");
    let tls = mode.starts_with("tls");
    let mut setup = Setup::new().facilities(&facilities(signed.then_some(SECRET)));
    if tls {
        setup = setup.server_extra(&format!(
            "listen_ipv4_ssl = 127.0.0.1:0\npemfile = {}\ncacert = {}",
            cert("loghog-server.pem").display(),
            cert("loghog-ca.cert").display()
        ));
    }
    let mut d = if tls {
        Under::Binary(Daemon::start(&setup))
    } else {
        Under::InProcess(InProcess::start(&setup))
    };
    let port = d.port(mode);
    let mut cmd = Command::new(&py);
    cmd.arg(script())
        .args(["--port", &port.to_string(), "--mode", mode])
        .args(["--count", &COUNT.to_string()]);
    if signed {
        cmd.args(["--secret", SECRET]);
    }
    if tls {
        cmd.arg("--pemfile")
            .arg(cert("client.pem"))
            .arg("--cacert")
            .arg(cert("loghog-ca.cert"));
    }
    let out = run_with_deadline(cmd);
    assert!(
        out.status.success(),
        "python client failed ({py}); is loghog 0.7 installed?\n{out:?}"
    );

    let web = wait_for_lines(&setup.log("pyapp/web.log"), COUNT, DEADLINE);
    let requests = setup.log("pyapp/web.requests.log");
    wait_for_content(&requests, "both web.requests records", |t| {
        t.contains("second line\n") && t.contains(&format!("request {mode}"))
    });
    wait_for_lines(&setup.log("pyapp/root.log"), 2, DEADLINE);
    d.stop();

    let host = |b: &str| ("pyhost".to_string(), b.to_string());

    // web: COUNT numbered messages, in order over a stream.
    let mut got: Vec<_> = records(&read(&setup.log("pyapp/web.log")));
    let want: Vec<_> = (0..COUNT)
        .map(|i| host(&format!("seq {mode} {i:04}")))
        .collect();
    if mode == "udp" {
        got.sort();
    }
    assert_eq!(got.len(), web.len());
    assert_eq!(got, want, "pyapp/web.log");

    // web.requests: the most specific facility for web.requests and web.requests.slow.
    let mut got = records(&read(&requests));
    let mut want = vec![
        host(&format!("request {mode} café 😀")),
        host(&format!("slow {mode}\nsecond line")),
    ];
    if mode == "udp" {
        got.sort();
        want.sort();
    }
    assert_eq!(got, want, "pyapp/web.requests.log");

    // root: logger 'root' and 'db' (no facility of its own); never the forged ones.
    let mut got = records(&read(&setup.log("pyapp/root.log")));
    let mut want = vec![host(&format!("root {mode}")), host(&format!("db {mode}"))];
    if mode == "udp" {
        got.sort();
        want.sort();
    }
    assert_eq!(
        got, want,
        "pyapp/root.log (forged messages must not be written)"
    );

    assert_eq!(
        log_files(&setup),
        ["pyapp/root.log", "pyapp/web.log", "pyapp/web.requests.log"]
    );
    let total = COUNT as u64 + 4;
    assert_eq!(d.stat("written"), total);
    if let Under::Binary(d) = &d {
        assert_eq!(
            d.stat("tls_refused"),
            0,
            "a Python TLS connection was refused"
        );
        let err = d.stderr_text();
        assert!(
            !err.contains("connection closed on error"),
            "the Python client's close (no close_notify) was logged as an error:\n{err}"
        );
    }
    if signed {
        assert_eq!(
            d.stat("received"),
            total + 2,
            "the two forged messages arrived"
        );
    }
}

#[test]
fn python_client_tcp() {
    run_mode("tcp");
}

#[test]
fn python_client_udp() {
    run_mode("udp");
}

#[test]
fn python_client_tcp_compressed() {
    run_mode("tcp-compress");
}

#[test]
fn python_client_tcp_signed() {
    run_mode("tcp-signed");
}

#[test]
fn python_client_tls() {
    run_mode("tls");
}

#[test]
fn python_client_tls_compressed() {
    run_mode("tls-compress");
}

#[test]
fn python_client_tls_signed() {
    run_mode("tls-signed");
}
