//! The caller's side of [`Client::send`](crate::Client::send): one message
//! becomes one wire frame (SPEC §1), built straight into the queue's buffer.
//!
//! Everything fixed for a client (`version`, `app_id`, `hostname`) is
//! escaped once into a prefix; per message only the module and body are
//! scanned, eight bytes at a time, and copied. Non-ASCII text is sent as raw
//! UTF-8 (valid JSON, and what the daemon's fast decoder takes without a
//! copy). Signing (SPEC §3) and compression are done by the caller too, but
//! outside the queue's lock.

use loghog_protocol::sign::{Key, Signed};
use loghog_protocol::{frame, HEADER_LEN};

/// Turns (module, body, time) into frames for one client.
pub(crate) struct Encoder {
    /// `{"version":1,"app_id":"…","hostname":"…","module":"` with both
    /// values already escaped.
    prefix: Vec<u8>,
    /// `app_id` as given, for the signature.
    app_id: String,
    /// Signs every message when set.
    key: Option<Key>,
    /// zlib-compresses every payload (flag 0x01).
    compress: bool,
    /// The daemon's limit applies to the payload before compression too.
    max_payload: usize,
}

// === impl Encoder ===

impl Encoder {
    pub(crate) fn new(
        app_id: &str,
        hostname: &str,
        secret: Option<&str>,
        compress: bool,
        max_payload: usize,
    ) -> Self {
        let mut prefix = Vec::with_capacity(64 + app_id.len() + hostname.len());
        prefix.extend_from_slice(br#"{"version":1,"app_id":""#);
        escape(app_id, &mut prefix);
        prefix.extend_from_slice(br#"","hostname":""#);
        escape(hostname, &mut prefix);
        prefix.extend_from_slice(br#"","module":""#);
        Encoder {
            prefix,
            app_id: app_id.to_owned(),
            key: secret.map(Key::new),
            compress,
            max_payload,
        }
    }

    /// True when frames can be encoded in place under the queue's lock
    /// (no HMAC, no zlib: a few hundred nanoseconds at most).
    pub(crate) fn is_plain(&self) -> bool {
        self.key.is_none() && !self.compress
    }

    /// Appends one whole frame to `out`. Signs and compresses as configured.
    /// Returns false, appending nothing, for a payload that would inflate
    /// past the daemon's limit (the caller checks plain frames' size).
    pub(crate) fn encode(
        &self,
        module: &str,
        body: &str,
        stamp: i64,
        nsecs: i64,
        out: &mut Vec<u8>,
    ) -> bool {
        let signature = self.key.as_ref().map(|key| {
            key.sign_fields(&Signed {
                app_id: &self.app_id,
                module,
                stamp,
                nsecs,
                body,
            })
        });
        if self.compress {
            let mut payload =
                Vec::with_capacity(self.prefix.len() + module.len() + body.len() + 96);
            self.payload(
                module,
                body,
                stamp,
                nsecs,
                signature.as_deref(),
                &mut payload,
            );
            if payload.len() > self.max_payload {
                return false;
            }
            frame::encode(&payload, true, out);
        } else {
            let start = out.len();
            out.extend_from_slice(&[0; HEADER_LEN]);
            self.payload(module, body, stamp, nsecs, signature.as_deref(), out);
            let len = (out.len() - start - HEADER_LEN) as u32;
            out[start..start + 4].copy_from_slice(&len.to_be_bytes());
        }
        true
    }

    /// Appends the JSON object.
    fn payload(
        &self,
        module: &str,
        body: &str,
        stamp: i64,
        nsecs: i64,
        signature: Option<&str>,
        out: &mut Vec<u8>,
    ) {
        out.reserve(self.prefix.len() + module.len() + body.len() + 64);
        out.extend_from_slice(&self.prefix);
        escape(module, out);
        let mut ibuf = itoa::Buffer::new();
        out.extend_from_slice(br#"","stamp":"#);
        out.extend_from_slice(ibuf.format(stamp).as_bytes());
        out.extend_from_slice(br#","nsecs":"#);
        out.extend_from_slice(ibuf.format(nsecs).as_bytes());
        out.extend_from_slice(br#","body":""#);
        escape(body, out);
        out.push(b'"');
        if let Some(sig) = signature {
            out.extend_from_slice(br#","signature":""#);
            out.extend_from_slice(sig.as_bytes());
            out.push(b'"');
        }
        out.push(b'}');
    }
}

/// Bytes a JSON string may hold as they are: everything but `"`, `\` and
/// control characters below 0x20.
const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// The bytes of `w` that need escaping, as their high bits (SWAR: a byte
/// below 0x20, or equal to `"` or `\`).
#[inline]
fn escapes(w: u64) -> u64 {
    let below = w.wrapping_sub(LO * 0x20) & !w;
    let q = w ^ (LO * u64::from(b'"'));
    let quote = q.wrapping_sub(LO) & !q;
    let b = w ^ (LO * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LO) & !b;
    (below | quote | backslash) & HI
}

/// The eight bytes of `bytes` at `i` as one word.
#[inline]
fn word(bytes: &[u8], i: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&bytes[i..i + 8]);
    u64::from_le_bytes(w)
}

/// Appends `s` as the inside of a JSON string.
///
/// Clean text (the usual body) is skipped 32 bytes per branch and copied in
/// one `extend_from_slice`; only the eight-byte word that holds a byte to
/// escape is handled byte by byte, and the scan goes on after it.
#[inline]
fn escape(s: &str, out: &mut Vec<u8>) {
    let bytes = s.as_bytes();
    out.reserve(bytes.len());
    let mut copied = 0;
    let mut i = 0;
    loop {
        while i + 32 <= bytes.len()
            && escapes(word(bytes, i))
                | escapes(word(bytes, i + 8))
                | escapes(word(bytes, i + 16))
                | escapes(word(bytes, i + 24))
                == 0
        {
            i += 32;
        }
        while i + 8 <= bytes.len() && escapes(word(bytes, i)) == 0 {
            i += 8;
        }
        if i >= bytes.len() {
            break;
        }
        out.extend_from_slice(&bytes[copied..i]);
        let end = (i + 8).min(bytes.len());
        for &b in &bytes[i..end] {
            push_escaped(b, out);
        }
        copied = end;
        i = end;
    }
    out.extend_from_slice(&bytes[copied..]);
}

/// Appends one byte, escaped if JSON needs it.
#[inline]
fn push_escaped(b: u8, out: &mut Vec<u8>) {
    match b {
        b'"' => out.extend_from_slice(b"\\\""),
        b'\\' => out.extend_from_slice(b"\\\\"),
        b'\n' => out.extend_from_slice(b"\\n"),
        b'\r' => out.extend_from_slice(b"\\r"),
        b'\t' => out.extend_from_slice(b"\\t"),
        0..=0x1f => {
            const HEX: &[u8; 16] = b"0123456789abcdef";
            out.extend_from_slice(b"\\u00");
            out.push(HEX[usize::from(b >> 4)]);
            out.push(HEX[usize::from(b & 0xf)]);
        }
        _ => out.push(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use loghog_protocol::{Header, Message};

    fn decode(frame: &[u8]) -> Message<'static> {
        let h = Header::check(frame, 1 << 20).unwrap();
        assert_eq!(h.frame_len(), frame.len());
        let mut inflater = None;
        let payload = h
            .payload(&frame[8..], 1 << 20, &mut inflater)
            .unwrap()
            .to_vec();
        let m = Message::decode(&payload).unwrap();
        Message {
            version: m.version,
            app_id: m.app_id.into_owned().into(),
            module: m.module.into_owned().into(),
            stamp: m.stamp,
            nsecs: m.nsecs,
            body: m.body.into_owned().into(),
            hostname: m.hostname.map(|h| h.into_owned().into()),
            signature: m.signature.map(|s| s.into_owned().into()),
        }
    }

    #[test]
    fn every_awkward_string_round_trips() {
        let e = Encoder::new("a\"pp", "h\\ost", None, false, 1 << 20);
        for body in [
            "",
            "plain",
            "exactly8",
            "sixteen bytes!!!",
            "quote \" in the middle of a long enough line",
            "tab\tnewline\nreturn\r bell\u{7} nul\0 esc\u{1b} unit\u{1f}",
            "café 😀 – non-ASCII is raw UTF-8",
            "\\\\ backslashes \\",
            "\u{7f} DEL needs no escape",
        ] {
            let mut out = Vec::new();
            e.encode("web.x\n", body, 17, 42, &mut out);
            let m = decode(&out);
            assert_eq!(m.body, body);
            assert_eq!(m.app_id, "a\"pp");
            assert_eq!(m.hostname.as_deref(), Some("h\\ost"));
            assert_eq!(m.module, "web.x\n");
            assert_eq!((m.stamp, m.nsecs), (17, 42));
        }
    }

    #[test]
    fn swar_check_agrees_with_the_byte_rule() {
        for b in 0..=255u8 {
            for pos in 0..8 {
                let mut w = [b'a'; 8];
                w[pos] = b;
                let want = b < 0x20 || b == b'"' || b == b'\\';
                assert_eq!(
                    escapes(u64::from_le_bytes(w)) != 0,
                    want,
                    "byte {b:#x} at {pos}"
                );
            }
        }
    }

    /// The block-skipping escape read back by serde_json, for every length
    /// to 80 with a character to escape at every position of it.
    #[test]
    fn escape_agrees_with_serde_json_at_every_length_and_position() {
        for len in 0..80 {
            for pos in 0..=len {
                for special in ["\"", "\\", "\n", "\u{1}", "\u{1f}", "é", "\t\""] {
                    let mut text: String = (0..len)
                        .map(|i| char::from(b'a' + (i % 26) as u8))
                        .collect();
                    if pos < len {
                        text.replace_range(pos..pos + 1, special);
                    }
                    let mut out = Vec::new();
                    escape(&text, &mut out);
                    let mut quoted = vec![b'"'];
                    quoted.extend_from_slice(&out);
                    quoted.push(b'"');
                    let back: String = serde_json::from_slice(&quoted).unwrap();
                    assert_eq!(back, text, "len {len} pos {pos} {special:?}");
                }
            }
        }
    }

    #[test]
    fn signed_frames_verify_and_compressed_frames_inflate() {
        let e = Encoder::new("app-name", "h", Some("01WzaGPu"), true, 1 << 20);
        let body = "If numbers aren’t beautiful, I don’t know what is. –Paul Erdős";
        let mut out = Vec::new();
        e.encode("web.foo", body, 1358363502, 12043, &mut out);
        assert_eq!(out[7], 1, "zlib flag");
        let m = decode(&out);
        assert_eq!(
            m.signature.as_deref(),
            Some("396d1459bf34d782ebe156fd02b8e591"),
            "SPEC §3 test vector"
        );
        assert!(loghog_protocol::sign::verify("01WzaGPu", &m).is_ok());
    }
}
