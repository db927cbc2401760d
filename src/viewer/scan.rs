//! The viewer's search engine: runs a [`Filter`] over a facility's files
//! ([`Sources`]), newest first for pages or oldest first for downloads and
//! the chart, under a [`Budget`] of bytes and time per request.
//!
//! How it stays near grep speed without an index:
//! - a pattern is searched over whole chunks of lines (1 MiB), with
//!   `memchr::memmem` for a literal and `regex::bytes` otherwise (whose
//!   literal prefilters are memchr's), and only lines that hold a match are
//!   split out and checked against the other filters, as ripgrep does;
//! - a plain file is read backwards in chunks (`pread`), so the first page
//!   of a gigabyte file comes from its last megabytes;
//! - a time range is found by binary search in plain `loghog` files, and
//!   files entirely outside it are skipped by their start stamps;
//! - compressed backups are decoded on a thread of their own, a chunk
//!   ahead of the search (the `xz -dc | rg` pipeline, in one process),
//!   and never held whole: newest first keeps only the last page of
//!   matches of a compressed file.
//!
//! Lines are never split across chunks: a chunk always ends after a `\n`,
//! and the unfinished last line of a live file is left for the next look.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use chrono::{NaiveDateTime, TimeDelta};
use memchr::memmem;

use super::lines::{self, key_of, TimeKey};
use super::sources::{decoder, Source, Sources, LIVE};
use crate::output::file::format::LineFormat;
use crate::rotation::backup::parse_stamp;

/// The size of one chunk of lines.
const CHUNK: usize = 1 << 20;
/// The longest line the scanner splits out; a longer one is skipped.
const MAX_LINE: usize = 64 << 20;
/// Receipt times are taken before a batch reaches its file, so a line may
/// be a little older than its file's start, or out of order with its
/// neighbours: time bounds are widened by this much before skipping.
const SLACK: TimeDelta = TimeDelta::seconds(60);

/// What to look for.
#[derive(Debug)]
pub(crate) enum Matcher {
    /// A literal, case-sensitive: memchr's SIMD substring search.
    Literal(Box<memmem::Finder<'static>>),
    /// A regex, or a literal searched case-insensitively.
    Regex(regex::bytes::Regex),
}

// === impl Matcher ===

impl Matcher {
    /// The matcher for a search box: `q` is a regex when `regex`, else a
    /// literal; `icase` folds case.
    ///
    /// # Errors
    /// The regex does not compile (or is too large); the message says why.
    pub(crate) fn new(q: &str, regex: bool, icase: bool) -> Result<Matcher, String> {
        if !regex && !icase {
            return Ok(Matcher::Literal(Box::new(
                memmem::Finder::new(q.as_bytes()).into_owned(),
            )));
        }
        let pattern = if regex {
            q.to_owned()
        } else {
            regex::escape(q)
        };
        regex::bytes::RegexBuilder::new(&pattern)
            .case_insensitive(icase)
            .multi_line(true)
            // Bounded compile: a hostile pattern cannot take the memory.
            .size_limit(1 << 20)
            .dfa_size_limit(8 << 20)
            .build()
            .map(Matcher::Regex)
            .map_err(|e| format!("the search is not a valid regex: {e}"))
    }

    /// The first match in `hay` at or after `from`: `(start, end)`.
    fn find(&self, hay: &[u8], from: usize) -> Option<(usize, usize)> {
        let rest = hay.get(from..)?;
        match self {
            Matcher::Literal(f) => f
                .find(rest)
                .map(|i| (from + i, from + i + f.needle().len())),
            Matcher::Regex(r) => r.find(rest).map(|m| (from + m.start(), from + m.end())),
        }
    }

    /// Whether a match found in a chunk must be checked on its line alone
    /// (a regex may match across lines; a literal without `\n` cannot).
    fn verifies(&self) -> bool {
        matches!(self, Matcher::Regex(_))
    }

    /// Whether to match each line on its own from the start: a literal
    /// holding a newline (it can never match a line) and regexes anchored
    /// to the text's ends (`\A`, `\z`), which mean the line's ends.
    fn by_line(&self) -> bool {
        match self {
            Matcher::Literal(f) => f.needle().contains(&b'\n'),
            Matcher::Regex(r) => r.as_str().contains("\\A") || r.as_str().contains("\\z"),
        }
    }

    /// Whether `line` alone matches (for a match that ran past its line).
    fn is_match(&self, line: &[u8]) -> bool {
        match self {
            Matcher::Literal(f) => f.find(line).is_some(),
            Matcher::Regex(r) => r.is_match(line),
        }
    }
}

/// Everything a line must satisfy.
#[derive(Debug)]
pub(crate) struct Filter {
    /// The search, if any.
    pub(crate) matcher: Option<Matcher>,
    /// The line's host field must be exactly this.
    pub(crate) host: Option<Vec<u8>>,
    /// The line's severity must be at least this (0 = emerg … 7 = debug).
    pub(crate) min_severity: Option<u8>,
    /// Inclusive lower time bound.
    pub(crate) from: Option<NaiveDateTime>,
    /// Exclusive upper time bound.
    pub(crate) to: Option<NaiveDateTime>,
    /// The facility's line format.
    pub(crate) format: LineFormat,
}

/// The filter's bounds as keys, computed once per scan.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    from: Option<TimeKey>,
    to: Option<TimeKey>,
    /// `from - SLACK`: a line older than this ends a newest-first scan.
    from_slack: Option<TimeKey>,
    /// `to + SLACK`: a line newer than this ends an oldest-first scan.
    to_slack: Option<TimeKey>,
}

