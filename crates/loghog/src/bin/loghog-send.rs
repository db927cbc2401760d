//! `loghog-send`: sends messages to loghogd from the command line or a
//! script, one per argument or one per line of standard input.
//!
//! Exit status 0 only when every message was written to the socket (for
//! TCP and TLS; a UDP sender cannot know more than that it sent them);
//! otherwise 1 and one line on stderr saying why (refused, TLS
//! verification, name resolution, ...). Usage errors exit 2 (clap).

use std::io::{BufRead, Read};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

/// Send log messages to loghogd.
#[derive(Debug, Parser)]
#[command(name = "loghog-send", version, about)]
struct Args {
    /// Application id (a section of the daemon's facilities.conf).
    #[arg(long)]
    app: String,
    /// Module (dotted path); empty for the app's root facility.
    #[arg(long, default_value = "")]
    module: String,
    /// The daemon's host.
    #[arg(long, default_value = "localhost", conflicts_with = "address")]
    host: String,
    /// The daemon's port [default: 5566, or 5577 with --tls].
    #[arg(long, conflicts_with = "address")]
    port: Option<u16>,
    /// The daemon as HOST:PORT (instead of --host and --port).
    #[arg(long)]
    address: Option<String>,
    /// Send over UDP (one datagram per message).
    #[arg(long, conflicts_with = "tls")]
    udp: bool,
    /// Send over TLS with a client certificate (needs --pem and --cacert).
    #[arg(long, requires_all = ["pem", "cacert"])]
    tls: bool,
    /// The client's key and certificate (PEM), for --tls.
    #[arg(long, value_name = "FILE", requires = "tls")]
    pem: Option<PathBuf>,
    /// The CA the daemon's certificate must chain to, for --tls.
    #[arg(long, value_name = "FILE", requires = "tls")]
    cacert: Option<PathBuf>,
    /// The name the daemon's certificate must carry [default: the host].
    #[arg(long, value_name = "NAME", requires = "tls")]
    tls_server_name: Option<String>,
    /// Sign every message with this secret.
    #[arg(long, conflicts_with = "secret_file")]
    secret: Option<String>,
    /// Read the secret from this file (its first line), keeping it out of `ps`.
    #[arg(long, value_name = "FILE")]
    secret_file: Option<PathBuf>,
    /// zlib-compress every message.
    #[arg(long)]
    compress: bool,
    /// Host name to send [default: this machine's].
    #[arg(long)]
    hostname: Option<String>,
    /// Send standard input as one message instead of one per line.
    #[arg(long, conflicts_with = "messages")]
    multiline: bool,
    /// Seconds to keep trying to deliver before giving up.
    #[arg(long, default_value_t = 10.0, value_name = "SECONDS")]
    timeout: f64,
    /// Messages to send; standard input when none are given.
    #[arg(value_name = "MESSAGE")]
    messages: Vec<String>,

    // --- the file-following agent (crate::follow, built separately) ---
    /// Follow these files and send every line appended to them (agent mode).
    #[arg(long, value_name = "FILE", num_args = 1.., conflicts_with_all = ["messages", "multiline"])]
    follow: Vec<PathBuf>,
    /// Where the agent remembers how far it has read each file.
    #[arg(long, value_name = "PATH", requires = "follow")]
    state: Option<PathBuf>,
    /// Parse each followed line as this format (clf, w3c or json).
    #[arg(long, value_name = "FORMAT", requires = "follow", value_parser = ["clf", "w3c", "json"])]
    parse: Option<String>,
}

/// Messages sent between waits for the socket: the queue (1024 messages)
/// never overflows, however fast standard input is.
const CHUNK: usize = 256;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("loghog-send: {why}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<(), String> {
    let timeout = Duration::try_from_secs_f64(args.timeout)
        .map_err(|_| format!("--timeout {}: not a number of seconds", args.timeout))?;
    if !args.follow.is_empty() {
        return follow(&args);
    }
    let client = build(&args)?
        // A tool must fail, not retry for ever: 3 attempts (~0.3 s of
        // backoff), then whatever is queued is dropped and reported.
        .give_up_after(3)
        .close_timeout(Duration::ZERO)
        .build()
        .map_err(|e| e.to_string())?;

    let sender = Sender {
        client: &client,
        module: &args.module,
        timeout,
        since_wait: 0,
    };
    if !args.messages.is_empty() {
        sender.all(args.messages.iter().map(|m| Ok(m.clone())))
    } else if args.multiline {
        let mut text = Vec::new();
        std::io::stdin()
            .lock()
            .read_to_end(&mut text)
            .map_err(|e| format!("cannot read standard input: {e}"))?;
        let text = String::from_utf8_lossy(&text);
        let text = text.strip_suffix('\n').unwrap_or(&text);
        sender.all(std::iter::once(Ok(text.to_owned())))
    } else {
        let stdin = std::io::stdin().lock();
        sender.all(stdin.split(b'\n').map(|line| {
            let mut line = line.map_err(|e| format!("cannot read standard input: {e}"))?;
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            Ok(String::from_utf8_lossy(&line).into_owned())
        }))
    }
}

