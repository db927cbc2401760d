//! The log viewer (issue 15) over real HTTP (curl) against the in-process
//! daemon, on real files: cursor pages newest first across the live file
//! and plain, xz, gzip and bzip2 backups; a cursor that survives a real
//! rotation; the host, severity, time-range, literal, regex and
//! case-insensitive filters; the work cap that says where it stopped;
//! read scopes (tokens, the login cookie, anonymous only by opt-in);
//! what the URL cannot reach (hosts not on disk, symlinks, other apps);
//! download, chart and the live tail across a rotation. The browser
//! tests (tests/it/browser.rs) drive the same pages in Chromium.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::http::{run_curl, sha256_hex, Reply};
use crate::util::*;

const FACILITIES: &str = "\
[app-a]
rotate = daily
backup_count = 30

[app-a:web]
rotate = size
max_size = 4000
backup_count = 30

[hosts]
rotate = daily
backup_count = 5
file_per_host = yes

[app-b]
rotate = daily
backup_count = 3
";

const TOKENS: &[(&str, &str)] = &[
    ("tok-read-a", "read:app-a"),
    ("tok-read-all", "read:*"),
    ("tok-write", "write:*"),
];

/// A daemon serving the viewer with the test tokens; `http` and
/// `viewer` are added to those sections.
fn start(http: &str, viewer: &str) -> (Setup, InProcess) {
    let setup = Setup::new().facilities(FACILITIES).conf_extra(&format!(
        "[http]\nlisten = 127.0.0.1:0\n{http}\n[viewer]\n{viewer}\n"
    ));
    let tokens: String = TOKENS
        .iter()
        .map(|(t, s)| format!("{} {s}\n", sha256_hex(t.as_bytes())))
        .collect();
    std::fs::write(setup.root().join("tokens"), tokens).unwrap();
    let d = InProcess::start(&setup);
    serving(d.addr("http"));
    (setup, d)
}

/// Waits until the daemon answers HTTP. `InProcess::start` returns while
/// the daemon's thread is still starting, and its start-up crash recovery
/// lists the app directories before the listeners serve: the history a
/// test writes before that is taken for backups a crash left uncompressed
/// (the plain one is compressed to xz in the background, possibly while
/// the test still writes it or while a page reads it). Written after this,
/// the files are the daemon's own history, as the tests mean them.
fn serving(addr: SocketAddr) {
    // Any answer (here 401: no credentials) means the server is running.
    let r = run_curl(&format!("http://{addr}/"), &[], None);
    assert_ne!(r.status, 0, "the daemon does not answer HTTP");
}

fn token_daemon(viewer: &str) -> (Setup, InProcess) {
    start("tokens_file = tokens", viewer)
}

fn get(addr: SocketAddr, path: &str, token: &str) -> Reply {
    let auth = format!("Authorization: Bearer {token}");
    run_curl(&format!("http://{addr}{path}"), &["-H", &auth], None)
}

/// `YYYY-MM-DD HH:MM:SS.ffffff - host - body` at day `day` of Nov/Dec
/// 2026, second `n`.
fn line_at(day: &str, n: u32, host: &str, body: &str) -> String {
    format!(
        "{day} {:02}:{:02}:{:02}.{:06} - {host} - {body}\n",
        n / 3600 % 24,
        n / 60 % 60,
        n % 60,
        n % 1_000_000
    )
}

