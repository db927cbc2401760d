//! The router: [`Record`] → facility → signature check → a formatted line in
//! the pending batch of the route it belongs to → the route's output.
//!
//! Every reader (a TCP/TLS connection, a UDP socket) owns one [`Router`], so
//! the work scales with connections and nothing is shared per message: lines
//! are formatted here, into one pending batch per destination, until
//! [`Router::flush`] hands the batches to their outputs. Counters are kept
//! locally and added to the shared [`Stats`] once per flush. The router never
//! knows a wire format (inputs build records) nor what an output does with a
//! batch (a route only holds its [`Handle`]).

use std::collections::HashMap;
use std::fmt::Display;
use std::net::IpAddr;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::time::Duration;

use loghog_protocol::{normalize_module, Signed};
use tokio::sync::watch;
use tracing::warn;

use crate::broker::codec::{encode_record, ForwardRecord};
use crate::config::{Facility, FacilityDb};
use crate::escape::esc;
use crate::output::file::mark::Marked;
use crate::output::{file::format, Batch, Handle, NoOutput, Outputs, Refused};
use crate::ratelimit::RateLimit;
use crate::record::{Auth, Record, Transport};
use crate::stats::{FacilityCounter, Stats};
use crate::timefmt::{LineClock, STAMP_LEN};

/// Flush a reader's pending lines early once they pass this many bytes.
const FLUSH_AT_BYTES: usize = 256 << 10;

/// How long a UDP reader waits for room in a full output queue before it
/// drops the batch (UDP cannot slow its senders down; this only absorbs bursts).
const UDP_QUEUE_WAIT: Duration = Duration::from_millis(50);

/// Most bytes a route's next batch buffer is allocated with up front.
const ROUTE_BUF_KEEP: usize = 16 << 10;

/// Readers with more routes than this keep no buffer between batches.
const FEW_ROUTES: usize = 64;

/// Forget a reader's routes once it has more than this many (a relay
/// sending for ever new hosts), so their handles and buffers stay bounded.
const MAX_ROUTES: usize = 4096;

/// Forget a reader's routes this often: a cached route holds its file's
/// writer alive, and a writer for a file nobody writes should end.
const ROUTES_FOR: Duration = Duration::from_secs(30);

/// What all routers share.
#[derive(Debug)]
pub(crate) struct RouterCtx {
    /// Where routes send their batches.
    pub(crate) outputs: Outputs,
    /// Daemon-wide counters.
    pub(crate) stats: Arc<Stats>,
    /// Limits warnings about bad input (one hostile peer must not flood the log).
    pub(crate) limiter: RateLimit,
    /// The current facilities; replaced on SIGHUP.
    pub(crate) facilities: watch::Receiver<Arc<FacilityDb>>,
}

/// Pending lines for one destination.
struct Route {
    facility: Arc<Facility>,
    /// The host part of the destination (`file_per_host` only), as sent.
    host: Option<Box<str>>,
    output: Handle,
    /// For a forwarded route, the destination file's key: its records are
    /// encoded for the broker instead of formatted as lines.
    forward_key: Option<Arc<str>>,
    /// Flushed to since the last [`Router::sync`].
    unsynced: bool,
    buf: Vec<u8>,
    count: u32,
    /// Message end offsets in `buf` (only for `max_size` facilities).
    ends: Vec<u32>,
    /// The facility's message and byte counts, added to once per batch.
    counter: Arc<FacilityCounter>,
}

/// Counts kept by one reader between flushes.
#[derive(Debug, Default)]
struct Counts {
    received: u64,
    bad_frames: u64,
    bad_signature: u64,
    unknown_app: u64,
    udp_dropped: u64,
    filtered: u64,
}

/// One reader's router.
pub(crate) struct Router {
    ctx: Arc<RouterCtx>,
    facilities: watch::Receiver<Arc<FacilityDb>>,
    db: Arc<FacilityDb>,
    routes: Routes,
    clock: LineClock,
    /// Receipt time of the chunk being routed.
    stamp: [u8; STAMP_LEN],
    /// The same, as UNIX microseconds (what a forwarded record carries).
    received_micros: i64,
    /// The outputs flushed to since the last [`Router::sync`].
    unsynced: Vec<Handle>,
    peer: IpAddr,
    /// The peer address as text: the host name of records without one.
    peer_text: String,
    transport: Transport,
    counts: Counts,
    pending_bytes: usize,
    /// The last (app_id, module) looked up and its facility.
    last_route: Option<(Box<str>, Box<str>, Arc<Facility>)>,
    /// When `routes` was last emptied.
    routes_since: std::time::Instant,
    /// The last syslog (tag, facility code) looked up and its facility.
    last_syslog: Option<(Box<str>, u8, Arc<Facility>)>,
}

