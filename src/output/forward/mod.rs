//! The forward output (issue 16): the broker is an output like the file.
//! Routes of forwarding facilities hand batches of encoded records
//! ([`crate::broker::codec`]) to the queue of their destination file's
//! partition; per partition one [`publish`] task cuts them into blocks and
//! sends them to JetStream in order, straight from memory while the broker
//! keeps up, through the on-disk [`spool`] (fsynced per block) while it is
//! away or slow.
//!
//! Backpressure: while a block is in flight the queue waits; a spool that
//! is full stops taking from it. The queue fills, and TCP readers wait while
//! UDP readers drop and count, exactly as with a slow disk. A SIGKILL loses
//! at most what sat in the partition queues ([`QUEUE_BATCHES`] batches each,
//! one reader flush apiece) and the one block in flight from memory (at
//! most `batch_bytes`); what was spooled survives, and a power cut too.

pub(crate) mod publish;
pub(crate) mod spool;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::codec::partition_of;
use crate::config::{Facility, ForwardSection};
use crate::output::Batch;
use crate::ratelimit::RateLimit;
use crate::stats::Stats;
use spool::{Spool, SpoolLimits};

/// Batches each partition's queue holds before readers wait.
pub(crate) const QUEUE_BATCHES: usize = 64;

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
    /// Tells the publishers the readers are done: spool what is in memory,
    /// publish the spool, end when it is empty.
    drain: CancellationToken,
    /// Ends the publishers at once (the grace period is over).
    hard: CancellationToken,
    /// The publisher tasks.
    publishers: TaskTracker,
}

impl Relay {
    /// Stops the relay after the readers are done: the block in flight
    /// and every queued batch are spooled and synced, then the publishers
    /// get until `deadline` to send what the spool holds. What is left is
    /// published at the next start.
    pub(crate) async fn stop(self, deadline: tokio::time::Instant) {
        self.drain.cancel();
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

/// One partition's spool, shared by its publisher and the blocking tasks
/// that write it.
pub(crate) struct Partition {
    /// The partition number.
    pub(crate) index: u32,
    /// The spool; a std mutex, held only for one append, read or ack.
    pub(crate) spool: Mutex<Spool>,
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
    let js = async_nats::jetstream::new(client.clone());
    let relay = Relay {
        drain: CancellationToken::new(),
        hard: CancellationToken::new(),
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
            spool: Mutex::new(spool),
        });
        let (tx, rx) = mpsc::channel(QUEUE_BATCHES);
        parts.push(tx);
        relay.publishers.spawn(publish::run(publish::Publisher {
            part,
            rx,
            client: client.clone(),
            js: js.clone(),
            subject: crate::broker::nats::subject(&section.stream, p),
            settings: section.stream.clone(),
            edge_id: edge_id.clone(),
            batch_bytes: section.batch_bytes,
            spill_after: section.spill_after,
            stats: stats.clone(),
            limiter: limiter.clone(),
            drain: relay.drain.clone(),
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
