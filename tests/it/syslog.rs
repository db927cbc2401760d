//! Syslog input (issue 13) through real sockets and real programs:
//! `logger(1)` on the unix socket, over UDP and over TCP (octet counting and
//! LF framing), RFC 5424 with structured data, a real `rsyslogd` forwarding
//! RFC 3164 and RFC 5424, TLS with and without client certificates, the
//! routing table, `format = rfc3164` read back by fail2ban, and hostile input.
//!
//! logger (util-linux, Debian's bsdutils), rsyslogd and fail2ban-regex must
//! be installed (.ci/run installs them); a test that needs a missing one
//! fails and says what to install.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

use crate::util::*;

/// Both network listeners and the unix socket, all on ephemeral addresses.
const LISTEN: &str = "[syslog]\nlisten_udp = 127.0.0.1:0\nlisten_tcp = 127.0.0.1:0\n";

/// The classic Debian split: auth + authpriv in one file, the rest in the
/// catch-all; an application configured by its tag; a signed app.
const FACILITIES: &str = "\
[syslog]
rotate = daily
backup_count = 3

[syslog:auth]
syslog_facilities = auth, authpriv
format = rfc3164

[syslog:kern]
min_severity = warning

[syslog:local3]
format = rfc5424

[nginx]
rotate = daily
backup_count = 3
syslog_tags = nginx-error

[signed]
rotate = daily
backup_count = 3
secret = s3cret
";

fn setup(extra: &str) -> Setup {
    Setup::new()
        .facilities(FACILITIES)
        .conf_extra(&format!("{LISTEN}{extra}"))
}

/// Fails (never skips) when `program` is missing.
fn require(program: &str, package: &str) {
    let ok = Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    assert!(
        ok,
        "{program} is not installed; install the Debian package {package} \
         (apt-get install {package}; .ci/run does) to run the syslog tests"
    );
}

