//! `loghog-bench --latency FILE`: end-to-end latency at a fixed offered
//! load, from a message's send to its line being readable in the daemon's
//! output file.
//!
//! Unlike a throughput run nothing is pre-encoded: each message is encoded
//! just before it is written, with its send time (ns since the UNIX epoch)
//! in the body (`seq=C:I t=NS ...`). A reader thread polls the output file
//! every millisecond, and for every new line takes `now - t`. Both clocks
//! are this machine's `SystemTime`, so no synchronisation is needed; the
//! poll interval bounds the resolution (about 1 ms).

use std::fmt::Write as _;
use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{anyhow, bail, Context as _};

use crate::encode::{encode_one, split, Params, Stream};
use crate::send::{Conn, Target};

/// How often the reader looks at the file.
const POLL: Duration = Duration::from_millis(1);
/// The reader gives up when no new line has come for this long after the
/// senders finished (lost messages would otherwise make it wait forever).
const IDLE_AFTER_SEND: Duration = Duration::from_secs(3);
/// Bound on waiting for the output file to appear.
const FILE_APPEAR_TIMEOUT: Duration = Duration::from_secs(30);

/// A latency run.
#[derive(Debug)]
pub struct Run<'a> {
    /// Message layout (app, host names, secret, compression, body size).
    pub params: &'a Params<'a>,
    /// Where to send.
    pub target: &'a Target,
    /// Parallel connections, one sender thread each.
    pub connections: usize,
    /// Total messages.
    pub messages: u64,
    /// Offered load, messages per second over all connections (> 0).
    pub rate: u64,
    /// The daemon's output file to tail.
    pub file: PathBuf,
}

/// What a latency run measured.
#[derive(Debug)]
pub struct Summary {
    /// Messages sent.
    pub sent: u64,
    /// Lines with a `t=` token seen in the file.
    pub seen: u64,
    /// Latency percentiles in microseconds: p50, p90, p99, p99.9, max.
    pub p50_us: f64,
    pub p90_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
    /// Worst delay of a sender burst behind its schedule.
    pub max_lag: Duration,
    /// From the first send to the last sender finished.
    pub send_secs: f64,
}

/// Sends at `run.rate`, tails `run.file`, and reports the latency spread.
///
/// # Errors
/// A connection that cannot be opened or fails, or an unreadable file.
pub fn run(run: &Run<'_>) -> anyhow::Result<Summary> {
    if run.rate == 0 {
        bail!("--latency needs --rate R (messages per second) for a fixed offered load");
    }
    let mut conns = Vec::with_capacity(run.connections);
    for i in 0..run.connections {
        conns.push(Conn::open(run.target).with_context(|| {
            format!(
                "connection {i}: connecting to {} over {}",
                run.target.addr, run.target.transport
            )
        })?);
    }
    let senders_done = Arc::new(AtomicBool::new(false));
    let reader = {
        let file = run.file.clone();
        let done = senders_done.clone();
        let expected = run.messages;
        thread::Builder::new()
            .name("tail".into())
            .spawn(move || tail(&file, expected, &done))
            .context("spawning the reader thread")?
    };

    let per_conn_rate = run.rate as f64 / run.connections as f64;
    let start = Instant::now();
    let results: Vec<anyhow::Result<Duration>> = thread::scope(|scope| {
        let handles: Vec<_> = conns
            .into_iter()
            .enumerate()
            .map(|(c, conn)| {
                let count = split(run.messages, run.connections, c);
                let params = run.params;
                scope.spawn(move || send_paced(conn, params, c as u64, count, per_conn_rate))
            })
            .collect();
        handles
            .into_iter()
            .enumerate()
            .map(|(i, h)| {
                h.join()
                    .map_err(|_| anyhow!("connection {i}: sender thread panicked"))
                    .and_then(|r| r.with_context(|| format!("connection {i}")))
            })
            .collect()
    });
    let send_secs = start.elapsed().as_secs_f64();
    senders_done.store(true, Ordering::Release);
    let mut max_lag = Duration::ZERO;
    let mut first_err = None;
    for r in results {
        match r {
            Ok(lag) => max_lag = max_lag.max(lag),
            Err(e) => {
                first_err.get_or_insert(e);
            }
        }
    }
    let latencies = reader
        .join()
        .map_err(|_| anyhow!("reader thread panicked"))?
        .with_context(|| format!("tailing {}", run.file.display()))?;
    if let Some(e) = first_err {
        return Err(e);
    }
    Ok(summarize(run.messages, latencies, max_lag, send_secs))
}

