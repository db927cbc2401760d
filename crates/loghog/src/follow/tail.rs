//! One followed path, `tail -F` style: the file now at the path plus any
//! rotated-away file still being drained ([`Source`]s, oldest first), read
//! in whole lines, with positions that only move on acknowledgement.
//!
//! - Rename-and-recreate: a new inode at the path starts a new source at
//!   offset 0; the old file keeps being read until it has been quiet for
//!   `rotate_wait` (nginx writes to the old file until it gets USR1).
//! - copytruncate: a file shorter than what was read, or whose head no
//!   longer matches its fingerprint, is read again from offset 0.
//! - A missing file is waited for; when it appears it is read from the start.

use std::fs::{File, Metadata};
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::parse::{Parsed, W3cFields};
use super::state::{fnv1a, PathState, SourceState};
use super::{FollowOptions, Ship};

/// Bytes of a file's head covered by its fingerprint.
const HEAD_BYTES: u64 = 256;

/// Bytes asked for per read.
const READ_CHUNK: usize = 128 * 1024;

/// Identity of a file across renames.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FileId {
    dev: u64,
    ino: u64,
}

impl FileId {
    fn of(meta: &Metadata) -> FileId {
        use std::os::unix::fs::MetadataExt;
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// One open file and how far it has been read, shipped and acknowledged.
struct Source {
    /// The open file; follows the inode through renames.
    file: File,
    /// Its identity, to tell it from a new file at the same path.
    id: FileId,
    /// Bytes read but not yet shipped (complete lines, then maybe a partial
    /// one); `buf[0]` is at file offset `buf_start`.
    buf: Vec<u8>,
    /// File offset of `buf[0]`.
    buf_start: u64,
    /// Bytes of `buf` already shipped.
    consumed: usize,
    /// Offset acknowledged by a flush: what the state file records.
    acked: u64,
    /// Bytes of the head covered by `head_hash` (up to [`HEAD_BYTES`]).
    head_len: u64,
    /// Fingerprint of the head (see [`SourceState::head_hash`]).
    head_hash: u64,
    /// W3C column names in force at the shipped position.
    fields: W3cFields,
    /// When a newer file took the path; `None` for the current file.
    retired_at: Option<Instant>,
    /// When a read last returned data.
    last_data: Instant,
    /// The last read returned nothing.
    at_eof: bool,
    /// The file shrank (copytruncate): ship what is buffered, then start
    /// again at offset 0.
    truncated: bool,
}

// === impl Source ===

impl Source {
    /// A source for `file` positioned at `offset`.
    fn open(file: File, id: FileId, offset: u64, fields: W3cFields) -> std::io::Result<Source> {
        let mut src = Source {
            file,
            id,
            buf: Vec::new(),
            buf_start: offset,
            consumed: 0,
            acked: offset,
            head_len: 0,
            head_hash: 0,
            fields,
            retired_at: None,
            last_data: Instant::now(),
            at_eof: false,
            truncated: false,
        };
        src.file.seek(SeekFrom::Start(offset))?;
        src.update_head()?;
        Ok(src)
    }

    /// Offset up to which lines were handed to the shipper.
    fn shipped(&self) -> u64 {
        self.buf_start + self.consumed as u64
    }

    /// Offset up to which the file was read.
    fn read_pos(&self) -> u64 {
        self.buf_start + self.buf.len() as u64
    }

    /// The first `len` bytes of the file's head, by positional read (the
    /// read position stays where it is).
    fn head(&self, len: u64) -> std::io::Result<Vec<u8>> {
        use std::os::unix::fs::FileExt;
        let mut head = vec![0u8; len as usize];
        let mut got = 0;
        while got < head.len() {
            match self.file.read_at(&mut head[got..], got as u64)? {
                0 => break,
                n => got += n,
            }
        }
        head.truncate(got);
        Ok(head)
    }

    /// Extends the fingerprint while the file is shorter than [`HEAD_BYTES`].
    fn update_head(&mut self) -> std::io::Result<()> {
        let want = HEAD_BYTES.min(self.read_pos());
        if want > self.head_len {
            let head = self.head(want)?;
            self.head_len = head.len() as u64;
            self.head_hash = fnv1a(&head);
        }
        Ok(())
    }

    /// Whether the head still is what was fingerprinted.
    fn head_matches(&self) -> std::io::Result<bool> {
        if self.head_len == 0 {
            return Ok(true);
        }
        let head = self.head(self.head_len)?;
        Ok(head.len() as u64 == self.head_len && fnv1a(&head) == self.head_hash)
    }

    /// Notices copytruncate: the file is shorter than what was read, or its
    /// head is no longer what was fingerprinted (truncated and rewritten up
    /// to or past our position before we looked: a poll can miss the moment
    /// the file was short). The head is read on every look: one small
    /// positional read, cheaper than trusting timestamps of coarse grain.
    fn check_truncation(&mut self, path: &Path) {
        if self.truncated {
            return;
        }
        let Ok(meta) = self.file.metadata() else {
            return;
        };
        let len = meta.len();
        let shrunk = len < self.read_pos();
        let rewritten = !shrunk && !self.head_matches().unwrap_or(true);
        if shrunk || rewritten {
            tracing::info!(path = %path.display(), at = self.read_pos(), len, "file truncated, reading it again from the start");
            self.truncated = true;
        }
    }

    /// After a truncation, once everything buffered was acknowledged: read
    /// the file again from offset 0.
    fn restart_if_truncated(&mut self) {
        if !self.truncated || self.consumed < self.buf.len() || self.acked < self.shipped() {
            return;
        }
        self.buf.clear();
        self.buf_start = 0;
        self.consumed = 0;
        self.acked = 0;
        self.head_len = 0;
        self.head_hash = 0;
        self.truncated = false;
        self.at_eof = false;
        let _ = self.file.seek(SeekFrom::Start(0));
    }

    /// Reads the next chunk after what is buffered; `Ok(0)` at end of file.
    fn fill(&mut self) -> std::io::Result<usize> {
        if self.consumed > 0 {
            // Keep only the unshipped tail (usually a partial line).
            self.buf.drain(..self.consumed);
            self.buf_start += self.consumed as u64;
            self.consumed = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_CHUNK, 0);
        let res = self.file.read(&mut self.buf[old..]);
        let n = *res.as_ref().unwrap_or(&0);
        self.buf.truncate(old + n);
        let n = res?;
        if n == 0 {
            self.at_eof = true;
        } else {
            self.at_eof = false;
            self.last_data = Instant::now();
            if self.head_len < HEAD_BYTES {
                self.update_head()?;
            }
        }
        Ok(n)
    }

    /// The next whole line as a `buf` range (newline and a `\r` before it
    /// excluded), consuming it. A line longer than `max_line` is cut into
    /// pieces of at most `max_line` bytes at UTF-8 boundaries, so each
    /// fits in a message. `last` also yields an unterminated remainder: the
    /// file will not grow any more.
    fn next_line(&mut self, max_line: usize, last: bool) -> Option<std::ops::Range<usize>> {
        let start = self.consumed;
        let rest = &self.buf[start..];
        if rest.is_empty() {
            return None;
        }
        let (end, next) = match memchr::memchr(b'\n', rest) {
            Some(i) if i <= max_line => (start + i, start + i + 1),
            found if found.is_some() || rest.len() > max_line => {
                let mut cut = start + max_line;
                // Back off to a character boundary (continuation bytes are 10xxxxxx).
                while cut > start + 1 && (self.buf[cut] & 0xc0) == 0x80 {
                    cut -= 1;
                }
                (cut, cut)
            }
            _ if last => (self.buf.len(), self.buf.len()),
            _ => return None,
        };
        self.consumed = next;
        let end = if end > start && self.buf[end - 1] == b'\r' {
            end - 1
        } else {
            end
        };
        Some(start..end)
    }

    /// Whether this rotated-away file is done: quiet for `rotate_wait`
    /// since it was replaced and since its last data.
    fn is_quiet(&self, opts: &FollowOptions) -> bool {
        match self.retired_at {
            Some(at) => {
                self.at_eof
                    && at.elapsed() >= opts.rotate_wait
                    && self.last_data.elapsed() >= opts.rotate_wait
            }
            None => false,
        }
    }

    fn snapshot(&self) -> SourceState {
        SourceState {
            dev: self.id.dev,
            ino: self.id.ino,
            offset: self.acked,
            head_len: self.head_len,
            head_hash: self.head_hash,
            w3c_fields: self.fields.clone(),
        }
    }
}

/// What one batch may still hold: the agent never has more than this
/// queued in the client unflushed.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    /// Messages left.
    pub lines: usize,
    /// Body bytes left.
    pub bytes: usize,
}

impl Budget {
    fn is_spent(&self) -> bool {
        self.lines == 0 || self.bytes == 0
    }

