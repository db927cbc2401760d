//! Message decoding, fast path against serde_json: `Message::decode` (which
//! tries the fast path first) must agree with serde_json on every input —
//! same value when both accept, and neither may accept what the other
//! refuses (the version check aside).
#![no_main]

use libfuzzer_sys::fuzz_target;
use loghog_protocol::{Message, VERSION};

fuzz_target!(|data: &[u8]| {
    let ours = Message::decode(data);
    let reference: Result<Message<'_>, _> = serde_json::from_slice(data);
    match (ours, reference) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Ok(b)) => assert_ne!(b.version, VERSION, "decode refused what serde takes"),
        (Ok(a), Err(e)) => panic!("decode accepted what serde refuses ({e}): {a:?}"),
        (Err(_), Err(_)) => {}
    }
});
