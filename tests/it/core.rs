//! The core daemon (issue 2) through real sockets: delivery and line
//! format, routing, signing, path safety, hostile frames, bursts,
//! backpressure, signals, config errors and `--check-config`. Tests that
//! need the binary (its log, signals, flags, exit codes) start it as a
//! [`Daemon`]; the others run it [`InProcess`] and read its counters as data.
//!
//! Negative checks ("X is not written") never wait for nothing: either a
//! GOOD message sent after X on the same connection to the same file proves
//! X was processed first (lines of one connection keep their order), or the
//! daemon is stopped (SIGTERM drains everything) before the files are read.

use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::util::*;

/// Deadline for the 100k burst (a debug build on a loaded 2-core machine).
const BURST_DEADLINE: Duration = Duration::from_secs(120);

fn now_local() -> chrono::NaiveDateTime {
    chrono::Local::now().naive_local()
}

// === delivery and line format ===

#[test]
fn in_process_daemon_writes_counts_and_stops() {
    let setup = Setup::new();
    let mut d = InProcess::start(&setup);
    send_tcp(d.tcp_addr(), &simple("app", "hello in process"));
    send_udp(d.udp_addr(), &[simple("nope", "unknown app")]);
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), ["hello in process"]);
    d.wait_stat("unknown_app", 1);
    // The line is on disk a moment before the counter moves.
    d.wait_stat("written", 1);
    assert_eq!(d.stat("written"), 1);
    d.stop();
    assert_eq!(d.stat("received"), 2);
}

#[test]
fn tcp_delivery_exact_line_format() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let before = now_local() - chrono::Duration::seconds(2);
    send_tcp(d.tcp_addr(), &simple("app", "hello over tcp"));
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    let after = now_local() + chrono::Duration::seconds(2);
    assert_eq!(lines.len(), 1, "{lines:?}");
    let (ts, host, body) = parse_line(&lines[0]);
    assert_eq!(host, "127.0.0.1", "hostname defaults to the peer IP");
    assert_eq!(body, "hello over tcp");
    assert_eq!(
        lines[0],
        format!("{ts} - 127.0.0.1 - hello over tcp"),
        "exact line"
    );
    // Server's local time of receipt, not the client's stamp (2013).
    let t = chrono::NaiveDateTime::parse_from_str(&ts, "%Y-%m-%d %H:%M:%S%.6f").unwrap();
    assert!(
        before <= t && t <= after,
        "timestamp {ts} is not the local time of receipt ({before} .. {after})"
    );
    // The file ends with exactly one newline after the body.
    assert!(read(&setup.log("app/root.log")).ends_with("hello over tcp\n"));
}

#[test]
fn udp_delivery_exact_line_format() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    assert_eq!(
        d.tcp_addr().port(),
        d.udp_addr().port(),
        "TCP and UDP on one address share the port"
    );
    let dgrams: Vec<Vec<u8>> = (0..5)
        .map(|i| simple("app", &format!("udp {i}")))
        .chain(std::iter::once(frame(
            "app",
            "web",
            "udp compressed",
            &Opts::compressed(),
        )))
        .collect();
    send_udp(d.udp_addr(), &dgrams);
    let mut got = bodies(&wait_for_lines(&setup.log("app/root.log"), 5, DEADLINE));
    got.sort();
    assert_eq!(got, ["udp 0", "udp 1", "udp 2", "udp 3", "udp 4"]);
    let web = wait_for_lines(&setup.log("app/web.log"), 1, DEADLINE);
    let (_, host, body) = parse_line(&web[0]);
    assert_eq!(
        (host.as_str(), body.as_str()),
        ("127.0.0.1", "udp compressed")
    );
}

#[test]
fn tcp_compressed_frame_and_hostname_field() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let mut bytes = frame("app", "", "zlib body", &Opts::compressed());
    bytes.extend(frame("app", "", "named host", &Opts::host("box-1.example")));
    send_tcp(d.tcp_addr(), &bytes);
    let lines = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    assert_eq!(
        hosts_and_bodies(&lines),
        [
            ("127.0.0.1".to_string(), "zlib body".to_string()),
            ("box-1.example".to_string(), "named host".to_string())
        ]
    );
}

#[test]
fn body_with_newlines_and_non_bmp_escapes_lands_intact() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    // ASCII JSON with \u escapes and a surrogate pair, as Python's json.dumps writes it.
    let payload = br#"{"version": 1, "app_id": "app", "module": "", "stamp": 1358363502, "nsecs": 5, "body": "first line\nsecond\tline caf\u00e9 \ud83d\ude00 end\n  indented"}"#;
    send_tcp(d.tcp_addr(), &payload_frame(payload, 0));
    let want = " - 127.0.0.1 - first line\nsecond\tline café 😀 end\n  indented\n";
    let text = wait_for_content(&setup.log("app/root.log"), "the body", |t| {
        t.ends_with("indented\n")
    });
    assert_eq!(&text[26..], want, "whole file: {text:?}");
    parse_line(text.lines().next().unwrap());
}

// === routing ===

const ROUTING_FACILITIES: &str = "\
[app]
rotate = daily
backup_count = 3

[app:web]
rotate = daily
backup_count = 3

[app:web.requests]
rotate = daily
backup_count = 3

[app:root.db]
rotate = daily
backup_count = 3
";

#[test]
fn routes_to_most_specific_facility() {
    let setup = Setup::new().facilities(ROUTING_FACILITIES);
    let mut d = Daemon::start(&setup);
    let cases = [
        ("web.requests.slow", "web.requests.log"),
        ("web.requests", "web.requests.log"),
        ("root.web.requests.x.y", "web.requests.log"),
        ("web.other", "web.log"),
        ("web", "web.log"),
        ("root.web", "web.log"),
        ("web.requestsx", "web.log"),
        ("webx", "root.log"),
        ("root", "root.log"),
        ("", "root.log"),
        ("other.thing", "root.log"),
        ("db", "db.log"),
        ("db.pool", "db.log"),
    ];
    let mut bytes = Vec::new();
    for (module, _) in cases {
        bytes.extend(frame(
            "app",
            module,
            &format!("module={module}"),
            &Opts::default(),
        ));
    }
    send_tcp(d.tcp_addr(), &bytes);
    let mut expected: std::collections::BTreeMap<&str, Vec<String>> = Default::default();
    for (module, file) in cases {
        expected
            .entry(file)
            .or_default()
            .push(format!("module={module}"));
    }
    for (file, want) in &expected {
        wait_for_lines(&setup.log(&format!("app/{file}")), want.len(), DEADLINE);
    }
    d.stop();
    for (file, want) in &expected {
        let got = bodies(&wait_for_lines(
            &setup.log(&format!("app/{file}")),
            0,
            DEADLINE,
        ));
        assert_eq!(&got, want, "content of app/{file}");
    }
    let files = log_files(&setup);
    assert_eq!(
        files,
        [
            "app/db.log",
            "app/root.log",
            "app/web.log",
            "app/web.requests.log"
        ]
    );
}