// === impl Router ===

impl Router {
    /// A router for one reader.
    pub(crate) fn new(ctx: Arc<RouterCtx>, peer: IpAddr, transport: Transport) -> Router {
        let mut facilities = ctx.facilities.clone();
        let db = facilities.borrow_and_update().clone();
        let mut clock = LineClock::new();
        let (stamp, received_micros) = clock.now();
        Router {
            ctx,
            facilities,
            db,
            routes: Routes::default(),
            clock,
            stamp,
            received_micros,
            unsynced: Vec::new(),
            peer,
            peer_text: peer.to_string(),
            transport,
            counts: Counts::default(),
            pending_bytes: 0,
            last_route: None,
            routes_since: std::time::Instant::now(),
            last_syslog: None,
        }
    }

    /// Changes the peer (UDP: every datagram has its own).
    pub(crate) fn set_peer(&mut self, peer: IpAddr) {
        if peer != self.peer {
            self.peer = peer;
            self.peer_text = peer.to_string();
        }
    }

    /// Starts a chunk of records received together: takes the receipt time
    /// and picks up a reloaded facility set. Call with nothing pending.
    pub(crate) fn begin_chunk(&mut self) {
        (self.stamp, self.received_micros) = self.clock.now();
        if self.facilities.has_changed().unwrap_or(false) {
            self.db = self.facilities.borrow_and_update().clone();
            self.routes.clear();
            self.last_route = None;
            self.last_syslog = None;
        } else if self.routes.len() > MAX_ROUTES
            || (self.routes.len() > 0 && self.routes_since.elapsed() >= ROUTES_FOR)
        {
            self.routes.clear();
            self.routes_since = std::time::Instant::now();
        }
    }

    /// Sets the receipt time of the records routed next (the broker
    /// consumer: each record carries the time its edge received it).
    pub(crate) fn set_received(&mut self, micros: i64) {
        if micros != self.received_micros {
            self.received_micros = micros;
            self.stamp = self.clock.stamp(
                micros.div_euclid(1_000_000),
                micros.rem_euclid(1_000_000) as u32,
            );
        }
    }

    /// Waits until every line flushed since the last call is written and
    /// synced by its output, and pushes where each file then ends to
    /// `marks`; `false` if any output could not (the broker consumer then
    /// does not record or acknowledge those records). Outputs that could
    /// not sync stay listed, so the next call asks them again.
    pub(crate) async fn sync(&mut self, marks: &mut Vec<Marked>) -> bool {
        let mut failed = Vec::new();
        for h in std::mem::take(&mut self.unsynced) {
            let synced = h.sync().await;
            if synced.ok {
                marks.extend(synced.mark);
            } else {
                failed.push(h);
            }
        }
        for r in &mut self.routes.list {
            r.unsynced = false;
        }
        let ok = failed.is_empty();
        self.unsynced = failed;
        ok
    }

    /// Whether enough is pending that it should be flushed before reading on.
    pub(crate) fn needs_flush(&self) -> bool {
        self.pending_bytes >= FLUSH_AT_BYTES
    }

    /// Counts and (rate-limited) logs a frame or datagram an input could not
    /// turn into a record; `cause` says why.
    pub(crate) fn reject(&mut self, cause: &dyn Display) {
        self.counts.bad_frames += 1;
        if let Some(suppressed) = self.ctx.limiter.check() {
            let what = if self.transport.is_datagram() {
                "dropped datagram"
            } else {
                "dropped frame"
            };
            let cause = cause.to_string();
            warn!(peer = %self.peer, transport = self.transport.as_str(), cause = %esc(&cause), suppressed, "{what}");
        }
    }

