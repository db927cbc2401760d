//! The zero-copy fast path for the common RFC 5424 message: `<PRI>1`, the
//! five header fields as single-space separated tokens, `-` or canonical
//! structured data (`[id name="value" ...]`, no escapes), then the MSG.
//! Every field borrows the input; nothing is allocated.
//!
//! It answers `None` for anything it is not sure about (extra spaces,
//! escapes, odd tokens, RFC 3164), and the caller takes `syslog_loose`
//! instead; the differential test below checks that whatever it accepts it
//! reads exactly as `syslog_loose` does (profiled: the crate's parser was
//! 40% of the daemon's CPU on the 4-connection syslog benchmark).

use chrono::DateTime;

use super::parse::Header;

/// Parses `t` (already trimmed as the crate trims it), or `None`.
pub(super) fn parse(t: &str) -> Option<Header<'_>> {
    let rest = t.strip_prefix('<')?;
    let close = rest.bytes().take(4).position(|c| c == b'>')?;
    let digits = &rest[..close];
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let pri: u8 = digits.parse().ok().filter(|p| *p <= 191)?;
    let rest = rest[close + 1..].strip_prefix("1 ")?;
    let (ts, rest) = rest.split_once(' ')?;
    let timestamp = match ts {
        "-" => None,
        ts => Some(DateTime::parse_from_rfc3339(ts).ok()?),
    };
    let (host, rest) = field(rest)?;
    let (app, rest) = field(rest)?;
    let (procid, rest) = field(rest)?;
    if let Some(p) = procid {
        // The crate turns a number into an i32 and back: only a number it
        // writes back the same way keeps the borrowed text right.
        if p.parse::<i32>().is_ok()
            && (p.starts_with('+') || p.starts_with("-0") || (p.starts_with('0') && p.len() > 1))
        {
            return None;
        }
    }
    let (msgid, rest) = field(rest)?;
    let sd_len = structured_data(rest)?;
    let (sd, rest) = rest.split_at(sd_len);
    let msg = match rest {
        "" => "",
        r => r.strip_prefix(' ')?,
    };
    if msg.starts_with([' ', '\t']) {
        return None;
    }
    Some(Header {
        facility: pri / 8,
        severity: pri % 8,
        timestamp,
        host,
        app,
        procid,
        msgid,
        sd: if sd == "-" { "" } else { sd },
        msg,
    })
}

/// One header token and what follows its space: printable ASCII, `-` for
/// none. Colons at the end (the crate's header/message separator) are left
/// to the crate.
fn field(s: &str) -> Option<(Option<&str>, &str)> {
    let (tok, rest) = s.split_once(' ')?;
    if tok.is_empty() || !tok.bytes().all(|c| c.is_ascii_graphic()) || tok.ends_with(':') {
        return None;
    }
    Some(((tok != "-").then_some(tok), rest))
}

/// Length of the structured data at the start of `s`: `-`, or canonical
/// elements back to back; `None` for anything else.
fn structured_data(s: &str) -> Option<usize> {
    let b = s.as_bytes();
    match b.first()? {
        b'-' => return Some(1),
        b'[' => {}
        _ => return None,
    }
    let mut i = 0;
    while b.get(i) == Some(&b'[') {
        i += 1;
        let id = i;
        while i < b.len() && b[i] != b' ' && b[i] != b']' {
            if !b[i].is_ascii_graphic() || b[i] == b'=' || b[i] == b'"' {
                return None;
            }
            i += 1;
        }
        if i == id {
            return None;
        }
        while b.get(i) == Some(&b' ') {
            i += 1;
            let name = i;
            while i < b.len() && b[i] != b'=' {
                if !b[i].is_ascii_graphic() || b[i] == b']' || b[i] == b'"' {
                    return None;
                }
                i += 1;
            }
            if i == name || b.get(i + 1) != Some(&b'"') {
                return None;
            }
            i += 2;
            while i < b.len() && b[i] != b'"' {
                if b[i] == b'\\' || b[i] == b']' {
                    return None;
                }
                i += 1;
            }
            if i == b.len() {
                return None;
            }
            i += 1;
        }
        if b.get(i) != Some(&b']') {
            return None;
        }
        i += 1;
    }
    Some(i)
}

