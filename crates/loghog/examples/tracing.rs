//! Logging through `tracing` to the development daemon.
//!
//! - `loghog::Layer` in a `tracing_subscriber::registry()`; events go to
//!   facility `my-app`, module = the event's target.
//! - Fields are written `key=value` after the message; `with_spans(true)`
//!   puts the names of the enclosing spans first.
//!
//! ```text
//! cargo run --release --bin loghogd -- -c etc/dev/loghogd.conf &
//! cargo run --release -p loghog --features tracing --example tracing
//! cat var/log/my-app/web.log
//! ```

use std::time::Duration;

use tracing_subscriber::prelude::*;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = loghog::Client::builder("my-app")
        .address("localhost:5566")
        .build()?;
    tracing_subscriber::registry()
        .with(loghog::Layer::new(client.clone()).with_spans(true))
        .init();

    let span = tracing::info_span!("request", path = "/index.html");
    let _entered = span.enter();
    // var/log/my-app/web.log: "INFO - request: served status=200 ms=3"
    tracing::info!(target: "web", status = 200, ms = 3, "served");

    client.flush(Duration::from_secs(5))?;
    Ok(())
}
