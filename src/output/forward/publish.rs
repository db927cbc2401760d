//! One partition's publisher (issue 16): takes the partition's queue of
//! batches, cuts it into blocks of at most `batch_bytes`, and sends them to
//! JetStream strictly in order, one at a time, each with the `Nats-Msg-Id`
//! `EDGE.PARTITION.SEQ`, acknowledging a block in the spool only once the
//! stream has stored it.
//!
//! Memory first, the disk when the broker lags (a disk-assisted queue):
//! while the broker keeps up, a block goes out straight from memory, its seq
//! reserved in the spool ([`Spool::reserve`](super::spool::Spool::reserve)),
//! and the queue behind it waits, which holds TCP readers back. A block the
//! stream has not acknowledged within `spill_after`, or whose publish
//! failed, is appended to the spool and fsynced, and so is every batch
//! after it until the spool is drained again: while the broker is away or
//! slow, readers go on until the spool is full. `spill_after = 0` spools
//! and fsyncs every block before it is published. A SIGTERM spools the
//! block in flight and everything queued; a SIGKILL loses at most the
//! queue and that one block.
//!
//! One block in flight keeps the stream's order equal to the seq order
//! even across a reconnect (a re-sent block is dropped by the stream's
//! duplicate window and acknowledged as a duplicate); blocks grow with the
//! backlog, so throughput does not depend on the round trip.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Partition;
use crate::broker::codec::encode_block_header;
use crate::broker::nats::{ensure_stream, REQUEST_TIMEOUT};
use crate::config::StreamSettings;
use crate::output::Batch;
use crate::ratelimit::RateLimit;
use crate::stats::Stats;

/// Shortest and longest wait between two attempts while the broker fails.
const MIN_BACKOFF: Duration = Duration::from_millis(50);
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// How often a full spool is looked at again.
const ROOM_POLL: Duration = Duration::from_millis(20);

/// Bytes a block leaves free below the server's `max_payload` for the
/// message's headers.
const HEADER_ROOM: usize = 1024;

/// What one publisher task needs.
pub(crate) struct Publisher {
    /// The partition's spool.
    pub(crate) part: Arc<Partition>,
    /// The partition's queue, fed by the routes.
    pub(crate) rx: mpsc::Receiver<Batch>,
    /// The connection (for the server's `max_payload`).
    pub(crate) client: async_nats::Client,
    /// The JetStream context (one connection for every partition).
    pub(crate) js: jetstream::Context,
    /// `PREFIX.PARTITION`.
    pub(crate) subject: String,
    /// The stream to create when it is missing.
    pub(crate) settings: StreamSettings,
    /// This edge's id (the first part of every message id).
    pub(crate) edge_id: String,
    /// Most bytes in one block (one batch may exceed it).
    pub(crate) batch_bytes: usize,
    /// A block not acknowledged this long goes to the spool; zero: every
    /// block does, before it is sent.
    pub(crate) spill_after: Duration,
    /// Counters and gauges.
    pub(crate) stats: Arc<Stats>,
    /// Keeps failure warnings from flooding the log.
    pub(crate) limiter: Arc<RateLimit>,
    /// Cancelled at shutdown once the readers are done: spool what is in
    /// memory, publish what the spool holds, then end.
    pub(crate) drain: CancellationToken,
    /// Cancelled when the grace period is over: end now.
    pub(crate) hard: CancellationToken,
}

/// The block being published.
struct Current {
    seq: u64,
    payload: Bytes,
    records: u32,
    /// In the spool; else only in memory, its seq reserved.
    on_disk: bool,
    /// When it went out first: `spill_after` counts from here.
    since: Instant,
}

/// A publish waiting for the stream's acknowledgement: `Ok(true)` when
/// the stream already had the block (a duplicate id).
type Ack = Pin<Box<dyn Future<Output = anyhow::Result<bool>> + Send>>;

