//! [`Layer`] (feature `tracing`): a `tracing_subscriber::Layer` that sends
//! every event through a [`Client`]. The event's target becomes the module
//! (`::` → `.`); the body is `LEVEL - message key=value ...`, optionally
//! preceded by the names of the spans the event is in.
//!
//! Events recorded on a client's own worker thread are ignored, so a client
//! never queues its own failures.

use std::cell::RefCell;
use std::fmt::Write as _;

use tracing_core::field::{Field, Visit};
use tracing_core::{Event, Subscriber};
use tracing_subscriber::layer::Context;
use tracing_subscriber::registry::LookupSpan;

use crate::Client;

/// A `tracing_subscriber::Layer` that sends events through a [`Client`].
///
/// ```
/// use tracing_subscriber::prelude::*;
/// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
/// let subscriber = tracing_subscriber::registry().with(loghog::Layer::new(client).with_spans(true));
/// tracing::subscriber::with_default(subscriber, || {
///     tracing::info!(user = "bob", "logged in");
/// });
/// # Ok::<(), loghog::Error>(())
/// ```
pub struct Layer {
    /// Where events go.
    client: Client,
    /// Put `outer:inner: ` (span names, outermost first) before the message.
    spans: bool,
}

thread_local! {
    /// Each thread's body buffer.
    static BODY: RefCell<String> = const { RefCell::new(String::new()) };
}

// === impl Layer ===

impl Layer {
    /// A layer sending through `client`, without span names.
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// let layer = loghog::Layer::new(client);
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn new(client: Client) -> Layer {
        Layer {
            client,
            spans: false,
        }
    }

    /// Whether to prefix each message with the names of its spans.
    ///
    /// ```
    /// # let client = loghog::Client::builder("my-app").close_timeout(std::time::Duration::ZERO).build()?;
    /// let layer = loghog::Layer::new(client).with_spans(true);
    /// # Ok::<(), loghog::Error>(())
    /// ```
    pub fn with_spans(mut self, on: bool) -> Layer {
        self.spans = on;
        self
    }
}

impl<S> tracing_subscriber::Layer<S> for Layer
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        if crate::worker::in_worker() {
            return;
        }
        let meta = event.metadata();
        let module = crate::module_of(meta.target());
        BODY.with(|cell| {
            let mut fresh = String::new();
            let mut borrowed = cell.try_borrow_mut();
            let body = match &mut borrowed {
                Ok(b) => &mut **b,
                Err(_) => &mut fresh,
            };
            body.clear();
            let _ = write!(body, "{} - ", meta.level());
            if self.spans {
                if let Some(scope) = ctx.event_scope(event) {
                    for span in scope.from_root() {
                        body.push_str(span.name());
                        body.push_str(": ");
                    }
                }
            }
            let mut fields = Fields {
                message: None,
                rest: String::new(),
            };
            event.record(&mut fields);
            if let Some(m) = &fields.message {
                body.push_str(m);
            }
            if !fields.rest.is_empty() {
                if fields.message.is_some() {
                    body.push(' ');
                }
                body.push_str(&fields.rest);
            }
            self.client.send(&module, body);
        });
    }
}

/// Collects an event's fields: the message apart, the rest `key=value`.
struct Fields {
    message: Option<String>,
    rest: String,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = Some(value.to_owned());
        } else {
            self.sep();
            let _ = write!(self.rest, "{}={}", field.name(), value);
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.message = Some(format!("{value:?}"));
        } else {
            self.sep();
            let _ = write!(self.rest, "{}={:?}", field.name(), value);
        }
    }
}

impl Fields {
    fn sep(&mut self) {
        if !self.rest.is_empty() {
            self.rest.push(' ');
        }
    }
}