#[test]
fn unknown_app_is_dropped() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let mut bytes = simple("nosuchapp", "lost");
    bytes.extend(frame("nosuchapp", "web", "lost too", &Opts::default()));
    bytes.extend(simple("app", "kept"));
    send_tcp(d.tcp_addr(), &bytes);
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    let err = d.stop();
    assert_eq!(log_files(&setup), ["app/root.log"]);
    assert_eq!(
        bodies(&wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE)),
        ["kept"]
    );
    assert!(
        err.lines()
            .any(|l| l.contains("WARN") && l.contains("nosuchapp")),
        "a dropped unknown app is logged as a warning naming it; stderr:\n{err}"
    );
    assert_eq!(d.stat("received"), 3);
    assert_eq!(d.stat("written"), 1);
    assert_eq!(d.stat("unknown_app"), 2);
}

#[test]
fn files_are_created_on_first_message_only() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    assert_eq!(
        log_files(&setup),
        Vec::<String>::new(),
        "no file at start-up"
    );
    send_tcp(
        d.tcp_addr(),
        &frame("app", "web", "first", &Opts::default()),
    );
    wait_for_lines(&setup.log("app/web.log"), 1, DEADLINE);
    assert_eq!(
        log_files(&setup),
        ["app/web.log"],
        "root.log not created yet"
    );
}

// === file_per_host and path safety ===

const PER_HOST_FACILITIES: &str = "\
[app]
rotate = daily
backup_count = 3
file_per_host = yes

[app:web]
rotate = daily
backup_count = 3
";

#[test]
fn file_per_host_paths() {
    let setup = Setup::new().facilities(PER_HOST_FACILITIES);
    let mut d = Daemon::start(&setup);
    let mut bytes = frame("app", "", "from h1", &Opts::host("h1"));
    bytes.extend(frame("app", "web.x", "from h2", &Opts::host("h2")));
    bytes.extend(frame("app", "root", "from peer", &Opts::default()));
    bytes.extend(frame("app", "", "h1 again", &Opts::host("h1")));
    send_tcp(d.tcp_addr(), &bytes);
    let h1 = wait_for_lines(&setup.log("app/h1-root.log"), 2, DEADLINE);
    wait_for_lines(&setup.log("app/h2-web.log"), 1, DEADLINE);
    wait_for_lines(&setup.log("app/127.0.0.1-root.log"), 1, DEADLINE);
    d.stop();
    assert_eq!(
        log_files(&setup),
        [
            "app/127.0.0.1-root.log",
            "app/h1-root.log",
            "app/h2-web.log"
        ]
    );
    assert_eq!(
        h1.iter()
            .map(|l| parse_line(l))
            .map(|(_, h, b)| (h, b))
            .collect::<Vec<_>>(),
        [
            ("h1".to_string(), "from h1".to_string()),
            ("h1".to_string(), "h1 again".to_string())
        ]
    );
    let peer = wait_for_lines(&setup.log("app/127.0.0.1-root.log"), 1, DEADLINE);
    assert_eq!(parse_line(&peer[0]).1, "127.0.0.1");
}

/// A relay's connection interleaving many hosts (more than a reader once
/// kept routes for): every host's file gets exactly its lines, in order,
/// and the rotation state lists every new file once the daemon has stopped.
#[test]
fn file_per_host_many_hosts_through_one_connection() {
    let setup = Setup::new().facilities(PER_HOST_FACILITIES);
    let mut d = Daemon::start(&setup);
    let (hosts, rounds) = (300, 5);
    let mut bytes = Vec::new();
    for round in 0..rounds {
        for h in 0..hosts {
            let host = format!("relay-h{h}");
            bytes.extend(frame(
                "app",
                "",
                &format!("{host} #{round}"),
                &Opts::host(&host),
            ));
        }
    }
    send_tcp(d.tcp_addr(), &bytes);
    for h in 0..hosts {
        let lines = wait_for_lines(
            &setup.log(&format!("app/relay-h{h}-root.log")),
            rounds,
            DEADLINE,
        );
        let bodies: Vec<String> = lines.iter().map(|l| parse_line(l).2).collect();
        let want: Vec<String> = (0..rounds).map(|r| format!("relay-h{h} #{r}")).collect();
        assert_eq!(bodies, want, "host {h}");
    }
    d.stop();
    assert_eq!(log_files(&setup).len(), hosts);
    let state = read(&setup.root().join("lib/rotation-state.json"));
    let state: serde_json::Value = serde_json::from_str(&state).expect("state is JSON");
    let files = state["files"].as_object().expect("files map");
    for h in 0..hosts {
        let path = setup.log(&format!("app/relay-h{h}-root.log"));
        assert!(
            files.contains_key(path.to_str().unwrap()),
            "{} missing from the rotation state",
            path.display()
        );
    }
}

#[test]
fn hostname_path_attacks_stay_inside_app_dir() {
    let setup = Setup::new().facilities(PER_HOST_FACILITIES);
    let mut d = Daemon::start(&setup);
    // An absolute path inside the temp dir: `Path::join` would replace the base.
    let absolute = setup
        .root()
        .join("abs-escape")
        .to_string_lossy()
        .into_owned();
    let attacks: Vec<String> = vec![
        "../../etc".into(),
        "../escape".into(),
        "..".into(),
        ".".into(),
        "a/b".into(),
        "a/../../../x".into(),
        absolute,
        "\0".into(),
        "x\0y".into(),
        "line\nbreak".into(),
        "tab\there".into(),
        "\u{1b}[31mred".into(),
        "\r".into(),
        "".into(),
        "\\..\\..\\win".into(),
    ];
    // Both transports, and both the root facility and a sub-facility.
    let mut bytes = Vec::new();
    let mut dgrams = Vec::new();
    for (i, h) in attacks.iter().enumerate() {
        bytes.extend(frame("app", "", &format!("tcp attack {i}"), &Opts::host(h)));
        bytes.extend(frame(
            "app",
            "web",
            &format!("tcp web attack {i}"),
            &Opts::host(h),
        ));
        dgrams.push(frame("app", "", &format!("udp attack {i}"), &Opts::host(h)));
    }
    bytes.extend(frame("app", "", "sentinel", &Opts::host("good-host")));
    send_udp(d.udp_addr(), &dgrams);
    send_tcp(d.tcp_addr(), &bytes);
    wait_for_lines(&setup.log("app/good-host-root.log"), 1, DEADLINE);
    d.stop();

    let app_dir = setup.log("app");
    let mut bad = Vec::new();
    for p in walk(setup.root()) {
        let rel = p.strip_prefix(setup.root()).unwrap();
        let top = rel
            .components()
            .next()
            .unwrap()
            .as_os_str()
            .to_string_lossy();
        let ok = match top.as_ref() {
            "loghogd.conf" | "facilities.conf" => rel.components().count() == 1,
            "lib" | "run" => true,
            "log" => {
                p.parent() == Some(app_dir.as_path())
                    && !p
                        .file_name()
                        .unwrap()
                        .to_string_lossy()
                        .chars()
                        .any(|c| c.is_control())
            }
            _ => false,
        };
        if !ok {
            bad.push(format!("{:?}", rel));
        }
    }
    assert!(
        bad.is_empty(),
        "files outside {{logdir}}/app/ (or with control characters in the name): {bad:?}\nall files: {:?}",
        walk(setup.root())
    );
    // No file may be named after a dot-path component.
    for f in log_files(&setup) {
        let name = f.strip_prefix("app/").unwrap();
        assert!(
            !name.starts_with("..-") && !name.starts_with(".-") && !name.starts_with('-'),
            "unsafe host file name: {f:?}"
        );
    }
}

// === signing ===

