//! Frame → message → facility → signature check → formatted line.
//!
//! Every reader (a TCP/TLS connection, a UDP socket) owns one [`Processor`].
//! It formats lines itself, so the work scales with connections, and keeps
//! them in one pending batch per destination file until [`Processor::flush`]
//! hands the batches to the writers. Counters are kept locally and added to
//! the shared [`Stats`] once per flush.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::atomic::AtomicUsize;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};
use tracing::warn;

use crate::config::{Facility, FacilityDb};
use crate::protocol::frame::Inflater;
use crate::protocol::{FrameError, Header, Message};
use crate::stats::{RateLimit, Stats};
use crate::timefmt::{LineClock, STAMP_LEN};
use crate::writer::{path, Batch, Command, Writers};

/// Flush a reader's pending lines early once they pass this many bytes.
const FLUSH_AT_BYTES: usize = 256 << 10;

/// How long a UDP reader waits for room in a full writer queue before it
/// drops the batch (UDP cannot slow its senders down; this only absorbs bursts).
const UDP_QUEUE_WAIT: std::time::Duration = std::time::Duration::from_millis(50);

/// Most bytes a route's next batch buffer is allocated with up front.
const ROUTE_BUF_KEEP: usize = 16 << 10;

/// Readers with more routes than this keep no buffer between batches.
const FEW_ROUTES: usize = 64;

/// Forget a reader's routes once it has more than this many (a relay
/// sending for ever new hosts), so their senders and buffers stay bounded.
const MAX_ROUTES: usize = 4096;

/// What all readers share.
#[derive(Debug)]
pub struct Pipeline {
    /// Output file registry.
    pub writers: Writers,
    /// Daemon-wide counters.
    pub stats: Arc<Stats>,
    /// Limits warnings about bad input (one hostile peer must not flood the log).
    pub limiter: RateLimit,
    /// `[server] max_msg_size`.
    pub max_msg_size: usize,
    /// `[main] logdir`.
    pub logdir: PathBuf,
    /// `log` or `log.gz` (compress_on_write).
    pub file_ext: &'static str,
    /// The current facilities; replaced on SIGHUP.
    pub facilities: watch::Receiver<Arc<FacilityDb>>,
    /// Stream connections being served now (sizes their read buffers).
    pub open_streams: AtomicUsize,
}

/// Which listener a reader belongs to, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Tcp,
    Udp,
    Tls,
}

impl Transport {
    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
            Transport::Tls => "tls",
        }
    }
}

/// Pending lines for one destination file.
struct Route {
    facility: Arc<Facility>,
    /// The host part of the file name (`file_per_host` only), as sent.
    host: Option<Box<str>>,
    tx: mpsc::Sender<Command>,
    buf: Vec<u8>,
    count: u32,
    /// Message end offsets in `buf` (only for `max_size` facilities).
    ends: Vec<u32>,
}

#[derive(Debug, Default)]
struct Counts {
    received: u64,
    bad_frames: u64,
    bad_signature: u64,
    unknown_app: u64,
    udp_dropped: u64,
}

/// Why an accepted frame was not written (for the rate-limited warning).
enum Reject {
    Frame(FrameError),
    Message(crate::protocol::MessageError),
}

/// One reader's message pipeline.
pub struct Processor {
    pipeline: Arc<Pipeline>,
    facilities: watch::Receiver<Arc<FacilityDb>>,
    db: Arc<FacilityDb>,
    routes: Routes,
    /// Reused zlib inflater and its buffer (made on the first compressed frame).
    scratch: Option<Inflater>,
    clock: LineClock,
    /// Receipt time of the chunk being processed.
    stamp: [u8; STAMP_LEN],
    peer: IpAddr,
    /// The peer address as text: the host name of messages without one.
    peer_text: String,
    transport: Transport,
    counts: Counts,
    pending_bytes: usize,
    /// The last (app_id, module) looked up and its facility.
    last_route: Option<(Box<str>, Box<str>, Arc<Facility>)>,
}

// === impl Processor ===

