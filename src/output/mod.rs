//! Outputs: where a route's formatted lines go. A route holds a [`Handle`]
//! and never knows what is behind it: the file output ([`file`]: one writer
//! task per file) or the broker relay ([`forward`]: one spool and publisher
//! per partition, issue 16), whose batches hold encoded records instead of
//! lines.
//!
//! Readers format lines themselves and hand whole [`Batch`]es over bounded
//! channels, so an output only appends bytes; a full channel makes TCP
//! readers wait (backpressure) and UDP readers drop and count.
//!
//! A batch is counted in the `writer_queue_*` gauges from the moment a
//! [`Handle`] queues it until its writer hands it to the OS or drops it.

pub(crate) mod file;
pub(crate) mod forward;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Facility;
use crate::stats::Stats;
pub(crate) use file::NoOutput;

/// Formatted lines for one destination, from one reader, in arrival order.
#[derive(Debug)]
pub(crate) struct Batch {
    /// The facility the lines were routed to; its current settings
    /// (flush_every, max_size) travel with the data, so a reload reaches the
    /// writer without a separate message.
    pub(crate) facility: Arc<Facility>,
    /// Complete lines, each ending in `\n`.
    pub(crate) data: Vec<u8>,
    /// How many messages `data` holds.
    pub(crate) count: u32,
    /// End offset of each message in `data`, kept only for facilities with
    /// `max_size` (empty otherwise), so a size rotation can cut between the
    /// message that crosses the limit and the next one.
    pub(crate) ends: Vec<u32>,
}

/// Why a batch was handed back instead of taken.
#[derive(Debug)]
pub(crate) enum Refused {
    /// The output's queue is full (only from [`Handle::try_send`]).
    Full(Batch),
    /// The output is gone (idle and ended, or shutting down).
    Closed(Batch),
}

/// A route's handle on its destination: cheap to clone.
#[derive(Debug, Clone)]
pub(crate) struct Handle {
    /// The queue of the output behind it.
    tx: Tx,
    /// Where the queue gauges are kept; `None` for a [`Handle::closed`],
    /// which never queues anything.
    stats: Option<Arc<Stats>>,
}

/// A batch counted in the queue gauges while it is being sent: the count
/// is taken back when the send does not complete (refused, or its future
/// dropped by a timeout), so only queued batches stay counted. Counted
/// before the send, not after, so the writer can never take a batch off
/// the gauges before it was put on.
struct Enqueued<'a> {
    stats: Option<&'a Stats>,
    bytes: u64,
    messages: u64,
}

impl<'a> Enqueued<'a> {
    fn count(stats: Option<&'a Stats>, batch: &Batch) -> Enqueued<'a> {
        let e = Enqueued {
            stats,
            bytes: batch.data.len() as u64,
            messages: u64::from(batch.count),
        };
        if let Some(s) = e.stats {
            s.queued(e.bytes, e.messages);
        }
        e
    }

    /// The batch is in the queue: its writer takes it off the gauges.
    fn queued(mut self) {
        self.stats = None;
    }
}

impl Drop for Enqueued<'_> {
    fn drop(&mut self) {
        if let Some(s) = self.stats {
            s.dequeued(self.bytes, self.messages);
        }
    }
}

/// The queue behind a [`Handle`].
#[derive(Debug, Clone)]
enum Tx {
    /// A file writer's commands.
    File(mpsc::Sender<file::Command>),
    /// A forward partition's spool; `key` is the destination file's key
    /// (`app/module[/host]`), carried in every record for the writer side.
    Forward {
        tx: mpsc::Sender<Batch>,
        key: Arc<str>,
    },
}

// === impl Handle ===

impl Handle {
    /// A handle that refuses everything (no output could be had: shutdown).
    pub(crate) fn closed() -> Handle {
        Handle {
            tx: Tx::File(mpsc::channel(1).0),
            stats: None,
        }
    }

    /// For a forwarded route: the destination file's key, which the route
    /// encodes into each record instead of formatting a line.
    pub(crate) fn forward_key(&self) -> Option<&Arc<str>> {
        match &self.tx {
            Tx::Forward { key, .. } => Some(key),
            Tx::File(_) => None,
        }
    }

