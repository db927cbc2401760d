//! The relay example of the README (issue 16), as shipped in
//! `etc/examples/relay/`: the edge and writer configs pass the real
//! binary's `--check-config --strict` and show the `[forward]`/`[consume]`
//! settings the README describes (the same stream on both sides), and
//! each node's nats-server config passes `nats-server -c FILE -t`.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::util::{bin, run_with_deadline};

/// `etc/examples/relay/NAME` in the source tree.
fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("etc/examples/relay")
        .join(name)
}

/// `loghogd --check-config --strict -c FILE` (no warning either); its stdout.
fn check_config(name: &str) -> String {
    let mut cmd = Command::new(bin());
    cmd.args(["--check-config", "--strict", "-c"])
        .arg(example(name))
        .env("NO_COLOR", "1");
    let out = run_with_deadline(cmd);
    assert_eq!(out.status.code(), Some(0), "{name}: {out:?}");
    out.stdout
}

/// The line starting with `prefix`.
fn line<'a>(out: &'a str, prefix: &str) -> &'a str {
    out.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no {prefix} line in:\n{out}"))
}

/// From `stream=` to `duplicate_window=...`: what edges and writers must agree on.
fn stream_part(l: &str) -> &str {
    let from = l.find(" stream=").unwrap_or_else(|| panic!("{l}"));
    let to = l[from..]
        .find(" duplicate_window=")
        .unwrap_or_else(|| panic!("{l}"))
        + from;
    let end = l[to + 1..].find(' ').map_or(l.len(), |e| e + to + 1);
    &l[from..end]
}

/// The edge forwards the four facilities with `forward = yes` (two by
/// inheritance) to the three nodes, replicas = 3; `edge-local` stays local.
#[test]
fn relay_example_edge_conf_is_valid_and_forwards_what_the_readme_says() {
    let out = check_config("edge.conf");
    assert!(out.contains("facilities-edge.conf: ok"), "{out}");
    let fw = line(&out, "[forward] ");
    for want in [
        "servers=nats://nats1.example.net:4222,nats://nats2.example.net:4222,nats://nats3.example.net:4222",
        "auth=none tls=none",
        "stream=LOGHOG subject=loghog.<0-15> partitions=16 replicas=3 max_age=7d max_bytes=50G duplicate_window=2m",
        "spool_max_bytes=4G (256M per partition)",
        "batch_bytes=256K",
        "facilities=my-app,my-app:web,syslog,syslog:auth",
    ] {
        assert!(fw.contains(want), "{want:?} not in {fw}");
    }
    assert!(
        !line(&out, "[edge-local] ").contains("forward=yes"),
        "{out}"
    );
    assert!(line(&out, "[my-app:web] ").contains("forward=yes"), "{out}");
    assert!(!out.contains("[consume]"), "{out}");
}

/// The writer consumes every partition of the same stream, with the
/// lease settings the README describes, and forwards nothing.
#[test]
fn relay_example_writer_conf_is_valid_and_matches_the_edge_stream() {
    let out = check_config("writer.conf");
    assert!(out.contains("facilities-writer.conf: ok"), "{out}");
    let c = line(&out, "[consume] ");
    for want in [
        "servers=nats://nats1.example.net:4222,nats://nats2.example.net:4222,nats://nats3.example.net:4222",
        "partitions_owned=all (0-15)",
        "lease_bucket=loghogd_leases lease_ttl=10s fetch_batch=256",
    ] {
        assert!(c.contains(want), "{want:?} not in {c}");
    }
    assert!(
        !out.contains("forward=yes") && !out.contains("[forward]"),
        "{out}"
    );
    let edge = check_config("edge.conf");
    assert_eq!(
        stream_part(c),
        stream_part(line(&edge, "[forward] ")),
        "edge and writer must set the same stream"
    );
    // Every app the edge forwards has a facility on the writer.
    for section in ["[my-app] ", "[my-app:web] ", "[syslog] ", "[syslog:auth] "] {
        line(&out, section);
    }
}

/// `nats-server -c FILE -t` accepts each node's config, and the three
/// differ only in `server_name`.
#[test]
fn relay_example_nats_node_confs_pass_nats_server_config_test() {
    let nats = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
        .into_iter()
        .find(|p| Path::new(p).is_file())
        .expect("nats-server is not installed (apt-get install nats-server)");
    let mut texts = Vec::new();
    for i in 1..=3 {
        let f = example(&format!("nats-node{i}.conf"));
        let mut cmd = Command::new(nats);
        cmd.arg("-c").arg(&f).arg("-t");
        let out = run_with_deadline(cmd);
        assert_eq!(out.status.code(), Some(0), "{}: {out:?}", f.display());
        assert!(out.all().contains("is valid"), "{out:?}");
        let text = std::fs::read_to_string(&f).unwrap();
        assert!(
            text.contains(&format!("\nserver_name: nats{i}\n")),
            "{}",
            f.display()
        );
        texts.push(
            text.replace(&format!("nats{i}.conf"), "")
                .replace(&format!("server_name: nats{i}\n"), ""),
        );
    }
    // The comments name the node and its host; the settings are the same.
    let settings = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(settings(&texts[0]), settings(&texts[1]));
    assert_eq!(settings(&texts[0]), settings(&texts[2]));
}
