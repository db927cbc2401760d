//! Config strictness, start-up exit codes and the environment (issue 12,
//! items 6 and 7), through the real binary: every problem that comes from
//! the configuration exits 78 with file, place and fix; typos are warnings
//! that name the nearest key, and errors under `--strict`; a bad `TZ` is a
//! warning and never read.

use crate::util::*;

/// `out` exited 78 and its output names every one of `needles`.
fn assert_config_error(out: &Output, needles: &[&str]) {
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{out:?}");
    let all = out.all();
    for n in needles {
        assert!(all.contains(n), "output should name {n:?}: {out:?}");
    }
}

#[test]
fn typos_are_warnings_naming_file_line_and_nearest_key() {
    let setup = Setup::new()
        .server_extra("default_prot = 5599")
        .conf_extra("[mian]\nuser = nobody")
        .facilities("[app]\nrotate = daily\nbackup_count = 3\nmax_sise = 100\n");
    let out = setup.run(&["--check-config"]);
    assert!(out.status.success(), "{out:?}");
    let err = &out.stderr;
    assert!(
        err.contains("unknown key `default_prot` ignored; did you mean `default_port`?"),
        "{out:?}"
    );
    assert!(
        err.contains("loghogd.conf: [server] default_prot (line"),
        "{out:?}"
    );
    assert!(
        err.contains("unknown section [mian] ignored; did you mean [main]?"),
        "{out:?}"
    );
    assert!(
        err.contains("facilities.conf: [app] max_sise (line 4): unknown key `max_sise` ignored; did you mean `max_size`?"),
        "{out:?}"
    );
    let strict = setup.run(&["--check-config", "--strict"]);
    assert_config_error(&strict, &["3 warning(s)", "--strict", "default_prot"]);
}

#[test]
fn a_started_daemon_logs_its_config_warnings() {
    let setup = Setup::new().server_extra("default_prot = 5599");
    let mut d = Daemon::start(&setup);
    d.wait_for_log("did you mean `default_port`?");
    d.stop();
}

#[test]
fn empty_path_value_is_an_error_not_the_default() {
    let setup = Setup::new().main_extra("logdir =");
    // `logdir = log` comes first in the generated file; the later empty one
    // is what ConfigParser keeps.
    let out = setup.run(&["--check-config"]);
    assert_config_error(&out, &["[main] logdir", "is empty", "loghogd.conf"]);
}

#[test]
fn empty_facilities_file_is_refused_at_start_and_on_reload() {
    let setup = Setup::new().facilities("; nothing here yet\n");
    let out = setup.run(&[]);
    assert_config_error(&out, &["facilities.conf", "no facility is configured"]);

    let setup = Setup::new();
    let d = InProcess::start(&setup);
    setup.write_facilities("");
    let err = d.reload().unwrap_err();
    assert!(err.contains("no facility is configured"), "{err}");
    // The old facilities stay: a message for them is still written.
    send_tcp(d.tcp_addr(), &simple("app", "after a refused reload"));
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), ["after a refused reload"]);
}

#[test]
fn start_up_problems_from_the_config_exit_78() {
    // An unknown user (also found by --check-config: no side effects needed).
    let setup = Setup::new().main_extra("user = no-such-user-here");
    for args in [&["--check-config"][..], &[][..]] {
        let out = setup.run(args);
        assert_config_error(&out, &["[main] user", "no-such-user-here", "adduser"]);
    }

    // logdir is a file.
    let setup = Setup::new();
    std::fs::write(setup.root().join("log"), b"not a dir").unwrap();
    let out = setup.run(&[]);
    assert_config_error(&out, &["[main] logdir", "is not a directory"]);

    // The daemon's own log is a directory.
    let setup = Setup::new().conf_extra("[log]\nfilename = run");
    std::fs::create_dir_all(setup.root().join("run")).unwrap();
    let out = setup.run(&["--check-config"]);
    assert_config_error(&out, &["[log] filename", "is a directory"]);

    // An address that is not this host's (TEST-NET-1: never routed, and
    // binding it fails at once with EADDRNOTAVAIL; nothing is sent).
    let setup = Setup::new().listen("192.0.2.1:0", "");
    let out = setup.run(&[]);
    assert_config_error(&out, &["[server] listen_ipv4", "192.0.2.1"]);
    assert!(!setup.pidfile().exists());
    // --check-config finds it too (a probe bind on port 0, nothing kept).
    let out = setup.run(&["--check-config"]);
    assert_config_error(&out, &["[server] listen_ipv4", "192.0.2.1"]);
}

#[test]
fn unusable_tz_is_a_warning_and_is_never_read() {
    for tz in [":/dev/zero", "Mars/Olympus_Mons"] {
        let setup = Setup::new().env("TZ", tz);
        // `run` panics if the binary outlives the test deadline, which is
        // how a daemon reading /dev/zero for ever would fail here.
        let out = setup.run(&["--check-config"]);
        assert!(out.status.success(), "{out:?}");
        assert!(out.stderr.contains("using UTC"), "TZ={tz}: {out:?}");
        assert!(out.stderr.contains(tz), "names the value: {out:?}");
        let strict = setup.run(&["--check-config", "--strict"]);
        assert_eq!(strict.status.code(), Some(EX_CONFIG), "{strict:?}");
    }
    // A valid zone passes without warnings.
    let out = Setup::new()
        .env("TZ", "Europe/Berlin")
        .run(&["--check-config", "--strict"]);
    assert!(out.status.success(), "{out:?}");
}

#[test]
fn a_fifo_at_the_facilities_path_is_refused_and_stop_still_works() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let path = setup.facilities_path();
    std::fs::remove_file(&path).unwrap();
    let st = std::process::Command::new("mkfifo")
        .arg(&path)
        .status()
        .unwrap();
    assert!(st.success(), "mkfifo failed");
    d.signal("HUP");
    d.wait_for_log("is not a regular file");
    // The signal task was not blocked on the FIFO: SIGTERM still stops it,
    // and the old facilities are still in force until then.
    send_tcp(d.tcp_addr(), &simple("app", "after the fifo"));
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    d.stop();
}