    /// Routes one record: finds its facility, checks its signature, and
    /// appends its line to the pending batch of its destination.
    pub(crate) fn route(&mut self, rec: &Record<'_>) {
        self.counts.received += 1;
        let facility = if let Some(meta) = rec.syslog {
            // Syslog: by tag, then syslog facility, then the catch-all
            // (FacilityDb::lookup_syslog), cached like the LogHog lookup.
            let tag = meta.app_name.unwrap_or("");
            let hit = matches!(&self.last_syslog,
                Some((t, code, _)) if *code == meta.facility && same_str(t, tag));
            if !hit {
                let Some(f) = self.db.lookup_syslog(meta.app_name, meta.facility) else {
                    self.counts.unknown_app += 1;
                    if let Some(suppressed) = self.ctx.limiter.check() {
                        warn!(peer = %self.peer, tag = %esc(tag), suppressed, "dropped syslog message: no facility for its tag and no [syslog] section");
                    }
                    return;
                };
                self.last_syslog = Some((tag.into(), meta.facility, f.clone()));
            }
            let Some((_, _, facility)) = &self.last_syslog else {
                return; // just filled above
            };
            if meta.severity > facility.min_severity {
                self.counts.filtered += 1;
                return;
            }
            facility
        } else {
            let module = normalize_module(rec.module);
            // Connections mostly repeat one app and module: two short compares
            // instead of hashing both names for every message. The facility is
            // borrowed from this cache, not cloned: an `Arc` clone and drop per
            // message bounced its count between cores (8% of CPU with 4 readers).
            let hit = matches!(&self.last_route,
                Some((app, m, _)) if same_str(app, rec.app_id) && same_str(m, module));
            if !hit {
                let Some(f) = self.db.lookup(rec.app_id, module) else {
                    self.counts.unknown_app += 1;
                    if let Some(suppressed) = self.ctx.limiter.check() {
                        warn!(peer = %self.peer, app_id = %esc(rec.app_id), suppressed, "dropped message for an app with no facility");
                    }
                    return;
                };
                self.last_route = Some((rec.app_id.into(), module.into(), f.clone()));
            }
            let Some((_, _, facility)) = &self.last_route else {
                return; // just filled above
            };
            facility
        };
        if let Some(key) = &facility.secret {
            let checked = match rec.auth {
                Auth::LogHog {
                    stamp,
                    nsecs,
                    signature,
                } => {
                    let fields = Signed {
                        app_id: rec.app_id,
                        module: rec.module,
                        stamp,
                        nsecs,
                        body: rec.body,
                    };
                    key.verify_fields(&fields, signature)
                        .map_err(|e| e.to_string())
                }
                Auth::Http { verified: true } | Auth::Forwarded => Ok(()),
                Auth::Http { verified: false } => {
                    Err("missing or wrong X-Loghog-Signature header".to_owned())
                }
                // Never routed here by lookup_syslog; checked all the same.
                Auth::None => {
                    Err("the facility has a secret and this format carries no signature".to_owned())
                }
            };
            if let Err(err) = checked {
                self.counts.bad_signature += 1;
                if let Some(suppressed) = self.ctx.limiter.check() {
                    warn!(peer = %self.peer, app_id = %esc(rec.app_id), module = %esc(rec.module), cause = %err, suppressed, "dropped message: signature check failed");
                }
                return;
            }
        }
        let cleaned;
        let host: &str = match rec.host {
            // A host name is one token: control characters in it (a newline
            // could forge a whole record) are replaced. Bodies keep theirs.
            Some(h) if h.bytes().any(|b| b < 0x20 || b == 0x7f) => {
                cleaned = h.replace(|c: char| c.is_control(), "_");
                &cleaned
            }
            Some(h) if !h.is_empty() => h,
            _ => &self.peer_text,
        };
        let idx = self.routes.index_of(&self.ctx.outputs, facility, host);
        let route = &mut self.routes.list[idx];
        let before = route.buf.len();
        if let Some(key) = &route.forward_key {
            encode_record(
                &mut route.buf,
                &ForwardRecord {
                    received_micros: self.received_micros,
                    app_id: rec.app_id,
                    module: rec.module,
                    host,
                    file_key: key,
                    body: rec.body,
                    syslog: rec.syslog.cloned(),
                },
            );
        } else {
            format::push(
                &mut route.buf,
                route.facility.format,
                &self.stamp,
                host,
                rec,
            );
        }
        route.count += 1;
        if route.facility.max_size.is_some() {
            route.ends.push(route.buf.len() as u32);
        }
        self.pending_bytes += route.buf.len() - before;
    }

    /// Hands every pending batch to its output, waiting while an output's
    /// queue is full (backpressure for stream transports).
    pub(crate) async fn flush(&mut self) {
        for i in 0..self.routes.list.len() {
            let Some(batch) = self.take_batch(i) else {
                continue;
            };
            let output = self.routes.list[i].output.clone();
            self.note_unsynced(i);
            if let Err(Refused::Closed(batch) | Refused::Full(batch)) = output.send(batch).await {
                self.resend(i, batch).await;
            }
        }
        self.pending_bytes = 0;
        self.publish_counts();
    }

