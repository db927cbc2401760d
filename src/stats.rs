//! Counters of what the daemon received, wrote and refused.
//!
//! Hot paths count locally and add here once per read chunk, so no counter
//! cache line bounces between cores per message. [`Stats::for_each`] is the
//! one view of them: the SIGUSR1 line, the tests and the metrics endpoint
//! all read it.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

/// Daemon-wide counters, logged on SIGUSR1 and at shutdown.
#[derive(Debug, Default)]
pub struct Stats {
    /// Well-formed messages taken off the network.
    pub received: AtomicU64,
    /// Lines that reached the operating system (written to a file).
    pub written: AtomicU64,
    /// Frames dropped as malformed (flags, zlib, UTF-8, JSON, fields).
    pub bad_frames: AtomicU64,
    /// Connections closed because a length field was over `max_msg_size`.
    pub oversize_closed: AtomicU64,
    /// Messages dropped for a missing or wrong signature.
    pub bad_signature: AtomicU64,
    /// Messages for an app with no facility.
    pub unknown_app: AtomicU64,
    /// UDP messages dropped because a writer queue was full.
    pub udp_dropped: AtomicU64,
    /// Lines lost to write errors (disk full, permissions).
    pub write_errors: AtomicU64,
    /// TCP and TLS connections accepted.
    pub connections: AtomicU64,
    /// TLS handshakes refused.
    pub tls_refused: AtomicU64,
    /// Lines dropped because their app was at `max_files_per_app`.
    pub too_many_files: AtomicU64,
    /// Lines a reader still held when shutdown left no output to take them.
    pub lost_at_stop: AtomicU64,
    /// Writes that failed and are held for a retry (disk full, EIO): no
    /// line is lost by these, senders wait.
    pub write_retries: AtomicU64,
    /// Live files found deleted or renamed under the daemon and reopened.
    pub files_reopened: AtomicU64,
    /// Gauge: writer tasks alive (one per live file in use).
    pub writers: AtomicU64,
    /// Gauge: log files open now (at most `max_open_files`).
    pub open_files: AtomicU64,
    /// Connections accepted and closed at once: `max_connections` reached.
    pub connections_refused: AtomicU64,
    /// Connections accepted and closed at once: their address already held
    /// `max_connections_per_ip`.
    pub connections_refused_per_ip: AtomicU64,
    /// Connections accepted and closed at once on the reserve descriptor
    /// because the daemon was out of file descriptors.
    pub connections_refused_no_fd: AtomicU64,
    /// Connections closed after `idle_timeout` without a byte.
    pub idle_closed: AtomicU64,
    /// Connections closed because a frame took longer than `frame_timeout`.
    pub frame_timeout_closed: AtomicU64,
    /// Syslog messages less severe than their facility's `min_severity`.
    pub filtered: AtomicU64,
    /// HTTP messages refused with 503 because their writer's queue stayed
    /// full (the client was told and may retry).
    pub http_busy: AtomicU64,
    /// facilities.conf reloads applied.
    pub reloads: AtomicU64,
    /// facilities.conf reloads refused (the old config stayed).
    pub reload_failures: AtomicU64,
    /// Gauge: UNIX time (seconds) the facilities in use were loaded.
    pub config_loaded_seconds: AtomicU64,
    /// Gauge: 1 while the listeners accept, 0 before start and after stop.
    pub listening: AtomicU64,
    /// Gauge: writer tasks holding lines for a retry after a failed write.
    pub writers_faulted: AtomicU64,
    /// Live files rotated (renamed to a backup).
    pub rotations: AtomicU64,
    /// Gauge: backups waiting for or under compression.
    pub compress_backlog: AtomicU64,
    /// Backup compressions that failed (redone at the next start).
    pub compress_failures: AtomicU64,
    /// How long each successful backup compression ran.
    pub compress_seconds: Histogram,
    /// Well-formed messages by input, indexed as [`TRANSPORTS`].
    pub received_by: [AtomicU64; TRANSPORTS.len()],
    /// Messages and bytes routed to each facility.
    pub facilities: FacilityCounts,
}

/// Upper bounds (seconds) of the [`Histogram`] buckets: compressions take
/// from milliseconds (a small hourly file) to minutes (GBs at xz -9).
pub const BUCKETS_SECONDS: [f64; 10] = [0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0];

