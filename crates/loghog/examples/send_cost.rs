//! What [`loghog::Client::send`] costs the calling thread, without a daemon
//! in the way: a sink thread accepts the client's connection and discards
//! what it reads, so the queue drains as fast as the worker can write.
//!
//! `cargo run --release -p loghog --example send_cost [MESSAGES]`
//!
//! Prints the caller's CPU per `send` (its thread CPU time over the calls),
//! cold (the queue's buffers growing) and in bursts the worker keeps up with.

use std::io::Read;
use std::net::TcpListener;
use std::time::{Duration, Instant};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: usize = std::env::args()
        .nth(1)
        .map_or(Ok(1_000_000), |s| s.parse())?;
    let sink = TcpListener::bind("127.0.0.1:0")?;
    let address = sink.local_addr()?.to_string();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = sink.accept() {
            let mut buf = vec![0u8; 1 << 20];
            while matches!(s.read(&mut buf), Ok(k) if k > 0) {}
        }
    });
    let client = loghog::Client::builder("bench")
        .address(&address)
        .hostname("bench-host")
        .max_buffer(n)
        .max_buffer_bytes(2 << 30)
        .build()?;
    client.send("", "warm-up");
    client.flush(Duration::from_secs(10))?;
    // 1,000 distinct 200-byte bodies, cycled: hot in the cache like a
    // message an application has just formatted. (A million distinct
    // bodies laid out in advance would measure the memory bus instead: each
    // `send` would be the first to touch its body.)
    let pad = "x".repeat(200 - 12);
    let ring: Vec<String> = (0..1000).map(|i| format!("{i:011} {pad}")).collect();
    for burst in [n, 10_000, 1_000] {
        let mut cpu = Duration::ZERO;
        let start = Instant::now();
        for first in (0..n).step_by(burst) {
            let cpu0 = thread_cpu();
            for i in first..(first + burst).min(n) {
                client.send("web", &ring[i % ring.len()]);
            }
            cpu += thread_cpu() - cpu0;
            client.flush(Duration::from_secs(120))?;
        }
        let took = start.elapsed();
        println!(
            "bursts of {burst:>7}: send {:6.1} ns of the caller's CPU per call; {:.2} M msg/s written to the socket",
            cpu.as_nanos() as f64 / n as f64,
            n as f64 / took.as_secs_f64() / 1e6,
        );
    }
    assert_eq!(client.dropped(), 0, "the sink reads everything");
    Ok(())
}

/// CPU time of the calling thread (not the time it waited for a core).
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: ts is a valid timespec to write into.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}
