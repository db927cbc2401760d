//! The broker connection options of issue 16 against a real nats-server
//! (tests/it/nats.rs): TLS with `tls_ca` on `tls://` URLs, mutual TLS
//! (`tls_cert`/`tls_key` against `verify: true`) and NKey authentication
//! (`nkey = SEED FILE` against `authorization { users = [ { nkey } ] }`),
//! each as an edge → JetStream → writer round trip checked line by line
//! (every message once, in order, in the writer's file and not the
//! edge's), and each refused for the wrong credentials by
//! `loghogd --check-broker` with exit 69 and the reason. Credentials files
//! (`creds`, a user JWT and seed) are checked as far as this test can
//! without an operator set-up: a missing one is a config error (78) naming
//! it, an unreadable one is named by `--check-broker`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::nats::NatsServer;
use crate::util::*;

/// The edge forwards `app`; the writer writes it.
const EDGE_FACILITIES: &str = "[app]\nrotate = daily\nbackup_count = 3\nforward = yes\n";
const WRITER_FACILITIES: &str = "[app]\nrotate = daily\nbackup_count = 3\n";

/// sysexits(3) `EX_UNAVAILABLE`: what `--check-broker` exits with.
const EX_UNAVAILABLE: i32 = 69;

/// `tests/certs/NAME`.
fn cert(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/certs")
        .join(name)
}

/// A nats-server `tls {}` block with the test CA's server certificate
/// (SAN 127.0.0.1); `verify` asks clients for a certificate of that CA.
fn tls_block(verify: bool) -> String {
    let server = cert("loghog-server.pem");
    let mut b = format!(
        "tls {{\n  cert_file: \"{0}\"\n  key_file: \"{0}\"\n",
        server.display()
    );
    if verify {
        b.push_str(&format!(
            "  ca_file: \"{}\"\n  verify: true\n",
            cert("loghog-ca.cert").display()
        ));
    }
    b.push_str("}\n");
    b
}

fn edge_setup(servers: &str, keys: &str) -> Setup {
    Setup::new()
        .facilities(EDGE_FACILITIES)
        .conf_extra(&format!(
            "[forward]\nservers = {servers}\npartitions = 2\n{keys}"
        ))
}

fn writer_setup(servers: &str, keys: &str) -> Setup {
    Setup::new()
        .facilities(WRITER_FACILITIES)
        .conf_extra(&format!(
            "[consume]\nservers = {servers}\npartitions = 2\nname = w1\n{keys}"
        ))
}

/// 300 messages over two connections to an edge with `edge_keys`, written
/// by a writer with `writer_keys`: every one once, in order per
/// connection, in the writer's file; nothing written on the edge.
fn round_trip(servers: &str, edge_keys: &str, writer_keys: &str) {
    let edge_s = edge_setup(servers, edge_keys);
    let mut edge = Daemon::start(&edge_s);
    let writer_s = writer_setup(servers, writer_keys);
    let mut writer = Daemon::start(&writer_s);
    for c in 0..2 {
        let bytes: Vec<u8> = (0..150)
            .flat_map(|i| simple("app", &format!("c{c} n{i:06} over the broker")))
            .collect();
        send_tcp(edge.tcp_addr(), &bytes);
    }
    let path = writer_s.log("app/root.log");
    let lines = wait_for_lines(&path, 300, DEADLINE);
    check_numbers(&lines, 2, 150);
    // Nothing more comes (no redelivery written twice).
    std::thread::sleep(Duration::from_secs(1));
    let again: Vec<String> = read(&path).lines().map(str::to_string).collect();
    check_numbers(&again, 2, 150);
    assert!(
        !edge_s.log("app/root.log").exists(),
        "the edge wrote the forwarded facility itself"
    );
    edge.stop();
    writer.stop();
}

/// `--check-broker` for `[forward]` with `keys` refuses with 69 and a
/// message holding `why`.
fn check_broker_refused(servers: &str, keys: &str, why: &[&str]) {
    let s = edge_setup(servers, keys);
    let out = s.run(&["--check-broker"]);
    assert_eq!(out.status.code(), Some(EX_UNAVAILABLE), "{out:?}");
    let text = out.all();
    assert!(
        why.iter().any(|w| text.contains(w)),
        "none of {why:?} in the reason:\n{out:?}"
    );
    assert!(text.contains("cannot connect"), "{out:?}");
}

