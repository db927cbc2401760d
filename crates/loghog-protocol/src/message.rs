//! The JSON message inside a frame (SPEC §1): decode (borrowing from the
//! payload where no escapes force a copy) and encode.
//!
//! Clients in the wild send ASCII JSON with `\uXXXX` escapes, surrogate pairs
//! included; serde_json decodes those and only then allocates.

use std::borrow::Cow;

use serde::{Deserialize, Serialize};

mod fast;

/// The only protocol version there is.
pub const VERSION: u32 = 1;

/// One log message as sent on the wire.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
pub struct Message<'a> {
    /// Protocol version; must be [`VERSION`].
    pub version: u32,
    /// Selects the application in facilities.conf.
    #[serde(borrow)]
    pub app_id: Cow<'a, str>,
    /// Dotted submodule path; `""` or `"root"` is the root facility.
    #[serde(borrow)]
    pub module: Cow<'a, str>,
    /// Client's UNIX time, seconds.
    pub stamp: i64,
    /// Client's sub-second part.
    pub nsecs: i64,
    /// The formatted log line; may hold newlines.
    #[serde(borrow)]
    pub body: Cow<'a, str>,
    /// Sender's host name; the peer address is used when absent.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<Cow<'a, str>>,
    /// Lowercase hex HMAC-MD5 (SPEC §3), when the facility has a secret.
    #[serde(borrow, default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Cow<'a, str>>,
}

/// Why a payload is not a usable message.
#[derive(Debug)]
pub enum MessageError {
    /// Not UTF-8, not JSON, or a field missing or of the wrong type.
    Json(serde_json::Error),
    /// A version this daemon does not speak.
    Version(u32),
}

impl std::fmt::Display for MessageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            MessageError::Json(e) => write!(f, "bad message JSON: {e}"),
            MessageError::Version(v) => write!(f, "unsupported protocol version {v}"),
        }
    }
}

impl std::error::Error for MessageError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            MessageError::Json(e) => Some(e),
            MessageError::Version(_) => None,
        }
    }
}

impl From<serde_json::Error> for MessageError {
    fn from(e: serde_json::Error) -> MessageError {
        MessageError::Json(e)
    }
}

// === impl Message ===

impl<'a> Message<'a> {
    /// Decodes a payload (already inflated).
    ///
    /// # Errors
    /// Invalid UTF-8 or JSON, a missing or mistyped required field, or a
    /// version other than 1.
    pub fn decode(payload: &'a [u8]) -> Result<Message<'a>, MessageError> {
        if let Some(msg) = fast::decode(payload) {
            return Ok(msg);
        }
        let msg: Message<'a> = serde_json::from_slice(payload)?;
        if msg.version != VERSION {
            return Err(MessageError::Version(msg.version));
        }
        Ok(msg)
    }

    /// Appends the JSON encoding to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        // Serializing plain strings and integers into a Vec cannot fail.
        let _ = serde_json::to_writer(out, self);
    }

    /// The facility path this message asks for: `""` for the root facility,
    /// else the dotted path with any leading `root.` removed.
    pub fn module_path(&self) -> &str {
        normalize_module(&self.module)
    }
}

/// Normalizes a module path: `""`/`"root"` → `""`, `"root.web"` → `"web"`.
pub fn normalize_module(module: &str) -> &str {
    if module == "root" {
        ""
    } else {
        module.strip_prefix("root.").unwrap_or(module)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_python_client_json_with_escapes() {
        // As Python's json.dumps writes it: ASCII with \u escapes, a surrogate pair.
        let raw = br#"{"version": 1, "app_id": "app", "module": "root.web", "stamp": 1358363502, "nsecs": 12043, "hostname": "h1", "body": "caf\u00e9 \ud83d\ude00", "extra": [1,2]}"#;
        let m = Message::decode(raw).unwrap();
        assert_eq!(m.body, "café 😀");
        assert_eq!(m.module_path(), "web");
        assert_eq!(m.hostname.as_deref(), Some("h1"));
        assert!(m.signature.is_none());
    }

    #[test]
    fn rejects_missing_and_mistyped_fields() {
        for bad in [
            &br#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1}"#[..],
            br#"{"version": 1, "app_id": 5, "module": "", "stamp": 1, "nsecs": 1, "body": "x"}"#,
            br#"{"version": 1, "app_id": "a", "module": "", "stamp": "1", "nsecs": 1, "body": "x"}"#,
            br#"{"version": 2, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "x"}"#,
            br#"[1,2,3]"#,
            b"\xff\xfe{}",
            br#"{"version": 1, "app_id": "a", "module": "", "stamp": 1, "nsecs": 1, "body": "\ud800"}"#,
        ] {
            assert!(Message::decode(bad).is_err(), "{:?}", String::from_utf8_lossy(bad));
        }
    }

    #[test]
    fn encode_decode_round_trip() {
        let m = Message {
            version: 1,
            app_id: "a".into(),
            module: "x.y".into(),
            stamp: 5,
            nsecs: 6,
            body: "line\nnext".into(),
            hostname: None,
            signature: Some("00".into()),
        };
        let mut out = Vec::new();
        m.encode(&mut out);
        assert_eq!(Message::decode(&out).unwrap(), m);
    }
}
