//! One partition's publisher (issue 16): sends the spool's blocks to
//! JetStream strictly in order, one at a time, each with the
//! `Nats-Msg-Id` `EDGE.PARTITION.SEQ`, and acknowledges a block in the
//! spool only once the stream has stored it. One block in flight per
//! partition keeps the stream's order equal to the spool's even across a
//! reconnect (a re-sent block is dropped by the stream's duplicate window
//! and acknowledged as a duplicate); blocks grow with the backlog, so
//! throughput does not depend on the round trip.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::HeaderMap;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::Partition;
use crate::broker::nats::{ensure_stream, REQUEST_TIMEOUT};
use crate::config::StreamSettings;
use crate::ratelimit::RateLimit;
use crate::stats::Stats;

/// Longest wait between two attempts while the broker fails.
const MAX_BACKOFF: Duration = Duration::from_secs(2);

/// What one publisher task needs.
pub(crate) struct Publisher {
    /// The partition's spool.
    pub(crate) part: Arc<Partition>,
    /// The JetStream context (one connection for every partition).
    pub(crate) js: jetstream::Context,
    /// `PREFIX.PARTITION`.
    pub(crate) subject: String,
    /// The stream to create when it is missing.
    pub(crate) settings: StreamSettings,
    /// This edge's id (the first part of every message id).
    pub(crate) edge_id: String,
    /// Counters and gauges.
    pub(crate) stats: Arc<Stats>,
    /// Keeps publish-failure warnings from flooding the log.
    pub(crate) limiter: Arc<RateLimit>,
    /// Cancelled at shutdown once the spool task has appended its last
    /// block: publish what is spooled, then end.
    pub(crate) spooled: CancellationToken,
    /// Cancelled when the grace period is over: end now.
    pub(crate) hard: CancellationToken,
}

/// Publishes until stopped (see [`Publisher`]).
pub(crate) async fn run(p: Publisher) {
    let mut appended = p.part.appended.subscribe();
    let mut buf = Vec::new();
    let mut backoff = Duration::from_millis(50);
    let mut failing = false;
    loop {
        let (next, end) = {
            let s = p.part.spool();
            (s.acked() + 1, s.next_seq())
        };
        if next >= end {
            if p.spooled.is_cancelled() {
                return; // stopping, and everything spooled is published
            }
            tokio::select! {
                r = appended.changed() => if r.is_err() { return },
                () = p.spooled.cancelled() => {}
                () = p.hard.cancelled() => return,
            }
            continue;
        }
        let read = {
            let mut s = p.part.spool();
            s.read(next, &mut buf)
        };
        match read {
            Ok(true) if buf.is_empty() => {
                // The spool lost this block (a corrupt segment, see
                // Spool::read): nothing to send; the loss was logged there.
                ack(&p, next, 0);
                continue;
            }
            Ok(true) => {}
            Ok(false) => {
                // Not written yet: wait for the spool task.
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(e) => {
                // An unreadable block cannot be published; skipping it loses
                // its records, and retrying for ever blocks the partition.
                warn!(partition = p.part.index, seq = next, cause = %e, "forward spool: block unreadable; skipped");
                ack(&p, next, 0);
                continue;
            }
        }
        let records = u64::from(block_count(&buf));
        let mut headers = HeaderMap::new();
        let id = format!("{}.{}.{next}", p.edge_id, p.part.index);
        headers.insert("Nats-Msg-Id", id.as_str());
        let payload = bytes::Bytes::copy_from_slice(&buf);
        let sent = tokio::select! {
            r = publish(&p.js, &p.subject, headers, payload) => r,
            () = p.hard.cancelled() => return,
        };
        match sent {
            Ok(duplicate) => {
                if failing {
                    info!(
                        partition = p.part.index,
                        "forward: the broker takes blocks again"
                    );
                    failing = false;
                }
                ack(&p, next, if duplicate { 0 } else { records });
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                p.stats.forward_publish_errors.fetch_add(1, Relaxed);
                failing = true;
                if let Some(suppressed) = p.limiter.check() {
                    warn!(partition = p.part.index, seq = next, cause = %e, suppressed, "forward: publish failed; the spool keeps the block and it is sent again");
                }
                if e.to_string().contains("no stream") || e.to_string().contains("no responders") {
                    let _ = ensure_stream(&p.js, &p.settings).await;
                }
                tokio::select! {
                    () = tokio::time::sleep(backoff) => {}
                    () = p.hard.cancelled() => return,
                }
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
}

/// Publishes one block and waits for the stream's acknowledgement;
/// `Ok(true)` when the stream already had it (a duplicate id).
async fn publish(
    js: &jetstream::Context,
    subject: &str,
    headers: HeaderMap,
    payload: bytes::Bytes,
) -> anyhow::Result<bool> {
    let fut = js
        .publish_with_headers(subject.to_owned(), headers, payload)
        .await?;
    let ack = tokio::time::timeout(REQUEST_TIMEOUT, fut)
        .await
        .map_err(|_| anyhow::anyhow!("no acknowledgement within {REQUEST_TIMEOUT:?}"))??;
    Ok(ack.duplicate)
}

/// Marks block `seq` stored: the spool may drop it.
fn ack(p: &Publisher, seq: u64, records: u64) {
    let (before, after) = {
        let mut s = p.part.spool();
        let before = s.depth();
        if let Err(e) = s.ack(seq) {
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
    st.forward_published_records.fetch_add(records, Relaxed);
    st.forward_published_blocks.fetch_add(1, Relaxed);
}

/// The record count in a block's header (0 if it has none).
fn block_count(block: &[u8]) -> u32 {
    block
        .get(4..8)
        .and_then(|b| b.try_into().ok())
        .map_or(0, u32::from_le_bytes)
}
