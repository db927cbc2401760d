//! The rate chart: messages per minute (or per several minutes, for long
//! ranges) over the chosen time range, counted by the scanner and drawn
//! as an inline SVG on the server, so the chart needs no JavaScript. Only
//! times and counts reach the SVG, never a client string.

use std::fmt::Write as _;

use chrono::{NaiveDateTime, TimeDelta};

use super::lines::TimeKey;

/// Most bars drawn; a longer range gets wider buckets.
const MAX_BARS: i64 = 720;
const WIDTH: f64 = 960.0;
const HEIGHT: f64 = 180.0;
/// Room for the labels.
const LEFT: f64 = 48.0;
const BOTTOM: f64 = 22.0;

/// Counts per bucket from `start`, `minutes` minutes each.
#[derive(Debug)]
pub(crate) struct Buckets {
    start: NaiveDateTime,
    minutes: i64,
    counts: Vec<u64>,
    /// The last minute seen and its bucket (lines come in time order, so
    /// most lines cost one 16-byte compare).
    last: Option<([u8; 16], Option<usize>)>,
}

impl Buckets {
    /// Buckets covering `[from, to)`, minute-aligned.
    pub(crate) fn new(from: NaiveDateTime, to: NaiveDateTime) -> Buckets {
        // Times come from the URL: arithmetic that would leave chrono's
        // range keeps the time as it is instead of panicking.
        let start = from
            .checked_sub_signed(TimeDelta::seconds(i64::from(chrono::Timelike::second(
                &from,
            ))))
            .unwrap_or(from);
        let span = (to - start).num_minutes().max(1);
        let minutes = (span + MAX_BARS - 1) / MAX_BARS;
        let n = ((span + minutes - 1) / minutes).max(1) as usize;
        Buckets {
            start,
            minutes,
            counts: vec![0; n],
            last: None,
        }
    }

    /// Counts a line at `t`.
    pub(crate) fn add(&mut self, t: &TimeKey) {
        let mut minute = [0u8; 16];
        minute.copy_from_slice(&t[..16]);
        let bucket = match self.last {
            Some((m, b)) if m == minute => b,
            _ => {
                let b = std::str::from_utf8(&minute)
                    .ok()
                    .and_then(|s| NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M").ok())
                    .and_then(|at| {
                        let i = (at - self.start).num_minutes().checked_div(self.minutes)?;
                        usize::try_from(i).ok().filter(|&i| i < self.counts.len())
                    });
                self.last = Some((minute, b));
                b
            }
        };
        if let Some(b) = bucket {
            self.counts[b] += 1;
        }
    }

    /// The total counted.
    pub(crate) fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The chart; `note` (fixed text, e.g. that the scan stopped early) is
    /// written under it.
    pub(crate) fn svg(&self, note: Option<&str>) -> String {
        let max = self.counts.iter().copied().max().unwrap_or(0).max(1);
        let plot_w = WIDTH - LEFT - 8.0;
        let plot_h = HEIGHT - BOTTOM - 10.0;
        let bar_w = plot_w / self.counts.len() as f64;
        let mut s = String::with_capacity(64 * self.counts.len() + 1024);
        let _ = write!(
            s,
            r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" font-family="sans-serif" font-size="11"><title>messages per {} min: {} in all</title><rect width="100%" height="100%" fill="#fff"/>"##,
            self.minutes,
            self.total()
        );
        for (i, &c) in self.counts.iter().enumerate() {
            if c == 0 {
                continue;
            }
            let h = plot_h * c as f64 / max as f64;
            let x = LEFT + bar_w * i as f64;
            let _ = write!(
                s,
                r##"<rect x="{x:.2}" y="{:.2}" width="{:.2}" height="{h:.2}" fill="#3b6ea5"><title>{}: {c}</title></rect>"##,
                10.0 + plot_h - h,
                (bar_w - 0.5).max(0.5),
                self.label(i, "%Y-%m-%d %H:%M"),
            );
        }
        let base = 10.0 + plot_h;
        let _ = write!(
            s,
            r##"<line x1="{LEFT}" y1="{base}" x2="{}" y2="{base}" stroke="#555"/><text x="{}" y="14" text-anchor="end">{max}</text><text x="{}" y="{base}" text-anchor="end">0</text><text x="{LEFT}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text><text x="{}" y="{}" text-anchor="middle">messages per {} min{}</text></svg>"##,
            WIDTH - 8.0,
            LEFT - 4.0,
            LEFT - 4.0,
            HEIGHT - 6.0,
            self.label(0, "%m-%d %H:%M"),
            WIDTH - 8.0,
            HEIGHT - 6.0,
            self.label(self.counts.len(), "%m-%d %H:%M"),
            LEFT + plot_w / 2.0,
            HEIGHT - 6.0,
            self.minutes,
            note.map(|n| format!(" ({n})")).unwrap_or_default(),
        );
        s
    }

    fn label(&self, i: usize, fmt: &str) -> String {
        self.start
            .checked_add_signed(TimeDelta::minutes(self.minutes.saturating_mul(i as i64)))
            .unwrap_or(self.start)
            .format(fmt)
            .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_land_in_their_minute() {
        let from =
            NaiveDateTime::parse_from_str("2026-12-02 10:00:30", "%Y-%m-%d %H:%M:%S").unwrap();
        let mut b = Buckets::new(from, from + TimeDelta::minutes(10));
        for t in [
            b"2026-12-02 10:00:31",
            b"2026-12-02 10:00:59",
            b"2026-12-02 10:03:00",
            b"2026-12-02 11:03:00", // outside: not counted
        ] {
            b.add(t);
        }
        assert_eq!(b.counts[0], 2);
        assert_eq!(b.counts[3], 1);
        assert_eq!(b.total(), 3);
        let svg = b.svg(Some("stopped early"));
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        assert!(svg.contains("10:03: 1") && svg.contains("stopped early"));
        // Any range from a URL draws, even chrono's whole one.
        let all = Buckets::new(NaiveDateTime::MIN, NaiveDateTime::MAX);
        assert!(all.counts.len() as i64 <= MAX_BARS);
        assert!(all.svg(None).ends_with("</svg>"));
        // A week gets wider buckets, never more than MAX_BARS.
        let b = Buckets::new(from, from + TimeDelta::days(7));
        assert!(b.counts.len() as i64 <= MAX_BARS && b.minutes == 14);
    }
}
