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
