//! A rate limiter for warnings that peers can cause: one hostile peer must
//! not flood the daemon's own log. A suppressed count is carried into the
//! next line that passes, so nothing is hidden, only summarized.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Lets at most `per_window` warnings through per `window`; counts the rest
/// so the next warning that passes can say how many were suppressed.
#[derive(Debug)]
pub(crate) struct RateLimit {
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
    pub(crate) fn new(per_window: u32, window: Duration) -> RateLimit {
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
    pub(crate) fn check(&self) -> Option<u64> {
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

impl RateLimit {
    /// The warnings suppressed since the last one that passed, once the
    /// window they fell in is over (taken, so each is reported once). A
    /// burst that ends leaves no later warning to carry its count: the
    /// daemon's housekeeping asks here and logs it.
    pub(crate) fn take_suppressed(&self) -> u64 {
        let mut s = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if s.started.elapsed() < self.window {
            return 0;
        }
        std::mem::take(&mut s.suppressed)
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

    #[test]
    fn a_burst_that_ends_is_still_reported_once() {
        let rl = RateLimit::new(1, Duration::from_secs(3600));
        assert_eq!(rl.check(), Some(0));
        assert_eq!(rl.check(), None);
        assert_eq!(rl.check(), None);
        assert_eq!(rl.take_suppressed(), 0, "not before the window is over");
        rl.state.lock().unwrap().started -= Duration::from_secs(3601);
        assert_eq!(rl.take_suppressed(), 2);
        assert_eq!(rl.take_suppressed(), 0);
    }
}