#[test]
fn signing_good_written_missing_and_wrong_not() {
    let setup = Setup::new().facilities(
        "[app]\nrotate = daily\nbackup_count = 3\nsecret = s3cr;et\n\n\
         [app:web]\nrotate = daily\nbackup_count = 3\n",
    );
    let mut d = InProcess::start(&setup);
    let mut bytes = Vec::new();
    bytes.extend(simple("app", "missing signature"));
    bytes.extend(frame("app", "", "wrong secret", &Opts::signed("other")));
    bytes.extend(frame(
        "app",
        "",
        "malformed signature",
        &Opts {
            signature: Some("not-hex".into()),
            ..Opts::default()
        },
    ));
    bytes.extend(frame("app", "", "good one", &Opts::signed("s3cr;et")));
    // A signature valid for a different body (tampered message).
    let signed = Opts::signed("s3cr;et");
    let mut tampered = message("app", "", "original", &signed);
    tampered.body = "tampered".into();
    let mut p = Vec::new();
    tampered.encode(&mut p);
    bytes.extend(payload_frame(&p, 0));
    bytes.extend(frame("app", "", "good two", &Opts::signed("s3cr;et")));
    // The sub-facility inherits the secret from its root facility.
    bytes.extend(frame("app", "web", "web unsigned", &Opts::default()));
    bytes.extend(frame("app", "web", "web signed", &Opts::signed("s3cr;et")));
    send_tcp(d.tcp_addr(), &bytes);
    let root = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    assert_eq!(bodies(&root), ["good one", "good two"]);
    let web = wait_for_lines(&setup.log("app/web.log"), 1, DEADLINE);
    assert_eq!(bodies(&web), ["web signed"]);
    d.stop();
    assert_eq!(
        bodies(&wait_for_lines(&setup.log("app/root.log"), 0, DEADLINE)),
        ["good one", "good two"]
    );
    assert_eq!(d.stat("received"), 8);
    assert_eq!(d.stat("written"), 3);
    assert_eq!(d.stat("bad_signature"), 5);
}

#[test]
fn spec_test_vector_end_to_end() {
    let setup = Setup::new().facilities(
        "[app-name]\nrotate = daily\nbackup_count = 3\nsecret = 01WzaGPu\n\n\
         [app-name:web.foo]\nrotate = daily\nbackup_count = 3\n",
    );
    let d = Daemon::start(&setup);
    let body = "If numbers aren’t beautiful, I don’t know what is. –Paul Erdős";
    // Hard-coded signature from SPEC §3, not computed by our own signer.
    let opts = Opts {
        signature: Some("396d1459bf34d782ebe156fd02b8e591".into()),
        stamp: Some(1358363502),
        nsecs: Some(12043),
        ..Opts::default()
    };
    let mut bytes = frame("app-name", "web.foo", body, &opts);
    // The same message as the Python client writes it: ASCII JSON with escapes.
    let ascii = r#"{"version": 1, "app_id": "app-name", "module": "web.foo", "stamp": 1358363502, "nsecs": 12043, "hostname": "py", "body": "If numbers aren\u2019t beautiful, I don\u2019t know what is. \u2013Paul Erd\u0151s", "signature": "396d1459bf34d782ebe156fd02b8e591"}"#;
    bytes.extend(payload_frame(ascii.as_bytes(), 0));
    // One changed digit of nsecs must fail.
    let wrong = Opts {
        nsecs: Some(12044),
        ..opts.clone()
    };
    bytes.extend(frame("app-name", "web.foo", body, &wrong));
    bytes.extend(frame(
        "app-name",
        "web.foo",
        "end",
        &Opts::signed("01WzaGPu"),
    ));
    send_tcp(d.tcp_addr(), &bytes);
    let lines = wait_for_lines(&setup.log("app-name/web.foo.log"), 3, DEADLINE);
    let parsed: Vec<_> = lines
        .iter()
        .map(|l| parse_line(l))
        .map(|(_, h, b)| (h, b))
        .collect();
    assert_eq!(
        parsed,
        [
            ("127.0.0.1".to_string(), body.to_string()),
            ("py".to_string(), body.to_string()),
            ("127.0.0.1".to_string(), "end".to_string()),
        ]
    );
}

// === hostile frames, each followed by a good one ===
//
// The whole matrix (every malformed header, zlib stream, UTF-8, JSON and
// field) is decoded in-process by the unit tests of `src/input/loghog.rs`.
// Here a sample from every layer goes through a running daemon's sockets,
// and `bad_frame_logging_is_rate_limited` is the one end-to-end run of the
// binary with hostile input.

fn json_frame(json: &str) -> Vec<u8> {
    payload_frame(json.as_bytes(), 0)
}

