//! The relay's wire format (issue 16): one NATS message is one block of
//! many records, each a message as the edge received it (its app, module,
//! host, the file it belongs in, its body and syslog header). Also the
//! file key a record is partitioned by, and the partition function, so
//! every edge sends one file's records to one partition (one writer).
//!
//! ```text
//! block   = "LHB1" , u32 record_count , record*
//! record  = u32 record_len , i64 receipt_unix_micros , u8 flags (bit0 = syslog meta) ,
//!           str16 app_id , str16 module , str16 host , str16 file_key , str32 body , [meta]
//! meta    = u8 facility , u8 severity , u8 has_ts , [i64 ts_unix_micros , i32 ts_offset_secs] ,
//!           ostr16 app_name , ostr16 procid , ostr16 msgid , str32 structured_data
//! ```
//!
//! Integers are little-endian; `str16`/`str32` are a length then UTF-8,
//! `ostr16` uses the length 0xFFFF for "none". Decoding borrows every
//! string from the payload. Payloads come from the network, so every read
//! is bounds-checked and nothing here panics: a block whose framing is
//! wrong is refused whole, a record whose fields are wrong is an error for
//! that record only (`record_len` skips it) and the rest still decode.

use chrono::{DateTime, FixedOffset};
use loghog_protocol::normalize_module;

use crate::record::SyslogMeta;

/// The first four bytes of every block.
pub(crate) const MAGIC: &[u8; 4] = b"LHB1";
/// Magic plus record count.
pub(crate) const BLOCK_HEADER_LEN: usize = 8;

/// `flags` bit: the record carries a syslog header.
const HAS_SYSLOG: u8 = 1;
/// `ostr16` length that means "none".
const NONE16: u16 = 0xFFFF;
/// Longest `str32` written: a body or structured data past it is cut (at
/// a character boundary) so that `record_len` can never overflow.
const MAX_STR32: usize = 1 << 30;

/// One forwarded message.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ForwardRecord<'a> {
    /// When the edge received it, microseconds since the Unix epoch.
    pub(crate) received_micros: i64,
    /// The application, as sent.
    pub(crate) app_id: &'a str,
    /// The module path, as sent (the signature covered it as sent).
    pub(crate) module: &'a str,
    /// The host the edge resolved (the sender's name, or its address).
    pub(crate) host: &'a str,
    /// The file it belongs in ([`file_key`]), which chose its partition.
    pub(crate) file_key: &'a str,
    /// The formatted log line.
    pub(crate) body: &'a str,
    /// The syslog header; `cred` is never carried (`None` after decode).
    pub(crate) syslog: Option<SyslogMeta<'a>>,
}

/// Why a block or one record of it could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CodecError {
    /// The payload does not start with `LHB1`.
    #[error("not a loghog block (bad magic)")]
    BadMagic,
    /// The records' lengths do not add up to the payload with the count
    /// the header gives (a truncated or padded block).
    #[error("block framing is wrong: {0}")]
    Framing(&'static str),
    /// A record ended inside the named field.
    #[error("record truncated in {0}")]
    Truncated(&'static str),
    /// The named string field is not UTF-8.
    #[error("{0} is not UTF-8")]
    BadUtf8(&'static str),
    /// The syslog timestamp or its offset is out of range.
    #[error("syslog timestamp out of range")]
    BadTimestamp,
}

// === encoding ===

/// Appends the 8-byte block header (magic and record count).
pub(crate) fn encode_block_header(out: &mut Vec<u8>, count: u32) {
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&count.to_le_bytes());
}

/// Appends one `record`. Strings longer than their length field allows are
/// cut at a character boundary (an app id, module or host that long was
/// refused by every input already; a body past 1 GiB cannot occur).
pub(crate) fn encode_record(out: &mut Vec<u8>, rec: &ForwardRecord<'_>) {
    let start = out.len();
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&rec.received_micros.to_le_bytes());
    out.push(if rec.syslog.is_some() { HAS_SYSLOG } else { 0 });
    for s in [rec.app_id, rec.module, rec.host, rec.file_key] {
        put_str16(out, s, usize::from(u16::MAX));
    }
    put_str32(out, rec.body);
    if let Some(m) = &rec.syslog {
        out.push(m.facility);
        out.push(m.severity);
        match &m.timestamp {
            None => out.push(0),
            Some(ts) => {
                out.push(1);
                out.extend_from_slice(&ts.timestamp_micros().to_le_bytes());
                out.extend_from_slice(&ts.offset().local_minus_utc().to_le_bytes());
            }
        }
        for s in [m.app_name, m.procid, m.msgid] {
            match s {
                None => out.extend_from_slice(&NONE16.to_le_bytes()),
                Some(s) => put_str16(out, s, usize::from(NONE16 - 1)),
            }
        }
        put_str32(out, m.structured_data);
    }
    // At most 7 strings of < 64 KiB and two of <= 1 GiB: always fits.
    let len = u32::try_from(out.len() - start - 4).unwrap_or(u32::MAX);
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
}

