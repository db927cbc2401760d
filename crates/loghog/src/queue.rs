//! The queue between the callers of [`Client::send`](crate::Client::send)
//! and the worker thread: encoded frames back to back in one buffer, a
//! bounded count and byte size, the oldest dropped (and counted) past either
//! bound, and sequence numbers so a flush knows when "everything queued
//! before me" has left.
//!
//! The worker takes the whole buffer in one swap, so a caller never waits for
//! a write, and puts back what it could not write (the oldest messages) when
//! a connection fails; the bounds then apply to all of it.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, MutexGuard};

use crate::Error;

/// One queued frame.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Meta {
    /// Position in the order of `send` calls: flushes wait for a prefix.
    pub(crate) seq: u64,
    /// Bytes of the frame (header included).
    pub(crate) len: u32,
}

/// A flush in progress.
struct Waiter {
    /// Tells waiters apart.
    id: u64,
    /// Every message with a lower sequence number must leave the queue.
    target: u64,
    /// One of those messages was dropped instead of written.
    lost: bool,
}

/// What the lock protects.
pub(crate) struct State {
    /// Frames back to back; `buf[..head]` are dropped frames not yet compacted.
    pub(crate) buf: Vec<u8>,
    /// Start of the oldest live frame in `buf`.
    head: usize,
    /// One entry per live frame in `buf[head..]`, oldest first.
    pub(crate) frames: VecDeque<Meta>,
    /// Sequence number of the next `send`.
    next_seq: u64,
    /// Oldest sequence number the worker holds in a batch being written.
    inflight: Option<u64>,
    /// How many messages that batch holds.
    inflight_count: usize,
    /// The worker sleeps on `wake` and wants a notification. Callers notify
    /// only then: a futex wake per message would cost more than the rest of
    /// `send` together.
    pub(crate) worker_idle: bool,
    /// The last handle is gone: the worker should exit.
    pub(crate) stop: bool,
    /// Flushes in progress.
    waiters: Vec<Waiter>,
    /// Numbers waiters.
    next_waiter: u64,
    /// What the last failed connection attempt or write said.
    pub(crate) last_error: Option<Error>,
}

/// The queue, shared by every handle and the worker.
pub(crate) struct Shared {
    pub(crate) state: Mutex<State>,
    /// The worker waits here for frames (or `stop`).
    pub(crate) wake: Condvar,
    /// Flushes wait here for the worker's progress.
    pub(crate) progress: Condvar,
    /// Messages dropped so far (an atomic so `dropped()` takes no lock).
    pub(crate) dropped: AtomicU64,
    /// At most this many messages wait.
    max_messages: usize,
    /// At most this many bytes of frames wait.
    max_bytes: usize,
}

/// A batch taken by the worker.
#[derive(Default)]
pub(crate) struct Batch {
    /// The frames; `bytes[start..]` is what is to be written.
    pub(crate) bytes: Vec<u8>,
    /// Where the first frame starts.
    pub(crate) start: usize,
    /// One entry per frame.
    pub(crate) frames: VecDeque<Meta>,
}

impl Batch {
    pub(crate) fn data(&self) -> &[u8] {
        &self.bytes[self.start..]
    }
}

// === impl Shared ===

impl Shared {
    pub(crate) fn new(max_messages: usize, max_bytes: usize) -> Shared {
        Shared {
            state: Mutex::new(State {
                buf: Vec::new(),
                head: 0,
                frames: VecDeque::new(),
                next_seq: 0,
                inflight: None,
                inflight_count: 0,
                worker_idle: false,
                stop: false,
                waiters: Vec::new(),
                next_waiter: 0,
                last_error: None,
            }),
            wake: Condvar::new(),
            progress: Condvar::new(),
            dropped: AtomicU64::new(0),
            max_messages: max_messages.max(1),
            max_bytes: max_bytes.max(1),
        }
    }