/// Publishes until stopped (see the module docs), then closes the spool.
pub(crate) async fn run(mut p: Publisher) {
    let mut cur: Option<Current> = None;
    let mut ack: Option<Ack> = None;
    let mut retry_at: Option<Instant> = None;
    let mut backoff = MIN_BACKOFF;
    let mut failing = false;
    // A batch taken off the queue that did not fit the block being cut.
    let mut held: Option<Batch> = None;
    loop {
        if p.hard.is_cancelled() {
            break;
        }
        let draining = p.drain.is_cancelled();
        if draining {
            // Stopping: what is in memory goes to disk first, so it is kept
            // however long the broker takes.
            if let Some(c) = cur.as_mut() {
                spill(&p, c).await;
            }
            // A full spool waits for the publishes below to free room.
            while p.part.spool().has_room(p.batch_bytes as u64) {
                let Some(b) = held.take().or_else(|| p.rx.try_recv().ok()) else {
                    break;
                };
                let limit = p.block_limit();
                let (block, records) = cut(&mut p.rx, limit, &p.stats, b, &mut held);
                append(&p, block, records).await;
            }
        }
        if cur.is_none() {
            let pending = p.part.spool().next_pending();
            cur = match pending {
                Some(seq) => read(&p, seq).await,
                None if draining => break, // everything is published
                None => {
                    let first = match held.take() {
                        Some(b) => b,
                        None => tokio::select! {
                            b = p.rx.recv() => match b {
                                Some(b) => b,
                                None => break,
                            },
                            () = p.drain.cancelled() => continue,
                            () = p.hard.cancelled() => break,
                        },
                    };
                    let limit = p.block_limit();
                    let (block, records) = cut(&mut p.rx, limit, &p.stats, first, &mut held);
                    if p.spill_after.is_zero() {
                        append(&p, block, records).await;
                        continue;
                    }
                    reserve(&p, block, records).await
                }
            };
            if cur.is_none() {
                continue;
            }
        }
        let Some(c) = cur.as_mut() else { continue };
        if ack.is_none() && retry_at.is_none_or(|t| t <= Instant::now()) {
            retry_at = None;
            ack = Some(publish(&p, c));
        }
        // Blocks after one on disk go to disk, in order behind it.
        let spilling = c.on_disk || draining;
        let room = spilling && p.part.spool().has_room(p.batch_bytes as u64);
        let spill_at = (!c.on_disk).then(|| c.since + p.spill_after);
        if room {
            if let Some(b) = held.take() {
                let limit = p.block_limit();
                let (block, records) = cut(&mut p.rx, limit, &p.stats, b, &mut held);
                append(&p, block, records).await;
                continue;
            }
        }
        tokio::select! {
            () = p.hard.cancelled() => break,
            () = p.drain.cancelled(), if !draining => {}
            r = wait(ack.as_mut()) => {
                ack = None;
                match r {
                    Ok(duplicate) => {
                        if failing {
                            info!(partition = p.part.index, "forward: the broker takes blocks again");
                            failing = false;
                        }
                        if let Some(done) = cur.take() {
                            acked(&p, &done, duplicate);
                        }
                        backoff = MIN_BACKOFF;
                    }
                    Err(e) => {
                        p.stats.forward_publish_errors.fetch_add(1, Relaxed);
                        failing = true;
                        if let Some(suppressed) = p.limiter.check() {
                            warn!(partition = p.part.index, seq = c.seq, cause = %e, suppressed, "forward: publish failed; the block is spooled and sent again");
                        }
                        let text = e.to_string();
                        if text.contains("no stream") || text.contains("no responders") {
                            let _ = ensure_stream(&p.js, &p.settings).await;
                        }
                        spill(&p, c).await;
                        retry_at = Some(Instant::now() + backoff);
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                    }
                }
            }
            () = sleep_until(retry_at), if ack.is_none() => {}
            () = sleep_until(spill_at) => spill(&p, c).await,
            b = p.rx.recv(), if room => {
                if let Some(b) = b {
                    let limit = p.block_limit();
                    let (block, records) = cut(&mut p.rx, limit, &p.stats, b, &mut held);
                    append(&p, block, records).await;
                }
            }
            () = tokio::time::sleep(ROOM_POLL), if spilling && !room => {}
        }
    }
    // Whatever is still in memory is lost only here: the grace period is
    // over (the stream may have it; the next start cannot tell).
    if let Some(c) = cur.filter(|c| !c.on_disk) {
        warn!(
            partition = p.part.index,
            seq = c.seq,
            records = c.records,
            "forward: stopped with a block neither acknowledged nor spooled"
        );
    }
    let part = p.part.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = part.spool().close() {
            warn!(partition = part.index, cause = %e, "forward spool: close failed");
        }
    })
    .await;
}