impl Processor {
    /// A processor for one reader.
    pub fn new(pipeline: Arc<Pipeline>, peer: IpAddr, transport: Transport) -> Processor {
        let mut facilities = pipeline.facilities.clone();
        let db = facilities.borrow_and_update().clone();
        let mut clock = LineClock::new();
        let stamp = clock.now();
        Processor {
            pipeline,
            facilities,
            db,
            routes: Routes::default(),
            scratch: None,
            clock,
            stamp,
            peer,
            peer_text: peer.to_string(),
            transport,
            counts: Counts::default(),
            pending_bytes: 0,
            last_route: None,
        }
    }

    /// Changes the peer (UDP: every datagram has its own).
    pub fn set_peer(&mut self, peer: IpAddr) {
        if peer != self.peer {
            self.peer = peer;
            self.peer_text = peer.to_string();
        }
    }

    /// Starts a chunk of frames received together: takes the receipt time
    /// and picks up a reloaded facility set. Call with nothing pending.
    pub fn begin_chunk(&mut self) {
        self.stamp = self.clock.now();
        if self.facilities.has_changed().unwrap_or(false) {
            self.db = self.facilities.borrow_and_update().clone();
            self.routes.clear();
            self.last_route = None;
        } else if self.routes.len() > MAX_ROUTES {
            self.routes.clear();
        }
    }

    /// Whether enough is pending that it should be flushed before reading on.
    pub fn needs_flush(&self) -> bool {
        self.pending_bytes >= FLUSH_AT_BYTES
    }

    /// Handles one complete frame: `raw` is its payload (header stripped).
    pub fn process(&mut self, header: Header, raw: &[u8]) {
        let mut scratch = std::mem::take(&mut self.scratch);
        if let Err(reject) = self.process_inner(header, raw, &mut scratch) {
            self.counts.bad_frames += 1;
            if let Some(suppressed) = self.pipeline.limiter.check() {
                let cause = match reject {
                    Reject::Frame(e) => e.to_string(),
                    Reject::Message(e) => e.to_string(),
                };
                warn!(peer = %self.peer, transport = self.transport.as_str(), %cause, suppressed, "dropped frame");
            }
        }
        // Don't let one huge inflated message pin its buffer forever.
        if scratch.as_ref().is_some_and(|z| z.capacity() > 1 << 20) {
            scratch = None;
        }
        self.scratch = scratch;
    }

    /// Counts and (rate-limited) logs a datagram that is not exactly one
    /// frame: `err` is why the header was refused, `None` when the frame's
    /// length disagrees with the datagram's.
    pub fn reject_datagram(&mut self, len: usize, err: Option<FrameError>) {
        self.counts.bad_frames += 1;
        if let Some(suppressed) = self.pipeline.limiter.check() {
            let cause = match err {
                Some(FrameError::Incomplete) => "datagram shorter than its frame".to_string(),
                Some(e) => e.to_string(),
                None => "datagram longer than its frame".to_string(),
            };
            warn!(peer = %self.peer, transport = "udp", len, %cause, suppressed, "dropped datagram");
        }
    }