// === impl Filter ===

impl Filter {
    fn bounds(&self) -> Bounds {
        Bounds {
            from: self.from.as_ref().map(key_of),
            to: self.to.as_ref().map(key_of),
            // URL times near chrono's limits keep no slack rather than panic.
            from_slack: self
                .from
                .map(|t| key_of(&t.checked_sub_signed(SLACK).unwrap_or(t))),
            to_slack: self
                .to
                .map(|t| key_of(&t.checked_add_signed(SLACK).unwrap_or(t))),
        }
    }

    /// Whether anything but the pattern needs the line parsed.
    fn parses(&self) -> bool {
        self.host.is_some()
            || self.min_severity.is_some()
            || self.from.is_some()
            || self.to.is_some()
    }

    /// The non-pattern filters.
    fn accepts(&self, line: &[u8], b: &Bounds, year: i32) -> bool {
        if !self.parses() {
            return true;
        }
        let p = lines::parse(line, self.format, year);
        if let Some(h) = &self.host {
            if p.host != h.as_slice() {
                return false;
            }
        }
        if let Some(min) = self.min_severity {
            if p.severity.is_none_or(|s| s > min) {
                return false;
            }
        }
        if b.from.is_some() || b.to.is_some() {
            let Some(t) = p.time else { return false };
            if b.from.is_some_and(|f| t < f) || b.to.is_some_and(|to| t >= to) {
                return false;
            }
        }
        true
    }

    /// Calls `f(line)` for every accepted line of `chunk` (complete
    /// lines) until it returns false.
    pub(crate) fn each_line(&self, chunk: &[u8], year: i32, f: &mut dyn FnMut(&[u8]) -> bool) {
        let b = self.bounds();
        self.each(chunk, &b, year, &mut |_, line| f(line));
    }

    /// Calls `f(offset_in_chunk, line)` for every accepted line of `chunk`
    /// (complete lines), in order, until it returns false.
    fn each(&self, chunk: &[u8], b: &Bounds, year: i32, f: &mut dyn FnMut(usize, &[u8]) -> bool) {
        let mut pos = 0;
        // Line by line: for patterns that mean something else over a
        // whole chunk, and once a match ran across a newline (`(?s).*`,
        // `[\s\S]`), where searching the rest of the chunk again for
        // every line would be quadratic.
        let mut by_line = self.matcher.as_ref().is_some_and(Matcher::by_line);
        while pos < chunk.len() {
            let next_end = |from: usize| {
                memchr::memchr(b'\n', &chunk[from..]).map_or(chunk.len(), |i| from + i)
            };
            let (ls, le) = match &self.matcher {
                Some(m) if by_line => {
                    let le = next_end(pos);
                    if !m.is_match(&chunk[pos..le]) {
                        pos = le + 1;
                        continue;
                    }
                    (pos, le)
                }
                Some(m) => {
                    let Some((s, e)) = m.find(chunk, pos) else {
                        return;
                    };
                    if s >= chunk.len() {
                        // An empty match after the last `\n`: no line.
                        return;
                    }
                    let ls = memchr::memrchr(b'\n', &chunk[pos..s]).map_or(pos, |i| pos + i + 1);
                    let le = next_end(s);
                    if e > le + 1 {
                        by_line = true;
                    }
                    // A regex match may run over a newline: the line must
                    // match on its own.
                    if m.verifies() && !m.is_match(&chunk[ls..le]) {
                        pos = le + 1;
                        continue;
                    }
                    (ls, le)
                }
                None => {
                    let le = memchr::memchr(b'\n', &chunk[pos..]).map_or(chunk.len(), |i| pos + i);
                    (pos, le)
                }
            };
            let line = &chunk[ls..le];
            if self.accepts(line, b, year) && !f(ls, line) {
                return;
            }
            pos = le + 1;
        }
    }
}

/// Why a scan stopped before the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// `max_scan_bytes` read.
    Bytes,
    /// `max_scan_seconds` passed.
    Time,
}

/// What one request may still read.
#[derive(Debug)]
pub(crate) struct Budget {
    bytes_left: u64,
    deadline: Instant,
    /// Bytes read (decompressed) so far.
    pub(crate) scanned: u64,
    /// Files opened so far.
    pub(crate) files: usize,
}

impl Budget {
    /// A budget of `bytes` and `time`.
    pub(crate) fn new(bytes: u64, time: Duration) -> Budget {
        Budget {
            bytes_left: bytes,
            deadline: Instant::now() + time,
            scanned: 0,
            files: 0,
        }
    }

