//! RFC 6587 framing of a syslog stream, detected per connection from its
//! first byte: octet counting (`MSG-LEN SP MSG`, a digit first) or
//! non-transparent framing (messages ended by LF, `<` or anything else
//! first). Both are bounded by `max_msg_size` before anything is allocated:
//! a MSG-LEN over it, or a line that runs past it without an LF, means the
//! stream cannot be trusted and the connection is closed (as for a LogHog
//! length field over the cap).

use std::sync::atomic::{AtomicU8, Ordering::Relaxed};
use std::sync::Arc;

use crate::input::Framer;

/// How a connection frames its messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Framing {
    /// Not known yet (nothing received).
    Unknown = 0,
    /// `MSG-LEN SP MSG`.
    OctetCounting = 1,
    /// `MSG LF`.
    LineFeed = 2,
}

/// The framing a connection settled on, shared by its framer and decoder
/// (the decoder strips the frame's `MSG-LEN SP` or LF).
#[derive(Debug, Default, Clone)]
pub(crate) struct FramingCell(Arc<AtomicU8>);

impl FramingCell {
    /// The framing seen so far.
    pub(crate) fn get(&self) -> Framing {
        match self.0.load(Relaxed) {
            1 => Framing::OctetCounting,
            2 => Framing::LineFeed,
            _ => Framing::Unknown,
        }
    }

    fn set(&self, f: Framing) {
        self.0.store(f as u8, Relaxed);
    }
}

/// Why a syslog stream was given up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum SyslogFrameError {
    /// The announced MSG-LEN is over the cap (or has more digits than the
    /// cap can have).
    #[error("syslog octet count {0} is over max_msg_size ({1})")]
    Oversize(String, usize),
    /// MSG-LEN is not `NONZERO-DIGIT *DIGIT SP`.
    #[error("syslog octet count is malformed ({0})")]
    BadCount(&'static str),
    /// A line passed the cap without an LF.
    #[error("syslog line longer than max_msg_size ({0}) without a line feed")]
    LineTooLong(usize),
}

/// Splits a syslog stream into messages.
#[derive(Debug)]
pub(crate) struct SyslogFramer {
    /// `[server] max_msg_size`.
    pub(crate) max_msg_size: usize,
    /// The connection's framing, decided on its first byte.
    pub(crate) framing: FramingCell,
}

// === impl SyslogFramer ===

impl SyslogFramer {
    /// A framer with the cap; its [`FramingCell`] goes to the decoder too.
    pub(crate) fn new(max_msg_size: usize) -> SyslogFramer {
        SyslogFramer {
            max_msg_size,
            framing: FramingCell::default(),
        }
    }

    /// Most digits a MSG-LEN within the cap can have.
    fn max_digits(&self) -> usize {
        self.max_msg_size.to_string().len()
    }

    /// `MSG-LEN SP`: its length in bytes and the MSG-LEN, `None` while
    /// incomplete.
    fn count(&self, buf: &[u8]) -> Result<Option<(usize, usize)>, SyslogFrameError> {
        let digits = buf.iter().take_while(|b| b.is_ascii_digit()).count();
        if digits > self.max_digits() {
            let shown = String::from_utf8_lossy(&buf[..digits.min(20)]).into_owned();
            return Err(SyslogFrameError::Oversize(shown, self.max_msg_size));
        }
        if digits == buf.len() {
            return Ok(None);
        }
        if digits == 0 || buf[0] == b'0' {
            return Err(SyslogFrameError::BadCount("it must start with a digit 1-9"));
        }
        if buf[digits] != b' ' {
            return Err(SyslogFrameError::BadCount(
                "the digits must be followed by a space",
            ));
        }
        // At most max_digits digits: fits in usize.
        let n = std::str::from_utf8(&buf[..digits])
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .unwrap_or(usize::MAX);
        if n > self.max_msg_size {
            return Err(SyslogFrameError::Oversize(n.to_string(), self.max_msg_size));
        }
        Ok(Some((digits + 1, n)))
    }
}

impl Framer for SyslogFramer {
    type Error = SyslogFrameError;

