//! Message signing (SPEC §3): HMAC-MD5 over `app_id`, `module`, `stamp`,
//! `nsecs` and `body`, hex encoded. Verification compares in constant time
//! (hmac's `verify_slice`); secrets are never logged.

use hmac::{Hmac, Mac};
use md5::Md5;

use crate::Message;

type HmacMd5 = Hmac<Md5>;

/// Why a message's signature was not accepted.
#[derive(Debug, PartialEq, Eq)]
pub enum AuthError {
    /// The facility has a secret and the message carries no signature.
    Missing,
    /// The signature is not 32 hex digits.
    Malformed,
    /// The signature does not match.
    Mismatch,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            AuthError::Missing => "missing signature",
            AuthError::Malformed => "malformed signature",
            AuthError::Mismatch => "bad signature",
        })
    }
}

impl std::error::Error for AuthError {}

/// A facility's signing key, with the keyed HMAC state computed once:
/// keying HMAC-MD5 is two of the seven or so MD5 blocks one message costs.
#[derive(Clone)]
pub struct Key {
    secret: Box<str>,
    keyed: HmacMd5,
}

impl Key {
    /// The key for `secret`.
    pub fn new(secret: &str) -> Key {
        // HMAC accepts keys of any length, so this cannot fail.
        let keyed = HmacMd5::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
        Key {
            secret: secret.into(),
            keyed,
        }
    }

    /// The secret as configured.
    pub fn secret(&self) -> &str {
        &self.secret
    }

    fn mac(&self, s: &Signed<'_>) -> HmacMd5 {
        let mut mac = self.keyed.clone();
        let mut ibuf = itoa::Buffer::new();
        mac.update(s.app_id.as_bytes());
        mac.update(s.module.as_bytes());
        mac.update(ibuf.format(s.stamp).as_bytes());
        mac.update(ibuf.format(s.nsecs).as_bytes());
        mac.update(s.body.as_bytes());
        mac
    }

    /// The lowercase hex signature of `msg`.
    pub fn sign(&self, msg: &Message<'_>) -> String {
        self.sign_fields(&Signed::of(msg))
    }

    /// The lowercase hex signature of the signed fields.
    pub fn sign_fields(&self, fields: &Signed<'_>) -> String {
        let tag = self.mac(fields).finalize().into_bytes();
        let mut out = String::with_capacity(32);
        for b in tag {
            out.push(char::from(HEX[(b >> 4) as usize]));
            out.push(char::from(HEX[(b & 0xf) as usize]));
        }
        out
    }

    /// Checks the signature carried by `msg` in constant time.
    ///
    /// # Errors
    /// [`AuthError`] says whether it was missing, malformed or wrong.
    pub fn verify(&self, msg: &Message<'_>) -> Result<(), AuthError> {
        self.verify_fields(&Signed::of(msg), msg.signature.as_deref())
    }

    /// Checks `signature` over the signed fields in constant time.
    ///
    /// # Errors
    /// [`AuthError`] says whether it was missing, malformed or wrong.
    pub fn verify_fields(
        &self,
        fields: &Signed<'_>,
        signature: Option<&str>,
    ) -> Result<(), AuthError> {
        let sig = signature.ok_or(AuthError::Missing)?;
        let mut tag = [0u8; 16];
        decode_hex(sig.as_bytes(), &mut tag).ok_or(AuthError::Malformed)?;
        self.mac(fields)
            .verify_slice(&tag)
            .map_err(|_| AuthError::Mismatch)
    }
}

/// The fields a signature covers, in signing order (SPEC §3). The host name
/// is not among them: the old protocol never signed it.
#[derive(Debug, Clone, Copy)]
pub struct Signed<'a> {
    /// `app_id` as sent.
    pub app_id: &'a str,
    /// `module` as sent (not normalized: `root.web` and `web` sign differently).
    pub module: &'a str,
    /// The client's UNIX time, seconds.
    pub stamp: i64,
    /// The client's sub-second part, nanoseconds.
    pub nsecs: i64,
    /// The formatted log line.
    pub body: &'a str,
}

impl<'a> Signed<'a> {
    /// The signed fields of a wire message.
    pub fn of(msg: &'a Message<'_>) -> Signed<'a> {
        Signed {
            app_id: &msg.app_id,
            module: &msg.module,
            stamp: msg.stamp,
            nsecs: msg.nsecs,
            body: &msg.body,
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret: Debug output can reach a log line.
        f.write_str("<redacted>")
    }
}

/// Returns the lowercase hex signature of `msg` under `secret`.
pub fn sign(secret: &str, msg: &Message<'_>) -> String {
    Key::new(secret).sign(msg)
}

/// Checks the signature carried by `msg` against `secret` in constant time.
///
/// # Errors
/// [`AuthError`] says whether it was missing, malformed or wrong.
pub fn verify(secret: &str, msg: &Message<'_>) -> Result<(), AuthError> {
    Key::new(secret).verify(msg)
}

const HEX: &[u8; 16] = b"0123456789abcdef";

fn decode_hex(src: &[u8], out: &mut [u8; 16]) -> Option<()> {
    if src.len() != 32 {
        return None;
    }
    fn nibble(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    for (i, pair) in src.chunks_exact(2).enumerate() {
        out[i] = nibble(pair[0])? << 4 | nibble(pair[1])?;
    }
    Some(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vector() -> Message<'static> {
        Message {
            version: 1,
            app_id: "app-name".into(),
            module: "web.foo".into(),
            stamp: 1358363502,
            nsecs: 12043,
            body: "If numbers aren’t beautiful, I don’t know what is. –Paul Erdős".into(),
            hostname: None,
            signature: None,
        }
    }

    #[test]
    fn old_daemon_test_vector() {
        assert_eq!(
            sign("01WzaGPu", &vector()),
            "396d1459bf34d782ebe156fd02b8e591"
        );
    }

    #[test]
    fn verify_accepts_good_and_rejects_bad() {
        let mut m = vector();
        assert_eq!(verify("01WzaGPu", &m), Err(AuthError::Missing));
        m.signature = Some("396d1459bf34d782ebe156fd02b8e591".into());
        assert_eq!(verify("01WzaGPu", &m), Ok(()));
        assert_eq!(verify("other", &m), Err(AuthError::Mismatch));
        m.signature = Some("396D1459BF34D782EBE156FD02B8E591".into());
        assert_eq!(verify("01WzaGPu", &m), Ok(()));
        m.signature = Some("xyz".into());
        assert_eq!(verify("01WzaGPu", &m), Err(AuthError::Malformed));
        m.signature = Some("396d1459bf34d782ebe156fd02b8e592".into());
        assert_eq!(verify("01WzaGPu", &m), Err(AuthError::Mismatch));
    }
}
