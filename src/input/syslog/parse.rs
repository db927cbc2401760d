//! One syslog message (the bytes a framer delimited, or a datagram) →
//! [`Parsed`]: RFC 5424 and the RFC 3164 / BSD forms seen in practice,
//! through `syslog_loose` (what Vector uses; it never fails and falls back
//! to the whole line as the message) behind our own types.
//!
//! Decisions (documented in loghogd.conf(5)):
//! - bytes that are not UTF-8 are replaced by U+FFFD (the line stays
//!   valid UTF-8 for every reader of the file);
//! - trailing LF, CR and NUL are trimmed, a BOM before the MSG is dropped;
//! - other control characters in the MSG are written as `#ooo` (rsyslog's
//!   escape on receipt), so one message is always one line;
//! - no PRI means user.notice (RFC 3164 §4.3.3); an invalid PRI leaves the
//!   whole line as the message, also user.notice;
//! - a timestamp without a year takes the receiver's (the previous year
//!   for a date more than a month ahead: December messages read in
//!   January); one without a zone is read in the receiver's `TZ`; the
//!   NILVALUE `-` means "no timestamp" (the receipt time is used).

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, FixedOffset, Local};
use syslog_loose::{Message, ProcId, Protocol, Variant};

use super::fast;
use crate::output::file::format::push_escaped;
use crate::record::SyslogMeta;

/// No PRI: user.notice (RFC 3164 §4.3.3).
pub(super) const DEFAULT_FACILITY: u8 = 1;
pub(super) const DEFAULT_SEVERITY: u8 = 5;

/// A parsed message; borrows the input and the parser's scratch buffers.
#[derive(Debug)]
pub(crate) struct Parsed<'a> {
    /// The header fields.
    pub(crate) meta: SyslogMeta<'a>,
    /// HOSTNAME, when the message names one.
    pub(crate) host: Option<&'a str>,
    /// The MSG, escaped.
    pub(crate) body: &'a str,
}

/// Reusable buffers for parsing, one per reader.
#[derive(Debug, Default)]
pub(crate) struct SyslogParser {
    /// The input made valid UTF-8, when it was not.
    text: String,
    /// Structured data, re-serialized.
    sd: String,
    /// The MSG with its control characters escaped, when it has any.
    body: Vec<u8>,
    /// The PROCID as text, when the crate parsed it as a number.
    pid: String,
}

// === impl SyslogParser ===

impl SyslogParser {
    /// Parses one message. Never fails: what cannot be read as a header is
    /// the message.
    pub(crate) fn parse<'a>(&'a mut self, raw: &'a [u8]) -> Parsed<'a> {
        let SyslogParser {
            text: lossy,
            sd,
            body: escaped,
            pid,
        } = self;
        let raw = trim_end(raw);
        let text: &'a str = match std::str::from_utf8(raw) {
            Ok(t) => t,
            Err(_) => {
                lossy.clear();
                lossy.push_str(&String::from_utf8_lossy(raw));
                lossy
            }
        };
        // The common, well-formed RFC 5424 message without a copy or a
        // nom parser; anything else (or anything unusual) takes the crate.
        let header = match fast::parse(text.trim()) {
            Some(h) => h,
            None => slow(text, sd, pid),
        };
        let msg = header.msg.strip_prefix('\u{feff}').unwrap_or(header.msg);
        let body: &'a str = if needs_escape(msg.as_bytes()) {
            escaped.clear();
            push_escaped(escaped, msg);
            // Escaping replaces ASCII bytes by ASCII: still UTF-8.
            std::str::from_utf8(escaped).unwrap_or("")
        } else {
            msg
        };
        Parsed {
            meta: SyslogMeta {
                facility: header.facility,
                severity: header.severity,
                timestamp: header.timestamp,
                app_name: header.app.filter(|a| !a.is_empty()),
                procid: header.procid,
                msgid: header.msgid,
                structured_data: header.sd,
                cred: None,
            },
            host: header.host.filter(|h| !h.is_empty() && *h != "-"),
            body,
        }
    }
}