/// One hostile frame from every layer of the decoder: (name, frame), each
/// well delimited under `max_msg_size = 4096`.
fn hostile_sample() -> Vec<(&'static str, Vec<u8>)> {
    let mut p = Vec::new();
    message("app", "", "hostile", &Opts::default()).encode(&mut p);
    let mut broken = zlib(&p);
    let n = broken.len();
    broken[n / 2] ^= 0xff;
    broken[n - 1] ^= 0xff;
    let mut bomb = Vec::new();
    message("app", "", &"A".repeat(1 << 20), &Opts::default()).encode(&mut bomb);
    let bomb = zlib(&bomb);
    assert!(bomb.len() < 4096, "bomb frame must pass the length check");
    let mut bad_utf8 = Vec::new();
    message("app", "", "bad utf8 \u{e9}", &Opts::default()).encode(&mut bad_utf8);
    let at = bad_utf8.iter().position(|&b| b == 0xc3).unwrap();
    bad_utf8[at] = 0xff;
    vec![
        ("reserved flag bits", payload_frame(&p, 0x02)),
        ("broken zlib", payload_frame(&broken, 0x01)),
        ("zlib bomb past the cap", payload_frame(&bomb, 0x01)),
        ("invalid UTF-8", payload_frame(&bad_utf8, 0)),
        (
            "bad JSON",
            json_frame(r#"{"version": 1, "app_id": "app", "#),
        ),
        (
            "missing body",
            json_frame(r#"{"version": 1, "app_id": "app", "module": "", "stamp": 1, "nsecs": 1}"#),
        ),
        (
            "wrong version",
            json_frame(
                r#"{"version": 2, "app_id": "app", "module": "", "stamp": 1, "nsecs": 1, "body": "v2"}"#,
            ),
        ),
    ]
}

/// Every hostile frame of the sample, followed by a good one, on ONE TCP
/// connection that stays open and usable, then as datagrams: exactly the
/// good lines are written, in order, and every bad frame is counted.
#[test]
fn hostile_frames_are_dropped_alone_over_tcp_and_udp() {
    let setup = Setup::new().server_extra("max_msg_size = 4096");
    let mut d = InProcess::start(&setup);
    let sample = hostile_sample();
    let mut s = connect(d.tcp_addr());
    s.write_all(&simple("app", "good before")).unwrap();
    let mut want = vec!["good before".to_string()];
    for (name, bad) in &sample {
        s.write_all(bad).unwrap();
        s.write_all(&simple("app", &format!("after {name}")))
            .unwrap();
        want.push(format!("after {name}"));
    }
    let path = setup.log("app/root.log");
    assert_eq!(bodies(&wait_for_lines(&path, want.len(), DEADLINE)), want);
    // The connection is still open and usable.
    s.write_all(&simple("app", "still open")).unwrap();
    want.push("still open".to_string());
    assert_eq!(bodies(&wait_for_lines(&path, want.len(), DEADLINE)), want);
    drop(s);
    d.wait_stat("bad_frames", sample.len() as u64);

    // The same bytes as datagrams are dropped too, and UDP goes on. One
    // datagram at a time, so the kernel cannot drop any under load.
    for (name, bad) in &sample {
        send_udp(
            d.udp_addr(),
            &[bad.clone(), simple("app", &format!("udp {name}"))],
        );
        want.push(format!("udp {name}"));
        assert_eq!(bodies(&wait_for_lines(&path, want.len(), DEADLINE)), want);
    }
    d.stop();
    assert_eq!(
        d.stat("bad_frames"),
        2 * sample.len() as u64,
        "each sample once over TCP, once over UDP"
    );
    assert_eq!(d.stat("written"), want.len() as u64);
    assert_eq!(d.stat("received"), want.len() as u64);
    assert_eq!(d.stat("udp_dropped"), 0);
}

// === length over the cap ===

#[test]
fn over_cap_length_closes_only_that_connection() {
    // The inline ` ;` comment must be stripped (SPEC §6).
    let setup = Setup::new().server_extra("max_msg_size = 1024 ; one KiB");
    let mut d = InProcess::start(&setup);
    let mut other = connect(d.tcp_addr());
    other.write_all(&simple("app", "other 1")).unwrap();
    let mut bad = connect(d.tcp_addr());
    bad.write_all(&simple("app", "bad conn 1")).unwrap();
    wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    // A header announcing 1025 bytes (cap + 1), some payload, then a good frame
    // that the daemon must never act on: the stream is no longer trusted.
    let mut bytes = raw_frame(1025, 0, &[b'x'; 100]);
    bytes.extend(simple("app", "after over-cap (must not be written)"));
    bad.write_all(&bytes).unwrap();
    wait_closed_by_peer(&mut bad);
    // A huge announced size also closes without allocating it.
    let mut huge = connect(d.tcp_addr());
    huge.write_all(&raw_frame(u32::MAX, 0, b"")).unwrap();
    wait_closed_by_peer(&mut huge);
    other.write_all(&simple("app", "other 2")).unwrap();
    drop(other);
    let lines = wait_for_lines(&setup.log("app/root.log"), 3, DEADLINE);
    d.stop();
    let lines_after = wait_for_lines(&setup.log("app/root.log"), 3, DEADLINE);
    assert_eq!(lines, lines_after, "nothing more after stop");
    let mut b = bodies(&lines);
    b.sort();
    assert_eq!(b, ["bad conn 1", "other 1", "other 2"]);
    assert_eq!(d.stat("oversize_closed"), 2);
}

#[test]
fn frame_at_exactly_the_cap_is_accepted() {
    let setup = Setup::new().server_extra("max_msg_size = 1024");
    let d = Daemon::start(&setup);
    let mut p = Vec::new();
    message("app", "", "", &Opts::default()).encode(&mut p);
    let pad = 1024 - p.len();
    let body = "b".repeat(pad);
    let mut p = Vec::new();
    message("app", "", &body, &Opts::default()).encode(&mut p);
    assert_eq!(p.len(), 1024);
    let mut bytes = payload_frame(&p, 0);
    bytes.extend(simple("app", "next"));
    send_tcp(d.tcp_addr(), &bytes);
    let lines = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    assert_eq!(bodies(&lines), [body.as_str(), "next"]);
}

#[test]
fn udp_datagram_over_cap_is_dropped() {
    let setup = Setup::new().server_extra("max_msg_size = 1024");
    let d = InProcess::start(&setup);
    let big = "x".repeat(2000);
    send_udp(
        d.udp_addr(),
        &[simple("app", &big), simple("app", "small after")],
    );
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), ["small after"]);
    d.wait_stat("bad_frames", 1);
}

// === bursts ===

/// Sends `per_conn` messages on each of `conns` connections in parallel;
/// bodies are `c{conn} n{seq:06} {padding}`. Returns when all are sent and closed.
fn burst(addr: std::net::SocketAddr, conns: usize, per_conn: usize) {
    let threads: Vec<_> = (0..conns)
        .map(|c| {
            std::thread::spawn(move || {
                let pad = "p".repeat(60);
                let mut bytes = Vec::with_capacity(per_conn * 160);
                for i in 0..per_conn {
                    bytes.extend(simple("app", &format!("c{c} n{i:06} {pad}")));
                }
                send_tcp(addr, &bytes);
            })
        })
        .collect();
    for t in threads {
        t.join().expect("sender thread");
    }
}

/// Checks that `lines` hold each `c{conn} n{seq}` exactly once, in order
/// per connection, all from the loopback peer.
fn check_burst(lines: &[String], conns: usize, per_conn: usize) {
    assert_eq!(lines.len(), conns * per_conn, "total line count");
    for line in lines {
        assert_eq!(parse_line(line).1, "127.0.0.1");
    }
    check_numbers(lines, conns, per_conn);
}

#[test]
fn burst_100k_over_several_connections_exactly_once_in_order() {
    let setup = Setup::new();
    let mut d = InProcess::start(&setup);
    burst(d.tcp_addr(), 4, 25_000);
    let lines = wait_for_lines(&setup.log("app/root.log"), 100_000, BURST_DEADLINE);
    check_burst(&lines, 4, 25_000);
    d.stop();
    let lines = wait_for_lines(&setup.log("app/root.log"), 100_000, DEADLINE);
    assert_eq!(lines.len(), 100_000, "no duplicates after stop");
    assert_eq!(d.stat("received"), 100_000);
    assert_eq!(d.stat("written"), 100_000);
}

#[test]
fn stop_right_after_burst_loses_nothing() {
    let setup = Setup::new();
    let mut d = InProcess::start(&setup);
    burst(d.tcp_addr(), 4, 10_000);
    // Clients have written everything and closed; stop at once (as
    // SIGTERM does: `sigint_also_stops_cleanly` covers the signals).
    d.stop();
    let lines = wait_for_lines(&setup.log("app/root.log"), 0, DEADLINE);
    check_burst(&lines, 4, 10_000);
    assert_eq!(d.stat("received"), 40_000);
    assert_eq!(d.stat("written"), 40_000);
}

// === signals ===

