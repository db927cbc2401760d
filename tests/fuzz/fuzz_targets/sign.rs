//! Signature checking: any signature string is judged without panicking, a
//! message signed with a key verifies under it, and flipping any field
//! breaks the signature.
#![no_main]

use libfuzzer_sys::fuzz_target;
use loghog_protocol::{Key, Signed};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let mut parts = text.splitn(4, '\u{0}');
    let secret = parts.next().unwrap_or_default();
    let body = parts.next().unwrap_or_default();
    let module = parts.next().unwrap_or_default();
    let signature = parts.next().unwrap_or_default();
    let key = Key::new(secret);
    let fields = Signed {
        app_id: "app",
        module,
        stamp: data.len() as i64,
        nsecs: 7,
        body,
    };
    let _ = key.verify_fields(&fields, Some(signature));
    let good = key.sign_fields(&fields);
    assert_eq!(key.verify_fields(&fields, Some(&good)), Ok(()));
    let other = Signed {
        nsecs: 8,
        ..fields
    };
    assert!(key.verify_fields(&other, Some(&good)).is_err());
});
