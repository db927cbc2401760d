//! facilities.conf parsing, which includes the translation of every
//! `rotate` value (named schedules and five-field cron lines): any text is
//! accepted or refused with a message naming the file, never a panic, and
//! every accepted schedule answers "when next" without panicking.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;
use loghogd::config::FacilityDb;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let path = Path::new("/etc/loghogd/facilities.conf");
    match FacilityDb::parse(text, path) {
        Ok(db) => {
            let now = chrono::Local::now();
            for f in db.iter() {
                let _ = f.rotate.next_after(&now);
                let _ = f.rotate.describe();
            }
        }
        Err(e) => {
            assert_eq!(e.file, path);
            assert!(!e.problem.is_empty());
        }
    }
});
