//! The daemon's own log (`[log] filename`): written, and rotated per
//! `[log] when` with `backup_count`, by the same machinery as app logs;
//! through the real binary, and in-process under paused time for cron
//! minutes and for the retry backoff of a failing rotation (issue 12).

use std::io::Write;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Local, TimeDelta, TimeZone};

use crate::rotation::{
    advance_until, backups_of, blocking, file_state, local, wait_for_backups, Paused,
};
use crate::util::*;

/// `[log]` rotating `daemon.log` every minute.
const EVERY_MINUTE: &str = "[log]\nfilename = daemon.log\nwhen = * * * * *\nbackup_count = 2\n";

/// Writes a state file in which `log` was started at `started` and last
/// rotated at `last`.
fn write_state(setup: &Setup, log: &Path, started: DateTime<Local>, last: Option<DateTime<Local>>) {
    let fmt = |t: DateTime<Local>| t.to_rfc3339_opts(chrono::SecondsFormat::Micros, false);
    let state = serde_json::json!({
        "version": 1,
        "files": { log.to_str().unwrap(): {
            "started": fmt(started),
            "last_rotation": last.map(fmt),
        }}
    });
    let dir = setup.root().join("lib");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("rotation-state.json"), state.to_string()).unwrap();
}

/// Appends `text` to `path` (as tracing would write to the own log).
fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
}

