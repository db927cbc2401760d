//! Syslog input: RFC 6587 framing and message parsing (issue 13). Any
//! bytes are framed within the cap and parsed without a panic, bodies come
//! out without control characters, and the zero-copy RFC 5424 fast path
//! reads every message it accepts exactly as `syslog_loose` does.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    loghogd::fuzz_syslog(data);
});