#[test]
fn sighup_with_good_facilities_adds_an_app() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    // Before the reload, newapp is unknown.
    let mut bytes = simple("newapp", "before reload");
    bytes.extend(simple("app", "sentinel 1"));
    send_tcp(d.tcp_addr(), &bytes);
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);

    setup.write_facilities(&format!(
        "{SIMPLE_FACILITIES}\n[newapp]\nrotate = hourly\nbackup_count = 2\n"
    ));
    d.signal("HUP");
    d.wait_for_log("facilities reloaded");
    let mut bytes = simple("newapp", "after reload");
    bytes.extend(simple("app", "sentinel 2"));
    send_tcp(d.tcp_addr(), &bytes);
    let new = wait_for_lines(&setup.log("newapp/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&new), ["after reload"]);
    let old = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    assert_eq!(bodies(&old), ["sentinel 1", "sentinel 2"]);
}

#[test]
fn sighup_with_broken_facilities_keeps_the_old_ones() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    send_tcp(d.tcp_addr(), &simple("app", "before"));
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);

    // A sub-facility without its root, and a root with a bad rotate rule.
    setup.write_facilities(
        "[other:web]\nrotate = daily\nbackup_count = 3\n\n\
         [app]\nrotate = whenever\nbackup_count = 3\n",
    );
    d.signal("HUP");
    let err = d.wait_for_log("reload failed");
    let line = err.lines().find(|l| l.contains("reload failed")).unwrap();
    assert!(
        line.contains("facilities.conf"),
        "the reload error names the file: {line}"
    );
    assert!(!err.contains("facilities reloaded"), "{err}");
    // Still running, still on the old facilities (app/web exists there).
    let mut bytes = simple("app", "after");
    bytes.extend(frame("app", "web", "web after", &Opts::default()));
    send_tcp(d.tcp_addr(), &bytes);
    let lines = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    assert_eq!(bodies(&lines), ["before", "after"]);
    wait_for_lines(&setup.log("app/web.log"), 1, DEADLINE);
    // A later good file is picked up again.
    setup.write_facilities(SIMPLE_FACILITIES);
    d.signal("HUP");
    d.wait_for_log("facilities reloaded");
    d.stop();
}

#[test]
fn sigint_also_stops_cleanly() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    send_tcp(d.tcp_addr(), &simple("app", "one"));
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    d.signal("INT");
    let st = d.wait_exit(DEADLINE);
    assert!(st.success(), "SIGINT exit status {st:?}");
    assert!(!setup.pidfile().exists(), "pid file removed on SIGINT");
    assert_eq!(d.stat("written"), 1);
}

#[test]
fn pidfile_exists_while_running_and_is_removed_on_sigterm() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let pid = read(&setup.pidfile());
    assert_eq!(
        pid.trim(),
        d.pid().to_string(),
        "pid file {} holds the daemon's pid",
        setup.pidfile().display()
    );
    let err = d.stop();
    assert!(
        !setup.pidfile().exists(),
        "pid file still there after SIGTERM"
    );
    assert!(err.contains("stats "), "no stats line at exit:\n{err}");
}

#[test]
fn flush_every_holds_at_most_n_minus_1() {
    let setup =
        Setup::new().facilities("[app]\nrotate = daily\nbackup_count = 3\nflush_every = 3\n");
    let mut d = Daemon::start(&setup);
    let mut s = connect(d.tcp_addr());
    // Three messages: with flush_every = 3 all three must reach the file.
    for i in 1..=3 {
        s.write_all(&simple("app", &format!("m{i}"))).unwrap();
    }
    let lines = wait_for_lines(&setup.log("app/root.log"), 3, DEADLINE);
    assert_eq!(bodies(&lines), ["m1", "m2", "m3"]);
    // Two more may sit in the buffer until the stop flushes them.
    s.write_all(&simple("app", "m4")).unwrap();
    s.write_all(&simple("app", "m5")).unwrap();
    drop(s);
    d.stop();
    let lines = wait_for_lines(&setup.log("app/root.log"), 5, DEADLINE);
    assert_eq!(bodies(&lines), ["m1", "m2", "m3", "m4", "m5"]);
}

// === configuration ===

const CHECK_FACILITIES: &str = "\
; comment
[app]
rotate = daily ; at midnight
backup_count = 3

[app:web.requests]
rotate = hourly
backup_count = 5
";

#[test]
fn check_config_good_prints_facilities() {
    let setup = Setup::new().facilities(CHECK_FACILITIES);
    let out = setup.run(&["--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    for want in [
        "app",
        "app:web.requests",
        "app/root.log",
        "app/web.requests.log",
        "daily",
        "hourly",
    ] {
        assert!(out.stdout.contains(want), "stdout lacks {want:?}: {out:?}");
    }
    let logdir = setup.logdir();
    let logdir = logdir.to_string_lossy();
    assert!(
        out.stdout.contains(logdir.as_ref()),
        "paths resolve against the conf dir ({logdir}): {out:?}"
    );
    assert!(
        !out.stdout.contains("daily ;") && !out.stdout.contains("at midnight"),
        "inline comment must be stripped: {out:?}"
    );
    // SPEC §7: the next three rotation times, ISO 8601: for `hourly`, one hour apart.
    let line = out
        .stdout
        .lines()
        .find(|l| l.contains("app:web.requests"))
        .unwrap_or_else(|| panic!("no line for app:web.requests: {out:?}"));
    let times: Vec<chrono::DateTime<chrono::FixedOffset>> = line
        .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
        .filter_map(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .collect();
    assert_eq!(times.len(), 3, "three ISO 8601 times with offset: {line}");
    for w in times.windows(2) {
        assert_eq!(w[1] - w[0], chrono::Duration::hours(1), "{line}");
    }
    assert!(
        times[0] > chrono::Local::now(),
        "next times are in the future: {line}"
    );
    assert!(
        !setup.pidfile().exists(),
        "--check-config does not start the daemon"
    );
}

#[test]
fn check_config_bad_exits_78_and_names_file_and_section() {
    let setup = Setup::new().facilities(
        "[app]\nrotate = daily\nbackup_count = 3\n\n\
         [orphan:web]\nrotate = daily\nbackup_count = 3\n",
    );
    let out = setup.run(&["--check-config"]);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{out:?}");
    let all = out.all();
    assert!(all.contains("facilities.conf"), "names the file: {out:?}");
    assert!(all.contains("orphan"), "names the section: {out:?}");
}

#[test]
fn check_config_bad_key_names_section_and_key() {
    let setup = Setup::new().facilities("[app]\nrotate = whenever-i-like\nbackup_count = 3\n");
    let out = setup.run(&["--check-config"]);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{out:?}");
    let all = out.all();
    assert!(all.contains("facilities.conf"), "names the file: {out:?}");
    assert!(all.contains("app"), "names the section: {out:?}");
    assert!(all.contains("rotate"), "names the key: {out:?}");
}

#[test]
fn config_error_at_start_exits_78() {
    let setup = Setup::new().server_extra("max_msg_size = lots");
    let out = setup.run(&[]);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{out:?}");
    let all = out.all();
    assert!(all.contains("loghogd.conf"), "names the file: {out:?}");
    assert!(all.contains("max_msg_size"), "names the key: {out:?}");
    assert!(!setup.pidfile().exists());
}

#[test]
fn facilities_error_at_start_exits_78() {
    // backup_count is required.
    let setup = Setup::new().facilities("[app]\nrotate = daily\n");
    let out = setup.run(&[]);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{out:?}");
    let all = out.all();
    assert!(all.contains("facilities.conf"), "names the file: {out:?}");
    assert!(all.contains("backup_count"), "names the key: {out:?}");
}

#[test]
fn inline_semicolon_in_secret_is_kept() {
    // `secret = my;secret` keeps its `;` (no whitespace before it), while
    // ` ; comment` is stripped.
    let setup = Setup::new().facilities(
        "[app]\nrotate = daily ; at midnight\nbackup_count = 3 ; three\nsecret = my;secret ; the secret\n",
    );
    let d = Daemon::start(&setup);
    let mut bytes = frame("app", "", "signed with my", &Opts::signed("my"));
    bytes.extend(frame(
        "app",
        "",
        "signed with my;secret",
        &Opts::signed("my;secret"),
    ));
    send_tcp(d.tcp_addr(), &bytes);
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), ["signed with my;secret"]);
}