/// The agent (`--follow`): runs until SIGTERM or SIGINT. Its client never
/// gives up (files are the buffer: while the daemon is away nothing more is
/// read), and holds more than one batch, so it never drops a line.
fn follow(args: &Args) -> Result<(), String> {
    use std::sync::atomic::AtomicBool;
    use std::sync::Arc;

    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let opts = loghog::follow::FollowOptions::default();
    let client = build(args)?
        .max_buffer(opts.max_batch_lines.max(1024) * 2)
        .build()
        .map_err(|e| e.to_string())?;
    let shutdown = Arc::new(AtomicBool::new(false));
    for sig in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(sig, shutdown.clone())
            .map_err(|e| format!("cannot install the signal handlers: {e}"))?;
    }
    let format = match &args.parse {
        Some(p) => p
            .parse()
            .map_err(|e: loghog::follow::UnknownFormat| e.to_string())?,
        None => loghog::follow::Format::Raw,
    };
    let opts = loghog::follow::FollowOptions {
        module: args.module.clone(),
        state_path: args.state.clone(),
        format,
        shutdown,
        ..opts
    };
    loghog::follow::run(&args.follow, &opts, &client).map_err(|e| e.to_string())?;
    // Stopped by a signal: what is queued gets the client's bounded close.
    drop(client);
    Ok(())
}

/// The client builder for the command-line flags.
fn build(args: &Args) -> Result<loghog::Builder, String> {
    let default_port = if args.tls {
        loghog::DEFAULT_TLS_PORT
    } else {
        loghog::DEFAULT_PORT
    };
    let address = match &args.address {
        Some(a) => a.clone(),
        None if args.host.contains(':') => {
            format!("[{}]:{}", args.host, args.port.unwrap_or(default_port))
        }
        None => format!("{}:{}", args.host, args.port.unwrap_or(default_port)),
    };
    let mut b = loghog::Client::builder(&args.app)
        .address(address)
        .compress(args.compress);
    if args.udp {
        b = b.udp();
    }
    if args.tls {
        if let (Some(pem), Some(ca)) = (&args.pem, &args.cacert) {
            b = b.tls(pem, ca);
        }
        if let Some(name) = &args.tls_server_name {
            b = b.tls_server_name(name);
        }
    }
    if let Some(s) = &args.secret {
        b = b.secret(s);
    }
    if let Some(path) = &args.secret_file {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read --secret-file {}: {e}", path.display()))?;
        let secret = text.lines().next().unwrap_or("");
        if secret.is_empty() {
            return Err(format!("--secret-file {} is empty", path.display()));
        }
        b = b.secret(secret);
    }
    if let Some(h) = &args.hostname {
        b = b.hostname(h);
    }
    Ok(b)
}

/// Sends messages, waiting for the socket every [`CHUNK`] of them.
struct Sender<'a> {
    client: &'a loghog::Client,
    module: &'a str,
    timeout: Duration,
    since_wait: usize,
}

impl Sender<'_> {
    fn all(mut self, messages: impl Iterator<Item = Result<String, String>>) -> Result<(), String> {
        for m in messages {
            self.client.send(self.module, &m?);
            self.since_wait += 1;
            if self.since_wait == CHUNK {
                self.wait()?;
                self.since_wait = 0;
            }
        }
        self.wait()
    }

    fn wait(&self) -> Result<(), String> {
        self.client
            .flush(self.timeout)
            .map_err(|e| e.cause().to_string())?;
        match self.client.dropped() {
            0 => Ok(()),
            n => Err(format!(
                "{n} message(s) dropped: over the size limit ({} bytes)",
                loghog::DEFAULT_MAX_MESSAGE_SIZE
            )),
        }
    }
}