    fn spend(&mut self, body_bytes: usize) {
        self.lines = self.lines.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(body_bytes.max(1));
    }
}

/// A followed path and the files read for it.
pub struct Tail {
    /// The path as given.
    path: PathBuf,
    /// Oldest first; the last one is (normally) the file at `path`.
    sources: Vec<Source>,
    /// Until the first look: a file found then starts at its end (unless
    /// `from_start`), as `tail -F -n0` does. Cleared when the state had an
    /// entry for this path: a file that appeared while the agent was
    /// stopped is new and read whole.
    start_at_end: bool,
    /// The last problem logged for this path, so it is logged once and not
    /// on every look.
    last_problem: Option<String>,
}

// === impl Tail ===

impl Tail {
    /// A path to follow, resuming the files `saved` lists: each is found at
    /// the path or, when rotated away, by its inode in the same directory,
    /// and resumed at its acknowledged offset if its head still matches.
    pub fn restore(path: &Path, saved: Option<&PathState>, opts: &FollowOptions) -> Tail {
        let mut tail = Tail {
            path: path.to_path_buf(),
            sources: Vec::new(),
            start_at_end: saved.is_none() && !opts.from_start,
            last_problem: None,
        };
        for st in saved.map(|s| s.sources.as_slice()).unwrap_or_default() {
            let id = FileId {
                dev: st.dev,
                ino: st.ino,
            };
            let Some(file) = tail.find(id) else {
                tracing::warn!(path = %path.display(), ino = st.ino, offset = st.offset,
                    "a file in the state is gone; what it held past the offset is lost");
                continue;
            };
            match Source::open(file, id, st.offset, st.w3c_fields.clone()) {
                Ok(mut src) => {
                    src.head_len = st.head_len;
                    src.head_hash = st.head_hash;
                    let len = src.file.metadata().map(|m| m.len()).unwrap_or(0);
                    if len < st.offset || !src.head_matches().unwrap_or(false) {
                        tracing::warn!(path = %path.display(), ino = st.ino,
                            "file changed while stopped (truncated or replaced), reading it from the start");
                        match Source::open(src.file, id, 0, None) {
                            Ok(fresh) => src = fresh,
                            Err(_) => continue,
                        }
                    }
                    tail.sources.push(src);
                }
                Err(e) => {
                    tracing::warn!(path = %path.display(), cause = %e, "cannot resume file")
                }
            }
        }
        // All but the file now at the path are rotated away: drain them.
        let now_id = std::fs::metadata(path).ok().map(|m| FileId::of(&m));
        let now = Instant::now();
        for src in &mut tail.sources {
            if Some(src.id) != now_id {
                src.retired_at = Some(now);
            }
        }
        tail
    }