    /// Like [`Router::flush`] but waits at most [`UDP_QUEUE_WAIT`] for a
    /// full queue, then drops the batch and counts it (UDP under overload).
    pub(crate) async fn try_flush(&mut self) {
        self.flush_waiting(UDP_QUEUE_WAIT, |r, i, count| {
            r.counts.udp_dropped += u64::from(count);
            if let Some(suppressed) = r.ctx.limiter.check() {
                let f = &r.routes.list[i].facility;
                warn!(app_id = %f.app_id, module = %f.module, lost = count, suppressed, "dropped datagrams: the file's queue stayed full (UDP cannot wait)");
            }
        })
        .await;
    }

    /// Like [`Router::flush`] but waits at most `wait` for room in a full
    /// queue (HTTP: the client is answered 503 instead of waiting without
    /// bound). Returns how many messages found no room: they are not
    /// written, and are counted as `http_busy`.
    pub(crate) async fn flush_within(&mut self, wait: Duration) -> u64 {
        let mut refused = 0u64;
        self.flush_waiting(wait, |_, _, count| refused += u64::from(count))
            .await;
        if refused > 0 {
            self.ctx.stats.http_busy.fetch_add(refused, Relaxed);
        }
        refused
    }

    /// Hands every pending batch on, waiting at most `wait` for room in a
    /// full queue; a batch that still finds none is given to
    /// `gave_up(router, route, messages)` and not written.
    async fn flush_waiting(
        &mut self,
        wait: Duration,
        mut gave_up: impl FnMut(&mut Router, usize, u32),
    ) {
        for i in 0..self.routes.list.len() {
            let Some(batch) = self.take_batch(i) else {
                continue;
            };
            let output = self.routes.list[i].output.clone();
            match output.try_send(batch) {
                Ok(()) => {}
                Err(Refused::Full(batch)) => {
                    // A burst: give the writer a moment before giving up.
                    let count = batch.count;
                    match tokio::time::timeout(wait, output.send(batch)).await {
                        Ok(Ok(())) => {}
                        Ok(Err(Refused::Closed(batch) | Refused::Full(batch))) => {
                            self.resend(i, batch).await;
                        }
                        Err(_) => gave_up(self, i, count),
                    }
                }
                Err(Refused::Closed(batch)) => self.resend(i, batch).await,
            }
        }
        self.pending_bytes = 0;
        self.publish_counts();
    }

    /// Remembers route `i`'s output for the next [`Router::sync`]. Only
    /// the broker consumer syncs; other readers keep no list (it would
    /// grow with every route and hold idle writers alive).
    fn note_unsynced(&mut self, i: usize) {
        if self.transport != Transport::Broker {
            return;
        }
        let r = &mut self.routes.list[i];
        if !r.unsynced {
            r.unsynced = true;
            self.unsynced.push(r.output.clone());
        }
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
        r.counter.messages.fetch_add(u64::from(r.count), Relaxed);
        r.counter.bytes.fetch_add(r.buf.len() as u64, Relaxed);
        Some(Batch {
            facility: r.facility.clone(),
            data: std::mem::replace(&mut r.buf, Vec::with_capacity(cap)),
            count: std::mem::take(&mut r.count),
            ends: std::mem::take(&mut r.ends),
        })
    }

    /// The output behind a route went away (an idle writer ended, or none
    /// could be had when the route was made): get a fresh handle and retry
    /// once; what still finds no output is counted under its reason.
    async fn resend(&mut self, i: usize, batch: Batch) {
        let route = &self.routes.list[i];
        let mut batch = batch;
        let reason = match self
            .ctx
            .outputs
            .handle(&route.facility, route.host.as_deref())
        {
            Ok(output) => {
                self.routes.list[i].output = output.clone();
                if self.transport == Transport::Broker {
                    self.unsynced.push(output.clone());
                }
                match output.send(batch).await {
                    Ok(()) => return,
                    Err(Refused::Closed(back) | Refused::Full(back)) => batch = back,
                }
                NoOutput::ShuttingDown
            }
            Err(reason) => reason,
        };
        let route = &self.routes.list[i];
        let lost = batch.count as u64;
        let s = &self.ctx.stats;
        match reason {
            NoOutput::ShuttingDown => {
                s.lost_at_stop.fetch_add(lost, Relaxed);
                warn!(app_id = %route.facility.app_id, module = %route.facility.module, lost, "no output for the route (shutting down); batch lost");
            }
            NoOutput::TooManyFiles => {
                s.too_many_files.fetch_add(lost, Relaxed);
                if let Some(suppressed) = self.ctx.limiter.check() {
                    let host = route.host.as_deref().map(esc);
                    warn!(app_id = %route.facility.app_id, host = ?host, lost, suppressed, "dropped lines for a new file: the app is at max_files_per_app");
                }
            }
        }
    }

