//! The file line (SPEC §4): `YYYY-MM-DD HH:MM:SS.ffffff - {host} - {body}\n`,
//! written by the router straight into a route's pending batch.

use crate::timefmt::STAMP_LEN;

/// Bytes a line adds besides the host and the body.
pub(crate) const OVERHEAD: usize = STAMP_LEN + 7;

/// Appends one line: the receipt `stamp`, the host and the body.
pub(crate) fn push(buf: &mut Vec<u8>, stamp: &[u8; STAMP_LEN], host: &str, body: &str) {
    buf.reserve(OVERHEAD + host.len() + body.len());
    buf.extend_from_slice(stamp);
    buf.extend_from_slice(b" - ");
    buf.extend_from_slice(host.as_bytes());
    buf.extend_from_slice(b" - ");
    buf.extend_from_slice(body.as_bytes());
    buf.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_layout() {
        let mut buf = Vec::new();
        let stamp = *b"2026-12-02 10:00:00.000001";
        push(&mut buf, &stamp, "web01", "hello\nworld");
        assert_eq!(buf, b"2026-12-02 10:00:00.000001 - web01 - hello\nworld\n");
        assert_eq!(buf.len(), OVERHEAD + 5 + 11);
    }
}
