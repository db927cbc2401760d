//! Pre-encoding: each connection's whole byte stream is built before the
//! clock starts, so the timed part of a run is nothing but `write`/`send`.
//!
//! Bodies are unique and self-describing (`seq=C:I ` then padding), and the
//! padding is a pure function of `(C, I)`, so `check` can regenerate every
//! body and prove exactly-once delivery, order and integrity.

use std::borrow::Cow;
use std::fmt::Write as _;
use std::sync::OnceLock;

use loghog_protocol::sign;
use loghog_protocol::{frame, Message, VERSION};

/// `stamp` of every LogHog message: 2026-11-21T07:00:00Z, the same instant
/// as [`SYSLOG_TIMESTAMP`], so both formats describe the same event.
pub const STAMP: i64 = 1_795_244_400;
/// `nsecs` of every LogHog message.
pub const NSECS: i64 = 0;
/// RFC 5424 TIMESTAMP of every syslog message.
pub const SYSLOG_TIMESTAMP: &str = "2026-11-21T07:00:00.000000Z";
/// `<PRI>VERSION` of every syslog message: facility local0 (16), severity
/// info (6): 16 * 8 + 6 = 134.
const SYSLOG_PRI_VERSION: &str = "<134>1";

/// Size of the deterministic padding pool; bodies may not be longer.
pub const MAX_BODY_SIZE: usize = 1 << 20;
/// Alphanumerics only: the padding can never contain `seq=`, a space or
/// anything a syslog daemon would escape or trim.
const PAD_ALPHABET: &[u8; 62] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";

/// How messages are laid out on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// LogHog frames (SPEC §1), concatenated on a stream or one per datagram.
    LogHog,
    /// RFC 5424 lines with RFC 6587 octet counting (`{len} {msg}`), for TCP.
    SyslogOctetCounted,
    /// RFC 5424 lines, one per datagram with no framing (RFC 5426).
    SyslogDatagram,
}

/// Everything that shapes the encoded messages except the sequence numbers.
#[derive(Debug)]
pub struct Params<'a> {
    /// Wire layout.
    pub format: Format,
    /// `app_id` (LogHog) or APP-NAME (syslog).
    pub app: &'a str,
    /// `module` (LogHog only).
    pub module: &'a str,
    /// Host names, used round-robin by message index.
    pub hostnames: &'a [String],
    /// Signs each LogHog message when set (SPEC §3).
    pub secret: Option<&'a str>,
    /// Sets the zlib flag and compresses each LogHog payload.
    pub compress: bool,
    /// Body length in bytes (longer only when the `seq=` token alone is longer).
    pub body_size: usize,
}

/// One connection's pre-encoded messages.
#[derive(Debug, Default)]
pub struct Stream {
    /// Every message back to back, exactly as it goes on the wire.
    pub bytes: Vec<u8>,
    /// `ends[i]` is the offset just past message `i`: the pacer and the UDP
    /// sender need message boundaries, the TCP fast path does not.
    pub ends: Vec<usize>,
}

// === impl Stream ===

impl Stream {
    /// Number of messages.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Byte range of messages `from..to`.
    pub fn range(&self, from: usize, to: usize) -> std::ops::Range<usize> {
        let start = if from == 0 { 0 } else { self.ends[from - 1] };
        let end = if to == 0 { 0 } else { self.ends[to - 1] };
        start..end
    }
}

/// Messages that connection `conn` of `connections` sends out of `total`: an
/// even split, the first `total % connections` connections taking one more.
/// `check` uses the same function, so both sides agree on what is expected.
pub fn split(total: u64, connections: usize, conn: usize) -> u64 {
    let c = connections.max(1) as u64;
    total / c + u64::from((conn as u64) < total % c)
}

/// Writes the body of message `index` of connection `conn` into `out`
/// (cleared first): `seq=C:I`, then a space and padding up to `body_size`.
pub fn write_body(conn: u64, index: u64, body_size: usize, out: &mut String) {
    out.clear();
    // Writing into a String cannot fail.
    let _ = write!(out, "seq={conn}:{index}");
    // The space goes only where padding follows it: a trailing space is the
    // kind of thing a syslog daemon may trim, which would look like corruption.
    if body_size > out.len() + 1 {
        let pad_len = body_size - out.len() - 1;
        out.push(' ');
        out.push_str(padding(conn, index, pad_len));
    }
}

/// Padding for one message: a slice of a fixed pseudo-random pool at an
/// offset derived from `(conn, index)`. Random-looking text keeps zlib/xz
/// ratios closer to real logs than a run of one letter would.
fn padding(conn: u64, index: u64, len: usize) -> &'static str {
    let pool = pad_pool();
    let len = len.min(pool.len());
    let span = (pool.len() - len + 1) as u64;
    let offset = (mix(conn.rotate_left(40) ^ index) % span) as usize;
    &pool[offset..offset + len]
}

fn pad_pool() -> &'static str {
    static POOL: OnceLock<String> = OnceLock::new();
    POOL.get_or_init(|| {
        let mut state = 0x9e37_79b9_7f4a_7c15_u64;
        (0..MAX_BODY_SIZE)
            .map(|_| {
                state = mix(state);
                char::from(PAD_ALPHABET[(state % PAD_ALPHABET.len() as u64) as usize])
            })
            .collect()
    })
}

