//! The forward output's on-disk spool (issue 16), one per partition: the
//! blocks this edge has accepted and JetStream has not acknowledged yet, in
//! `<workdir>/spool/<stream>/p<N>/`. The publisher appends a block per
//! batch, [`Spool::sync`]s, publishes, then [`Spool::ack`]s; a restart replays
//! every block after the `acked` mark, in order. A block published straight
//! from memory takes its seq with [`Spool::reserve`] and reaches the disk
//! only if the broker is slow ([`Spool::append_reserved`]). Blocking std
//! I/O: called from `spawn_blocking` or a thread of its own.
//!
//! On disk: segment files `<first_block_seq:020>.seg` of frames
//! `u32 len, u32 crc32 (of the payload), u64 block_seq, payload`
//! (little-endian), `acked`, the u64 LE seq of the last acknowledged
//! block, and `reserved`, a u64 LE seq no reserved seq has reached yet.
//! Losing or rolling back `acked` only re-publishes blocks, which the
//! stream's duplicate window drops; seqs never repeat, because the newest
//! segment (whose name gives the next seq) is never removed and `reserved`
//! is fsynced before a seq below it is handed out.

use std::collections::VecDeque;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{DirBuilderExt, FileExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::compress::{ctx, sync_dir};

/// Bytes of a frame header: `u32 len, u32 crc32, u64 block_seq`.
const HEADER: u64 = 16;

/// The largest payload a frame may carry. Blocks are at most `batch_bytes`
/// (<= 1 MiB) plus one record; the bound is what lets [`Spool::open`] tell a
/// torn length field from a real one before allocating for it.
pub(crate) const MAX_BLOCK_BYTES: usize = 64 << 20;

/// `ack` fsyncs the `acked` file at most this often: an unsynced mark only
/// costs re-publishing after a crash, an fsync per block would cost a disk
/// round trip per publish.
const ACK_SYNC: Duration = Duration::from_secs(1);

/// The acknowledged mark, and the temporary file it is written through.
const ACKED: &str = "acked";
const ACKED_TMP: &str = "acked.tmp";

/// The reservation ceiling, and its temporary file.
const RESERVED: &str = "reserved";
const RESERVED_TMP: &str = "reserved.tmp";

/// Seqs [`Spool::reserve`] hands out per fsync of `reserved`: one disk
/// round trip per this many blocks; a crash skips at most this many seqs.
const RESERVE_AHEAD: u64 = 1 << 16;

/// Seqs and names at or above this are refused as corrupt: far beyond any
/// real count, and it keeps `seq + n` from overflowing.
const SEQ_LIMIT: u64 = 1 << 62;

/// How big a spool may grow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SpoolLimits {
    /// Most bytes on disk (all segments) before [`Spool::has_room`] says no.
    pub(crate) max_bytes: u64,
    /// A new segment is started once the current one holds this many bytes;
    /// whole segments are what acknowledgements free.
    pub(crate) segment_bytes: u64,
}

/// What [`Spool::open`] found and repaired, for the caller to log.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct OpenReport {
    /// Bytes cut from the end of the newest segment: a block torn by a
    /// SIGKILL or a full disk, or a corrupt block and everything after it.
    pub(crate) cut_bytes: u64,
    /// Corrupt blocks found in older segments; reading of such a segment
    /// stops at the block, and the next segment is read as usual.
    pub(crate) corrupt_blocks: u64,
    /// Unacknowledged seqs that no segment holds any more (after a corrupt
    /// block in an older segment, or a segment removed by hand). [`Spool::read`]
    /// returns them as empty blocks, to be acknowledged without publishing.
    pub(crate) lost_blocks: u64,
    /// The `acked` file existed but did not hold 8 bytes (torn): read as 0,
    /// so everything held is replayed.
    pub(crate) acked_invalid: bool,
    /// Blocks after the acknowledged mark, to be (re-)published.
    pub(crate) pending_blocks: u64,
}

/// One segment file and the index of its valid blocks.
#[derive(Debug)]
struct Segment {
    /// The seq of its first block, from its name.
    first: u64,
    path: PathBuf,
    /// Offset of block `first + i` at index `i`; only blocks that passed
    /// validation (length bound, crc, consecutive seq) are indexed.
    offsets: Vec<u64>,
    /// End of the last valid block: below `bytes` only in an older segment
    /// with a corrupt block.
    valid_end: u64,
    /// The file's length, as counted against `max_bytes`.
    bytes: u64,
}

/// The spool of one partition. See the module docs for the layout.
#[derive(Debug)]
pub(crate) struct Spool {
    dir: PathBuf,
    limits: SpoolLimits,
    /// Oldest first; consecutive, non-overlapping seq ranges.
    segments: VecDeque<Segment>,
    /// Append handle on the newest segment, opened on first use.
    writer: Option<File>,
    /// A failed write could not be cut off the newest segment: the next
    /// append starts a new segment so nothing lands after the torn frame.
    roll: bool,
    /// Read handle, and the `first` of the segment it is on: sequential
    /// reads reuse it, so a read is an index look-up and two `pread`s.
    reader: Option<(u64, File)>,
    /// The seq the next [`Spool::append`] gets.
    next_seq: u64,
    /// Every block <= this is acknowledged.
    acked: u64,
    /// No seq at or above this was ever reserved (durable in `reserved`).
    ceiling: u64,
    /// The reserved seq not yet acknowledged nor appended, if any.
    reserved: Option<u64>,
    /// `acked` was written since its last fsync.
    acked_unsynced: bool,
    /// When `acked` was last fsynced, for [`ACK_SYNC`].
    acked_synced_at: Option<Instant>,
    /// A segment was created since the directory was last fsynced.
    dir_unsynced: bool,
    /// Sum of `segments[..].bytes`.
    disk_bytes: u64,
    /// Frame being written, reused so an append does one `write`.
    scratch: Vec<u8>,
}

