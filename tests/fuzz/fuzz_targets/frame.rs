//! Stream framing: any bytes split into LogHog frames the way a connection
//! does (check, then take the payload, then advance), with the size cap.
//! Invariants: no panic; a frame never claims more than the buffer holds
//! or more than the cap; an oversize length is refused before the payload.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loghog_protocol::{FrameError, Header, Inflater, HEADER_LEN};

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let mut buf = data;
    let mut inflater: Option<Inflater> = None;
    loop {
        match Header::check(buf, MAX) {
            Ok(h) => {
                let len = h.frame_len();
                assert!(len <= buf.len() && len - HEADER_LEN <= MAX);
                if let Ok(payload) = h.payload(&buf[HEADER_LEN..len], MAX, &mut inflater) {
                    assert!(payload.len() <= MAX);
                }
                buf = &buf[len..];
            }
            Err(FrameError::Incomplete) => break,
            Err(FrameError::TooLarge { len, max }) => {
                assert!(len > max as u64);
                break;
            }
            Err(e) => panic!("check returned {e}"),
        }
    }
});