/// The header fields and the MSG, as either path reads them.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Header<'a> {
    pub(super) facility: u8,
    pub(super) severity: u8,
    pub(super) timestamp: Option<DateTime<FixedOffset>>,
    pub(super) host: Option<&'a str>,
    pub(super) app: Option<&'a str>,
    pub(super) procid: Option<&'a str>,
    pub(super) msgid: Option<&'a str>,
    /// Structured data as `[id name="value"...]...`, `""` for none.
    pub(super) sd: &'a str,
    /// The MSG, BOM not yet removed.
    pub(super) msg: &'a str,
}

/// The crate's parse, re-serializing what it does not hand out as text
/// (structured data, a numeric PROCID) into `sd` and `pid`.
pub(super) fn slow<'a>(text: &'a str, sd: &'a mut String, pid: &'a mut String) -> Header<'a> {
    let msg =
        syslog_loose::parse_message_with_year_tz(text, year_for, None::<Local>, Variant::Either);
    sd.clear();
    for el in &msg.structured_data {
        let _ = write!(sd, "[{}", el.id);
        for (name, value) in &el.params {
            // Values are kept as sent, escapes included.
            let _ = write!(sd, " {name}=\"{value}\"");
        }
        sd.push(']');
    }
    pid.clear();
    let Message {
        facility,
        severity,
        timestamp,
        mut hostname,
        mut appname,
        procid,
        msgid,
        protocol,
        msg,
        ..
    } = msg;
    // `<PRI>Mmm dd hh:mm:ss tag: msg` (syslog(3) and logger(1) on a
    // local socket: no host name) reads to the crate as a host called
    // `tag`; a "host" right before the colon is the tag.
    if let (Protocol::RFC3164, Some(h), None) = (&protocol, hostname, appname) {
        let end = (h.as_ptr() as usize).wrapping_sub(text.as_ptr() as usize) + h.len();
        if text.as_bytes().get(end) == Some(&b':') {
            appname = Some(h);
            hostname = None;
        }
    }
    let procid: Option<&'a str> = match procid {
        Some(ProcId::PID(p)) => {
            let _ = write!(pid, "{p}");
            Some(pid.as_str())
        }
        Some(ProcId::Name(n)) => Some(n),
        None => None,
    };
    Header {
        facility: facility.map_or(DEFAULT_FACILITY, |f| f as u8),
        severity: severity.map_or(DEFAULT_SEVERITY, |s| s as u8),
        timestamp,
        host: hostname,
        app: appname,
        procid,
        msgid,
        sd: sd.as_str(),
        msg,
    }
}

/// Whether `bytes` hold a control character (but TAB) to escape. Checked
/// in blocks without an early exit, which the compiler vectorizes: a
/// byte-at-a-time scan of every body was a tenth of the parse.
fn needs_escape(bytes: &[u8]) -> bool {
    let bad = |b: u8| (b < 0x20 && b != b'\t') | (b == 0x7f);
    let mut chunks = bytes.chunks_exact(32);
    for c in &mut chunks {
        if c.iter().fold(false, |acc, &b| acc | bad(b)) {
            return true;
        }
    }
    chunks.remainder().iter().any(|&b| bad(b))
}

/// Drops the LF, CR and NUL bytes senders leave at the end.
pub(super) fn trim_end(raw: &[u8]) -> &[u8] {
    let end = raw
        .iter()
        .rposition(|b| !matches!(b, b'\n' | b'\r' | 0))
        .map_or(0, |i| i + 1);
    &raw[..end]
}

