//! The budget of open log files (`[server] max_open_files`): a writer needs
//! a slot before it opens its file and gives it back when it closes it.
//! When none is free, the least recently written open file is asked to
//! close (it reopens on its next line) and the opener waits for its slot.
//! So a relay sending for 100,000 hosts costs at most the budget in
//! descriptors, and the ones connections and the state file need are never
//! taken.
//!
//! The lock is taken only when a file is opened or closed; a write only
//! stores its coarse time into its own member's atomic.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use crate::stats::Stats;

/// How long an opener waits for the file it asked to close before it asks
/// another (the first may be stuck on a slow disk).
const EVICT_WAIT: Duration = Duration::from_millis(100);

/// One writer's place in the budget.
#[derive(Debug)]
pub(crate) struct Member {
    id: u64,
    /// Milliseconds since the budget's start at the last write.
    last_use: AtomicU64,
    /// Signalled when this member should close its file.
    pub(crate) evict: Notify,
}

/// A slot of the budget, held while the file is open; dropping it frees
/// the slot.
#[derive(Debug)]
pub(crate) struct Slot {
    _permit: OwnedSemaphorePermit,
    member: Arc<Member>,
    files: Arc<OpenFiles>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.files.forget(&self.member);
    }
}

/// Open files against `max_open_files`.
#[derive(Debug)]
pub(crate) struct OpenFiles {
    start: Instant,
    next_id: AtomicU64,
    permits: Arc<Semaphore>,
    /// Members holding a slot that may still be asked to close.
    open: Mutex<HashMap<u64, Arc<Member>>>,
    /// Where the `open_files` gauge is kept.
    stats: Arc<Stats>,
}

// === impl OpenFiles ===

impl OpenFiles {
    /// A budget of `max` open files (at least 1), counted in `stats`.
    pub(crate) fn new(max: usize, stats: Arc<Stats>) -> Arc<OpenFiles> {
        Arc::new(OpenFiles {
            start: Instant::now(),
            next_id: AtomicU64::new(1),
            permits: Arc::new(Semaphore::new(max.max(1))),
            open: Mutex::new(HashMap::new()),
            stats,
        })
    }

    /// A member for one writer; it holds no slot until [`OpenFiles::slot`].
    pub(crate) fn member(&self) -> Arc<Member> {
        Arc::new(Member {
            id: self.next_id.fetch_add(1, Relaxed),
            last_use: AtomicU64::new(0),
            evict: Notify::new(),
        })
    }

    /// Marks `m` as having written now (one relaxed store).
    pub(crate) fn touch(&self, m: &Member) {
        m.last_use.store(self.now_ms(), Relaxed);
    }

    /// A slot for `m` to open its file with, waiting while the least
    /// recently written open files are asked to close.
    pub(crate) async fn slot(self: &Arc<Self>, m: &Arc<Member>) -> Slot {
        let permit = loop {
            if let Ok(p) = self.permits.clone().try_acquire_owned() {
                break p;
            }
            self.evict_one(m.id);
            let wait = tokio::time::timeout(EVICT_WAIT, self.permits.clone().acquire_owned());
            if let Ok(Ok(p)) = wait.await {
                break p;
            }
            // Timed out: the one asked is busy (a slow disk); ask another.
        };
        self.touch(m);
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(m.id, m.clone());
        self.stats.open_files.fetch_add(1, Relaxed);
        Slot {
            _permit: permit,
            member: m.clone(),
            files: self.clone(),
        }
    }

    /// Asks the least recently written open file (not `except`'s) to close.
    fn evict_one(&self, except: u64) {
        let victim = {
            let mut open = self.open.lock().unwrap_or_else(|e| e.into_inner());
            // A full scan, only when the budget is used up: an ordered
            // structure would cost a lock on every write instead.
            let victim = open
                .values()
                .filter(|o| o.id != except)
                .min_by_key(|o| o.last_use.load(Relaxed))
                .cloned();
            if let Some(v) = &victim {
                // Asked once: concurrent openers pick different victims.
                open.remove(&v.id);
            }
            victim
        };
        if let Some(v) = victim {
            v.evict.notify_one();
        }
    }

    /// A slot was given back.
    fn forget(&self, m: &Member) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&m.id);
        self.stats.open_files.fetch_sub(1, Relaxed);
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_least_recently_written_file_is_asked_to_close() {
        let files = OpenFiles::new(2, Arc::default());
        let (a, b, c) = (files.member(), files.member(), files.member());
        let slot_a = files.slot(&a).await;
        let slot_b = files.slot(&b).await;
        a.last_use.store(10, Relaxed);
        b.last_use.store(5, Relaxed);
        // c waits for a slot; b (written longest ago) is asked to close.
        let opener = {
            let files = files.clone();
            let c = c.clone();
            tokio::spawn(async move { files.slot(&c).await })
        };
        tokio::time::timeout(Duration::from_secs(5), b.evict.notified())
            .await
            .expect("b asked to close");
        assert_eq!(files.stats.open_files.load(Relaxed), 2);
        drop(slot_b);
        let slot_c = tokio::time::timeout(Duration::from_secs(5), opener)
            .await
            .expect("c got b's slot")
            .unwrap();
        assert_eq!(files.stats.open_files.load(Relaxed), 2);
        drop((slot_a, slot_c));
        assert_eq!(files.stats.open_files.load(Relaxed), 0);
    }
}
