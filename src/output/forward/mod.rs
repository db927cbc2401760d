//! The forward output (issue 16): the broker is an output like the file.
//! Routes of forwarding facilities hand batches of encoded records
//! ([`crate::broker::codec`]) to the queue of their destination file's
//! partition; per partition one spool task appends them to an on-disk
//! [`spool`] (fsynced per batch) and one [`publish`] task sends the spool's
//! blocks to JetStream in order, removing them once acknowledged.
//!
//! Backpressure: a spool that is full stops taking from its queue, the
//! queue fills, and TCP readers wait while UDP readers drop and count,
//! exactly as with a slow disk. A SIGKILL loses at most what sat in the
//! partition queues ([`QUEUE_BATCHES`] batches each, one reader flush apiece)
//! and the batch being appended: everything appended is in the page cache,
//! and what was fsynced survives a power cut too.

pub(crate) mod publish;
pub(crate) mod spool;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::codec::{encode_block_header, partition_of};
use crate::config::{Facility, ForwardSection};
use crate::output::Batch;
use crate::ratelimit::RateLimit;
use crate::stats::Stats;
use spool::{Spool, SpoolLimits};

/// Batches each partition's queue holds before readers wait.
pub(crate) const QUEUE_BATCHES: usize = 64;

/// How often a spool with no room looks again.
const ROOM_POLL: Duration = Duration::from_millis(20);

/// The routes' side of the relay: which facilities forward, and the queue
/// of each partition.
#[derive(Debug)]
pub(crate) struct Forward {
    /// `[forward] all`: every facility forwards.
    all: bool,
    /// One queue per partition, indexed by partition.
    parts: Vec<mpsc::Sender<Batch>>,
}

// === impl Forward ===

impl Forward {
    /// Whether `facility`'s records go to the broker.
    pub(crate) fn wants(&self, facility: &Facility) -> bool {
        self.all || facility.forward
    }

    /// The queue of the partition of file `key`.
    pub(crate) fn sender_for(&self, key: &str) -> mpsc::Sender<Batch> {
        let n = self.parts.len().max(1) as u32;
        let p = partition_of(key, n) as usize;
        // `parts` has `n` entries (start makes at least one).
        self.parts[p.min(self.parts.len() - 1)].clone()
    }
}

/// The running relay: what the daemon stops at shutdown.
pub(crate) struct Relay {
    /// Ends the spool tasks once their queues are drained.
    drain: CancellationToken,
    /// Tells the publishers the spools take nothing more: end when empty.
    spooled: CancellationToken,
    /// Ends the publishers at once (the grace period is over).
    hard: CancellationToken,
    /// The spool tasks.
    spoolers: TaskTracker,
    /// The publisher tasks.
    publishers: TaskTracker,
}

impl Relay {
    /// Stops the relay after the readers are done: every queued batch is
    /// appended and synced, then the publishers get until `deadline` to
    /// send what the spool holds. What is left is published at the next
    /// start.
    pub(crate) async fn stop(self, deadline: tokio::time::Instant) {
        self.drain.cancel();
        self.spoolers.close();
        if tokio::time::timeout_at(deadline, self.spoolers.wait())
            .await
            .is_err()
        {
            warn!("forward spool did not finish within the grace period");
        }
        self.spooled.cancel();
        self.publishers.close();
        if tokio::time::timeout_at(deadline, self.publishers.wait())
            .await
            .is_err()
        {
            info!("forward: the broker did not take everything before the stop; the spool keeps the rest for the next start");
        }
        self.hard.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(1), self.publishers.wait()).await;
    }
}

/// What one partition's spool and publisher share.
pub(crate) struct Partition {
    /// The partition number.
    pub(crate) index: u32,
    /// The spool; a std mutex, held only for one append, read or ack.
    pub(crate) spool: Mutex<Spool>,
    /// The next block seq the spool will write: publishers wait on it.
    pub(crate) appended: watch::Sender<u64>,
}