    /// Whether the time is up (for work that reads nothing, such as
    /// listing directories).
    pub(crate) fn expired(&self) -> bool {
        Instant::now() >= self.deadline
    }

    fn spend(&mut self, n: usize) -> Result<(), Stop> {
        self.scanned += n as u64;
        if Instant::now() >= self.deadline {
            return Err(Stop::Time);
        }
        match self.bytes_left.checked_sub(n as u64) {
            Some(left) => {
                self.bytes_left = left;
                Ok(())
            }
            None => Err(Stop::Bytes),
        }
    }
}

/// A place in a facility's history: the file (by generation) and the
/// offset of a line in its decompressed bytes. Lines older than it are
/// the next page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Cursor {
    pub(crate) generation: String,
    pub(crate) offset: u64,
}

impl Cursor {
    /// Parses `generation~offset`.
    pub(crate) fn parse(s: &str) -> Option<Cursor> {
        let (g, o) = s.split_once('~')?;
        if g != LIVE && parse_stamp(g).is_none() {
            return None;
        }
        Some(Cursor {
            generation: g.to_owned(),
            offset: o.parse().ok()?,
        })
    }

    /// The URL form.
    pub(crate) fn encode(&self) -> String {
        format!("{}~{}", self.generation, self.offset)
    }
}

/// How a scan ended.
#[derive(Debug, Default)]
pub(crate) struct Outcome {
    /// Lines emitted.
    pub(crate) shown: usize,
    /// Where the next page starts (a full page was shown).
    pub(crate) next: Option<Cursor>,
    /// The budget ran out: why, and where a scan could go on.
    pub(crate) stopped: Option<(Stop, Option<Cursor>)>,
    /// A compressed file the budget ran out in, left out of the page.
    pub(crate) skipped: Option<String>,
    /// The reader went away (the client closed the connection).
    pub(crate) abandoned: bool,
    /// A file could not be read (named in the message).
    pub(crate) errors: Vec<String>,
}

/// A line found: its file, its offset there, its bytes.
pub(crate) type Emit<'a> = dyn FnMut(&Source, u64, &[u8]) -> bool + 'a;

/// The year of a file, for `rfc3164` stamps.
fn year_of(src: &Source) -> i32 {
    use chrono::Datelike;
    src.started
        .map_or_else(|| chrono::Local::now().year(), |s| s.year())
}

/// Whether file `i` (newest first) can hold lines in the bounds: its lines
/// are from its start to the next newer file's start. Not for `rfc5424`
/// files, whose lines carry the sender's clock rather than the receipt
/// time.
fn overlaps(files: &[Source], i: usize, b: &Bounds, format: LineFormat) -> (bool, bool) {
    if format == LineFormat::Rfc5424 {
        return (false, false);
    }
    let start = files[i].started.map(|s| key_of(&s));
    let end = i
        .checked_sub(1)
        .and_then(|n| files[n].started)
        .map(|s| key_of(&s));
    // Entirely newer than `to`: skip it, older files may still match.
    let newer = matches!((start, b.to_slack), (Some(s), Some(t)) if s > t);
    // Entirely older than `from`: it and every older file are out.
    let older = matches!((end, b.from_slack), (Some(e), Some(f)) if e < f);
    (newer, older)
}

