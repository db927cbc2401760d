//! loghogd: "syslog + logrotate in one package".
//!
//! Applications send LogHog frames over TCP, UDP or TLS; the daemon checks
//! who sent them, writes each to its facility's file one message at a time,
//! and rotates, compresses and prunes those files on schedule.
//!
//! # Layout
//!
//! ```text
//! cli          command-line flags (SPEC §7)
//! config       loghogd.conf + facilities.conf → validated Config / FacilityDb
//! protocol     frame header + JSON message (shared with clients)
//! auth         HMAC-MD5 signing and constant-time verification
//! tls          rustls server/client configs (mutual CA verification)
//! server       listeners: TCP/TLS accept loops, UDP receive loops, Connection
//! processor    frame → message → facility → verify → formatted line in a batch
//! writer       one task per output file: append, flush policy, rotate
//! rotation     schedules, backup naming/retention, the rotation scheduler
//! compress     xz / gzip / bzip2 of rotated files, off the async workers
//! daemon       wiring, signals, shutdown, pid file
//! ```
//!
//! # Data flow
//!
//! ```text
//! TCP/TLS accept → Connection::read → Header::check → processor ─┐
//! UDP recv_from  ──────────────────→ Header::check → processor ─┤
//!                                                                ▼
//!        Writers::get_or_spawn(path) ── bounded mpsc ──► LogFile task ──► file
//!                                                         ▲ Rotate  │ rename
//!                                    rotation::scheduler ─┘         ▼
//!                                                        compress (blocking pool)
//! ```

pub mod auth;
pub mod cli;
pub mod compress;
pub mod config;
pub mod daemon;
pub mod logging;
pub mod privileges;
pub mod processor;
pub mod protocol;
pub mod rotation;
pub mod server;
pub mod stats;
pub mod timefmt;
pub mod tls;
pub mod writer;