/// Resolves with the acknowledgement, or never while nothing is in flight.
async fn wait(ack: Option<&mut Ack>) -> anyhow::Result<bool> {
    match ack {
        Some(ack) => ack.await,
        None => std::future::pending().await,
    }
}

/// Sleeps until `at`, or for ever without one.
async fn sleep_until(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

impl Publisher {
    /// The most bytes a block may take: `batch_bytes`, and below the
    /// server's `max_payload`, which refuses bigger messages (a refused
    /// block would be retried for ever).
    fn block_limit(&self) -> usize {
        let max_payload = self.client.server_info().max_payload;
        match max_payload.checked_sub(HEADER_ROOM) {
            Some(cap) if cap > 0 => self.batch_bytes.min(cap),
            _ => self.batch_bytes,
        }
    }
}

/// Cuts one block from `first` and what the queue `rx` holds, up to
/// `limit` bytes (one batch may exceed it); a batch that does not fit is
/// `held` for the next block. Returns the block and its record count.
fn cut(
    rx: &mut mpsc::Receiver<Batch>,
    limit: usize,
    stats: &Stats,
    first: Batch,
    held: &mut Option<Batch>,
) -> (Vec<u8>, u32) {
    // Sized for what is queued: a quiet partition's small blocks do not
    // each allocate a whole `limit`.
    let queued = first.data.len().saturating_mul(1 + rx.len());
    let mut block = Vec::with_capacity(queued.min(limit).max(first.data.len()) + 64);
    encode_block_header(&mut block, 0);
    let mut count = 0u32;
    let mut add = |b: Batch, block: &mut Vec<u8>| {
        block.extend_from_slice(&b.data);
        count += b.count;
        stats.dequeued(b.data.len() as u64, u64::from(b.count));
    };
    add(first, &mut block);
    while block.len() < limit {
        match rx.try_recv() {
            Ok(b) if block.len() + b.data.len() <= limit => add(b, &mut block),
            Ok(b) => {
                *held = Some(b);
                break;
            }
            Err(_) => break,
        }
    }
    // The real count, now that the block is cut.
    block[4..8].copy_from_slice(&count.to_le_bytes());
    (block, count)
}

/// Takes a seq for a block sent from memory. `None` (the block goes to the
/// spool instead) when the reservation cannot be saved.
async fn reserve(p: &Publisher, block: Vec<u8>, records: u32) -> Option<Current> {
    // Rarely an fsync (see Spool::reserve), so inline.
    let res = p.part.spool().reserve();
    match res {
        Ok(seq) => Some(Current {
            seq,
            payload: Bytes::from(block),
            records,
            on_disk: false,
            since: Instant::now(),
        }),
        Err(e) => {
            if let Some(suppressed) = p.limiter.check() {
                warn!(partition = p.part.index, cause = %e, suppressed, "forward spool: cannot reserve a seq; the block is spooled instead");
            }
            append(p, block, records).await;
            None
        }
    }
}

/// Reads block `seq` from the spool to publish it. `None` when the spool
/// cannot give it: it is acknowledged unpublished (its loss was logged), so
/// one bad block never blocks its partition.
async fn read(p: &Publisher, seq: u64) -> Option<Current> {
    let mut buf = Vec::new();
    let res = p.part.spool().read(seq, &mut buf);
    match res {
        Ok(true) if !buf.is_empty() => {
            let records = block_count(&buf);
            return Some(Current {
                seq,
                payload: Bytes::from(buf),
                records,
                on_disk: true,
                since: Instant::now(),
            });
        }
        // Lost to corruption (logged by Spool::read).
        Ok(true) => {}
        Ok(false) => {
            // next_pending only names written blocks.
            tokio::time::sleep(ROOM_POLL).await;
            return None;
        }
        Err(e) => {
            warn!(partition = p.part.index, seq, cause = %e, "forward spool: block unreadable; skipped");
        }
    }
    let lost = Current {
        seq,
        payload: Bytes::new(),
        records: 0,
        on_disk: true,
        since: Instant::now(),
    };
    acked(p, &lost, true);
    None
}

/// Sends `c` and returns its acknowledgement.
fn publish(p: &Publisher, c: &Current) -> Ack {
    let mut headers = HeaderMap::new();
    let id = format!("{}.{}.{}", p.edge_id, p.part.index, c.seq);
    headers.insert("Nats-Msg-Id", id.as_str());
    let js = p.js.clone();
    let subject = p.subject.clone();
    let payload = c.payload.clone();
    Box::pin(async move {
        let fut = js.publish_with_headers(subject, headers, payload).await?;
        let ack = tokio::time::timeout(REQUEST_TIMEOUT, fut)
            .await
            .map_err(|_| anyhow::anyhow!("no acknowledgement within {REQUEST_TIMEOUT:?}"))??;
        Ok(ack.duplicate)
    })
}

/// Writes the block in flight to the spool (once): from now on what
/// follows it goes there too.
async fn spill(p: &Publisher, c: &mut Current) {
    if c.on_disk {
        return;
    }
    let seq = c.seq;
    let payload = c.payload.clone();
    if let Some(grew) = spool_io(p, move |s| s.append_reserved(seq, &payload).map(|_| ())).await {
        c.on_disk = true;
        note_spooled(p, c.records, grew);
    }
}

/// Appends a new block to the spool, retrying I/O errors (a full disk):
/// the block is never dropped; the queue behind it fills instead. Callers
/// look for room first ([`Spool::has_room`](super::spool::Spool::has_room)
/// for `batch_bytes`): the bound is passed by less than one block at most.
async fn append(p: &Publisher, block: Vec<u8>, records: u32) {
    let data = Bytes::from(block);
    if let Some(grew) = spool_io(p, move |s| s.append(&data).map(|_| ())).await {
        note_spooled(p, records, grew);
    }
}

/// Runs one spool write (then fsync) off the runtime, retrying with
/// backoff until it succeeds or the grace period is over; returns the
/// bytes the spool grew by, `None` if it gave up.
async fn spool_io<F>(p: &Publisher, write: F) -> Option<u64>
where
    F: Fn(&mut super::spool::Spool) -> std::io::Result<()> + Send + Sync + 'static,
{
    let write = Arc::new(write);
    let mut backoff = Duration::from_millis(100);
    loop {
        let part = p.part.clone();
        let write = write.clone();
        let res = tokio::task::spawn_blocking(move || {
            let mut s = part.spool();
            let before = s.depth().1;
            write(&mut s)?;
            s.sync()?;
            Ok::<_, std::io::Error>(s.depth().1.saturating_sub(before))
        })
        .await;
        match res {
            Ok(Ok(grew)) => return Some(grew),
            Ok(Err(e)) => {
                if let Some(suppressed) = p.limiter.check() {
                    warn!(partition = p.part.index, cause = %e, suppressed, "forward spool: append failed; retrying (senders wait)");
                }
            }
            Err(e) => {
                warn!(partition = p.part.index, cause = %e, "forward spool: append task failed; retrying")
            }
        }
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = p.hard.cancelled() => return None,
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Counts a block that reached the spool.
fn note_spooled(p: &Publisher, records: u32, grew: u64) {
    let st = &p.stats;
    st.forward_spool_blocks.fetch_add(1, Relaxed);
    st.forward_spool_bytes.fetch_add(grew, Relaxed);
    st.forward_spooled_records
        .fetch_add(u64::from(records), Relaxed);
}

/// Marks `c` stored: the spool may drop it (and what it covers).
fn acked(p: &Publisher, c: &Current, duplicate: bool) {
    let (before, after) = {
        let mut s = p.part.spool();
        let before = s.depth();
        if let Err(e) = s.ack(c.seq) {
            if let Some(suppressed) = p.limiter.check() {
                warn!(partition = p.part.index, cause = %e, suppressed, "forward spool: recording the acknowledgement failed (the block may be sent again; the stream drops it)");
            }
        }
        (before, s.depth())
    };
    let st = &p.stats;
    st.forward_spool_blocks
        .fetch_sub(before.0.saturating_sub(after.0), Relaxed);
    st.forward_spool_bytes
        .fetch_sub(before.1.saturating_sub(after.1), Relaxed);
    if !duplicate {
        st.forward_published_records
            .fetch_add(u64::from(c.records), Relaxed);
    }
    st.forward_published_blocks.fetch_add(1, Relaxed);
}

/// The record count in a block's header (0 if it has none).
fn block_count(block: &[u8]) -> u32 {
    block
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}
