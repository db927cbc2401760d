//! Counters of what the daemon received, wrote and refused, and a rate
//! limiter for the warnings hostile input produces.
//!
//! Hot paths count locally and add here once per read chunk, so no counter
//! cache line bounces between cores per message.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;
use std::time::{Duration, Instant};

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
}

impl Stats {
    /// One `key=value` line of every counter.
    pub fn summary(&self) -> String {
        let g = |c: &AtomicU64| c.load(Relaxed);
        format!(
            "received={} written={} bad_frames={} oversize_closed={} bad_signature={} unknown_app={} udp_dropped={} write_errors={} connections={} tls_refused={}",
            g(&self.received),
            g(&self.written),
            g(&self.bad_frames),
            g(&self.oversize_closed),
            g(&self.bad_signature),
            g(&self.unknown_app),
            g(&self.udp_dropped),
            g(&self.write_errors),
            g(&self.connections),
            g(&self.tls_refused),
        )
    }
}

/// Lets at most `per_window` warnings through per `window`; counts the rest
/// so the next warning that passes can say how many were suppressed.
#[derive(Debug)]
pub struct RateLimit {
    per_window: u32,
    window: Duration,
    state: Mutex<LimitState>,
}

#[derive(Debug)]
struct LimitState {
    started: Instant,
    passed: u32,
    suppressed: u64,
}

impl RateLimit {
    /// A limiter passing `per_window` events per `window`.
    pub fn new(per_window: u32, window: Duration) -> RateLimit {
        RateLimit {
            per_window,
            window,
            state: Mutex::new(LimitState {
                started: Instant::now(),
                passed: 0,
                suppressed: 0,
            }),
        }
    }

    /// `Some(suppressed_since_last)` when this event may be logged.
    pub fn check(&self) -> Option<u64> {
        // A poisoned lock only means another thread panicked mid-update of
        // three integers; the state is still usable.
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        if now.duration_since(s.started) >= self.window {
            s.started = now;
            s.passed = 0;
        }
        if s.passed < self.per_window {
            s.passed += 1;
            Some(std::mem::take(&mut s.suppressed))
        } else {
            s.suppressed += 1;
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_limit_counts_suppressed() {
        let rl = RateLimit::new(2, Duration::from_secs(3600));
        assert_eq!(rl.check(), Some(0));
        assert_eq!(rl.check(), Some(0));
        assert_eq!(rl.check(), None);
        assert_eq!(rl.check(), None);
        let mut s = rl.state.lock().unwrap();
        s.started -= Duration::from_secs(3601);
        drop(s);
        assert_eq!(rl.check(), Some(2));
    }
}
