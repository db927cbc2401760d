//! `loghog-bench`: a load generator that is never the bottleneck, and the
//! checker that proves what it sent arrived exactly once.
//!
//! Every message is encoded before the clock starts (`encode`), then one
//! thread per connection does nothing but write (`send`); `check` reads the
//! daemon's files back. Only loopback addresses are ever dialled.

mod check;
mod encode;
mod latency;
mod send;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{bail, Context as _};
use clap::{Args, Parser, Subcommand};

use encode::{Format, Params, Stream, MAX_BODY_SIZE};
use send::{Pacing, Target, Transport};

/// Refuse runs whose pre-encoded streams would need more memory than this.
const MAX_ENCODED_BYTES: u64 = 16 << 30;

/// Sends N messages to a log daemon as fast as possible (or at --rate),
/// pre-encoded, over loopback. `loghog-bench check` verifies the result.
#[derive(Debug, Parser)]
#[command(name = "loghog-bench", version, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Read log files back and report missing/duplicate/out-of-order messages.
    Check(check::CheckArgs),
}

#[derive(Debug, Args)]
struct SendArgs {
    /// Daemon address; must be loopback (127.0.0.0/8, ::1 or "localhost").
    #[arg(long, default_value = "127.0.0.1")]
    host: String,
    /// Daemon port.
    #[arg(long, default_value_t = 5566)]
    port: u16,
    /// Transport.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Parallel connections (one sender thread each).
    #[arg(short = 'c', long, default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    connections: u32,
    /// Total messages, split evenly across connections.
    #[arg(short = 'n', long, default_value_t = 1_000_000)]
    messages: u64,
    /// Body size in bytes (`seq=C:I ` + padding).
    #[arg(long, default_value_t = 200,
          value_parser = clap::value_parser!(u32).range(1..=MAX_BODY_SIZE as i64))]
    body_size: u32,
    /// `app_id` (syslog: APP-NAME).
    #[arg(long, default_value = "bench")]
    app: String,
    /// `module` ("" is the root facility).
    #[arg(long, default_value_t = String::new())]
    module: String,
    /// Host name sent with every message.
    #[arg(long, default_value = "benchhost", conflicts_with = "hosts")]
    hostname: String,
    /// Spread messages round-robin over host0..host{K-1} (file_per_host tests).
    #[arg(long, value_name = "K",
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    hosts: Option<u32>,
    /// Sign every message with this facility secret (HMAC-MD5, SPEC §3).
    #[arg(long, value_name = "S")]
    secret: Option<String>,
    /// zlib-compress every payload (frame flag 0x01).
    #[arg(long)]
    compress: bool,
    /// Total messages per second; 0 = as fast as possible.
    #[arg(long, value_name = "R", default_value_t = 0)]
    rate: u64,
    /// Send RFC 5424 syslog lines (RFC 6587 octet counting on TCP/TLS,
    /// one per datagram on UDP) instead of LogHog frames.
    #[arg(long, conflicts_with_all = ["secret", "compress"])]
    syslog: bool,
    /// TLS: client key + certificate in one PEM file.
    #[arg(long, value_name = "PATH")]
    tls_pem: Option<PathBuf>,
    /// TLS: CA certificate that signed the server's certificate.
    #[arg(long, value_name = "PATH")]
    tls_ca: Option<PathBuf>,
    /// TLS: require the server certificate to name this host (default: the
    /// chain is verified but the name is not, as the Python client does).
    #[arg(long, value_name = "NAME")]
    tls_server_name: Option<String>,
    /// After sending, wait for the daemon to close each connection, so the
    /// time includes the daemon reading everything (TCP/TLS only).
    #[arg(long)]
    wait_close: bool,
    /// Print the result as one JSON object instead of key=value pairs.
    #[arg(long)]
    json: bool,
    /// Latency mode: encode each message as it is sent, with its send time
    /// in the body (`t=NS`), tail this output file of the daemon, and report
    /// p50/p99/max of send-to-line-in-file (needs --rate).
    #[arg(long, value_name = "FILE", requires = "rate", conflicts_with_all = ["wait_close", "json"])]
    latency: Option<PathBuf>,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Some(Command::Check(args)) => check::run(args),
        None => run_send(&cli.send).map(|()| true),
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("loghog-bench: error: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run_send(args: &SendArgs) -> anyhow::Result<()> {
    let ip = loopback(&args.host)?;
    let target = Target {
        addr: SocketAddr::new(ip, args.port),
        transport: args.transport,
        tls: tls_config(args, ip)?,
    };
    if args.wait_close && args.transport == Transport::Udp {
        bail!("--wait-close needs a stream transport (tcp or tls)");
    }
    let connections = args.connections as usize;
    let body_size = args.body_size as usize;
    let estimate = args
        .messages
        .saturating_mul(body_size as u64 + 200)
        .saturating_add(args.messages.saturating_mul(8));
    if estimate > MAX_ENCODED_BYTES {
        bail!(
            "pre-encoding {} messages of {} bytes needs about {} GiB; lower -n or --body-size",
            args.messages,
            body_size,
            estimate >> 30
        );
    }
    let hostnames: Vec<String> = match args.hosts {
        Some(k) => (0..k).map(|i| format!("host{i}")).collect(),
        None => vec![args.hostname.clone()],
    };
    let format = match (args.syslog, args.transport) {
        (false, _) => Format::LogHog,
        (true, Transport::Udp) => Format::SyslogDatagram,
        (true, _) => Format::SyslogOctetCounted,
    };
    let params = Params {
        format,
        app: &args.app,
        module: &args.module,
        hostnames: &hostnames,
        secret: args.secret.as_deref(),
        compress: args.compress,
        body_size,
    };

    if let Some(file) = &args.latency {
        let run = latency::Run {
            params: &params,
            target: &target,
            connections,
            messages: args.messages,
            rate: args.rate,
            file: file.clone(),
        };
        let summary = latency::run(&run)?;
        latency::print(&run, &summary);
        return Ok(());
    }

    let encode_start = Instant::now();
    let streams = encode_all(&params, connections, args.messages)?;
    let encode_secs = encode_start.elapsed().as_secs_f64();
    let bytes: u64 = streams.iter().map(|s| s.bytes.len() as u64).sum();
    if args.transport == Transport::Udp {
        let largest = streams
            .iter()
            .flat_map(|s| (0..s.len()).map(|i| s.range(i, i + 1).len()))
            .max()
            .unwrap_or(0);
        if largest > 65_507 {
            bail!("a datagram would be {largest} bytes, over UDP's 65507; lower --body-size");
        }
    }
    eprintln!(
        "encoded {} messages ({:.1} MB) in {:.3} s",
        args.messages,
        bytes as f64 / 1e6,
        encode_secs
    );

    let pacing = (args.rate > 0).then(|| {
        let rate = args.rate as f64 / connections as f64;
        Pacing {
            rate,
            burst: ((rate / 1000.0).round() as usize).max(1),
        }
    });
    let report = send::run(streams, &target, pacing, args.wait_close)?;

    let secs = report.elapsed.as_secs_f64().max(1e-9);
    let msgs_per_sec = args.messages as f64 / secs;
    let mb_per_sec = bytes as f64 / secs / 1e6;
    let format_name = if args.syslog { "syslog" } else { "loghog" };
    let max_lag_ms = report.max_lag.as_secs_f64() * 1e3;
    // Zero means "not measurable here", never "free".
    let cpu_secs = report.cpu.map_or(0.0, |d| d.as_secs_f64());
    let cpu_ns_per_msg = cpu_secs * 1e9 / (args.messages.max(1) as f64);
    eprintln!(
        "sent {} {format_name} messages ({:.1} MB) over {} {} connection(s) in {:.3} s: \
         {:.0} msgs/s, {:.1} MB/s; sender CPU {cpu_secs:.3} s ({cpu_ns_per_msg:.0} ns/msg){}",
        args.messages,
        bytes as f64 / 1e6,
        connections,
        args.transport,
        secs,
        msgs_per_sec,
        mb_per_sec,
        if args.rate > 0 {
            format!(" (target {} msgs/s, max lag {max_lag_ms:.2} ms)", args.rate)
        } else {
            String::new()
        }
    );
    if args.json {
        let v = serde_json::json!({
            "messages": args.messages,
            "connections": connections,
            "transport": args.transport.to_string(),
            "format": format_name,
            "body_size": body_size,
            "rate": args.rate,
            "encode_seconds": encode_secs,
            "seconds": secs,
            "msgs_per_sec": msgs_per_sec,
            "bytes": bytes,
            "mb_per_sec": mb_per_sec,
            "max_lag_ms": max_lag_ms,
            "cpu_seconds": cpu_secs,
            "cpu_ns_per_msg": cpu_ns_per_msg,
            "wait_close": args.wait_close,
        });
        println!("{v}");
    } else {
        println!(
            "messages={} connections={} transport={} format={format_name} body_size={body_size} \
             rate={} encode_seconds={encode_secs:.6} seconds={secs:.6} \
             msgs_per_sec={msgs_per_sec:.0} bytes={bytes} mb_per_sec={mb_per_sec:.1} \
             max_lag_ms={max_lag_ms:.3} cpu_seconds={cpu_secs:.6} \
             cpu_ns_per_msg={cpu_ns_per_msg:.0} wait_close={}",
            args.messages, connections, args.transport, args.rate, args.wait_close
        );
    }
    Ok(())
}