/// `--check-broker` with `keys` connects: exit 0, JetStream answers.
fn check_broker_ok(servers: &str, keys: &str) {
    let out = edge_setup(servers, keys).run(&["--check-broker"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(out.stdout.contains("[forward] stream LOGHOG"), "{out:?}");
}

// === TLS ===

/// A TLS-only server with a certificate of the test CA: edge and writer
/// with `tls_ca` and `tls://` URLs relay every message; `--check-broker`
/// connects; with another CA it exits 69 naming the unknown issuer, and a
/// plain `nats://` client without a CA is refused too.
#[test]
fn broker_tls_with_tls_ca_round_trips_and_a_wrong_ca_is_refused_with_the_reason() {
    let nats = NatsServer::start_with_config(&tls_block(false));
    let url = nats.tls_url();
    let ca = format!("tls_ca = {}\n", cert("loghog-ca.cert").display());
    check_broker_ok(&url, &ca);
    round_trip(&url, &ca, &ca);
    let other = format!("tls_ca = {}\n", cert("other-ca.cert").display());
    check_broker_refused(&url, &other, &["UnknownIssuer"]);
    // No tls_ca on a nats:// URL: the server requires TLS, the client
    // follows, and the test CA is not among the system roots.
    check_broker_refused(&nats.url(), "", &["UnknownIssuer"]);
}

/// Mutual TLS: a server with `verify: true` takes the edge and the writer
/// presenting `client.pem` (signed by the test CA) and relays every
/// message; without a client certificate, or with one of another CA,
/// `--check-broker` exits 69.
#[test]
fn broker_mutual_tls_round_trips_and_a_missing_or_foreign_client_cert_is_refused() {
    let nats = NatsServer::start_with_config(&tls_block(true));
    let url = nats.tls_url();
    let ca = format!("tls_ca = {}\n", cert("loghog-ca.cert").display());
    let client = cert("client.pem");
    let mtls = format!("{ca}tls_cert = {0}\ntls_key = {0}\n", client.display());
    check_broker_ok(&url, &mtls);
    round_trip(&url, &mtls, &mtls);
    check_broker_refused(&url, &ca, &["BadCertificate", "CertificateRequired"]);
    let foreign = format!(
        "{ca}tls_cert = {0}\ntls_key = {0}\n",
        cert("other-client.pem").display()
    );
    check_broker_refused(&url, &foreign, &["BadCertificate", "CertificateRequired"]);
}

// === NKey ===

/// A seed file for a new user NKey pair in `dir`; returns (path, public key).
pub(crate) fn nkey_seed(dir: &Path, name: &str) -> (PathBuf, String) {
    let kp = nkeys::KeyPair::new_user();
    let path = dir.join(name);
    std::fs::write(&path, format!("{}\n", kp.seed().unwrap())).unwrap();
    (path, kp.public_key())
}

/// A server that knows one user NKey: edge and writer with `nkey = SEED`
/// relay every message; without an nkey, or with another user's seed,
/// `--check-broker` exits 69 with "authorization violation".
#[test]
fn broker_nkey_round_trips_and_no_or_a_wrong_nkey_is_refused() {
    let keys = tempfile::tempdir().unwrap();
    let (seed, public) = nkey_seed(keys.path(), "loghogd.nk");
    let (stranger, _) = nkey_seed(keys.path(), "stranger.nk");
    let nats = NatsServer::start_with_config(&format!(
        "authorization {{\n  users = [\n    {{ nkey: \"{public}\" }}\n  ]\n}}\n"
    ));
    let url = nats.url();
    let nk = format!("nkey = {}\n", seed.display());
    check_broker_ok(&url, &nk);
    round_trip(&url, &nk, &nk);
    check_broker_refused(&url, "", &["authorization violation"]);
    check_broker_refused(
        &url,
        &format!("nkey = {}\n", stranger.display()),
        &["authorization violation"],
    );
}

// === credentials files ===

/// `creds` is checked at load and read at connect: a missing file is a
/// config error (78) naming it; a file that holds no JWT and seed is
/// named by `--check-broker` (69). (A server run with an operator, which
/// a valid credentials file needs, is not set up here.)
#[test]
fn broker_creds_file_missing_is_a_config_error_and_garbage_is_named() {
    let nats = NatsServer::start();
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.creds");
    let s = edge_setup(&nats.url(), &format!("creds = {}\n", missing.display()));
    let out = s.run(&["--check-config"]);
    assert_eq!(out.status.code(), Some(EX_CONFIG), "{out:?}");
    assert!(
        out.stderr.contains("[forward] creds")
            && out.stderr.contains(&missing.display().to_string()),
        "{out:?}"
    );
    let garbage = dir.path().join("garbage.creds");
    std::fs::write(&garbage, "not a credentials file\n").unwrap();
    let keys = format!("creds = {}\n", garbage.display());
    let out = edge_setup(&nats.url(), &keys).run(&["--check-config"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    assert!(
        out.stdout
            .contains(&format!("auth=creds {}", garbage.display())),
        "{out:?}"
    );
    let out = edge_setup(&nats.url(), &keys).run(&["--check-broker"]);
    assert_eq!(out.status.code(), Some(EX_UNAVAILABLE), "{out:?}");
    assert!(
        out.stdout.contains("cannot read NATS credentials")
            && out.stdout.contains(&garbage.display().to_string()),
        "{out:?}"
    );
}