    fn publish_counts(&mut self) {
        let c = std::mem::take(&mut self.counts);
        let s = &self.ctx.stats;
        if c.received > 0 {
            // Every transport has a slot (a unit test checks the table);
            // `get` so a new one can never panic a reader.
            if let Some(by) = s.received_by.get(self.transport as usize) {
                by.fetch_add(c.received, Relaxed);
            }
        }
        for (counter, n) in [
            (&s.received, c.received),
            (&s.bad_frames, c.bad_frames),
            (&s.bad_signature, c.bad_signature),
            (&s.unknown_app, c.unknown_app),
            (&s.udp_dropped, c.udp_dropped),
            (&s.filtered, c.filtered),
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
    /// Where the last line went: connections mostly repeat one destination.
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
    fn index_of(&mut self, outputs: &Outputs, facility: &Arc<Facility>, host: &str) -> usize {
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
                self.list.push(Route::new(outputs, facility, host_key));
                i
            }
        };
        self.last = idx;
        idx
    }
}

// === impl Route ===

impl Route {
    fn new(outputs: &Outputs, facility: &Arc<Facility>, host: Option<&str>) -> Route {
        // After shutdown began there is no output to send to; the route then
        // holds a closed handle and its lines are counted as lost.
        let output = outputs
            .handle(facility, host)
            .unwrap_or_else(|_| Handle::closed());
        Route {
            facility: facility.clone(),
            host: host.map(Box::from),
            forward_key: output.forward_key().cloned(),
            unsynced: false,
            output,
            buf: Vec::new(),
            count: 0,
            ends: Vec::new(),
            counter: outputs
                .files
                .ctx()
                .stats
                .facilities
                .counter(&facility.section_name()),
        }
    }
}

// === test-only ===

#[cfg(test)]
impl RouterCtx {
    /// Test only: a context routing by `facilities` whose outputs are closed
    /// from the start, so no writer task is ever spawned (no runtime, no
    /// files) and routed lines stay pending in the [`Router`], where
    /// [`Router::take_pending`] reads them. For decoder tests.
    pub(crate) fn for_test(facilities: FacilityDb) -> Arc<RouterCtx> {
        use crate::output::file::{WriterCtx, Writers};
        let stats = Arc::new(Stats::default());
        let writers = Writers::new(WriterCtx {
            logdir: std::path::PathBuf::from("/nonexistent/loghogd-test-logdir"),
            stats: stats.clone(),
            limiter: RateLimit::new(10, Duration::from_secs(10)),
            compressor: crate::config::CompressorSection {
                format: Default::default(),
                level: 6,
                compress_on_write: false,
            },
            tracker: Default::default(),
            state: Default::default(),
            compressions: Arc::new(tokio::sync::Semaphore::new(1)),
            compress_tracker: Default::default(),
            new_file: Default::default(),
            clock: Default::default(),
            open_files: crate::output::file::open::OpenFiles::new(16, stats.clone()),
            max_files_per_app: 10,
            file_idle: Duration::from_secs(60),
            registry: Default::default(),
        });
        writers.close();
        // The sender may go: a dropped sender reads as "never reloaded".
        let (_, facilities) = watch::channel(Arc::new(facilities));
        Arc::new(RouterCtx {
            outputs: Outputs {
                files: Arc::new(writers),
                forward: None,
            },
            stats,
            limiter: RateLimit::new(20, Duration::from_secs(10)),
            facilities,
        })
    }
}

#[cfg(test)]
impl Router {
    /// Test only: adds the local counts to the shared [`Stats`] (as a flush
    /// does) and takes every pending line, as `(section name, line)` in the
    /// order the routes were made, without sending anything.
    pub(crate) fn take_pending(&mut self) -> Vec<(String, String)> {
        self.publish_counts();
        self.pending_bytes = 0;
        let mut out = Vec::new();
        for route in &mut self.routes.list {
            let name = route.facility.section_name();
            let data = String::from_utf8_lossy(&std::mem::take(&mut route.buf)).into_owned();
            route.count = 0;
            route.ends.clear();
            out.extend(data.lines().map(|l| (name.clone(), l.to_string())));
        }
        out
    }
}