    fn process_inner(
        &mut self,
        header: Header,
        raw: &[u8],
        scratch: &mut Option<Inflater>,
    ) -> Result<(), Reject> {
        let payload = header
            .payload(raw, self.pipeline.max_msg_size, scratch)
            .map_err(Reject::Frame)?;
        let msg = Message::decode(payload).map_err(Reject::Message)?;
        self.counts.received += 1;
        let module = msg.module_path();
        // Connections mostly repeat one app and module: two short compares
        // instead of hashing both names for every message. The facility is
        // borrowed from this cache, not cloned: an `Arc` clone and drop per
        // message bounced its count between cores (8% of CPU with 4 readers).
        let hit = matches!(&self.last_route,
            Some((app, m, _)) if same_str(app, &msg.app_id) && same_str(m, module));
        if !hit {
            let Some(f) = self.db.lookup(&msg.app_id, module) else {
                self.counts.unknown_app += 1;
                if let Some(suppressed) = self.pipeline.limiter.check() {
                    warn!(peer = %self.peer, app_id = %msg.app_id, suppressed, "dropped message for an app with no facility");
                }
                return Ok(());
            };
            self.last_route = Some((msg.app_id.as_ref().into(), module.into(), f.clone()));
        }
        let Some((_, _, facility)) = &self.last_route else {
            return Ok(()); // just filled above
        };
        if let Some(key) = &facility.secret {
            if let Err(err) = key.verify(&msg) {
                self.counts.bad_signature += 1;
                if let Some(suppressed) = self.pipeline.limiter.check() {
                    warn!(peer = %self.peer, app_id = %msg.app_id, module = %msg.module, cause = %err, suppressed, "dropped message: signature check failed");
                }
                return Ok(());
            }
        }
        let cleaned;
        let host: &str = match msg.hostname.as_deref() {
            // A host name is one token: control characters in it (a newline
            // could forge a whole record) are replaced. Bodies keep theirs.
            Some(h) if h.bytes().any(|b| b < 0x20 || b == 0x7f) => {
                cleaned = h.replace(|c: char| c.is_control(), "_");
                &cleaned
            }
            Some(h) if !h.is_empty() => h,
            _ => &self.peer_text,
        };
        let idx = self.routes.index_of(&self.pipeline, facility, host);
        let route = &mut self.routes.list[idx];
        let before = route.buf.len();
        route
            .buf
            .reserve(STAMP_LEN + 6 + host.len() + msg.body.len());
        route.buf.extend_from_slice(&self.stamp);
        route.buf.extend_from_slice(b" - ");
        route.buf.extend_from_slice(host.as_bytes());
        route.buf.extend_from_slice(b" - ");
        route.buf.extend_from_slice(msg.body.as_bytes());
        route.buf.push(b'\n');
        route.count += 1;
        if route.facility.max_size.is_some() {
            route.ends.push(route.buf.len() as u32);
        }
        self.pending_bytes += route.buf.len() - before;
        Ok(())
    }

    /// Hands every pending batch to its writer, waiting while a writer's
    /// queue is full (backpressure for stream transports).
    pub async fn flush(&mut self) {
        for i in 0..self.routes.list.len() {
            let Some(batch) = self.take_batch(i) else {
                continue;
            };
            let tx = self.routes.list[i].tx.clone();
            if let Err(mpsc::error::SendError(cmd)) = tx.send(Command::Write(batch)).await {
                self.resend(i, cmd).await;
            }
        }
        self.pending_bytes = 0;
        self.publish_counts();
    }

    /// Like [`Processor::flush`] but waits at most [`UDP_QUEUE_WAIT`] for a
    /// full queue, then drops the batch and counts it (UDP under overload).
    pub async fn try_flush(&mut self) {
        for i in 0..self.routes.list.len() {
            let Some(batch) = self.take_batch(i) else {
                continue;
            };
            let count = batch.count;
            match self.routes.list[i].tx.try_send(Command::Write(batch)) {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(cmd)) => {
                    // A burst: give the writer a moment (the kernel's receive
                    // buffer holds what arrives meanwhile) before dropping.
                    let tx = self.routes.list[i].tx.clone();
                    match tokio::time::timeout(UDP_QUEUE_WAIT, tx.send(cmd)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(mpsc::error::SendError(cmd))) => self.resend(i, cmd).await,
                        Err(_) => self.counts.udp_dropped += count as u64,
                    }
                }
                Err(mpsc::error::TrySendError::Closed(cmd)) => self.resend(i, cmd).await,
            }
        }
        self.pending_bytes = 0;
        self.publish_counts();
    }

    fn take_batch(&mut self, i: usize) -> Option<Batch> {
        // Start the next batch near this one's size, but never hold much
        // per route: idle connections × files would add up. A reader with
        // many routes (a relay) keeps none: it would hold thousands.
        let keep = if self.routes.len() > FEW_ROUTES {
            0
        } else {
            ROUTE_BUF_KEEP
        };
        let r = &mut self.routes.list[i];
        if r.count == 0 {
            return None;
        }
        let cap = r.buf.len().min(keep);
        Some(Batch {
            facility: r.facility.clone(),
            data: std::mem::replace(&mut r.buf, Vec::with_capacity(cap)),
            count: std::mem::take(&mut r.count),
            ends: std::mem::take(&mut r.ends),
        })
    }

    /// The writer behind a route went away: get a fresh sender and retry once.
    async fn resend(&mut self, i: usize, cmd: Command) {
        let route = &self.routes.list[i];
        let p = &self.pipeline;
        let file = path::file_path(
            &p.logdir,
            &route.facility,
            route.host.as_deref(),
            p.file_ext,
        );
        let mut cmd = cmd;
        if let Some(tx) = p.writers.sender(&file, &route.facility) {
            self.routes.list[i].tx = tx.clone();
            match tx.send(cmd).await {
                Ok(()) => return,
                Err(mpsc::error::SendError(back)) => cmd = back,
            }
        }
        let lost = match cmd {
            Command::Write(b) => b.count as u64,
            _ => 0,
        };
        p.stats.write_errors.fetch_add(lost, Relaxed);
        warn!(path = %file.display(), lost, "no writer for file (shutting down); batch lost");
    }

    fn publish_counts(&mut self) {
        let c = std::mem::take(&mut self.counts);
        let s = &self.pipeline.stats;
        for (counter, n) in [
            (&s.received, c.received),
            (&s.bad_frames, c.bad_frames),
            (&s.bad_signature, c.bad_signature),
            (&s.unknown_app, c.unknown_app),
            (&s.udp_dropped, c.udp_dropped),
        ] {
            if n > 0 {
                counter.fetch_add(n, Relaxed);
            }
        }
    }
}

