//! A fast path for decoding the messages clients actually send: one flat
//! JSON object of plain strings and integers. It declines (returns `None`)
//! on anything else — an escape, a float, a nested value, a duplicate or a
//! missing field — and the caller then decodes with serde_json, so its
//! answers are serde_json's by construction (a differential test checks it).
//!
//! Profiling showed generic JSON decoding at ~45% of the daemon's CPU; this
//! path validates UTF-8 once per payload instead of once per string.

use std::borrow::Cow;

use super::{Message, VERSION};

/// Decodes `payload` if it is a plain flat object; `None` means "use serde".
pub(super) fn decode(payload: &[u8]) -> Option<Message<'_>> {
    let text = std::str::from_utf8(payload).ok()?;
    let mut p = Parser { s: text, i: 0 };
    let mut version = None;
    let mut app_id = None;
    let mut module = None;
    let mut stamp = None;
    let mut nsecs = None;
    let mut body = None;
    let mut hostname = None;
    let mut signature = None;
    p.ws();
    p.eat(b'{')?;
    p.ws();
    if p.peek()? == b'}' {
        return None;
    }
    loop {
        p.ws();
        p.eat(b'"')?;
        let key = p.key()?;
        p.ws();
        p.eat(b':')?;
        p.ws();
        let value = p.value()?;
        match key {
            Field::Version => put_int(value, &mut version)?,
            Field::AppId => put_str(value, &mut app_id)?,
            Field::Module => put_str(value, &mut module)?,
            Field::Stamp => put_int(value, &mut stamp)?,
            Field::Nsecs => put_int(value, &mut nsecs)?,
            Field::Body => put_str(value, &mut body)?,
            Field::Hostname => put_str(value, &mut hostname)?,
            Field::Signature => put_str(value, &mut signature)?,
            Field::Other => {}
        }
        p.ws();
        match p.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    p.ws();
    if p.i != p.s.len() || version? != VERSION as i64 {
        return None;
    }
    Some(Message {
        version: VERSION,
        app_id: Cow::Borrowed(app_id?),
        module: Cow::Borrowed(module?),
        stamp: stamp?,
        nsecs: nsecs?,
        body: Cow::Borrowed(body?),
        hostname: hostname.map(Cow::Borrowed),
        signature: signature.map(Cow::Borrowed),
    })
}

/// Offset of the first byte that ends a plain string: `"`, `\\` or a
/// control character.
fn special_at(s: &[u8]) -> Option<usize> {
    fn special(c: u8) -> bool {
        (c == b'"') | (c == b'\\') | (c < 0x20)
    }
    // Names, hosts and modules are short: a plain loop ends them before a
    // SIMD search would have set up.
    let head = s.len().min(SHORT);
    if let Some(at) = s[..head].iter().position(|&c| special(c)) {
        return Some(at);
    }
    // Bodies: `memchr2` finds the quote or backslash with SIMD, and the
    // control-character check is a minimum the compiler vectorizes.
    let rest = &s[head..];
    let end = memchr::memchr2(b'"', b'\\', rest)?;
    if rest[..end].iter().copied().min().unwrap_or(0x20) < 0x20 {
        return rest.iter().position(|&c| c < 0x20).map(|at| head + at);
    }
    Some(head + end)
}

/// Strings up to this long are scanned byte by byte.
const SHORT: usize = 24;

/// The object keys the daemon reads.
#[derive(Clone, Copy)]
enum Field {
    Version,
    AppId,
    Module,
    Stamp,
    Nsecs,
    Body,
    Hostname,
    Signature,
    /// Any other key (ignored, as serde ignores unknown fields).
    Other,
}

/// Fills an empty string slot; a second value or another type declines.
fn put_str<'a>(value: Value<'a>, slot: &mut Option<&'a str>) -> Option<()> {
    match (slot.is_none(), value) {
        (true, Value::Str(v)) => {
            *slot = Some(v);
            Some(())
        }
        _ => None,
    }
}

/// Fills an empty integer slot; a second value or another type declines.
fn put_int(value: Value<'_>, slot: &mut Option<i64>) -> Option<()> {
    match (slot.is_none(), value) {
        (true, Value::Int(v)) => {
            *slot = Some(v);
            Some(())
        }
        _ => None,
    }
}

#[derive(Clone, Copy)]
enum Value<'a> {
    Str(&'a str),
    Int(i64),
}

