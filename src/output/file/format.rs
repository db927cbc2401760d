//! The line formats a facility can write (`format =` in facilities.conf,
//! issue 13): `loghog` (SPEC §4, the default), `rfc3164` (rsyslog's
//! traditional file format, so log readers and fail2ban keep working) and
//! `rfc5424` (the message as received, normalised). The router formats each
//! record straight into its route's pending batch.
//!
//! Every line ends in exactly one `\n`. In the syslog formats a body's
//! control characters (a LogHog body may hold newlines) are written as
//! `#ooo`, as rsyslog does on receipt, so one message is one line.

use std::io::Write as _;

use chrono::{DateTime, FixedOffset, Local};

use super::line;
use crate::record::{Record, SyslogMeta};
use crate::timefmt::STAMP_LEN;

/// Longest APP-NAME / tag written (RFC 5424's APP-NAME limit).
const MAX_APP: usize = 48;
/// Longest PROCID written (RFC 5424).
const MAX_PROCID: usize = 128;
/// Longest MSGID written (RFC 5424).
const MAX_MSGID: usize = 32;
/// Longest HOSTNAME written (RFC 5424).
const MAX_HOST: usize = 255;

/// The facility and severity LogHog messages get in the syslog formats:
/// user.info.
const LOGHOG_PRI: u8 = 8 + 6;

/// How a facility writes its lines.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum LineFormat {
    /// `YYYY-MM-DD HH:MM:SS.ffffff - host - body` (SPEC §4); a syslog
    /// body is prefixed with its `tag[pid]: `.
    #[default]
    Loghog,
    /// `Mmm dd hh:mm:ss host tag[pid]: msg`.
    Rfc3164,
    /// `<PRI>1 TIMESTAMP HOST APP-NAME PROCID MSGID SD MSG`.
    Rfc5424,
}

// === impl LineFormat ===

impl LineFormat {
    /// Parses a `format =` value (case-insensitive).
    pub fn parse(v: &str) -> Option<LineFormat> {
        match v.to_ascii_lowercase().as_str() {
            "loghog" => Some(LineFormat::Loghog),
            "rfc3164" => Some(LineFormat::Rfc3164),
            "rfc5424" => Some(LineFormat::Rfc5424),
            _ => None,
        }
    }

    /// The config name.
    pub fn as_str(self) -> &'static str {
        match self {
            LineFormat::Loghog => "loghog",
            LineFormat::Rfc3164 => "rfc3164",
            LineFormat::Rfc5424 => "rfc5424",
        }
    }
}

/// Appends `rec`'s line in `format`; `stamp` is the receipt time, `host`
/// the sender's name already chosen (and cleaned) by the router.
pub(crate) fn push(
    buf: &mut Vec<u8>,
    format: LineFormat,
    stamp: &[u8; STAMP_LEN],
    host: &str,
    rec: &Record<'_>,
) {
    match (format, rec.syslog) {
        (LineFormat::Loghog, None) => line::push(buf, stamp, host, rec.body),
        (LineFormat::Loghog, Some(meta)) => {
            buf.reserve(line::OVERHEAD + host.len() + rec.body.len() + 16);
            buf.extend_from_slice(stamp);
            buf.extend_from_slice(b" - ");
            buf.extend_from_slice(host.as_bytes());
            buf.extend_from_slice(b" - ");
            if push_tag(buf, meta) {
                buf.push(b' ');
            }
            buf.extend_from_slice(rec.body.as_bytes());
            buf.push(b'\n');
        }
        (LineFormat::Rfc3164, meta) => push_3164(buf, stamp, host, rec, meta),
        (LineFormat::Rfc5424, meta) => push_5424(buf, host, rec, meta),
    }
}

/// `tag[pid]:` (or `tag:`); false when there is no tag. The pid is the
/// message's own, else the kernel's from the local socket.
fn push_tag(buf: &mut Vec<u8>, meta: &SyslogMeta<'_>) -> bool {
    let Some(app) = meta.app_name.filter(|a| !a.is_empty()) else {
        return false;
    };
    push_token(buf, app, MAX_APP);
    match (meta.procid, meta.cred) {
        (Some(p), _) if !p.is_empty() => {
            buf.push(b'[');
            push_token(buf, p, MAX_PROCID);
            buf.push(b']');
        }
        (_, Some(c)) => {
            let _ = write!(buf, "[{}]", c.pid);
        }
        _ => {}
    }
    buf.push(b':');
    true
}

