//! Counters of what the daemon received, wrote and refused.
//!
//! Hot paths count locally and add here once per read chunk, so no counter
//! cache line bounces between cores per message. [`Stats::for_each`] is the
//! one view of them: the SIGUSR1 line, the tests and the metrics endpoint
//! all read it. Besides the named counters: TLS refusals by reason
//! ([`TlsRefusal`]), connections open per stream input ([`OpenConnection`],
//! an RAII guard) and what sits in the writers' queues
//! (`writer_queue_bytes`/`_messages`, added once per batch).

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
    /// Stream connections accepted (LogHog and syslog TCP/TLS, HTTP).
    pub connections: AtomicU64,
    /// TLS handshakes refused, all reasons: always the sum of
    /// `tls_refused_by` (both are added by [`Stats::count_tls_refusal`]).
    pub tls_refused: AtomicU64,
    /// TLS handshakes refused, indexed as [`TLS_REFUSALS`].
    pub tls_refused_by: [AtomicU64; TLS_REFUSALS.len()],
    /// Gauge: connections open now, indexed as [`STREAM_INPUTS`]; kept by
    /// [`OpenConnection`] guards.
    pub connections_open: [AtomicU64; STREAM_INPUTS.len()],
    /// Gauge: bytes of formatted lines between the readers and the disk:
    /// queued for a writer, or held by it (`flush_every`, a failed write
    /// being retried). Added once per batch sent, taken off once per write.
    pub writer_queue_bytes: AtomicU64,
    /// Gauge: the messages those bytes hold.
    pub writer_queue_messages: AtomicU64,
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
    /// Live application log files rotated (renamed to a backup). Every
    /// such rename is a file writer's (`LogFile::rotate`), so each counts
    /// once; the daemon's own log is not counted.
    pub rotations: AtomicU64,
    /// Gauge: backups waiting for or under compression.
    pub compress_backlog: AtomicU64,
    /// Backup compressions that failed (redone at the next start).
    pub compress_failures: AtomicU64,
    /// How long each successful backup compression ran.
    pub compress_seconds: Histogram,
    /// Well-formed messages by input, indexed as [`TRANSPORTS`].
    pub received_by: [AtomicU64; TRANSPORTS.len()],
    /// Records written to the forward spool (issue 16).
    pub forward_spooled_records: AtomicU64,
    /// Records the broker acknowledged (stored in the stream).
    pub forward_published_records: AtomicU64,
    /// Blocks (NATS messages) the broker acknowledged.
    pub forward_published_blocks: AtomicU64,
    /// Publish attempts that failed (retried: nothing is lost by these).
    pub forward_publish_errors: AtomicU64,
    /// Gauge: blocks in the spool not yet acknowledged.
    pub forward_spool_blocks: AtomicU64,
    /// Gauge: bytes the spool holds on disk.
    pub forward_spool_bytes: AtomicU64,
    /// Records the broker consumer routed to the files.
    pub consume_written_records: AtomicU64,
    /// Stream messages delivered again that were already written (skipped).
    pub consume_redeliveries: AtomicU64,
    /// Records or whole blocks that could not be decoded (counted, skipped).
    pub consume_poison: AtomicU64,
    /// Gauge: partitions this writer owns now.
    pub consume_owned_partitions: AtomicU64,
    /// Gauge: messages in the owned partitions not yet written, summed.
    pub consume_lag_messages: AtomicU64,
    /// Per-partition lag, `(partition, messages)`, for the labelled metric.
    pub consume_lag_by: std::sync::Mutex<std::collections::BTreeMap<u32, u64>>,
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
pub const TRANSPORTS: [&str; 9] = [
    "tcp",
    "udp",
    "tls",
    "syslog-udp",
    "syslog-tcp",
    "syslog-tls",
    "syslog-unix",
    "http",
    "broker",
];

/// The stream inputs whose open connections are counted, in the order of
/// [`Stats::connections_open`] (names as [`TRANSPORTS`]; HTTPS is `http`).
pub const STREAM_INPUTS: [&str; 5] = ["tcp", "tls", "syslog-tcp", "syslog-tls", "http"];

/// Why a TLS handshake was refused: a fixed list, so the metric's labels
/// stay bounded whatever peers send. Names as [`TLS_REFUSALS`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsRefusal {
    /// The client sent no certificate.
    NoCertificate,
    /// The client's certificate does not chain to `cacert`.
    UnknownCa,
    /// The client's certificate expired (or is not valid yet).
    Expired,
    /// A signature in the client's chain does not verify.
    BadSignature,
    /// Any other fault of the client's certificate (revoked, wrong key
    /// usage, X.509 v1 from the old scripts, malformed).
    BadCertificate,
    /// Not TLS at all: plain frames sent to the TLS port.
    NotTls,
    /// TLS, but no version or cipher both sides support.
    Incompatible,
    /// The client gave up: an alert, a close or a reset mid-handshake.
    ClientAborted,
    /// The handshake did not finish within its timeout.
    HandshakeTimeout,
    /// Anything else.
    Other,
}

