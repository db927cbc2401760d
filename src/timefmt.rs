//! The receipt timestamp that starts every line (SPEC §4):
//! `YYYY-MM-DD HH:MM:SS.ffffff` in the server's local time.
//!
//! Converting to local time costs a time-zone lookup, so [`LineClock`] does
//! it once per second and only writes the microseconds for each call.

use std::time::{SystemTime, UNIX_EPOCH};

use chrono::{Local, TimeZone};

/// Length of the formatted stamp.
pub const STAMP_LEN: usize = 26;

/// Formats receipt times, caching the part that changes once per second.
#[derive(Debug, Default)]
pub struct LineClock {
    /// UNIX second the cached prefix belongs to.
    second: i64,
    /// `YYYY-MM-DD HH:MM:SS.` for `second` in local time.
    prefix: [u8; 20],
    valid: bool,
}

impl LineClock {
    /// A clock with nothing cached.
    pub fn new() -> LineClock {
        LineClock::default()
    }

    /// The stamp for now, and the same instant in UNIX microseconds (what
    /// a forwarded record carries).
    pub fn now(&mut self) -> ([u8; STAMP_LEN], i64) {
        let d = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        let micros = i64::try_from(d.as_micros()).unwrap_or(i64::MAX);
        (self.stamp(d.as_secs() as i64, d.subsec_micros()), micros)
    }

    /// The stamp for a UNIX time (second + microseconds).
    pub fn stamp(&mut self, second: i64, micros: u32) -> [u8; STAMP_LEN] {
        if !self.valid || second != self.second {
            // A UNIX second maps to exactly one local time; only an
            // out-of-range second has none, and then UTC is the honest answer.
            let text = match Local.timestamp_opt(second, 0).earliest() {
                Some(local) => local.format("%Y-%m-%d %H:%M:%S.").to_string(),
                None => chrono::DateTime::from_timestamp(second, 0)
                    .unwrap_or_default()
                    .format("%Y-%m-%d %H:%M:%S.")
                    .to_string(),
            };
            self.prefix.copy_from_slice(&text.as_bytes()[..20]);
            self.second = second;
            self.valid = true;
        }
        let mut out = [b'0'; STAMP_LEN];
        out[..20].copy_from_slice(&self.prefix);
        let mut m = micros.min(999_999);
        for i in (20..26).rev() {
            out[i] = b'0' + (m % 10) as u8;
            m /= 10;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn format_matches_chrono() {
        let mut c = LineClock::new();
        for (s, us) in [
            (0i64, 0u32),
            (1_700_000_000, 5),
            (1_700_000_000, 999_999),
            (1_700_000_001, 123_456),
        ] {
            let got = c.stamp(s, us);
            let want = Local
                .timestamp_opt(s, us * 1000)
                .unwrap()
                .format("%Y-%m-%d %H:%M:%S%.6f")
                .to_string();
            assert_eq!(std::str::from_utf8(&got).unwrap(), want);
        }
    }
}