fn compress(codec: &str, data: &[u8]) -> Vec<u8> {
    use std::io::Write as _;
    match codec {
        "xz" => {
            let mut e = xz2::write::XzEncoder::new(Vec::new(), 1);
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "gz" => {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        "bz2" => {
            let mut e = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
            e.write_all(data).unwrap();
            e.finish().unwrap()
        }
        _ => data.to_vec(),
    }
}

/// The numbers of `line NNNNN` bodies on a page, in page order.
fn numbers(html: &str) -> Vec<u32> {
    html.split("<li class=\"line\"")
        .skip(1)
        .filter_map(|li| {
            let i = li.find("line ")?;
            li[i + 5..i + 10].parse().ok()
        })
        .collect()
}

/// The `href` of `<a id="older">`, unescaped.
fn older_link(html: &str) -> Option<String> {
    let i = html.find("id=\"older\" href=\"")?;
    let rest = &html[i + 17..];
    Some(rest[..rest.find('"')?].replace("&amp;", "&"))
}

/// Writes five generations of app-a's root facility: backups on Nov 28
/// (plain), 29 (xz), 30 (gz), Dec 1 (bz2) and the live file on Dec 2,
/// `per` lines each, numbered in time order from 0.
fn write_history(logdir: &Path, per: u32) -> u32 {
    let dir = logdir.join("app-a");
    std::fs::create_dir_all(&dir).unwrap();
    let gens = [
        ("2026-11-28", "root.log.2026-11-28-00-00-00-000000", ""),
        ("2026-11-29", "root.log.2026-11-29-00-00-00-000000.xz", "xz"),
        ("2026-11-30", "root.log.2026-11-30-00-00-00-000000.gz", "gz"),
        (
            "2026-12-01",
            "root.log.2026-12-01-00-00-00-000000.bz2",
            "bz2",
        ),
        ("2026-12-02", "root.log", ""),
    ];
    let mut n = 0;
    for (day, name, codec) in gens {
        let mut text = String::new();
        for i in 0..per {
            let level = ["INFO", "ERROR", "WARNING", "DEBUG"][(n % 4) as usize];
            text.push_str(&line_at(
                day,
                60 + i * 7,
                &format!("host-{}", n % 3),
                &format!("{level} - line {n:05} word{}", n % 10),
            ));
            n += 1;
        }
        std::fs::write(dir.join(name), compress(codec, text.as_bytes())).unwrap();
    }
    n
}

#[test]
fn viewer_pages_go_newest_first_through_every_backup_codec_by_cursor() {
    let (setup, d) = token_daemon("page_lines = 7");
    let total = write_history(&setup.logdir(), 20);
    let addr = d.addr("http");
    let mut seen = Vec::new();
    let mut path = "/app/app-a/root".to_owned();
    for _ in 0..40 {
        let r = get(addr, &path, "tok-read-a");
        assert_eq!(r.status, 200, "{}", r.body);
        let page = numbers(&r.body);
        assert!(page.len() <= 7, "{page:?}");
        seen.extend(page);
        match older_link(&r.body) {
            Some(next) => path = next,
            None => break,
        }
    }
    // The plain backup was read as a plain file: the daemon did not take
    // it for a crash's leftover and compress it (see `serving`).
    let plain = setup
        .logdir()
        .join("app-a/root.log.2026-11-28-00-00-00-000000");
    assert!(plain.is_file(), "{} is gone", plain.display());
    let want: Vec<u32> = (0..total).rev().collect();
    assert_eq!(
        seen,
        want,
        "every line once, newest first, across 5 files: {}",
        seq_diff(&seen, &want)
    );
}

/// What is wrong with `seen` against `want` (both line numbers), compactly:
/// the numbers missing, those shown more than once, and the first place
/// the order differs. A failure says which lines, not two long lists.
fn seq_diff(seen: &[u32], want: &[u32]) -> String {
    use std::collections::BTreeMap;
    let mut count: BTreeMap<u32, usize> = BTreeMap::new();
    for n in seen {
        *count.entry(*n).or_default() += 1;
    }
    let missing: Vec<u32> = want
        .iter()
        .copied()
        .filter(|n| !count.contains_key(n))
        .collect();
    let twice: Vec<(u32, usize)> = count
        .iter()
        .filter(|(_, c)| **c > 1)
        .map(|(n, c)| (*n, *c))
        .collect();
    let extra: Vec<u32> = count
        .keys()
        .copied()
        .filter(|n| !want.contains(n))
        .collect();
    let first_diff = seen.iter().zip(want).position(|(a, b)| a != b);
    format!(
        "{} seen, {} wanted; missing {missing:?}; repeated (number, times) {twice:?}; \
         unexpected {extra:?}; first difference at index {first_diff:?}",
        seen.len(),
        want.len()
    )
}

#[test]
fn viewer_filters_by_host_severity_time_and_search() {
    let (setup, d) = token_daemon("");
    write_history(&setup.logdir(), 40);
    let addr = d.addr("http");
    let page = |q: &str| {
        let r = get(addr, &format!("/app/app-a/root?{q}"), "tok-read-a");
        assert_eq!(r.status, 200, "{q}: {}", r.body);
        r.body
    };
    // Host field: every third line.
    let b = page("host=host-1");
    let ns = numbers(&b);
    assert!(!ns.is_empty() && ns.iter().all(|n| n % 3 == 1), "{ns:?}");
    // Severity: error and above only (the ERROR lines, n % 4 == 1).
    let ns = numbers(&page("severity=error"));
    assert!(!ns.is_empty() && ns.iter().all(|n| n % 4 == 1), "{ns:?}");
    // Warning and above: WARNING and ERROR.
    let ns = numbers(&page("severity=warning"));
    assert!(ns.iter().all(|n| n % 4 == 1 || n % 4 == 2), "{ns:?}");
    // A time range inside the gzip backup's day (Nov 30): lines 80..120.
    let b = page("from=2026-11-30T00:00&to=2026-12-01T00:00");
    assert_eq!(numbers(&b), (80..120).rev().collect::<Vec<_>>());
    // Files wholly outside the range are not read: the live file (started
    // Dec 2, known from its first line) and Nov 28 are skipped; Nov 29 and
    // Dec 1 are within the minute of slack around the bounds.
    assert!(b.contains("in 3 of 5 files"), "{b}");
    // Literal search across all files; a regex; case-insensitively.
    let ns = numbers(&page("q=word7"));
    assert!(ns.len() == 20 && ns.iter().all(|n| n % 10 == 7), "{ns:?}");
    let ns = numbers(&page("q=line+0010%5B0-4%5D+%7Cline+00009+w&mode=regex"));
    assert_eq!(ns, vec![104, 103, 102, 101, 100, 9]);
    let ns = numbers(&page("q=WORD7&icase=on"));
    assert_eq!(ns.len(), 20);
    assert!(numbers(&page("q=WORD7")).is_empty());
    // All filters at once, and the form shows them back.
    let b = page("q=word&host=host-2&severity=error&from=2026-11-29T00:00&to=2026-12-02T00:00");
    let ns = numbers(&b);
    assert!(
        !ns.is_empty()
            && ns
                .iter()
                .all(|n| n % 3 == 2 && n % 4 == 1 && (40..160).contains(n)),
        "{ns:?}"
    );
    assert!(b.contains("value=\"host-2\"") && b.contains("<option value=\"error\" selected>"));
    // A bad regex is said on the page, not a crash.
    let b = page("q=%28&mode=regex");
    assert!(
        b.contains("id=\"error\"") && b.contains("not a valid regex"),
        "{b}"
    );
}

#[test]
fn viewer_cursor_survives_a_real_rotation_into_an_xz_backup() {
    let (setup, d) = token_daemon("page_lines = 10");
    let addr = d.addr("tcp");
    // app-a:web rotates at 4000 bytes; each line is about 80 bytes.
    let send = |from: u32, to: u32| {
        let mut s = connect(addr);
        for n in from..to {
            s.write_all(&frame(
                "app-a",
                "web",
                &format!("INFO - line {n:05} padding-padding-padding"),
                &Opts::default(),
            ))
            .unwrap();
        }
    };
    send(0, 30);
    d.wait_stat("written", 30);
    let http = d.addr("http");
    let r = get(http, "/app/app-a/web", "tok-read-a");
    assert_eq!(numbers(&r.body), (20..30).rev().collect::<Vec<_>>());
    let older = older_link(&r.body).expect("an older link");
    // Now the live file rotates (size) and is compressed.
    send(30, 80);
    d.wait_stat("written", 80);
    let dir = setup.logdir().join("app-a");
    let start = Instant::now();
    while !std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().ends_with(".xz"))
    {
        assert!(start.elapsed() < DEADLINE, "no xz backup appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    // The older link still gives the lines right before the first page.
    let r = get(http, &older, "tok-read-a");
    assert_eq!(
        numbers(&r.body),
        (10..20).rev().collect::<Vec<_>>(),
        "{}",
        r.body
    );
}

#[test]
fn viewer_search_stops_at_the_work_cap_and_says_where() {
    let (setup, d) = token_daemon("max_scan_bytes = 1048576");
    let dir = setup.logdir().join("app-a");
    std::fs::create_dir_all(&dir).unwrap();
    let mut text = String::new();
    let mut n = 0;
    while text.len() < 4 << 20 {
        text.push_str(&line_at(
            "2026-12-02",
            n,
            "h",
            &format!(
                "INFO - line {:05} filler filler filler filler filler",
                n % 100_000
            ),
        ));
        n += 1;
    }
    std::fs::write(dir.join("root.log"), &text).unwrap();
    let r = get(
        d.addr("http"),
        "/app/app-a/root?q=absent-word",
        "tok-read-a",
    );
    assert_eq!(r.status, 200);
    assert!(
        r.body.contains("id=\"stopped\"") && r.body.contains("max_scan_bytes"),
        "{}",
        r.body
    );
    // The link goes on where the scan stopped, and a second request gets
    // further back again.
    let next = older_link(&r.body).expect("a link to go on");
    let r2 = get(d.addr("http"), &next, "tok-read-a");
    assert!(r2.body.contains("id=\"stopped\""));
    assert_ne!(older_link(&r2.body), Some(next));
}

#[test]
fn viewer_needs_a_read_scope_and_the_login_cookie_carries_a_token() {
    let (setup, d) = token_daemon("");
    write_history(&setup.logdir(), 3);
    let addr = d.addr("http");
    let url = |p: &str| format!("http://{addr}{p}");
    // No credentials: 401 with the login form.
    let r = run_curl(&url("/app/app-a/root"), &[], None);
    assert_eq!(r.status, 401);
    assert!(r
        .headers
        .to_ascii_lowercase()
        .contains("www-authenticate: bearer"));
    assert!(r.body.contains("read:app-a") && r.body.contains("action=\"/login\""));
    // A write token cannot read; read:app-a reads app-a only.
    assert_eq!(get(addr, "/app/app-a/root", "tok-write").status, 403);
    assert_eq!(get(addr, "/app/app-a/root", "tok-read-a").status, 200);
    assert_eq!(get(addr, "/app/app-b/root", "tok-read-a").status, 403);
    assert_eq!(
        get(addr, "/app/app-b/root/download", "tok-read-a").status,
        403
    );
    assert_eq!(get(addr, "/app/app-b/root/tail", "tok-read-a").status, 403);
    assert_eq!(get(addr, "/app/app-b/root", "tok-read-all").status, 200);
    // The index lists only what the credential may read.
    let idx = get(addr, "/", "tok-read-a").body;
    assert!(idx.contains("data-app=\"app-a\"") && !idx.contains("data-app=\"app-b\""));
    let idx = get(addr, "/", "tok-read-all").body;
    assert!(idx.contains("data-app=\"app-b\"") && idx.contains("data-app=\"hosts\""));
    // An unknown token at the login form: 401, no cookie.
    let r = run_curl(&url("/login"), &[], Some(b"token=nope"));
    assert_eq!(r.status, 401);
    assert!(!r.headers.to_ascii_lowercase().contains("set-cookie"));
    // A listed one: an HttpOnly, SameSite=Strict cookie that reads.
    let r = run_curl(&url("/login"), &[], Some(b"token=tok-read-a"));
    assert_eq!(r.status, 303, "{}", r.headers);
    let h = r.headers.to_ascii_lowercase();
    assert!(
        h.contains("set-cookie: loghogd_token=tok-read-a; path=/; httponly; samesite=strict"),
        "{h}"
    );
    let r = run_curl(
        &url("/app/app-a/root"),
        &["-H", "Cookie: loghogd_token=tok-read-a"],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(numbers(&r.body).len(), 15);
    // Logging out clears it.
    let r = run_curl(&url("/logout"), &["-X", "POST"], None);
    assert!(r.headers.to_ascii_lowercase().contains("max-age=0"));
    // Every viewer response is locked down.
    let h = get(addr, "/app/app-a/root", "tok-read-a")
        .headers
        .to_ascii_lowercase();
    for want in [
        "content-security-policy: default-src 'none'; script-src 'self'",
        "x-content-type-options: nosniff",
        "x-frame-options: deny",
        "cache-control: no-store",
    ] {
        assert!(h.contains(want), "{want}: {h}");
    }
    // The pages change nothing: no POST on them.
    let r = run_curl(
        &url("/app/app-a/root"),
        &["-H", "Authorization: Bearer tok-read-a"],
        Some(b"x=1"),
    );
    assert_eq!(r.status, 405);
}

#[test]
fn viewer_anonymous_read_is_opt_in_and_only_on_plain_loopback() {
    // Anonymous write and metrics do not include read.
    let (setup, d) = start("allow_anonymous_on_loopback = yes", "");
    write_history(&setup.logdir(), 2);
    let r = run_curl(
        &format!("http://{}/app/app-a/root", d.addr("http")),
        &[],
        None,
    );
    assert_eq!(r.status, 401);
    drop(d);
    let (setup, d) = start(
        "allow_anonymous_on_loopback = yes\nallow_anonymous_read = yes",
        "",
    );
    write_history(&setup.logdir(), 2);
    let r = run_curl(
        &format!("http://{}/app/app-a/root", d.addr("http")),
        &[],
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(numbers(&r.body).len(), 10);
    // A web page whose name was re-pointed at 127.0.0.1 (DNS rebinding)
    // names itself in Host: no anonymous access for it.
    let r = run_curl(
        &format!("http://{}/app/app-a/root", d.addr("http")),
        &["-H", "Host: evil.example"],
        None,
    );
    assert_eq!(r.status, 401);
    // Without the loopback opt-in, or with TLS, the key is refused (78).
    let setup = Setup::new().facilities(FACILITIES).conf_extra(
        "[http]\nlisten = 127.0.0.1:0\ntokens_file = tokens\nallow_anonymous_read = yes\n",
    );
    setup.write();
    std::fs::write(setup.root().join("tokens"), "").unwrap();
    let out = setup.run(&["--check-config"]);
    assert_eq!(out.status.code(), Some(78), "{}", out.all());
    assert!(out.all().contains("allow_anonymous_read"), "{}", out.all());
}

#[test]
fn viewer_reaches_only_the_facilities_files() {
    let (setup, d) = token_daemon("");
    let logdir = setup.logdir();
    let hosts = logdir.join("hosts");
    std::fs::create_dir_all(&hosts).unwrap();
    std::fs::write(
        hosts.join("web-1-root.log"),
        line_at("2026-12-02", 1, "web-1", "INFO - line 00001 from web-1"),
    )
    .unwrap();
    std::fs::write(
        hosts.join("web-2-root.log"),
        line_at("2026-12-02", 2, "web-2", "INFO - line 00002 from web-2"),
    )
    .unwrap();
    let addr = d.addr("http");
    // file_per_host: the host picks one of the files on disk.
    let b = get(addr, "/app/hosts/root?host=web-2", "tok-read-all").body;
    assert_eq!(numbers(&b), vec![2]);
    assert!(
        b.contains("<option value=\"web-1\">") && b.contains("<option value=\"web-2\" selected>")
    );
    // A host that has no file, or one that tries to leave the directory.
    for h in [
        "web-3",
        "..%2F..%2Fetc%2Fpasswd",
        "%2E%2E",
        "web-1-root.log",
    ] {
        let r = get(addr, &format!("/app/hosts/root?host={h}"), "tok-read-all");
        assert_eq!(r.status, 404, "{h}");
    }
    // Unknown apps and modules, and paths that try to climb out.
    for p in [
        "/app/nope/root",
        "/app/app-a/..%2F..%2Fetc%2Fpasswd",
        "/app/..%2Fapp-a/root",
        "/app/app-a/root.log",
    ] {
        assert_eq!(get(addr, p, "tok-read-all").status, 404, "{p}");
    }
    // A symlink planted as an app's directory is not followed.
    let outside = setup.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(
        outside.join("root.log"),
        line_at("2026-12-02", 3, "x", "INFO - line 00003 secret"),
    )
    .unwrap();
    std::os::unix::fs::symlink(&outside, logdir.join("app-b")).unwrap();
    let r = get(addr, "/app/app-b/root", "tok-read-all");
    assert!(!r.body.contains("secret"), "{}", r.body);
    // A body with markup is text on the page.
    let dir = logdir.join("app-a");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("root.log"),
        line_at("2026-12-02", 4, "h", "<script>alert(1)</script><b>x</b>"),
    )
    .unwrap();
    let b = get(addr, "/app/app-a/root", "tok-read-all").body;
    assert!(
        b.contains("&lt;script&gt;alert(1)&lt;/script&gt;&lt;b&gt;x&lt;/b&gt;"),
        "{b}"
    );
    assert!(!b.contains("<script>alert") && !b.contains("<b>x"));
}

#[test]
fn viewer_download_and_chart_cover_the_range() {
    let (setup, d) = token_daemon("");
    write_history(&setup.logdir(), 30);
    let addr = d.addr("http");
    // Download: oldest first, plain text, the filters applied, across a
    // compressed backup and the live file.
    let r = get(
        addr,
        "/app/app-a/root/download?from=2026-12-01T00:00&q=word3",
        "tok-read-a",
    );
    assert_eq!(r.status, 200);
    assert!(r
        .headers
        .to_ascii_lowercase()
        .contains("content-type: text/plain"));
    assert!(r
        .headers
        .contains("attachment; filename=\"app-a-root.log\""));
    let got: Vec<u32> = r
        .body
        .lines()
        .map(|l| l[l.find("line ").unwrap() + 5..][..5].parse().unwrap())
        .collect();
    let want: Vec<u32> = (90..150).filter(|n| n % 10 == 3).collect();
    assert_eq!(got, want);
    // The chart counts per minute: Dec 1 from 00:01, a line every 7 s.
    let r = get(
        addr,
        "/app/app-a/root/chart.svg?from=2026-12-01T00:00&to=2026-12-01T01:00",
        "tok-read-a",
    );
    assert_eq!(r.status, 200);
    assert!(r.headers.contains("image/svg+xml"));
    assert!(
        r.body.starts_with("<svg") && r.body.contains("30 in all"),
        "{}",
        r.body
    );
    assert!(r.body.contains("2026-12-01 00:01: 9"), "{}", r.body);
}

#[test]
fn viewer_live_tail_sends_new_lines_and_follows_a_rotation() {
    let (_setup, d) = token_daemon("");
    let tcp = d.addr("tcp");
    let send = |from: u32, to: u32| {
        let mut s = connect(tcp);
        for n in from..to {
            s.write_all(&frame(
                "app-a",
                "web",
                &format!("INFO - line {n:05} padding-padding-padding"),
                &Opts::default(),
            ))
            .unwrap();
        }
    };
    send(0, 5);
    d.wait_stat("written", 5);
    let mut curl = Command::new("curl")
        .args([
            "-sN",
            "--max-time",
            "30",
            "-H",
            "Authorization: Bearer tok-read-a",
        ])
        .arg(format!("http://{}/app/app-a/web/tail", d.addr("http")))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut out = BufReader::new(curl.stdout.take().unwrap());
    // Give the tail one poll to open the file at its end.
    std::thread::sleep(Duration::from_millis(600));
    let sent = Instant::now();
    // 60 lines of ~85 bytes: the 4000-byte web facility rotates on the way.
    send(5, 65);
    let mut got = Vec::new();
    let mut rotated = false;
    let mut line = String::new();
    while got.len() < 60 {
        line.clear();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "the tail ended after {got:?}"
        );
        if line.starts_with("event: rotated") {
            rotated = true;
        }
        if let Some(data) = line.strip_prefix("data: ") {
            if let Some(i) = data.find("line ") {
                got.push(data[i + 5..i + 10].parse::<u32>().unwrap());
            }
        }
        assert!(
            sent.elapsed() < Duration::from_secs(10),
            "tail too slow: {got:?}"
        );
    }
    let _ = curl.kill();
    let _ = curl.wait();
    assert_eq!(
        got,
        (5..65).collect::<Vec<_>>(),
        "each new line once, in order"
    );
    assert!(rotated, "the facility rotated while the tail ran");
}

#[test]
fn viewer_live_tail_follows_a_compress_on_write_file() {
    let setup = Setup::new().facilities(FACILITIES).conf_extra(
        "[compressor]\ncompress_on_write = yes\n[http]\nlisten = 127.0.0.1:0\ntokens_file = tokens\n",
    );
    std::fs::write(
        setup.root().join("tokens"),
        format!("{} read:*\n", sha256_hex(b"tok")),
    )
    .unwrap();
    let d = InProcess::start(&setup);
    let tcp = d.addr("tcp");
    let send = |from: u32, to: u32| {
        let mut s = connect(tcp);
        for n in from..to {
            s.write_all(&frame(
                "app-b",
                "",
                &format!("INFO - line {n:05}"),
                &Opts::default(),
            ))
            .unwrap();
        }
    };
    send(0, 3);
    d.wait_stat("written", 3);
    assert!(setup.log("app-b/root.log.gz").is_file());
    let mut curl = Command::new("curl")
        .args(["-sN", "--max-time", "30", "-H", "Authorization: Bearer tok"])
        .arg(format!("http://{}/app/app-b/root/tail", d.addr("http")))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut out = BufReader::new(curl.stdout.take().unwrap());
    std::thread::sleep(Duration::from_millis(600));
    // One gzip member per write: several writes, each seen once.
    for n in 3..8 {
        send(n, n + 1);
        d.wait_stat("written", u64::from(n) + 1);
    }
    let mut got = Vec::new();
    let mut line = String::new();
    while got.len() < 5 {
        line.clear();
        assert!(out.read_line(&mut line).unwrap() > 0, "tail ended: {got:?}");
        if let Some(data) = line.strip_prefix("data: ") {
            let i = data.find("line ").unwrap();
            got.push(data[i + 5..i + 10].parse::<u32>().unwrap());
        }
    }
    let _ = curl.kill();
    let _ = curl.wait();
    assert_eq!(got, vec![3, 4, 5, 6, 7]);
}

#[test]
fn viewer_a_compressed_file_past_the_cap_is_named_and_the_link_goes_past_it() {
    let (setup, d) = token_daemon("max_scan_bytes = 1048576\nmax_tails = 1");
    let dir = setup.logdir().join("app-a");
    std::fs::create_dir_all(&dir).unwrap();
    // An old plain backup with the word, and a newer 3 MB xz backup
    // without it: the budget runs out inside the xz file.
    std::fs::write(
        dir.join("root.log.2026-11-28-00-00-00-000000"),
        line_at("2026-11-28", 5, "h", "INFO - line 00001 findme"),
    )
    .unwrap();
    let mut big = String::new();
    let mut n = 0;
    while big.len() < 3 << 20 {
        big.push_str(&line_at(
            "2026-11-29",
            n % 80_000,
            "h",
            "INFO - line 00002 filler filler filler",
        ));
        n += 1;
    }
    std::fs::write(
        dir.join("root.log.2026-11-29-00-00-00-000000.xz"),
        compress("xz", big.as_bytes()),
    )
    .unwrap();
    let addr = d.addr("http");
    let r = get(addr, "/app/app-a/root?q=findme", "tok-read-a");
    assert!(
        r.body.contains("id=\"stopped\"")
            && r.body
                .contains("root.log.2026-11-29-00-00-00-000000.xz (compressed) was not searched"),
        "{}",
        r.body
    );
    // The link does not retry the same file for ever: it goes on with
    // the older one, where the word is.
    let next = older_link(&r.body).expect("a link to go on");
    let r = get(addr, &next, "tok-read-a");
    assert_eq!(numbers(&r.body), vec![1], "{}", r.body);
    // max_tails = 1: a second live tail is refused while one is open.
    let mut first = Command::new("curl")
        .args([
            "-siN",
            "--max-time",
            "20",
            "-H",
            "Authorization: Bearer tok-read-a",
        ])
        .arg(format!("http://{addr}/app/app-a/root/tail"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run curl");
    let mut out = BufReader::new(first.stdout.take().unwrap());
    let mut status = String::new();
    out.read_line(&mut status).unwrap();
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
    let r = get(addr, "/app/app-a/root/tail", "tok-read-a");
    assert_eq!(r.status, 503);
    assert!(r.body.contains("max_tails"), "{}", r.body);
    let _ = first.kill();
    let _ = first.wait();
}