#[cfg(test)]
mod tests {
    use super::super::parse::slow;
    use super::*;

    const SEEDS: &[&str] = &[
        "<134>1 2026-11-21T07:00:00.000000Z benchhost bench - - - seq=0:1 abc",
        "<165>1 2003-10-11T22:14:15.003Z mymachine.example.com evntslog - ID47 [exampleSDID@32473 iut=\"3\" eventSource=\"Application\" eventID=\"1011\"] An application event",
        "<165>1 2003-08-24T05:14:15.000003-07:00 192.0.2.1 myproc 8710 - - %% It's time to make the do-nuts.",
        "<13>1 - - - - - -",
        "<13>1 2026-12-02T13:06:11.795315+00:00 vm app - ID1 [timeQuality tzKnown=\"1\" isSynced=\"0\"][zoo@123 tiger=\"hungry\"] x",
        "<0>1 - h a 1 m [a@1][b@2 k=\"\"] text [with] brackets",
        "<191>1 2026-06-30T23:59:59.999999+05:30 host-1 app.name proc-id msg-id - m",
        "<13>1 - h a - - - \u{feff}bom and ünïcödé",
        "<14>1 - [::1] a -12 - - ipv6 host",
    ];

    /// Whatever the fast path accepts, it reads as the crate does.
    fn agree(t: &str) -> bool {
        let t = t.trim();
        let Some(fast) = parse(t) else {
            return false;
        };
        let (mut sd, mut pid) = (String::new(), String::new());
        assert_eq!(fast, slow(t, &mut sd, &mut pid), "{t:?}");
        true
    }

    #[test]
    fn takes_the_common_forms() {
        for s in SEEDS {
            assert!(agree(s), "the fast path refused {s:?}");
        }
    }

    #[test]
    fn leaves_the_unusual_to_the_crate() {
        for s in [
            "<13>Feb  5 17:32:18 h app: rfc3164",
            "<13>1  - h a - - - two spaces",
            "<13>1 - h a - - [x@1 k=\"a\\\"b\"] escape",
            "<13>1 - h a 007 - - leading zeros",
            "<13>1 - h: a - - - colon",
            "<13>2 - h a - - - version 2",
            "<192>1 - h a - - - pri",
            "<13>1 - h a - - -  msg starts with a space",
            "no pri",
        ] {
            assert!(parse(s).is_none(), "{s:?}");
        }
    }

    /// Mutations of the seeds (a cheap stand-in for the fuzzer): replaced,
    /// inserted and deleted bytes from an alphabet of the characters that
    /// matter to the grammar.
    #[test]
    fn agrees_with_the_crate_on_mutations() {
        let alphabet: Vec<char> = "<>[]=\" \t-:\\01239TZ+.@ab\u{e9}".chars().collect();
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut accepted = 0;
        for _ in 0..30_000 {
            let seed = SEEDS[next() as usize % SEEDS.len()];
            let mut chars: Vec<char> = seed.chars().collect();
            for _ in 0..(1 + next() % 3) {
                let at = next() as usize % (chars.len() + 1);
                let c = alphabet[next() as usize % alphabet.len()];
                match next() % 3 {
                    0 if at < chars.len() => chars[at] = c,
                    1 => chars.insert(at, c),
                    _ if at < chars.len() => {
                        chars.remove(at);
                    }
                    _ => chars.push(c),
                }
            }
            let s: String = chars.into_iter().collect();
            accepted += usize::from(agree(&s));
        }
        // The test means something only if many mutants took the fast path.
        assert!(
            accepted > 3_000,
            "only {accepted} mutants took the fast path"
        );
    }
}
