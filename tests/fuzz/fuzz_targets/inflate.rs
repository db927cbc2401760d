//! zlib inflation under the cap: never more than `max` bytes out, whatever
//! the stream (bombs, truncation, garbage), and the same answer when the
//! inflater is reused for a second stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loghog_protocol::Inflater;

fuzz_target!(|data: &[u8]| {
    let max = 1 + (data.first().copied().unwrap_or(0) as usize) * 64;
    let raw = data.get(1..).unwrap_or_default();
    let mut z = Inflater::default();
    let first = z.inflate(raw, max).map(<[u8]>::to_vec);
    if let Ok(out) = &first {
        assert!(out.len() <= max);
    }
    let again = z.inflate(raw, max).map(<[u8]>::to_vec);
    assert_eq!(first.is_ok(), again.is_ok());
    if let (Ok(a), Ok(b)) = (first, again) {
        assert_eq!(a, b);
    }
});