/// Runs `logger` with `args` and checks it succeeded.
fn logger(args: &[&str]) {
    require("logger", "bsdutils");
    let out = Command::new("logger")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run logger");
    assert!(
        out.status.success(),
        "logger {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `logger` fed `lines` on stdin (one message per line, one connection).
fn logger_stdin(args: &[&str], lines: &[String]) {
    require("logger", "bsdutils");
    let mut child = Command::new("logger")
        .args(args)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run logger");
    let mut stdin = child.stdin.take().unwrap();
    for l in lines {
        writeln!(stdin, "{l}").unwrap();
    }
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "logger {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .unwrap()
        .trim()
        .to_owned()
}

/// `{port}` of an address, as logger's `-P` wants it.
fn port(a: SocketAddr) -> String {
    a.port().to_string()
}

/// Parses the RFC 3164 file line `Mmm dd hh:mm:ss host tag[pid]: msg`:
/// (host, tag, pid, msg).
fn parse_3164(line: &str) -> (String, String, Option<u32>, String) {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    assert!(MONTHS.contains(&&line[..3]), "no month: {line:?}");
    let day = line[4..6].trim_start();
    assert!(
        day.parse::<u32>().is_ok_and(|d| (1..=31).contains(&d)),
        "{line:?}"
    );
    let time = &line[7..15];
    assert!(
        time.len() == 8 && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':',
        "{line:?}"
    );
    let rest = &line[16..];
    let (host, rest) = rest.split_once(' ').unwrap();
    let (tag, msg) = rest.split_once(": ").unwrap();
    let (tag, pid) = match tag.split_once('[') {
        Some((t, p)) => (t, Some(p.trim_end_matches(']').parse().unwrap())),
        None => (tag, None),
    };
    (host.into(), tag.into(), pid, msg.into())
}

// === the unix socket ===

#[test]
fn logger_on_the_unix_socket_with_kernel_credentials() {
    let s = setup("unix_socket = run/dev-log\nunix_socket_mode = 0620\n");
    let sock = s.root().join("run/dev-log");
    // A stale socket left by a crash is replaced.
    std::fs::create_dir_all(sock.parent().unwrap()).unwrap();
    drop(std::os::unix::net::UnixDatagram::bind(&sock).unwrap());
    assert!(sock.exists());
    let mut d = InProcess::start(&s);
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o620);
    let path = sock.to_str().unwrap();
    logger(&[
        "-u",
        path,
        "-t",
        "sshd",
        "-p",
        "auth.info",
        "Accepted publickey for root",
    ]);
    logger(&["-u", path, "-t", "cron", "-p", "cron.info", "job done"]);
    logger(&[
        "-u",
        path,
        "-t",
        "me",
        "-p",
        "local3.notice",
        "with credentials",
    ]);
    let host = hostname();

    // auth → [syslog:auth], rfc3164, the pid the kernel vouches for.
    let auth = wait_for_lines(&s.log("syslog/auth.log"), 1, DEADLINE);
    let (h, tag, pid, msg) = parse_3164(&auth[0]);
    assert_eq!(
        (h.as_str(), tag.as_str(), msg.as_str()),
        (host.as_str(), "sshd", "Accepted publickey for root")
    );
    assert!(pid.is_some_and(|p| p > 1), "{auth:?}");
    // cron → the catch-all, loghog format.
    let root = wait_for_lines(&s.log("syslog/root.log"), 1, DEADLINE);
    let (_, h, body) = parse_line(&root[0]);
    assert_eq!(h, host);
    assert!(
        body.starts_with("cron[") && body.ends_with("]: job done"),
        "{root:?}"
    );
    // rfc5424 shows uid and gid too.
    let l3 = wait_for_lines(&s.log("syslog/local3.log"), 1, DEADLINE);
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    // local3.notice: 19 * 8 + 5.
    assert!(l3[0].starts_with("<157>1 "), "{l3:?}");
    assert!(
        l3[0].contains(&format!(" uid=\"{uid}\" gid=\"{gid}\"]")),
        "{l3:?}"
    );
    assert!(l3[0].ends_with(" with credentials"), "{l3:?}");
    d.stop();
    assert!(!sock.exists(), "the socket is removed at stop");
}

#[test]
fn a_file_in_place_of_the_socket_is_not_removed() {
    let s = setup("unix_socket = run/dev-log\n");
    std::fs::create_dir_all(s.root().join("run")).unwrap();
    std::fs::write(s.root().join("run/dev-log"), "precious").unwrap();
    s.write();
    let config = loghogd::config::Config::load(&s.conf_path(), &Default::default()).unwrap();
    let err = loghogd::bind_syslog(&config.syslog)
        .unwrap_err()
        .to_string();
    assert!(err.contains("is not a socket"), "{err}");
    assert_eq!(read(&s.root().join("run/dev-log")), "precious");
}

// === the network ===

#[test]
fn logger_over_udp_and_tcp_with_and_without_octet_counting() {
    let s = setup("");
    let d = InProcess::start(&s);
    let udp = port(d.addr("syslog-udp"));
    let tcp = port(d.addr("syslog-tcp"));
    let lines = |prefix: &str| {
        (0..200)
            .map(|i| format!("{prefix} {i}"))
            .collect::<Vec<_>>()
    };
    logger_stdin(
        &[
            "-n",
            "127.0.0.1",
            "-P",
            &udp,
            "-d",
            "-t",
            "u",
            "-p",
            "user.info",
        ],
        &lines("udp")[..20],
    );
    logger_stdin(
        &[
            "-n",
            "127.0.0.1",
            "-P",
            &tcp,
            "-T",
            "-t",
            "lf",
            "-p",
            "user.info",
        ],
        &lines("lf"),
    );
    logger_stdin(
        &[
            "-n",
            "127.0.0.1",
            "-P",
            &tcp,
            "-T",
            "--octet-count",
            "-t",
            "oc",
            "-p",
            "user.info",
        ],
        &lines("oc"),
    );
    let got = wait_for_lines(&s.log("syslog/root.log"), 420, DEADLINE);
    assert_eq!(got.len(), 420);
    for (tag, n) in [("u", 20), ("lf", 200), ("oc", 200)] {
        let prefix = if tag == "u" { "udp" } else { tag };
        let bodies: Vec<String> = got
            .iter()
            .map(|l| parse_line(l).2)
            .filter(|b| b.starts_with(&format!("{tag}: ")))
            .collect();
        let want: Vec<String> = (0..n).map(|i| format!("{tag}: {prefix} {i}")).collect();
        // TCP keeps a connection's order; UDP on loopback too, but only
        // the set is promised.
        if tag == "u" {
            let mut b = bodies.clone();
            b.sort();
            let mut w = want.clone();
            w.sort();
            assert_eq!(b, w);
        } else {
            assert_eq!(bodies, want);
        }
    }
    assert_eq!(d.stat("bad_frames"), 0);
}

#[test]
fn rfc5424_with_structured_data_is_kept() {
    let s = setup("");
    let d = InProcess::start(&s);
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &port(d.addr("syslog-tcp")),
        "-T",
        "--octet-count",
        "--rfc5424",
        "--sd-id",
        "zoo@123",
        "--sd-param",
        "tiger=\"hungry\"",
        "--sd-param",
        "q=\"a \\\"quoted\\\" \\] bracket\"",
        "--msgid",
        "ID47",
        "-t",
        "zookeeper",
        "-p",
        "local3.err",
        "feeding time",
    ]);
    let l = wait_for_lines(&s.log("syslog/local3.log"), 1, DEADLINE);
    let line = &l[0];
    assert!(line.starts_with("<155>1 "), "{line}");
    let fields: Vec<&str> = line.splitn(7, ' ').collect();
    assert_eq!(fields[2], hostname(), "{line}");
    assert_eq!((fields[3], fields[5]), ("zookeeper", "ID47"), "{line}");
    assert!(
        line.contains("[zoo@123 tiger=\"hungry\" q=\"a \\\"quoted\\\" \\] bracket\"]"),
        "{line}"
    );
    assert!(line.ends_with("] feeding time"), "{line}");
    // The timestamp keeps its fraction and offset.
    let ts = chrono::DateTime::parse_from_rfc3339(fields[1]).unwrap();
    assert!(
        (chrono::Utc::now() - ts.to_utc()).num_seconds().abs() < 600,
        "{line}"
    );
}

