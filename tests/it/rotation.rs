//! Rotation, compression and retention (issue 3, SPEC §5) through real
//! sockets and real files: exactly-once across many size rotations in every
//! format, retention, scheduled rotation without messages, crash recovery,
//! `--check-config` next times, SIGHUP under rotation load and invalid rotate
//! expressions, against the real binary; cron-minute rotations against an
//! in-process daemon under paused time ([`Paused`]), so they take no real
//! minute.
//!
//! Waits poll the log directory until it has settled (every line accounted
//! for, no uncompressed backup and no `.tmp` left) under a deadline; negative
//! checks ("no second rotation") stop the daemon first, which proves the
//! scheduler finished its first pass.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, Datelike, Local, NaiveDateTime, TimeDelta, TimeZone, Timelike, Weekday};
use loghogd::clock::Clock;

use crate::util::*;

/// Deadline for a burst plus all its compressions (a loaded 2-core machine).
const SETTLE_DEADLINE: Duration = Duration::from_secs(120);

/// Padding that makes every test line the same length.
const PAD: usize = 60;

/// Length of one line written for a [`numbered`] body on connection `c < 10`:
/// `YYYY-MM-DD HH:MM:SS.ffffff - 127.0.0.1 - c0 n000000 ppp…\n`.
const LINE_LEN: u64 = 26 + 3 + 9 + 3 + (2 + 1 + 7 + 1 + PAD as u64) + 1;

/// `[log]` section that lets the tests see `backup compressed` lines.
const DEBUG_LOG: &str = "[log]\nlevel = debug\n";

// === helpers ===

/// The body of message `i` on connection `c`.
fn numbered(c: usize, i: usize) -> String {
    format!("c{c} n{i:06} {}", "p".repeat(PAD))
}