fn put_str16(out: &mut Vec<u8>, s: &str, max: usize) {
    let s = clip(s, max);
    // `clip` kept it within `max` <= u16::MAX.
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

fn put_str32(out: &mut Vec<u8>, s: &str) {
    let s = clip(s, MAX_STR32);
    out.extend_from_slice(&(s.len() as u32).to_le_bytes());
    out.extend_from_slice(s.as_bytes());
}

/// `s` cut to at most `max` bytes at a character boundary.
fn clip(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

// === decoding ===

/// The records of a block whose framing was checked.
#[derive(Debug, Clone)]
pub(crate) struct BlockRecords<'a> {
    rest: &'a [u8],
    remaining: u32,
}

/// Checks a block's magic and framing (the records' lengths add up to the
/// payload, with the count the header gives) and iterates its records.
///
/// # Errors
/// [`CodecError::BadMagic`] or [`CodecError::Framing`]: the block is
/// poison as a whole.
pub(crate) fn decode_block(payload: &[u8]) -> Result<BlockRecords<'_>, CodecError> {
    let Some((magic, rest)) = payload.split_first_chunk::<4>() else {
        return Err(CodecError::BadMagic);
    };
    if magic != MAGIC {
        return Err(CodecError::BadMagic);
    }
    let Some((count, records)) = rest.split_first_chunk::<4>() else {
        return Err(CodecError::Framing("no record count"));
    };
    let count = u32::from_le_bytes(*count);
    // Walk the lengths only: a wrong count or a cut payload is found
    // before any record is handed out.
    let mut walk = records;
    for _ in 0..count {
        let Some((len, after)) = walk.split_first_chunk::<4>() else {
            return Err(CodecError::Framing("fewer records than the count"));
        };
        let len = u32::from_le_bytes(*len) as usize;
        if after.len() < len {
            return Err(CodecError::Framing("a record runs past the end"));
        }
        walk = &after[len..];
    }
    if !walk.is_empty() {
        return Err(CodecError::Framing("bytes after the last record"));
    }
    Ok(BlockRecords {
        rest: records,
        remaining: count,
    })
}

impl<'a> Iterator for BlockRecords<'a> {
    type Item = Result<ForwardRecord<'a>, CodecError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        self.remaining -= 1;
        let mut r = Cursor(self.rest);
        // The framing was checked by `decode_block`; still checked here so
        // that no path can read out of bounds.
        let record = match r
            .u32("record_len")
            .and_then(|len| r.take(len as usize, "record"))
        {
            Ok(record) => record,
            Err(e) => {
                self.remaining = 0;
                return Some(Err(e));
            }
        };
        self.rest = r.0;
        Some(decode_record(record))
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.remaining as usize;
        (n, Some(n))
    }
}