    /// Queues `batch`, waiting while the queue is full (backpressure).
    ///
    /// # Errors
    /// The batch back, when the output is gone.
    pub(crate) async fn send(&self, batch: Batch) -> Result<(), Refused> {
        let counted = Enqueued::count(self.stats.as_deref(), &batch);
        let sent = match &self.tx {
            Tx::File(tx) => tx
                .send(file::Command::Write(batch))
                .await
                .map_err(|mpsc::error::SendError(cmd)| cmd.into_batch()),
            Tx::Forward { tx, .. } => tx.send(batch).await.map_err(|mpsc::error::SendError(b)| b),
        };
        match sent {
            Ok(()) => {
                counted.queued();
                Ok(())
            }
            Err(batch) => Err(Refused::Closed(batch)),
        }
    }

    /// Queues `batch` if there is room now.
    ///
    /// # Errors
    /// The batch back, saying whether the queue was full or the output gone.
    pub(crate) fn try_send(&self, batch: Batch) -> Result<(), Refused> {
        use mpsc::error::TrySendError;
        let counted = Enqueued::count(self.stats.as_deref(), &batch);
        let sent = match &self.tx {
            Tx::File(tx) => tx
                .try_send(file::Command::Write(batch))
                .map_err(|e| match e {
                    TrySendError::Full(cmd) => Refused::Full(cmd.into_batch()),
                    TrySendError::Closed(cmd) => Refused::Closed(cmd.into_batch()),
                }),
            Tx::Forward { tx, .. } => tx.try_send(batch).map_err(|e| match e {
                TrySendError::Full(b) => Refused::Full(b),
                TrySendError::Closed(b) => Refused::Closed(b),
            }),
        };
        if sent.is_ok() {
            counted.queued();
        }
        sent
    }

    /// Waits until everything queued through this handle before the call
    /// is written and synced to disk, and where the file then ends; not
    /// `ok` when it is not (write errors, or the output is gone). A forward
    /// handle's records are in its spool's hands once queued: always `ok`.
    pub(crate) async fn sync(&self) -> file::Synced {
        match &self.tx {
            Tx::File(tx) => {
                let (reply, done) = tokio::sync::oneshot::channel();
                if tx.send(file::Command::Sync(reply)).await.is_err() {
                    return file::Synced {
                        ok: false,
                        mark: None,
                    };
                }
                done.await.unwrap_or(file::Synced {
                    ok: false,
                    mark: None,
                })
            }
            Tx::Forward { .. } => file::Synced {
                ok: true,
                mark: None,
            },
        }
    }
}

/// Every output the daemon writes to.
#[derive(Debug, Clone)]
pub(crate) struct Outputs {
    /// Log files, one writer task each (shared with their rotation scheduler).
    pub(crate) files: Arc<file::Writers>,
    /// The broker relay (`[forward]`), for the facilities that forward;
    /// `None` without one, and always for the broker consumer's own routes
    /// (what it reads from the broker is written here, never sent back).
    pub(crate) forward: Option<Arc<forward::Forward>>,
}

// === impl Outputs ===

impl Outputs {
    /// The handle for `facility` (and `host`, for `file_per_host`), starting
    /// its output on first use.
    ///
    /// # Errors
    /// Why there is none: shutdown began, or the app has too many files.
    pub(crate) fn handle(
        &self,
        facility: &Arc<Facility>,
        host: Option<&str>,
    ) -> Result<Handle, NoOutput> {
        let tx = match &self.forward {
            Some(fwd) if fwd.wants(facility) => {
                let key = crate::broker::codec::file_key(
                    &facility.app_id,
                    &facility.module,
                    host.filter(|_| facility.file_per_host),
                );
                Tx::Forward {
                    tx: fwd.sender_for(&key),
                    key: key.into(),
                }
            }
            _ => Tx::File(self.files.sender_for(facility, host)?),
        };
        Ok(Handle {
            tx,
            stats: Some(self.files.ctx().stats.clone()),
        })
    }
}
