//! How the viewer reads one line of a facility's file in each line format
//! (`loghog`, `rfc3164`, `rfc5424`): its time (as a sortable local
//! `YYYY-MM-DD HH:MM:SS` key), its host field and its severity — from
//! the `LEVEL - ` body prefix the Python client writes, or from a syslog
//! PRI. Pure functions over bytes; nothing here allocates for a `loghog`
//! line, the common case the scanner meets millions of times.

use chrono::{DateTime, Local, NaiveDate};
use memchr::memmem;

use crate::output::file::format::LineFormat;

/// A sortable local time, `YYYY-MM-DD HH:MM:SS`, as bytes.
pub(crate) type TimeKey = [u8; 19];

/// Severity names, most severe first, as syslog numbers them (0–7).
pub(crate) const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "critical", "error", "warning", "notice", "info", "debug",
];

/// What the viewer needs of one line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Parsed<'a> {
    /// The timestamp as written (shown as is).
    pub(crate) stamp: &'a [u8],
    /// The sortable local time, when the line has one.
    pub(crate) time: Option<TimeKey>,
    /// The host field.
    pub(crate) host: &'a [u8],
    /// 0 (emerg) … 7 (debug), when known.
    pub(crate) severity: Option<u8>,
    /// The rest of the line.
    pub(crate) body: &'a [u8],
}

/// The separator of the `loghog` format's fields.
const SEP: &[u8] = b" - ";

/// Parses `line` (without its `\n`) written in `format`. `year` is the
/// year of the file, for `rfc3164` stamps that carry none. A line that
/// does not have the format's shape comes back whole as the body.
pub(crate) fn parse(line: &[u8], format: LineFormat, year: i32) -> Parsed<'_> {
    let whole = Parsed {
        stamp: b"",
        time: None,
        host: b"",
        severity: None,
        body: line,
    };
    match format {
        LineFormat::Loghog => parse_loghog(line).unwrap_or(whole),
        LineFormat::Rfc5424 => parse_5424(line).unwrap_or(whole),
        LineFormat::Rfc3164 => parse_3164(line, year).unwrap_or(whole),
    }
}

/// `YYYY-MM-DD HH:MM:SS.ffffff - host - body`.
fn parse_loghog(line: &[u8]) -> Option<Parsed<'_>> {
    if line.len() < 29 || &line[26..29] != SEP || line[4] != b'-' || line[10] != b' ' {
        return None;
    }
    let rest = &line[29..];
    let (host, body) = match memmem::find(rest, SEP) {
        Some(i) => (&rest[..i], &rest[i + 3..]),
        None => (rest, &b""[..]),
    };
    let mut time = [0u8; 19];
    time.copy_from_slice(&line[..19]);
    Some(Parsed {
        stamp: &line[..26],
        time: Some(time),
        host,
        severity: level_prefix(body),
        body,
    })
}

/// `<PRI>1 TIMESTAMP HOST APP-NAME ...`.
fn parse_5424(line: &[u8]) -> Option<Parsed<'_>> {
    let close = memchr::memchr(b'>', line.get(..5)?)?;
    let pri: u16 = std::str::from_utf8(line.get(1..close)?)
        .ok()?
        .parse()
        .ok()?;
    let mut fields = line[close + 1..].splitn(4, |&b| b == b' ');
    let _version = fields.next()?;
    let stamp = fields.next()?;
    let host = fields.next()?;
    let body = fields.next().unwrap_or(b"");
    let time = std::str::from_utf8(stamp)
        .ok()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| key_of(&t.with_timezone(&Local).naive_local()));
    Some(Parsed {
        stamp,
        time,
        host,
        severity: Some((pri & 7) as u8),
        body,
    })
}