fn push_3164(
    buf: &mut Vec<u8>,
    stamp: &[u8; STAMP_LEN],
    host: &str,
    rec: &Record<'_>,
    meta: Option<&SyslogMeta<'_>>,
) {
    match meta.and_then(|m| m.timestamp) {
        Some(ts) => push_3164_time(buf, &ts),
        None => push_3164_stamp(buf, stamp),
    }
    buf.push(b' ');
    push_token(buf, host, MAX_HOST);
    buf.push(b' ');
    match meta {
        Some(m) => {
            if !push_tag(buf, m) {
                // rsyslog writes the colon-less form too; keep the column.
                buf.push(b'-');
                buf.push(b':');
            }
        }
        None => {
            push_token(buf, rec.app_id, MAX_APP);
            buf.push(b':');
        }
    }
    buf.push(b' ');
    push_escaped(buf, rec.body);
    buf.push(b'\n');
}

/// The text of the last second formatted on this thread, per format: a
/// stream's messages mostly share their second, and formatting it through
/// chrono (with a time-zone lookup for rfc3164) per message doubled the
/// cost of a line.
#[derive(Default)]
struct TimeCache {
    /// UNIX second → `Mmm dd HH:MM:SS` in local time.
    bsd: Option<(i64, String)>,
    /// (UNIX second, offset) → (`YYYY-MM-DDTHH:MM:SS`, `+HH:MM`).
    ietf: Option<((i64, i32), String, String)>,
}

thread_local! {
    static TIMES: std::cell::RefCell<TimeCache> = std::cell::RefCell::default();
}

/// A sender's timestamp as rsyslog writes it: `Mmm dd HH:MM:SS`, local time.
fn push_3164_time(buf: &mut Vec<u8>, ts: &DateTime<FixedOffset>) {
    TIMES.with_borrow_mut(|c| {
        let secs = ts.timestamp();
        match &c.bsd {
            Some((s, text)) if *s == secs => buf.extend_from_slice(text.as_bytes()),
            _ => {
                let text = ts
                    .with_timezone(&Local)
                    .format("%b %e %H:%M:%S")
                    .to_string();
                buf.extend_from_slice(text.as_bytes());
                c.bsd = Some((secs, text));
            }
        }
    });
}

/// RFC 3339 with microseconds and the sender's offset.
fn push_5424_time(buf: &mut Vec<u8>, ts: &DateTime<FixedOffset>) {
    TIMES.with_borrow_mut(|c| {
        let key = (ts.timestamp(), ts.offset().local_minus_utc());
        let (date, offset) = match &c.ietf {
            Some((k, d, o)) if *k == key => (d, o),
            _ => {
                let d = ts.format("%Y-%m-%dT%H:%M:%S").to_string();
                let o = ts.format("%:z").to_string();
                let (_, d, o) = c.ietf.insert((key, d, o));
                (&*d, &*o)
            }
        };
        buf.extend_from_slice(date.as_bytes());
        buf.push(b'.');
        // A leap second's nanoseconds pass 1e9; chrono writes 999999 then.
        let mut m = (ts.timestamp_subsec_nanos() / 1000).min(999_999);
        let mut digits = [b'0'; 6];
        for d in digits.iter_mut().rev() {
            *d = b'0' + (m % 10) as u8;
            m /= 10;
        }
        buf.extend_from_slice(&digits);
        buf.extend_from_slice(offset.as_bytes());
    });
}

/// `Mmm dd HH:MM:SS` from a receipt stamp `YYYY-MM-DD HH:MM:SS.ffffff`.
fn push_3164_stamp(buf: &mut Vec<u8>, stamp: &[u8; STAMP_LEN]) {
    const MONTHS: [&[u8; 3]; 12] = [
        b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov",
        b"Dec",
    ];
    let month =
        usize::from(stamp[5].wrapping_sub(b'0')) * 10 + usize::from(stamp[6].wrapping_sub(b'0'));
    buf.extend_from_slice(MONTHS[month.clamp(1, 12) - 1]);
    buf.push(b' ');
    buf.push(if stamp[8] == b'0' { b' ' } else { stamp[8] });
    buf.push(stamp[9]);
    buf.push(b' ');
    buf.extend_from_slice(&stamp[11..19]);
}