/// Resolves `host` to a loopback address, refusing anything else: this tool
/// floods its target and must never be pointed at another machine.
fn loopback(host: &str) -> anyhow::Result<IpAddr> {
    let ip = if host.eq_ignore_ascii_case("localhost") {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        host.parse::<IpAddr>()
            .with_context(|| format!("--host {host:?} is not an IP address or \"localhost\""))?
    };
    if !ip.is_loopback() {
        bail!("--host {ip} is not a loopback address; loghog-bench only dials 127.0.0.0/8 or ::1");
    }
    Ok(ip)
}

fn tls_config(
    args: &SendArgs,
    ip: IpAddr,
) -> anyhow::Result<
    Option<(
        std::sync::Arc<rustls::ClientConfig>,
        rustls_pki_types::ServerName<'static>,
    )>,
> {
    let any_tls_flag =
        args.tls_pem.is_some() || args.tls_ca.is_some() || args.tls_server_name.is_some();
    if args.transport != Transport::Tls {
        if any_tls_flag {
            bail!("--tls-pem/--tls-ca/--tls-server-name need --transport tls");
        }
        return Ok(None);
    }
    let (Some(pem), Some(ca)) = (&args.tls_pem, &args.tls_ca) else {
        bail!("--transport tls needs --tls-pem PATH (client key + cert) and --tls-ca PATH");
    };
    let config = loghog::tls::client_config(pem, ca, args.tls_server_name.is_some())?;
    let name = loghog::tls::server_name(args.tls_server_name.as_deref(), ip)
        .context("--tls-server-name is not a valid DNS name or IP address")?;
    Ok(Some((config, name)))
}

/// Encodes every connection's stream on all cores: encoding is the slow,
/// CPU-bound part (JSON, HMAC, zlib) and happens before the clock starts.
fn encode_all(
    params: &Params<'_>,
    connections: usize,
    messages: u64,
) -> anyhow::Result<Vec<Stream>> {
    let workers = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(connections);
    let next = AtomicUsize::new(0);
    let done: Mutex<Vec<Option<Stream>>> = Mutex::new((0..connections).map(|_| None).collect());
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| loop {
                let conn = next.fetch_add(1, Ordering::Relaxed);
                if conn >= connections {
                    return;
                }
                let count = encode::split(messages, connections, conn);
                let stream = encode::encode_connection(params, conn as u64, count);
                // Poisoning needs a panic in this same short section; the
                // data is still whole, so carry on with it.
                done.lock().unwrap_or_else(|p| p.into_inner())[conn] = Some(stream);
            });
        }
    });
    done.into_inner()
        .unwrap_or_else(|p| p.into_inner())
        .into_iter()
        .enumerate()
        .map(|(i, s)| s.with_context(|| format!("encoding connection {i} did not finish")))
        .collect()
}
