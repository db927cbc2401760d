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
