//! The `[viewer]` section of loghogd.conf (issue 15): the limits of the
//! read-only log viewer that the `[http]` listener serves under `/`. Who
//! may read is decided by `[http]` (tokens with `read:APP`, `cert:` lines,
//! `allow_anonymous_read`); this section bounds the work one request may
//! cause, so a search over years of backups cannot take the daemon's
//! cores or memory.

use std::time::Duration;

use super::{ConfigError, Reader};

/// The keys `[viewer]` knows.
pub(super) const KEYS: &[&str] = &[
    "enabled",
    "page_lines",
    "max_scan_bytes",
    "max_scan_seconds",
    "max_scans",
    "max_tails",
];

/// `[viewer]`: what one request may cost.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewerSection {
    /// Serve the viewer on the `[http]` listener (default yes; it still
    /// needs a read scope).
    pub enabled: bool,
    /// Lines on one page.
    pub page_lines: usize,
    /// Most bytes (decompressed) one request may read before it stops and
    /// says how far it got.
    pub max_scan_bytes: u64,
    /// Most time one request may scan for.
    pub max_scan_time: Duration,
    /// Most scans running at once; more wait (then get 503).
    pub max_scans: usize,
    /// Most live tails open at once; more get 503.
    pub max_tails: usize,
}

impl Default for ViewerSection {
    fn default() -> ViewerSection {
        ViewerSection {
            enabled: true,
            page_lines: 100,
            max_scan_bytes: 4 << 30,
            max_scan_time: Duration::from_secs(10),
            max_scans: 2,
            max_tails: 32,
        }
    }
}

/// Reads `[viewer]`.
pub(super) fn read_viewer(r: &Reader<'_>) -> Result<ViewerSection, ConfigError> {
    let d = ViewerSection::default();
    Ok(ViewerSection {
        enabled: r.bool("enabled", d.enabled)?,
        page_lines: r.number("page_lines", d.page_lines as u64, 1, 10_000)? as usize,
        max_scan_bytes: r.number("max_scan_bytes", d.max_scan_bytes, 1 << 20, 1 << 40)?,
        max_scan_time: Duration::from_secs(r.number(
            "max_scan_seconds",
            d.max_scan_time.as_secs(),
            1,
            600,
        )?),
        max_scans: r.number("max_scans", d.max_scans as u64, 1, 64)? as usize,
        max_tails: r.number("max_tails", d.max_tails as u64, 1, 4096)? as usize,
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{assert_errors, parse};

    #[test]
    fn defaults_and_keys() {
        let c = parse("").unwrap();
        assert!(c.viewer.enabled);
        assert_eq!(c.viewer.page_lines, 100);
        let c = parse(
            "[viewer]\npage_lines = 20\nmax_scan_bytes = 2097152\nmax_scan_seconds = 3\nmax_scans = 4\nenabled = no\n",
        )
        .unwrap();
        assert_eq!(c.viewer.page_lines, 20);
        assert_eq!(c.viewer.max_scan_bytes, 2 << 20);
        assert_eq!(c.viewer.max_scan_time.as_secs(), 3);
        assert_eq!(c.viewer.max_scans, 4);
        assert!(!c.viewer.enabled);
    }

    #[test]
    fn errors_name_key_and_fix() {
        assert_errors(&[
            (
                "[viewer]\npage_lines = 0\n",
                "page_lines",
                "from 1 to 10000",
            ),
            (
                "[viewer]\nmax_scan_bytes = 5\n",
                "max_scan_bytes",
                "whole number",
            ),
            ("[viewer]\nenabled = maybe\n", "enabled", "yes or no"),
            (
                "[http]\nlisten = 127.0.0.1\nallow_anonymous_read = yes\ntokens_file = t\n",
                "allow_anonymous_read",
                "allow_anonymous_on_loopback = yes",
            ),
        ]);
    }
}