    /// Locks the state. A panic while holding the lock (there is no code
    /// that can panic there) would leave consistent data, so poisoning is
    /// ignored rather than spread to every thread that logs.
    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a frame the caller just appended to `st.buf` at `start`,
    /// drops it when it is over `max_frame`, trims to the bounds, and says
    /// whether the worker must be woken.
    pub(crate) fn commit(&self, st: &mut State, start: usize, max_frame: usize) -> bool {
        let len = st.buf.len() - start;
        if len > max_frame {
            st.buf.truncate(start);
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        let seq = st.next_seq;
        st.next_seq += 1;
        st.frames.push_back(Meta {
            seq,
            len: len as u32,
        });
        self.trim(st);
        std::mem::take(&mut st.worker_idle)
    }

    /// Drops the oldest waiting frames until both bounds hold (lock held).
    fn trim(&self, st: &mut State) {
        let mut queued_bytes = st.buf.len() - st.head;
        let mut dropped = 0;
        while !st.frames.is_empty()
            && (st.frames.len() > self.max_messages || queued_bytes > self.max_bytes)
        {
            if let Some(m) = st.frames.pop_front() {
                st.head += m.len as usize;
                queued_bytes -= m.len as usize;
                dropped += 1;
                for w in &mut st.waiters {
                    w.lost |= m.seq < w.target;
                }
            }
        }
        if dropped > 0 {
            self.dropped.fetch_add(dropped, Ordering::Relaxed);
            if !st.waiters.is_empty() {
                self.progress.notify_all();
            }
        }
        // Compact once the dead prefix is the larger part: amortized O(1)
        // per dropped byte, and only ever while the daemon is unreachable.
        if st.head > 0 && st.head >= st.buf.len() - st.head {
            st.buf.drain(..st.head);
            st.head = 0;
        }
    }

    /// Hands every queued frame to the worker (lock held), swapping in the
    /// worker's spare buffers so neither side allocates in steady state.
    pub(crate) fn take(&self, st: &mut State, batch: &mut Batch) {
        batch.bytes.clear();
        batch.frames.clear();
        std::mem::swap(&mut st.buf, &mut batch.bytes);
        std::mem::swap(&mut st.frames, &mut batch.frames);
        batch.start = std::mem::take(&mut st.head);
        st.inflight = batch.frames.front().map(|m| m.seq);
        st.inflight_count = batch.frames.len();
    }

    /// The worker wrote the first `written` bytes of its batch (all of it
    /// on success). Frames cut off are put back at the front of the queue,
    /// whole, to be sent again on the next connection.
    pub(crate) fn settle(&self, batch: &mut Batch, written: usize) {
        let mut done = 0;
        let mut end = 0;
        for m in &batch.frames {
            if end + m.len as usize > written {
                break;
            }
            end += m.len as usize;
            done += 1;
        }
        let mut st = self.lock();
        if done < batch.frames.len() {
            let rest = &batch.data()[end..];
            let mut buf = Vec::with_capacity(rest.len() + st.buf.len() - st.head);
            buf.extend_from_slice(rest);
            buf.extend_from_slice(&st.buf[st.head..]);
            st.buf = buf;
            st.head = 0;
            for m in batch.frames.iter().skip(done).rev() {
                st.frames.push_front(*m);
            }
        }
        st.inflight = None;
        st.inflight_count = 0;
        self.trim(&mut st);
        if !st.waiters.is_empty() {
            self.progress.notify_all();
        }
        drop(st);
        batch.frames.clear();
    }

    /// Drops everything queued (the client gave up on the daemon).
    pub(crate) fn abandon(&self, st: &mut State) {
        let n = st.frames.len() as u64;
        for m in st.frames.drain(..) {
            for w in &mut st.waiters {
                w.lost |= m.seq < w.target;
            }
        }
        st.buf.clear();
        st.head = 0;
        self.dropped.fetch_add(n, Ordering::Relaxed);
        self.progress.notify_all();
    }

    /// Messages queued or being written.
    pub(crate) fn pending(&self) -> usize {
        let st = self.lock();
        st.frames.len() + st.inflight_count
    }

    /// Waits until every message queued before the call has been written,
    /// or `timeout` passed, or one of them was dropped.
    pub(crate) fn flush(&self, timeout: std::time::Duration) -> Result<(), Error> {
        let deadline = std::time::Instant::now() + timeout;
        let mut st = self.lock();
        let target = st.next_seq;
        let id = st.next_waiter;
        st.next_waiter += 1;
        st.waiters.push(Waiter {
            id,
            target,
            lost: false,
        });
        let result = loop {
            let oldest = st.inflight.or_else(|| st.frames.front().map(|m| m.seq));
            let lost = st.waiters.iter().any(|w| w.id == id && w.lost);
            if lost {
                break Err(Error::Dropped {
                    cause: st.last_error.clone().map(Box::new),
                });
            }
            if oldest.is_none_or(|seq| seq >= target) {
                break Ok(());
            }
            let now = std::time::Instant::now();
            if now >= deadline || st.stop {
                let unsent = st.frames.iter().filter(|m| m.seq < target).count()
                    + if st.inflight.is_some() {
                        st.inflight_count
                    } else {
                        0
                    };
                break Err(Error::Timeout {
                    unsent,
                    cause: st.last_error.clone().map(Box::new),
                });
            }
            st = self
                .progress
                .wait_timeout(st, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        };
        st.waiters.retain(|w| w.id != id);
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn push(q: &Shared, n: u8) {
        let mut st = q.lock();
        let start = st.buf.len();
        st.buf.extend_from_slice(&[n; 10]);
        q.commit(&mut st, start, 1000);
    }

    fn contents(q: &Shared) -> Vec<u8> {
        let st = q.lock();
        st.buf[st.head..].chunks(10).map(|c| c[0]).collect()
    }

    #[test]
    fn drops_the_oldest_past_either_bound() {
        let q = Shared::new(3, 1000);
        for i in 0..5 {
            push(&q, i);
        }
        assert_eq!(contents(&q), [2, 3, 4]);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 2);

        let q = Shared::new(100, 25);
        for i in 0..5 {
            push(&q, i);
        }
        assert_eq!(contents(&q), [3, 4]);
        assert_eq!(q.dropped.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_failed_write_puts_the_rest_back_in_front_then_trims() {
        let q = Shared::new(4, 1000);
        for i in 0..3 {
            push(&q, i);
        }
        let mut batch = Batch::default();
        q.take(&mut q.lock(), &mut batch);
        for i in 3..6 {
            push(&q, i);
        }
        // 15 bytes written: frame 0 whole, frame 1 cut off.
        q.settle(&mut batch, 15);
        assert_eq!(contents(&q), [2, 3, 4, 5], "1 was the oldest left: dropped");
        assert_eq!(q.dropped.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn flush_waits_for_its_prefix_and_reports_drops() {
        let q = Shared::new(2, 1000);
        assert!(q.flush(Duration::ZERO).is_ok(), "nothing queued");
        push(&q, 0);
        assert!(matches!(
            q.flush(Duration::from_millis(1)),
            Err(Error::Timeout { unsent: 1, .. })
        ));
        let mut batch = Batch::default();
        q.take(&mut q.lock(), &mut batch);
        let len = batch.data().len();
        q.settle(&mut batch, len);
        assert!(q.flush(Duration::ZERO).is_ok());

        let q = std::sync::Arc::new(Shared::new(1, 1000));
        push(&q, 0);
        let q2 = q.clone();
        let flusher = std::thread::spawn(move || q2.flush(Duration::from_secs(30)));
        while q.lock().waiters.is_empty() {
            std::thread::yield_now();
        }
        push(&q, 1);
        assert!(matches!(
            flusher.join().unwrap(),
            Err(Error::Dropped { .. })
        ));
    }
}
