//! Frame header: `len: u32 BE`, `flags: u32 BE`, then `len` payload bytes.
//!
//! Decoding is two steps, as in mini-redis: [`Header::check`] looks at the
//! buffered bytes and says whether a whole frame is there (`Incomplete` is not
//! an error), and only then does the caller take the payload and advance.
//! An announced length over the cap is rejected before anything is allocated.

/// Size of the fixed header in bytes.
pub const HEADER_LEN: usize = 8;

/// Flag bit: the payload is a zlib (RFC 1950) stream. The old code called it GZIP.
pub const FLAG_ZLIB: u32 = 0x01;

/// Every flag bit this version understands; any other bit makes a frame invalid.
pub const KNOWN_FLAGS: u32 = FLAG_ZLIB;

/// A parsed frame header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Payload length in bytes (not counting the header).
    pub len: u32,
    /// Flag bits as sent; validated by [`Header::payload`].
    pub flags: u32,
}

/// Why a frame could not be taken from a buffer or its payload could not be used.
#[derive(Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not enough bytes buffered yet; read more. Not an error.
    Incomplete,
    /// The length field is over the limit: the stream cannot be trusted any more.
    TooLarge { len: u64, max: usize },
    /// Reserved flag bits were set.
    ReservedFlags(u32),
    /// The zlib stream is broken or truncated.
    BadZlib(String),
    /// The payload inflates past the limit.
    InflatedTooLarge { max: usize },
}

// Display by hand: the crate keeps its dependency tree small (no thiserror).
impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::Incomplete => f.write_str("incomplete frame"),
            FrameError::TooLarge { len, max } => {
                write!(f, "frame length {len} is over max_msg_size {max}")
            }
            FrameError::ReservedFlags(bits) => write!(f, "reserved flag bits set: {bits:#x}"),
            FrameError::BadZlib(why) => write!(f, "broken zlib payload: {why}"),
            FrameError::InflatedTooLarge { max } => {
                write!(f, "payload inflates past max_msg_size {max}")
            }
        }
    }
}

impl std::error::Error for FrameError {}

// === impl Header ===

impl Header {
    /// Reads the header at the start of `buf` and checks that the whole frame
    /// is buffered.
    ///
    /// # Errors
    /// `Incomplete` when more bytes are needed; `TooLarge` when the announced
    /// length is over `max_len` (checked before the payload is awaited, so a
    /// hostile length never causes an allocation).
    pub fn check(buf: &[u8], max_len: usize) -> Result<Header, FrameError> {
        if buf.len() < HEADER_LEN {
            return Err(FrameError::Incomplete);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
        let flags = u32::from_be_bytes([buf[4], buf[5], buf[6], buf[7]]);
        if len as u64 > max_len as u64 {
            return Err(FrameError::TooLarge {
                len: len as u64,
                max: max_len,
            });
        }
        if buf.len() - HEADER_LEN < len as usize {
            return Err(FrameError::Incomplete);
        }
        Ok(Header { len, flags })
    }

    /// Total bytes the frame occupies, header included.
    pub fn frame_len(&self) -> usize {
        HEADER_LEN + self.len as usize
    }

    /// Returns the JSON bytes of this frame's `raw` payload, inflating it
    /// when it is compressed with the reader's `inflater` (created on the
    /// first compressed frame: a zlib state is ~40 KB to set up, so readers
    /// that never see one never pay for it). Inflation stops at `max_len`.
    ///
    /// # Errors
    /// Reserved flags, a broken zlib stream, or an inflated size over `max_len`.
    pub fn payload<'a>(
        &self,
        raw: &'a [u8],
        max_len: usize,
        inflater: &'a mut Option<Inflater>,
    ) -> Result<&'a [u8], FrameError> {
        if self.flags & !KNOWN_FLAGS != 0 {
            return Err(FrameError::ReservedFlags(self.flags));
        }
        if self.flags & FLAG_ZLIB == 0 {
            return Ok(raw);
        }
        inflater
            .get_or_insert_with(Inflater::default)
            .inflate(raw, max_len)
    }
}

/// A reusable zlib inflater: one per reader, reset for every frame, so a
/// compressed message costs the inflation and not the set-up of a decoder
/// (its tables and window), which dominated otherwise.
pub struct Inflater {
    z: flate2::Decompress,
    /// Output buffer; grows (zeroed once) up to `max_len + 1` as needed.
    out: Vec<u8>,
}

impl Default for Inflater {
    fn default() -> Self {
        Inflater {
            z: flate2::Decompress::new(true),
            out: Vec::new(),
        }
    }
}