/// Prints the summary (stderr for people, one `key=value` line on stdout).
pub fn print(run: &Run<'_>, s: &Summary) {
    eprintln!(
        "latency at {} msgs/s offered over {} connection(s): {} of {} lines seen; \
         p50 {:.0} us, p90 {:.0} us, p99 {:.0} us, p99.9 {:.0} us, max {:.0} us \
         (sender max lag {:.2} ms; resolution ~{} ms)",
        run.rate,
        run.connections,
        s.seen,
        s.sent,
        s.p50_us,
        s.p90_us,
        s.p99_us,
        s.p999_us,
        s.max_us,
        s.max_lag.as_secs_f64() * 1e3,
        POLL.as_millis(),
    );
    println!(
        "mode=latency messages={} seen={} rate={} connections={} send_seconds={:.3} \
         p50_us={:.0} p90_us={:.0} p99_us={:.0} p999_us={:.0} max_us={:.0} max_lag_ms={:.3}",
        s.sent,
        s.seen,
        run.rate,
        run.connections,
        s.send_secs,
        s.p50_us,
        s.p90_us,
        s.p99_us,
        s.p999_us,
        s.max_us,
        s.max_lag.as_secs_f64() * 1e3
    );
}

fn summarize(sent: u64, mut lat_ns: Vec<u64>, max_lag: Duration, send_secs: f64) -> Summary {
    lat_ns.sort_unstable();
    let pct = |p: f64| -> f64 {
        if lat_ns.is_empty() {
            return f64::NAN;
        }
        // Nearest-rank percentile.
        let rank = ((p / 100.0) * lat_ns.len() as f64).ceil() as usize;
        lat_ns[rank.clamp(1, lat_ns.len()) - 1] as f64 / 1e3
    };
    Summary {
        sent,
        seen: lat_ns.len() as u64,
        p50_us: pct(50.0),
        p90_us: pct(90.0),
        p99_us: pct(99.0),
        p999_us: pct(99.9),
        max_us: pct(100.0),
        max_lag,
        send_secs,
    }
}

fn now_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}

/// One connection: message `k` is due at `k / rate`; everything due is
/// encoded (stamped with the current time) and written in one burst.
fn send_paced(
    mut conn: Conn,
    params: &Params<'_>,
    conn_id: u64,
    count: u64,
    rate: f64,
) -> anyhow::Result<Duration> {
    let count = count as usize;
    let mut burst = Stream::default();
    let mut body = String::with_capacity(params.body_size + 32);
    let mut json = Vec::with_capacity(params.body_size + 256);
    let start = Instant::now();
    let mut sent = 0usize;
    let mut max_lag = Duration::ZERO;
    while sent < count {
        let elapsed = start.elapsed().as_secs_f64();
        let due = ((elapsed * rate) as usize).saturating_add(1).min(count);
        if due <= sent {
            let wait = sent as f64 / rate - elapsed;
            if wait > 0.0 {
                thread::sleep(Duration::from_secs_f64(wait));
            }
            continue;
        }
        burst.bytes.clear();
        burst.ends.clear();
        let t = now_ns();
        for index in sent..due {
            write_body(conn_id, index as u64, t, params.body_size, &mut body);
            let host = params.hostnames[index % params.hostnames.len()].as_str();
            encode_one(params, host, &body, &mut json, &mut burst.bytes);
            burst.ends.push(burst.bytes.len());
        }
        conn.send(&burst, 0, burst.len())
            .with_context(|| format!("sending after {sent} of {count} messages"))?;
        let scheduled = (due - 1) as f64 / rate;
        let late = start.elapsed().as_secs_f64() - scheduled;
        max_lag = max_lag.max(Duration::from_secs_f64(late.max(0.0)));
        sent = due;
    }
    conn.finish(false).context("closing")?;
    Ok(max_lag)
}

