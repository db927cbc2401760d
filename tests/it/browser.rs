//! The log viewer (issue 15) in a real browser: headless Chromium driven
//! through ChromeDriver (WebDriver over loopback HTTP, `fantoccini`), against
//! an in-process daemon with anonymous read on loopback. Messages go in as
//! real LogHog frames over TCP; every assertion reads what the page shows
//! (the DOM after Chromium ran the viewer's own script), never the HTML the
//! server sent. Covers the facilities table and its link, newest-first
//! order and paging, the host and severity filters (and that they land in
//! the URL), literal and regex search reaching into an xz backup, the live
//! tail (with the delay it took), and a hostile body that must render as
//! text. Saves a screenshot to `target/test-artifacts/viewer.png`.
//!
//! ChromeDriver and Chromium are required: a missing one fails the test
//! with what to install (`.ci/run` installs both), never skips it.

use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

use crate::util::*;

/// Every facility the tests use; each test starts its own daemon with them.
const FACILITIES: &str = "\
[shop]
rotate = daily
backup_count = 3

[shop:web]
rotate = daily
backup_count = 3

[relay]
rotate = daily
backup_count = 3
file_per_host = yes

[py]
rotate = daily
backup_count = 3

[arch]
rotate = size
max_size = 4096
backup_count = 5
";

/// How long the page may take to show something after an action (a
/// navigation, the tail's connection). Generous: CI is a loaded 2-core box.
const PAGE_DEADLINE: Duration = Duration::from_secs(15);

/// The bound for a new line to show up in an open live tail.
const TAIL_BOUND: Duration = Duration::from_secs(2);

// === ChromeDriver ===

/// `name` on `PATH`, else panics saying which Debian package provides it.
fn require(name: &str, package: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: the viewer's browser tests need it \
                 (Debian: apt-get install {package}; .ci/run installs it)"
            )
        })
}

/// A ChromeDriver process on a loopback port it chose itself (`--port=0`,
/// read back from its banner, so no port is guessed and raced for). It runs
/// in its own process group, and dropping it kills that whole group: the
/// driver and every Chromium it started, even when the test panicked before
/// closing its session.
struct Driver {
    child: Child,
    /// `http://127.0.0.1:PORT`.
    url: String,
    /// What the driver printed, for failure messages.
    output: Arc<Mutex<String>>,
}

impl Driver {
    fn start() -> Driver {
        let bin = require("chromedriver", "chromium-driver");
        let mut child = Command::new(&bin)
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let output = Arc::new(Mutex::new(String::new()));
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        // Drain both pipes for the driver's whole life (a full pipe would
        // stall it); stdout carries the banner with the chosen port.
        let stdout = child.stdout.take().expect("piped stdout");
        let out = output.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(port) = line
                    .split("started successfully on port ")
                    .nth(1)
                    .and_then(|rest| rest.trim_end_matches('.').trim().parse::<u16>().ok())
                {
                    let _ = port_tx.send(port);
                }
                let mut o = out.lock().unwrap();
                o.push_str(&line);
                o.push('\n');
            }
        });
        let mut stderr = child.stderr.take().expect("piped stderr");
        let out = output.clone();
        std::thread::spawn(move || {
            let mut buf = String::new();
            let _ = stderr.read_to_string(&mut buf);
            out.lock().unwrap().push_str(&buf);
        });
        let mut driver = Driver {
            child,
            url: String::new(),
            output,
        };
        let port = port_rx.recv_timeout(DEADLINE).unwrap_or_else(|_| {
            panic!(
                "chromedriver announced no port within {DEADLINE:?}; it printed:\n{}",
                driver.output()
            )
        });
        driver.url = format!("http://127.0.0.1:{port}");
        // The banner comes once the port is bound; still, prove it accepts.
        let addr = std::net::SocketAddr::from(([127, 0, 0, 1], port));
        let start = Instant::now();
        while std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1)).is_err() {
            assert!(
                start.elapsed() < DEADLINE,
                "chromedriver does not accept on {addr}; it printed:\n{}",
                driver.output()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        driver
    }

    fn output(&self) -> String {
        self.output.lock().unwrap().clone()
    }
}