/// A fixed-bucket duration histogram of atomics (Prometheus semantics:
/// bucket `i` counts observations `<= BUCKETS_SECONDS[i]`, cumulative when
/// rendered; `+Inf` is `count`).
#[derive(Debug, Default)]
pub struct Histogram {
    /// Observations per bucket, not cumulative.
    buckets: [AtomicU64; BUCKETS_SECONDS.len()],
    /// All observations.
    count: AtomicU64,
    /// Sum of observations, microseconds.
    sum_micros: AtomicU64,
}

// === impl Histogram ===

impl Histogram {
    /// Adds one observation.
    pub fn observe(&self, took: std::time::Duration) {
        let secs = took.as_secs_f64();
        if let Some(i) = BUCKETS_SECONDS.iter().position(|b| secs <= *b) {
            self.buckets[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let micros = u64::try_from(took.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    /// Cumulative bucket counts (as [`BUCKETS_SECONDS`]), count, and sum
    /// in seconds.
    pub fn snapshot(&self) -> ([u64; BUCKETS_SECONDS.len()], u64, f64) {
        let mut cumulative = [0u64; BUCKETS_SECONDS.len()];
        let mut running = 0;
        for (i, b) in self.buckets.iter().enumerate() {
            running += b.load(Relaxed);
            cumulative[i] = running;
        }
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        (cumulative, self.count.load(Relaxed), sum)
    }
}

/// The inputs `received_by` counts, in `Transport` order.
pub const TRANSPORTS: [&str; 8] = [
    "tcp",
    "udp",
    "tls",
    "syslog-udp",
    "syslog-tcp",
    "syslog-tls",
    "syslog-unix",
    "http",
];

/// Per-facility counters, keyed by section name (`app` or `app:module`).
///
/// Readers fetch a facility's [`FacilityCounter`] once when they make a
/// route and add to it once per batch, so the lock is never on the hot path;
/// only configured facilities get routes, which bounds the labels.
#[derive(Debug, Default)]
pub struct FacilityCounts {
    by_section: Mutex<BTreeMap<String, Arc<FacilityCounter>>>,
}

/// What was routed to one facility.
#[derive(Debug, Default)]
pub struct FacilityCounter {
    /// Messages handed to the facility's output.
    pub messages: AtomicU64,
    /// Bytes of formatted lines handed to it.
    pub bytes: AtomicU64,
}

// === impl FacilityCounts ===

impl FacilityCounts {
    /// The counter of `section`, made on first use.
    pub fn counter(&self, section: &str) -> Arc<FacilityCounter> {
        let mut map = self
            .by_section
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(c) = map.get(section) {
            return c.clone();
        }
        let c = Arc::new(FacilityCounter::default());
        map.insert(section.to_string(), c.clone());
        c
    }

    /// `(messages, bytes)` routed to `section` so far.
    pub fn get(&self, section: &str) -> (u64, u64) {
        let map = self
            .by_section
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.get(section).map_or((0, 0), |c| {
            (c.messages.load(Relaxed), c.bytes.load(Relaxed))
        })
    }

    /// Forgets the sections `keep` refuses (facilities a reload removed),
    /// so the table stays as large as the config.
    pub fn retain(&self, mut keep: impl FnMut(&str) -> bool) {
        let mut map = self
            .by_section
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        map.retain(|k, _| keep(k));
    }
}

/// The values that go up and down (the rest only go up).
pub const GAUGES: &[&str] = &[
    "writers",
    "open_files",
    "config_loaded_seconds",
    "listening",
    "writers_faulted",
    "compress_backlog",
];

/// The counters that count lost messages, one per reason.
pub const DROP_REASONS: &[&str] = &[
    "bad_frames",
    "bad_signature",
    "unknown_app",
    "udp_dropped",
    "write_errors",
    "too_many_files",
    "lost_at_stop",
    "http_busy",
];

// === impl Stats ===

impl Stats {
    /// Calls `f(name, help, value)` for every counter, in a fixed order.
    /// Names are stable: they are the SIGUSR1 keys and the metric names.
    pub fn for_each(&self, mut f: impl FnMut(&'static str, &'static str, u64)) {
        for (name, help, counter) in self.table() {
            f(name, help, counter.load(Relaxed));
        }
    }

    /// The value of the counter called `name`, `None` if there is none.
    pub fn get(&self, name: &str) -> Option<u64> {
        self.table()
            .into_iter()
            .find(|(n, _, _)| *n == name)
            .map(|(_, _, c)| c.load(Relaxed))
    }

    /// One `key=value` line of every counter.
    pub fn summary(&self) -> String {
        let mut out = String::new();
        self.for_each(|name, _, value| {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(name);
            out.push('=');
            out.push_str(itoa::Buffer::new().format(value));
        });
        out
    }

    /// Calls `f(reason, value)` for every counter of dropped messages: each
    /// loss the daemon knows of is counted under exactly one of these.
    pub fn for_each_drop(&self, mut f: impl FnMut(&'static str, u64)) {
        for name in DROP_REASONS {
            f(name, self.get(name).unwrap_or(0));
        }
    }

    fn table(&self) -> [(&'static str, &'static str, &AtomicU64); 31] {
        [
            (
                "received",
                "well-formed messages taken off the network",
                &self.received,
            ),
            (
                "written",
                "lines handed to the operating system",
                &self.written,
            ),
            (
                "bad_frames",
                "frames dropped as malformed",
                &self.bad_frames,
            ),
            (
                "oversize_closed",
                "connections closed for a length over max_msg_size",
                &self.oversize_closed,
            ),
            (
                "bad_signature",
                "messages dropped for a missing or wrong signature",
                &self.bad_signature,
            ),
            (
                "unknown_app",
                "messages for an app with no facility",
                &self.unknown_app,
            ),
            (
                "udp_dropped",
                "UDP messages dropped because a writer queue was full",
                &self.udp_dropped,
            ),
            (
                "write_errors",
                "lines lost to write errors",
                &self.write_errors,
            ),
            (
                "connections",
                "TCP and TLS connections accepted",
                &self.connections,
            ),
            ("tls_refused", "TLS handshakes refused", &self.tls_refused),
            (
                "too_many_files",
                "lines dropped: their app was at max_files_per_app",
                &self.too_many_files,
            ),
            (
                "lost_at_stop",
                "lines lost: shutdown left no output to take them",
                &self.lost_at_stop,
            ),
            (
                "write_retries",
                "failed writes held for a retry (nothing lost)",
                &self.write_retries,
            ),
            (
                "files_reopened",
                "live files found deleted or renamed and reopened",
                &self.files_reopened,
            ),
            ("writers", "writer tasks alive", &self.writers),
            ("open_files", "log files open now", &self.open_files),
            (
                "connections_refused",
                "connections closed at once: max_connections reached",
                &self.connections_refused,
            ),
            (
                "connections_refused_per_ip",
                "connections closed at once: max_connections_per_ip reached",
                &self.connections_refused_per_ip,
            ),
            (
                "connections_refused_no_fd",
                "connections closed at once: out of file descriptors",
                &self.connections_refused_no_fd,
            ),
            (
                "idle_closed",
                "connections closed after idle_timeout without a byte",
                &self.idle_closed,
            ),
            (
                "frame_timeout_closed",
                "connections closed: a frame took longer than frame_timeout",
                &self.frame_timeout_closed,
            ),
            (
                "filtered",
                "syslog messages below their facility's min_severity",
                &self.filtered,
            ),
            (
                "http_busy",
                "HTTP messages refused with 503: their writer queue stayed full",
                &self.http_busy,
            ),
            ("reloads", "facilities.conf reloads applied", &self.reloads),
            (
                "reload_failures",
                "facilities.conf reloads refused (old config kept)",
                &self.reload_failures,
            ),
            (
                "config_loaded_seconds",
                "UNIX time the facilities in use were loaded",
                &self.config_loaded_seconds,
            ),
            (
                "listening",
                "1 while the listeners accept connections",
                &self.listening,
            ),
            (
                "writers_faulted",
                "writers holding lines for a retry after a failed write",
                &self.writers_faulted,
            ),
            ("rotations", "live files rotated", &self.rotations),
            (
                "compress_backlog",
                "backups waiting for or under compression",
                &self.compress_backlog,
            ),
            (
                "compress_failures",
                "backup compressions that failed (redone at next start)",
                &self.compress_failures,
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_listed_once_and_read_back() {
        let s = Stats::default();
        s.written.fetch_add(7, Relaxed);
        let mut names = Vec::new();
        s.for_each(|n, help, _| {
            assert!(!help.is_empty());
            names.push(n);
        });
        let mut unique = names.clone();
        unique.sort_unstable();
        unique.dedup();
        assert_eq!(unique.len(), names.len());
        assert_eq!(s.get("written"), Some(7));
        assert_eq!(s.get("nope"), None);
        s.for_each_drop(|reason, _| assert!(names.contains(&reason), "{reason}"));
        assert!(s.summary().starts_with("received=0 written=7 "));
    }
}