/// `seq=C:I t=NS`, then a space and `x` padding up to `body_size`.
fn write_body(conn: u64, index: u64, t_ns: u64, body_size: usize, out: &mut String) {
    out.clear();
    // Writing into a String cannot fail.
    let _ = write!(out, "seq={conn}:{index} t={t_ns}");
    if body_size > out.len() + 1 {
        let pad = body_size - out.len() - 1;
        out.push(' ');
        out.extend(std::iter::repeat_n('x', pad));
    }
}

/// Polls `path` every [`POLL`], returning `now - t` (ns) for each line that
/// carries a `t=` token, until `expected` lines were seen or the senders are
/// done and the file has been quiet for [`IDLE_AFTER_SEND`].
fn tail(path: &Path, expected: u64, senders_done: &AtomicBool) -> io::Result<Vec<u64>> {
    let appear_deadline = Instant::now() + FILE_APPEAR_TIMEOUT;
    let mut file = loop {
        match File::open(path) {
            Ok(f) => break f,
            Err(e) if e.kind() == io::ErrorKind::NotFound && Instant::now() < appear_deadline => {
                thread::sleep(POLL);
            }
            Err(e) => return Err(e),
        }
    };
    let mut latencies = Vec::with_capacity(expected as usize);
    let mut buf = vec![0u8; 1 << 20];
    // Bytes of an incomplete last line carried to the next read.
    let mut partial: Vec<u8> = Vec::new();
    let mut last_progress = Instant::now();
    while (latencies.len() as u64) < expected {
        let n = file.read(&mut buf)?;
        if n == 0 {
            if senders_done.load(Ordering::Acquire) && last_progress.elapsed() > IDLE_AFTER_SEND {
                break;
            }
            thread::sleep(POLL);
            continue;
        }
        let now = now_ns();
        last_progress = Instant::now();
        partial.extend_from_slice(&buf[..n]);
        let mut consumed = 0;
        while let Some(nl) = partial[consumed..].iter().position(|&b| b == b'\n') {
            if let Some(t) = find_t(&partial[consumed..consumed + nl]) {
                latencies.push(now.saturating_sub(t));
            }
            consumed += nl + 1;
        }
        partial.drain(..consumed);
    }
    Ok(latencies)
}

/// The number after ` t=` in a line, if any.
fn find_t(line: &[u8]) -> Option<u64> {
    let pos = line.windows(3).position(|w| w == b" t=")?;
    let digits = &line[pos + 3..];
    let end = digits
        .iter()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(digits.len());
    std::str::from_utf8(&digits[..end]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn body_carries_seq_and_time_at_exact_size() {
        let mut b = String::new();
        write_body(2, 7, 1_700_000_000_123_456_789, 200, &mut b);
        assert_eq!(b.len(), 200);
        assert!(b.starts_with("seq=2:7 t=1700000000123456789 x"));
        let line = format!("2026-11-21 07:00:00,000 - h - {b}");
        assert_eq!(find_t(line.as_bytes()), Some(1_700_000_000_123_456_789));
        assert_eq!(find_t(b"no token here"), None);
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let lat: Vec<u64> = (1..=1000).map(|i| i * 1000).collect();
        let s = summarize(1000, lat, Duration::ZERO, 1.0);
        assert_eq!(s.seen, 1000);
        assert_eq!(s.p50_us, 500.0);
        assert_eq!(s.p99_us, 990.0);
        assert_eq!(s.max_us, 1000.0);
    }
}