impl Inflater {
    /// Bytes the output buffer holds on to.
    pub fn capacity(&self) -> usize {
        self.out.len()
    }

    /// Inflates one whole zlib stream, never producing (or allocating for)
    /// more than `max_len + 1` bytes: that one byte proves "too large".
    ///
    /// # Errors
    /// A broken or truncated stream, or output over `max_len`.
    pub fn inflate(&mut self, raw: &[u8], max_len: usize) -> Result<&[u8], FrameError> {
        use flate2::{FlushDecompress, Status};
        self.z.reset(true);
        let cap = max_len + 1;
        if self.out.len() < cap.min(4096) {
            self.out.resize(cap.min(4096), 0);
        }
        loop {
            let in_done = self.z.total_in() as usize;
            let out_done = self.z.total_out() as usize;
            let status = self
                .z
                .decompress(
                    &raw[in_done.min(raw.len())..],
                    &mut self.out[out_done..],
                    FlushDecompress::None,
                )
                .map_err(|e| FrameError::BadZlib(e.to_string()))?;
            let produced = self.z.total_out() as usize;
            if produced > max_len {
                return Err(FrameError::InflatedTooLarge { max: max_len });
            }
            match status {
                Status::StreamEnd => return Ok(&self.out[..produced]),
                _ if produced == self.out.len() && self.out.len() < cap => {
                    let grown = (self.out.len() * 2).min(cap);
                    self.out.resize(grown, 0);
                }
                _ => return Err(FrameError::BadZlib("truncated zlib stream".into())),
            }
        }
    }
}

/// Appends one frame (header + payload) to `out`, compressing the payload
/// with zlib when `compress` is set.
pub fn encode(payload: &[u8], compress: bool, out: &mut Vec<u8>) {
    if compress {
        let mut z = Vec::with_capacity(payload.len() / 2 + 16);
        let mut enc = flate2::write::ZlibEncoder::new(&mut z, flate2::Compression::default());
        // Writing into a Vec cannot fail.
        let _ = std::io::Write::write_all(&mut enc, payload);
        let _ = enc.finish();
        push_header(out, z.len(), FLAG_ZLIB);
        out.extend_from_slice(&z);
    } else {
        push_header(out, payload.len(), 0);
        out.extend_from_slice(payload);
    }
}

fn push_header(out: &mut Vec<u8>, len: usize, flags: u32) {
    out.extend_from_slice(&(len as u32).to_be_bytes());
    out.extend_from_slice(&flags.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(payload: &[u8], flags: u32) -> Vec<u8> {
        let mut v = Vec::new();
        push_header(&mut v, payload.len(), flags);
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn incomplete_until_whole_frame() {
        let f = frame(b"{}", 0);
        for cut in 0..f.len() {
            assert_eq!(Header::check(&f[..cut], 100), Err(FrameError::Incomplete));
        }
        let h = Header::check(&f, 100).unwrap();
        assert_eq!(h.frame_len(), f.len());
    }

    #[test]
    fn too_large_is_known_from_header_alone() {
        let hdr = [0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0];
        assert!(matches!(
            Header::check(&hdr, 65536),
            Err(FrameError::TooLarge { .. })
        ));
    }

    #[test]
    fn reserved_flags_rejected() {
        let f = frame(b"{}", 0x02);
        let h = Header::check(&f, 100).unwrap();
        let mut s = None;
        assert_eq!(
            h.payload(&f[8..], 100, &mut s),
            Err(FrameError::ReservedFlags(2))
        );
    }

    #[test]
    fn zlib_round_trip_and_bomb() {
        let mut out = Vec::new();
        encode(b"hello world", true, &mut out);
        let h = Header::check(&out, 100).unwrap();
        let mut s = None;
        assert_eq!(h.payload(&out[8..], 100, &mut s).unwrap(), b"hello world");

        let big = vec![b'a'; 1_000_000];
        let mut out = Vec::new();
        encode(&big, true, &mut out);
        assert!(out.len() < 10_000);
        let h = Header::check(&out, 65536).unwrap();
        let mut s = None;
        assert_eq!(
            h.payload(&out[8..], 65536, &mut s),
            Err(FrameError::InflatedTooLarge { max: 65536 })
        );
        assert!(
            s.unwrap().capacity() <= 65537,
            "inflation must stop at the cap"
        );
    }

    #[test]
    fn broken_zlib_rejected() {
        let f = frame(b"not zlib at all", FLAG_ZLIB);
        let h = Header::check(&f, 100).unwrap();
        let mut s = None;
        assert!(matches!(
            h.payload(&f[8..], 100, &mut s),
            Err(FrameError::BadZlib(_))
        ));
    }
}