// === impl Spool ===

impl Spool {
    /// Opens (creating with mode 0700) the spool in `dir`: scans every
    /// segment, validates every block, cuts a torn or corrupt tail off the
    /// newest segment, removes segments already acknowledged, and
    /// continues seqs after the highest one held or acknowledged.
    ///
    /// # Errors
    /// I/O errors name the file; a segment that is a symlink or not a
    /// regular file is refused, as is an `acked` symlink.
    pub(crate) fn open(dir: &Path, limits: SpoolLimits) -> io::Result<(Spool, OpenReport)> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| ctx(e, "create spool directory", dir))?;
        let mut report = OpenReport::default();

        let mut names = Vec::new();
        for entry in fs::read_dir(dir).map_err(|e| ctx(e, "list spool directory", dir))? {
            let entry = entry.map_err(|e| ctx(e, "list spool directory", dir))?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            let path = entry.path();
            if name == ACKED_TMP || name == RESERVED_TMP {
                // A save that did not reach its rename; the mark is intact.
                remove_if_present(&path).map_err(|e| ctx(e, "remove", &path))?;
                continue;
            }
            let Some(first) = parse_segment_name(name) else {
                continue;
            };
            let kind = entry.file_type().map_err(|e| ctx(e, "stat", &path))?;
            if !kind.is_file() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "spool segment {} is not a regular file (a symlink?); move it away",
                        path.display()
                    ),
                ));
            }
            names.push((first, path));
        }
        names.sort_unstable_by_key(|n| n.0);

        let (file_acked, acked_invalid) = read_mark(&dir.join(ACKED))?;
        report.acked_invalid = acked_invalid;
        // A torn `reserved` reads as 0: it was being raised, and the seqs
        // below its old value are what `acked` and the segments show.
        let (ceiling, _) = read_mark(&dir.join(RESERVED))?;

        let count = names.len();
        let mut segments = VecDeque::with_capacity(count);
        for (i, (first, path)) in names.into_iter().enumerate() {
            let scan = scan_segment(&path, first)?;
            let mut seg = Segment {
                first,
                path,
                offsets: scan.offsets,
                valid_end: scan.valid_end,
                bytes: scan.len,
            };
            if seg.valid_end < seg.bytes {
                if i + 1 == count {
                    // The newest segment is appended to next: nothing may
                    // stay after its last valid block.
                    truncate(&seg.path, seg.valid_end)?;
                    report.cut_bytes += seg.bytes - seg.valid_end;
                    seg.bytes = seg.valid_end;
                } else {
                    report.corrupt_blocks += 1;
                }
            }
            segments.push_back(seg);
        }
        // Overlapping ranges (only by hand): the newer segment wins.
        for i in 1..segments.len() {
            let next_first = segments[i].first;
            let prev = &mut segments[i - 1];
            if prev.end() > next_first {
                let keep = (next_first - prev.first) as usize;
                report.corrupt_blocks += (prev.offsets.len() - keep) as u64;
                prev.valid_end = prev.offsets[keep];
                prev.offsets.truncate(keep);
            }
        }

        // Segments are only removed once all their blocks are acknowledged,
        // oldest first: whatever precedes the oldest one left was acked,
        // even if the `acked` file was lost.
        let mut acked = match segments.front() {
            Some(seg) => file_acked.max(seg.first - 1),
            None => file_acked,
        };
        let mut next_seq = match segments.back() {
            Some(seg) => seg.end().max(acked + 1),
            None => acked + 1,
        };
        for pair in segments.iter().collect::<Vec<_>>().windows(2) {
            let lo = pair[0].end().max(acked + 1);
            report.lost_blocks += pair[1].first.saturating_sub(lo);
        }
        report.pending_blocks = next_seq - 1 - acked;
        if ceiling > next_seq {
            // Seqs below the ceiling may have been published from memory
            // before a crash: giving one again would have the stream drop
            // the new block as a re-send. Nothing held lies in between.
            if report.pending_blocks == 0 {
                acked = ceiling - 1;
            }
            next_seq = ceiling;
        }

        let disk_bytes = segments.iter().map(|s| s.bytes).sum();
        let mut spool = Spool {
            dir: dir.to_path_buf(),
            limits,
            segments,
            writer: None,
            roll: false,
            reader: None,
            next_seq,
            acked,
            ceiling,
            reserved: None,
            acked_unsynced: false,
            acked_synced_at: None,
            dir_unsynced: false,
            disk_bytes,
            scratch: Vec::new(),
        };
        spool.prune()?;
        Ok((spool, report))
    }

    /// Appends one block and returns its seq. Not synced: call
    /// [`Spool::sync`] once per batch, before publishing what it holds.
    ///
    /// # Errors
    /// An empty payload (the spool's marker for a lost block) or one over
    /// [`MAX_BLOCK_BYTES`] is `InvalidInput`; I/O errors name the file. A
    /// failed write leaves no partial frame behind (it is cut off, or the
    /// next append starts a new segment).
    pub(crate) fn append(&mut self, payload: &[u8]) -> io::Result<u64> {
        if payload.is_empty() || payload.len() > MAX_BLOCK_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "spool block of {} bytes (must be 1..={MAX_BLOCK_BYTES})",
                    payload.len()
                ),
            ));
        }
        let seq = self.next_seq;
        self.prepare_writer()?;
        let (Some(seg), Some(writer)) = (self.segments.back_mut(), self.writer.as_mut()) else {
            // prepare_writer leaves both in place or fails.
            return Err(io::Error::other("spool has no open segment"));
        };

        self.scratch.clear();
        // The bound above keeps the length within u32.
        self.scratch
            .extend_from_slice(&(payload.len() as u32).to_le_bytes());
        self.scratch
            .extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
        self.scratch.extend_from_slice(&seq.to_le_bytes());
        self.scratch.extend_from_slice(payload);

        let start = seg.bytes;
        if let Err(err) = writer.write_all(&self.scratch) {
            // A partial frame would hide every block after it at the next
            // open: cut it off, or never append to this segment again.
            if writer.set_len(start).is_err() {
                self.writer = None;
                self.roll = true;
            }
            return Err(ctx(err, "append to spool segment", &seg.path));
        }
        let frame = self.scratch.len() as u64;
        seg.offsets.push(start);
        seg.bytes += frame;
        seg.valid_end = seg.bytes;
        self.disk_bytes += frame;
        self.next_seq += 1;
        Ok(seq)
    }

    /// Hands out the next seq for a block published from memory, without
    /// writing the block: one at a time, until it is acknowledged
    /// ([`Spool::ack`]) or appended after all ([`Spool::append_reserved`]).
    /// The seq is never handed out again, even after a crash.
    ///
    /// # Errors
    /// A seq is already reserved (`InvalidInput`), or `reserved` cannot be
    /// saved.
    pub(crate) fn reserve(&mut self) -> io::Result<u64> {
        if let Some(r) = self.reserved {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("spool seq {r} in {} is still reserved", self.dir.display()),
            ));
        }
        let seq = self.next_seq;
        if seq >= self.ceiling {
            let ceiling = seq + RESERVE_AHEAD;
            self.write_mark(RESERVED, RESERVED_TMP, ceiling, true)?;
            self.ceiling = ceiling;
        }
        self.next_seq += 1;
        self.reserved = Some(seq);
        Ok(seq)
    }

    /// Appends the block of reserved `seq` under that seq: the broker has
    /// not acknowledged it in time, and what follows it goes to disk too.
    ///
    /// # Errors
    /// `seq` is not the reserved one (`InvalidInput`), or as
    /// [`Spool::append`]; on error the seq stays reserved.
    pub(crate) fn append_reserved(&mut self, seq: u64, payload: &[u8]) -> io::Result<u64> {
        if self.reserved != Some(seq) || seq + 1 != self.next_seq {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "spool seq {seq} in {} is not the one reserved",
                    self.dir.display()
                ),
            ));
        }
        self.next_seq = seq;
        match self.append(payload) {
            Ok(got) => {
                self.reserved = None;
                Ok(got)
            }
            Err(e) => {
                self.next_seq = seq + 1;
                Err(e)
            }
        }
    }

    /// The oldest unacknowledged block the segments hold, if any: what to
    /// publish next. Seqs no segment holds (lost, or never written because
    /// they went out from memory before a crash) are passed over; the
    /// acknowledgement of a later block covers them.
    pub(crate) fn next_pending(&self) -> Option<u64> {
        let from = self.acked + 1;
        self.segments
            .iter()
            .find(|seg| seg.end() > from.max(seg.first))
            .map(|seg| from.max(seg.first))
    }

    /// Makes every appended block durable: fdatasync of the open segment,
    /// and of the directory when a segment was created since the last
    /// sync (older segments were synced when they were left).
    ///
    /// # Errors
    /// The fsync's error, naming the file.
    pub(crate) fn sync(&mut self) -> io::Result<()> {
        if let (Some(writer), Some(seg)) = (&self.writer, self.segments.back()) {
            writer
                .sync_data()
                .map_err(|e| ctx(e, "fsync spool segment", &seg.path))?;
        }
        self.sync_dir_if_needed()
    }

    /// Whether a block of `bytes` payload fits: bytes on disk plus its frame
    /// within `max_bytes`. Always true while no block is unacknowledged, so
    /// one block bigger than the whole spool still passes. On-disk bytes
    /// include acknowledged blocks in a segment not yet freed: the disk is
    /// what the limit protects.
    pub(crate) fn has_room(&self, bytes: u64) -> bool {
        self.next_pending().is_none()
            || self.disk_bytes.saturating_add(HEADER).saturating_add(bytes) <= self.limits.max_bytes
    }

    /// Reads block `seq` into `buf` (its payload). `Ok(false)` if `seq` is
    /// not written yet. A seq the spool no longer holds (acknowledged and
    /// freed, or lost to corruption, see [`OpenReport::lost_blocks`]) reads
    /// as `Ok(true)` with `buf` empty: the caller acknowledges it without
    /// publishing, so one bad block never blocks its partition.
    ///
    /// # Errors
    /// I/O errors, naming the file.
    pub(crate) fn read(&mut self, seq: u64, buf: &mut Vec<u8>) -> io::Result<bool> {
        buf.clear();
        if seq >= self.next_seq {
            return Ok(false);
        }
        let idx = self.segments.partition_point(|s| s.first <= seq);
        let Some(seg) = idx.checked_sub(1).map(|i| &self.segments[i]) else {
            return Ok(true);
        };
        let i = (seq - seg.first) as usize;
        let Some(&offset) = seg.offsets.get(i) else {
            return Ok(true);
        };
        let frame_end = seg.offsets.get(i + 1).copied().unwrap_or(seg.valid_end);

        let file = match &mut self.reader {
            Some((first, file)) if *first == seg.first => file,
            reader => {
                let file = open_nofollow(OpenOptions::new().read(true), &seg.path)
                    .map_err(|e| ctx(e, "open spool segment", &seg.path))?;
                &mut reader.insert((seg.first, file)).1
            }
        };
        let mut head = [0u8; HEADER as usize];
        file.read_exact_at(&mut head, offset)
            .map_err(|e| ctx(e, "read spool segment", &seg.path))?;
        let (len, crc, block_seq) = parse_header(&head);
        if u64::from(len) != frame_end - offset - HEADER || block_seq != seq {
            return Ok(changed_on_disk(&seg.path, seq, buf));
        }
        buf.resize(len as usize, 0);
        file.read_exact_at(buf, offset + HEADER)
            .map_err(|e| ctx(e, "read spool segment", &seg.path))?;
        if crc32fast::hash(buf) != crc {
            return Ok(changed_on_disk(&seg.path, seq, buf));
        }
        Ok(true)
    }

    /// Acknowledges every block <= `seq`: saves the mark (fsynced at most
    /// every [`ACK_SYNC`]) and removes the segments it wholly covers, except
    /// the newest, which is still appended to.
    ///
    /// # Errors
    /// `InvalidInput` for a seq not appended yet; I/O errors name the file.
    pub(crate) fn ack(&mut self, seq: u64) -> io::Result<()> {
        if seq <= self.acked {
            return Ok(());
        }
        if seq >= self.next_seq {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "ack of spool block {seq} in {}, but the last appended is {}",
                    self.dir.display(),
                    self.next_seq - 1
                ),
            ));
        }
        self.acked = seq;
        if self.reserved.is_some_and(|r| r <= seq) {
            self.reserved = None;
        }
        // The mark is written (and synced) at most every ACK_SYNC, not on
        // every ack: a create + rename per block was a fifth of the edge's
        // CPU (scripts/bench-relay, perf). A mark left behind by a crash
        // only replays blocks the stream's duplicate window drops, the
        // same as after a power cut before this change.
        if self
            .acked_synced_at
            .is_none_or(|at| at.elapsed() >= ACK_SYNC)
        {
            self.save_acked(true)?;
        } else {
            self.acked_unsynced = true;
        }
        self.prune()
    }

    /// Syncs the open segment and the `acked` mark: the clean shutdown
    /// path (SIGTERM), after which a restart replays nothing acknowledged.
    ///
    /// # Errors
    /// The first failing fsync or write, naming the file.
    pub(crate) fn close(&mut self) -> io::Result<()> {
        self.sync()?;
        if self.acked_unsynced {
            self.save_acked(true)?;
        }
        Ok(())
    }

    /// The last acknowledged seq (0 before any).
    #[cfg(test)]
    pub(crate) fn acked(&self) -> u64 {
        self.acked
    }

    /// The seq the next [`Spool::append`] returns.
    #[cfg(test)]
    pub(crate) fn next_seq(&self) -> u64 {
        self.next_seq
    }

    /// Unacknowledged blocks the segments hold, and the bytes on disk they
    /// take (frames included).
    pub(crate) fn depth(&self) -> (u64, u64) {
        let unacked = self.acked + 1;
        let mut bytes = 0;
        let mut blocks = 0;
        for (i, seg) in self.segments.iter().enumerate() {
            blocks += seg.end().saturating_sub(unacked.max(seg.first));
            if unacked <= seg.first {
                bytes += seg.bytes;
                continue;
            }
            let idx = (unacked - seg.first) as usize;
            if let Some(&offset) = seg.offsets.get(idx) {
                bytes += seg.bytes - offset;
            } else if self.segments.get(i + 1).is_some_and(|n| n.first > unacked) {
                // A corrupt tail still standing for unacknowledged seqs.
                bytes += seg.bytes - seg.valid_end;
            }
        }
        (blocks, bytes)
    }

    /// Leaves `writer` open on a newest segment that ends at `next_seq`,
    /// starting a new segment when there is none, the newest is full or
    /// unusable, or seqs jumped past it (acknowledged beyond what it held).
    fn prepare_writer(&mut self) -> io::Result<()> {
        let fresh = match self.segments.back() {
            None => true,
            Some(seg) => {
                self.roll
                    || seg.end() != self.next_seq
                    || (!seg.offsets.is_empty() && seg.bytes >= self.limits.segment_bytes)
            }
        };
        if !fresh {
            if self.writer.is_none() {
                if let Some(seg) = self.segments.back() {
                    let file = open_nofollow(OpenOptions::new().append(true), &seg.path)
                        .map_err(|e| ctx(e, "open spool segment", &seg.path))?;
                    self.writer = Some(file);
                }
            }
            return Ok(());
        }
        // Only the newest segment holds unsynced blocks: `sync` reaches no
        // other.
        if let (Some(old), Some(seg)) = (self.writer.take(), self.segments.back()) {
            if !self.roll {
                old.sync_data()
                    .map_err(|e| ctx(e, "fsync spool segment", &seg.path))?;
            }
        }
        let path = self.dir.join(segment_name(self.next_seq));
        let file = open_nofollow(
            OpenOptions::new().append(true).create_new(true).mode(0o600),
            &path,
        )
        .map_err(|e| ctx(e, "create spool segment", &path))?;
        self.segments.push_back(Segment {
            first: self.next_seq,
            path,
            offsets: Vec::new(),
            valid_end: 0,
            bytes: 0,
        });
        self.writer = Some(file);
        self.roll = false;
        self.dir_unsynced = true;
        Ok(())
    }

    /// Removes the oldest segments while all their blocks are acknowledged,
    /// never the newest.
    fn prune(&mut self) -> io::Result<()> {
        while self.segments.len() > 1 && self.segments[1].first - 1 <= self.acked {
            // The newer segment's name is what keeps seqs from going back
            // after a restart that lost `acked`: make it durable first.
            self.sync_dir_if_needed()?;
            let Some(seg) = self.segments.pop_front() else {
                break;
            };
            if self.reader.as_ref().is_some_and(|(f, _)| *f == seg.first) {
                self.reader = None;
            }
            if let Err(err) = remove_if_present(&seg.path) {
                let err = ctx(err, "remove spool segment", &seg.path);
                self.segments.push_front(seg);
                return Err(err);
            }
            self.disk_bytes -= seg.bytes;
        }
        Ok(())
    }

    /// Writes `acked`: see [`Spool::write_mark`].
    fn save_acked(&mut self, sync: bool) -> io::Result<()> {
        self.write_mark(ACKED, ACKED_TMP, self.acked, sync)?;
        if sync {
            self.acked_unsynced = false;
            self.acked_synced_at = Some(Instant::now());
        } else {
            self.acked_unsynced = true;
        }
        Ok(())
    }

    /// Writes the mark `name` through the temporary file `tmp` and a
    /// rename, so a crash leaves the old or the new value; fsyncs file and
    /// directory if `sync`.
    fn write_mark(&mut self, name: &str, tmp: &str, value: u64, sync: bool) -> io::Result<()> {
        let tmp = self.dir.join(tmp);
        let path = self.dir.join(name);
        let mut file = open_nofollow(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600),
            &tmp,
        )
        .map_err(|e| ctx(e, "create", &tmp))?;
        file.write_all(&value.to_le_bytes())
            .map_err(|e| ctx(e, "write", &tmp))?;
        if sync {
            file.sync_data().map_err(|e| ctx(e, "fsync", &tmp))?;
        }
        drop(file);
        fs::rename(&tmp, &path).map_err(|e| ctx(e, "rename into", &path))?;
        if sync {
            sync_dir(&self.dir).map_err(|e| ctx(e, "fsync spool directory", &self.dir))?;
            self.dir_unsynced = false;
        }
        Ok(())
    }

    fn sync_dir_if_needed(&mut self) -> io::Result<()> {
        if self.dir_unsynced {
            sync_dir(&self.dir).map_err(|e| ctx(e, "fsync spool directory", &self.dir))?;
            self.dir_unsynced = false;
        }
        Ok(())
    }
}