    fn check(&mut self, buf: &[u8]) -> Result<Option<usize>, SyslogFrameError> {
        let Some(&first) = buf.first() else {
            return Ok(None);
        };
        let mut framing = self.framing.get();
        if framing == Framing::Unknown {
            framing = if first.is_ascii_digit() {
                Framing::OctetCounting
            } else {
                Framing::LineFeed
            };
            self.framing.set(framing);
        }
        match framing {
            Framing::OctetCounting => Ok(self
                .count(buf)?
                .and_then(|(head, n)| (buf.len() >= head + n).then_some(head + n))),
            _ => {
                let window = &buf[..buf.len().min(self.max_msg_size + 1)];
                match memchr::memchr(b'\n', window) {
                    Some(i) => Ok(Some(i + 1)),
                    None if buf.len() > self.max_msg_size => {
                        Err(SyslogFrameError::LineTooLong(self.max_msg_size))
                    }
                    None => Ok(None),
                }
            }
        }
    }

    fn need(&self, buf: &[u8]) -> usize {
        match self.framing.get() {
            Framing::OctetCounting => match self.count(buf) {
                Ok(Some((head, n))) => head + n,
                _ => buf.len() + 1,
            },
            _ => buf.len() + 1,
        }
    }

    fn at_eof(&mut self, buf: &[u8]) -> Option<usize> {
        // A last line without its LF is still a message (many senders end
        // the stream so); an octet-counted frame cut short is not.
        (self.framing.get() == Framing::LineFeed && !buf.is_empty()).then_some(buf.len())
    }
}

/// The MSG of a frame `check` delimited: without `MSG-LEN SP`, or without
/// the LF (the parser trims CR and NUL).
pub(crate) fn payload(framing: Framing, frame: &[u8]) -> &[u8] {
    match framing {
        Framing::OctetCounting => match frame.iter().position(|b| *b == b' ') {
            Some(i) => &frame[i + 1..],
            None => frame,
        },
        _ => frame.strip_suffix(b"\n").unwrap_or(frame),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAP: usize = 1000;

    /// Every frame of `stream`, as `payload` gives them, until the framer
    /// wants more or refuses.
    fn frames(stream: &[u8]) -> (Vec<Vec<u8>>, Option<SyslogFrameError>) {
        let mut f = SyslogFramer::new(CAP);
        let mut out = Vec::new();
        let mut buf = stream;
        loop {
            match f.check(buf) {
                Ok(Some(n)) => {
                    out.push(payload(f.framing.get(), &buf[..n]).to_vec());
                    buf = &buf[n..];
                }
                Ok(None) => {
                    if let Some(n) = f.at_eof(buf) {
                        out.push(payload(f.framing.get(), &buf[..n]).to_vec());
                    }
                    return (out, None);
                }
                Err(e) => return (out, Some(e)),
            }
        }
    }

    #[test]
    fn octet_counting() {
        let (f, e) = frames(b"5 <1>ab11 <13>1 - x\ny");
        assert_eq!(f, vec![b"<1>ab".to_vec(), b"<13>1 - x\ny".to_vec()]);
        assert_eq!(e, None);
        // Cut short at EOF: not a message.
        let (f, _) = frames(b"5 <1>ab3 <1");
        assert_eq!(f.len(), 1);
    }

    #[test]
    fn line_feed_with_last_line_unterminated() {
        let (f, e) = frames(b"<13>a\n<13>b\r\n<13>c");
        assert_eq!(
            f,
            vec![b"<13>a".to_vec(), b"<13>b\r".to_vec(), b"<13>c".to_vec()]
        );
        assert_eq!(e, None);
    }

    #[test]
    fn refusals_before_allocation() {
        // A huge count is refused from its digits alone.
        let (_, e) = frames(b"99999999999999999999");
        assert!(matches!(e, Some(SyslogFrameError::Oversize(..))), "{e:?}");
        let (_, e) = frames(b"1001 x");
        assert!(matches!(e, Some(SyslogFrameError::Oversize(..))), "{e:?}");
        let (_, e) = frames(b"12x");
        assert!(matches!(e, Some(SyslogFrameError::BadCount(_))), "{e:?}");
        let (f, e) = frames(b"3 abc0 ");
        assert_eq!(f.len(), 1);
        assert!(matches!(e, Some(SyslogFrameError::BadCount(_))), "{e:?}");
        let long = vec![b'a'; CAP + 1];
        let (_, e) = frames(&long);
        assert_eq!(e, Some(SyslogFrameError::LineTooLong(CAP)));
        // Exactly the cap plus its LF is fine.
        let mut ok = vec![b'a'; CAP];
        ok.push(b'\n');
        let (f, e) = frames(&ok);
        assert_eq!((f.len(), e), (1, None));
    }

    #[test]
    fn need_sizes_the_next_read() {
        let mut f = SyslogFramer::new(CAP);
        assert_eq!(f.check(b"500 <1>").unwrap(), None);
        assert_eq!(f.need(b"500 <1>"), 504);
    }
}
