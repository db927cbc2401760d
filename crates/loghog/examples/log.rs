//! Logging through the `log` facade to the development daemon.
//!
//! - `loghog::init_log` installs the logger; records go to facility
//!   `my-app`, module = the record's target (`log::my_app::web` → `log.web`
//!   here, `my_app::web` in an application crate).
//! - `log::logger().flush()` before exit: the logger is never dropped.
//!
//! ```text
//! cargo run --release --bin loghogd -- -c etc/dev/loghogd.conf &
//! cargo run --release -p loghog --features log --example log
//! cat var/log/my-app/web.log
//! ```

use std::time::Duration;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = loghog::Client::builder("my-app")
        .address("localhost:5566")
        .build()?;
    loghog::init_log(client.clone(), log::LevelFilter::Info)?;

    // target "web" → module "web" → var/log/my-app/web.log (etc/dev/facilities.conf)
    log::info!(target: "web", "GET /index.html 200");
    log::warn!(target: "web", "slow request: {} ms", 1200);
    // The crate's own module path: root facility, var/log/my-app/root.log
    log::error!("something failed");

    client.flush(Duration::from_secs(5))?;
    Ok(())
}