impl Partition {
    /// The spool, even if a panicking holder poisoned it.
    pub(crate) fn spool(&self) -> std::sync::MutexGuard<'_, Spool> {
        self.spool.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Opens the spools under `workdir`, connects to the broker (in the
/// background) and starts the tasks.
///
/// # Errors
/// A spool directory cannot be opened, or the broker options are invalid.
pub(crate) async fn start(
    section: &ForwardSection,
    workdir: &Path,
    stats: Arc<Stats>,
) -> anyhow::Result<(Arc<Forward>, Relay)> {
    let n = section.stream.partitions.max(1);
    let base = workdir.join("spool").join(&section.stream.stream);
    std::fs::create_dir_all(&base)
        .map_err(|e| anyhow::anyhow!("cannot create spool directory {}: {e}", base.display()))?;
    let edge_id = edge_id(&base)?;
    let limits = SpoolLimits {
        max_bytes: (section.spool_max_bytes / u64::from(n)).max(1 << 20),
        segment_bytes: section.spool_segment_bytes,
    };
    let client = crate::broker::nats::connect(&section.conn, "loghogd-forward").await?;
    let js = async_nats::jetstream::new(client);
    let relay = Relay {
        drain: CancellationToken::new(),
        spooled: CancellationToken::new(),
        hard: CancellationToken::new(),
        spoolers: TaskTracker::new(),
        publishers: TaskTracker::new(),
    };
    let limiter = Arc::new(RateLimit::new(10, Duration::from_secs(10)));
    let mut parts = Vec::with_capacity(n as usize);
    for p in 0..n {
        let dir = base.join(format!("p{p}"));
        let (spool, report) = Spool::open(&dir, limits)
            .map_err(|e| anyhow::anyhow!("cannot open forward spool {}: {e}", dir.display()))?;
        if report.cut_bytes > 0 || report.corrupt_blocks > 0 {
            warn!(path = %dir.display(), cut_bytes = report.cut_bytes, corrupt_blocks = report.corrupt_blocks, "forward spool: a torn or corrupt tail was cut (an earlier run was killed mid-write)");
        }
        let (blocks, bytes) = spool.depth();
        stats.forward_spool_blocks.fetch_add(blocks, Relaxed);
        stats.forward_spool_bytes.fetch_add(bytes, Relaxed);
        if blocks > 0 {
            info!(
                partition = p,
                blocks, bytes, "forward spool: replaying what an earlier run did not publish"
            );
        }
        let part = Arc::new(Partition {
            index: p,
            appended: watch::Sender::new(spool.next_seq()),
            spool: Mutex::new(spool),
        });
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        parts.push(tx);
        relay.spoolers.spawn(spool_loop(
            part.clone(),
            rx,
            section.batch_bytes,
            stats.clone(),
            limiter.clone(),
            relay.drain.clone(),
        ));
        relay.publishers.spawn(publish::run(publish::Publisher {
            part,
            js: js.clone(),
            subject: crate::broker::nats::subject(&section.stream, p),
            settings: section.stream.clone(),
            edge_id: edge_id.clone(),
            stats: stats.clone(),
            limiter: limiter.clone(),
            spooled: relay.spooled.clone(),
            hard: relay.hard.clone(),
        }));
    }
    info!(servers = ?section.conn.servers, stream = %section.stream.stream, partitions = n, spool = %base.display(), "forwarding to the broker");
    Ok((
        Arc::new(Forward {
            all: section.all,
            parts,
        }),
        relay,
    ))
}

/// This edge's id, kept in the spool directory so it survives restarts:
/// with the block seq it makes each block's `Nats-Msg-Id`, so a block
/// published again after a crash or reconnect is dropped by the stream.
fn edge_id(base: &Path) -> anyhow::Result<String> {
    let path: PathBuf = base.join("edge-id");
    match std::fs::read_to_string(&path) {
        Ok(s) if !s.trim().is_empty() && s.trim().bytes().all(|b| b.is_ascii_alphanumeric()) => {
            return Ok(s.trim().to_owned());
        }
        Ok(_) => {
            warn!(path = %path.display(), "forward: edge id file is unreadable; making a new one")
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => anyhow::bail!("cannot read {}: {e}", path.display()),
    }
    let mut raw = [0u8; 12];
    {
        use std::io::Read;
        std::fs::File::open("/dev/urandom")
            .and_then(|mut f| f.read_exact(&mut raw))
            .map_err(|e| anyhow::anyhow!("cannot read /dev/urandom: {e}"))?;
    }
    let id: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    write_private(&path, id.as_bytes())
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))?;
    Ok(id)
}

/// Writes `bytes` to `path` (mode 0600) and syncs it.
fn write_private(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// One partition's spool task: takes batches off the queue, joins what is
/// queued into one block of at most `batch_bytes` (one batch may exceed
/// it), waits while the spool is full, appends and syncs, and wakes the
/// publisher. Ends when `drain` is cancelled and the queue is empty.
async fn spool_loop(
    part: Arc<Partition>,
    mut rx: mpsc::Receiver<Batch>,
    batch_bytes: usize,
    stats: Arc<Stats>,
    limiter: Arc<RateLimit>,
    drain: CancellationToken,
) {
    let mut block = Vec::with_capacity(batch_bytes + 4096);
    let mut next: Option<Batch> = None;
    loop {
        let first = match next.take() {
            Some(b) => b,
            None => {
                let got = tokio::select! {
                    b = rx.recv() => b,
                    () = drain.cancelled() => rx.try_recv().ok(),
                };
                match got {
                    Some(b) => b,
                    None => break,
                }
            }
        };
        block.clear();
        encode_block_header(&mut block, 0);
        let mut count = 0u32;
        let mut add = |b: Batch, block: &mut Vec<u8>| {
            block.extend_from_slice(&b.data);
            count += b.count;
            stats.dequeued(b.data.len() as u64, u64::from(b.count));
        };
        add(first, &mut block);
        while block.len() < batch_bytes {
            match rx.try_recv() {
                Ok(b) if block.len() + b.data.len() <= batch_bytes => add(b, &mut block),
                Ok(b) => {
                    next = Some(b);
                    break;
                }
                Err(_) => break,
            }
        }
        if count == 0 {
            continue;
        }
        // The real count, now that the block is cut.
        block[4..8].copy_from_slice(&count.to_le_bytes());
        append(&part, &block, &stats, &limiter).await;
        stats
            .forward_spooled_records
            .fetch_add(u64::from(count), Relaxed);
    }
    let part2 = part.clone();
    let _ = tokio::task::spawn_blocking(move || {
        if let Err(e) = part2.spool().close() {
            warn!(partition = part2.index, cause = %e, "forward spool: close failed");
        }
    })
    .await;
}

/// Appends one block, waiting for room and retrying I/O errors (a full
/// disk): the block is never dropped; the queue behind it fills instead.
async fn append(part: &Arc<Partition>, block: &[u8], stats: &Stats, limiter: &RateLimit) {
    let len = block.len() as u64;
    let mut backoff = Duration::from_millis(100);
    loop {
        if !part.spool().has_room(len) {
            tokio::time::sleep(ROOM_POLL).await;
            continue;
        }
        let p = part.clone();
        let data = block.to_vec();
        let res = tokio::task::spawn_blocking(move || {
            let mut s = p.spool();
            let before = s.depth().1;
            let seq = s.append(&data)?;
            s.sync()?;
            let after = s.depth().1;
            Ok::<_, std::io::Error>((seq, after.saturating_sub(before)))
        })
        .await;
        match res {
            Ok(Ok((seq, grew))) => {
                stats.forward_spool_blocks.fetch_add(1, Relaxed);
                stats.forward_spool_bytes.fetch_add(grew, Relaxed);
                part.appended.send_replace(seq + 1);
                return;
            }
            Ok(Err(e)) => {
                if let Some(suppressed) = limiter.check() {
                    warn!(partition = part.index, cause = %e, suppressed, "forward spool: append failed; retrying (senders wait)");
                }
            }
            Err(e) => {
                warn!(partition = part.index, cause = %e, "forward spool: append task failed; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}