/// One record's fields (after `record_len`). Bytes past the known fields
/// are ignored: a later version may append some.
fn decode_record(bytes: &[u8]) -> Result<ForwardRecord<'_>, CodecError> {
    let mut r = Cursor(bytes);
    let received_micros = i64::from_le_bytes(r.array("receipt time")?);
    let flags = r.u8("flags")?;
    let app_id = r.str16("app_id")?;
    let module = r.str16("module")?;
    let host = r.str16("host")?;
    let file_key = r.str16("file_key")?;
    let body = r.str32("body")?;
    let syslog = if flags & HAS_SYSLOG == 0 {
        None
    } else {
        let facility = r.u8("facility")?;
        let severity = r.u8("severity")?;
        let timestamp = match r.u8("has_ts")? {
            0 => None,
            _ => {
                let micros = i64::from_le_bytes(r.array("timestamp")?);
                let offset = i32::from_le_bytes(r.array("timestamp offset")?);
                let offset = FixedOffset::east_opt(offset).ok_or(CodecError::BadTimestamp)?;
                let utc =
                    DateTime::from_timestamp_micros(micros).ok_or(CodecError::BadTimestamp)?;
                Some(utc.with_timezone(&offset))
            }
        };
        Some(SyslogMeta {
            facility,
            severity,
            timestamp,
            app_name: r.ostr16("app_name")?,
            procid: r.ostr16("procid")?,
            msgid: r.ostr16("msgid")?,
            structured_data: r.str32("structured_data")?,
            cred: None,
        })
    };
    Ok(ForwardRecord {
        received_micros,
        app_id,
        module,
        host,
        file_key,
        body,
        syslog,
    })
}