fn push_5424(buf: &mut Vec<u8>, host: &str, rec: &Record<'_>, meta: Option<&SyslogMeta<'_>>) {
    let pri = meta.map_or(LOGHOG_PRI, |m| m.facility * 8 + m.severity);
    let ts: DateTime<FixedOffset> = meta
        .and_then(|m| m.timestamp)
        .unwrap_or_else(|| Local::now().fixed_offset());
    let _ = write!(buf, "<{pri}>1 ");
    push_5424_time(buf, &ts);
    buf.push(b' ');
    let nil = |buf: &mut Vec<u8>, v: Option<&str>, max: usize| {
        match v.filter(|v| !v.is_empty() && *v != "-") {
            Some(v) => push_token(buf, v, max),
            None => buf.push(b'-'),
        }
        buf.push(b' ');
    };
    nil(buf, Some(host), MAX_HOST);
    match meta {
        Some(m) => {
            nil(buf, m.app_name, MAX_APP);
            let pid = m.cred.map(|c| c.pid.to_string());
            nil(buf, m.procid.or(pid.as_deref()), MAX_PROCID);
            nil(buf, m.msgid, MAX_MSGID);
            let mut sd = false;
            if !m.structured_data.is_empty() {
                buf.extend_from_slice(m.structured_data.as_bytes());
                sd = true;
            }
            if let Some(c) = m.cred {
                // 32473 is the enterprise number RFC 5612 sets aside for
                // documentation; loghogd has none of its own.
                let _ = write!(
                    buf,
                    "[loghogd@32473 pid=\"{}\" uid=\"{}\" gid=\"{}\"]",
                    c.pid, c.uid, c.gid
                );
                sd = true;
            }
            if !sd {
                buf.push(b'-');
            }
        }
        None => {
            nil(buf, Some(rec.app_id), MAX_APP);
            buf.extend_from_slice(b"- ");
            nil(buf, Some(rec.module), MAX_MSGID);
            buf.push(b'-');
        }
    }
    if !rec.body.is_empty() {
        buf.push(b' ');
        push_escaped(buf, rec.body);
    }
    buf.push(b'\n');
}

/// A header token: printable ASCII without spaces (RFC 5424's PRINTUSASCII),
/// anything else as `_`, cut at `max` bytes.
fn push_token(buf: &mut Vec<u8>, s: &str, max: usize) {
    for c in s.chars().take(max) {
        buf.push(if c.is_ascii_graphic() { c as u8 } else { b'_' });
    }
}

