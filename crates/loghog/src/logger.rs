//! [`Logger`] (feature `log`): a `log::Log` that sends every record through
//! a [`Client`]. The record's target becomes the module (`my_app::db` →
//! `my_app.db`, so facilities can be configured per Rust module) and the
//! body is `LEVEL - message` unless a formatter says otherwise.
//!
//! Records made on a client's own worker thread (rustls logs through `log`)
//! are ignored: logging them would feed the client's failures back into its
//! own queue.

use std::cell::RefCell;
use std::fmt::Write as _;
use std::time::Duration;

use crate::Client;

/// Formats a record's body into the given (cleared) string.
type Formatter = dyn Fn(&mut String, &log::Record<'_>) + Send + Sync;

/// A `log::Log` that sends through a [`Client`].
///
/// ```
/// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
/// let logger = loghog::Logger::new(client)
///     .format(|out, record| {
///         use std::fmt::Write;
///         let _ = write!(out, "[{}] {}", record.level(), record.args());
///     });
/// log::set_boxed_logger(Box::new(logger)).ok();
/// log::set_max_level(log::LevelFilter::Info);
/// log::info!(target: "my_app::db", "connected");
/// # Ok::<(), loghog::Error>(())
/// ```
pub struct Logger {
    /// Where records go.
    client: Client,
    /// Renders the body; `None` is `LEVEL - message`.
    format: Option<Box<Formatter>>,
    /// How long `log::Log::flush` waits.
    flush_timeout: Duration,
}

thread_local! {
    /// Each thread's body buffer: formatting a record allocates nothing
    /// once it has grown to the longest line.
    static BODY: RefCell<String> = const { RefCell::new(String::new()) };
}

// === impl Logger ===

impl Logger {
    /// A logger sending through `client`, with bodies `LEVEL - message`.
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// let logger = loghog::Logger::new(client);
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn new(client: Client) -> Logger {
        Logger {
            client,
            format: None,
            flush_timeout: Duration::from_secs(5),
        }
    }

    /// Replaces the body format: `f` writes the body of `record` into the
    /// (empty) string it is given.
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// let logger = loghog::Logger::new(client).format(|out, record| {
    ///     out.push_str(&record.args().to_string());
    /// });
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn format(
        mut self,
        f: impl Fn(&mut String, &log::Record<'_>) + Send + Sync + 'static,
    ) -> Logger {
        self.format = Some(Box::new(f));
        self
    }

    /// How long [`log::Log::flush`] (`log::logger().flush()`) waits for
    /// the queue to drain (default 5 s).
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// let logger = loghog::Logger::new(client).flush_timeout(std::time::Duration::from_secs(1));
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn flush_timeout(mut self, timeout: Duration) -> Logger {
        self.flush_timeout = timeout;
        self
    }
}

impl log::Log for Logger {
    fn enabled(&self, _metadata: &log::Metadata<'_>) -> bool {
        !crate::worker::in_worker()
    }

    fn log(&self, record: &log::Record<'_>) {
        if crate::worker::in_worker() {
            return;
        }
        let module = crate::module_of(record.target());
        BODY.with(|cell| {
            // A formatter that logs would find the buffer borrowed: format
            // into a fresh string then rather than panic.
            let mut fresh = String::new();
            let mut borrowed = cell.try_borrow_mut();
            let body = match &mut borrowed {
                Ok(b) => &mut **b,
                Err(_) => &mut fresh,
            };
            body.clear();
            match &self.format {
                Some(f) => f(body, record),
                None => {
                    let _ = write!(body, "{} - {}", record.level(), record.args());
                }
            }
            self.client.send(&module, body);
        });
    }

    fn flush(&self) {
        let _ = self.client.flush(self.flush_timeout);
    }
}

/// Installs a [`Logger`] for `client` as the `log` crate's logger, at
/// `level` and above.
///
/// The logger lives as long as the process and is never dropped, so call
/// `log::logger().flush()` (or [`Client::flush`] on a clone) before the
/// process exits, or the last records may still be queued.
///
/// # Errors
/// `log::SetLoggerError` when a logger is already installed.
///
/// ```no_run
/// let client = loghog::Client::builder("my-app").build()?;
/// loghog::init_log(client, log::LevelFilter::Info)?;
/// log::warn!("disk almost full");
/// log::logger().flush();
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn init_log(client: Client, level: log::LevelFilter) -> Result<(), log::SetLoggerError> {
    log::set_boxed_logger(Box::new(Logger::new(client)))?;
    log::set_max_level(level);
    Ok(())
}