// === impl Segment ===

impl Segment {
    /// The seq after its last valid block.
    fn end(&self) -> u64 {
        self.first + self.offsets.len() as u64
    }
}

/// What a scan of one segment found.
struct Scan {
    offsets: Vec<u64>,
    valid_end: u64,
    len: u64,
}

/// Reads a segment front to back and indexes its blocks up to the first
/// one that is torn, over the length bound, out of seq, or fails its crc.
fn scan_segment(path: &Path, first: u64) -> io::Result<Scan> {
    let file = open_nofollow(OpenOptions::new().read(true), path)
        .map_err(|e| ctx(e, "open spool segment", path))?;
    let meta = file.metadata().map_err(|e| ctx(e, "stat", path))?;
    if !meta.is_file() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("spool segment {} is not a regular file", path.display()),
        ));
    }
    let len = meta.len();
    let mut input = BufReader::with_capacity(256 << 10, file);
    let mut offsets = Vec::new();
    let mut pos = 0u64;
    let mut payload = Vec::new();
    let mut head = [0u8; HEADER as usize];
    while len - pos >= HEADER {
        input
            .read_exact(&mut head)
            .map_err(|e| ctx(e, "read spool segment", path))?;
        let (plen, crc, seq) = parse_header(&head);
        let expected = first + offsets.len() as u64;
        if plen == 0
            || plen as usize > MAX_BLOCK_BYTES
            || u64::from(plen) > len - pos - HEADER
            || seq != expected
        {
            break;
        }
        payload.resize(plen as usize, 0);
        input
            .read_exact(&mut payload)
            .map_err(|e| ctx(e, "read spool segment", path))?;
        if crc32fast::hash(&payload) != crc {
            break;
        }
        offsets.push(pos);
        pos += HEADER + u64::from(plen);
    }
    Ok(Scan {
        offsets,
        valid_end: pos,
        len,
    })
}

