//! The relay's block format (issue 16): any bytes are refused or decoded
//! without a panic, and every record that decodes re-encodes the same.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghogd::fuzz_codec(data);
});