#[test]
fn routing_table_severity_and_secrets() {
    let s = setup("");
    let d = InProcess::start(&s);
    let mut c = connect(d.addr("syslog-tcp"));
    for m in [
        "<38>Feb  5 17:32:18 web01 sshd[812]: Accepted publickey",
        "<86>1 - web01 sudo 9 - - pam_unix(sudo:session): session opened",
        "<30>1 - web01 nginx 7 - - started",
        "<27>1 - web01 nginx-error 7 - - upstream failed",
        "<3>1 - web01 kernel - - - disk on fire",
        "<6>1 - web01 kernel - - - too chatty",
        "<13>1 - web01 signed - - - unsigned",
        "<165>1 - web01 app - - - local4 goes to the catch-all",
    ] {
        c.write_all(format!("{} {m}", m.len()).as_bytes()).unwrap();
    }
    drop(c);
    d.wait_stat("received", 8);
    let auth = wait_for_lines(&s.log("syslog/auth.log"), 2, DEADLINE);
    assert_eq!(parse_3164(&auth[0]).3, "Accepted publickey");
    assert_eq!(parse_3164(&auth[1]).1, "sudo");
    let nginx = wait_for_lines(&s.log("nginx/root.log"), 2, DEADLINE);
    assert_eq!(
        bodies(&nginx),
        ["nginx[7]: started", "nginx-error[7]: upstream failed"]
    );
    let kern = wait_for_lines(&s.log("syslog/kern.log"), 1, DEADLINE);
    assert_eq!(bodies(&kern), ["kernel: disk on fire"]);
    // The signed app never takes unsigned syslog: its tag falls through
    // to the catch-all.
    let root = wait_for_lines(&s.log("syslog/root.log"), 2, DEADLINE);
    assert_eq!(
        bodies(&root),
        ["signed: unsigned", "app: local4 goes to the catch-all"]
    );
    d.wait_stat("written", 7);
    assert_eq!(d.stat("filtered"), 1);
    assert!(!s.log("signed/root.log").exists());
}

#[test]
fn file_per_host_uses_the_syslog_host_name_safely() {
    let s = Setup::new()
        .facilities("[syslog]\nrotate = daily\nbackup_count = 3\nfile_per_host = yes\n")
        .conf_extra(LISTEN);
    let d = InProcess::start(&s);
    let msgs: Vec<Vec<u8>> = [
        "<13>1 - web01 app - - - a",
        "<13>1 - .. app - - - b",
        "<13>Feb  5 17:32:18 ../../etc app: c",
    ]
    .iter()
    .map(|m| m.as_bytes().to_vec())
    .collect();
    send_udp(d.addr("syslog-udp"), &msgs);
    d.wait_stat("written", 3);
    let mut files: Vec<String> = walk(&s.logdir())
        .iter()
        .map(|p| p.strip_prefix(s.logdir()).unwrap().display().to_string())
        .collect();
    files.sort();
    for f in &files {
        assert!(
            f.starts_with("syslog/") && !f[7..].contains('/'),
            "{files:?}"
        );
    }
    assert!(
        files.contains(&"syslog/web01-root.log".to_owned()),
        "{files:?}"
    );
    assert_eq!(files.len(), 3, "{files:?}");
}

