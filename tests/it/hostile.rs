//! The daemon's own log under hostile peers (issue 12, item 5): strings a
//! client chose are escaped and truncated, and warnings a peer can cause are
//! rate-limited with a suppressed count.

use std::io::Write;

use crate::util::*;

#[test]
fn client_strings_cannot_forge_daemon_log_lines() {
    let setup =
        Setup::new().facilities("[app]\nrotate = daily\nbackup_count = 3\nsecret = s3cret\n");
    let mut d = Daemon::start(&setup);
    let forged = "x\n2026-12-02T10:00:00.000000Z  INFO loghogd: stopping signal=15\x1b[2J";
    let mut bytes = simple(forged, "unknown app");
    // A signed facility with a bad signature: app and module are logged.
    bytes.extend(frame(
        "app",
        forged,
        "bad signature",
        &Opts::signed("wrong"),
    ));
    send_tcp(d.tcp_addr(), &bytes);
    d.wait_for_log_count("dropped message", 2);
    d.stop();
    let log = d.stderr_text();
    assert!(
        !log.lines().any(|l| l.starts_with("2026-12-02T10:00:00")),
        "a client forged a line:\n{log}"
    );
    assert!(!log.contains('\x1b'), "ESC reached the log:\n{log}");
    assert!(
        log.contains("x\\n2026-12-02T10:00:00.000000Z  INFO loghogd: stopping signal=15\\u{1b}[2J"),
        "the app id is shown escaped:\n{log}"
    );
    assert_eq!(
        log.matches("stopping").count(),
        3,
        "two escaped copies and the real stop line:\n{log}"
    );
}

#[test]
fn peers_closing_inside_a_frame_are_rate_limited() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    for _ in 0..60 {
        let mut s = connect(d.tcp_addr());
        // A header announcing 100 bytes, then only 3 of them, then EOF.
        s.write_all(&raw_frame(100, 0, b"abc")).unwrap();
    }
    // A good message proves the daemon kept serving everyone else.
    send_tcp(d.tcp_addr(), &simple("app", "still here"));
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    d.stop();
    let log = d.stderr_text();
    let lines = log.matches("connection closed on error").count();
    assert!(
        (1..=20).contains(&lines),
        "{lines} lines: not rate-limited?\n{log}"
    );
    assert!(log.contains("suppressed="), "{log}");
}

#[test]
fn a_symlinked_app_directory_is_not_followed_out_of_the_logdir() {
    let setup = Setup::new();
    let outside = setup.root().join("outside");
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::create_dir_all(setup.logdir()).unwrap();
    std::os::unix::fs::symlink(&outside, setup.log("app")).unwrap();
    let d = InProcess::start(&setup);
    send_tcp(d.tcp_addr(), &simple("app", "must not leave the logdir"));
    d.wait_stat("write_errors", 1);
    assert!(
        std::fs::read_dir(&outside).unwrap().next().is_none(),
        "a file was created through the symlink"
    );
}

/// Senders that never stop (issue 12.6): a stop still ends within its one
/// grace period, everything read is written whole and in order, and what
/// was not read stays with the peers (their writes fail: nothing is
/// "accepted" and then dropped).
#[test]
fn stop_under_senders_that_never_stop_ends_within_one_grace_period() {
    let setup = Setup::new();
    let mut d = InProcess::start_with(&setup, |c| {
        c.limits.shutdown_grace = std::time::Duration::from_secs(2);
    });
    let addr = d.tcp_addr();
    let senders: Vec<_> = (0..4)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = connect(addr);
                let deadline = std::time::Instant::now() + DEADLINE;
                let mut n = 0usize;
                // Bounded: until the daemon closes the connection, or the
                // test deadline passes.
                while std::time::Instant::now() < deadline {
                    let mut batch = Vec::new();
                    for _ in 0..50 {
                        batch.extend(simple("app", &format!("c{c} n{n}")));
                        n += 1;
                    }
                    if s.write_all(&batch).is_err() {
                        return true;
                    }
                }
                false
            })
        })
        .collect();
    d.wait_stat("written", 1000);
    d.stop();
    for s in senders {
        assert!(s.join().unwrap(), "a sender was never cut off");
    }
    assert_eq!(
        d.stat("received"),
        d.stat("written"),
        "{}",
        d.remote.stats.summary()
    );
    let text = read(&setup.log("app/root.log"));
    let mut next = [0usize; 4];
    for line in text.lines() {
        let (_, _, body) = parse_line(line);
        let (c, n) = body.split_once(' ').unwrap();
        let c: usize = c[1..].parse().unwrap();
        let n: usize = n[1..].parse().unwrap();
        assert_eq!(n, next[c], "connection {c}: lost, duplicated or reordered");
        next[c] += 1;
    }
    assert_eq!(next.iter().sum::<usize>() as u64, d.stat("written"));
}

#[test]
fn sigterm_under_continuous_load_stops_within_the_grace_period() {
    let setup = Setup::new().server_extra("shutdown_timeout = 2");
    let mut d = Daemon::start(&setup);
    let addr = d.tcp_addr();
    let sender = std::thread::spawn(move || {
        let mut s = connect(addr);
        let deadline = std::time::Instant::now() + DEADLINE;
        let batch: Vec<u8> = (0..100)
            .flat_map(|i| simple("app", &format!("m{i}")))
            .collect();
        while std::time::Instant::now() < deadline {
            if s.write_all(&batch).is_err() {
                return true;
            }
        }
        false
    });
    wait_for_lines(&setup.log("app/root.log"), 1000, DEADLINE);
    let log = d.stop();
    assert!(sender.join().unwrap(), "the sender was never cut off");
    assert!(
        log.contains("read no further and closed"),
        "the drain was cut at half the grace period:\n{log}"
    );
    assert!(
        !log.contains("did not finish within the grace period")
            && !log.contains("did not close within the grace period"),
        "the stop overran its grace period:\n{log}"
    );
    for line in read(&setup.log("app/root.log")).lines() {
        let (_, _, body) = parse_line(line);
        assert!(body.starts_with('m'), "torn line: {line:?}");
    }
}
