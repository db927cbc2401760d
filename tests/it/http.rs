//! The HTTP input (issue 14): real HTTP over sockets with `curl` (and raw
//! TCP where the exact request bytes matter), in-process unless the test
//! needs the binary's exit status. Every endpoint, status and auth case:
//! tokens (none, unknown, wrong scope, another app's), mutual TLS with the
//! right and another CA's certificate, NDJSON with a bad line, 413, 503
//! under a disk-full writer, signed facilities with and without the
//! `X-Loghog-Signature` header, and the Daedalus form POST. Client
//! certificates get `cert_scopes` or their `cert:` line's scopes; anonymous
//! loopback access writes and scrapes; SIGHUP re-reads the tokens file.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::faults::Tmpfs;
use crate::util::*;

const FACILITIES: &str = "\
[app-a]
rotate = daily
backup_count = 3

[app-b]
rotate = daily
backup_count = 3

[signed]
rotate = daily
backup_count = 3
secret = s3cr3t
";

/// The tokens the tests use and their scopes.
const TOKENS: &[(&str, &str)] = &[
    ("tok-a", "write:app-a"),
    ("tok-b", "write:app-b"),
    ("tok-all", "write:* metrics"),
    ("tok-metrics", "metrics"),
];

pub(crate) fn sha256_hex(data: &[u8]) -> String {
    Sha256::digest(data)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn hmac_hex(key: &str, data: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).unwrap();
    mac.update(data);
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn cert(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

/// A setup with the tokens file written and `[http]` holding `extra`.
fn setup_with(extra: &str) -> Setup {
    let setup = Setup::new()
        .facilities(FACILITIES)
        .conf_extra(&format!("[http]\nlisten = 127.0.0.1:0\n{extra}"));
    let tokens: String = TOKENS
        .iter()
        .map(|(t, scopes)| format!("{} {scopes}\n", sha256_hex(t.as_bytes())))
        .collect();
    std::fs::write(
        setup.root().join("tokens"),
        format!("# test tokens\n{tokens}"),
    )
    .unwrap();
    setup
}

fn token_setup() -> Setup {
    setup_with("tokens_file = tokens\n")
}

/// A curl reply: status (0 when no HTTP reply came), headers, body.
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: String,
    pub(crate) body: String,
}

/// Runs `curl` with `args` against `url`: a POST of `body`, or a GET.
pub(crate) fn run_curl(url: &str, args: &[&str], body: Option<&[u8]>) -> Reply {
    let dir = tempfile::tempdir().unwrap();
    let (data, head) = (dir.path().join("data"), dir.path().join("head"));
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "20", "-o", "-", "-w", "\n%{http_code}"])
        .arg("-D")
        .arg(&head);
    if let Some(body) = body {
        std::fs::write(&data, body).unwrap();
        cmd.arg("--data-binary").arg(format!("@{}", data.display()));
    }
    let out = cmd.args(args).arg(url).output().expect("run curl");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    Reply {
        status: code.trim().parse().unwrap_or(0),
        headers: std::fs::read_to_string(&head).unwrap_or_default(),
        body: body.to_owned(),
    }
}

/// Runs `curl` with `args` against `url`, POSTing `body`.
fn curl(url: &str, args: &[&str], body: &[u8]) -> Reply {
    run_curl(url, args, Some(body))
}

/// A setup whose `[http]` serves HTTPS with the test CA's server
/// certificate; `extra` goes into `[http]` too.
fn tls_setup_with(extra: &str) -> Setup {
    setup_with(&format!("tls = yes\n{extra}")).server_extra(&format!(
        "pemfile = {}\ncacert = {}",
        cert("loghog-server.pem").display(),
        cert("loghog-ca.cert").display()
    ))
}

/// curl against the daemon's HTTPS listener, by the name its certificate
/// has (`localhost`), trusting the test CA.
struct Https {
    /// `https://localhost:PORT`.
    base: String,
    /// `--resolve` and `--cacert`.
    args: Vec<String>,
}

impl Https {
    fn new(addr: SocketAddr) -> Https {
        Https {
            base: format!("https://localhost:{}", addr.port()),
            args: vec![
                "--resolve".into(),
                format!("localhost:{}:127.0.0.1", addr.port()),
                "--cacert".into(),
                cert("loghog-ca.cert").display().to_string(),
            ],
        }
    }