/// `Mmm dd hh:mm:ss host rest`.
fn parse_3164(line: &[u8], year: i32) -> Option<Parsed<'_>> {
    if line.len() < 16 || line[3] != b' ' || line[6] != b' ' || line[15] != b' ' {
        return None;
    }
    let month = MONTHS.iter().position(|m| m.as_bytes() == &line[..3])? as u32 + 1;
    let day: u32 = std::str::from_utf8(&line[4..6]).ok()?.trim().parse().ok()?;
    let rest = &line[16..];
    let (host, body) = match memchr::memchr(b' ', rest) {
        Some(i) => (&rest[..i], &rest[i + 1..]),
        None => (rest, &b""[..]),
    };
    let time = NaiveDate::from_ymd_opt(year, month, day).map(|d| {
        let mut k = [0u8; 19];
        k[..11].copy_from_slice(d.format("%Y-%m-%d ").to_string().as_bytes());
        k[11..].copy_from_slice(&line[7..15]);
        k
    });
    Some(Parsed {
        stamp: &line[..15],
        time,
        host,
        severity: None,
        body,
    })
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The severity of a body that starts with `LEVEL - ` (Python's
/// `%(levelname)s - %(message)s`, and the like).
pub(crate) fn level_prefix(body: &[u8]) -> Option<u8> {
    let end = memmem::find(body.get(..12.min(body.len()))?, SEP)?;
    let word = &body[..end];
    let sev = match word {
        b"EMERG" | b"EMERGENCY" => 0,
        b"ALERT" => 1,
        b"CRITICAL" | b"CRIT" | b"FATAL" => 2,
        b"ERROR" | b"ERR" => 3,
        b"WARNING" | b"WARN" => 4,
        b"NOTICE" => 5,
        b"INFO" => 6,
        b"DEBUG" | b"TRACE" => 7,
        _ => return None,
    };
    Some(sev)
}

/// A severity by its name in a URL (`error`, …; also the numbers 0–7).
pub(crate) fn severity_by_name(name: &str) -> Option<u8> {
    if let Ok(n) = name.parse::<u8>() {
        return (n < 8).then_some(n);
    }
    let name = name.to_ascii_lowercase();
    let name = match name.as_str() {
        "warn" => "warning",
        "crit" | "fatal" => "critical",
        "err" => "error",
        "emergency" => "emerg",
        n => n,
    };
    SEVERITIES.iter().position(|s| *s == name).map(|i| i as u8)
}

/// The key of a local time.
pub(crate) fn key_of(t: &chrono::NaiveDateTime) -> TimeKey {
    let mut k = [0u8; 19];
    let s = t.format("%Y-%m-%d %H:%M:%S").to_string();
    if s.len() == 19 {
        k.copy_from_slice(s.as_bytes());
    }
    k
}

/// A time from a URL: `YYYY-MM-DDTHH:MM[:SS]` (what an HTML
/// `datetime-local` input sends) or with a space instead of `T`, or a
/// bare date (midnight).
pub(crate) fn parse_time(s: &str) -> Option<chrono::NaiveDateTime> {
    let s = s.trim().replace(' ', "T");
    for f in [
        "%Y-%m-%dT%H:%M:%S",
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
    ] {
        if let Ok(t) = chrono::NaiveDateTime::parse_from_str(&s, f) {
            return Some(t);
        }
    }
    NaiveDate::parse_from_str(&s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loghog_lines() {
        let l = b"2026-12-02 10:11:12.123456 - web-1 - ERROR - disk full - really";
        let p = parse(l, LineFormat::Loghog, 2026);
        assert_eq!(p.time.unwrap(), *b"2026-12-02 10:11:12");
        assert_eq!(p.host, b"web-1");
        assert_eq!(p.severity, Some(3));
        assert_eq!(p.body, b"ERROR - disk full - really");
        let p = parse(
            b"2026-12-02 10:11:12.123456 - h - plain",
            LineFormat::Loghog,
            0,
        );
        assert_eq!(p.severity, None);
        // Not the format: all body, no time.
        let p = parse(b"garbage", LineFormat::Loghog, 0);
        assert_eq!((p.time, p.body), (None, &b"garbage"[..]));
    }

    #[test]
    fn syslog_lines() {
        let p = parse(
            b"<11>1 2026-12-02T10:11:12.5+00:00 mail-1 postfix 12 - - lost",
            LineFormat::Rfc5424,
            0,
        );
        assert_eq!(p.severity, Some(3));
        assert_eq!(p.host, b"mail-1");
        assert!(p.time.is_some());
        let p = parse(
            b"Dec  2 10:11:12 mail-1 sshd[5]: hi",
            LineFormat::Rfc3164,
            2026,
        );
        assert_eq!(p.time.unwrap(), *b"2026-12-02 10:11:12");
        assert_eq!(p.host, b"mail-1");
        assert_eq!(p.body, b"sshd[5]: hi");
    }

    #[test]
    fn severity_names_and_url_times() {
        assert_eq!(severity_by_name("error"), Some(3));
        assert_eq!(severity_by_name("WARN"), Some(4));
        assert_eq!(severity_by_name("9"), None);
        assert_eq!(severity_by_name("loud"), None);
        assert_eq!(level_prefix(b"WARNING - x"), Some(4));
        assert_eq!(level_prefix(b"WARNINGS - x"), None);
        let t = parse_time("2026-12-02T10:11").unwrap();
        assert_eq!(key_of(&t), *b"2026-12-02 10:11:00");
        assert!(parse_time("2026-12-02").is_some());
        assert!(parse_time("yesterday").is_none());
    }
}