/// A log file whose recorded start is two days old must rotate right at
/// start-up (the midnight in between has passed), without any message, into
/// a compressed backup named after that start; the old content is kept.
#[test]
fn own_log_rotates_on_schedule_with_backup_named_after_its_start() {
    let setup = Setup::new().facilities(SIMPLE_FACILITIES).conf_extra(
        "[log]\nfilename = daemon.log\nwhen = midnight\nbackup_count = 1\nlevel = INFO",
    );
    let log_path = setup.root().join("daemon.log");
    std::fs::write(&log_path, "an old line from the last run\n").unwrap();
    let started = Local.with_ymd_and_hms(2026, 1, 10, 8, 30, 15).unwrap();
    let state_dir = setup.root().join("lib");
    std::fs::create_dir_all(&state_dir).unwrap();
    let state = serde_json::json!({
        "version": 1,
        "files": { log_path.to_str().unwrap(): {
            "started": started.to_rfc3339(),
            "last_rotation": started.to_rfc3339(),
        }}
    });
    std::fs::write(state_dir.join("rotation-state.json"), state.to_string()).unwrap();

    let mut d = Daemon::start(&setup);
    d.wait_for_log("daemon log rotated");
    let backup = setup.root().join(format!(
        "daemon.log.{}.xz",
        started.format("%Y-%m-%d-%H-%M-%S-%6f")
    ));
    let t0 = Instant::now();
    while !backup.exists() {
        assert!(
            t0.elapsed() < DEADLINE,
            "no compressed backup {}",
            backup.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    // The file this run started with is rotated whole: its old content, and
    // whatever this run logged before the rotation fired.
    let old = String::from_utf8(loghogd::compress::decompress_to_vec(&backup).unwrap()).unwrap();
    assert!(old.starts_with("an old line from the last run\n"), "{old}");
    d.stop();
    // The live file goes on with this run's lines, the stats line last.
    let live = std::fs::read_to_string(&log_path).unwrap();
    assert!(!live.contains("an old line"), "{live}");
    assert!(live.contains("stats "), "{live}");
    // A second start must not rotate again: the schedule's next time after
    // this rotation is tonight's midnight.
    let mut d = Daemon::start(&setup);
    d.stop();
    let backups = std::fs::read_dir(setup.root())
        .unwrap()
        .filter(|e| {
            let n = e.as_ref().unwrap().file_name();
            n.to_string_lossy().starts_with("daemon.log.")
        })
        .count();
    assert_eq!(backups, 1);
}

/// `when = * * * * *` rotates the own log at each minute boundary of the
/// daemon's clock, into backups named after each file's start, compressed
/// through the shared compression job, keeping `backup_count`; no real
/// minute passes.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn own_log_rotates_every_cron_minute_under_paused_time() {
    let start = local(2026, 3, 10, 12, 0, 50);
    let setup = Setup::new().conf_extra(EVERY_MINUTE);
    let log = setup.root().join("daemon.log");
    std::fs::write(&log, "minute 0\n").unwrap();
    write_state(&setup, &log, start, None);
    let state_file = setup.root().join("lib/rotation-state.json");
    let t0 = tokio::time::Instant::now();
    let d = Paused::start(&setup, start, Some(&log));
    let mut stamps = vec![start];
    for minute in 1..=3 {
        let boundary = local(2026, 3, 10, 12, minute, 0);
        // Up to a second before the boundary, then across it in steps.
        let now = start + (tokio::time::Instant::now() - t0);
        let before = (boundary - TimeDelta::seconds(1) - now).to_std().unwrap();
        tokio::time::advance(before).await;
        let (sf, l) = (state_file.clone(), log.clone());
        advance_until(
            Duration::from_millis(100),
            Duration::from_secs(5),
            move || {
                file_state(&sf, &l).is_some_and(|(_, last)| last.is_some_and(|t| t >= boundary))
            },
        )
        .await;
        let (started, last) = file_state(&state_file, &log).unwrap();
        let last = last.unwrap();
        assert!(
            last < boundary + TimeDelta::seconds(2),
            "minute {minute}: rotated at {last}"
        );
        assert_eq!(started, last, "the new file starts at the rotation");
        stamps.push(last);
        // Retention keeps the newest two.
        let l = log.clone();
        let backups = blocking(move || wait_for_backups(&l, ".xz", minute.min(2) as usize)).await;
        let newest = backups.last().unwrap();
        assert_eq!(
            newest.stamp,
            stamps[stamps.len() - 2]
                .format("%Y-%m-%d-%H-%M-%S-%6f")
                .to_string(),
            "minute {minute}: named after the file's start"
        );
        assert_eq!(
            loghogd::compress::decompress_to_vec(&newest.path).unwrap(),
            format!("minute {}\n", minute - 1).as_bytes()
        );
        // The sink reopened the live path: the next minute's lines go there.
        assert!(log.exists(), "minute {minute}: no new live file");
        append(&log, &format!("minute {minute}\n"));
    }
    d.stop().await;
    let left: Vec<String> = backups_of(&log).into_iter().map(|b| b.stamp).collect();
    let want: Vec<String> = stamps[1..3]
        .iter()
        .map(|t| t.format("%Y-%m-%d-%H-%M-%S-%6f").to_string())
        .collect();
    assert_eq!(left, want, "the oldest backup was pruned");
}

/// Tracing output of the test's own thread (where a current-thread runtime
/// runs every daemon task), as text.
#[derive(Clone, Default)]
pub(crate) struct Captured(Arc<Mutex<Vec<u8>>>);

impl Captured {
    pub(crate) fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }

    /// The lines containing `needle`.
    pub(crate) fn lines(&self, needle: &str) -> Vec<String> {
        self.text()
            .lines()
            .filter(|l| l.contains(needle))
            .map(str::to_string)
            .collect()
    }
}

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Issue 12: a rotation that keeps failing (here the live path was replaced
/// by a directory, which renames refuse even for root) logged 45,623 lines
/// in 2 s. It must log once per attempt and wait 1 s, 2 s, 4 s, ... between
/// attempts, keep the state as it was, and rotate once the cause is gone.
#[tokio::test(flavor = "current_thread", start_paused = true)]
async fn own_log_rotation_failure_retries_with_exponential_backoff() {
    let captured = Captured::default();
    let sink = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || sink.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::INFO)
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let start = local(2026, 3, 10, 12, 0, 30);
    let started = start - TimeDelta::minutes(2);
    let setup = Setup::new().conf_extra(EVERY_MINUTE);
    let log = setup.root().join("daemon.log");
    // Due since 11:59 (one minute after its last rotation).
    write_state(&setup, &log, started, Some(started));
    std::fs::write(&log, "").unwrap();
    let d = Paused::start(&setup, start, Some(&log));
    // The sink holds its file open; what is at the path now cannot be renamed.
    std::fs::rename(&log, setup.root().join("open-daemon.log")).unwrap();
    std::fs::create_dir(&log).unwrap();
    // Only now may the loop run: this blocking wait is its first chance.

    let failed = "daemon log rotation failed";
    let attempts = 8;
    for k in 0..attempts {
        let c = captured.clone();
        blocking(move || {
            let t0 = Instant::now();
            while c.lines(failed).len() < k + 1 {
                assert!(
                    t0.elapsed() < DEADLINE,
                    "attempt {k} never failed:\n{}",
                    c.text()
                );
                std::thread::sleep(Duration::from_millis(1));
            }
        })
        .await;
        let lines = captured.lines(failed);
        // Time stood still since the warning: a retry without a wait would
        // already have logged again.
        assert_eq!(lines.len(), k + 1, "{lines:#?}");
        let wait = Duration::from_secs(1 << k);
        assert!(
            lines[k].contains(&format!("retry_in={wait:?}"))
                && lines[k].contains("not a regular file"),
            "attempt {k}: {}",
            lines[k]
        );
        assert_eq!(
            file_state(&setup.root().join("lib/rotation-state.json"), &log),
            Some((started, Some(started))),
            "a failed rotation leaves the state"
        );
        if k + 1 < attempts {
            tokio::time::advance(wait).await;
        }
    }
    // The cause goes away: the next attempt rotates.
    std::fs::remove_dir(&log).unwrap();
    std::fs::write(&log, "written after the fix\n").unwrap();
    tokio::time::advance(Duration::from_secs(1 << (attempts - 1))).await;
    let l = log.clone();
    let backups = blocking(move || wait_for_backups(&l, ".xz", 1)).await;
    assert_eq!(
        backups[0].stamp,
        started.format("%Y-%m-%d-%H-%M-%S-%6f").to_string()
    );
    assert_eq!(
        loghogd::compress::decompress_to_vec(&backups[0].path).unwrap(),
        b"written after the fix\n"
    );
    d.stop().await;
    assert_eq!(
        captured.lines(failed).len(),
        attempts,
        "{}",
        captured.text()
    );
    // Attempts at 0, 1, 3, ..., 127 s failed; the one at 255 s rotated
    // (virtual time moves only by the advances above, so exactly then). Not
    // checked through the "daemon log rotated" line: another test hits that
    // callsite at the same time without a subscriber, and tracing's interest
    // cache can then skip it here.
    let at = start + TimeDelta::seconds((1 << attempts) - 1);
    assert_eq!(
        file_state(&setup.root().join("lib/rotation-state.json"), &log),
        Some((at, Some(at)))
    );
}