/// Cuts `path` to `len` bytes, durably.
fn truncate(path: &Path, len: u64) -> io::Result<()> {
    let file = open_nofollow(OpenOptions::new().write(true), path)
        .map_err(|e| ctx(e, "open spool segment", path))?;
    file.set_len(len)
        .map_err(|e| ctx(e, "truncate spool segment", path))?;
    file.sync_all()
        .map_err(|e| ctx(e, "fsync spool segment", path))
}

/// The mark (`acked` or `reserved`) in `path`, and whether the file was
/// there but torn. A missing file is 0 (a new spool).
fn read_mark(path: &Path) -> io::Result<(u64, bool)> {
    let file = match open_nofollow(OpenOptions::new().read(true), path) {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok((0, false)),
        Err(e) => return Err(ctx(e, "open", path)),
    };
    let mut bytes = Vec::with_capacity(8);
    file.take(16)
        .read_to_end(&mut bytes)
        .map_err(|e| ctx(e, "read", path))?;
    match <[u8; 8]>::try_from(bytes.as_slice()) {
        Ok(raw) if u64::from_le_bytes(raw) < SEQ_LIMIT => Ok((u64::from_le_bytes(raw), false)),
        _ => Ok((0, true)),
    }
}

/// Opens with `O_NOFOLLOW`: the spool's own files are never reached
/// through a symlink.
fn open_nofollow(options: &mut OpenOptions, path: &Path) -> io::Result<File> {
    options.custom_flags(libc::O_NOFOLLOW).open(path)
}