    /// `--cert` with the test certificate `name` (from tests/certs).
    fn client(name: &str) -> [String; 2] {
        ["--cert".into(), cert(name).display().to_string()]
    }

    fn run(&self, path: &str, extra: &[String], body: Option<&[u8]>) -> Reply {
        let args: Vec<&str> = self.args.iter().chain(extra).map(String::as_str).collect();
        run_curl(&format!("{}{path}", self.base), &args, body)
    }

    fn post(&self, path: &str, extra: &[String], body: &[u8]) -> Reply {
        self.run(path, extra, Some(body))
    }

    fn get(&self, path: &str, extra: &[String]) -> Reply {
        self.run(path, extra, None)
    }
}

fn post(addr: SocketAddr, path: &str, token: Option<&str>, ctype: &str, body: &[u8]) -> Reply {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let ct = format!("Content-Type: {ctype}");
    let mut args = vec!["-H", &ct];
    if let Some(a) = &auth {
        args.extend(["-H", a.as_str()]);
    }
    curl(&format!("http://{addr}{path}"), &args, body)
}

fn ndjson(addr: SocketAddr, token: Option<&str>, body: &str) -> Reply {
    post(
        addr,
        "/v1/logs",
        token,
        "application/x-ndjson",
        body.as_bytes(),
    )
}

fn line(app: &str, host: &str, body: &str) -> String {
    format!("{{\"app_id\":\"{app}\",\"module\":\"\",\"host\":\"{host}\",\"body\":\"{body}\"}}\n")
}