    /// Opens the file with identity `id`: at the path, or under another
    /// name in its directory (`access.log.1` after a rotation).
    fn find(&self, id: FileId) -> Option<File> {
        let matches = |p: &Path| {
            std::fs::metadata(p)
                .map(|m| m.is_file() && FileId::of(&m) == id)
                .unwrap_or(false)
        };
        let open = |p: &Path| {
            let file = File::open(p).ok()?;
            let meta = file.metadata().ok()?;
            (FileId::of(&meta) == id).then_some(file)
        };
        if matches(&self.path) {
            return open(&self.path);
        }
        let dir = match self.path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let p = entry.path();
            if matches(&p) {
                return open(&p);
            }
        }
        None
    }

    fn problem(&mut self, what: String) {
        if self.last_problem.as_deref() != Some(what.as_str()) {
            tracing::warn!(path = %self.path.display(), "{what}");
            self.last_problem = Some(what);
        }
    }

    /// Looks at the path: opens a new file there (retiring the previous
    /// one), notices truncation, and closes rotated files that are done.
    pub fn refresh(&mut self, opts: &FollowOptions) {
        let start_at_end = std::mem::take(&mut self.start_at_end);
        match std::fs::metadata(&self.path) {
            Ok(meta) if meta.is_file() => {
                let id = FileId::of(&meta);
                if !self.sources.iter().any(|s| s.id == id) {
                    self.open_new(start_at_end);
                }
            }
            Ok(_) => self.problem("not a regular file, not followed".to_string()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => self.problem(format!("cannot look at the file: {e}")),
        }
        for src in &mut self.sources {
            // Check first: a truncation found with nothing left to ship
            // starts over at once, not on the next wake-up.
            src.check_truncation(&self.path);
            src.restart_if_truncated();
        }
        self.sources.retain(|s| {
            let done = s.is_quiet(opts) && s.consumed == s.buf.len() && s.acked == s.shipped();
            !done
        });
    }

    fn open_new(&mut self, start_at_end: bool) {
        let file = match File::open(&self.path) {
            Ok(f) => f,
            Err(e) => return self.problem(format!("cannot open the file: {e}")),
        };
        // Identity from the open file: the path may have changed since the stat.
        let meta = match file.metadata() {
            Ok(m) => m,
            Err(e) => return self.problem(format!("cannot stat the open file: {e}")),
        };
        let id = FileId::of(&meta);
        if self.sources.iter().any(|s| s.id == id) {
            return;
        }
        let offset = if start_at_end { meta.len() } else { 0 };
        match Source::open(file, id, offset, None) {
            Ok(src) => {
                let now = Instant::now();
                for old in &mut self.sources {
                    old.retired_at.get_or_insert(now);
                }
                if !self.sources.is_empty() {
                    tracing::info!(path = %self.path.display(), "file rotated, following the new one");
                }
                self.last_problem = None;
                self.sources.push(src);
            }
            Err(e) => self.problem(format!("cannot read the file: {e}")),
        }
    }

    /// Ships lines until `budget` is spent, oldest file first. Returns
    /// whether any bytes were consumed (a W3C directive consumes bytes
    /// without sending a line).
    pub fn collect(&mut self, budget: &mut Budget, opts: &FollowOptions, ship: &dyn Ship) -> bool {
        let mut progressed = false;
        let path = &self.path;
        for src in &mut self.sources {
            while !budget.is_spent() {
                let last = src.truncated || (src.at_eof && src.is_quiet(opts));
                if let Some(range) = src.next_line(opts.max_line_bytes, last) {
                    progressed = true;
                    let line = String::from_utf8_lossy(&src.buf[range]);
                    match opts.format.parse(&line, &mut src.fields) {
                        Parsed::Body(body) => {
                            ship.send(&opts.module, &body);
                            budget.spend(body.len());
                        }
                        Parsed::Directive => {}
                    }
                    continue;
                }
                if src.truncated {
                    break;
                }
                match src.fill() {
                    Ok(0) => {
                        if src.is_quiet(opts) && src.consumed < src.buf.len() {
                            // The rotated file's unterminated last line goes
                            // out on the next turn of this loop.
                            continue;
                        }
                        break;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        tracing::warn!(path = %path.display(), cause = %e, "read failed");
                        break;
                    }
                }
            }
        }
        progressed
    }

    /// Everything shipped was flushed: it is acknowledged.
    pub fn ack(&mut self) {
        for src in &mut self.sources {
            src.acked = src.shipped();
        }
    }

    /// The state-file entry for this path.
    pub fn snapshot(&self) -> PathState {
        PathState {
            path: self.path.clone(),
            sources: self.sources.iter().map(Source::snapshot).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// A source over a temp file holding `content`, read to its end.
    fn source(content: &[u8]) -> (tempfile::NamedTempFile, Source) {
        let mut tmp = tempfile::NamedTempFile::new().unwrap();
        tmp.write_all(content).unwrap();
        let file = File::open(tmp.path()).unwrap();
        let id = FileId::of(&file.metadata().unwrap());
        let mut src = Source::open(file, id, 0, None).unwrap();
        while src.fill().unwrap() > 0 {}
        (tmp, src)
    }

    fn lines(src: &mut Source, max_line: usize, last: bool) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(r) = src.next_line(max_line, last) {
            out.push(String::from_utf8_lossy(&src.buf[r]).into_owned());
        }
        out
    }

    #[test]
    fn whole_lines_only_crlf_stripped_partial_kept() {
        let (_tmp, mut src) = source(b"one\r\ntwo\n\nthr");
        assert_eq!(lines(&mut src, 100, false), ["one", "two", ""]);
        assert_eq!(src.shipped(), 10, "the partial line is not consumed");
        assert_eq!(lines(&mut src, 100, true), ["thr"]);
        assert_eq!(src.shipped(), 13);
    }

    #[test]
    fn long_lines_are_cut_at_character_boundaries() {
        // "é" is two bytes: a cut at byte 5 would split the third one.
        let (_tmp, mut src) = source("ééééé\nab\n".as_bytes());
        assert_eq!(lines(&mut src, 5, false), ["éé", "éé", "é", "ab"]);
    }

    #[test]
    fn truncation_by_size_and_by_rewritten_head() {
        let (tmp, mut src) = source(b"aaaa\nbbbb\n");
        let path = tmp.path().to_path_buf();
        src.check_truncation(&path);
        assert!(!src.truncated);
        // Same length, other content: only the fingerprint can tell.
        std::fs::write(&path, b"cccc\ndddd\n").unwrap();
        src.check_truncation(&path);
        assert!(src.truncated, "a rewritten head is a truncation");

        let (tmp, mut src) = source(b"aaaa\nbbbb\n");
        let f = std::fs::OpenOptions::new()
            .write(true)
            .open(tmp.path())
            .unwrap();
        f.set_len(3).unwrap();
        src.check_truncation(tmp.path());
        assert!(src.truncated, "a shorter file is a truncation");
    }
}
