//! The wall clock that rotation reads: the file writers (when a file
//! started, when it rotated) and the scheduler (what is due). Injected so
//! tests can run a cron minute under `tokio::time::pause()` instead of
//! waiting for it.

use std::fmt;
use std::sync::Arc;

use chrono::{DateTime, Local};

/// A source of "now" in local time.
#[derive(Clone, Default)]
pub struct Clock {
    /// `None` is the system clock; tests install their own.
    source: Option<Arc<dyn Fn() -> DateTime<Local> + Send + Sync>>,
}

// === impl Clock ===

impl Clock {
    /// The system's wall clock.
    pub fn system() -> Clock {
        Clock { source: None }
    }

    /// A clock that reads `f`.
    pub fn from_fn(f: impl Fn() -> DateTime<Local> + Send + Sync + 'static) -> Clock {
        Clock {
            source: Some(Arc::new(f)),
        }
    }

    /// A clock that starts at `start` and advances with tokio's clock, so
    /// `tokio::time::pause()` and `advance()` move it too.
    pub fn following_tokio(start: DateTime<Local>) -> Clock {
        let origin = tokio::time::Instant::now();
        Clock::from_fn(move || {
            let elapsed = tokio::time::Instant::now() - origin;
            start + chrono::Duration::from_std(elapsed).unwrap_or(chrono::Duration::MAX)
        })
    }

    /// The current local time.
    pub fn now(&self) -> DateTime<Local> {
        match &self.source {
            None => Local::now(),
            Some(f) => f(),
        }
    }
}

impl fmt::Debug for Clock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.source.is_some() {
            "Clock(injected)"
        } else {
            "Clock(system)"
        })
    }
}