// === listeners, flags, own log ===

#[test]
fn listens_on_every_configured_address() {
    // Two IPv4 addresses with their own (ephemeral) ports and IPv6 in brackets.
    let setup = Setup::new().listen("127.0.0.1:0, 127.0.0.3:0", "[::1]:0");
    let d = Daemon::start(&setup);
    let mut tcp: Vec<String> = d.tcp_addrs().iter().map(|a| a.ip().to_string()).collect();
    let mut udp: Vec<String> = d.udp_addrs().iter().map(|a| a.ip().to_string()).collect();
    tcp.sort();
    udp.sort();
    assert_eq!(
        tcp,
        ["127.0.0.1", "127.0.0.3", "::1"],
        "{}",
        d.stderr_text()
    );
    assert_eq!(udp, tcp);
    for (i, addr) in d.tcp_addrs().iter().enumerate() {
        let mut s = connect(*addr);
        let peer = s.local_addr().unwrap().ip().to_string();
        s.write_all(&simple("app", &format!("tcp via {}", addr.ip())))
            .unwrap();
        drop(s);
        let udp = d.udp_addrs().iter().find(|u| u.ip() == addr.ip()).unwrap();
        assert_eq!(
            udp.port(),
            addr.port(),
            "TCP and UDP on one address share the port"
        );
        let lines = wait_for_lines(&setup.log("app/root.log"), i + 1, DEADLINE);
        let (_, host, body) = parse_line(&lines[i]);
        assert_eq!(body, format!("tcp via {}", addr.ip()));
        assert_eq!(host, peer, "hostname is the peer address");
    }
    let v6 = d.udp_addrs().iter().find(|u| u.is_ipv6()).unwrap();
    let s = std::net::UdpSocket::bind("[::1]:0").unwrap();
    s.send_to(&simple("app", "udp via v6"), v6).unwrap();
    let lines = wait_for_lines(&setup.log("app/root.log"), 4, DEADLINE);
    assert_eq!(parse_line(&lines[3]).2, "udp via v6");
}

#[test]
fn empty_listen_ipv4_means_none() {
    let setup = Setup::new().listen("", "[::1]:0");
    let d = Daemon::start(&setup);
    assert!(
        d.tcp_addrs().iter().all(|a| a.is_ipv6()),
        "empty listen_ipv4 must listen on no IPv4 address: {:?}",
        d.tcp_addrs()
    );
}

#[test]
fn command_line_overrides_config() {
    let setup = Setup::new();
    let other = setup.root().join("cli");
    std::fs::create_dir_all(&other).unwrap();
    let fac = other.join("cli-facilities.conf");
    std::fs::write(&fac, "[cliapp]\nrotate = daily\nbackup_count = 1\n").unwrap();
    let logdir = other.join("cli-log");
    let pid = other.join("cli.pid");
    let mut d = Daemon::start_with(
        &setup,
        &[
            "-F",
            fac.to_str().unwrap(),
            "-L",
            logdir.to_str().unwrap(),
            "-p",
            pid.to_str().unwrap(),
        ],
    );
    assert_eq!(read(&pid).trim(), d.pid().to_string(), "-p pid file");
    assert!(
        !setup.pidfile().exists(),
        "config pid file must not be used"
    );
    let mut bytes = simple("app", "app is not in -F file");
    bytes.extend(simple("cliapp", "via cli facilities"));
    send_tcp(d.tcp_addr(), &bytes);
    let lines = wait_for_lines(&logdir.join("cliapp/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), ["via cli facilities"]);
    d.stop();
    assert!(!pid.exists(), "-p pid file removed at exit");
    assert_eq!(
        log_files(&setup),
        Vec::<String>::new(),
        "config logdir unused"
    );
}

#[test]
fn own_log_goes_to_log_filename() {
    let setup = Setup::new().conf_extra("[log]\nfilename = daemon.log\nlevel = INFO\n");
    let mut d = Daemon::start(&setup);
    d.stop();
    let own = read(&setup.root().join("daemon.log"));
    assert!(own.contains("loghogd ready"), "daemon.log:\n{own}");
    assert!(own.contains("stats "), "daemon.log:\n{own}");
}

#[test]
fn version_and_help() {
    for flag in ["--version", "-h", "--help"] {
        let mut cmd = std::process::Command::new(bin());
        cmd.arg(flag);
        let out = run_with_deadline(cmd);
        assert_eq!(out.status.code(), Some(0), "{flag}: {out:?}");
        assert!(out.stdout.contains("loghogd"), "{flag}: {out:?}");
    }
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("--help");
    let out = run_with_deadline(cmd);
    for f in [
        "--config",
        "--facilities-config",
        "--check-config",
        "--pid",
        "--log-dir",
    ] {
        assert!(out.stdout.contains(f), "--help lacks {f}: {out:?}");
    }
}

// === more hostile and odd input ===

#[test]
fn unknown_fields_are_ignored() {
    let setup = Setup::new();
    let d = InProcess::start(&setup);
    let json = r#"{"level": "INFO", "version": 1, "app_id": "app", "module": "", "extra": {"a": [1, null, "x"]}, "stamp": 1, "nsecs": 2, "body": "with extras", "pid": 4242}"#;
    send_tcp(d.tcp_addr(), &json_frame(json));
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), ["with extras"]);
}

#[test]
fn udp_truncated_datagram_is_dropped() {
    let setup = Setup::new();
    let mut d = InProcess::start(&setup);
    let good = simple("app", "truncated");
    let truncated = good[..good.len() - 5].to_vec();
    // The header announces more than the datagram holds.
    send_udp(d.udp_addr(), &[truncated, simple("app", "whole")]);
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), ["whole"]);
    d.stop();
    assert_eq!(
        bodies(&wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE)),
        ["whole"]
    );
    assert_eq!(d.stat("bad_frames"), 1);
    assert_eq!(d.stat("written"), 1);
}

#[test]
fn sigterm_with_idle_and_half_sent_connections_exits_cleanly() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    // One idle open connection that already delivered a message, and one that
    // stopped in the middle of a frame: neither may keep the daemon alive.
    let mut idle = connect(d.tcp_addr());
    idle.write_all(&simple("app", "from idle")).unwrap();
    let mut half = connect(d.tcp_addr());
    let mut bytes = simple("app", "from half");
    let next = simple("app", "never completed");
    bytes.extend_from_slice(&next[..next.len() / 2]);
    half.write_all(&bytes).unwrap();
    wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    d.stop();
    let mut b = bodies(&wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE));
    b.sort();
    assert_eq!(b, ["from half", "from idle"]);
    assert!(!setup.pidfile().exists());
    drop((idle, half));
}

#[test]
fn config_ini_dialect_case_colon_comments() {
    let setup = Setup::new().facilities(
        "# a comment\n; another comment\n[app]\nRotate: daily\nBACKUP_COUNT = 3\n\
         File_Per_Host = On ; per host\n\n[app:root.web]\nrotate = hourly\nbackup_count: 2\n",
    );
    let d = Daemon::start(&setup);
    let mut bytes = frame("app", "", "dialect root", &Opts::host("hx"));
    bytes.extend(frame("app", "web", "dialect web", &Opts::host("hx")));
    send_tcp(d.tcp_addr(), &bytes);
    assert_eq!(
        bodies(&wait_for_lines(&setup.log("app/hx-root.log"), 1, DEADLINE)),
        ["dialect root"]
    );
    // The sub-facility inherits file_per_host from its root facility.
    assert_eq!(
        bodies(&wait_for_lines(&setup.log("app/hx-web.log"), 1, DEADLINE)),
        ["dialect web"]
    );
}