/// `a == b`, without calling `memcmp` for empty strings: glibc's AVX-512
/// `memcmp` loads through the pointer under a mask even for length 0, and
/// an empty `Box<str>` points at a dangling address, so that load takes a
/// fault-suppression assist: ~100 ns per compare, measured at 10% of the
/// daemon's CPU with the (usual) empty module.
fn same_str(a: &str, b: &str) -> bool {
    a.len() == b.len() && (a.is_empty() || a == b)
}

/// A reader's routes, found by facility and host without scanning (a relay
/// may send for thousands of hosts through one connection).
#[derive(Default)]
struct Routes {
    list: Vec<Route>,
    /// Facility (by address) → its route, or its routes by host.
    index: HashMap<usize, FacilityRoutes>,
    /// Where the last line went: connections mostly repeat one file.
    last: usize,
}

#[derive(Default)]
struct FacilityRoutes {
    plain: Option<usize>,
    by_host: HashMap<Box<str>, usize>,
}

// === impl Routes ===

impl Routes {
    fn len(&self) -> usize {
        self.list.len()
    }

    fn clear(&mut self) {
        self.list.clear();
        self.index.clear();
    }

    /// Index of the route for (facility, host), creating it on a miss.
    fn index_of(&mut self, p: &Pipeline, facility: &Arc<Facility>, host: &str) -> usize {
        let host_key = facility.file_per_host.then_some(host);
        if let Some(r) = self.list.get(self.last) {
            let same_host = match (r.host.as_deref(), host_key) {
                (None, None) => true,
                (Some(a), Some(b)) => same_str(a, b),
                _ => false,
            };
            if same_host && Arc::ptr_eq(&r.facility, facility) {
                return self.last;
            }
        }
        let entry = self
            .index
            .entry(Arc::as_ptr(facility) as usize)
            .or_default();
        let found = match host_key {
            None => entry.plain,
            Some(h) => entry.by_host.get(h).copied(),
        };
        let idx = match found {
            Some(i) => i,
            None => {
                let i = self.list.len();
                match host_key {
                    None => entry.plain = Some(i),
                    Some(h) => {
                        entry.by_host.insert(h.into(), i);
                    }
                }
                self.list.push(Route::new(p, facility, host_key));
                i
            }
        };
        self.last = idx;
        idx
    }
}

// === impl Route ===

impl Route {
    fn new(p: &Pipeline, facility: &Arc<Facility>, host: Option<&str>) -> Route {
        let file = path::file_path(&p.logdir, facility, host, p.file_ext);
        // After shutdown began there is no writer to send to; the route then
        // holds a closed channel and its lines are counted as lost.
        let tx = p
            .writers
            .sender(&file, facility)
            .unwrap_or_else(|| mpsc::channel(1).0);
        Route {
            facility: facility.clone(),
            host: host.map(Box::from),
            tx,
            buf: Vec::new(),
            count: 0,
            ends: Vec::new(),
        }
    }
}