impl Drop for Driver {
    fn drop(&mut self) {
        // The group we created for it at spawn: its id is the driver's pid.
        let _ = Command::new("sh")
            .args([
                "-c",
                "kill -s KILL -- -\"$1\"",
                "sh",
                &self.child.id().to_string(),
            ])
            .stderr(Stdio::null())
            .status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A browser session on a fresh driver. `client` is closed by [`close`];
/// if a test panics first, dropping `driver` kills the browser anyway.
struct Browser {
    client: Client,
    /// Declared after `client` so the session's handle drops first.
    driver: Driver,
}

impl Browser {
    /// Headless Chromium, 1400×900, its profile under `profile` (the test's
    /// temp dir, so nothing is left in /tmp).
    async fn start(profile: &Path) -> Browser {
        let chromium = require("chromium", "chromium");
        let driver = Driver::start();
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": chromium,
                "args": [
                    "--headless=new",
                    // The tests run as root, where Chromium's sandbox cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--window-size=1400,900",
                    "--no-first-run",
                    "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.display()),
                ],
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!()
        };
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(caps)
            .connect(&driver.url)
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no Chromium session through {}: {e}; chromedriver printed:\n{}",
                    driver.url,
                    driver.output()
                )
            });
        Browser { client, driver }
    }

    async fn close(self) {
        let Browser { client, driver } = self;
        if let Err(e) = client.close().await {
            panic!(
                "closing the session failed: {e}; chromedriver printed:\n{}",
                driver.output()
            );
        }
    }
}

// === the daemon ===

/// A daemon with the viewer readable anonymously on loopback, `page_lines`
/// lines per page.
fn viewer_setup(page_lines: usize) -> Setup {
    Setup::new().facilities(FACILITIES).conf_extra(&format!(
        "[http]\n\
         listen = 127.0.0.1:0\n\
         allow_anonymous_on_loopback = yes\n\
         allow_anonymous_read = yes\n\
         \n\
         [viewer]\n\
         page_lines = {page_lines}\n"
    ))
}

/// `http://ADDR` of the daemon's HTTP listener.
fn base(d: &InProcess) -> String {
    format!("http://{}", d.addr("http"))
}

/// Sends `(host, body)` messages to `app`'s root facility over one TCP
/// connection, in order.
fn send(d: &InProcess, app: &str, msgs: &[(&str, &str)]) {
    let bytes: Vec<u8> = msgs
        .iter()
        .flat_map(|(host, body)| frame(app, "", body, &Opts::host(host)))
        .collect();
    send_tcp(d.tcp_addr(), &bytes);
}

// === reading the page ===

/// One `li.line` as the browser shows it.
#[derive(Debug, Clone, PartialEq)]
struct Shown {
    sev: String,
    ts: String,
    host: String,
    body: String,
}

/// Every `li.line` of the list `list` (`#lines` or `#tail`), in page order,
/// read in one script call (textContent: exactly the text, no layout).
async fn shown(c: &Client, list: &str) -> Vec<Shown> {
    let script = "
        const part = (li, cls) => {
            const e = li.querySelector('span.' + cls);
            return e === null ? null : e.textContent;
        };
        return Array.from(document.querySelectorAll(arguments[0] + ' li.line')).map(li => ({
            sev: li.getAttribute('data-sev') || '',
            ts: part(li, 'ts'),
            host: part(li, 'host'),
            body: part(li, 'body'),
        }));";
    let v = c
        .execute(script, vec![json!(list)])
        .await
        .unwrap_or_else(|e| panic!("reading {list} li.line: {e}"));
    let Value::Array(items) = v else {
        panic!("reading {list}: not an array: {v}")
    };
    items
        .iter()
        .map(|it| {
            let field = |k: &str| {
                it[k]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| panic!("{list} li.line without span.{k}: {it}"))
            };
            Shown {
                sev: it["sev"].as_str().unwrap_or_default().to_string(),
                ts: field("ts"),
                host: field("host"),
                body: field("body"),
            }
        })
        .collect()
}

fn bodies_of(lines: &[Shown]) -> Vec<&str> {
    lines.iter().map(|l| l.body.as_str()).collect()
}