// === real programs on the other end ===

/// A real rsyslogd (unprivileged: its own socket, work directory and pid
/// file; run as nobody when the tests run as root) that forwards local1 as RFC 3164 over UDP and local2 as RFC 5424
/// octet-counted over TCP, as `action(type="omfwd")` does on a host that
/// relays to loghogd.
#[test]
fn rsyslog_forwards_rfc3164_and_rfc5424() {
    require("rsyslogd", "rsyslog");
    let s = Setup::new()
        .facilities(
            "[syslog]\nrotate = daily\nbackup_count = 3\n\
             [syslog:local1]\n[syslog:local2]\n",
        )
        .conf_extra(LISTEN);
    let d = InProcess::start(&s);
    let work = s.root().join("rsyslog");
    std::fs::create_dir_all(&work).unwrap();
    let input = work.join("in.sock");
    let conf = work.join("rsyslog.conf");
    std::fs::write(
        &conf,
        format!(
            "global(workDirectory=\"{w}\")\n\
             module(load=\"imuxsock\" SysSock.Use=\"off\")\n\
             input(type=\"imuxsock\" Socket=\"{sock}\" RateLimit.Interval=\"0\")\n\
             local1.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{udp}\" protocol=\"udp\" template=\"RSYSLOG_TraditionalForwardFormat\")\n\
             local2.* action(type=\"omfwd\" target=\"127.0.0.1\" port=\"{tcp}\" protocol=\"tcp\" TCP_Framing=\"octet-counted\" template=\"RSYSLOG_SyslogProtocol23Format\")\n",
            w = work.display(),
            sock = input.display(),
            udp = d.addr("syslog-udp").port(),
            tcp = d.addr("syslog-tcp").port(),
        ),
    )
    .unwrap();
    // As root (CI), run it as nobody: nothing here may need privileges.
    let mut cmd = as_unprivileged(&s, &work);
    let rsyslog = cmd
        .arg("-n")
        .arg("-f")
        .arg(&conf)
        .arg("-i")
        .arg(work.join("rsyslogd.pid"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start rsyslogd");
    let mut rsyslog = KillOnDrop(rsyslog);
    let start = Instant::now();
    while !input.exists() {
        if let Ok(Some(st)) = rsyslog.0.try_wait() {
            let mut err = String::new();
            let _ = rsyslog.0.stderr.take().unwrap().read_to_string(&mut err);
            panic!("rsyslogd exited ({st}) before creating its socket: {err}");
        }
        assert!(
            start.elapsed() < DEADLINE,
            "rsyslogd never created {}",
            input.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } == 0 {
        let status = read(Path::new(&format!("/proc/{}/status", rsyslog.0.id())));
        let uid = status.lines().find(|l| l.starts_with("Uid:")).unwrap_or("");
        assert!(
            uid.split_whitespace().skip(1).all(|u| u == "65534"),
            "rsyslogd is not nobody: {uid}"
        );
    }
    let sock = input.to_str().unwrap();
    for i in 0..5 {
        logger(&[
            "-u",
            sock,
            "-t",
            "relayed",
            "-p",
            "local1.warning",
            &format!("bsd {i}"),
        ]);
        logger(&[
            "-u",
            sock,
            "-t",
            "relayed",
            "-p",
            "local2.info",
            &format!("ietf {i}"),
        ]);
    }
    let host = hostname();
    let l1 = wait_for_lines(&s.log("syslog/local1.log"), 5, DEADLINE);
    let l2 = wait_for_lines(&s.log("syslog/local2.log"), 5, DEADLINE);
    let mut b1 = bodies(&l1);
    b1.sort();
    assert_eq!(
        b1,
        (0..5)
            .map(|i| format!("relayed: bsd {i}"))
            .collect::<Vec<_>>()
    );
    assert_eq!(
        bodies(&l2),
        (0..5)
            .map(|i| format!("relayed: ietf {i}"))
            .collect::<Vec<_>>()
    );
    for l in l1.iter().chain(&l2) {
        assert_eq!(
            parse_line(l).1,
            host,
            "rsyslog's host name, not the peer address: {l}"
        );
    }
    assert_eq!(d.stat("bad_frames"), 0);
    rsyslog.stop();
}

/// `rsyslogd`, or `setpriv ... rsyslogd` as nobody when the test runs as
/// root; then `work` becomes nobody's and the test dir traversable.
fn as_unprivileged(s: &Setup, work: &Path) -> Command {
    // SAFETY: geteuid cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Command::new("rsyslogd");
    }
    require("setpriv", "util-linux");
    const NOBODY: u32 = 65534;
    std::fs::set_permissions(s.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::chown(work, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = Command::new("setpriv");
    cmd.args([
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "rsyslogd",
    ]);
    cmd
}

struct KillOnDrop(Child);

impl KillOnDrop {
    fn stop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `format = rfc3164` is what rsyslog writes to /var/log/auth.log, so
/// fail2ban's sshd filter must find the failures in our file.
#[test]
fn rfc3164_auth_log_is_read_by_fail2ban() {
    require("fail2ban-regex", "fail2ban");
    let s = setup("unix_socket = run/dev-log\n");
    let d = InProcess::start(&s);
    let sock = s.root().join("run/dev-log");
    let sock = sock.to_str().unwrap();
    for (user, ip) in [
        ("invalid user admin", "192.0.2.7"),
        ("root", "192.0.2.8"),
        ("invalid user x", "192.0.2.9"),
    ] {
        logger(&[
            "-u",
            sock,
            "-t",
            "sshd",
            "-p",
            "authpriv.info",
            &format!("Failed password for {user} from {ip} port 4242 ssh2"),
        ]);
    }
    logger(&[
        "-u",
        sock,
        "-t",
        "sshd",
        "-p",
        "auth.info",
        "Accepted publickey for ops from 192.0.2.1 port 22 ssh2",
    ]);
    let auth = s.log("syslog/auth.log");
    wait_for_lines(&auth, 4, DEADLINE);
    let out = Command::new("fail2ban-regex")
        .arg(&auth)
        .arg("sshd")
        .output()
        .expect("run fail2ban-regex");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Every line's date and `sshd[pid]:` prefix are understood (0 missed);
    // the three failures match (the accepted login is fail2ban's "ignored").
    let summary = text
        .lines()
        .find(|l| l.starts_with("Lines: "))
        .unwrap_or_else(|| panic!("no summary line: {text}"));
    assert!(summary.starts_with("Lines: 4 lines, "), "{text}");
    assert!(summary.contains(" 3 matched, 0 missed"), "{text}");
    drop(d);
}

// === TLS (RFC 5425) ===

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

fn tls_setup(anonymous: bool) -> Setup {
    Setup::new()
        .facilities(FACILITIES)
        .server_extra(&format!(
            "pemfile = {}\ncacert = {}",
            cert("loghog-server.pem").display(),
            cert("loghog-ca.cert").display()
        ))
        .conf_extra(&format!(
            "[syslog]\nlisten_tls = 127.0.0.1:0\ntls_allow_anonymous = {}\n",
            if anonymous { "yes" } else { "no" }
        ))
}

fn client(with_cert: bool) -> Arc<ClientConfig> {
    let good =
        loghog::tls::client_config(&cert("client.pem"), &cert("loghog-ca.cert"), true).unwrap();
    if with_cert {
        return good;
    }
    let mut roots = RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(cert("loghog-ca.cert")).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    Arc::new(
        ClientConfig::builder_with_provider(good.crypto_provider().clone())
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth(),
    )
}

/// Sends `msgs` octet-counted over TLS, then closes (with close_notify,
/// as rsyslog's TLS drivers do).
fn send_tls(addr: SocketAddr, config: Arc<ClientConfig>, msgs: &[&str]) {
    let tcp = connect(addr);
    let conn = ClientConnection::new(config, ServerName::try_from("localhost").unwrap()).unwrap();
    let mut tls = StreamOwned::new(conn, tcp);
    for m in msgs {
        // A refused handshake shows as a write error; the test looks at
        // the counters and the file.
        if tls
            .write_all(format!("{} {m}", m.len()).as_bytes())
            .is_err()
        {
            return;
        }
    }
    let _ = tls.flush();
    tls.conn.send_close_notify();
    let _ = tls.flush();
    let _ = tls.sock.shutdown(Shutdown::Write);
    let mut rest = Vec::new();
    let _ = tls.sock.read_to_end(&mut rest);
}

#[test]
fn tls_with_and_without_client_certificates() {
    let s = tls_setup(true);
    let d = InProcess::start(&s);
    let addr = d.addr("syslog-tls");
    send_tls(
        addr,
        client(true),
        &["<13>1 - dev1 app - - - with a certificate"],
    );
    send_tls(addr, client(false), &["<13>1 - dev2 app - - - without one"]);
    let mut got = bodies(&wait_for_lines(&s.log("syslog/root.log"), 2, DEADLINE));
    got.sort();
    assert_eq!(got, ["app: with a certificate", "app: without one"]);
    // A certificate from another CA is still refused.
    let other =
        loghog::tls::client_config(&cert("other-client.pem"), &cert("loghog-ca.cert"), true)
            .unwrap();
    send_tls(addr, other, &["<13>1 - dev3 app - - - other ca"]);
    d.wait_stat("tls_refused", 1);

    // Without the switch, the syslog TLS port is as strict as LogHog's.
    let s = tls_setup(false);
    let d = InProcess::start(&s);
    let addr = d.addr("syslog-tls");
    send_tls(addr, client(false), &["<13>1 - dev2 app - - - refused"]);
    d.wait_stat("tls_refused", 1);
    send_tls(addr, client(true), &["<13>1 - dev1 app - - - accepted"]);
    let got = wait_for_lines(&s.log("syslog/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&got), ["app: accepted"]);
    // The line is on disk a moment before the counter moves.
    d.wait_stat("written", 1);
    assert_eq!(d.stat("written"), 1);
}

// === hostile input (item 5) ===

#[test]
fn hostile_syslog_input() {
    let s = setup("").server_extra("max_msg_size = 16384");
    let d = InProcess::start(&s);
    let tcp = d.addr("syslog-tcp");
    // A bystander connection, open throughout.
    let mut bystander = connect(tcp);
    bystander.write_all(b"<13>1 - h by - - - before\n").unwrap();

    // A huge octet count: closed without reading or allocating it.
    let mut c = connect(tcp);
    c.write_all(b"99999999999999999999 <13>1 - h app - - - x")
        .unwrap();
    wait_closed_by_peer(&mut c);
    // A line past max_msg_size without an LF: closed too.
    let mut c = connect(tcp);
    c.write_all(&vec![b'a'; 20_000]).unwrap();
    wait_closed_by_peer(&mut c);
    d.wait_stat("oversize_closed", 2);

    // NUL bytes, an invalid PRI, a 10k-character tag, non-UTF-8, and a
    // last line without its LF: all written, one line each.
    let tag = "t".repeat(10_000);
    let mut c = connect(tcp);
    c.write_all(b"<13>1 - h app - - - nul\0byte\n").unwrap();
    c.write_all(b"<999>Feb  5 17:32:18 h app: invalid pri\n")
        .unwrap();
    c.write_all(format!("<13>Feb  5 17:32:18 h {tag}[1]: long tag\n").as_bytes())
        .unwrap();
    c.write_all(b"<13>1 - h app - - - caf\xe9\n").unwrap();
    c.write_all(b"<13>1 - h app - - - no LF at EOF").unwrap();
    c.shutdown(Shutdown::Write).unwrap();
    wait_closed_by_peer(&mut c);

    // Datagrams: one over the cap is dropped and counted, the next is fine.
    let u = UdpSocket::bind("127.0.0.1:0").unwrap();
    let udp = d.addr("syslog-udp");
    u.send_to(&vec![b'x'; 20_000], udp).unwrap();
    u.send_to(b"<13>1 - h app - - - after the big one", udp)
        .unwrap();
    d.wait_stat("bad_frames", 1);

    bystander.write_all(b"<13>1 - h by - - - after\n").unwrap();
    drop(bystander);
    let lines = wait_for_lines(&s.log("syslog/root.log"), 8, DEADLINE);
    let got = bodies(&lines);
    assert_eq!(lines.len(), 8, "{got:#?}");
    for want in [
        "app: nul#000byte",
        "app: caf\u{fffd}",
        "app: no LF at EOF",
        "app: after the big one",
        "by: before",
        "by: after",
    ] {
        assert!(got.iter().any(|b| b == want), "{want:?} not in {got:#?}");
    }
    assert!(
        got.iter()
            .any(|b| b.contains("<999>") && b.ends_with("invalid pri")),
        "{got:#?}"
    );
    // The tag is cut to RFC 5424's 48 characters.
    assert!(
        got.contains(&format!("{}[1]: long tag", "t".repeat(48))),
        "{got:#?}"
    );
    assert_eq!(d.stat("bad_frames"), 1);
}

// === the binary ===

/// The real binary binds `[syslog]` (and says where), serves it, and
/// removes its socket on SIGTERM.
#[test]
fn the_daemon_binary_serves_syslog_and_removes_its_socket() {
    let s = setup("unix_socket = run/dev-log\n");
    let mut d = Daemon::start(&s);
    let text = d.stderr_text();
    let udp: SocketAddr = text
        .split("listening on syslog-udp ")
        .nth(1)
        .and_then(|t| t.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no `listening on syslog-udp` line:\n{text}"));
    assert!(text.contains("listening on syslog-unix "), "{text}");
    logger(&[
        "-n",
        "127.0.0.1",
        "-P",
        &port(udp),
        "-d",
        "-t",
        "bin",
        "over udp",
    ]);
    let sock = s.root().join("run/dev-log");
    logger(&["-u", sock.to_str().unwrap(), "-t", "bin", "over the socket"]);
    let mut got = bodies(&wait_for_lines(&s.log("syslog/root.log"), 2, DEADLINE));
    got.sort();
    assert_eq!(got[0], "bin: over udp", "{got:?}");
    // From the socket, with the sender's pid as the kernel reported it.
    assert!(
        got[1].starts_with("bin[") && got[1].ends_with("]: over the socket"),
        "{got:?}"
    );
    d.stop();
    assert!(!Path::new(&sock).exists());
}

/// A reload re-reads the syslog routing: a tag that went to the catch-all
/// goes to its new application's section once that exists, on the same
/// connection.
#[test]
fn reload_reroutes_syslog_messages() {
    let s = Setup::new()
        .facilities("[syslog]\nrotate = daily\nbackup_count = 3\n")
        .conf_extra(LISTEN);
    let d = InProcess::start(&s);
    let mut c = connect(d.addr("syslog-tcp"));
    c.write_all(b"<30>1 - h myapp - - - before\n").unwrap();
    wait_for_lines(&s.log("syslog/root.log"), 1, DEADLINE);
    s.write_facilities(
        "[syslog]\nrotate = daily\nbackup_count = 3\n\
         [myapp]\nrotate = daily\nbackup_count = 3\nformat = rfc5424\n",
    );
    d.reload().unwrap();
    c.write_all(b"<30>1 - h myapp - - - after\n").unwrap();
    let got = wait_for_lines(&s.log("myapp/root.log"), 1, DEADLINE);
    assert!(
        got[0].starts_with("<30>1 ") && got[0].ends_with(" h myapp - - - after"),
        "{got:?}"
    );
    assert_eq!(
        bodies(&wait_for_lines(&s.log("syslog/root.log"), 1, DEADLINE)),
        ["myapp: before"]
    );
}

/// `--check-config` shows the syslog keys of each facility, so an
/// operator can see the routing before switching over.
#[test]
fn check_config_shows_the_syslog_keys() {
    let out = setup("unix_socket = run/dev-log\n").run(&["--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let line = |section: &str| {
        out.stdout
            .lines()
            .find(|l| l.starts_with(&format!("[{section}] ")))
            .unwrap_or_else(|| panic!("no [{section}] in {out:?}"))
            .to_owned()
    };
    let auth = line("syslog:auth");
    assert!(auth.contains(" format=rfc3164 "), "{auth}");
    assert!(auth.contains(" syslog_facilities=auth,authpriv "), "{auth}");
    assert!(line("syslog:kern").contains(" min_severity=warning "));
    assert!(line("nginx").contains(" syslog_tags=nginx-error "));
    assert!(!line("syslog").contains("format="));
}
