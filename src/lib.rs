//! loghogd: "syslog + logrotate in one package".
//!
//! Applications send LogHog frames over TCP, UDP or TLS, and any program
//! syslog messages (network or `/dev/log`); the daemon checks
//! who sent them, writes each to its facility's file one message at a time,
//! and rotates, compresses and prunes those files on schedule.
//!
//! # Layout
//!
//! ```text
//! cli          command-line flags (SPEC §7)
//! config       loghogd.conf + facilities.conf → validated Config / FacilityDb
//! input        listeners; framing and decoding of each wire format → Record
//!   tcp, udp     accept / receive loops
//!   stream       one connection, generic over a Framer and a Decoder
//!   loghog       the LogHog frame + JSON message (loghog-protocol) → Record
//!   tls          the mutual-TLS server config and its reload slot
//!   syslog       RFC 5424/3164 over UDP, TCP, TLS and /dev/log → Record
//! record       the protocol-neutral Record every input produces
//! router       facility lookup, signature check, per-route batching, counting
//! output       where a route's batches go: Handle, Outputs
//!   file         one writer task per log file, paths, line format, scheduler
//! rotation     leaf: schedules, backup names and retention, state, recovery
//! compress     xz / gzip / bzip2 of rotated files, off the async workers
//! clock        the wall clock rotation reads (injected in tests)
//! tz           the TZ variable, checked before anything reads it
//! stats        counters; ratelimit  warnings peers can cause
//! metrics      GET /metrics (Prometheus text) and /healthz, an axum Router
//! viewer       the read-only browser view over the files (search, tail, chart)
//! broker       the NATS JetStream relay's wire format (issue 16)
//! escape       client strings escaped and truncated for the daemon's log
//! daemon       run(config, listeners, control, shutdown); the binary's wiring
//! ```
//!
//! The wire protocol itself (frames, messages, signing, certificate loading)
//! is the `loghog-protocol` crate, shared with the `loghog` client.
//!
//! # Data flow
//!
//! ```text
//! TCP/TLS accept → stream::serve ─ Framer::check → Decoder ─┐
//! UDP recv_from  ─────────────────────────────→ Decoder ─┤  Record
//!                                                          ▼
//!              Router: FacilityDb::lookup → verify → line into the route's batch
//!                                                          │ Handle (bounded queue)
//!                                                          ▼
//!              output::file: LogFile task ──► file ── scheduler: Rotate
//!                                               │ rename (rotation)
//!                                               ▼
//!                                    compress (blocking pool) → prune
//! ```
//!
//! Arrows point down: an input never knows which output a route has, an
//! output never parses a wire format, and `rotation` imports nothing above it.
//! The viewer sits beside the inputs on the HTTP server and reads the files
//! the writers wrote (through `rotation`'s names and no-symlink rule), never
//! the writers themselves.

pub(crate) mod broker;
pub mod cli;
pub mod clock;
pub mod compress;
pub mod config;
pub mod daemon;
pub(crate) mod escape;
pub(crate) mod input;
pub(crate) mod logging;
pub mod metrics;
pub(crate) mod output;
pub(crate) mod privileges;
pub(crate) mod ratelimit;
pub(crate) mod record;
pub(crate) mod rotation;
pub(crate) mod router;
pub mod stats;
pub(crate) mod timefmt;
pub mod tz;
pub(crate) mod viewer;

#[doc(hidden)]
pub use broker::codec::fuzz_codec;
pub use input::http::bind_http;
#[doc(hidden)]
pub use input::syslog::fuzz_syslog;
pub use input::syslog::{bind_syslog, SyslogListeners};
pub use input::{bind, Listeners};