/// The body with control characters (but TAB) as `#ooo`, rsyslog's escape.
pub(crate) fn push_escaped(buf: &mut Vec<u8>, s: &str) {
    let bytes = s.as_bytes();
    let mut start = 0;
    for (i, &b) in bytes.iter().enumerate() {
        if (b < 0x20 && b != b'\t') || b == 0x7f {
            buf.extend_from_slice(&bytes[start..i]);
            let _ = write!(buf, "#{b:03o}");
            start = i + 1;
        }
    }
    buf.extend_from_slice(&bytes[start..]);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Auth, Credentials};

    const STAMP: [u8; STAMP_LEN] = *b"2026-03-05 09:08:07.000001";

    fn rec<'a>(body: &'a str, meta: Option<&'a SyslogMeta<'a>>) -> Record<'a> {
        Record {
            app_id: "app",
            module: "",
            host: None,
            body,
            auth: Auth::None,
            syslog: meta,
        }
    }

    fn line(format: LineFormat, r: &Record<'_>) -> String {
        let mut buf = Vec::new();
        push(&mut buf, format, &STAMP, "web01", r);
        String::from_utf8(buf).unwrap()
    }

    fn meta() -> SyslogMeta<'static> {
        SyslogMeta {
            facility: 4,
            severity: 6,
            timestamp: None,
            app_name: Some("sshd"),
            procid: Some("812"),
            msgid: None,
            structured_data: "",
            cred: None,
        }
    }

    #[test]
    fn format_names() {
        for f in [LineFormat::Loghog, LineFormat::Rfc3164, LineFormat::Rfc5424] {
            assert_eq!(LineFormat::parse(f.as_str()), Some(f));
        }
        assert_eq!(LineFormat::parse("RFC3164"), Some(LineFormat::Rfc3164));
        assert_eq!(LineFormat::parse("json"), None);
    }

    #[test]
    fn loghog_lines() {
        assert_eq!(
            line(LineFormat::Loghog, &rec("a\nb", None)),
            "2026-03-05 09:08:07.000001 - web01 - a\nb\n"
        );
        let m = meta();
        assert_eq!(
            line(LineFormat::Loghog, &rec("Accepted key", Some(&m))),
            "2026-03-05 09:08:07.000001 - web01 - sshd[812]: Accepted key\n"
        );
    }

    #[test]
    fn rfc3164_lines() {
        let m = meta();
        assert_eq!(
            line(LineFormat::Rfc3164, &rec("Accepted key", Some(&m))),
            "Mar  5 09:08:07 web01 sshd[812]: Accepted key\n"
        );
        // The kernel's pid when the message names none; control characters
        // escaped so a message stays one line.
        let m = SyslogMeta {
            procid: None,
            cred: Some(Credentials {
                pid: 42,
                uid: 0,
                gid: 0,
            }),
            ..meta()
        };
        assert_eq!(
            line(LineFormat::Rfc3164, &rec("x\ny", Some(&m))),
            "Mar  5 09:08:07 web01 sshd[42]: x#012y\n"
        );
        assert_eq!(
            line(LineFormat::Rfc3164, &rec("hi", None)),
            "Mar  5 09:08:07 web01 app: hi\n"
        );
        // A reported timestamp wins over the receipt time.
        let ts = Local
            .with_ymd_and_hms(2025, 12, 24, 18, 0, 1)
            .unwrap()
            .fixed_offset();
        let m = SyslogMeta {
            timestamp: Some(ts),
            app_name: Some("a very long tag with spaces"),
            ..meta()
        };
        assert_eq!(
            line(LineFormat::Rfc3164, &rec("m", Some(&m))),
            "Dec 24 18:00:01 web01 a_very_long_tag_with_spaces[812]: m\n"
        );
    }

    use chrono::TimeZone as _;

    /// The per-second caches write what chrono writes, across seconds,
    /// offsets and fractions.
    #[test]
    fn cached_times_match_chrono() {
        for text in [
            "2026-03-05T09:08:07.5+01:00",
            "2026-03-05T09:08:07.000001+01:00",
            "2026-03-05T08:08:07.25Z",
            "2026-03-05T09:08:08-05:30",
            "1999-12-31T23:59:59.999999999Z",
        ] {
            let ts = DateTime::parse_from_rfc3339(text).unwrap();
            for _ in 0..2 {
                let mut a = Vec::new();
                push_5424_time(&mut a, &ts);
                let b = ts.format("%Y-%m-%dT%H:%M:%S%.6f%:z").to_string();
                assert_eq!(String::from_utf8(a).unwrap(), b, "{text}");
                let mut a = Vec::new();
                push_3164_time(&mut a, &ts);
                let b = ts
                    .with_timezone(&Local)
                    .format("%b %e %H:%M:%S")
                    .to_string();
                assert_eq!(String::from_utf8(a).unwrap(), b, "{text}");
            }
        }
    }

    #[test]
    fn rfc5424_lines() {
        let ts = DateTime::parse_from_rfc3339("2026-03-05T09:08:07.5+01:00").unwrap();
        let m = SyslogMeta {
            timestamp: Some(ts),
            msgid: Some("ID47"),
            structured_data: r#"[ex@32473 a="b\"c"]"#,
            cred: Some(Credentials {
                pid: 42,
                uid: 1000,
                gid: 100,
            }),
            ..meta()
        };
        assert_eq!(
            line(LineFormat::Rfc5424, &rec("hello", Some(&m))),
            "<38>1 2026-03-05T09:08:07.500000+01:00 web01 sshd 812 ID47 [ex@32473 a=\"b\\\"c\"][loghogd@32473 pid=\"42\" uid=\"1000\" gid=\"100\"] hello\n"
        );
        let m = SyslogMeta {
            timestamp: Some(ts),
            app_name: None,
            procid: None,
            ..meta()
        };
        assert_eq!(
            line(LineFormat::Rfc5424, &rec("", Some(&m))),
            "<38>1 2026-03-05T09:08:07.500000+01:00 web01 - - - -\n"
        );
        let l = line(LineFormat::Rfc5424, &rec("a\nb", None));
        assert!(l.starts_with("<14>1 "), "{l}");
        assert!(l.ends_with(" web01 app - - - a#012b\n"), "{l}");
    }
}
