//! [`Client`]: the handle applications log through. `send` encodes on the
//! calling thread into the shared queue and returns; the worker thread
//! (`worker.rs`) does all the I/O. Handles are cheap clones of one client;
//! dropping the last one flushes for a bounded time and stops the worker.

use std::sync::atomic::Ordering;
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::encode::Encoder;
use crate::queue::Shared;
use crate::{Builder, Error};

/// A connection to loghogd that never blocks its callers on the network.
///
/// Built with [`Client::builder`]. [`Client::send`] queues a message and
/// returns; a background thread connects, writes what is queued in batches,
/// and reconnects with exponential backoff (100 ms doubling to 30 s, with
/// jitter) when the daemon goes away. While it is unreachable at most
/// [`Builder::max_buffer`] messages (and [`Builder::max_buffer_bytes`]
/// bytes) wait; past that the OLDEST are dropped and counted in
/// [`Client::dropped`], as the Python client does.
///
/// `Client` is `Clone + Send + Sync`: clones share one queue, one thread and
/// one connection. Dropping the last clone flushes for at most
/// [`Builder::close_timeout`] (default 5 s), then stops the thread; it never
/// hangs the process.
///
/// ```
/// use std::time::Duration;
/// # let daemon = std::net::TcpListener::bind("127.0.0.1:0")?;
/// # let address = daemon.local_addr()?.to_string();
/// let client = loghog::Client::builder("my-app").address(&address).build()?;
/// client.send("web.requests", "GET / 200");
/// client.flush(Duration::from_secs(5))?;
/// assert_eq!(client.dropped(), 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

/// The one client behind every handle; its `Drop` is the last handle's.
struct Inner {
    /// The queue shared with the worker.
    shared: Arc<Shared>,
    /// Builds frames on the caller's thread.
    encoder: Encoder,
    /// Frames over this many bytes (header included) are dropped at `send`:
    /// the daemon would close the connection on them.
    max_frame: usize,
    /// How long dropping the last handle may wait for the queue to drain.
    close_timeout: Duration,
    /// The worker's TCP socket, to shut it down on close when a write is stuck.
    socket: Arc<std::sync::Mutex<Option<std::net::TcpStream>>>,
    /// Disconnects when the worker thread has finished.
    exited: std::sync::Mutex<mpsc::Receiver<()>>,
}

/// What [`Builder::build`] hands to [`Client::start`].
pub(crate) struct Parts {
    pub(crate) encoder: Encoder,
    pub(crate) settings: crate::worker::Settings,
    pub(crate) max_messages: usize,
    pub(crate) max_bytes: usize,
    pub(crate) max_frame: usize,
    pub(crate) close_timeout: Duration,
}

// === impl Client ===

impl Client {
    /// A [`Builder`] for application `app_id` (a section of the daemon's
    /// facilities.conf). Defaults: `localhost:5566` over TCP, the machine's
    /// host name, no signing, no compression, a buffer of 1024 messages.
    ///
    /// ```
    /// let client = loghog::Client::builder("my-app").build()?;
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn builder(app_id: impl Into<String>) -> Builder {
        Builder::new(app_id.into())
    }

    /// Starts the worker thread.
    pub(crate) fn start(parts: Parts) -> Result<Client, Error> {
        let shared = Arc::new(Shared::new(parts.max_messages, parts.max_bytes));
        let worker = crate::worker::Worker::new(shared.clone(), parts.settings);
        let socket = worker.socket.clone();
        let (done, exited) = mpsc::channel::<()>();
        std::thread::Builder::new()
            .name("loghog-sender".into())
            .spawn(move || {
                let _done = done;
                worker.run();
            })
            .map_err(|e| Error::Spawn(Arc::new(e)))?;
        Ok(Client {
            inner: Arc::new(Inner {
                shared,
                encoder: parts.encoder,
                max_frame: parts.max_frame,
                close_timeout: parts.close_timeout,
                socket,
                exited: std::sync::Mutex::new(exited),
            }),
        })
    }

