//! The LogHog protocol as an input (SPEC §1): [`LoghogFramer`] finds frames
//! by their 8-byte header, [`LoghogDecoder`] turns one frame into a
//! [`Record`] (inflating zlib payloads, decoding the JSON) for the router.

use loghog_protocol::{FrameError, Header, Inflater, Message, MessageError, HEADER_LEN};

use super::{Decoder, Framer};
use crate::record::{Auth, Record};
use crate::router::Router;

/// Inflater buffers larger than this are not kept between frames, so one
/// huge inflated message does not pin its buffer for the connection's life.
const INFLATER_KEEP: usize = 1 << 20;

/// Frames on a stream (or in a datagram): header, then `len` payload bytes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoghogFramer {
    /// `[server] max_msg_size`.
    pub(crate) max_msg_size: usize,
}

impl Framer for LoghogFramer {
    type Error = FrameError;

    fn check(&mut self, buf: &[u8]) -> Result<Option<usize>, FrameError> {
        match Header::check(buf, self.max_msg_size) {
            Ok(h) => Ok(Some(h.frame_len())),
            Err(FrameError::Incomplete) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn need(&self, buf: &[u8]) -> usize {
        match buf {
            [a, b, c, d, ..] => HEADER_LEN + u32::from_be_bytes([*a, *b, *c, *d]) as usize,
            _ => HEADER_LEN,
        }
    }
}

/// Why a LogHog frame was dropped.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LoghogError {
    /// The header or payload was refused (flags, zlib, size).
    #[error("{0}")]
    Frame(#[from] FrameError),
    /// The payload is not a valid message.
    #[error("{0}")]
    Message(#[from] MessageError),
    /// A datagram holds more or less than exactly one frame.
    #[error("datagram {0} than its frame")]
    DatagramSize(&'static str),
}

/// Decodes LogHog frames; one per reader (it keeps the zlib state).
#[derive(Default)]
pub(crate) struct LoghogDecoder {
    /// `[server] max_msg_size`, applied to the inflated payload too.
    max_msg_size: usize,
    /// Reused zlib inflater and its buffer (made on the first compressed frame).
    scratch: Option<Inflater>,
}

impl LoghogDecoder {
    /// A decoder with the size cap.
    pub(crate) fn new(max_msg_size: usize) -> LoghogDecoder {
        LoghogDecoder {
            max_msg_size,
            scratch: None,
        }
    }

    /// Decodes a datagram, which must be exactly one frame.
    pub(crate) fn decode_datagram(&mut self, dgram: &[u8], router: &mut Router) {
        let result = match Header::check(dgram, self.max_msg_size) {
            Ok(h) if h.frame_len() == dgram.len() => self.decode_frame(h, dgram, router),
            Ok(_) => Err(LoghogError::DatagramSize("longer")),
            Err(FrameError::Incomplete) => Err(LoghogError::DatagramSize("shorter")),
            Err(e) => Err(e.into()),
        };
        if let Err(err) = result {
            router.reject(&err);
        }
    }

    fn decode_frame(
        &mut self,
        header: Header,
        frame: &[u8],
        router: &mut Router,
    ) -> Result<(), LoghogError> {
        let raw = &frame[HEADER_LEN..header.frame_len()];
        let result = (|| {
            let payload = header.payload(raw, self.max_msg_size, &mut self.scratch)?;
            let msg = Message::decode(payload)?;
            router.route(&Record {
                app_id: &msg.app_id,
                module: &msg.module,
                host: msg.hostname.as_deref(),
                body: &msg.body,
                auth: Auth::LogHog {
                    stamp: msg.stamp,
                    nsecs: msg.nsecs,
                    signature: msg.signature.as_deref(),
                },
                syslog: None,
            });
            Ok(())
        })();
        if self
            .scratch
            .as_ref()
            .is_some_and(|z| z.capacity() > INFLATER_KEEP)
        {
            self.scratch = None;
        }
        result
    }
}

impl Decoder for LoghogDecoder {
    fn decode(&mut self, frame: &[u8], router: &mut Router) {
        let result = match Header::check(frame, self.max_msg_size) {
            Ok(h) => self.decode_frame(h, frame, router),
            Err(e) => Err(e.into()),
        };
        if let Err(err) = result {
            router.reject(&err);
        }
    }
}

/// The hostile-frame matrix against the framer, the decoder and a router
/// whose outputs are closed (lines stay pending, counters are read from its
/// `Stats`): every malformed frame is dropped alone and counted, and the
/// stream or socket goes on. `tests/it/core.rs` sends a sample of these
/// through a running daemon's sockets.
#[cfg(test)]
mod tests {
    use std::net::{IpAddr, Ipv4Addr};
    use std::path::Path;
    use std::sync::Arc;

    use loghog_protocol::{frame, FrameError, Message};

    use super::*;
    use crate::config::FacilityDb;
    use crate::input::{Decoder, Framer};
    use crate::record::Transport;
    use crate::router::{Router, RouterCtx};

    /// The cap of these tests, small so the zlib bomb is cheap.
    const CAP: usize = 4096;

    const FACILITIES: &str = "[app]\nrotate = daily\nbackup_count = 3\n\n\
                              [app:web]\nrotate = daily\nbackup_count = 3\n";

    fn ctx() -> Arc<RouterCtx> {
        let db = FacilityDb::parse(FACILITIES, Path::new("facilities.conf")).unwrap();
        RouterCtx::for_test(db)
    }

    fn router(ctx: &Arc<RouterCtx>, transport: Transport) -> Router {
        Router::new(ctx.clone(), IpAddr::V4(Ipv4Addr::LOCALHOST), transport)
    }

    /// The JSON payload of a well-formed message for `app`, root module.
    fn payload(body: &str) -> Vec<u8> {
        let m = Message {
            version: 1,
            app_id: "app".into(),
            module: "".into(),
            stamp: 1358363502,
            nsecs: 12043,
            body: body.into(),
            hostname: None,
            signature: None,
        };
        let mut p = Vec::new();
        m.encode(&mut p);
        p
    }

    /// A well-formed frame (zlib when `compress`).
    fn good(body: &str, compress: bool) -> Vec<u8> {
        let mut out = Vec::new();
        frame::encode(&payload(body), compress, &mut out);
        out
    }

    /// A frame with a correct length for `payload` and the given flags.
    fn raw(payload: &[u8], flags: u32) -> Vec<u8> {
        header(payload.len() as u32, flags, payload)
    }

    fn header(len: u32, flags: u32, payload: &[u8]) -> Vec<u8> {
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(payload);
        out
    }

    fn zlib(data: &[u8]) -> Vec<u8> {
        use std::io::Write;
        let mut enc = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
        enc.write_all(data).unwrap();
        enc.finish().unwrap()
    }

    /// Every kind of frame that is well delimited (its length is within the
    /// cap) but must be dropped: (name, frame).
    fn hostile() -> Vec<(&'static str, Vec<u8>)> {
        let json = |s: &str| raw(s.as_bytes(), 0);
        let broken_zlib = {
            let mut z = zlib(&payload("broken zlib"));
            let n = z.len();
            z[n / 2] ^= 0xff;
            z[n - 1] ^= 0xff; // the adler32 at least
            z
        };
        let truncated_zlib = {
            let z = zlib(&payload("truncated zlib"));
            z[..z.len() / 2].to_vec()
        };
        let bomb = zlib(&payload(&"A".repeat(1 << 20)));
        assert!(bomb.len() < CAP, "the bomb must pass the length check");
        let bad_utf8 = {
            let mut p = payload("bad utf8 \u{e9}");
            let at = p.iter().position(|&b| b == 0xc3).unwrap();
            p[at] = 0xff; // no longer UTF-8, still well delimited
            p
        };
        vec![
            ("reserved flag bit", raw(&payload("reserved"), 0x02)),
            (
                "reserved high flag bit with zlib",
                raw(&zlib(&payload("reserved")), 0x8000_0001),
            ),
            ("broken zlib", raw(&broken_zlib, 0x01)),
            ("truncated zlib", raw(&truncated_zlib, 0x01)),
            ("not zlib at all", raw(b"this is not a zlib stream", 0x01)),
            ("zlib bomb past the cap", raw(&bomb, 0x01)),
            ("invalid UTF-8", raw(&bad_utf8, 0)),
            (
                "lone surrogate escape",
                json(
                    r#"{"version": 1, "app_id": "app", "module": "", "stamp": 1, "nsecs": 1, "body": "lone \ud800 surrogate"}"#,
                ),
            ),
            (
                "bad JSON",
                json(
                    r#"{"version": 1, "app_id": "app", "module": "", "stamp": 1, "nsecs": 1, "body": "unterminated"#,
                ),
            ),
            ("JSON not an object", json(r#"["app", "", 1, 1, "body"]"#)),
            ("empty payload", raw(b"", 0)),
            (
                "missing body",
                json(r#"{"version": 1, "app_id": "app", "module": "", "stamp": 1, "nsecs": 1}"#),
            ),
            (
                "missing app_id",
                json(r#"{"version": 1, "module": "", "stamp": 1, "nsecs": 1, "body": "no app"}"#),
            ),
            (
                "stamp as a string",
                json(
                    r#"{"version": 1, "app_id": "app", "module": "", "stamp": "1358363502", "nsecs": 1, "body": "mistyped"}"#,
                ),
            ),
            (
                "body as a list",
                json(
                    r#"{"version": 1, "app_id": "app", "module": "", "stamp": 1, "nsecs": 1, "body": ["a", "b"]}"#,
                ),
            ),
            (
                "float nsecs",
                json(
                    r#"{"version": 1, "app_id": "app", "module": "", "stamp": 1, "nsecs": 1.5, "body": "float"}"#,
                ),
            ),
            (
                "wrong version",
                json(
                    r#"{"version": 2, "app_id": "app", "module": "", "stamp": 1, "nsecs": 1, "body": "v2"}"#,
                ),
            ),
        ]
    }

    /// Frames `bytes` as a stream reader does and decodes every frame;
    /// panics if the framer gives the stream up.
    fn decode_stream(bytes: &[u8], router: &mut Router) {
        let mut framer = LoghogFramer { max_msg_size: CAP };
        let mut decoder = LoghogDecoder::new(CAP);
        let mut at = 0;
        while at < bytes.len() {
            let len = framer
                .check(&bytes[at..])
                .unwrap_or_else(|e| panic!("stream given up at byte {at}: {e}"))
                .unwrap_or_else(|| panic!("incomplete frame at byte {at}"));
            decoder.decode(&bytes[at..at + len], router);
            at += len;
        }
    }

    /// The bodies of `(section, line)`s, checking each is for `app`'s root.
    fn bodies(pending: &[(String, String)]) -> Vec<&str> {
        pending
            .iter()
            .map(|(section, line)| {
                assert_eq!(section, "app", "{line}");
                line.split_once(" - 127.0.0.1 - ")
                    .unwrap_or_else(|| panic!("not a line from 127.0.0.1: {line:?}"))
                    .1
            })
            .collect()
    }

    fn stat(ctx: &RouterCtx, name: &str) -> u64 {
        ctx.stats.get(name).unwrap()
    }

    #[test]
    fn every_hostile_frame_is_dropped_alone_on_a_stream() {
        for (name, bad) in hostile() {
            let ctx = ctx();
            let mut r = router(&ctx, Transport::Tcp);
            let mut bytes = good("before", false);
            bytes.extend(&bad);
            bytes.extend(good("after", true));
            decode_stream(&bytes, &mut r);
            let pending = r.take_pending();
            assert_eq!(bodies(&pending), ["before", "after"], "{name}");
            assert_eq!(stat(&ctx, "bad_frames"), 1, "{name}");
            assert_eq!(stat(&ctx, "received"), 2, "{name}");
        }
    }

    #[test]
    fn every_hostile_frame_is_dropped_alone_as_a_datagram() {
        for (name, bad) in hostile() {
            let ctx = ctx();
            let mut r = router(&ctx, Transport::Udp);
            let mut decoder = LoghogDecoder::new(CAP);
            decoder.decode_datagram(&good("before", true), &mut r);
            decoder.decode_datagram(&bad, &mut r);
            decoder.decode_datagram(&good("after", false), &mut r);
            assert_eq!(bodies(&r.take_pending()), ["before", "after"], "{name}");
            assert_eq!(stat(&ctx, "bad_frames"), 1, "{name}");
            assert_eq!(stat(&ctx, "received"), 2, "{name}");
        }
    }

    #[test]
    fn one_decoder_survives_the_whole_matrix_in_a_row() {
        // The zlib state is reused between frames: a broken stream or a
        // bomb must not leave it unusable for the next compressed frame.
        let ctx = ctx();
        let mut r = router(&ctx, Transport::Tcp);
        let cases = hostile();
        let mut bytes = Vec::new();
        for (i, (_, bad)) in cases.iter().enumerate() {
            bytes.extend(bad);
            bytes.extend(good(&format!("good {i}"), true));
        }
        decode_stream(&bytes, &mut r);
        let want: Vec<String> = (0..cases.len()).map(|i| format!("good {i}")).collect();
        assert_eq!(bodies(&r.take_pending()), want);
        assert_eq!(stat(&ctx, "bad_frames"), cases.len() as u64);
        assert_eq!(stat(&ctx, "received"), cases.len() as u64);
    }

    #[test]
    fn a_length_over_the_cap_gives_the_stream_up_before_its_payload() {
        let mut framer = LoghogFramer { max_msg_size: CAP };
        for len in [CAP as u32 + 1, u32::MAX] {
            // Only the header is there: refused without waiting for (or
            // allocating) the announced payload.
            let err = framer.check(&header(len, 0, b"")).unwrap_err();
            assert!(
                matches!(err, FrameError::TooLarge { len: l, max: CAP } if l == u64::from(len)),
                "{err:?}"
            );
        }
        // Exactly the cap is a frame.
        let at_cap = header(CAP as u32, 0, &vec![b' '; CAP]);
        assert_eq!(framer.check(&at_cap).unwrap(), Some(8 + CAP));
    }

    #[test]
    fn a_frame_arriving_byte_by_byte_is_incomplete_until_its_last_byte() {
        let mut framer = LoghogFramer { max_msg_size: CAP };
        let f = good("split", true);
        for cut in 0..f.len() {
            assert_eq!(framer.check(&f[..cut]).unwrap(), None, "{cut} bytes");
            let need = framer.need(&f[..cut]);
            assert_eq!(need, if cut < 4 { HEADER_LEN } else { f.len() }, "{cut}");
        }
        assert_eq!(framer.check(&f).unwrap(), Some(f.len()));
        // A following frame's first bytes do not change the first's length.
        let mut two = f.clone();
        two.extend_from_slice(&f[..3]);
        assert_eq!(framer.check(&two).unwrap(), Some(f.len()));
    }

    #[test]
    fn a_frame_exactly_at_the_cap_is_routed() {
        let ctx = ctx();
        let mut r = router(&ctx, Transport::Tcp);
        let empty = payload("").len();
        let body = "b".repeat(CAP - empty);
        let p = payload(&body);
        assert_eq!(p.len(), CAP);
        let mut bytes = raw(&p, 0);
        // Compressed, it may also inflate to exactly the cap.
        bytes.extend(raw(&zlib(&p), 0x01));
        decode_stream(&bytes, &mut r);
        assert_eq!(bodies(&r.take_pending()), [body.as_str(), body.as_str()]);
        assert_eq!(stat(&ctx, "bad_frames"), 0);
    }

    #[test]
    fn a_datagram_must_be_exactly_one_frame() {
        let ctx = ctx();
        let mut r = router(&ctx, Transport::Udp);
        let mut decoder = LoghogDecoder::new(CAP);
        let whole = good("whole", false);
        let over_cap = raw(&payload(&"x".repeat(CAP)), 0);
        let mut two = whole.clone();
        two.extend(good("second", false));
        for bad in [
            whole[..whole.len() - 5].to_vec(), // the header promises more
            whole[..5].to_vec(),               // not even a header
            two,                               // a second frame after the first
            over_cap,
        ] {
            decoder.decode_datagram(&bad, &mut r);
        }
        decoder.decode_datagram(&whole, &mut r);
        assert_eq!(bodies(&r.take_pending()), ["whole"]);
        assert_eq!(stat(&ctx, "bad_frames"), 4);
        assert_eq!(stat(&ctx, "received"), 1);
    }

    #[test]
    fn decoded_fields_reach_the_line_and_the_route() {
        let ctx = ctx();
        let mut r = router(&ctx, Transport::Tcp);
        let m = Message {
            version: 1,
            app_id: "app".into(),
            module: "web.x".into(),
            stamp: 1,
            nsecs: 2,
            body: "first, second".into(),
            hostname: Some("box-1.example".into()),
            signature: None,
        };
        let mut p = Vec::new();
        m.encode(&mut p);
        let mut bytes = Vec::new();
        frame::encode(&p, true, &mut bytes);
        // Unknown fields are ignored; an unknown app is counted, not an error.
        bytes.extend(raw(br#"{"level": "INFO", "version": 1, "app_id": "app", "module": "", "extra": {"a": [1, null]}, "stamp": 1, "nsecs": 2, "body": "extras"}"#, 0));
        bytes.extend(raw(br#"{"version": 1, "app_id": "nope", "module": "", "stamp": 1, "nsecs": 2, "body": "lost"}"#, 0));
        decode_stream(&bytes, &mut r);
        let pending = r.take_pending();
        let got: Vec<(&str, &str)> = pending
            .iter()
            .map(|(s, l)| (s.as_str(), &l[26..]))
            .collect();
        assert_eq!(
            got,
            [
                ("app:web", " - box-1.example - first, second"),
                ("app", " - 127.0.0.1 - extras"),
            ]
        );
        assert_eq!(stat(&ctx, "received"), 3);
        assert_eq!(stat(&ctx, "unknown_app"), 1);
        assert_eq!(stat(&ctx, "bad_frames"), 0);
    }
}
