//! loghogd.conf parsing: any text is accepted or refused with a message
//! naming the file, never a panic.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use loghogd::config::{Config, Overrides};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `parse` resolves listen host names other than localhost with the
    // system resolver; keep the fuzzer off the network by leaving out every
    // input that could set a listen address.
    if text.to_ascii_lowercase().contains("listen") {
        return;
    }
    let path = Path::new("/etc/loghogd/loghogd.conf");
    if let Err(e) = Config::parse(text, path, &Overrides::default()) {
        assert_eq!(e.file, path);
        assert!(!e.problem.is_empty());
    }
});