    /// Queues `body` for `module` (a dotted path such as `web.requests`;
    /// `""` is the app's root facility), stamped with the current time.
    ///
    /// Never blocks on the network and never fails: when the queue is full
    /// the oldest message is dropped (see [`Client::dropped`]); a message
    /// over [`Builder::max_message_size`] is dropped at once.
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// client.send("", "to the root facility");
    /// client.send("db.slow", "a line\nwith two lines");
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn send(&self, module: &str, body: &str) {
        let (stamp, nsecs) = now();
        let inner = &*self.inner;
        let wake = if inner.encoder.is_plain() {
            let mut st = inner.shared.lock();
            let start = st.buf.len();
            // Plain frames are never refused here; commit checks their size.
            let _ = inner
                .encoder
                .encode(module, body, stamp, nsecs, &mut st.buf);
            inner.shared.commit(&mut st, start, inner.max_frame)
        } else {
            // HMAC and zlib take microseconds: not under the lock.
            let mut frame = Vec::with_capacity(body.len() + module.len() + 160);
            if !inner.encoder.encode(module, body, stamp, nsecs, &mut frame) {
                inner.shared.dropped.fetch_add(1, Ordering::Relaxed);
                return;
            }
            let mut st = inner.shared.lock();
            let start = st.buf.len();
            st.buf.extend_from_slice(&frame);
            inner.shared.commit(&mut st, start, inner.max_frame)
        };
        if wake {
            inner.shared.wake.notify_one();
        }
    }

    /// Waits until every message queued before this call has been written
    /// to the socket, or `timeout` has passed.
    ///
    /// # Errors
    /// [`Error::Timeout`] when time ran out (with the last connection error,
    /// if any); [`Error::Dropped`] when one of those messages was dropped
    /// instead (buffer overflow or [`Builder::give_up_after`]).
    ///
    /// ```
    /// # use std::time::Duration;
    /// # let daemon = std::net::TcpListener::bind("127.0.0.1:0")?;
    /// # let address = daemon.local_addr()?.to_string();
    /// let client = loghog::Client::builder("my-app").address(&address).build()?;
    /// client.send("", "before exit");
    /// client.flush(Duration::from_secs(2))?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn flush(&self, timeout: Duration) -> Result<(), Error> {
        self.inner.shared.flush(timeout)
    }

    /// How many messages were dropped so far: the oldest when the queue
    /// overflowed, and any too large to send.
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// assert_eq!(client.dropped(), 0);
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn dropped(&self) -> u64 {
        self.inner.shared.dropped.load(Ordering::Relaxed)
    }

    /// How many messages are queued or being written right now.
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// assert_eq!(client.pending(), 0);
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn pending(&self) -> usize {
        self.inner.shared.pending()
    }

    /// The last error the worker met connecting or writing, if any (it is
    /// not cleared by a later success). The client never logs its own
    /// failures; this is where to look for them.
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// if let Some(err) = client.last_error() {
    ///     eprintln!("loghog: {err}");
    /// }
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn last_error(&self) -> Option<Error> {
        self.inner.shared.lock().last_error.clone()
    }
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("pending", &self.pending())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let start = Instant::now();
        let flushed = self.shared.flush(self.close_timeout).is_ok();
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
        if !flushed {
            // A write stuck on a daemon that stopped reading would keep the
            // worker for up to its write timeout: cut it short.
            if let Some(s) = &*self.socket.lock().unwrap_or_else(|e| e.into_inner()) {
                let _ = s.shutdown(std::net::Shutdown::Both);
            }
        }
        // The worker exits at once unless it is inside a connect or a TLS
        // handshake; never wait long for it (it holds nothing we need).
        let grace = self
            .close_timeout
            .saturating_sub(start.elapsed())
            .clamp(Duration::from_millis(100), Duration::from_secs(1));
        let exited = self.exited.lock().unwrap_or_else(|e| e.into_inner());
        let _ = exited.recv_timeout(grace);
    }
}

/// The client's clock: UNIX seconds and nanoseconds.
///
/// The coarse clock (the kernel's last tick, 1-4 ms resolution) costs a
/// fifth of the precise one (measured here: 12 against 68 ns, a third of
/// all that `send` costs). The stamp is only carried and signed: the daemon
/// writes each line with its own time of receipt (SPEC section 4).
#[cfg(target_os = "linux")]
fn now() -> (i64, i64) {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    if unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) } == 0 {
        // time_t and c_long are 32 bits on 32-bit targets.
        #[allow(clippy::useless_conversion)]
        return (i64::from(ts.tv_sec), i64::from(ts.tv_nsec));
    }
    precise_now()
}

/// The client's clock where no coarse clock exists.
#[cfg(not(target_os = "linux"))]
fn now() -> (i64, i64) {
    precise_now()
}

fn precise_now() -> (i64, i64) {
    match SystemTime::now().duration_since(UNIX_EPOCH) {
        Ok(d) => (d.as_secs() as i64, i64::from(d.subsec_nanos())),
        Err(_) => (0, 0),
    }
}
