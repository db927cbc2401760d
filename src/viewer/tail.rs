//! The live tail: follows a facility's live file from its end and sends
//! each new complete line that passes the filter as a Server-Sent Event.
//! It survives rotation: when the live name stops pointing at the file
//! being read (renamed to its backup), the old file is read to its end
//! first, then the new live file from its start, so no line is skipped
//! or repeated. A poll every 250 ms keeps it independent of the writer
//! (it reads the files as any reader would) and within the 2 s a person
//! watching expects. A `compress_on_write` live file (`.log.gz`, one gzip
//! member per write) is followed member by member: a member still being
//! written waits for the next look.

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::scan::Filter;
use super::sources::{Files, Sources};
use crate::config::Facility;

/// How often the live file is looked at.
const POLL: Duration = Duration::from_millis(250);
/// Most bytes read per look (a burst is sent over several looks).
const MAX_READ: usize = 4 << 20;
/// A line longer than this without a `\n` is dropped from the tail.
const MAX_PENDING: usize = 16 << 20;

/// What the tail sends: a line, or a notice about the tail itself.
#[derive(Debug)]
pub(crate) enum TailEvent {
    /// One new line (without its `\n`).
    Line(Vec<u8>),
    /// The file rotated; the tail goes on with the new one.
    Rotated,
}

/// The file the tail is reading.
struct Following {
    /// Its name in the app directory (the live name).
    name: String,
    file: File,
    /// `(dev, ino)` when opened: a rotation gives the name another.
    ident: (u64, u64),
    /// How far it has been read (compressed bytes, for gzip).
    pos: u64,
    /// A `compress_on_write` file: gzip members.
    gzip: bool,
}

/// Follows the live file of `facility` (of `host`, for `file_per_host`)
/// and sends what passes `filter` to `tx`, until `tx` is closed.
pub(crate) async fn follow(
    files: Files,
    facility: Arc<Facility>,
    host: Option<String>,
    filter: Filter,
    tx: mpsc::Sender<TailEvent>,
) {
    let year = chrono::Datelike::year(&chrono::Local::now());
    let mut current: Option<Following> = None;
    let mut pending: Vec<u8> = Vec::new();
    // Compressed bytes not yet decoded (gzip live files).
    let mut raw: Vec<u8> = Vec::new();
    let mut buf = vec![0u8; 64 << 10];
    let mut interval = tokio::time::interval(POLL);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut first = true;
    // The live name was seen pointing at a new file: read the old one to
    // its end once more, then switch.
    let mut draining = false;
    loop {
        tokio::select! {
            _ = interval.tick() => {}
            () = tx.closed() => return,
        }
        let Ok(sources) = Sources::list(&files.logdir, &facility, host.as_deref(), &files.state)
        else {
            continue;
        };
        let live = sources.files.iter().find(|s| s.live);
        if current.is_none() {
            let Some(src) = live else { continue };
            let Ok(file) = sources.open(src) else {
                continue;
            };
            let Ok(meta) = file.metadata() else { continue };
            // The first file is read from its end (what is new from now);
            // one that appears after a rotation, from its start.
            let pos = if first { meta.len() } else { 0 };
            first = false;
            current = Some(Following {
                name: src.name.clone(),
                file,
                ident: (meta.dev(), meta.ino()),
                pos,
                gzip: src.codec.is_some(),
            });
        }
        let Some(Following {
            name,
            file,
            ident,
            pos,
            gzip,
        }) = current.as_mut()
        else {
            continue;
        };
        // Read what is new, up to MAX_READ this time round.
        let mut read = 0;
        loop {
            let n = file.read_at(&mut buf, *pos).unwrap_or_default();
            if n == 0 {
                break;
            }
            *pos += n as u64;
            read += n;
            if *gzip {
                raw.extend_from_slice(&buf[..n]);
            } else {
                pending.extend_from_slice(&buf[..n]);
            }
            if read >= MAX_READ {
                break;
            }
        }
        if *gzip {
            decode_members(&mut raw, &mut pending);
        }
        if let Some(cut) = memchr::memrchr(b'\n', &pending).map(|i| i + 1) {
            let mut lines = Vec::new();
            filter.each_line(&pending[..cut], year, &mut |line| {
                lines.push(line.to_vec());
                true
            });
            pending.drain(..cut);
            for line in lines {
                if tx.send(TailEvent::Line(line)).await.is_err() {
                    return;
                }
            }
        } else if pending.len() > MAX_PENDING {
            pending.clear();
        }
        if raw.len() > MAX_PENDING {
            // Not a member that is still being written: a corrupt one.
            raw.clear();
        }
        if read > 0 {
            continue;
        }
        // Nothing new: has the live name moved on to another file? The
        // writer renames only after its last write to the old file, so
        // one more read after the rename was seen finds everything.
        if draining {
            draining = false;
            current = None;
            pending.clear();
            raw.clear();
            if tx.send(TailEvent::Rotated).await.is_err() {
                return;
            }
        } else if sources.identity(name).is_some_and(|id| id != *ident) {
            draining = true;
        }
    }
}

/// Moves every complete gzip member at the start of `raw` into `out`,
/// decoded; an unfinished member stays in `raw` for the next look.
fn decode_members(raw: &mut Vec<u8>, out: &mut Vec<u8>) {
    let mut consumed = 0;
    while consumed < raw.len() {
        let mut input = std::io::Cursor::new(&raw[consumed..]);
        let mut member = Vec::new();
        let done = flate2::bufread::GzDecoder::new(&mut input).read_to_end(&mut member);
        if done.is_err() {
            break;
        }
        consumed += input.position() as usize;
        out.extend_from_slice(&member);
    }
    raw.drain(..consumed);
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    fn member(text: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(text).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn gzip_members_are_decoded_once_whole() {
        let mut raw = member(b"one\n");
        let second = member(b"two\nthree\n");
        raw.extend_from_slice(&second[..second.len() / 2]);
        let mut out = Vec::new();
        decode_members(&mut raw, &mut out);
        assert_eq!(out, b"one\n");
        assert_eq!(raw, &second[..second.len() / 2]);
        raw.extend_from_slice(&second[second.len() / 2..]);
        decode_members(&mut raw, &mut out);
        assert_eq!(out, b"one\ntwo\nthree\n");
        assert!(raw.is_empty());
    }
}