/// Polls `probe` until it yields `Some`, at most `limit`; panics with `what`
/// and the last thing seen (`last`) when it does not.
async fn wait_until<T, F, Fut>(what: &str, limit: Duration, mut probe: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, String>>,
{
    let start = Instant::now();
    loop {
        match probe().await {
            Ok(v) => return v,
            Err(last) => {
                if start.elapsed() > limit {
                    panic!("{what}: not within {limit:?}; last seen: {last}");
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the page at `c` is the facility view (`#lines` present).
async fn wait_facility_page(c: &Client) {
    wait_until("the facility page (ol#lines)", PAGE_DEADLINE, || async {
        match c.find(Locator::Css("ol#lines")).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let url = c.current_url().await.map(|u| u.to_string());
                let page = c.source().await.unwrap_or_default();
                let page: String = page.chars().take(600).collect();
                Err(format!("{e}; url {url:?}; page starts: {page}"))
            }
        }
    })
    .await
}

/// Submits the filter form and waits until the new URL carries `want` in
/// its query and the facility page is there again.
async fn apply(c: &Client, want: &[&str]) -> String {
    c.find(Locator::Css("button#apply"))
        .await
        .expect("button#apply")
        .click()
        .await
        .expect("click #apply");
    let u = wait_until("the URL after #apply", PAGE_DEADLINE, || async {
        let u = c.current_url().await.map_err(|e| e.to_string())?;
        let q = u.query().unwrap_or_default().to_string();
        if want.iter().all(|w| q.split('&').any(|kv| kv == *w)) {
            Ok(u.to_string())
        } else {
            Err(u.to_string())
        }
    })
    .await;
    wait_facility_page(c).await;
    u
}

async fn text_of(c: &Client, css: &str) -> String {
    c.find(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("{css} text: {e}"))
}

async fn count(c: &Client, css: &str) -> usize {
    c.find_all(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .len()
}

/// Runs one browser test's body on its own runtime.
fn run<F: std::future::Future<Output = ()>>(f: F) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("tokio runtime");
    rt.block_on(f);
}

fn artifact_dir() -> PathBuf {
    // CARGO_TARGET_TMPDIR is `target/tmp`; artifacts sit beside it.
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .parent()
        .expect("target dir")
        .join("test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

// === the tests ===

/// `/` lists the facilities with data; the root facility's link leads to
/// its page, which shows its own lines (not the sub-facility's), newest
/// first, `page_lines` at a time, the rest behind `#older`.
#[test]
fn viewer_lists_facility_and_pages_newest_first() {
    let setup = viewer_setup(8);
    let mut d = InProcess::start(&setup);
    let sent: Vec<String> = (1..=12).map(|i| format!("INFO - order {i:02}")).collect();
    let msgs: Vec<(&str, &str)> = sent.iter().map(|b| ("web-1", b.as_str())).collect();
    send(&d, "shop", &msgs);
    send_tcp(
        d.tcp_addr(),
        &frame(
            "shop",
            "web",
            "INFO - from the web module",
            &Opts::host("web-1"),
        ),
    );
    wait_for_lines(&setup.log("shop/root.log"), 12, DEADLINE);
    wait_for_lines(&setup.log("shop/web.log"), 1, DEADLINE);

    run(async {
        let b = Browser::start(&setup.root().join("chrome")).await;
        let c = &b.client;
        c.goto(&format!("{}/", base(&d))).await.expect("goto /");
        let row = "table#facilities tr.facility[data-app=\"shop\"][data-module=\"root\"]";
        let link = wait_until("the shop root facility on /", PAGE_DEADLINE, || async {
            c.find(Locator::Css(&format!("{row} a")))
                .await
                .map_err(|e| e.to_string())
        })
        .await;
        assert_eq!(
            count(
                c,
                "table#facilities tr.facility[data-app=\"shop\"][data-module=\"web\"]"
            )
            .await,
            1,
            "/ lists the sub-facility shop:web too"
        );
        assert_eq!(
            link.attr("href").await.expect("href").as_deref(),
            Some("/app/shop/root")
        );
        link.click().await.expect("follow the facility link");
        wait_facility_page(c).await;
        let url = c.current_url().await.expect("url");
        assert_eq!(url.path(), "/app/shop/root");

        let page1 = shown(c, "#lines").await;
        let newest: Vec<&str> = sent.iter().rev().take(8).map(String::as_str).collect();
        assert_eq!(
            bodies_of(&page1),
            newest,
            "first page: the 8 newest, newest first"
        );
        assert!(
            page1.iter().all(|l| l.host == "web-1" && l.sev == "info"),
            "{page1:#?}"
        );
        // The timestamps go down the page (they are fixed-width local
        // times, so they compare as strings).
        assert!(
            page1
                .windows(2)
                .all(|w| w[0].ts >= w[1].ts && !w[1].ts.is_empty()),
            "timestamps not newest first: {page1:#?}"
        );
        let summary = text_of(c, "#summary").await;
        assert!(
            summary.contains("8 lines"),
            "#summary does not say 8 lines: {summary:?}"
        );

        c.find(Locator::Css("a#older"))
            .await
            .expect("a#older on a full page")
            .click()
            .await
            .expect("click #older");
        wait_until("the older page", PAGE_DEADLINE, || async {
            let u = c.current_url().await.map_err(|e| e.to_string())?;
            if u.query().unwrap_or_default().contains("cursor=") {
                Ok(())
            } else {
                Err(u.to_string())
            }
        })
        .await;
        wait_facility_page(c).await;
        let page2 = shown(c, "#lines").await;
        let oldest: Vec<&str> = sent.iter().rev().skip(8).map(String::as_str).collect();
        assert_eq!(bodies_of(&page2), oldest, "second page: the 4 oldest");
        assert_eq!(
            count(c, "a#older").await,
            0,
            "no #older past the oldest line"
        );
        b.close().await;
    });
    d.stop();
}

/// A file_per_host facility: select#host offers both hosts, and choosing
/// one shows only its lines, with `host=` in the shareable URL.
#[test]
fn viewer_filters_by_host() {
    let setup = viewer_setup(100);
    let mut d = InProcess::start(&setup);
    let msgs = [
        ("h1", "INFO - h1 first"),
        ("h2", "INFO - h2 first"),
        ("h1", "INFO - h1 second"),
        ("h1", "INFO - h1 third"),
        ("h2", "INFO - h2 second"),
    ];
    send(&d, "relay", &msgs);
    wait_for_lines(&setup.log("relay/h1-root.log"), 3, DEADLINE);
    wait_for_lines(&setup.log("relay/h2-root.log"), 2, DEADLINE);

    run(async {
        let b = Browser::start(&setup.root().join("chrome")).await;
        let c = &b.client;
        c.goto(&format!("{}/app/relay/root", base(&d)))
            .await
            .expect("goto the relay page");
        wait_facility_page(c).await;
        for (host, want) in [
            ("h2", vec!["INFO - h2 second", "INFO - h2 first"]),
            (
                "h1",
                vec!["INFO - h1 third", "INFO - h1 second", "INFO - h1 first"],
            ),
        ] {
            let select = c
                .find(Locator::Css("form#filters select#host[name=\"host\"]"))
                .await
                .expect("select#host on a file_per_host facility");
            select
                .select_by_value(host)
                .await
                .unwrap_or_else(|e| panic!("select#host has no option {host}: {e}"));
            apply(c, &[&format!("host={host}")]).await;
            let lines = shown(c, "#lines").await;
            assert_eq!(bodies_of(&lines), want, "host={host}");
            assert!(lines.iter().all(|l| l.host == host), "{lines:#?}");
            // The choice is reflected back into the form.
            let selected = c
                .find(Locator::Css("select#host"))
                .await
                .expect("select#host")
                .prop("value")
                .await
                .expect("value");
            assert_eq!(selected.as_deref(), Some(host));
        }
        b.close().await;
    });
    d.stop();
}

/// Python-style `LEVEL - ` bodies: a minimum severity shows that level
/// and above, hides lines without a level, and goes into the URL.
#[test]
fn viewer_filters_by_severity() {
    let setup = viewer_setup(100);
    let mut d = InProcess::start(&setup);
    let msgs = [
        ("app-1", "DEBUG - cache warm"),
        ("app-1", "INFO - started"),
        ("app-1", "WARNING - disk 85% full"),
        ("app-1", "ERROR - payment failed id=1"),
        ("app-1", "no level on this line"),
        ("app-1", "CRITICAL - database down"),
        ("app-1", "INFO - retrying"),
        ("app-1", "ERROR - payment failed id=2"),
        ("app-1", "WARNING - slow response"),
    ];
    send(&d, "py", &msgs);
    wait_for_lines(&setup.log("py/root.log"), msgs.len(), DEADLINE);

    run(async {
        let b = Browser::start(&setup.root().join("chrome")).await;
        let c = &b.client;
        c.goto(&format!("{}/app/py/root", base(&d)))
            .await
            .expect("goto the py page");
        wait_facility_page(c).await;
        let all = shown(c, "#lines").await;
        assert_eq!(all.len(), msgs.len(), "no filter: every line: {all:#?}");
        let sevs: Vec<&str> = all.iter().rev().map(|l| l.sev.as_str()).collect();
        assert_eq!(
            sevs,
            ["debug", "info", "warning", "error", "", "critical", "info", "error", "warning"],
            "data-sev of each line"
        );
        for (level, want) in [
            (
                "error",
                vec![
                    "ERROR - payment failed id=2",
                    "CRITICAL - database down",
                    "ERROR - payment failed id=1",
                ],
            ),
            (
                "warning",
                vec![
                    "WARNING - slow response",
                    "ERROR - payment failed id=2",
                    "CRITICAL - database down",
                    "ERROR - payment failed id=1",
                    "WARNING - disk 85% full",
                ],
            ),
        ] {
            c.find(Locator::Css("select#severity"))
                .await
                .expect("select#severity")
                .select_by_value(level)
                .await
                .unwrap_or_else(|e| panic!("select#severity has no option {level}: {e}"));
            apply(c, &[&format!("severity={level}")]).await;
            let lines = shown(c, "#lines").await;
            assert_eq!(bodies_of(&lines), want, "severity={level}");
        }
        b.close().await;
    });
    d.stop();
}

/// The `*.xz` backups of `{logdir}/{app}` (finished ones, no `.tmp`).
fn xz_backups(setup: &Setup, app: &str) -> Vec<PathBuf> {
    let dir = setup.log(app);
    walk(&dir)
        .into_iter()
        .filter(|p| {
            let name = p.file_name().unwrap_or_default().to_string_lossy();
            name.starts_with("root.log.") && name.ends_with(".xz")
        })
        .collect()
}

/// Lines with a unique word end up only in an xz-compressed backup (a
/// size rotation, then more lines); a literal search and a
/// case-insensitive regex search both find every one of them, and a
/// case-sensitive search with the wrong case finds none. Saves the
/// screenshot of the search page.
#[test]
fn viewer_searches_into_xz_backup() {
    const WORD: &str = "quokka7319";
    let setup = viewer_setup(100);
    let mut d = InProcess::start(&setup);
    let word_lines: Vec<String> = (0..10)
        .map(|i| match i % 3 {
            0 => format!("INFO - cache refill for key {WORD}-{i}"),
            1 => format!("WARNING - cache miss for key {WORD}-{i}"),
            _ => format!("ERROR - cache backend timeout for key {WORD}-{i}"),
        })
        .collect();
    // Enough filler after the word lines to pass max_size (4096) and
    // rotate once: ~75 bytes a line.
    let filler: Vec<String> = (0..60)
        .map(|i| format!("INFO - GET /api/items/{i} 200 in {}ms", 3 + i % 17))
        .collect();
    let msgs: Vec<(&str, &str)> = word_lines
        .iter()
        .chain(&filler)
        .map(|b| ("web-1", b.as_str()))
        .collect();
    send(&d, "arch", &msgs);
    let start = Instant::now();
    let backup = loop {
        if let Some(b) = xz_backups(&setup, "arch").into_iter().next() {
            break b;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "no xz backup within {DEADLINE:?}: {:?}",
            log_files(&setup)
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let after: Vec<String> = (0..5)
        .map(|i| format!("INFO - after rotation {i}"))
        .collect();
    let msgs: Vec<(&str, &str)> = after.iter().map(|b| ("web-1", b.as_str())).collect();
    send(&d, "arch", &msgs);
    wait_for_content(
        &setup.log("arch/root.log"),
        "the lines after rotation",
        |t| t.contains("after rotation 4"),
    );
    // The premise: every word line is in the compressed backup, none live.
    let old = loghogd::compress::decompress_to_vec(&backup)
        .unwrap_or_else(|e| panic!("{}: {e}", backup.display()));
    let old = String::from_utf8_lossy(&old);
    assert_eq!(
        old.matches(WORD).count(),
        word_lines.len(),
        "{}",
        backup.display()
    );
    assert!(!read(&setup.log("arch/root.log")).contains(WORD));

    let want: Vec<&str> = word_lines.iter().rev().map(String::as_str).collect();
    run(async {
        let b = Browser::start(&setup.root().join("chrome")).await;
        let c = &b.client;
        c.goto(&format!("{}/app/arch/root", base(&d)))
            .await
            .expect("goto the arch page");
        wait_facility_page(c).await;

        let q = c.find(Locator::Css("input#q")).await.expect("input#q");
        q.send_keys(WORD).await.expect("type the word");
        apply(c, &[&format!("q={WORD}")]).await;
        let lines = shown(c, "#lines").await;
        assert_eq!(bodies_of(&lines), want, "literal search into the xz backup");
        assert_eq!(
            count(c, "#stopped").await,
            0,
            "the work cap stopped a tiny search"
        );
        let summary = text_of(c, "#summary").await;
        println!("literal search summary: {summary}");

        // The screenshot: lines, the chart (wait until it has loaded) and a search.
        wait_until("img#chart loaded", PAGE_DEADLINE, || async {
            let v = c
                .execute(
                    "const i = document.querySelector('img#chart'); \
                     return i !== null && i.complete && i.naturalWidth > 0;",
                    vec![],
                )
                .await
                .map_err(|e| e.to_string())?;
            if v == json!(true) {
                Ok(())
            } else {
                Err(format!("{v}"))
            }
        })
        .await;
        let png = c.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG"), "the screenshot is not a PNG");
        let path = artifact_dir().join("viewer.png");
        std::fs::write(&path, &png).expect("write viewer.png");
        println!("screenshot: {} ({} bytes)", path.display(), png.len());

        // The wrong case, case-sensitive: nothing.
        let upper = WORD.to_uppercase();
        let q = c.find(Locator::Css("input#q")).await.expect("input#q");
        q.clear().await.expect("clear #q");
        q.send_keys(&upper).await.expect("type");
        apply(c, &[&format!("q={upper}")]).await;
        assert_eq!(shown(c, "#lines").await, vec![], "case-sensitive {upper}");

        // A regex, case-insensitive: every word line again.
        let q = c.find(Locator::Css("input#q")).await.expect("input#q");
        q.clear().await.expect("clear #q");
        q.send_keys("QUOKKA[0-9]+-[0-9]$").await.expect("type");
        c.find(Locator::Css("select#mode"))
            .await
            .expect("select#mode")
            .select_by_value("regex")
            .await
            .expect("mode regex");
        let icase = c
            .find(Locator::Css("input#icase[type=\"checkbox\"]"))
            .await
            .expect("input#icase");
        if !icase.is_selected().await.expect("icase state") {
            icase.click().await.expect("tick icase");
        }
        apply(c, &["mode=regex", "icase=on"]).await;
        let lines = shown(c, "#lines").await;
        assert_eq!(bodies_of(&lines), want, "regex search, icase");
        b.close().await;
    });
    d.stop();
}

/// The live tail: once `#tail` is open, a new message shows in it within
/// two seconds (the delay is printed), appended in order.
#[test]
fn viewer_live_tail_shows_new_lines() {
    let setup = viewer_setup(100);
    let mut d = InProcess::start(&setup);
    send(&d, "shop", &[("web-1", "INFO - before the tail")]);
    wait_for_lines(&setup.log("shop/root.log"), 1, DEADLINE);

    run(async {
        let b = Browser::start(&setup.root().join("chrome")).await;
        let c = &b.client;
        c.goto(&format!("{}/app/shop/root", base(&d)))
            .await
            .expect("goto the shop page");
        wait_facility_page(c).await;
        c.find(Locator::Css("button#tail-toggle"))
            .await
            .expect("button#tail-toggle")
            .click()
            .await
            .expect("click #tail-toggle");
        let opened = Instant::now();
        wait_until("#tail[data-state=open]", PAGE_DEADLINE, || async {
            let t = c
                .find(Locator::Css("ol#tail"))
                .await
                .map_err(|e| e.to_string())?;
            match t.attr("data-state").await.map_err(|e| e.to_string())? {
                Some(s) if s == "open" => Ok(()),
                other => Err(format!("data-state {other:?}")),
            }
        })
        .await;
        println!("tail open {:?} after the click", opened.elapsed());

        let mut want = Vec::new();
        for i in 0..2 {
            let body = format!("ERROR - live line {i}");
            want.push(body.clone());
            let sent = Instant::now();
            send(&d, "shop", &[("web-2", &body)]);
            let lines = wait_until(&format!("{body:?} in #tail"), TAIL_BOUND, || async {
                let lines = shown(c, "#tail").await;
                if lines.len() >= want.len() {
                    Ok(lines)
                } else {
                    Err(format!("{lines:?}"))
                }
            })
            .await;
            println!("tail delay for line {i}: {:?}", sent.elapsed());
            assert_eq!(
                bodies_of(&lines),
                want,
                "#tail holds the new lines, in order"
            );
            let last = lines.last().expect("a line");
            assert_eq!(last.host, "web-2");
            assert!(!last.ts.is_empty(), "{last:?}");
        }
        b.close().await;
    });
    d.stop();
}

/// A body with markup is text on the page and in the tail: its exact
/// characters show, no element from it exists, and its script never ran.
#[test]
fn viewer_renders_markup_in_bodies_as_text() {
    const EVIL: &str = "<script>window.__pwned=1</script><b>bold</b>";
    let setup = viewer_setup(100);
    let mut d = InProcess::start(&setup);
    send(&d, "shop", &[("web-1", "INFO - plain"), ("web-1", EVIL)]);
    wait_for_lines(&setup.log("shop/root.log"), 2, DEADLINE);

    run(async {
        let b = Browser::start(&setup.root().join("chrome")).await;
        let c = &b.client;
        c.goto(&format!("{}/app/shop/root", base(&d)))
            .await
            .expect("goto the shop page");
        wait_facility_page(c).await;
        let lines = shown(c, "#lines").await;
        assert_eq!(bodies_of(&lines), [EVIL, "INFO - plain"]);
        assert_eq!(
            count(c, "#lines b").await,
            0,
            "a <b> from the body became an element"
        );
        assert_eq!(
            count(c, "#lines script").await,
            0,
            "a <script> from the body became an element"
        );
        let pwned = c
            .execute("return typeof window.__pwned", vec![])
            .await
            .expect("execute");
        assert_eq!(pwned, json!("undefined"), "the body's script ran");

        // The same through the live tail (built in the page by script).
        c.find(Locator::Css("button#tail-toggle"))
            .await
            .expect("button#tail-toggle")
            .click()
            .await
            .expect("click #tail-toggle");
        wait_until("#tail[data-state=open]", PAGE_DEADLINE, || async {
            let t = c
                .find(Locator::Css("ol#tail"))
                .await
                .map_err(|e| e.to_string())?;
            match t.attr("data-state").await.map_err(|e| e.to_string())? {
                Some(s) if s == "open" => Ok(()),
                other => Err(format!("data-state {other:?}")),
            }
        })
        .await;
        send(&d, "shop", &[("web-1", EVIL)]);
        let tail = wait_until("the markup line in #tail", PAGE_DEADLINE, || async {
            let lines = shown(c, "#tail").await;
            if lines.is_empty() {
                Err("empty".to_string())
            } else {
                Ok(lines)
            }
        })
        .await;
        assert_eq!(bodies_of(&tail), [EVIL]);
        assert_eq!(count(c, "#tail b").await, 0);
        assert_eq!(count(c, "#tail script").await, 0);
        let pwned = c
            .execute("return typeof window.__pwned", vec![])
            .await
            .expect("execute");
        assert_eq!(pwned, json!("undefined"), "the tailed body's script ran");
        b.close().await;
    });
    d.stop();
}