/// Labels of [`TlsRefusal`], in its order.
pub const TLS_REFUSALS: [&str; 10] = [
    "no_certificate",
    "unknown_ca",
    "expired",
    "bad_signature",
    "bad_certificate",
    "not_tls",
    "incompatible",
    "client_aborted",
    "handshake_timeout",
    "other",
];

impl TlsRefusal {
    /// The metric label.
    pub fn as_str(self) -> &'static str {
        TLS_REFUSALS[self as usize]
    }
}

/// One open connection of a stream input: counted in
/// [`Stats::connections_open`] from [`Stats::open_connection`] until
/// dropped, so no exit path of a connection task (an error, a panic, a
/// task dropped at shutdown) can leave it counted.
#[derive(Debug)]
pub struct OpenConnection {
    stats: Arc<Stats>,
    /// Index in [`STREAM_INPUTS`]; `None` for an input not counted.
    slot: Option<usize>,
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        if let Some(i) = self.slot {
            self.stats.connections_open[i].fetch_sub(1, Relaxed);
        }
    }
}

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
    "writer_queue_bytes",
    "writer_queue_messages",
    "forward_spool_blocks",
    "forward_spool_bytes",
    "consume_owned_partitions",
    "consume_lag_messages",
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

    /// Counts a refused TLS handshake under `why` and in the total.
    pub fn count_tls_refusal(&self, why: TlsRefusal) {
        self.tls_refused_by[why as usize].fetch_add(1, Relaxed);
        self.tls_refused.fetch_add(1, Relaxed);
    }

    /// Refused TLS handshakes with the label `reason`, `None` if no such
    /// reason exists.
    pub fn tls_refused_for(&self, reason: &str) -> Option<u64> {
        let i = TLS_REFUSALS.iter().position(|r| *r == reason)?;
        Some(self.tls_refused_by[i].load(Relaxed))
    }

    /// Counts a connection of the input named `input` (as
    /// [`STREAM_INPUTS`]) as open until the guard is dropped. An input not
    /// in the list gets a guard that counts nothing.
    pub fn open_connection(self: &Arc<Self>, input: &str) -> OpenConnection {
        let slot = STREAM_INPUTS.iter().position(|n| *n == input);
        if let Some(i) = slot {
            self.connections_open[i].fetch_add(1, Relaxed);
        }
        OpenConnection {
            stats: self.clone(),
            slot,
        }
    }

    /// Connections of `input` open now, `None` if it is not counted.
    pub fn connections_open_for(&self, input: &str) -> Option<u64> {
        let i = STREAM_INPUTS.iter().position(|n| *n == input)?;
        Some(self.connections_open[i].load(Relaxed))
    }

    /// `bytes` in `messages` were queued for a writer.
    pub fn queued(&self, bytes: u64, messages: u64) {
        self.writer_queue_bytes.fetch_add(bytes, Relaxed);
        self.writer_queue_messages.fetch_add(messages, Relaxed);
    }

    /// `bytes` in `messages` left the writers' queues: written, dropped, or
    /// handed back to the reader. Never more than [`Stats::queued`] added.
    pub fn dequeued(&self, bytes: u64, messages: u64) {
        if bytes > 0 {
            self.writer_queue_bytes.fetch_sub(bytes, Relaxed);
        }
        if messages > 0 {
            self.writer_queue_messages.fetch_sub(messages, Relaxed);
        }
    }

    /// Calls `f(reason, value)` for every counter of dropped messages: each
    /// loss the daemon knows of is counted under exactly one of these.
    pub fn for_each_drop(&self, mut f: impl FnMut(&'static str, u64)) {
        for name in DROP_REASONS {
            f(name, self.get(name).unwrap_or(0));
        }
    }

    fn table(&self) -> [(&'static str, &'static str, &AtomicU64); 44] {
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
                "stream connections accepted (LogHog and syslog TCP/TLS, HTTP)",
                &self.connections,
            ),
            (
                "tls_refused",
                "TLS handshakes refused, by reason",
                &self.tls_refused,
            ),
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
            (
                "rotations",
                "application log files rotated to a backup",
                &self.rotations,
            ),
            (
                "compress_backlog",
                "backups waiting for or under compression",
                &self.compress_backlog,
            ),
            (
                "writer_queue_bytes",
                "bytes of lines queued for or held by the file writers",
                &self.writer_queue_bytes,
            ),
            (
                "writer_queue_messages",
                "messages queued for or held by the file writers",
                &self.writer_queue_messages,
            ),
            (
                "compress_failures",
                "backup compressions that failed (redone at next start)",
                &self.compress_failures,
            ),
            (
                "forward_spooled_records",
                "records written to the forward spool",
                &self.forward_spooled_records,
            ),
            (
                "forward_published_records",
                "records the broker acknowledged",
                &self.forward_published_records,
            ),
            (
                "forward_published_blocks",
                "blocks (NATS messages) the broker acknowledged",
                &self.forward_published_blocks,
            ),
            (
                "forward_publish_errors",
                "publish attempts that failed and are retried",
                &self.forward_publish_errors,
            ),
            (
                "forward_spool_blocks",
                "blocks in the forward spool not yet acknowledged",
                &self.forward_spool_blocks,
            ),
            (
                "forward_spool_bytes",
                "bytes the forward spool holds on disk",
                &self.forward_spool_bytes,
            ),
            (
                "consume_written_records",
                "records read from the broker and routed to the files",
                &self.consume_written_records,
            ),
            (
                "consume_redeliveries",
                "broker messages delivered again that were already written",
                &self.consume_redeliveries,
            ),
            (
                "consume_poison",
                "broker records or blocks that could not be decoded (skipped)",
                &self.consume_poison,
            ),
            (
                "consume_owned_partitions",
                "partitions this writer owns",
                &self.consume_owned_partitions,
            ),
            (
                "consume_lag_messages",
                "messages in the owned partitions not yet written",
                &self.consume_lag_messages,
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
        for g in GAUGES {
            assert!(names.contains(g), "{g}");
        }
    }

    #[test]
    fn tls_refusals_are_a_fixed_list_summed_in_tls_refused() {
        use TlsRefusal as R;
        let all = [
            R::NoCertificate,
            R::UnknownCa,
            R::Expired,
            R::BadSignature,
            R::BadCertificate,
            R::NotTls,
            R::Incompatible,
            R::ClientAborted,
            R::HandshakeTimeout,
            R::Other,
        ];
        assert_eq!(all.len(), TLS_REFUSALS.len());
        let s = Stats::default();
        for (i, r) in all.iter().enumerate() {
            assert_eq!(*r as usize, i);
            assert_eq!(r.as_str(), TLS_REFUSALS[i]);
            for _ in 0..=i {
                s.count_tls_refusal(*r);
            }
        }
        let mut labels = TLS_REFUSALS.to_vec();
        labels.sort_unstable();
        labels.dedup();
        assert_eq!(labels.len(), TLS_REFUSALS.len(), "labels are unique");
        assert_eq!(s.tls_refused_for("no_certificate"), Some(1));
        assert_eq!(s.tls_refused_for("other"), Some(10));
        assert_eq!(s.tls_refused_for("nope"), None);
        let sum: u64 = TLS_REFUSALS
            .iter()
            .filter_map(|r| s.tls_refused_for(r))
            .sum();
        assert_eq!(s.get("tls_refused"), Some(sum));
        assert_eq!(sum, 55);
    }

    #[test]
    fn open_connections_count_per_input_until_the_guard_drops() {
        let s = Arc::new(Stats::default());
        // Every counted input is a transport name, and no datagram one.
        for input in STREAM_INPUTS {
            assert!(TRANSPORTS.contains(&input), "{input}");
            assert!(!input.ends_with("udp") && !input.ends_with("unix"));
        }
        let a = s.open_connection("tcp");
        let b = s.open_connection("tcp");
        let h = s.open_connection("http");
        let u = s.open_connection("udp");
        assert_eq!(s.connections_open_for("tcp"), Some(2));
        assert_eq!(s.connections_open_for("http"), Some(1));
        assert_eq!(s.connections_open_for("tls"), Some(0));
        assert_eq!(s.connections_open_for("udp"), None);
        drop((a, u));
        assert_eq!(s.connections_open_for("tcp"), Some(1));
        // A guard moved into a task that is dropped unpolled still counts
        // down (the shutdown path of a connection never run).
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let task = rt.spawn(async move {
            let _keep = (b, h);
            std::future::pending::<()>().await;
        });
        task.abort();
        drop(rt);
        for input in STREAM_INPUTS {
            assert_eq!(s.connections_open_for(input), Some(0), "{input}");
        }
    }

    #[test]
    fn queue_gauges_go_up_and_down_by_batch() {
        let s = Stats::default();
        s.queued(300, 3);
        s.queued(100, 1);
        s.dequeued(250, 2);
        assert_eq!(s.get("writer_queue_bytes"), Some(150));
        assert_eq!(s.get("writer_queue_messages"), Some(2));
        s.dequeued(150, 2);
        assert_eq!(s.get("writer_queue_bytes"), Some(0));
        assert_eq!(s.get("writer_queue_messages"), Some(0));
    }
}