/// splitmix64's finalizer: cheap, deterministic, well spread.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Appends one RFC 5424 message to `out`, octet-counted or bare.
pub fn push_syslog(out: &mut Vec<u8>, octet_counted: bool, host: &str, app: &str, body: &str) {
    // NILVALUE for an empty APP-NAME keeps the header parseable.
    let app = if app.is_empty() { "-" } else { app };
    let fields = [
        SYSLOG_PRI_VERSION,
        " ",
        SYSLOG_TIMESTAMP,
        " ",
        host,
        " ",
        app,
        " - - - ",
        body,
    ];
    if octet_counted {
        let len: usize = fields.iter().map(|f| f.len()).sum();
        out.extend_from_slice(itoa::Buffer::new().format(len).as_bytes());
        out.push(b' ');
    }
    for f in fields {
        out.extend_from_slice(f.as_bytes());
    }
}

/// Appends one message in `params.format` to `out`; `json` is scratch.
pub fn encode_one(
    params: &Params<'_>,
    host: &str,
    body: &str,
    json: &mut Vec<u8>,
    out: &mut Vec<u8>,
) {
    match params.format {
        Format::LogHog => {
            let mut msg = Message {
                version: VERSION,
                app_id: Cow::Borrowed(params.app),
                module: Cow::Borrowed(params.module),
                stamp: STAMP,
                nsecs: NSECS,
                body: Cow::Borrowed(body),
                hostname: Some(Cow::Borrowed(host)),
                signature: None,
            };
            if let Some(secret) = params.secret {
                msg.signature = Some(Cow::Owned(sign::sign(secret, &msg)));
            }
            json.clear();
            msg.encode(json);
            frame::encode(json, params.compress, out);
        }
        Format::SyslogOctetCounted => push_syslog(out, true, host, params.app, body),
        Format::SyslogDatagram => push_syslog(out, false, host, params.app, body),
    }
}

/// Encodes the `count` messages of connection `conn`.
pub fn encode_connection(params: &Params<'_>, conn: u64, count: u64) -> Stream {
    let count = count as usize;
    // A rough guess saves most of the re-allocations of a ~100 MB Vec.
    let per_msg = params.body_size + 160;
    let mut stream = Stream {
        bytes: Vec::with_capacity(per_msg.saturating_mul(count)),
        ends: Vec::with_capacity(count),
    };
    let mut body = String::with_capacity(params.body_size + 32);
    let mut json = Vec::with_capacity(params.body_size + 256);
    for index in 0..count {
        write_body(conn, index as u64, params.body_size, &mut body);
        let host = params.hostnames[index % params.hostnames.len()].as_str();
        encode_one(params, host, &body, &mut json, &mut stream.bytes);
        stream.ends.push(stream.bytes.len());
    }
    stream
}

#[cfg(test)]
mod tests {
    use super::*;
    use loghog_protocol::Header;

    #[test]
    fn split_is_even_and_complete() {
        for (total, conns) in [(10, 3), (3, 5), (1_000_000, 4), (0, 2)] {
            let parts: Vec<u64> = (0..conns).map(|c| split(total, conns, c)).collect();
            assert_eq!(parts.iter().sum::<u64>(), total);
            assert!(parts.iter().max().unwrap() - parts.iter().min().unwrap() <= 1);
        }
    }

    #[test]
    fn bodies_have_exact_size_and_are_deterministic() {
        let mut a = String::new();
        let mut b = String::new();
        write_body(3, 12345, 200, &mut a);
        write_body(3, 12345, 200, &mut b);
        assert_eq!(a, b);
        assert_eq!(a.len(), 200);
        assert!(a.starts_with("seq=3:12345 "));
        assert!(!a[4..].contains("seq="));
        write_body(3, 12346, 200, &mut b);
        assert_ne!(a, b);
        // Too small for padding: the token alone, never a trailing space.
        write_body(10, 99, 5, &mut a);
        assert_eq!(a, "seq=10:99");
        write_body(1, 2, 8, &mut a);
        assert_eq!(a, "seq=1:2");
    }

    #[test]
    fn syslog_octet_counting() {
        let mut out = Vec::new();
        push_syslog(&mut out, true, "benchhost", "bench", "seq=0:1 abc");
        let msg = "<134>1 2026-11-21T07:00:00.000000Z benchhost bench - - - seq=0:1 abc";
        assert_eq!(out, format!("{} {msg}", msg.len()).into_bytes());

        let mut out = Vec::new();
        push_syslog(&mut out, false, "h", "", "x");
        assert_eq!(out, b"<134>1 2026-11-21T07:00:00.000000Z h - - - - x");
    }

    #[test]
    fn loghog_frames_decode_and_verify() {
        let hosts = ["h0".to_string(), "h1".to_string()];
        let params = Params {
            format: Format::LogHog,
            app: "bench",
            module: "web",
            hostnames: &hosts,
            secret: Some("s3cret"),
            compress: true,
            body_size: 64,
        };
        let stream = encode_connection(&params, 2, 3);
        assert_eq!(stream.len(), 3);
        let mut scratch = None;
        for i in 0..3 {
            let bytes = &stream.bytes[stream.range(i, i + 1)];
            let hdr = Header::check(bytes, 65536).unwrap();
            assert_eq!(hdr.frame_len(), bytes.len());
            let payload = hdr.payload(&bytes[8..], 65536, &mut scratch).unwrap();
            let msg = Message::decode(payload).unwrap();
            assert!(msg.body.starts_with(&format!("seq=2:{i} ")));
            assert_eq!(msg.body.len(), 64);
            assert_eq!(msg.hostname.as_deref(), Some(hosts[i % 2].as_str()));
            assert_eq!(sign::verify("s3cret", &msg), Ok(()));
        }
    }
}