fn remove_if_present(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// `(len, crc32, block_seq)` of a frame header.
fn parse_header(head: &[u8; HEADER as usize]) -> (u32, u32, u64) {
    let [a, b, c, d, e, f, g, h, s @ ..] = *head;
    (
        u32::from_le_bytes([a, b, c, d]),
        u32::from_le_bytes([e, f, g, h]),
        u64::from_le_bytes(s),
    )
}

/// A block that was valid at open no longer is (bit rot, or a hand edit):
/// it is reported and read as lost, never published as garbage.
fn changed_on_disk(path: &Path, seq: u64, buf: &mut Vec<u8>) -> bool {
    tracing::warn!(path = %path.display(), seq, "spool block changed on disk since open; skipped");
    buf.clear();
    true
}

/// `<first_block_seq:020>.seg`.
fn segment_name(first: u64) -> String {
    format!("{first:020}.seg")
}

/// The first seq of a segment named by [`segment_name`]; `None` for any
/// other name (left alone).
fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(".seg")?;
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits
        .parse::<u64>()
        .ok()
        .filter(|&n| (1..SEQ_LIMIT).contains(&n))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn limits(max_bytes: u64, segment_bytes: u64) -> SpoolLimits {
        SpoolLimits {
            max_bytes,
            segment_bytes,
        }
    }

    /// Distinct payloads of varied sizes.
    fn payload(seq: u64) -> Vec<u8> {
        format!("block {seq};")
            .repeat(seq as usize % 7 + 1)
            .into_bytes()
    }

    fn segment_files(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".seg"))
            .collect();
        names.sort();
        names
    }

    fn assert_reads(spool: &mut Spool, seqs: impl IntoIterator<Item = u64>) {
        let mut buf = Vec::new();
        for seq in seqs {
            assert!(spool.read(seq, &mut buf).unwrap(), "block {seq}");
            assert_eq!(buf, payload(seq), "block {seq}");
        }
    }

    fn flip(path: &Path, offset: u64) {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        let mut b = [0u8; 1];
        file.read_exact_at(&mut b, offset).unwrap();
        b[0] ^= 0x40;
        file.write_all_at(&b, offset).unwrap();
    }

    #[test]
    fn reserved_seqs_are_never_given_again_even_after_a_crash() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p0");
        let (mut spool, _) = Spool::open(&dir, limits(1 << 20, 1 << 20)).unwrap();
        assert_eq!(spool.append(&payload(1)).unwrap(), 1);
        spool.ack(1).unwrap();
        // Three blocks go out from memory; the third is in flight at the
        // crash, and `acked` (saved at most every second) still says 2.
        for seq in 2..=4 {
            assert_eq!(spool.reserve().unwrap(), seq);
            assert!(spool.reserve().is_err(), "one reservation at a time");
            if seq < 4 {
                spool.ack(seq).unwrap();
            }
        }
        assert_eq!(spool.depth().0, 0, "memory blocks are not on disk");
        assert_eq!(spool.next_pending(), None);
        drop(spool); // a SIGKILL: nothing is closed
        let (mut spool, report) = Spool::open(&dir, limits(1 << 20, 1 << 20)).unwrap();
        assert_eq!(report.pending_blocks, 0);
        let next = spool.next_seq();
        assert!(next > 4, "seq {next} may already be in the stream");
        assert_eq!(spool.acked(), next - 1, "nothing to replay");
        assert_eq!(spool.next_pending(), None);
        assert_eq!(spool.reserve().unwrap(), next);
    }

    #[test]
    fn a_reserved_block_appended_keeps_its_seq_and_later_blocks_follow() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p0");
        let (mut spool, _) = Spool::open(&dir, limits(1 << 20, 1 << 20)).unwrap();
        for seq in 1..=2 {
            assert_eq!(spool.reserve().unwrap(), seq);
            spool.ack(seq).unwrap();
        }
        let seq = spool.reserve().unwrap();
        assert_eq!(seq, 3);
        assert!(
            spool.append_reserved(2, &payload(2)).is_err(),
            "not the reserved seq"
        );
        assert_eq!(spool.append_reserved(3, &payload(3)).unwrap(), 3);
        assert_eq!(spool.append(&payload(4)).unwrap(), 4);
        spool.sync().unwrap();
        assert_eq!(spool.next_pending(), Some(3));
        assert_eq!(spool.depth().0, 2);
        assert!(
            spool.reserve().is_ok(),
            "the appended seq is no longer reserved"
        );
        drop(spool);
        // A restart replays the two blocks under their seqs, then goes on
        // above every seq reserved before.
        let (mut spool, report) = Spool::open(&dir, limits(1 << 20, 1 << 20)).unwrap();
        assert_eq!(report.pending_blocks, 2);
        assert_eq!(spool.next_pending(), Some(3));
        assert_reads(&mut spool, 3..=4);
        spool.ack(3).unwrap();
        assert_eq!(spool.next_pending(), Some(4));
        let next = spool.reserve().unwrap();
        assert!(
            next > 5,
            "seq 5 was reserved before the restart, got {next}"
        );
        spool.ack(next).unwrap();
        assert_eq!(spool.next_pending(), None);
        assert_eq!(spool.depth().0, 0);
    }

    #[test]
    fn round_trip_across_segments() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("spool/LOGHOG/p0");
        let (mut spool, report) = Spool::open(&dir, limits(1 << 20, 100)).unwrap();
        assert_eq!(report, OpenReport::default());
        assert_eq!(spool.next_seq(), 1);
        for seq in 1..=30 {
            assert_eq!(spool.append(&payload(seq)).unwrap(), seq);
        }
        spool.sync().unwrap();

        let names = segment_files(&dir);
        assert!(names.len() >= 5, "{names:?}");
        assert_eq!(names[0], "00000000000000000001.seg");
        // Each segment is named after the seq of its first block.
        for name in &names {
            let first: u64 = name.trim_end_matches(".seg").parse().unwrap();
            let mut head = [0u8; 16];
            File::open(dir.join(name))
                .unwrap()
                .read_exact(&mut head)
                .unwrap();
            assert_eq!(parse_header(&head).2, first, "{name}");
        }
        assert_reads(&mut spool, 1..=30);
        assert_reads(&mut spool, [17, 3, 30, 1]);
        let mut buf = Vec::new();
        assert!(!spool.read(31, &mut buf).unwrap());

        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&dir.join(&names[0])), 0o600);
        spool.ack(1).unwrap();
        assert_eq!(mode(&dir.join(ACKED)), 0o600);
    }

    #[test]
    fn restart_continues_seqs_and_replays_unacked() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut spool, _) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        for seq in 1..=10 {
            spool.append(&payload(seq)).unwrap();
        }
        spool.ack(4).unwrap();
        spool.close().unwrap();
        drop(spool);

        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        assert_eq!(report.pending_blocks, 6);
        assert_eq!(
            report.cut_bytes + report.corrupt_blocks + report.lost_blocks,
            0
        );
        assert_eq!(spool.acked(), 4);
        assert_eq!(spool.next_seq(), 11);
        assert_eq!(spool.depth().0, 6);
        assert_reads(&mut spool, 5..=10);
        assert_eq!(spool.append(&payload(11)).unwrap(), 11);
        spool.sync().unwrap();
        drop(spool); // no close: the appended block was synced

        let (mut spool, _) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        assert_eq!(spool.next_seq(), 12);
        assert_reads(&mut spool, 5..=11);
        // Fully acknowledged: a restart still does not reuse a seq.
        spool.ack(11).unwrap();
        assert_eq!(spool.depth(), (0, 0));
        spool.close().unwrap();
        drop(spool);
        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        assert_eq!(report.pending_blocks, 0);
        assert_eq!(spool.append(&payload(12)).unwrap(), 12);
    }

    #[test]
    fn depth_counts_unacked_frames() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(tmp.path(), limits(1 << 20, 1 << 20)).unwrap();
        let frame = |seq| payload(seq).len() as u64 + HEADER;
        for seq in 1..=3 {
            spool.append(&payload(seq)).unwrap();
        }
        assert_eq!(spool.depth(), (3, frame(1) + frame(2) + frame(3)));
        spool.ack(1).unwrap();
        assert_eq!(spool.depth(), (2, frame(2) + frame(3)));
    }

    #[test]
    fn ack_removes_segments_and_survives_restart() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut spool, _) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        for seq in 1..=30 {
            spool.append(&payload(seq)).unwrap();
        }
        spool.sync().unwrap();
        let before = segment_files(dir);
        spool.ack(15).unwrap();
        let after = segment_files(dir);
        assert!(after.len() < before.len(), "{before:?} -> {after:?}");
        // Every segment left holds an unacknowledged block: the second
        // starts past 16, so the first holds 16 or a later one.
        let firsts: Vec<u64> = after
            .iter()
            .map(|n| n.trim_end_matches(".seg").parse().unwrap())
            .collect();
        assert!(firsts[0] <= 16 && firsts[1] > 16, "{firsts:?}");
        assert_reads(&mut spool, 16..=30);
        assert!(spool.ack(31).is_err(), "nothing appended there yet");

        spool.ack(30).unwrap();
        // The newest segment stays: its name carries the seqs on.
        assert_eq!(segment_files(dir), [before.last().unwrap().clone()]);
        spool.close().unwrap();
        drop(spool);

        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        assert_eq!(spool.acked(), 30);
        assert_eq!(report.pending_blocks, 0);
        assert_eq!(spool.append(&payload(31)).unwrap(), 31);
        assert_reads(&mut spool, [31]);
    }

    #[test]
    fn torn_tail_is_cut_and_earlier_blocks_survive() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut spool, _) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        for seq in 1..=5 {
            spool.append(&payload(seq)).unwrap();
        }
        spool.close().unwrap();
        drop(spool);
        let seg = dir.join(segment_name(1));
        let len = fs::metadata(&seg).unwrap().len();
        let last = payload(5).len() as u64 + HEADER;

        // Torn mid-block (SIGKILL during the write).
        let cut_at = len - last / 2;
        OpenOptions::new()
            .write(true)
            .open(&seg)
            .unwrap()
            .set_len(cut_at)
            .unwrap();
        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        assert_eq!(report.cut_bytes, cut_at - (len - last));
        assert_eq!(report.pending_blocks, 4);
        assert_eq!(fs::metadata(&seg).unwrap().len(), len - last);
        assert_reads(&mut spool, 1..=4);
        assert_eq!(spool.append(&payload(5)).unwrap(), 5);
        spool.close().unwrap();
        drop(spool);

        // Garbage after the last block, starting like a plausible header.
        let garbage = [&[40u8, 0, 0, 0][..], &[0xAB; 33]].concat();
        OpenOptions::new()
            .append(true)
            .open(&seg)
            .unwrap()
            .write_all(&garbage)
            .unwrap();
        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        assert_eq!(report.cut_bytes, garbage.len() as u64);
        assert_eq!(spool.next_seq(), 6);
        assert_reads(&mut spool, 1..=5);
        drop(spool);
        let (_, report) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        assert_eq!(report.cut_bytes, 0);
    }

    #[test]
    fn flipped_crc_in_newest_segment_cuts_from_there() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut spool, _) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        for seq in 1..=3 {
            spool.append(&payload(seq)).unwrap();
        }
        spool.close().unwrap();
        drop(spool);
        let seg = dir.join(segment_name(1));
        let len = fs::metadata(&seg).unwrap().len();
        let second = payload(1).len() as u64 + HEADER;
        flip(&seg, second + 4); // the crc field of block 2

        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        assert_eq!(report.cut_bytes, len - second);
        assert_eq!(spool.next_seq(), 2);
        assert_reads(&mut spool, [1]);
    }

    #[test]
    fn flipped_crc_in_older_segment_skips_to_the_next() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        // 40-byte payloads, 56-byte frames: two blocks per 100-byte segment.
        let block = |seq: u64| format!("{seq:040}").into_bytes();
        let (mut spool, _) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        for seq in 1..=6 {
            spool.append(&block(seq)).unwrap();
        }
        spool.close().unwrap();
        drop(spool);
        assert_eq!(
            segment_files(dir),
            [segment_name(1), segment_name(3), segment_name(5)]
        );
        flip(&dir.join(segment_name(3)), 4); // crc of block 3

        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        assert_eq!(report.corrupt_blocks, 1);
        assert_eq!(report.lost_blocks, 2);
        assert_eq!(report.cut_bytes, 0);
        assert_eq!(report.pending_blocks, 6);
        assert_eq!(spool.next_seq(), 7);
        let mut buf = Vec::new();
        for seq in 1..=6 {
            assert!(spool.read(seq, &mut buf).unwrap());
            if seq == 3 || seq == 4 {
                assert!(buf.is_empty(), "lost block {seq} reads empty");
            } else {
                assert_eq!(buf, block(seq));
            }
        }
        // Acknowledging past the damage frees the damaged segment.
        spool.ack(4).unwrap();
        assert_eq!(segment_files(dir), [segment_name(5)]);
    }

    #[test]
    fn block_changed_after_open_reads_as_lost() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(tmp.path(), limits(1 << 20, 1 << 20)).unwrap();
        spool.append(&payload(1)).unwrap();
        spool.append(&payload(2)).unwrap();
        flip(&tmp.path().join(segment_name(1)), HEADER + 2);
        let mut buf = Vec::new();
        assert!(spool.read(1, &mut buf).unwrap());
        assert!(buf.is_empty());
        assert_reads(&mut spool, [2]);
    }

    #[test]
    fn has_room_bounds_bytes_on_disk() {
        let tmp = tempfile::tempdir().unwrap();
        let (mut spool, _) = Spool::open(tmp.path(), limits(200, 1 << 20)).unwrap();
        // Empty: even a block bigger than the spool passes.
        assert!(spool.has_room(10_000));
        spool.append(&[7u8; 100]).unwrap(); // 116 bytes on disk
                                            // 116 + 16 + 68 = 200.
        assert!(spool.has_room(68));
        assert!(!spool.has_room(69));
        spool.ack(1).unwrap();
        // Nothing unacknowledged: room again, though the segment remains.
        assert!(spool.has_room(10_000));
        spool.append(&[7u8; 1000]).unwrap();
        assert!(!spool.has_room(1));
        assert!(spool.append(&[]).is_err(), "empty marks a lost block");
    }

    #[test]
    fn acked_missing_or_short_is_zero_and_replays() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut spool, _) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        for seq in 1..=5 {
            spool.append(&payload(seq)).unwrap();
        }
        spool.ack(3).unwrap();
        spool.close().unwrap();
        drop(spool);

        fs::remove_file(dir.join(ACKED)).unwrap();
        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        assert!(!report.acked_invalid);
        assert_eq!((spool.acked(), report.pending_blocks), (0, 5));
        assert_reads(&mut spool, 1..=5);
        spool.ack(2).unwrap();
        spool.close().unwrap();
        drop(spool);

        fs::write(dir.join(ACKED), [2u8, 0, 0]).unwrap();
        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 1 << 20)).unwrap();
        assert!(report.acked_invalid);
        assert_eq!((spool.acked(), report.pending_blocks), (0, 5));
        assert_reads(&mut spool, 1..=5);
    }

    #[test]
    fn acked_missing_keeps_what_freed_segments_prove() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        let (mut spool, _) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        for seq in 1..=20 {
            spool.append(&payload(seq)).unwrap();
        }
        spool.ack(12).unwrap();
        spool.close().unwrap();
        drop(spool);
        let first: u64 = segment_files(dir)[0]
            .trim_end_matches(".seg")
            .parse()
            .unwrap();
        assert!(first > 1);
        fs::remove_file(dir.join(ACKED)).unwrap();
        let (mut spool, report) = Spool::open(dir, limits(1 << 20, 100)).unwrap();
        assert_eq!(spool.acked(), first - 1);
        assert_eq!(report.lost_blocks, 0);
        assert_reads(&mut spool, first..=20);
    }

    #[test]
    fn symlinks_are_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("p0");
        fs::create_dir(&dir).unwrap();
        let target = tmp.path().join("elsewhere");
        fs::write(&target, 5u64.to_le_bytes()).unwrap();

        std::os::unix::fs::symlink(&target, dir.join(ACKED)).unwrap();
        let err = Spool::open(&dir, limits(1 << 20, 100)).unwrap_err();
        assert!(err.to_string().contains("acked"), "{err}");
        fs::remove_file(dir.join(ACKED)).unwrap();

        std::os::unix::fs::symlink(&target, dir.join(segment_name(1))).unwrap();
        let err = Spool::open(&dir, limits(1 << 20, 100)).unwrap_err();
        assert!(err.to_string().contains(&segment_name(1)), "{err}");
    }
}