/// Bounds-checked little-endian reads off the front of a slice.
struct Cursor<'a>(&'a [u8]);

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodecError> {
        if self.0.len() < n {
            return Err(CodecError::Truncated(what));
        }
        let (head, tail) = self.0.split_at(n);
        self.0 = tail;
        Ok(head)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], CodecError> {
        let (head, tail) = self
            .0
            .split_first_chunk::<N>()
            .ok_or(CodecError::Truncated(what))?;
        self.0 = tail;
        Ok(*head)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, CodecError> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodecError> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn utf8(&mut self, n: usize, what: &'static str) -> Result<&'a str, CodecError> {
        std::str::from_utf8(self.take(n, what)?).map_err(|_| CodecError::BadUtf8(what))
    }

    fn str16(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        let n = u16::from_le_bytes(self.array(what)?);
        self.utf8(usize::from(n), what)
    }

    fn ostr16(&mut self, what: &'static str) -> Result<Option<&'a str>, CodecError> {
        match u16::from_le_bytes(self.array(what)?) {
            NONE16 => Ok(None),
            n => self.utf8(usize::from(n), what).map(Some),
        }
    }

    fn str32(&mut self, what: &'static str) -> Result<&'a str, CodecError> {
        let n = self.u32(what)? as usize;
        self.utf8(n, what)
    }
}

// === partitioning ===

/// The key of the file a record is written to: `app_id/module_path` (the
/// module normalized, `root` for none), plus `/host` for `file_per_host`
/// facilities. One key, one partition, so one writer owns each file.
pub(crate) fn file_key(app_id: &str, module: &str, host: Option<&str>) -> String {
    let module = normalize_module(module);
    let module = if module.is_empty() { "root" } else { module };
    match host {
        Some(h) => format!("{app_id}/{module}/{h}"),
        None => format!("{app_id}/{module}"),
    }
}

/// The partition of `file_key`: FNV-1a 64 modulo `partitions`. Fixed for
/// ever: every edge and every version must agree (0 partitions give 0).
pub(crate) fn partition_of(file_key: &str, partitions: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in file_key.bytes() {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
    }
    // The remainder is below `partitions`, a u32.
    hash.checked_rem(u64::from(partitions)).unwrap_or(0) as u32
}

/// The fuzzing entry point (tests/fuzz target `codec`): decodes `data` as
/// a block; every record that decodes re-encodes to the same bytes.
#[doc(hidden)]
pub fn fuzz_codec(data: &[u8]) {
    let Ok(records) = decode_block(data) else {
        return;
    };
    let mut out = Vec::new();
    encode_block_header(&mut out, 0);
    for rec in records.flatten() {
        out.truncate(BLOCK_HEADER_LEN);
        encode_record(&mut out, &rec);
        out[4..8].copy_from_slice(&1u32.to_le_bytes());
        let again: Vec<_> = decode_block(&out)
            .map(|b| b.collect::<Vec<_>>())
            .unwrap_or_default();
        assert_eq!(again, [Ok(rec)], "a decoded record re-encodes the same");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta<'a>() -> SyslogMeta<'a> {
        let ts = DateTime::parse_from_rfc3339("2026-12-03T05:54:22.123456+01:30").unwrap();
        SyslogMeta {
            facility: 4,
            severity: 3,
            timestamp: Some(ts),
            app_name: Some("sshd"),
            procid: Some("812"),
            msgid: None,
            structured_data: "[x@1 a=\"b\"]",
            cred: None,
        }
    }

    fn rec<'a>(body: &'a str, syslog: Option<SyslogMeta<'a>>) -> ForwardRecord<'a> {
        ForwardRecord {
            received_micros: 1_764_741_262_000_001,
            app_id: "web",
            module: "root.api",
            host: "h-1",
            file_key: "web/api",
            body,
            syslog,
        }
    }

    fn block(records: &[ForwardRecord<'_>]) -> Vec<u8> {
        let mut out = Vec::new();
        encode_block_header(&mut out, records.len() as u32);
        for r in records {
            encode_record(&mut out, r);
        }
        out
    }

    #[test]
    fn round_trip_with_and_without_syslog_meta() {
        let mut no_ts = meta();
        no_ts.timestamp = None;
        no_ts.app_name = None;
        no_ts.structured_data = "";
        let want = [
            rec("plain line\nsecond", None),
            rec("syslog line ü", Some(meta())),
            rec("", Some(no_ts)),
        ];
        let payload = block(&want);
        assert_eq!(&payload[..4], b"LHB1");
        let got: Vec<_> = decode_block(&payload).unwrap().collect();
        assert_eq!(got.len(), 3);
        for (g, w) in got.into_iter().zip(&want) {
            assert_eq!(g.as_ref(), Ok(w));
        }
        // The offset survives, not only the instant.
        let b = block(&[rec("x", Some(meta()))]);
        let r = decode_block(&b).unwrap().next().unwrap().unwrap();
        let ts = r.syslog.unwrap().timestamp.unwrap();
        assert_eq!(ts.offset().local_minus_utc(), 5400);
        assert_eq!(ts.to_rfc3339(), "2026-12-03T05:54:22.123456+01:30");
    }

    /// The fuzz seed was written by an independent encoder (a few lines
    /// of Python following the format in the module header): this
    /// decoder reads it, and this encoder writes the same bytes.
    #[test]
    fn the_committed_seed_matches_the_documented_format() {
        let seed = include_bytes!("../../tests/fuzz/corpus/codec/two-records");
        let got: Vec<_> = decode_block(seed).unwrap().map(Result::unwrap).collect();
        let mut m = meta();
        m.timestamp = DateTime::from_timestamp_micros(1_764_741_262_123_456)
            .map(|t| t.with_timezone(&FixedOffset::east_opt(5400).unwrap()));
        let want = [rec("plain line", None), rec("syslog line", Some(m))];
        assert_eq!(got, want);
        assert_eq!(block(&want), seed);
    }

    #[test]
    fn an_empty_block_decodes_to_nothing() {
        assert_eq!(decode_block(&block(&[])).unwrap().count(), 0);
    }

    #[test]
    fn a_poison_record_is_skipped_and_the_others_decode() {
        let mut payload = Vec::new();
        encode_block_header(&mut payload, 3);
        encode_record(&mut payload, &rec("first", None));
        let bad_at = payload.len();
        encode_record(&mut payload, &rec("\u{e9}\u{e9}", None));
        encode_record(&mut payload, &rec("third", Some(meta())));
        // Break the second body's UTF-8 (its last byte): é is C3 A9.
        let second_len = u32::from_le_bytes(payload[bad_at..bad_at + 4].try_into().unwrap());
        let last = bad_at + 4 + second_len as usize - 1;
        assert_eq!(payload[last], 0xA9);
        payload[last] = 0xFF;
        let got: Vec<_> = decode_block(&payload).unwrap().collect();
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap().body, "first");
        assert_eq!(got[1], Err(CodecError::BadUtf8("body")));
        assert_eq!(got[2].as_ref().unwrap().body, "third");

        // A record whose length is too short for its fields: that record
        // only (the framing still adds up, so the block is kept).
        let mut short = Vec::new();
        encode_block_header(&mut short, 2);
        short.extend_from_slice(&3u32.to_le_bytes());
        short.extend_from_slice(&[1, 2, 3]);
        encode_record(&mut short, &rec("after", None));
        let got: Vec<_> = decode_block(&short).unwrap().collect();
        assert_eq!(got[0], Err(CodecError::Truncated("receipt time")));
        assert_eq!(got[1].as_ref().unwrap().body, "after");
    }

    #[test]
    fn a_truncated_or_padded_block_is_refused_whole() {
        let payload = block(&[rec("a", None), rec("b", Some(meta()))]);
        for cut in [5, 8, 9, 12, payload.len() - 1] {
            assert!(
                matches!(
                    decode_block(&payload[..cut]),
                    Err(CodecError::Framing(_) | CodecError::BadMagic)
                ),
                "cut at {cut}"
            );
        }
        let mut padded = payload.clone();
        padded.push(0);
        assert_eq!(
            decode_block(&padded).err(),
            Some(CodecError::Framing("bytes after the last record"))
        );
        // A count larger than the records there.
        let mut more = payload.clone();
        more[4..8].copy_from_slice(&3u32.to_le_bytes());
        assert_eq!(
            decode_block(&more).err(),
            Some(CodecError::Framing("fewer records than the count"))
        );
        let mut huge = payload;
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_block(&huge).is_err());
    }

    #[test]
    fn bad_magic_is_refused() {
        let mut payload = block(&[rec("a", None)]);
        payload[0] = b'X';
        assert_eq!(decode_block(&payload).err(), Some(CodecError::BadMagic));
        assert_eq!(decode_block(b"").err(), Some(CodecError::BadMagic));
        assert_eq!(decode_block(b"LHB").err(), Some(CodecError::BadMagic));
    }

    #[test]
    fn bad_timestamps_are_a_record_error() {
        let mut payload = block(&[rec("a", Some(meta()))]);
        // The offset is the 4 bytes after the 8 of the timestamp, which
        // follow the body, facility, severity and has_ts.
        let m = meta();
        let ts_at = 8 + 4 + 8 + 1 + (2 + 3) + (2 + 8) + (2 + 3) + (2 + 7) + (4 + 1) + 3;
        let ts = m.timestamp.unwrap();
        assert_eq!(
            payload[ts_at..ts_at + 8],
            ts.timestamp_micros().to_le_bytes()
        );
        payload[ts_at + 8..ts_at + 12].copy_from_slice(&(200_000i32).to_le_bytes());
        let got: Vec<_> = decode_block(&payload).unwrap().collect();
        assert_eq!(got, [Err(CodecError::BadTimestamp)]);
    }

    #[test]
    fn any_bytes_decode_without_a_panic() {
        // A cheap stand-in for the fuzzer: every prefix and every one-byte
        // change of a real block.
        let payload = block(&[rec("ab", None), rec("cd", Some(meta()))]);
        for cut in 0..=payload.len() {
            if let Ok(records) = decode_block(&payload[..cut]) {
                records.for_each(drop);
            }
        }
        for i in 0..payload.len() {
            for v in [0u8, 1, 0x7F, 0xFF] {
                let mut p = payload.clone();
                p[i] = v;
                fuzz_codec(&p);
            }
        }
    }

    #[test]
    fn overlong_strings_are_cut_at_a_char_boundary() {
        let host = "é".repeat(40_000); // 80 000 bytes
        let mut r = rec("x", None);
        r.host = &host;
        let payload = block(&[r]);
        let got = decode_block(&payload).unwrap().next().unwrap().unwrap();
        assert_eq!(got.host.len(), 65_534);
        assert!(got.host.chars().all(|c| c == 'é'));
    }

    #[test]
    fn partitions_are_fixed_fnv1a_64() {
        // FNV-1a 64 reference values: "" = cbf29ce484222325,
        // "a" = af63dc4c8601ec8c, "foobar" = 85944171f73967e8.
        assert_eq!(partition_of("", 8), (0xcbf2_9ce4_8422_2325u64 % 8) as u32);
        assert_eq!(partition_of("a", 8), 4);
        assert_eq!(partition_of("foobar", 1000), 968);
        assert_eq!(partition_of("web/root", 8), 6);
        assert_eq!(partition_of("web/api.v1/host-7", 1024), 76);
        assert_eq!(partition_of("anything", 1), 0);
        assert_eq!(partition_of("anything", 0), 0);
    }

    #[test]
    fn file_keys_name_the_file() {
        assert_eq!(file_key("web", "", None), "web/root");
        assert_eq!(file_key("web", "root", None), "web/root");
        assert_eq!(file_key("web", "root.api.v1", None), "web/api.v1");
        assert_eq!(file_key("web", "api", Some("h1")), "web/api/h1");
    }
}