/// Sends `per_conn` numbered messages to `app` on each of `conns` parallel
/// connections; returns once all are written and closed.
fn burst(addr: SocketAddr, app: &'static str, conns: usize, per_conn: usize) {
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            std::thread::spawn(move || {
                let mut bytes = Vec::with_capacity(per_conn * 160);
                for i in 0..per_conn {
                    bytes.extend(simple(app, &numbered(c, i)));
                }
                send_tcp(addr, &bytes);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender thread");
    }
}

/// As [`burst`], but each connection writes `slice` messages at a time with a
/// short pause between, so the daemon sees many small writes (a
/// `compress_on_write` file rotates only after a write, and one write of a
/// burst can be megabytes).
fn paced(addr: SocketAddr, app: &'static str, conns: usize, per_conn: usize, slice: usize) {
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                for start in (0..per_conn).step_by(slice) {
                    let mut bytes = Vec::new();
                    for i in start..(start + slice).min(per_conn) {
                        bytes.extend(simple(app, &numbered(c, i)));
                    }
                    std::io::Write::write_all(&mut s, &bytes).unwrap();
                    std::thread::sleep(Duration::from_millis(2));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender thread");
    }
}

/// A rotated file of a live file, as the test sees it in the app dir.
#[derive(Debug, Clone)]
pub(crate) struct BackupFile {
    pub(crate) path: PathBuf,
    /// `YYYY-MM-DD-HH-MM-SS-ffffff` as written in the name.
    pub(crate) stamp: String,
    /// `""`, `.xz`, `.gz`, `.bz2`, optionally followed by `.tmp`.
    pub(crate) suffix: String,
}

/// Every `{live}.{stamp}{suffix}` next to `live`, oldest first. Parsed here
/// rather than with the daemon's own parser, so a naming bug cannot hide.
pub(crate) fn backups_of(live: &Path) -> Vec<BackupFile> {
    let dir = live.parent().unwrap();
    let prefix = format!("{}.", live.file_name().unwrap().to_str().unwrap());
    let mut out = Vec::new();
    let Ok(rd) = std::fs::read_dir(dir) else {
        return out;
    };
    for e in rd.flatten() {
        let name = e.file_name().into_string().unwrap();
        let Some(rest) = name.strip_prefix(&prefix) else {
            continue;
        };
        let stamp = rest.get(..26).unwrap_or_else(|| panic!("odd file {name}"));
        assert!(
            NaiveDateTime::parse_from_str(stamp, "%Y-%m-%d-%H-%M-%S-%6f").is_ok(),
            "backup {name} lacks a YYYY-MM-DD-HH-MM-SS-ffffff stamp"
        );
        let suffix = &rest[26..];
        assert!(
            ["", ".xz", ".gz", ".bz2", ".xz.tmp", ".gz.tmp", ".bz2.tmp"].contains(&suffix),
            "unexpected file {name}"
        );
        out.push(BackupFile {
            path: e.path(),
            stamp: stamp.to_string(),
            suffix: suffix.to_string(),
        });
    }
    out.sort_by(|a, b| a.stamp.cmp(&b.stamp));
    out
}

/// The uncompressed content of a backup or live file: by extension, or as
/// gzip members for `compress_on_write` files (whose backups keep the live
/// name `*.log.gz.{stamp}`). `None` while the file is gone or incomplete.
fn content(path: &Path, gzip_members: bool) -> Option<Vec<u8>> {
    if gzip_members {
        let f = std::fs::File::open(path).ok()?;
        let mut out = Vec::new();
        flate2::read::MultiGzDecoder::new(f)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    } else {
        loghogd::compress::decompress_to_vec(path).ok()
    }
}

/// A settled log directory: each backup's content (oldest first) and the
/// live file's content.
struct Settled {
    backups: Vec<(BackupFile, Vec<u8>)>,
    live: Vec<u8>,
}

impl Settled {
    /// All lines, backups in order then the live file.
    fn lines(&self) -> Vec<String> {
        let mut all = Vec::new();
        for (_, data) in &self.backups {
            all.extend_from_slice(data);
        }
        all.extend_from_slice(&self.live);
        String::from_utf8(all)
            .unwrap()
            .lines()
            .map(str::to_string)
            .collect()
    }
}

/// Polls until the backups of `live` are all compressed as `want_suffix`
/// (no uncompressed backup, no `.tmp`) and `ready(&state)` holds.
fn wait_settled(
    live: &Path,
    want_suffix: &str,
    gzip_members: bool,
    ready: impl Fn(&Settled) -> bool,
) -> Settled {
    let start = Instant::now();
    let mut last = String::new();
    loop {
        if let Some(s) = settled_once(live, want_suffix, gzip_members) {
            if ready(&s) {
                return s;
            }
            last = format!("{} backups, {} lines", s.backups.len(), s.lines().len());
        }
        if start.elapsed() > SETTLE_DEADLINE {
            panic!(
                "{} never settled within {SETTLE_DEADLINE:?}; last complete view: {last}; files: {:#?}",
                live.display(),
                backups_of(live)
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn settled_once(live: &Path, want_suffix: &str, gzip_members: bool) -> Option<Settled> {
    let files = backups_of(live);
    if files.iter().any(|b| b.suffix != want_suffix) {
        return None;
    }
    let mut backups = Vec::new();
    for b in files {
        let data = content(&b.path, gzip_members)?;
        backups.push((b, data));
    }
    let live_data = if live.exists() {
        content(live, gzip_members)?
    } else {
        Vec::new()
    };
    // A view taken while a rotation renamed files is inconsistent; only
    // accept one where the listing did not change under us.
    let again: Vec<String> = backups_of(live).into_iter().map(|b| b.stamp).collect();
    let seen: Vec<String> = backups.iter().map(|(b, _)| b.stamp.clone()).collect();
    (again == seen).then_some(Settled {
        backups,
        live: live_data,
    })
}

/// `[compressor]` for a format, or gzip-on-write.
fn compressor(format: &str) -> String {
    if format == "cow" {
        "[compressor]\nformat = gzip\ncompress_on_write = yes\n".to_string()
    } else {
        format!("[compressor]\nformat = {format}\n")
    }
}

/// Reads `{workdir}/rotation-state.json`.
fn state_json(setup: &Setup) -> serde_json::Value {
    let text = read(&setup.root().join("lib").join("rotation-state.json"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("state file {text:?}: {e}"))
}

fn rfc3339(v: &serde_json::Value) -> DateTime<Local> {
    let s = v.as_str().unwrap_or_else(|| panic!("not a time: {v}"));
    DateTime::parse_from_rfc3339(s)
        .unwrap_or_else(|e| panic!("{s:?}: {e}"))
        .with_timezone(&Local)
}

// === exactly once across many size rotations ===

/// Sends 4 × 1000 numbered messages to a `rotate = size` facility and checks
/// every number once, in order, across the decompressed backups and the live
/// file, and the size of every backup.
fn many_size_rotations(format: &str) {
    let cow = format == "cow";
    // Gzip-on-write sizes are compressed bytes: these lines shrink ~20×.
    let max_size: u64 = if cow { 256 } else { 4096 };
    let (conns, per_conn) = (4, 1000);
    let setup = Setup::new()
        .facilities(&format!(
            "[app]\nrotate = size\nmax_size = {max_size}\nbackup_count = 10000\n"
        ))
        .conf_extra(&compressor(format))
        .conf_extra(DEBUG_LOG);
    let mut d = Daemon::start(&setup);
    if cow {
        paced(d.tcp_addr(), "app", conns, per_conn, 20);
    } else {
        burst(d.tcp_addr(), "app", conns, per_conn);
    }
    let live = setup.log(if cow {
        "app/root.log.gz"
    } else {
        "app/root.log"
    });
    let want_suffix = match format {
        "xz" => ".xz",
        "gzip" => ".gz",
        "bzip2" => ".bz2",
        _ => "",
    };
    let settled = wait_settled(&live, want_suffix, cow, |s| {
        s.lines().len() >= conns * per_conn
    });
    check_numbers(&settled.lines(), conns, per_conn);
    let min_backups = if cow {
        5
    } else {
        (conns * per_conn) as u64 * LINE_LEN / (max_size + LINE_LEN)
    };
    assert!(
        settled.backups.len() as u64 >= min_backups,
        "only {} rotations: {:?}",
        settled.backups.len(),
        log_files(&setup)
    );
    for (b, data) in &settled.backups {
        let len = data.len() as u64;
        assert!(data.ends_with(b"\n"), "{} ends mid-line", b.path.display());
        if cow {
            // Gzip-on-write files are measured after compression.
            let on_disk = std::fs::metadata(&b.path).unwrap().len();
            assert!(
                on_disk >= max_size,
                "{} is {on_disk} bytes",
                b.path.display()
            );
        } else {
            assert!(
                len >= max_size && len < max_size + LINE_LEN,
                "{} holds {len} bytes; want [{max_size}, {})",
                b.path.display(),
                max_size + LINE_LEN
            );
        }
    }
    assert!(
        (settled.live.len() as u64) < max_size + LINE_LEN || cow,
        "live file holds {} bytes",
        settled.live.len()
    );
    d.stop();
    assert_eq!(d.stat("written"), (conns * per_conn) as u64);
    // After the stop everything is still there exactly once.
    let after = wait_settled(&live, want_suffix, cow, |_| true);
    check_numbers(&after.lines(), conns, per_conn);
}

#[test]
fn size_rotations_xz_exactly_once_in_order() {
    many_size_rotations("xz");
}

#[test]
fn size_rotations_gzip_exactly_once_in_order() {
    many_size_rotations("gzip");
}

#[test]
fn size_rotations_bzip2_exactly_once_in_order() {
    many_size_rotations("bzip2");
}

#[test]
fn size_rotations_compress_on_write_exactly_once_in_order() {
    many_size_rotations("cow");
}

// === retention ===

#[test]
fn retention_keeps_exactly_the_newest_backups() {
    // One connection, so the global order is known: with fixed-length lines
    // every backup holds exactly ceil(max_size / LINE_LEN) messages.
    let max_size = 4096u64;
    let per_backup = max_size.div_ceil(LINE_LEN) as usize;
    let total = 500usize;
    let full = total / per_backup;
    let setup = Setup::new()
        .facilities(&format!(
            "[app]\nrotate = size\nmax_size = {max_size}\nbackup_count = 2\n"
        ))
        .conf_extra(&compressor("gzip"));
    let mut d = Daemon::start(&setup);
    burst(d.tcp_addr(), "app", 1, total);
    let live = setup.log("app/root.log");
    let want_live = (total - full * per_backup) as u64 * LINE_LEN;
    let s = wait_settled(&live, ".gz", false, |s| {
        s.live.len() as u64 == want_live
            && s.backups.len() == 2
            && s.backups[1].1.len() == per_backup * LINE_LEN as usize
            && s.lines()
                .first()
                .is_some_and(|l| parse_line(l).2 == numbered(0, (full - 2) * per_backup))
    });
    d.stop();
    let lines = s.lines();
    let first = (full - 2) * per_backup;
    assert_eq!(lines.len(), total - first);
    for (k, line) in lines.iter().enumerate() {
        assert_eq!(parse_line(line).2, numbered(0, first + k));
    }
    // Stopping does not change what is kept.
    let files = log_files(&setup);
    assert_eq!(files.len(), 3, "{files:?}");
}

// === scheduled rotation ===

#[test]
fn overdue_daily_rotation_happens_at_start_without_messages() {
    let setup = Setup::new()
        .facilities("[app]\nrotate = daily\nbackup_count = 5\n")
        .conf_extra(DEBUG_LOG);
    let live = setup.log("app/root.log");
    std::fs::create_dir_all(live.parent().unwrap()).unwrap();
    std::fs::create_dir_all(setup.root().join("lib")).unwrap();
    let old = "2020-01-01 10:00:00.000000 - host - written before the restart\n";
    std::fs::write(&live, old).unwrap();
    let started = (Local::now() - TimeDelta::days(1))
        .with_nanosecond(123_456_000)
        .unwrap();
    let state = serde_json::json!({
        "version": 1,
        "files": {
            live.to_str().unwrap(): {
                "started": started.to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
                "last_rotation": (started - TimeDelta::hours(1))
                    .to_rfc3339_opts(chrono::SecondsFormat::Micros, false),
            }
        }
    });
    std::fs::write(
        setup.root().join("lib/rotation-state.json"),
        state.to_string(),
    )
    .unwrap();
    let stamp = started.format("%Y-%m-%d-%H-%M-%S-%6f").to_string();
    let backup = setup.log(&format!("app/root.log.{stamp}.xz"));

    let t0 = Instant::now();
    let mut d = Daemon::start(&setup);
    let s = wait_settled(&live, ".xz", false, |s| !s.backups.is_empty());
    assert!(
        t0.elapsed() < Duration::from_secs(15),
        "rotation took {:?}",
        t0.elapsed()
    );
    assert_eq!(s.backups.len(), 1, "{:?}", log_files(&setup));
    assert_eq!(
        s.backups[0].0.path, backup,
        "named after the recorded start"
    );
    assert_eq!(s.backups[0].1, old.as_bytes());
    assert!(!live.exists(), "no message: no new live file");
    // The state is saved after the rename (a loaded machine can show the
    // backup first): wait for the save that records this rotation.
    let recent = |setup: &Setup| {
        let st = &state_json(setup)["files"][live.to_str().unwrap()];
        let last = rfc3339(&st["last_rotation"]);
        ((Local::now() - last).num_seconds().abs() < 60).then_some(last)
    };
    let deadline = Instant::now() + DEADLINE;
    while recent(&setup).is_none() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let st = &state_json(&setup)["files"][live.to_str().unwrap()];
    assert!(
        recent(&setup).is_some(),
        "last_rotation {} is not now",
        st["last_rotation"]
    );
    // A message after the rotation starts a new live file.
    send_tcp(d.tcp_addr(), &simple("app", "after the rotation"));
    wait_for_lines(&live, 1, DEADLINE);
    d.stop();

    // A second start must not rotate again (the stop proves the scheduler
    // made its first pass: it is awaited before the writers close).
    let mut d = Daemon::start(&setup);
    d.stop();
    assert_eq!(
        log_files(&setup),
        [
            "app/root.log".to_string(),
            format!("app/root.log.{stamp}.xz")
        ]
    );
    assert_eq!(
        bodies(&wait_for_lines(&live, 1, DEADLINE)),
        ["after the rotation"]
    );
    assert!(
        !d.stderr_text().contains("scheduled rotation"),
        "second start rotated:\n{}",
        d.stderr_text()
    );
}

#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn every_minute_cron_rotates_at_the_minute_boundary_without_messages() {
    // Ten (virtual) seconds before a minute boundary.
    let start = local(2026, 3, 10, 12, 0, 50);
    let boundary = local(2026, 3, 10, 12, 1, 0);
    let setup = Setup::new().facilities("[app]\nrotate = * * * * *\nbackup_count = 5\n");
    let d = Paused::start(&setup, start, None);
    let live = setup.log("app/root.log");
    let (addr, l) = (d.tcp_addr(), live.clone());
    let lines = blocking(move || {
        send_tcp(addr, &simple("app", "before the minute"));
        wait_for_lines(&l, 1, DEADLINE)
    })
    .await;
    let state_file = setup.root().join("lib/rotation-state.json");
    // Close to the boundary in one jump, then in steps across it. Should the
    // scheduler only plan after the jump (its settle timer started late), it
    // rotates a step after the boundary instead, within the slack below.
    tokio::time::advance(Duration::from_millis(9_500)).await;
    let (sf, l) = (state_file.clone(), live.clone());
    advance_until(
        Duration::from_millis(100),
        Duration::from_secs(20),
        move || file_state(&sf, &l).is_some_and(|(_, last)| last.is_some()),
    )
    .await;
    let backup = blocking({
        let l = live.clone();
        move || wait_for_backups(&l, ".xz", 1)
    })
    .await
    .remove(0);
    assert_eq!(
        loghogd::compress::decompress_to_vec(&backup.path).unwrap(),
        format!("{}\n", lines[0]).as_bytes()
    );
    // Named after the start of the file (its first write, when no virtual
    // time had passed), not the rotation.
    assert_eq!(
        backup.stamp,
        start.format("%Y-%m-%d-%H-%M-%S-%6f").to_string()
    );
    // Rotated at the first minute boundary after the start: not before it,
    // and within the stepping's slack after it.
    let (started, last) = file_state(&state_file, &live).unwrap();
    let last = last.unwrap();
    assert!(
        last >= boundary && last < boundary + TimeDelta::seconds(2),
        "last_rotation {last}, boundary {boundary}"
    );
    assert_eq!(started, last, "the next file starts at the rotation");
    assert!(!live.exists(), "no message: no new live file");

    // The next minute finds no file: only the state moves on.
    let (sf, l) = (state_file.clone(), live.clone());
    let next = boundary + TimeDelta::minutes(1);
    tokio::time::advance(Duration::from_secs(59)).await;
    advance_until(
        Duration::from_millis(100),
        Duration::from_secs(20),
        move || file_state(&sf, &l).is_some_and(|(_, last)| last.is_some_and(|t| t >= next)),
    )
    .await;
    d.stop().await;
    let (started_after, _) = file_state(&state_file, &live).unwrap();
    assert_eq!(started_after, started, "nothing renamed: the start stays");
    assert_eq!(backups_of(&live).len(), 1, "{:?}", log_files(&setup));
    assert!(!live.exists());
}

#[test]
fn max_size_with_a_schedule_rotates_on_size() {
    let max_size = 4096u64;
    let per_backup = max_size.div_ceil(LINE_LEN) as usize;
    let total = 200usize;
    let setup = Setup::new().facilities(&format!(
        "[app]\nrotate = daily\nmax_size = {max_size}\nbackup_count = 50\n"
    ));
    let mut d = Daemon::start(&setup);
    burst(d.tcp_addr(), "app", 1, total);
    let live = setup.log("app/root.log");
    let s = wait_settled(&live, ".xz", false, |s| s.lines().len() >= total);
    d.stop();
    assert_eq!(
        s.backups.len(),
        total / per_backup,
        "{:?}",
        log_files(&setup)
    );
    for (b, data) in &s.backups {
        assert_eq!(
            data.len() as u64,
            per_backup as u64 * LINE_LEN,
            "{}",
            b.path.display()
        );
    }
    check_numbers(&s.lines(), 1, total);
}

// === crash recovery ===

#[test]
fn start_up_recovers_uncompressed_and_partial_backups() {
    let setup = Setup::new().conf_extra(DEBUG_LOG);
    let app = setup.log("app");
    std::fs::create_dir_all(&app).unwrap();
    let a = app.join("root.log.2026-01-01-00-00-00-000000");
    let b = app.join("root.log.2026-01-02-00-00-00-000000");
    let a_text = "2026-01-01 00:00:00.000000 - h - left uncompressed\n".repeat(100);
    let b_text = "2026-01-02 00:00:00.000000 - h - compression interrupted\n".repeat(100);
    std::fs::write(&a, &a_text).unwrap();
    std::fs::write(&b, &b_text).unwrap();
    std::fs::write(
        app.join("root.log.2026-01-02-00-00-00-000000.xz.tmp"),
        b"\xfd7zXZ\0 garbage from a crash",
    )
    .unwrap();
    let mut d = Daemon::start(&setup);
    let live = setup.log("app/root.log");
    let s = wait_settled(&live, ".xz", false, |s| s.backups.len() == 2);
    d.stop();
    assert_eq!(
        s.backups[0].0.path,
        app.join("root.log.2026-01-01-00-00-00-000000.xz")
    );
    assert_eq!(s.backups[0].1, a_text.as_bytes());
    assert_eq!(
        s.backups[1].0.path,
        app.join("root.log.2026-01-02-00-00-00-000000.xz")
    );
    assert_eq!(s.backups[1].1, b_text.as_bytes());
    assert_eq!(
        log_files(&setup),
        [
            "app/root.log.2026-01-01-00-00-00-000000.xz",
            "app/root.log.2026-01-02-00-00-00-000000.xz"
        ]
    );
}

// === --check-config ===

/// Runs `--check-config` with `TZ` set and returns the `next=` times per
/// facility section.
fn check_config_next(setup: &Setup, tz: &str) -> BTreeMap<String, Vec<String>> {
    let out = setup.run_env(&["--check-config"], &[("TZ", tz)]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let mut map = BTreeMap::new();
    for line in out.stdout.lines().filter(|l| l.starts_with('[')) {
        let section = line[1..line.find(']').unwrap()].to_string();
        let next = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("next="))
            .unwrap_or_else(|| panic!("no next= in {line:?}"));
        map.insert(section, next.split(',').map(str::to_string).collect());
    }
    map
}

#[test]
fn check_config_prints_three_local_next_rotations() {
    let setup = Setup::new().facilities(
        "[app]\nrotate = daily\nbackup_count = 3\n\n\
         [app:web]\nrotate = 30 4 * * 1-5\nbackup_count = 3\n\n\
         [app:big]\nrotate = size\nmax_size = 1000\nbackup_count = 3\n",
    );
    for (tz, offsets) in [
        ("America/New_York", &["-05:00", "-04:00"][..]),
        ("Europe/Berlin", &["+01:00", "+02:00"][..]),
        ("UTC", &["+00:00"][..]),
    ] {
        let next = check_config_next(&setup, tz);
        let zone: chrono_tz::Tz = tz.parse().unwrap();
        let now = chrono::Utc::now();
        for (section, hm) in [("app", "T00:00:00"), ("app:web", "T04:30:00")] {
            let times = &next[section];
            assert_eq!(times.len(), 3, "[{section}] {tz}: {times:?}");
            let mut prev = now.with_timezone(&zone).fixed_offset();
            for t in times {
                assert!(
                    t.contains(hm) && offsets.iter().any(|o| t.ends_with(o)),
                    "[{section}] TZ={tz}: {t} is not local {hm} with offset {offsets:?}"
                );
                let parsed = DateTime::parse_from_rfc3339(t).unwrap();
                // The printed offset is the zone's real offset at that time.
                let in_zone = parsed.with_timezone(&zone);
                assert_eq!(in_zone.format("%H:%M").to_string(), hm[1..6]);
                assert!(parsed > prev, "[{section}] {times:?} not increasing");
                if section == "app:web" {
                    assert!(
                        !matches!(in_zone.weekday(), Weekday::Sat | Weekday::Sun),
                        "1-5 is Monday to Friday: {t}"
                    );
                } else {
                    // Consecutive midnights (a DST day is 23 or 25 hours).
                    let gap = (parsed - prev).num_hours();
                    assert!(gap <= 25, "{times:?}");
                }
                prev = parsed;
            }
        }
        assert_eq!(next["app:big"], ["-"], "size only: no scheduled time");
    }
}

// === SIGHUP under rotation load ===

#[test]
fn sighup_while_rotating_under_load_loses_nothing() {
    let (conns, per_conn) = (2, 10_000);
    let setup = Setup::new()
        .facilities("[app]\nrotate = size\nmax_size = 20000\nbackup_count = 10000\n")
        .conf_extra(&compressor("gzip"));
    let mut d = Daemon::start(&setup);
    let addr = d.tcp_addr();
    // Sent in slices, so the load lasts while the daemon reloads.
    let sender = std::thread::spawn(move || paced(addr, "app", conns, per_conn, 50));
    let live = setup.log("app/root.log");
    for i in 1..=5 {
        // Reload once more backups appeared since the previous reload.
        let start = Instant::now();
        while backups_of(&live).len() < i * 3 {
            assert!(start.elapsed() < SETTLE_DEADLINE, "no rotations");
            std::thread::sleep(Duration::from_millis(5));
        }
        d.signal("HUP");
        d.wait_for_log_count("facilities reloaded", i);
    }
    sender.join().unwrap();
    wait_settled(&live, ".gz", false, |s| s.lines().len() >= conns * per_conn);
    d.stop();
    let s = wait_settled(&live, ".gz", false, |_| true);
    check_numbers(&s.lines(), conns, per_conn);
    assert_eq!(d.stat("written"), (conns * per_conn) as u64);
}

// === invalid rotate expressions ===

#[test]
fn invalid_rotate_expressions_are_config_errors() {
    for expr in ["0 0 * *", "61 * * * *", "@reboot", "fortnightly"] {
        let setup = Setup::new().facilities(&format!(
            "[app]\nrotate = daily\nbackup_count = 3\n\n\
             [app:web]\nrotate = {expr}\nbackup_count = 3\n"
        ));
        for args in [&["--check-config"][..], &[][..]] {
            let out = setup.run(args);
            assert_eq!(
                out.status.code(),
                Some(EX_CONFIG),
                "rotate = {expr}: {out:?}"
            );
            let all = out.all();
            assert!(all.contains("facilities.conf"), "names the file: {out:?}");
            assert!(all.contains("app:web"), "names the section: {out:?}");
            assert!(all.contains("rotate"), "names the key: {out:?}");
            assert!(!setup.pidfile().exists());
        }
    }
}

#[test]
fn size_limit_counts_what_an_earlier_run_wrote() {
    // 30 lines (3390 bytes) in the first run, 30 more after a restart: the
    // file must rotate after line 37, as if there had been no restart.
    let max_size = 4096u64;
    let per_backup = max_size.div_ceil(LINE_LEN) as usize;
    let setup = Setup::new().facilities(&format!(
        "[app]\nrotate = size\nmax_size = {max_size}\nbackup_count = 50\n"
    ));
    let live = setup.log("app/root.log");
    let send = |d: &Daemon, range: std::ops::Range<usize>| {
        let mut bytes = Vec::new();
        for i in range {
            bytes.extend(simple("app", &numbered(0, i)));
        }
        send_tcp(d.tcp_addr(), &bytes);
    };
    let mut d = Daemon::start(&setup);
    send(&d, 0..30);
    wait_for_lines(&live, 30, DEADLINE);
    d.stop();
    let mut d = Daemon::start(&setup);
    send(&d, 30..60);
    let s = wait_settled(&live, ".xz", false, |s| s.lines().len() >= 60);
    d.stop();
    check_numbers(&s.lines(), 1, 60);
    assert_eq!(s.backups.len(), 1, "{:?}", log_files(&setup));
    assert_eq!(
        s.backups[0].1.len() as u64,
        per_backup as u64 * LINE_LEN,
        "backup of {} bytes for max_size {max_size}",
        s.backups[0].1.len()
    );
}

// === paused time: daemon::run in this test's runtime ===
//
// tokio auto-advances a paused clock whenever the runtime would park with a
// timer pending, but not while a `spawn_blocking` task runs (tokio 1.54
// inhibits auto-advance on a current-thread runtime for as long as one is
// running). So every wait here is a poll on the blocking pool ([`blocking`]):
// virtual time stands still while the daemon's tasks run on the test's
// thread and the test watches files, and it moves only in explicit
// [`advance_until`] steps.

/// Real time one [`advance_until`] step gives the daemon to react.
const STEP_WINDOW: Duration = Duration::from_millis(20);

/// `daemon::run` on the test's own paused current-thread runtime (a
/// `#[tokio::test(flavor = "current_thread", start_paused = true)]`), its
/// rotation reading a clock that starts at a chosen local time and moves
/// with tokio's.
pub(crate) struct Paused {
    /// Every bound listener: (transport, address).
    addrs: Vec<(&'static str, SocketAddr)>,
    /// Resolves the daemon's shutdown future.
    stop: tokio::sync::oneshot::Sender<()>,
    /// Set when `run` returned (readable from a blocking poll).
    done: Arc<AtomicBool>,
    /// The daemon task; yields what `run` returned.
    task: tokio::task::JoinHandle<Result<(), String>>,
    /// Its counters.
    remote: loghogd::daemon::Remote,
}

impl Paused {
    /// Writes and loads the config, binds, and spawns the daemon with
    /// `Clock::following_tokio(start)`; with `own_log`, that file is rotated
    /// as the daemon's own log. Call inside the paused runtime.
    pub(crate) fn start(setup: &Setup, start: DateTime<Local>, own_log: Option<&Path>) -> Paused {
        let (config, facilities, listeners) = load_and_bind(setup, |_| {});
        let addrs = listeners.addrs();
        let (remote, control) = loghogd::daemon::control();
        let mut control = control.with_clock(Clock::following_tokio(start));
        if let Some(path) = own_log {
            control = control.with_own_log(path).expect("open the own log");
        }
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let done = Arc::new(AtomicBool::new(false));
        let flag = done.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            let res = loghogd::daemon::run(config, facilities, listeners, control, shutdown).await;
            flag.store(true, Ordering::SeqCst);
            res.map_err(|e| format!("{e:#}"))
        });
        Paused {
            addrs,
            stop,
            done,
            task,
            remote,
        }
    }

    /// A counter or gauge by name (`Stats::for_each` names).
    pub(crate) fn stat(&self, name: &str) -> u64 {
        self.remote.stats.get(name).expect("a known counter")
    }

    /// The (first) plain TCP listener.
    pub(crate) fn tcp_addr(&self) -> SocketAddr {
        self.addrs
            .iter()
            .find(|(t, _)| *t == "tcp")
            .map(|(_, a)| *a)
            .expect("a tcp listener")
    }

    /// Stops as SIGTERM does and checks that `run` returned `Ok`. Virtual
    /// time moves in small steps meanwhile: the stop itself waits on timers
    /// (the listeners' last look at their accept queues).
    pub(crate) async fn stop(self) {
        let _ = self.stop.send(());
        let done = self.done.clone();
        advance_until(
            Duration::from_millis(10),
            Duration::from_secs(60),
            move || done.load(Ordering::SeqCst),
        )
        .await;
        match self.task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => panic!("daemon::run failed: {e}"),
            Err(e) => panic!("the daemon task failed: {e}"),
        }
    }
}

/// Runs `f` on the blocking pool: virtual time stands still meanwhile.
pub(crate) async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    tokio::task::spawn_blocking(f)
        .await
        .expect("blocking test step panicked")
}

/// Moves virtual time forward in `step`s until `cond` holds, giving the
/// daemon [`STEP_WINDOW`] of real time at each instant; panics once `limit`
/// of virtual time has passed.
pub(crate) async fn advance_until(
    step: Duration,
    limit: Duration,
    cond: impl Fn() -> bool + Send + Sync + 'static,
) {
    let cond = Arc::new(cond);
    let end = tokio::time::Instant::now() + limit;
    loop {
        let c = cond.clone();
        let met = blocking(move || {
            let start = Instant::now();
            loop {
                if c() {
                    return true;
                }
                if start.elapsed() >= STEP_WINDOW {
                    return false;
                }
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .await;
        if met {
            return;
        }
        assert!(
            tokio::time::Instant::now() < end,
            "condition not met within {limit:?} of virtual time"
        );
        tokio::time::advance(step).await;
    }
}

/// A local time (the earliest, should it be ambiguous).
pub(crate) fn local(y: i32, mo: u32, d: u32, h: u32, mi: u32, s: u32) -> DateTime<Local> {
    Local
        .with_ymd_and_hms(y, mo, d, h, mi, s)
        .earliest()
        .expect("a valid local time")
}

/// `(started, last_rotation)` of `live` in the saved state, if it is there
/// (`None` too while the state file is missing or being replaced).
pub(crate) fn file_state(
    state_file: &Path,
    live: &Path,
) -> Option<(DateTime<Local>, Option<DateTime<Local>>)> {
    let text = std::fs::read_to_string(state_file).ok()?;
    let json: serde_json::Value = serde_json::from_str(&text).ok()?;
    let st = &json["files"][live.to_str()?];
    let parse = |v: &serde_json::Value| {
        DateTime::parse_from_rfc3339(v.as_str()?)
            .ok()
            .map(|t| t.with_timezone(&Local))
    };
    Some((parse(&st["started"])?, parse(&st["last_rotation"])))
}

/// Polls (real time) until `live` has `n` backups, all with `suffix`.
pub(crate) fn wait_for_backups(live: &Path, suffix: &str, n: usize) -> Vec<BackupFile> {
    let start = Instant::now();
    loop {
        let b = backups_of(live);
        if b.len() == n && b.iter().all(|b| b.suffix == suffix) {
            return b;
        }
        assert!(
            start.elapsed() < DEADLINE,
            "want {n} {suffix} backups of {}, have {b:#?}",
            live.display()
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}