/// The year of a date sent without one: this year, or the last one when
/// the date would be more than a month in the future.
fn year_for(date: syslog_loose::IncompleteDate) -> i32 {
    let now = Local::now();
    let (month, ..) = date;
    if month > now.month() + 1 {
        now.year() - 1
    } else {
        now.year()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{Offset, TimeZone, Timelike};

    fn parse(raw: &[u8]) -> (SyslogMeta<'static>, Option<String>, String) {
        let mut p = SyslogParser::default();
        let r = p.parse(raw);
        // Leak the scratch for 'static convenience in tests.
        let meta = SyslogMeta {
            app_name: r.meta.app_name.map(|s| &*s.to_owned().leak()),
            procid: r.meta.procid.map(|s| &*s.to_owned().leak()),
            msgid: r.meta.msgid.map(|s| &*s.to_owned().leak()),
            structured_data: r.meta.structured_data.to_owned().leak(),
            ..r.meta.clone()
        };
        (meta, r.host.map(str::to_owned), r.body.to_owned())
    }

    #[test]
    fn rfc5424_every_field() {
        let (m, host, body) = parse(
            "<165>1 2003-10-11T22:14:15.003000+02:00 mymachine.example.com evntslog 1234 ID47 \
             [exampleSDID@32473 iut=\"3\" eventSource=\"App\\\"lication\" eventID=\"1011\"][x@1 a=\"\\]\"] \u{feff}An application event\n"
                .as_bytes(),
        );
        assert_eq!((m.facility, m.severity), (20, 5));
        let ts = m.timestamp.unwrap();
        assert_eq!(ts.offset().local_minus_utc(), 7200);
        assert_eq!(ts.nanosecond(), 3_000_000);
        assert_eq!(host.as_deref(), Some("mymachine.example.com"));
        assert_eq!(m.app_name, Some("evntslog"));
        assert_eq!(m.procid, Some("1234"));
        assert_eq!(m.msgid, Some("ID47"));
        assert_eq!(
            m.structured_data,
            "[exampleSDID@32473 iut=\"3\" eventSource=\"App\\\"lication\" eventID=\"1011\"][x@1 a=\"\\]\"]"
        );
        assert_eq!(body, "An application event");
    }

    #[test]
    fn rfc5424_nil_values() {
        let (m, host, body) = parse(b"<14>1 - - - - - - hello");
        assert!(m.timestamp.is_none());
        assert_eq!(host, None);
        assert_eq!((m.app_name, m.procid, m.msgid), (None, None, None));
        assert_eq!(m.structured_data, "");
        assert_eq!(body, "hello");
    }

    #[test]
    fn rfc3164_forms() {
        // Network form: host and tag[pid].
        let (m, host, body) = parse(b"<38>Feb  5 17:32:18 web01 sshd[812]: Accepted publickey\n");
        assert_eq!((m.facility, m.severity), (4, 6));
        assert_eq!(host.as_deref(), Some("web01"));
        assert_eq!((m.app_name, m.procid), (Some("sshd"), Some("812")));
        assert_eq!(body, "Accepted publickey");
        let ts = m.timestamp.unwrap();
        assert_eq!((ts.month(), ts.day(), ts.hour()), (2, 5, 17));
        // The year and zone are the receiver's.
        let local = Local
            .from_local_datetime(&ts.naive_local())
            .earliest()
            .unwrap();
        assert_eq!(local.offset().fix(), *ts.offset());
        // /dev/log form (glibc syslog(3)): no host name.
        let (m, host, body) = parse(b"<13>Feb  5 17:32:18 cron[99]: job done\0");
        assert_eq!(host, None);
        assert_eq!((m.app_name, m.procid), (Some("cron"), Some("99")));
        assert_eq!(body, "job done");
        // logger(1) on a local socket: no host, a tag without a pid.
        let (m, host, body) = parse(b"<38>Dec  2 13:06:11 mytag: hello unix");
        assert_eq!((host, m.app_name, m.procid), (None, Some("mytag"), None));
        assert_eq!(body, "hello unix");
    }

    #[test]
    fn no_pri_bad_pri_and_bad_bytes() {
        let (m, _, body) = parse(b"just a line");
        assert_eq!((m.facility, m.severity), (1, 5));
        assert_eq!(body, "just a line");
        let (m, _, body) = parse(b"<999>Feb  5 17:32:18 host app: x");
        assert_eq!((m.facility, m.severity), (1, 5));
        assert!(body.contains("<999>"), "{body}");
        let (_, _, body) = parse(b"<13>1 - h a - - - caf\xe9 \x01 ok\ttab");
        assert_eq!(body, "caf\u{fffd} #001 ok\ttab");
        // NUL inside the message is escaped, not a cut.
        let (_, _, body) = parse(b"<13>1 - h a - - - a\0b");
        assert_eq!(body, "a#000b");
    }

    #[test]
    fn year_rolls_back_for_december_in_january() {
        let now = Local::now();
        assert_eq!(year_for((now.month(), 1, 0, 0, 0)), now.year());
        if now.month() < 11 {
            assert_eq!(year_for((12, 31, 0, 0, 0)), now.year() - 1);
        }
    }

    /// Differential check against the strict RFC 5424 parser: for every
    /// message it accepts, ours reads the same fields.
    #[test]
    fn agrees_with_syslog_rfc5424() {
        let cases = [
            "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] An application event",
            "<34>1 2003-10-11T22:14:15.003Z mymachine.example.com su - ID47 - 'su root' failed",
            "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
            "<13>1 - - - - - -",
            "<14>1 2026-01-01T00:00:00+00:00 h app 1 m [a@1 k=\"v\\\\w\"][b@2] text with [brackets]",
            "<191>1 2026-06-30T23:59:59.999999+05:30 host-1 app.name proc-id msg-id - m",
        ];
        for case in cases {
            let strict = syslog_rfc5424::parse_message(case).unwrap();
            let mut p = SyslogParser::default();
            let ours = p.parse(case.as_bytes());
            assert_eq!(ours.meta.severity, strict.severity as u8, "{case}");
            assert_eq!(ours.meta.facility, strict.facility as u8, "{case}");
            assert_eq!(ours.host, strict.hostname.as_deref(), "{case}");
            assert_eq!(ours.meta.app_name, strict.appname.as_deref(), "{case}");
            assert_eq!(ours.meta.msgid, strict.msgid.as_deref(), "{case}");
            let procid = strict.procid.as_ref().map(|p| match p {
                syslog_rfc5424::message::ProcId::PID(n) => n.to_string(),
                syslog_rfc5424::message::ProcId::Name(s) => s.clone(),
            });
            assert_eq!(ours.meta.procid.map(str::to_owned), procid, "{case}");
            assert_eq!(
                ours.meta.timestamp.map(|t| t.timestamp()),
                strict.timestamp,
                "{case}"
            );
            assert_eq!(
                ours.meta.timestamp.map(|t| t.timestamp_subsec_nanos()),
                strict.timestamp_nanos,
                "{case}"
            );
            assert_eq!(ours.body, strict.msg, "{case}");
            // Same elements and (unescaped) values.
            let mut mine = SyslogParser::default();
            let reparsed = syslog_loose::parse_message(case, Variant::RFC5424);
            let n: usize = reparsed.structured_data.len();
            assert_eq!(n, strict.sd.len(), "{case}");
            for el in &reparsed.structured_data {
                let strict_el = strict.sd.find_sdid(el.id).unwrap();
                for (k, v) in el.params() {
                    assert_eq!(
                        strict_el.get(*k).map(String::as_str),
                        Some(v.as_str()),
                        "{case}"
                    );
                }
            }
            let _ = mine.parse(b"");
        }
    }

    /// Never panics, whatever the bytes (a cheap stand-in for the fuzzer:
    /// prefixes of every case and some noise).
    #[test]
    fn never_panics_on_prefixes_and_noise() {
        let seeds: [&[u8]; 4] = [
            b"<165>1 2003-10-11T22:14:15.003Z host app 12 ID [a@1 b=\"c\\\"d\"] \xef\xbb\xbfmsg",
            b"<38>Feb  5 17:32:18 web01 sshd[812]: Accepted",
            b"<\xff>\x00\x00[[[\"\"\\",
            b"<7>1 9999-99-99T99:99:99Z - - - - [",
        ];
        let mut p = SyslogParser::default();
        for s in seeds {
            for i in 0..=s.len() {
                let _ = p.parse(&s[..i]);
            }
        }
        let mut x: u32 = 1;
        for _ in 0..2000 {
            let mut buf = Vec::new();
            for _ in 0..(x % 64) {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                let alphabet = b"<>1- []\"\\=:abc 0123456789TZ+\n\0\xff";
                buf.push(alphabet[x as usize % alphabet.len()]);
            }
            let _ = p.parse(&buf);
        }
    }
}
