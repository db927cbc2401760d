//! `loghogd --check-broker` (issue 16): connects to the brokers of
//! `[forward]` and `[consume]` and says, one line per check, whether
//! JetStream answers, whether the stream exists (and how it is set up),
//! and whether the lease bucket exists. Nothing is created: a check must
//! not change the broker.

use std::time::Duration;

use async_nats::jetstream;
use async_nats::jetstream::context::GetStreamErrorKind;

use crate::config::{BrokerConn, Config, StreamSettings};

/// How long each step may take.
const STEP: Duration = Duration::from_secs(5);

/// Runs the checks, printing to stdout; `true` when every broker answered.
pub(crate) fn check(config: &Config) -> bool {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            println!("broker check: cannot start a runtime: {e}");
            return false;
        }
    };
    runtime.block_on(async {
        let mut ok = true;
        let mut any = false;
        if let Some(f) = &config.forward {
            any = true;
            ok &= check_one("[forward]", &f.conn, &f.stream, None).await;
        }
        if let Some(c) = &config.consume {
            any = true;
            ok &= check_one("[consume]", &c.conn, &c.stream, Some(&c.lease_bucket)).await;
        }
        if !any {
            println!("broker check: neither [forward] nor [consume] is configured");
        }
        ok
    })
}

async fn check_one(
    section: &str,
    conn: &BrokerConn,
    stream: &StreamSettings,
    bucket: Option<&str>,
) -> bool {
    let servers = conn.servers.join(", ");
    // The daemon's own options (credentials, NKey, TLS), but one attempt:
    // a check wants an answer, and the reason when it is no.
    let client = match tokio::time::timeout(
        STEP,
        crate::broker::nats::connect_once(conn, "loghogd-check"),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            println!("{section} broker {servers}: cannot connect: {e:#}");
            return false;
        }
        Err(_) => {
            println!("{section} broker {servers}: no connection within {STEP:?}");
            return false;
        }
    };
    let js = jetstream::new(client);
    match tokio::time::timeout(STEP, js.get_stream(&stream.stream)).await {
        Ok(Ok(mut s)) => match s.info().await {
            Ok(info) => println!(
                "{section} stream {}: {} messages, {} bytes, replicas {}, subjects {:?}",
                stream.stream,
                info.state.messages,
                info.state.bytes,
                info.config.num_replicas,
                info.config.subjects
            ),
            Err(e) => println!(
                "{section} stream {}: exists, info failed: {e}",
                stream.stream
            ),
        },
        Ok(Err(e)) if matches!(e.kind(), GetStreamErrorKind::JetStream(_)) => println!(
            "{section} stream {}: missing (the daemon creates it with replicas {})",
            stream.stream, stream.replicas
        ),
        Ok(Err(e)) => {
            println!("{section} broker {servers}: JetStream does not answer ({e}; is the server running with -js?)");
            return false;
        }
        Err(_) => {
            println!(
                "{section} broker {servers}: no answer within {STEP:?} (is it running, with -js?)"
            );
            return false;
        }
    }
    if let Some(bucket) = bucket {
        match tokio::time::timeout(STEP, js.get_key_value(bucket)).await {
            Ok(Ok(_)) => println!("{section} lease bucket {bucket}: exists"),
            Ok(Err(_)) => {
                println!("{section} lease bucket {bucket}: missing (the daemon creates it)")
            }
            Err(_) => {
                println!("{section} lease bucket {bucket}: no answer within {STEP:?}");
                return false;
            }
        }
    }
    true
}