/// Opens `src` for a scan and counts it, with the source as opened (a
/// plain backup compressed since the listing is read from its compressed
/// copy, [`Sources::open_current`]); `None` when it is gone (rotated or
/// pruned since the listing: its lines are elsewhere in the list, or gone)
/// or unreadable (said in `out.errors`).
fn open_counted(
    sources: &Sources,
    src: &Source,
    out: &mut Outcome,
    budget: &mut Budget,
) -> Option<(File, Source)> {
    match sources.open_current(src) {
        Ok(opened) => {
            budget.files += 1;
            Some(opened)
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => None,
        Err(e) => {
            out.errors.push(format!("{}: {e}", src.name));
            None
        }
    }
}

/// The times file `i`'s lines can honestly carry: from its start to the
/// next newer file's start (now, for the newest), widened by [`SLACK`]. A
/// body may hold a newline and then text that looks like a line of its
/// own, with any stamp; only a stamp inside this window may end a scan
/// early.
#[derive(Debug, Clone, Copy)]
struct Window {
    floor: Option<TimeKey>,
    ceil: Option<TimeKey>,
}

impl Window {
    fn of(files: &[Source], i: usize) -> Window {
        let widen = |t: NaiveDateTime, d: TimeDelta| key_of(&t.checked_add_signed(d).unwrap_or(t));
        let next = match i.checked_sub(1) {
            Some(n) => files[n].started,
            None => Some(chrono::Local::now().naive_local()),
        };
        Window {
            floor: files[i].started.map(|t| widen(t, -SLACK)),
            ceil: next.map(|t| widen(t, SLACK)),
        }
    }

    /// Whether the line starting with `stamp` has a time in the window.
    fn holds(&self, stamp: &[u8]) -> bool {
        stamp.len() >= 19
            && self.floor.is_none_or(|f| stamp[..19] >= f[..])
            && self.ceil.is_none_or(|c| stamp[..19] <= c[..])
    }
}

/// Emits up to `limit` lines, newest first, from before `cursor`.
pub(crate) fn newest_first(
    sources: &Sources,
    filter: &Filter,
    cursor: Option<&Cursor>,
    limit: usize,
    budget: &mut Budget,
    emit: &mut Emit<'_>,
) -> Outcome {
    let b = filter.bounds();
    let files = &sources.files;
    let mut out = Outcome::default();
    // Where to start: the cursor's file, or (if it was pruned) the next
    // older one.
    let (first, mut start_offset) = match cursor {
        None => (0, None),
        Some(c) => match files.iter().position(|f| f.generation == c.generation) {
            Some(i) => (i, Some(c.offset)),
            // A `live` cursor of a file that has since got its start stamp.
            None if c.generation == LIVE => match files.iter().position(|f| f.live) {
                Some(i) => (i, Some(c.offset)),
                None => (0, None),
            },
            None => {
                let i = files
                    .iter()
                    .position(|f| {
                        f.started.map(|s| key_of(&s))
                            < parse_stamp(&c.generation).map(|s| key_of(&s))
                    })
                    .unwrap_or(files.len());
                (i, None)
            }
        },
    };
    for i in first..files.len() {
        let (newer, older) = overlaps(files, i, &b, filter.format);
        if older {
            break;
        }
        let before = start_offset.take();
        if newer {
            continue;
        }
        let Some((file, src)) = open_counted(sources, &files[i], &mut out, budget) else {
            continue;
        };
        let src = &src;
        let want = limit - out.shown;
        let w = Window::of(files, i);
        let r = if src.codec.is_none() {
            reverse_plain(&file, src, filter, (&b, w), before, want, budget, emit)
        } else {
            reverse_decoded(file, src, filter, (&b, w), before, want, budget, emit)
        };
        match r {
            Ok(step) => {
                out.shown += step.shown;
                if step.abandoned {
                    out.abandoned = true;
                    return out;
                }
                if let Some(stop) = step.stopped {
                    out.skipped = step.skipped;
                    out.stopped = Some((stop, step.resume));
                    return out;
                }
                if out.shown >= limit {
                    // A page that ended with this file goes on with the
                    // next older one (offset 0: nothing more of this one).
                    out.next = Some(step.resume.unwrap_or(Cursor {
                        generation: src.generation.clone(),
                        offset: 0,
                    }));
                    return out;
                }
                if step.past_from {
                    break;
                }
            }
            Err(e) => out.errors.push(format!("{}: {e}", src.name)),
        }
    }
    out
}

/// What one file contributed to a newest-first scan.
#[derive(Debug, Default)]
struct Step {
    shown: usize,
    /// The page is full or the budget ran out here: lines before this.
    resume: Option<Cursor>,
    stopped: Option<Stop>,
    abandoned: bool,
    /// A line older than `from` was reached: no older file can match.
    past_from: bool,
    /// A compressed file the budget ran out in, not shown.
    skipped: Option<String>,
}

/// Newest first through a plain file, reading chunks backwards.
#[allow(clippy::too_many_arguments)]
fn reverse_plain(
    file: &File,
    src: &Source,
    filter: &Filter,
    (b, w): (&Bounds, Window),
    before: Option<u64>,
    want: usize,
    budget: &mut Budget,
    emit: &mut Emit<'_>,
) -> io::Result<Step> {
    let year = year_of(src);
    let len = file.metadata()?.len();
    let mut end = match before {
        Some(o) => o.min(len),
        None => len,
    };
    // A `to` bound: start where the lines pass it (binary search).
    if let (Some(to), LineFormat::Loghog) = (b.to_slack, filter.format) {
        end = end.min(time_offset(file, len, &to)?.1);
    }
    let mut buf = vec![0u8; CHUNK];
    let mut chunk_len = CHUNK;
    let mut step = Step::default();
    let mut found: Vec<(usize, usize)> = Vec::new();
    let mut first_read = before.is_none();
    while end > 0 {
        let start = end.saturating_sub(chunk_len as u64);
        let n = (end - start) as usize;
        if buf.len() < n {
            buf.resize(n, 0);
        }
        file.read_exact_at(&mut buf[..n], start)?;
        let mut region = &buf[..n];
        // The live file's last line may still be being written.
        if first_read {
            let cut = memchr::memrchr(b'\n', region).map_or(0, |i| i + 1);
            if cut == 0 && start > 0 && chunk_len < MAX_LINE {
                // The unfinished line is longer than the chunk: look
                // further back, from the same end.
                chunk_len = (chunk_len * 2).min(MAX_LINE);
                continue;
            }
            first_read = false;
            end = start + cut as u64;
            region = &buf[..cut];
        }
        let skip = if start == 0 {
            0
        } else {
            match memchr::memchr(b'\n', region) {
                Some(i) => i + 1,
                None if chunk_len < MAX_LINE => {
                    chunk_len = (chunk_len * 2).min(MAX_LINE);
                    continue;
                }
                // A line longer than MAX_LINE: skip this part of it and
                // go on before it.
                None => {
                    end = start;
                    continue;
                }
            }
        };
        let lines = &region[skip..];
        let base = start + skip as u64;
        found.clear();
        filter.each(lines, b, year, &mut |at, line| {
            found.push((at, at + line.len()));
            true
        });
        for &(s, e) in found.iter().rev() {
            if !emit(src, base + s as u64, &lines[s..e]) {
                step.abandoned = true;
                return Ok(step);
            }
            step.shown += 1;
            if step.shown == want {
                // The next page: the lines before this one.
                step.resume = Some(Cursor {
                    generation: src.generation.clone(),
                    offset: base + s as u64,
                });
                return Ok(step);
            }
        }
        if let Err(stop) = budget.spend(n) {
            step.stopped = Some(stop);
            step.resume = Some(Cursor {
                generation: src.generation.clone(),
                offset: base,
            });
            return Ok(step);
        }
        // Past `from`: nothing older can match.
        if let (Some(fs), LineFormat::Loghog) = (b.from_slack, filter.format) {
            if w.holds(lines) && lines[..19] < fs[..] {
                step.past_from = true;
                return Ok(step);
            }
        }
        end = base;
    }
    Ok(step)
}

/// Newest first through a compressed file: decode forward, keep the last
/// `want` matches before `before`.
#[allow(clippy::too_many_arguments)]
fn reverse_decoded(
    file: File,
    src: &Source,
    filter: &Filter,
    (b, w): (&Bounds, Window),
    before: Option<u64>,
    want: usize,
    budget: &mut Budget,
    emit: &mut Emit<'_>,
) -> io::Result<Step> {
    let year = year_of(src);
    let mut ring: VecDeque<(u64, Vec<u8>)> = VecDeque::with_capacity(want.min(1024));
    let mut stopped = None;
    forward_chunks(decoder(file, src.codec), |base, chunk| {
        let limit = before.map(|o| o.saturating_sub(base));
        let chunk = match limit {
            Some(0) => return false,
            Some(l) if (l as usize) < chunk.len() => &chunk[..l as usize],
            _ => chunk,
        };
        filter.each(chunk, b, year, &mut |at, line| {
            if ring.len() == want {
                ring.pop_front();
            }
            ring.push_back((base + at as u64, line.to_vec()));
            true
        });
        if let Err(stop) = budget.spend(chunk.len()) {
            stopped = Some(stop);
            return false;
        }
        // Past `to`: the rest of the file is newer.
        if let (Some(ts), LineFormat::Loghog) = (b.to_slack, filter.format) {
            if let Some(last) = last_line(chunk) {
                if w.holds(last) && last[..19] > ts[..] {
                    return false;
                }
            }
        }
        before.is_none_or(|o| base + (chunk.len() as u64) < o)
    })?;
    let mut step = Step::default();
    if let Some(stop) = stopped {
        // The newest lines of this file were not reached: show none of it
        // (the order would be wrong), say so, and let the link go on with
        // the older files (offset 0: nothing more of this one), or a
        // retry of it would stop at the same place again.
        step.stopped = Some(stop);
        step.skipped = Some(src.name.clone());
        step.resume = Some(Cursor {
            generation: src.generation.clone(),
            offset: 0,
        });
        return Ok(step);
    }
    while let Some((offset, line)) = ring.pop_back() {
        if !emit(src, offset, &line) {
            step.abandoned = true;
            return Ok(step);
        }
        step.shown += 1;
        if step.shown == want {
            step.resume = Some(Cursor {
                generation: src.generation.clone(),
                offset,
            });
        }
    }
    // A compressed file is not cut short by `from`: the start stamp of
    // the next older file decides whether it is read.
    Ok(step)
}

fn last_line(chunk: &[u8]) -> Option<&[u8]> {
    let body = chunk.strip_suffix(b"\n")?;
    Some(memchr::memrchr(b'\n', body).map_or(body, |i| &body[i + 1..]))
}

/// Emits every matching line, oldest first (downloads, the chart).
pub(crate) fn oldest_first(
    sources: &Sources,
    filter: &Filter,
    budget: &mut Budget,
    emit: &mut Emit<'_>,
) -> Outcome {
    let b = filter.bounds();
    let files = &sources.files;
    let mut out = Outcome::default();
    for i in (0..files.len()).rev() {
        let (newer, older) = overlaps(files, i, &b, filter.format);
        if newer {
            // This and every newer file start after `to`.
            break;
        }
        if older {
            continue;
        }
        let Some((file, src)) = open_counted(sources, &files[i], &mut out, budget) else {
            continue;
        };
        let src = &src;
        let year = year_of(src);
        let w = Window::of(files, i);
        let mut start = 0;
        if let (None, Some(from), LineFormat::Loghog) = (src.codec, b.from_slack, filter.format) {
            match file
                .metadata()
                .and_then(|m| time_offset(&file, m.len(), &from))
            {
                Ok((lo, _)) => start = lo,
                Err(e) => out.errors.push(format!("{}: {e}", src.name)),
            }
        }
        // forward_chunks passes complete lines only: a live file's
        // unfinished last line is left out.
        let reader: Box<dyn Read + Send> = if src.codec.is_none() {
            Box::new(OffsetReader { file, pos: start })
        } else {
            decoder(file, src.codec)
        };
        let mut stopped = None;
        let mut done = false;
        let r = forward_chunks(reader, |base, chunk| {
            let base = base + start;
            filter.each(chunk, &b, year, &mut |at, line| {
                if emit(src, base + at as u64, line) {
                    out.shown += 1;
                    true
                } else {
                    out.abandoned = true;
                    false
                }
            });
            if out.abandoned {
                return false;
            }
            if let Err(stop) = budget.spend(chunk.len()) {
                stopped = Some(stop);
                return false;
            }
            if let (Some(ts), LineFormat::Loghog) = (b.to_slack, filter.format) {
                if last_line(chunk).is_some_and(|l| w.holds(l) && l[..19] > ts[..]) {
                    done = true;
                    return false;
                }
            }
            true
        });
        if let Err(e) = r {
            out.errors.push(format!("{}: {e}", src.name));
        }
        if out.abandoned {
            return out;
        }
        if let Some(stop) = stopped {
            out.stopped = Some((stop, None));
            return out;
        }
        if done {
            break;
        }
    }
    out
}

/// Reads a file from an offset with `pread` (no shared seek position).
struct OffsetReader {
    file: File,
    pos: u64,
}

impl Read for OffsetReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read_at(buf, self.pos)?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Feeds `f(offset, chunk)` with chunks of complete lines read from
/// `reader` on a thread of its own (decompression runs one chunk ahead
/// of the search). A last line without `\n` is not passed on. Stops when
/// `f` returns false.
///
/// # Errors
/// A read or decompression error (after the chunks before it were fed).
fn forward_chunks(
    mut reader: Box<dyn Read + Send>,
    mut f: impl FnMut(u64, &[u8]) -> bool,
) -> io::Result<()> {
    // Chunks go over with their length: a recycled buffer keeps its size,
    // so it is never zeroed again (a memset per chunk showed in profiles).
    let (full_tx, full_rx) = mpsc::sync_channel::<io::Result<(u64, Vec<u8>, usize)>>(2);
    let (empty_tx, empty_rx) = mpsc::channel::<Vec<u8>>();
    std::thread::scope(|scope| {
        scope.spawn(move || {
            let mut carry: Vec<u8> = Vec::new();
            let mut offset = 0u64;
            // The rest of a line longer than MAX_LINE is being dropped.
            let mut skipping = false;
            loop {
                let mut buf = empty_rx.try_recv().unwrap_or_default();
                let start = carry.len();
                let want = CHUNK.max(start * 2);
                if buf.len() < want {
                    buf.resize(want, 0);
                }
                buf[..start].copy_from_slice(&carry);
                carry.clear();
                let mut filled = start;
                let mut eof = false;
                while filled < want {
                    match reader.read(&mut buf[filled..want]) {
                        Ok(0) => {
                            eof = true;
                            break;
                        }
                        Ok(n) => filled += n,
                        Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                        Err(e) => {
                            let _ = full_tx.send(Err(e));
                            return;
                        }
                    }
                }
                if skipping {
                    match memchr::memchr(b'\n', &buf[..filled]) {
                        Some(i) => {
                            skipping = false;
                            offset += i as u64 + 1;
                            carry.extend_from_slice(&buf[i + 1..filled]);
                        }
                        None => offset += filled as u64,
                    }
                    if eof {
                        return;
                    }
                    continue;
                }
                let cut = memchr::memrchr(b'\n', &buf[..filled]).map_or(0, |i| i + 1);
                if cut == 0 && !eof && filled < MAX_LINE {
                    // One line longer than the buffer: read on.
                    carry.extend_from_slice(&buf[..filled]);
                    continue;
                }
                carry.extend_from_slice(&buf[cut..filled]);
                if cut > 0 && full_tx.send(Ok((offset, buf, cut))).is_err() {
                    return;
                }
                offset += cut as u64;
                if eof {
                    return;
                }
                if carry.len() >= MAX_LINE {
                    // Skip an overlong line whole, up to its newline.
                    offset += carry.len() as u64;
                    carry.clear();
                    skipping = true;
                }
            }
        });
        let mut fed = Ok(());
        for item in full_rx.iter() {
            let (offset, buf, len) = match item {
                Ok(chunk) => chunk,
                Err(e) => {
                    fed = Err(e);
                    break;
                }
            };
            let go = f(offset, &buf[..len]);
            let _ = empty_tx.send(buf);
            if !go {
                break;
            }
        }
        // Dropping the receiver ends the reader at its next send; the
        // scope joins it only after this, or a reader blocked on a full
        // channel would never end.
        drop(full_rx);
        fed
    })
}

/// Binary search of a plain `loghog` file for `key`: `(lo, hi)` line starts
/// with every line before `lo` older than `key` and `hi` at or past the
/// lines newer than it (within the ordering the file has).
fn time_offset(file: &File, len: u64, key: &TimeKey) -> io::Result<(u64, u64)> {
    let mut lo = 0u64;
    let mut hi = len;
    let mut buf = vec![0u8; 4096];
    while hi - lo > 64 * 1024 {
        let mid = lo + (hi - lo) / 2;
        let n = file.read_at(&mut buf, mid)?;
        let Some(nl) = memchr::memchr(b'\n', &buf[..n]) else {
            // A line over 4 KiB: stop narrowing.
            break;
        };
        let ls = mid + nl as u64 + 1;
        let line = &buf[nl + 1..n];
        if line.len() < 19 {
            break;
        }
        if line[..19] < key[..] {
            lo = ls;
        } else {
            hi = mid;
        }
    }
    // `hi` as a line start.
    let n = file.read_at(&mut buf, hi)?;
    let hi = if hi == len || hi == 0 {
        hi
    } else {
        memchr::memchr(b'\n', &buf[..n]).map_or(len, |i| hi + i as u64 + 1)
    };
    Ok((lo, hi.max(lo)))
}

/// Lines of the live file since `key` (today's count on the index page):
/// counted by newlines after a binary search, so a big file costs little,
/// and within `budget` (`true` with the count when it ran out first).
/// `None` when the file is not a plain `loghog` file.
pub(crate) fn count_since(
    sources: &Sources,
    src: &Source,
    format: LineFormat,
    key: &TimeKey,
    budget: &mut Budget,
) -> Option<(u64, bool)> {
    if src.codec.is_some() || format != LineFormat::Loghog {
        return None;
    }
    let file = sources.open(src).ok()?;
    let len = file.metadata().ok()?.len();
    let (mut pos, _) = time_offset(&file, len, key).ok()?;
    let mut buf = vec![0u8; CHUNK];
    let mut count = 0u64;
    let mut first = true;
    while pos < len {
        let n = file.read_at(&mut buf, pos).ok()?;
        if n == 0 {
            break;
        }
        let mut chunk = &buf[..n];
        if first {
            // Lines of the search window that are still older than `key`.
            first = false;
            let mut skip = 0;
            while chunk.len() - skip >= 19 && chunk[skip..skip + 19] < key[..] {
                match memchr::memchr(b'\n', &chunk[skip..]) {
                    Some(i) => skip += i + 1,
                    None => break,
                }
            }
            chunk = &chunk[skip..];
        }
        count += memchr::memchr_iter(b'\n', chunk).count() as u64;
        pos += n as u64;
        if budget.spend(n).is_err() {
            return Some((count, true));
        }
    }
    Some((count, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(q: Option<Matcher>) -> Filter {
        Filter {
            matcher: q,
            host: None,
            min_severity: None,
            from: None,
            to: None,
            format: LineFormat::Loghog,
        }
    }

    fn lines_of(f: &Filter, chunk: &[u8]) -> Vec<String> {
        let mut out = Vec::new();
        f.each(chunk, &f.bounds(), 2026, &mut |_, l| {
            out.push(String::from_utf8_lossy(l).into_owned());
            true
        });
        out
    }

    #[test]
    fn a_match_selects_its_whole_line_once() {
        let chunk = b"a x b\nnone\nx x x\nlast x";
        let f = filter(Some(Matcher::new("x", false, false).unwrap()));
        assert_eq!(lines_of(&f, chunk), ["a x b", "x x x", "last x"]);
        let f = filter(Some(Matcher::new("X", false, true).unwrap()));
        assert_eq!(lines_of(&f, chunk).len(), 3);
        // A regex that could run across lines only matches within one.
        let f = filter(Some(Matcher::new(r"b\snone", true, false).unwrap()));
        assert!(lines_of(&f, chunk).is_empty());
        let f = filter(Some(Matcher::new(r"^x", true, false).unwrap()));
        assert_eq!(lines_of(&f, chunk), ["x x x"]);
        // Anchors to the text's ends mean the line's ends.
        let f = filter(Some(Matcher::new(r"\Ax", true, false).unwrap()));
        assert_eq!(lines_of(&f, chunk), ["x x x"]);
        let f = filter(Some(Matcher::new(r"x\z", true, false).unwrap()));
        assert_eq!(lines_of(&f, chunk), ["x x x", "last x"]);
        // A pattern matching everything, across lines, selects each line
        // once, and an empty match after the last newline is no line.
        let f = filter(Some(Matcher::new(r"(?s).*", true, false).unwrap()));
        assert_eq!(lines_of(&f, b"a\nb\nc\n").len(), 3);
        let f = filter(Some(Matcher::new(r"x*", true, false).unwrap()));
        assert_eq!(lines_of(&f, b"a\nb\n").len(), 2);
        // A literal with a newline never matches a line.
        let f = filter(Some(Matcher::new("b\nnone", false, false).unwrap()));
        assert!(lines_of(&f, chunk).is_empty());
        assert!(Matcher::new("(", true, false).is_err());
    }

    #[test]
    fn times_at_chrono_limits_do_not_panic() {
        let mut f = filter(None);
        f.from = Some(NaiveDateTime::MIN);
        f.to = Some(NaiveDateTime::MAX);
        let b = f.bounds();
        assert!(b.from_slack.is_some() && b.to_slack.is_some());
        assert!(lines_of(&f, b"2026-12-02 10:11:12.123456 - h - x\n").len() <= 1);
    }

    #[test]
    fn cursors_round_trip_and_refuse_junk() {
        let c = Cursor {
            generation: "2026-12-02-10-11-12-123456".into(),
            offset: 42,
        };
        assert_eq!(Cursor::parse(&c.encode()), Some(c));
        assert!(Cursor::parse("live~7").is_some());
        assert!(Cursor::parse("../etc~7").is_none());
        assert!(Cursor::parse("live~x").is_none());
    }

    #[test]
    fn stopping_after_the_first_chunk_ends_the_reader() {
        // More chunks than the channel holds: the reader must not be left
        // blocked on a send when the consumer stops.
        let text = vec![b'x'; 10 * CHUNK]
            .chunks(99)
            .flat_map(|c| c.iter().copied().chain(std::iter::once(b'\n')))
            .collect::<Vec<u8>>();
        let mut calls = 0;
        forward_chunks(Box::new(std::io::Cursor::new(text)), |_, _| {
            calls += 1;
            false
        })
        .unwrap();
        assert_eq!(calls, 1);
    }

    #[test]
    fn chunks_hold_whole_lines_and_drop_an_unfinished_tail() {
        let mut text = Vec::new();
        for i in 0..300_000 {
            text.extend_from_slice(format!("line {i}\n").as_bytes());
        }
        text.extend_from_slice(b"partial");
        let mut seen = 0usize;
        let mut next = 0u64;
        forward_chunks(Box::new(std::io::Cursor::new(text)), |off, chunk| {
            assert_eq!(off, next);
            assert!(chunk.ends_with(b"\n"));
            next += chunk.len() as u64;
            seen += memchr::memchr_iter(b'\n', chunk).count();
            true
        })
        .unwrap();
        assert_eq!(seen, 300_000);
    }

    /// A plain backup compressed between the listing and the read (right
    /// after a rotation, or by start-up recovery) is read from its
    /// compressed copy: its lines are neither left out nor out of order.
    #[test]
    fn a_plain_backup_compressed_after_the_listing_is_read_from_its_copy() {
        use std::path::Path;
        use std::sync::Mutex;
        let dir = tempfile::tempdir().unwrap();
        let logdir = dir.path();
        let app = logdir.join("app");
        std::fs::create_dir(&app).unwrap();
        let line = |d: u32, n: u32| format!("2026-11-{d} 00:0{n}:00.000000 - h - line {n}\n");
        let backup = app.join("root.log.2026-11-28-00-00-00-000000");
        std::fs::write(
            &backup,
            format!("{}{}{}", line(28, 0), line(28, 1), line(28, 2)),
        )
        .unwrap();
        std::fs::write(
            app.join("root.log"),
            format!("{}{}", line(29, 3), line(29, 4)),
        )
        .unwrap();
        let db = crate::config::FacilityDb::parse(
            "[app]\nrotate = daily\nbackup_count = 5\n",
            Path::new("f"),
        )
        .unwrap();
        let facility = db.iter().find(|f| f.app_id == "app").unwrap();
        let state = Mutex::new(crate::rotation::StateDb::new(logdir.join("state.json")));
        let sources = Sources::list(logdir, facility, None, &state).unwrap();
        assert_eq!(sources.files.len(), 2);
        assert!(sources.files[1].codec.is_none());
        crate::compress::compress_file(&backup, crate::compress::Codec::Xz, 1).unwrap();
        assert!(!backup.exists());
        let f = filter(None);
        let run = |newest: bool| {
            let mut seen = Vec::new();
            let mut emit = |_: &Source, _: u64, l: &[u8]| {
                seen.push(
                    String::from_utf8_lossy(l)
                        .rsplit(' ')
                        .next()
                        .unwrap()
                        .to_owned(),
                );
                true
            };
            let mut budget = Budget::new(1 << 30, Duration::from_secs(60));
            let out = if newest {
                newest_first(&sources, &f, None, 100, &mut budget, &mut emit)
            } else {
                oldest_first(&sources, &f, &mut budget, &mut emit)
            };
            assert!(out.errors.is_empty(), "{:?}", out.errors);
            seen
        };
        assert_eq!(run(true), ["4", "3", "2", "1", "0"]);
        assert_eq!(run(false), ["0", "1", "2", "3", "4"]);
        // A cursor into the plain file goes on in the copy, at the same
        // offset of the decompressed bytes.
        let cursor = Cursor {
            generation: sources.files[1].generation.clone(),
            offset: line(28, 0).len() as u64 * 2,
        };
        let mut seen = 0;
        let mut emit = |_: &Source, _: u64, l: &[u8]| {
            assert!(l.ends_with(b"line 1") || l.ends_with(b"line 0"), "{l:?}");
            seen += 1;
            true
        };
        let mut budget = Budget::new(1 << 30, Duration::from_secs(60));
        newest_first(&sources, &f, Some(&cursor), 100, &mut budget, &mut emit);
        assert_eq!(seen, 2);
    }
}
