//! The live tail: follows a facility's live file from its end and sends
//! each new complete line that passes the filter as a Server-Sent Event.
//! It survives rotation: when the live name stops pointing at the file
//! being read (renamed to its backup), the old file is read to its end
//! first, then the new live file from its start, so no line is skipped
//! or repeated. A poll every 250 ms keeps it independent of the writer
//! (it reads the files as any reader would) and within the 2 s a person
//! watching expects.

use std::fs::File;
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
    // The file being read: (name, file, identity, position).
    let mut current: Option<(String, File, (u64, u64), u64)> = None;
    let mut pending: Vec<u8> = Vec::new();
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
        let live = sources.files.iter().find(|s| s.live && s.codec.is_none());
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
            current = Some((src.name.clone(), file, (meta.dev(), meta.ino()), pos));
        }
        let Some((name, file, ident, pos)) = current.as_mut() else {
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
            pending.extend_from_slice(&buf[..n]);
            if read >= MAX_READ {
                break;
            }
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
            if tx.send(TailEvent::Rotated).await.is_err() {
                return;
            }
        } else if sources.identity(name).is_some_and(|id| id != *ident) {
            draining = true;
        }
    }
}