struct Parser<'a> {
    s: &'a str,
    i: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<u8> {
        self.s.as_bytes().get(self.i).copied()
    }

    fn next(&mut self) -> Option<u8> {
        let c = self.peek()?;
        self.i += 1;
        Some(c)
    }

    fn eat(&mut self, c: u8) -> Option<()> {
        (self.next()? == c).then_some(())
    }

    /// JSON whitespace: space, tab, newline, carriage return.
    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    /// The key of a member whose opening quote was eaten. Known names are
    /// matched in place together with their closing quote, so the usual key
    /// costs one compare; anything else is read as a string.
    fn key(&mut self) -> Option<Field> {
        let rest = self.s.as_bytes().get(self.i..)?;
        let (field, len) = match rest.first()? {
            b'v' if rest.starts_with(b"version\"") => (Field::Version, 8),
            b'a' if rest.starts_with(b"app_id\"") => (Field::AppId, 7),
            b'm' if rest.starts_with(b"module\"") => (Field::Module, 7),
            b's' if rest.starts_with(b"stamp\"") => (Field::Stamp, 6),
            b's' if rest.starts_with(b"signature\"") => (Field::Signature, 10),
            b'n' if rest.starts_with(b"nsecs\"") => (Field::Nsecs, 6),
            b'b' if rest.starts_with(b"body\"") => (Field::Body, 5),
            b'h' if rest.starts_with(b"hostname\"") => (Field::Hostname, 9),
            _ => {
                self.string()?;
                return Some(Field::Other);
            }
        };
        self.i += len;
        Some(field)
    }

    /// The rest of a string whose opening quote was eaten; declines escapes
    /// and the control characters JSON forbids inside strings.
    fn string(&mut self) -> Option<&'a str> {
        let start = self.i;
        let len = special_at(self.s.as_bytes().get(start..)?)?;
        self.i = start + len;
        if self.peek()? != b'"' {
            return None; // an escape or a control character
        }
        // A quote byte never occurs inside a UTF-8 sequence, so these are
        // char boundaries.
        let out = self.s.get(start..self.i)?;
        self.i += 1;
        Some(out)
    }

    /// A plain string or an integer (no fraction, exponent or leading zero).
    fn value(&mut self) -> Option<Value<'a>> {
        match self.peek()? {
            b'"' => {
                self.i += 1;
                self.string().map(Value::Str)
            }
            b'-' | b'0'..=b'9' => {
                let neg = self.peek()? == b'-';
                if neg {
                    self.i += 1;
                }
                let start = self.i;
                let mut n: i64 = 0;
                while let Some(c @ b'0'..=b'9') = self.peek() {
                    n = n.checked_mul(10)?.checked_sub(i64::from(c - b'0'))?;
                    self.i += 1;
                }
                let digits = self.i - start;
                if digits == 0 || (digits > 1 && self.s.as_bytes()[start] == b'0') {
                    return None;
                }
                if let Some(b'.' | b'e' | b'E') = self.peek() {
                    return None;
                }
                // Accumulated negatively so i64::MIN fits.
                Some(Value::Int(if neg { n } else { n.checked_neg()? }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn serde(p: &[u8]) -> Option<Message<'_>> {
        let m: Message<'_> = serde_json::from_slice(p).ok()?;
        (m.version == VERSION).then_some(m)
    }

    /// Every input the fast path accepts, serde accepts with the same value.
    fn check(p: &[u8]) -> bool {
        match decode(p) {
            Some(fast) => {
                assert_eq!(
                    Some(&fast),
                    serde(p).as_ref(),
                    "{:?}",
                    String::from_utf8_lossy(p)
                );
                true
            }
            None => false,
        }
    }

    const GOOD: &str = r#"{"version": 1, "app_id": "app", "module": "web.x", "stamp": 1358363502, "nsecs": 12043000, "hostname": "h1", "body": "GET /index.html 200 0.003s"}"#;

    #[test]
    fn accepts_the_python_client_shape() {
        assert!(check(GOOD.as_bytes()));
        assert!(check(br#"{"body":"b","nsecs":-5,"stamp":0,"module":"","app_id":"a","version":1,"signature":"00ff","extra":"x","n":7}"#));
        assert!(check(b" {\n\"version\":1,\"app_id\":\"a\",\"module\":\"\",\"stamp\":-9223372036854775808,\"nsecs\":9223372036854775807,\"body\":\"\"} \r\n"));
    }

    #[test]
    fn declines_what_it_does_not_handle() {
        for p in [
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "caf\u00e9"}"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 1.5, "nsecs": 1, "body": "x"}"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "x", "hostname": null}"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "x", "e": [1]}"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "x", "body": "y"}"#,
            r#"{"version": 2, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "x"}"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 01, "nsecs": 1, "body": "x"}"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 99999999999999999999, "nsecs": 1, "body": "x"}"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1}"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "x"} x"#,
            r#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "x",}"#,
            "{}",
            "",
        ] {
            assert!(decode(p.as_bytes()).is_none(), "{p}");
        }
        assert!(decode(b"{\"version\":1,\"app_id\":\"a\",\"module\":\"\",\"stamp\":1,\"nsecs\":1,\"body\":\"tab\there\"}").is_none());
    }

    /// Differential check on many mutations of valid messages: whatever the
    /// fast path accepts must be exactly what serde_json decodes.
    #[test]
    fn agrees_with_serde_on_mutations() {
        let base = GOOD.as_bytes();
        let alphabet = b"{}[]\":,-0123456789.eE \\\x00\x1fabcnulltrue\xc3\xa9\xff";
        let mut seed: u64 = 0x9e37_79b9_7f4a_7c15;
        let mut rnd = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut accepted = 0;
        for _ in 0..200_000 {
            let mut p = base.to_vec();
            for _ in 0..(rnd() % 3 + 1) {
                let at = (rnd() as usize) % (p.len() + 1);
                match rnd() % 3 {
                    0 if at < p.len() => {
                        p.remove(at);
                    }
                    1 => p.insert(at, alphabet[(rnd() as usize) % alphabet.len()]),
                    _ if at < p.len() => p[at] = alphabet[(rnd() as usize) % alphabet.len()],
                    _ => {}
                }
            }
            if check(&p) {
                accepted += 1;
            }
        }
        assert!(
            accepted > 1000,
            "too few mutations exercised the fast path: {accepted}"
        );
    }
}