// === reload, more ===

#[test]
fn sighup_reopens_files_moved_away() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    send_tcp(d.tcp_addr(), &simple("app", "before move"));
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    let moved = setup.log("app/moved.log");
    std::fs::rename(setup.log("app/root.log"), &moved).unwrap();
    d.signal("HUP");
    d.wait_for_log("facilities reloaded");
    send_tcp(d.tcp_addr(), &simple("app", "after move"));
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), ["after move"], "SIGHUP reopens files");
    assert_eq!(
        bodies(&wait_for_lines(&moved, 1, DEADLINE)),
        ["before move"]
    );
}

#[test]
fn sighup_adding_a_secret_applies_to_new_messages() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    send_tcp(d.tcp_addr(), &simple("app", "unsigned before"));
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    setup.write_facilities("[app]\nrotate = daily\nbackup_count = 3\nsecret = newsecret\n");
    d.signal("HUP");
    d.wait_for_log("facilities reloaded");
    let mut bytes = simple("app", "unsigned after");
    bytes.extend(frame("app", "", "signed after", &Opts::signed("newsecret")));
    send_tcp(d.tcp_addr(), &bytes);
    let lines = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    assert_eq!(bodies(&lines), ["unsigned before", "signed after"]);
}

#[test]
fn sighup_during_burst_loses_nothing() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let addr = d.tcp_addr();
    let sender = std::thread::spawn(move || burst(addr, 3, 20_000));
    // Reload several times while the burst is flowing (each reload waits
    // for lines to have arrived since the previous one, not for a time).
    let path = setup.log("app/root.log");
    for i in 1..=3 {
        wait_for_lines(&path, i * 5_000, BURST_DEADLINE);
        d.signal("HUP");
        d.wait_for_log_count("facilities reloaded", i);
    }
    sender.join().unwrap();
    let lines = wait_for_lines(&path, 60_000, BURST_DEADLINE);
    check_burst(&lines, 3, 20_000);
    d.stop();
    check_burst(&wait_for_lines(&path, 60_000, DEADLINE), 3, 20_000);
}

// === time, sizes, partial reads ===

#[test]
fn timestamp_is_local_time_honouring_tz() {
    // A zone with a fixed, non-whole-hour offset and no DST: +05:30.
    let setup = Setup::new().env("TZ", "Asia/Kolkata");
    let d = Daemon::start(&setup);
    let offset = chrono::FixedOffset::east_opt(5 * 3600 + 30 * 60).unwrap();
    let before = chrono::Utc::now().with_timezone(&offset).naive_local();
    send_tcp(d.tcp_addr(), &simple("app", "tz"));
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    let after = chrono::Utc::now().with_timezone(&offset).naive_local();
    let (ts, _, _) = parse_line(&lines[0]);
    let t = chrono::NaiveDateTime::parse_from_str(&ts, "%Y-%m-%d %H:%M:%S%.6f").unwrap();
    assert!(
        before - chrono::Duration::seconds(1) <= t && t <= after + chrono::Duration::seconds(1),
        "timestamp {ts} is not local time in TZ=Asia/Kolkata ({before} .. {after})"
    );
}

#[test]
fn udp_datagram_larger_than_8k_is_accepted() {
    // The old daemon read at most 8 KiB per datagram; the cap is now max_msg_size.
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let body = "u".repeat(30_000);
    send_udp(d.udp_addr(), &[simple("app", &body)]);
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), [body]);
}

#[test]
fn frames_split_into_single_bytes_are_reassembled() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let mut bytes = simple("app", "split one");
    bytes.extend(frame("app", "web", "split two", &Opts::compressed()));
    bytes.extend(simple("app", "split three"));
    let mut s = connect(d.tcp_addr());
    s.set_nodelay(true).unwrap();
    for b in &bytes {
        s.write_all(std::slice::from_ref(b)).unwrap();
    }
    drop(s);
    let lines = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    assert_eq!(bodies(&lines), ["split one", "split three"]);
    let web = wait_for_lines(&setup.log("app/web.log"), 1, DEADLINE);
    assert_eq!(bodies(&web), ["split two"]);
}

#[test]
fn default_max_msg_size_is_65536() {
    let setup = Setup::new();
    let d = Daemon::start(&setup);
    let mut p = Vec::new();
    message("app", "", "", &Opts::default()).encode(&mut p);
    let body = "m".repeat(65536 - p.len());
    let mut p = Vec::new();
    message("app", "", &body, &Opts::default()).encode(&mut p);
    assert_eq!(p.len(), 65536);
    let mut s = connect(d.tcp_addr());
    s.write_all(&payload_frame(&p, 0)).unwrap();
    let lines = wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    assert_eq!(bodies(&lines), [body.as_str()]);
    // One byte more and the connection is closed.
    s.write_all(&raw_frame(65537, 0, b"{")).unwrap();
    wait_closed_by_peer(&mut s);
}

/// The one end-to-end run of the binary with hostile input: every bad frame
/// is counted, and the warnings about them are logged but rate-limited.
#[test]
fn bad_frame_logging_is_rate_limited() {
    let setup = Setup::new();
    let mut d = Daemon::start(&setup);
    let before = d.stderr_text().lines().count();
    // 10,000 bad frames on one connection, 100 bad datagrams (few enough
    // that the kernel's receive buffer holds them), then good ones.
    let mut bytes = Vec::new();
    for _ in 0..10_000 {
        bytes.extend(payload_frame(b"{not json", 0));
    }
    bytes.extend(simple("app", "after the flood"));
    send_tcp(d.tcp_addr(), &bytes);
    // TCP's flood is read before any datagram is sent, so its warnings come
    // first (otherwise UDP's may use up the allowance: seen in CI).
    wait_for_lines(&setup.log("app/root.log"), 1, DEADLINE);
    let dgrams: Vec<Vec<u8>> = (0..100).map(|_| payload_frame(b"[]", 0)).collect();
    send_udp(d.udp_addr(), &dgrams);
    send_udp(d.udp_addr(), &[simple("app", "udp after the flood")]);
    let lines = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    let mut b = bodies(&lines);
    b.sort();
    assert_eq!(b, ["after the flood", "udp after the flood"]);
    let err = d.stop();
    let new: Vec<&str> = err.lines().skip(before).collect();
    // A dropped frame is logged ("one clear line goes to the daemon's own
    // log"), but the warnings are rate-limited (TCP's flood came first and
    // may use up the allowance, so UDP's need not appear).
    assert!(
        new.iter()
            .any(|l| l.contains("WARN") && l.contains("dropped frame")),
        "no WARN `dropped frame` line; new stderr lines: {new:#?}"
    );
    let logged = new.len();
    assert!(
        logged < 200,
        "10,100 bad frames produced {logged} log lines; the log must be rate-limited"
    );
    // Every bad frame is still counted (UDP may drop under overload, and
    // counts what it drops).
    assert_eq!(
        d.stat("bad_frames") + d.stat("udp_dropped"),
        10_100,
        "{}",
        err.lines().last().unwrap_or("")
    );
}

