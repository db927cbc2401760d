//! Outputs: where a route's formatted lines go. A route holds a [`Handle`]
//! and never knows what is behind it; today that is always the file output
//! ([`file`]: one writer task per file), and a broker relay will be another.
//!
//! Readers format lines themselves and hand whole [`Batch`]es over bounded
//! channels, so an output only appends bytes; a full channel makes TCP
//! readers wait (backpressure) and UDP readers drop and count.

pub(crate) mod file;

use std::sync::Arc;

use tokio::sync::mpsc;

use crate::config::Facility;
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
    /// The file writer's queue.
    tx: mpsc::Sender<file::Command>,
}

// === impl Handle ===

impl Handle {
    /// A handle that refuses everything (no output could be had: shutdown).
    pub(crate) fn closed() -> Handle {
        Handle {
            tx: mpsc::channel(1).0,
        }
    }

    /// Queues `batch`, waiting while the queue is full (backpressure).
    ///
    /// # Errors
    /// The batch back, when the output is gone.
    pub(crate) async fn send(&self, batch: Batch) -> Result<(), Refused> {
        self.tx
            .send(file::Command::Write(batch))
            .await
            .map_err(|mpsc::error::SendError(cmd)| Refused::Closed(cmd.into_batch()))
    }

    /// Queues `batch` if there is room now.
    ///
    /// # Errors
    /// The batch back, saying whether the queue was full or the output gone.
    pub(crate) fn try_send(&self, batch: Batch) -> Result<(), Refused> {
        self.tx
            .try_send(file::Command::Write(batch))
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(cmd) => Refused::Full(cmd.into_batch()),
                mpsc::error::TrySendError::Closed(cmd) => Refused::Closed(cmd.into_batch()),
            })
    }
}

/// Every output the daemon writes to.
#[derive(Debug)]
pub(crate) struct Outputs {
    /// Log files, one writer task each (shared with their rotation scheduler).
    pub(crate) files: Arc<file::Writers>,
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
        let tx = self.files.sender_for(facility, host)?;
        Ok(Handle { tx })
    }
}
