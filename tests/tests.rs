//! The integration tests: one binary (as in ripgrep), modules under `tests/it/`.
//!
//! Every test runs the daemon on ephemeral ports in its own temp dir and
//! talks to it through real sockets: the real `loghogd` binary as a
//! subprocess where the test needs its log, signals, flags or exit status,
//! otherwise `daemon::run` in-process, whose counters it reads from `Stats`.

#[path = "it/util.rs"]
mod util;

#[path = "it/core.rs"]
mod core;

#[path = "it/compat.rs"]
mod compat;

#[path = "it/config.rs"]
mod config;

#[path = "it/hostile.rs"]
mod hostile;

#[path = "it/ownlog.rs"]
mod ownlog;

#[path = "it/tls.rs"]
mod tls;

#[path = "it/rotation.rs"]
mod rotation;

#[path = "it/paced.rs"]
mod paced;

#[path = "it/package.rs"]
mod package;

#[path = "it/agent.rs"]
mod agent;

#[path = "it/client.rs"]
mod client;

#[path = "it/faults.rs"]
mod faults;

#[path = "it/scale.rs"]
mod scale;

#[path = "it/limits.rs"]
mod limits;

#[path = "it/syslog.rs"]
mod syslog;

#[path = "it/http.rs"]
mod http;

#[path = "it/metrics.rs"]
mod metrics;

#[path = "it/viewer.rs"]
mod viewer;

#[path = "it/browser.rs"]
mod browser;

#[path = "it/nats.rs"]
mod nats;

#[path = "it/broker.rs"]
mod broker;

#[path = "it/relay_examples.rs"]
mod relay_examples;

#[path = "it/broker_auth.rs"]
mod broker_auth;