/// A host name cannot forge records: its control characters (a newline
/// followed by a fake stamp) are replaced, so one message stays one line.
#[test]
fn hostname_with_newline_cannot_forge_a_line() {
    let setup = Setup::new().facilities(SIMPLE_FACILITIES);
    let d = Daemon::start(&setup);
    let evil = "evil\n2026-01-01 00:00:00.000000 - forged";
    let mut bytes = frame("app", "", "real body", &Opts::host(evil));
    bytes.extend(frame("app", "", "next", &Opts::host("h")));
    send_tcp(d.tcp_addr(), &bytes);
    let lines = wait_for_lines(&setup.log("app/root.log"), 2, DEADLINE);
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].ends_with(" - evil_2026-01-01 00:00:00.000000 - forged - real body"),
        "{lines:?}"
    );
    assert!(lines[1].ends_with(" - h - next"), "{lines:?}");
}

/// The most a kernel buffer of this machine can hold: the last field of
/// `/proc/sys/net/ipv4/tcp_rmem` and the like.
fn kernel_max(file: &str) -> usize {
    let text = read(std::path::Path::new(file));
    text.split_whitespace()
        .last()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("cannot read {file}: {text:?}"))
}

/// Backpressure: when the file cannot take lines (here the "file" is a FIFO
/// the test does not read for a while), a TCP sender is held back rather
/// than anything being dropped or buffered without bound. Checked by state,
/// not by time: the test sends more than every kernel and daemon buffer
/// between it and the FIFO can hold, so while the FIFO is not drained the
/// sender cannot finish, the daemon cannot have taken every message off the
/// socket, and no more lines can have been written than the pipe holds;
/// once it is drained, every message arrives, in order.
#[test]
fn slow_disk_holds_tcp_sender_back_and_loses_nothing() {
    use std::os::unix::fs::OpenOptionsExt as _;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    let setup = Setup::new().facilities(SIMPLE_FACILITIES);
    let app_dir = setup.logdir().join("app");
    std::fs::create_dir_all(&app_dir).unwrap();
    let fifo = app_dir.join("root.log");
    let made = Command::new("mkfifo").arg(&fifo).status().expect("mkfifo");
    assert!(made.success());
    let mut d = InProcess::start(&setup);

    // Every buffer between the sender and the FIFO, generously: the socket's
    // two kernel buffers at their autotuning maximum, the pipe at its
    // largest, and the daemon's own (a file's queue of 32 batches of about
    // 256 KiB, the writer's 1 MiB of pending lines, a read buffer: about
    // 10 MiB, counted as 32 MiB).
    let pipe_max = kernel_max("/proc/sys/fs/pipe-max-size");
    let held = kernel_max("/proc/sys/net/ipv4/tcp_rmem")
        + kernel_max("/proc/sys/net/ipv4/tcp_wmem")
        + pipe_max
        + (32 << 20);
    let body = "x".repeat(4000);
    let message = {
        let body = body.clone();
        move |i: usize| frame("app", "", &format!("n={i} {body}"), &Opts::default())
    };
    let smallest = message(0).len();
    let n = held / smallest + 1;
    let sent = Arc::new(AtomicUsize::new(0));
    let addr = d.tcp_addr();
    let sender = {
        let sent = sent.clone();
        std::thread::spawn(move || {
            let mut s = connect(addr);
            s.set_write_timeout(Some(BURST_DEADLINE)).unwrap();
            let mut chunk = Vec::with_capacity(300 << 10);
            for i in 0..n {
                chunk.extend(message(i));
                if chunk.len() >= 256 << 10 || i + 1 == n {
                    s.write_all(&chunk)
                        .expect("sender was dropped instead of held back");
                    sent.fetch_add(chunk.len(), SeqCst);
                    chunk.clear();
                }
            }
        })
    };
    // Non-blocking, so opening does not wait for the daemon's side.
    let mut reader = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo)
        .expect("open fifo");

    // Not drained: wait until nothing moves (the sender's bytes and the
    // daemon's counters the same for 50 polls in a row). Quiet too early on
    // a loaded machine is harmless: what is asserted holds at any moment
    // while the FIFO is not drained; waiting only gives a daemon that does
    // not push back the time to show it.
    let start = Instant::now();
    let snapshot = || (sent.load(SeqCst), d.stat("received"), d.stat("written"));
    let (mut last, mut quiet) = (snapshot(), 0);
    while quiet < 50 || last.1 == 0 {
        assert!(
            !sender.is_finished(),
            "the sender sent all {n} messages while the FIFO was not drained; \
             daemon: {} received, {} written",
            d.stat("received"),
            d.stat("written")
        );
        assert!(
            start.elapsed() < DEADLINE,
            "still moving after {DEADLINE:?}: {last:?}"
        );
        std::thread::sleep(Duration::from_millis(10));
        let now = snapshot();
        quiet = if now == last { quiet + 1 } else { 0 };
        last = now;
    }
    let (stalled_at, received, written) = last;
    assert!(
        !sender.is_finished() && stalled_at < n * smallest,
        "sender not held back: {stalled_at} of at least {} bytes sent",
        n * smallest
    );
    assert!(
        received < n as u64,
        "the daemon took all {n} messages off the socket with the FIFO full"
    );
    assert!(
        written as usize * body.len() <= pipe_max,
        "{written} lines written while the FIFO was not drained: more than the pipe holds"
    );

    // Drained: every line arrives, in order, and the sender finishes.
    let mut lines = FifoLines::default();
    while lines.next < n {
        assert!(
            start.elapsed() < BURST_DEADLINE,
            "only {} of {n} lines through the FIFO",
            lines.next
        );
        if !lines.read(&mut reader) {
            std::thread::sleep(Duration::from_millis(1)); // empty, or not opened yet
        }
    }
    sender.join().expect("sender thread");
    // Stopped, the daemon has closed the FIFO: nothing more comes.
    d.stop();
    while lines.read(&mut reader) {}
    assert_eq!(lines.next, n, "lines after the last one");
    assert!(
        lines.partial.is_empty(),
        "a partial line after the last one"
    );
    assert_eq!(d.stat("received"), n as u64);
    assert_eq!(d.stat("written"), n as u64);
}

/// Lines read from a non-blocking FIFO, each checked to be `n={next} …` as it
/// completes, so megabytes of them are never held at once.
#[derive(Default)]
struct FifoLines {
    /// The number the next line must carry.
    next: usize,
    /// An incomplete last line.
    partial: Vec<u8>,
}

impl FifoLines {
    /// Reads what is there; false when nothing was (empty, or no writer).
    fn read(&mut self, fifo: &mut std::fs::File) -> bool {
        use std::io::Read as _;
        let mut buf = [0u8; 64 << 10];
        let k = match fifo.read(&mut buf) {
            Ok(k) => k,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => 0,
            Err(e) => panic!("read fifo: {e}"),
        };
        self.partial.extend_from_slice(&buf[..k]);
        let mut at = 0;
        while let Some(nl) = self.partial[at..].iter().position(|&b| b == b'\n') {
            let line = String::from_utf8_lossy(&self.partial[at..at + nl]);
            assert!(
                line.contains(&format!(" - n={} ", self.next)),
                "line {} lost, duplicated or out of order: {}",
                self.next,
                &line[..line.len().min(80)]
            );
            self.next += 1;
            at += nl + 1;
        }
        self.partial.drain(..at);
        k > 0
    }
}
