//! The daemon's own log (`[log] filename`): written, and rotated per
//! `[log] when` with `backup_count`, by the same machinery as app logs.

use std::time::{Duration, Instant};

use chrono::{Local, TimeZone};

use crate::util::*;

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
    let old = loghogd::compress::decompress_to_vec(&backup).unwrap();
    assert_eq!(
        String::from_utf8(old).unwrap(),
        "an old line from the last run\n"
    );
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