#[test]
fn http_ndjson_and_json_are_written_through_the_router() {
    let setup = token_setup();
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let body: String = (0..3)
        .map(|i| line("app-a", "web1", &format!("m{i}")))
        .collect();
    let r = ndjson(addr, Some("tok-a"), &body);
    assert_eq!(r.status, 204, "{}", r.body);
    let one = r#"{"app_id":"app-a","module":"web","body":"single \u00e9","severity":"ERROR"}"#;
    let r = post(
        addr,
        "/v1/logs",
        Some("tok-all"),
        "application/json",
        one.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let lines = wait_for_lines(&setup.log("app-a/root.log"), 4, DEADLINE);
    let want = [
        ("web1", "m0"),
        ("web1", "m1"),
        ("web1", "m2"),
        ("127.0.0.1", "ERROR - single é"),
    ];
    assert_eq!(
        hosts_and_bodies(&lines),
        want.map(|(h, b)| (h.to_string(), b.to_string()))
    );
    // Another media type is refused, and not written.
    let r = post(addr, "/v1/logs", Some("tok-a"), "text/xml", body.as_bytes());
    assert_eq!(r.status, 415, "{}", r.body);
    d.wait_stat("written", 4);
    assert_eq!(d.stat("received"), 4);
}

#[test]
fn http_auth_names_the_missing_scope_and_writes_nothing() {
    let setup = token_setup();
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let body = line("app-a", "h", "x");
    // No token, and a token that is not listed: 401 with a challenge.
    for token in [None, Some("not-a-token")] {
        let r = ndjson(addr, token, &body);
        assert_eq!(r.status, 401, "{token:?}: {}", r.body);
        assert!(r.body.contains("write:"), "{}", r.body);
        assert!(
            r.headers
                .to_ascii_lowercase()
                .contains("www-authenticate: bearer"),
            "{}",
            r.headers
        );
        assert!(!r.body.contains("tok-"), "{}", r.body);
    }
    // A token for another app, and one with only `metrics`: 403 naming
    // write:app-a and nothing about which tokens exist.
    for token in ["tok-b", "tok-metrics"] {
        let r = ndjson(addr, Some(token), &body);
        assert_eq!(r.status, 403, "{token}: {}", r.body);
        assert!(r.body.contains("write:app-a"), "{}", r.body);
        assert!(
            !r.body.contains("tok-") && !r.body.contains("app-b"),
            "{}",
            r.body
        );
    }
    // A batch mixing an allowed and a forbidden app writes nothing.
    let mixed = format!(
        "{}{}",
        line("app-b", "h", "allowed"),
        line("app-a", "h", "not")
    );
    let r = ndjson(addr, Some("tok-b"), &mixed);
    assert_eq!(r.status, 403, "{}", r.body);
    // The right token still works, and is the only write that happened.
    let r = ndjson(addr, Some("tok-a"), &line("app-a", "h", "ok"));
    assert_eq!(r.status, 204, "{}", r.body);
    d.wait_stat("written", 1);
    assert_eq!(d.stat("received"), 1);
    assert!(!setup.log("app-b/root.log").exists());
    assert_eq!(bodies(&read_lines(&setup, "app-a/root.log")), vec!["ok"]);
}

fn read_lines(setup: &Setup, rel: &str) -> Vec<String> {
    read(&setup.log(rel)).lines().map(str::to_owned).collect()
}

#[test]
fn http_ndjson_bad_line_is_reported_and_the_others_written() {
    let setup = token_setup();
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let body = format!(
        "{}{{\"app_id\": \"app-a\", \"body\": 5}}\n{}not json\n{}",
        line("app-a", "h", "one"),
        line("app-a", "h", "three"),
        line("nobody", "h", "five")
    );
    let r = ndjson(addr, Some("tok-all"), &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("line 2:"), "{}", r.body);
    assert!(r.body.contains("line 4:"), "{}", r.body);
    assert!(
        r.body.contains("line 5: no facility for app_id \"nobody\""),
        "{}",
        r.body
    );
    assert!(
        !r.body.contains("line 1:") && !r.body.contains("line 3:"),
        "{}",
        r.body
    );
    assert!(
        r.body.contains("2 records were written, 3 were not"),
        "{}",
        r.body
    );
    let lines = wait_for_lines(&setup.log("app-a/root.log"), 2, DEADLINE);
    assert_eq!(bodies(&lines), vec!["one", "three"]);
    d.wait_stat("bad_frames", 2);
    d.wait_stat("unknown_app", 1);
}

#[test]
fn http_body_over_max_body_is_413() {
    let setup = setup_with("tokens_file = tokens\nmax_body = 1024\n");
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let big = line("app-a", "h", &"x".repeat(2000));
    let r = ndjson(addr, Some("tok-a"), &big);
    assert_eq!(r.status, 413, "{}", r.body);
    assert!(r.body.contains("max_body"), "{}", r.body);
    // Without a Content-Length (chunked), the limit holds all the same.
    let r = curl(
        &format!("http://{addr}/v1/logs"),
        &[
            "-H",
            "Authorization: Bearer tok-a",
            "-H",
            "Transfer-Encoding: chunked",
        ],
        big.as_bytes(),
    );
    assert_eq!(r.status, 413, "{}", r.body);
    let r = ndjson(addr, Some("tok-a"), &line("app-a", "h", "small"));
    assert_eq!(r.status, 204, "{}", r.body);
    d.wait_stat("written", 1);
    assert_eq!(d.stat("received"), 1);
}

#[test]
fn http_signed_facility_needs_the_body_hmac() {
    let setup = token_setup();
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let body = line("signed", "h", "sig");
    let r = ndjson(addr, Some("tok-all"), &body);
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("X-Loghog-Signature"), "{}", r.body);
    let wrong = format!("X-Loghog-Signature: {}", hmac_hex("other", body.as_bytes()));
    let r = curl(
        &format!("http://{addr}/v1/logs"),
        &["-H", "Authorization: Bearer tok-all", "-H", &wrong],
        body.as_bytes(),
    );
    assert_eq!(r.status, 400, "{}", r.body);
    d.wait_stat("bad_signature", 2);
    let good = format!(
        "X-Loghog-Signature: {}",
        hmac_hex("s3cr3t", body.as_bytes())
    );
    let r = curl(
        &format!("http://{addr}/v1/logs"),
        &["-H", "Authorization: Bearer tok-all", "-H", &good],
        body.as_bytes(),
    );
    assert_eq!(r.status, 204, "{}", r.body);
    let lines = wait_for_lines(&setup.log("signed/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), vec!["sig"]);
    d.wait_stat("written", 1);
    assert_eq!(d.stat("written"), 1);
}

/// Exactly what the Daedalus Python client sends (httplib, no Content-Type).
#[test]
fn http_daedalus_form_post_gets_exactly_201_ok() {
    let setup = setup_with("allow_anonymous_on_loopback = yes\n");
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let form = "application=app-b&host=db%2D1&severity=WARNING&message=disk+at+91%25&timestamp=1358363502.25";
    let request = format!(
        "POST /backend/save/ HTTP/1.1\r\nHost: {addr}\r\nAccept-Encoding: identity\r\n\
         Content-Length: {}\r\n\r\n{form}",
        form.len()
    );
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.write_all(request.as_bytes()).unwrap();
    let mut reply = Vec::new();
    let mut buf = [0u8; 4096];
    let start = Instant::now();
    // Read until the whole (Content-Length delimited) body is in.
    while !String::from_utf8_lossy(&reply).ends_with(r#"{"status": "ok"}"#) {
        assert!(
            start.elapsed() < DEADLINE,
            "reply: {}",
            String::from_utf8_lossy(&reply)
        );
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "closed; reply: {}", String::from_utf8_lossy(&reply));
        reply.extend_from_slice(&buf[..n]);
    }
    let reply = String::from_utf8(reply).unwrap();
    assert!(reply.starts_with("HTTP/1.1 201 Created\r\n"), "{reply}");
    let (_, body) = reply.split_once("\r\n\r\n").unwrap();
    assert_eq!(body, r#"{"status": "ok"}"#);
    let lines = wait_for_lines(&setup.log("app-b/root.log"), 1, DEADLINE);
    let (_, host, body) = parse_line(&lines[0]);
    assert_eq!(
        (host.as_str(), body.as_str()),
        ("db-1", "WARNING - disk at 91%")
    );
    // `curl -d` one-liner (form Content-Type) and a missing field.
    let r = curl(
        &format!("http://{addr}/backend/save/"),
        &[],
        b"application=app-b&message=hi",
    );
    assert_eq!((r.status, r.body.as_str()), (201, r#"{"status": "ok"}"#));
    let r = curl(
        &format!("http://{addr}/backend/save/"),
        &[],
        b"application=app-b",
    );
    assert_eq!(r.status, 400, "{}", r.body);
    assert!(r.body.contains("message"), "{}", r.body);
    d.wait_stat("written", 2);
}

#[test]
fn http_mutual_tls_accepts_our_ca_and_refuses_another() {
    let setup = tls_setup_with("");
    let d = InProcess::start(&setup);
    let https = Https::new(d.addr("http"));
    let with = |client: Option<&str>, body: &str| {
        let args: Vec<String> = client.map(Https::client).into_iter().flatten().collect();
        https.post("/v1/logs", &args, line("app-a", "h", body).as_bytes())
    };
    let r = with(Some("client.pem"), "mtls");
    assert_eq!(r.status, 204, "{}", r.body);
    // Another CA's certificate, and none at all: refused in the handshake.
    assert_eq!(with(Some("other-client.pem"), "other").status, 0);
    assert_eq!(with(None, "none").status, 0);
    d.wait_stat("tls_refused", 2);
    let lines = wait_for_lines(&setup.log("app-a/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), vec!["mtls"]);
    d.wait_stat("written", 1);
    assert_eq!(d.stat("received"), 1);
}

#[test]
fn http_tls_with_tokens_takes_a_token_instead_of_a_certificate() {
    let setup = tls_setup_with("tokens_file = tokens\n");
    let d = InProcess::start(&setup);
    let https = Https::new(d.addr("http"));
    let body = line("app-a", "h", "tok");
    let r = https.post("/v1/logs", &[], body.as_bytes());
    assert_eq!(r.status, 401, "{}", r.body);
    let token = ["-H".to_string(), "Authorization: Bearer tok-a".to_string()];
    let r = https.post("/v1/logs", &token, body.as_bytes());
    assert_eq!(r.status, 204, "{}", r.body);
    // A presented certificate must still chain to cacert.
    let other: Vec<String> = Https::client("other-client.pem")
        .into_iter()
        .chain(token)
        .collect();
    let r = https.post("/v1/logs", &other, body.as_bytes());
    assert_eq!(r.status, 0, "{}", r.body);
    d.wait_stat("written", 1);
}

/// A client certificate from the CA is for an application host: by
/// default (`cert_scopes = write:*`) it writes every app but may not
/// scrape; a `cert:CN` line in the tokens file replaces that with its own
/// scopes, taken on reload.
#[test]
fn http_client_certificate_gets_cert_scopes_unless_a_cert_line_says_otherwise() {
    let setup = tls_setup_with("tokens_file = tokens\n");
    let d = InProcess::start(&setup);
    let https = Https::new(d.addr("http"));
    let client = Https::client("client.pem"); // subject CN=client
    let post =
        |app: &str, body: &str| https.post("/v1/logs", &client, line(app, "h", body).as_bytes());
    assert_eq!(post("app-b", "default scopes").status, 204);
    let r = https.get("/metrics", &client);
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(
        r.body.contains("client certificate lacks scope metrics"),
        "{}",
        r.body
    );
    d.wait_stat("written", 1);

    let tokens = setup.root().join("tokens");
    let mut text = read(&tokens);
    text.push_str("cert:client metrics write:app-a\n");
    std::fs::write(&tokens, text).unwrap();
    d.reload().expect("reload");
    let r = https.get("/metrics", &client);
    assert_eq!(r.status, 200, "{}", r.body);
    let scrape = crate::metrics::parse(&r.body);
    assert_eq!(
        crate::metrics::value(&scrape, "loghogd_written_total", &[]),
        1.0
    );
    // The line's scopes replace cert_scopes: app-b is no longer allowed.
    let r = post("app-b", "not any more");
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("write:app-b"), "{}", r.body);
    assert_eq!(post("app-a", "by its line").status, 204);
    d.wait_stat("written", 2);
    assert_eq!(
        bodies(&read_lines(&setup, "app-b/root.log")),
        ["default scopes"]
    );
    assert_eq!(
        bodies(&read_lines(&setup, "app-a/root.log")),
        ["by its line"]
    );
}

/// `[http] cert_scopes` sets what a certificate without a `cert:` line
/// gets (here without a tokens file, so the certificate is required).
#[test]
fn http_cert_scopes_sets_what_a_certificate_gets() {
    let setup = tls_setup_with("cert_scopes = metrics\n");
    let d = InProcess::start(&setup);
    let https = Https::new(d.addr("http"));
    let client = Https::client("client.pem");
    let r = https.post("/v1/logs", &client, line("app-a", "h", "no").as_bytes());
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("lacks scope write:app-a"), "{}", r.body);
    let r = https.get("/metrics", &client);
    assert_eq!(r.status, 200, "{}", r.body);
    assert_eq!(d.stat("received"), 0);
}

/// Anonymous access on loopback (the Debian default) writes any app and
/// scrapes `/metrics` (for `loghog-top`) without credentials.
#[test]
fn http_anonymous_on_loopback_writes_and_scrapes() {
    let setup = setup_with("allow_anonymous_on_loopback = yes\n");
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    assert_eq!(ndjson(addr, None, &line("app-b", "h", "anon")).status, 204);
    d.wait_stat("written", 1);
    let r = get(addr, "/metrics", None);
    assert_eq!(r.status, 200, "{}", r.body);
    let scrape = crate::metrics::parse(&r.body);
    assert_eq!(
        crate::metrics::value(&scrape, "loghogd_written_total", &[]),
        1.0
    );
    assert_eq!(bodies(&read_lines(&setup, "app-b/root.log")), ["anon"]);
}

/// SIGHUP re-reads `tokens_file`: a new token works and a removed one is
/// refused at once; a broken file is refused with one line naming the file
/// and line (and not the secret in it), and the tokens before it stay.
#[test]
fn http_sighup_rereads_the_tokens_file_and_keeps_it_when_broken() {
    let setup = Setup::new()
        .facilities(FACILITIES)
        .conf_extra("[http]\nlisten = 127.0.0.1:0\ntokens_file = tokens\n");
    let tokens = setup.root().join("tokens");
    let write_tokens = |text: String| std::fs::write(&tokens, text).unwrap();
    write_tokens(format!("{} write:app-a\n", sha256_hex(b"tok-A")));
    let mut d = Daemon::start(&setup);
    let addr = *d
        .addrs("http")
        .first()
        .expect("no `listening on http ADDR` line");
    let send = |token: &str, body: &str| ndjson(addr, Some(token), &line("app-a", "h", body));
    assert_eq!(send("tok-A", "a-before").status, 204);
    assert_eq!(send("tok-B", "b-before").status, 401);

    write_tokens(format!("{} write:app-a\n", sha256_hex(b"tok-B")));
    d.signal("HUP");
    d.wait_for_log("http tokens reloaded");
    assert_eq!(send("tok-A", "a-after").status, 401);
    assert_eq!(send("tok-B", "b-after").status, 204);

    // A token pasted where its hash belongs: refused, B stays.
    write_tokens("tok-C write:app-a\n".to_owned());
    d.signal("HUP");
    let err = d.wait_for_log("http tokens reload failed");
    let failed: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("http tokens reload failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{err}");
    let tokens_path = tokens.display().to_string();
    for want in [tokens_path.as_str(), "line 1", "sha256sum"] {
        assert!(failed[0].contains(want), "{want}: {}", failed[0]);
    }
    assert_eq!(send("tok-B", "b-kept").status, 204);
    assert_eq!(send("tok-C", "c").status, 401);
    let lines = wait_for_lines(&setup.log("app-a/root.log"), 3, DEADLINE);
    assert_eq!(bodies(&lines), ["a-before", "b-after", "b-kept"]);
    let log = d.stop();
    assert!(!log.contains("tok-C"), "a token reached the log:\n{log}");
}

/// A full disk holds the writer (it retries, nothing lost); its queue fills
/// and HTTP answers 503 with Retry-After instead of buffering; once there is
/// room again, posts are taken.
#[test]
fn http_backed_up_writer_is_503_with_retry_after() {
    let setup = token_setup();
    let fs = Tmpfs::mount(&setup.logdir(), "64k");
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let chunk: String = (0..40)
        .map(|i| line("app-a", "h", &format!("{i:04} {}", "y".repeat(200))))
        .collect();
    let start = Instant::now();
    let busy = loop {
        assert!(
            start.elapsed() < DEADLINE * 2,
            "no 503 while the disk is full; stats: {}",
            d.remote.stats.summary()
        );
        let r = ndjson(addr, Some("tok-a"), &chunk);
        match r.status {
            204 => continue,
            503 => break r,
            other => panic!("unexpected {other}: {}", r.body),
        }
    };
    assert!(
        busy.headers.to_ascii_lowercase().contains("retry-after: 1"),
        "{}",
        busy.headers
    );
    assert!(busy.body.contains("were not accepted"), "{}", busy.body);
    assert!(d.stat("http_busy") >= 40);
    fs.resize("64m");
    let start = Instant::now();
    loop {
        assert!(
            start.elapsed() < DEADLINE,
            "still refused after the disk had room"
        );
        let r = ndjson(addr, Some("tok-a"), &line("app-a", "h", "after"));
        if r.status == 204 {
            break;
        }
        assert_eq!(r.status, 503, "{}", r.body);
    }
    wait_for_content(
        &setup.log("app-a/root.log"),
        "the line after the disk had room",
        |t| t.contains(" - after\n"),
    );
    let mut d = d;
    d.stop();
    // Every message received was written or refused with a 503.
    assert_eq!(d.stat("received"), d.stat("written") + d.stat("http_busy"));
}

#[test]
fn http_without_authentication_off_loopback_is_a_config_error() {
    // (the [http] lines, the file the error names, the fix it gives)
    for (extra, file, fix) in [
        (
            "listen = 0.0.0.0:0\n",
            "loghogd.conf",
            "not a loopback address",
        ),
        (
            "listen = 127.0.0.1:0\n",
            "loghogd.conf",
            "allow_anonymous_on_loopback = yes",
        ),
        (
            "listen = 127.0.0.1:0\ntokens_file = missing-tokens\n",
            "missing-tokens",
            "missing-tokens",
        ),
        (
            "listen = 127.0.0.1:0\nallow_anonymous_on_loopback = yes\ncert_scopes = write:* metric\n",
            "loghogd.conf",
            "[http] cert_scopes (line ",
        ),
        (
            "listen = 127.0.0.1:0\ntokens_file = bad-tokens\n",
            "bad-tokens: line 2",
            "not a scope; use write:APP",
        ),
    ] {
        let setup = Setup::new().conf_extra(&format!("[http]\n{extra}"));
        setup.write();
        std::fs::write(
            setup.root().join("bad-tokens"),
            "# a cert line with a misspelt scope\ncert:app-host metric\n",
        )
        .unwrap();
        let out = setup.run(&["--check-config"]);
        assert_eq!(out.status.code(), Some(78), "{extra}: {out:?}");
        assert!(out.all().contains(file), "{extra}: {out:?}");
        assert!(out.all().contains(fix), "{extra}: {out:?}");
    }
}

#[test]
fn http_connection_cap_closes_the_extra_connection() {
    let setup = setup_with("tokens_file = tokens\nmax_connections = 1\n");
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    // One connection holds the only slot (keep-alive, idle) ...
    let mut held = TcpStream::connect(addr).unwrap();
    let req = format!(
        "POST /v1/logs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer tok-a\r\nContent-Length: {}\r\n\r\n{}",
        line("app-a", "h", "held").len(),
        line("app-a", "h", "held")
    );
    held.write_all(req.as_bytes()).unwrap();
    held.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut buf = [0u8; 512];
    let n = held.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 204"));
    // ... so the next is closed at once, without a reply.
    let r = ndjson(addr, Some("tok-a"), &line("app-a", "h", "refused"));
    assert_eq!(r.status, 0, "{}", r.body);
    d.wait_stat("connections_refused", 1);
    drop(held);
    let start = Instant::now();
    loop {
        assert!(start.elapsed() < DEADLINE, "the slot never came back");
        if ndjson(addr, Some("tok-a"), &line("app-a", "h", "later")).status == 204 {
            break;
        }
    }
    d.wait_stat("written", 2);
}

#[test]
fn http_hosts_reach_file_per_host_paths_safely() {
    let setup = Setup::new()
        .facilities("[app-a]\nrotate = daily\nbackup_count = 3\nfile_per_host = yes\n")
        .conf_extra("[http]\nlisten = 127.0.0.1:0\nallow_anonymous_on_loopback = yes\n");
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let body = format!(
        "{}{}",
        line("app-a", "web1", "one"),
        line("app-a", "../evil", "two")
    );
    let r = ndjson(addr, None, &body);
    assert_eq!(r.status, 204, "{}", r.body);
    d.wait_stat("written", 2);
    assert_eq!(
        bodies(&read_lines(&setup, "app-a/web1-root.log")),
        vec!["one"]
    );
    let files = log_files(&setup);
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.iter().all(|f| f.starts_with("app-a/")), "{files:?}");
}

/// `GET url` with an optional bearer token.
fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Reply {
    let auth = token.map(|t| format!("Authorization: Bearer {t}"));
    let args: Vec<&str> = auth.iter().flat_map(|h| ["-H", h.as_str()]).collect();
    run_curl(&format!("http://{addr}{path}"), &args, None)
}

/// `/metrics` and `/healthz` on the daemon's HTTP listener: the `metrics`
/// scope is required (401 without a token, 403 with a write-only one), and
/// the scrape, read by a real Prometheus text parser, counts what was sent.
#[test]
fn http_metrics_and_healthz_need_the_metrics_scope_and_count_what_was_sent() {
    let setup = token_setup();
    let d = InProcess::start(&setup);
    let addr = d.addr("http");
    let batch = format!(
        "{}{}",
        line("app-a", "h1", "one"),
        line("app-a", "h1", "two")
    );
    assert_eq!(ndjson(addr, Some("tok-a"), &batch).status, 204);
    d.wait_stat("written", 2);
    for path in ["/metrics", "/healthz"] {
        let none = get(addr, path, None);
        assert_eq!(none.status, 401, "{path}: {}", none.body);
        assert!(
            none.body.contains("metrics"),
            "names the scope: {}",
            none.body
        );
        assert_eq!(get(addr, path, Some("tok-a")).status, 403, "{path}");
    }
    let ok = get(addr, "/metrics", Some("tok-metrics"));
    assert_eq!(ok.status, 200, "{}", ok.body);
    let scrape = crate::metrics::parse(&ok.body);
    assert_eq!(
        crate::metrics::value(&scrape, "loghogd_written_total", &[]),
        2.0
    );
    assert_eq!(
        crate::metrics::value(
            &scrape,
            "loghogd_input_received_total",
            &[("input", "http")]
        ),
        2.0
    );
    let health = get(addr, "/healthz", Some("tok-metrics"));
    assert_eq!(health.status, 200, "{}", health.body);
}
