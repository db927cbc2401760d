//! The `[forward]` and `[consume]` sections of loghogd.conf (issue 16):
//! the NATS JetStream relay. An edge with `[forward]` publishes the
//! records of forwarding facilities to a stream split in partitions; a
//! writer with `[consume]` takes the partitions it owns (by lease) and
//! writes their files. Both are off unless `servers` is set. What the two
//! share (the broker connection and the stream's settings) is read by one
//! function each, so the sections cannot drift apart. Credential files are
//! checked to be readable here, at load (the daemon is still root then),
//! and their contents are never printed.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{show_duration, show_size, ConfigError, Reader};

/// The keys `[forward]` knows: the connection's (`servers` to `tls_key`),
/// the stream's (`stream` to `duplicate_window`, the same in `[consume]`:
/// either end may create the stream), then its own.
pub(super) const FORWARD_KEYS: &[&str] = &[
    "servers",
    "creds",
    "nkey",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "stream",
    "subject_prefix",
    "partitions",
    "replicas",
    "max_age",
    "max_bytes",
    "duplicate_window",
    "all",
    "spool_max_bytes",
    "spool_segment_bytes",
    "batch_bytes",
    "spill_after",
];

/// The keys `[consume]` knows.
pub(super) const CONSUME_KEYS: &[&str] = &[
    "servers",
    "creds",
    "nkey",
    "tls_ca",
    "tls_cert",
    "tls_key",
    "stream",
    "subject_prefix",
    "partitions",
    "replicas",
    "max_age",
    "max_bytes",
    "duplicate_window",
    "partitions_owned",
    "name",
    "lease_bucket",
    "lease_ttl",
    "fetch_batch",
];

/// Most partitions a stream may have.
const MAX_PARTITIONS: u64 = 1024;

/// How to reach the NATS servers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerConn {
    /// `nats://host:port` or `tls://host:port` URLs, as written.
    pub servers: Vec<String>,
    /// A credentials file (JWT and NKey seed); exclusive with `nkey`.
    pub creds: Option<PathBuf>,
    /// An NKey seed file; exclusive with `creds`.
    pub nkey: Option<PathBuf>,
    /// CA certificates the servers' certificates must chain to.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate for mutual TLS (with `tls_key`).
    pub tls_cert: Option<PathBuf>,
    /// Key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
}

/// The JetStream stream the records travel in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StreamSettings {
    /// Stream name.
    pub stream: String,
    /// Subjects are `<subject_prefix>.<partition>`.
    pub subject_prefix: String,
    /// Partitions (subjects), 1 to 1024; a file's records all go to one.
    pub partitions: u32,
    /// Stream replicas, 1 to 5.
    pub replicas: usize,
    /// Retention; `ZERO` = none.
    pub max_age: Duration,
    /// Size cap in bytes; 0 = none.
    pub max_bytes: u64,
    /// The window in which the stream drops a re-published block.
    pub duplicate_window: Duration,
}

/// `[forward]`: publish records to the stream, spooled on disk first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForwardSection {
    /// The servers and credentials.
    pub conn: BrokerConn,
    /// The stream.
    pub stream: StreamSettings,
    /// Forward every facility (else only those with `forward = yes`).
    pub all: bool,
    /// Spool size for the whole daemon, split evenly across partitions.
    pub spool_max_bytes: u64,
    /// Size at which a spool segment file is closed and a new one begun.
    pub spool_segment_bytes: u64,
    /// Most bytes in one block (one NATS message).
    pub batch_bytes: usize,
    /// A block the broker has not acknowledged this long goes to the spool,
    /// and what follows it too; zero: every block is spooled before it is
    /// published.
    pub spill_after: Duration,
}

/// `[consume]`: write the records of the partitions this daemon owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConsumeSection {
    /// The servers and credentials.
    pub conn: BrokerConn,
    /// The stream (must match the edges').
    pub stream: StreamSettings,
    /// The partitions to take leases on, sorted, each once.
    pub owned: Vec<u32>,
    /// This writer's name in the leases.
    pub name: String,
    /// The JetStream KV bucket of the leases.
    pub lease_bucket: String,
    /// A lease not renewed this long may be taken by another writer.
    pub lease_ttl: Duration,
    /// Most messages one fetch asks for.
    pub fetch_batch: usize,
}

// === impl ForwardSection ===

impl ForwardSection {
    /// The spool size of one partition.
    pub fn spool_per_partition(&self) -> u64 {
        self.spool_max_bytes / u64::from(self.stream.partitions.max(1))
    }

    /// One line for `--check-config` (no secret: only the files' paths);
    /// `facilities` names the ones that forward (ignored with `all`).
    pub fn describe(&self, facilities: &[String]) -> String {
        let which = if self.all {
            "all".to_owned()
        } else if facilities.is_empty() {
            "none (set forward = yes in facilities.conf, or all = yes)".to_owned()
        } else {
            facilities.join(",")
        };
        format!(
            "[forward] {} {} spool_max_bytes={} ({} per partition) spool_segment_bytes={} \
             batch_bytes={} spill_after={} facilities={which}",
            self.conn.describe(),
            self.stream.describe(),
            show_size(self.spool_max_bytes),
            show_size(self.spool_per_partition()),
            show_size(self.spool_segment_bytes),
            show_size(self.batch_bytes as u64),
            show_duration(self.spill_after),
        )
    }
}

// === impl ConsumeSection ===

impl ConsumeSection {
    /// One line for `--check-config` (no secret: only the files' paths).
    pub fn describe(&self) -> String {
        let owned = if self.owned.len() == self.stream.partitions as usize {
            format!("all ({})", ranges(&self.owned))
        } else {
            ranges(&self.owned)
        };
        format!(
            "[consume] {} {} partitions_owned={owned} name={} lease_bucket={} lease_ttl={} \
             fetch_batch={}",
            self.conn.describe(),
            self.stream.describe(),
            self.name,
            self.lease_bucket,
            show_duration(self.lease_ttl),
            self.fetch_batch,
        )
    }
}

// === impl BrokerConn ===

impl BrokerConn {
    /// `servers=... auth=... tls=...`, paths only.
    fn describe(&self) -> String {
        let auth = match (&self.creds, &self.nkey) {
            (Some(p), _) => format!("creds {}", p.display()),
            (None, Some(p)) => format!("nkey {}", p.display()),
            (None, None) => "none".to_owned(),
        };
        let mut tls = Vec::new();
        for (what, p) in [
            ("ca", &self.tls_ca),
            ("cert", &self.tls_cert),
            ("key", &self.tls_key),
        ] {
            if let Some(p) = p {
                tls.push(format!("{what}={}", p.display()));
            }
        }
        format!(
            "servers={} auth={auth} tls={}",
            self.servers.join(","),
            if tls.is_empty() {
                "none".to_owned()
            } else {
                tls.join(",")
            }
        )
    }
}

// === impl StreamSettings ===

impl StreamSettings {
    /// `stream=... subject=... partitions=... ...`.
    fn describe(&self) -> String {
        let or_none = |zero: bool, v: String| if zero { "none".to_owned() } else { v };
        format!(
            "stream={} subject={}.<0-{}> partitions={} replicas={} max_age={} max_bytes={} \
             duplicate_window={}",
            self.stream,
            self.subject_prefix,
            self.partitions.saturating_sub(1),
            self.partitions,
            self.replicas,
            or_none(self.max_age.is_zero(), show_duration(self.max_age)),
            or_none(self.max_bytes == 0, show_size(self.max_bytes)),
            show_duration(self.duplicate_window),
        )
    }
}

/// `0-3,6`.
fn ranges(sorted: &[u32]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let mut j = i;
        while j + 1 < sorted.len() && sorted[j + 1] == sorted[j] + 1 {
            j += 1;
        }
        out.push(if i == j {
            sorted[i].to_string()
        } else {
            format!("{}-{}", sorted[i], sorted[j])
        });
        i = j + 1;
    }
    out.join(",")
}

// === reading ===

/// Reads `[forward]`; `None` without `servers`.
pub(super) fn read_forward(r: &Reader<'_>) -> Result<Option<ForwardSection>, ConfigError> {
    let Some(conn) = read_conn(r)? else {
        return Ok(None);
    };
    let stream = read_stream(r)?;
    let batch_bytes = r.size("batch_bytes", 256 << 10, 1 << 10, 1 << 20)?;
    let section = ForwardSection {
        conn,
        all: r.bool("all", false)?,
        spool_max_bytes: r.size("spool_max_bytes", 1 << 30, 1 << 20, 1 << 44)?,
        spool_segment_bytes: r.size("spool_segment_bytes", 64 << 20, 1 << 20, 4 << 30)?,
        // At most 1 MiB.
        batch_bytes: batch_bytes as usize,
        spill_after: r.duration(
            "spill_after",
            Duration::from_secs(1),
            Duration::ZERO,
            Duration::from_secs(3600),
        )?,
        stream,
    };
    let per_partition = section.spool_per_partition();
    if per_partition < batch_bytes {
        return Err(r.error(
            "spool_max_bytes",
            format!(
                "spool_max_bytes = {} gives each of the {} partitions {}, less than one block \
                 (batch_bytes = {}); raise spool_max_bytes or lower partitions or batch_bytes",
                show_size(section.spool_max_bytes),
                section.stream.partitions,
                show_size(per_partition),
                show_size(batch_bytes),
            ),
        ));
    }
    Ok(Some(section))
}

/// Reads `[consume]`; `None` without `servers`.
pub(super) fn read_consume(r: &Reader<'_>) -> Result<Option<ConsumeSection>, ConfigError> {
    let Some(conn) = read_conn(r)? else {
        return Ok(None);
    };
    let stream = read_stream(r)?;
    let owned = match r.str("partitions_owned") {
        None => (0..stream.partitions).collect(),
        Some(v) => parse_owned(v, stream.partitions)
            .map_err(|problem| r.error("partitions_owned", problem))?,
    };
    let name = match r.str("name") {
        Some(n) => n.to_owned(),
        None => hostname().ok_or_else(|| {
            r.error(
                "name",
                "the host name cannot be read to name this writer; set name = (e.g. the host's name)",
            )
        })?,
    };
    if name.len() > 255 || name.chars().any(char::is_control) {
        return Err(r.error(
            "name",
            "name must be at most 255 bytes without control characters; use e.g. the host's name",
        ));
    }
    let lease_bucket = r.str("lease_bucket").unwrap_or("loghogd_leases").to_owned();
    if !is_name(&lease_bucket) {
        return Err(r.error(
            "lease_bucket",
            format!(
                "lease_bucket = \"{lease_bucket}\" is not a bucket name; use letters, digits, '-' and '_'"
            ),
        ));
    }
    Ok(Some(ConsumeSection {
        conn,
        owned,
        name,
        lease_bucket,
        lease_ttl: r.duration(
            "lease_ttl",
            Duration::from_secs(10),
            Duration::from_secs(3),
            Duration::from_secs(600),
        )?,
        fetch_batch: r.number("fetch_batch", 256, 1, 4096)? as usize,
        stream,
    }))
}

/// The connection keys; `None` without `servers`.
fn read_conn(r: &Reader<'_>) -> Result<Option<BrokerConn>, ConfigError> {
    let Some(value) = r.str("servers") else {
        return Ok(None);
    };
    let mut servers = Vec::new();
    for item in value.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        check_server(item).map_err(|problem| {
            r.error(
                "servers",
                format!("servers: \"{item}\" {problem}; write e.g. nats://10.0.0.2:4222 or tls://nats.example:4222"),
            )
        })?;
        servers.push(item.to_owned());
    }
    if servers.is_empty() {
        return Ok(None);
    }
    let file = |key: &str| -> Result<Option<PathBuf>, ConfigError> {
        let Some(p) = r.path(key)? else {
            return Ok(None);
        };
        check_readable(&p).map_err(|problem| {
            r.error(
                key,
                format!(
                    "{}: {problem}; check the path and that root can read it",
                    p.display()
                ),
            )
        })?;
        Ok(Some(p))
    };
    let conn = BrokerConn {
        servers,
        creds: file("creds")?,
        nkey: file("nkey")?,
        tls_ca: file("tls_ca")?,
        tls_cert: file("tls_cert")?,
        tls_key: file("tls_key")?,
    };
    if conn.creds.is_some() && conn.nkey.is_some() {
        return Err(r.error(
            "nkey",
            "creds and nkey are both set; a credentials file already holds an NKey seed, so keep one of the two",
        ));
    }
    match (&conn.tls_cert, &conn.tls_key) {
        (Some(_), None) => {
            return Err(r.error(
                "tls_cert",
                "tls_cert needs tls_key (the certificate's private key); set tls_key, or remove tls_cert",
            ))
        }
        (None, Some(_)) => {
            return Err(r.error(
                "tls_key",
                "tls_key needs tls_cert (the client certificate); set tls_cert, or remove tls_key",
            ))
        }
        _ => {}
    }
    Ok(Some(conn))
}

/// The stream keys.
fn read_stream(r: &Reader<'_>) -> Result<StreamSettings, ConfigError> {
    let stream = r.str("stream").unwrap_or("LOGHOG").to_owned();
    if !is_name(&stream) {
        return Err(r.error(
            "stream",
            format!("stream = \"{stream}\" is not a stream name; use letters, digits, '-' and '_'"),
        ));
    }
    let subject_prefix = r.str("subject_prefix").unwrap_or("loghog").to_owned();
    if subject_prefix.split('.').any(|t| !is_name(t)) {
        return Err(r.error(
            "subject_prefix",
            format!(
                "subject_prefix = \"{subject_prefix}\" is not a subject; use tokens of letters, \
                 digits, '-' and '_' separated by '.' (no wildcards), e.g. loghog"
            ),
        ));
    }
    let max_age = r.duration(
        "max_age",
        Duration::from_secs(7 * 86_400),
        Duration::ZERO,
        Duration::from_secs(3650 * 86_400),
    )?;
    let duplicate_window = r.duration(
        "duplicate_window",
        Duration::from_secs(120),
        Duration::from_secs(1),
        Duration::from_secs(7 * 86_400),
    )?;
    if !max_age.is_zero() && duplicate_window > max_age {
        return Err(r.error(
            "duplicate_window",
            format!(
                "duplicate_window = {} is longer than max_age = {}; the stream refuses that, \
                 so shorten duplicate_window or raise max_age",
                show_duration(duplicate_window),
                show_duration(max_age)
            ),
        ));
    }
    Ok(StreamSettings {
        stream,
        subject_prefix,
        // At most 1024 and 5.
        partitions: r.number("partitions", 8, 1, MAX_PARTITIONS)? as u32,
        replicas: r.number("replicas", 1, 1, 5)? as usize,
        max_age,
        max_bytes: r.size("max_bytes", 0, 0, 1 << 50)?,
        duplicate_window,
    })
}

/// Letters, digits, `-` and `_`, at least one, at most 255: safe as a
/// stream, bucket or subject token name.
fn is_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 255
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// `nats://host:port` or `tls://host:port`, nothing else (credentials
/// belong in `creds`/`nkey`, never in a URL `--check-config` prints).
fn check_server(item: &str) -> Result<(), String> {
    let rest = item
        .strip_prefix("nats://")
        .or_else(|| item.strip_prefix("tls://"))
        .ok_or("is not a nats:// or tls:// URL")?;
    if rest.contains('@') {
        return Err("holds credentials; put them in creds or nkey, not in the URL".to_owned());
    }
    let (host, port) = if let Some(v6) = rest.strip_prefix('[') {
        let (host, after) = v6.split_once(']').ok_or("has no closing ']'")?;
        (host, after.strip_prefix(':').ok_or("has no :port")?)
    } else {
        rest.rsplit_once(':').ok_or("has no :port")?
    };
    let host_ok = !host.is_empty()
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':'));
    if !host_ok || (host.contains(':') && !rest.starts_with('[')) {
        return Err("has no valid host (an IPv6 address goes in brackets)".to_owned());
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err("has no valid port (1 to 65535, and nothing after it)".to_owned()),
    }
}

/// Whether `p` is a regular file this process can open for reading.
fn check_readable(p: &Path) -> Result<(), String> {
    let meta = std::fs::metadata(p).map_err(|e| format!("cannot read it ({e})"))?;
    if !meta.is_file() {
        return Err("is not a regular file".to_owned());
    }
    std::fs::File::open(p)
        .map(drop)
        .map_err(|e| format!("cannot read it ({e})"))
}

/// `partitions_owned`: `all`, or partitions and ranges (`0-3, 6`), each
/// below `partitions`; sorted, each once.
fn parse_owned(v: &str, partitions: u32) -> Result<Vec<u32>, String> {
    if v.eq_ignore_ascii_case("all") {
        return Ok((0..partitions).collect());
    }
    let fix = format!(
        "use all, or partition numbers and ranges from 0 to {} such as 0-3, 6",
        partitions - 1
    );
    let mut owned = Vec::new();
    for item in v
        .split(|c: char| c == ',' || c.is_whitespace())
        .filter(|i| !i.is_empty())
    {
        let num = |s: &str| {
            s.trim()
                .parse::<u32>()
                .ok()
                .filter(|n| *n < partitions)
                .ok_or_else(|| {
                    format!("partitions_owned: \"{item}\" is not a partition of the {partitions}; {fix}")
                })
        };
        let (lo, hi) = match item.split_once('-') {
            Some((a, b)) => (num(a)?, num(b)?),
            None => {
                let n = num(item)?;
                (n, n)
            }
        };
        if lo > hi {
            return Err(format!(
                "partitions_owned: \"{item}\" is an empty range; write it low-high"
            ));
        }
        owned.extend(lo..=hi);
    }
    if owned.is_empty() {
        return Err(format!("partitions_owned is empty; {fix}"));
    }
    owned.sort_unstable();
    owned.dedup();
    Ok(owned)
}

/// This host's name (the default writer name); `None` if unreadable.
fn hostname() -> Option<String> {
    let mut buf = [0u8; 256];
    // SAFETY: gethostname writes at most `buf.len()` bytes into `buf`.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return None;
    }
    let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
    let name = std::str::from_utf8(&buf[..end]).ok()?.trim();
    (!name.is_empty()).then(|| name.to_owned())
}

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::time::Duration;

    use super::{check_server, parse_owned, ranges, CONSUME_KEYS, FORWARD_KEYS};
    use crate::config::testing::{assert_errors, parse};

    #[test]
    fn off_without_servers() {
        let c = parse("").unwrap();
        assert!(c.forward.is_none() && c.consume.is_none());
        let c = parse("[forward]\nstream = X\nservers =\n[consume]\nname = a\n").unwrap();
        assert!(c.forward.is_none() && c.consume.is_none());
    }

    #[test]
    fn forward_defaults() {
        let c = parse("[forward]\nservers = nats://127.0.0.1:4222\n").unwrap();
        let f = c.forward.unwrap();
        assert_eq!(f.conn.servers, ["nats://127.0.0.1:4222"]);
        assert_eq!(f.conn.creds, None);
        assert_eq!(f.stream.stream, "LOGHOG");
        assert_eq!(f.stream.subject_prefix, "loghog");
        assert_eq!(f.stream.partitions, 8);
        assert_eq!(f.stream.replicas, 1);
        assert_eq!(f.stream.max_age, Duration::from_secs(7 * 86_400));
        assert_eq!(f.stream.max_bytes, 0);
        assert_eq!(f.stream.duplicate_window, Duration::from_secs(120));
        assert!(!f.all);
        assert_eq!(f.spool_max_bytes, 1 << 30);
        assert_eq!(f.spool_segment_bytes, 64 << 20);
        assert_eq!(f.batch_bytes, 256 << 10);
        assert_eq!(f.spill_after, Duration::from_secs(1));
        assert_eq!(f.spool_per_partition(), 128 << 20);
    }

    #[test]
    fn forward_keys_read() {
        let dir = tempfile::tempdir().unwrap();
        let creds = dir.path().join("nats.creds");
        let ca = dir.path().join("ca.pem");
        std::fs::write(&creds, "-----BEGIN NATS USER JWT-----\nsecret\n").unwrap();
        std::fs::write(&ca, "ca").unwrap();
        let text = format!(
            "[forward]\nservers = nats://127.0.0.1:4222, tls://[::1]:4223 ,tls://nats.example:7\n\
             stream = LH_2\nsubject_prefix = logs.edge-1\npartitions = 16\nreplicas = 3\n\
             max_age = 36h\nmax_bytes = 10G\nduplicate_window = 90\nall = yes\n\
             spool_max_bytes = 2G\nspool_segment_bytes = 8M\nbatch_bytes = 1M\n\
             spill_after = 0\ncreds = {}\ntls_ca = {}\n",
            creds.display(),
            ca.display()
        );
        let f = parse(&text).unwrap().forward.unwrap();
        assert_eq!(
            f.conn.servers,
            [
                "nats://127.0.0.1:4222",
                "tls://[::1]:4223",
                "tls://nats.example:7"
            ]
        );
        assert_eq!(f.conn.creds.as_deref(), Some(creds.as_path()));
        assert_eq!(f.conn.tls_ca.as_deref(), Some(ca.as_path()));
        assert_eq!(f.stream.stream, "LH_2");
        assert_eq!(f.stream.subject_prefix, "logs.edge-1");
        assert_eq!(f.stream.partitions, 16);
        assert_eq!(f.stream.replicas, 3);
        assert_eq!(f.stream.max_age, Duration::from_secs(36 * 3600));
        assert_eq!(f.stream.max_bytes, 10 << 30);
        assert_eq!(f.stream.duplicate_window, Duration::from_secs(90));
        assert!(f.all);
        assert_eq!(f.spool_max_bytes, 2 << 30);
        assert_eq!(f.spool_segment_bytes, 8 << 20);
        assert_eq!(f.batch_bytes, 1 << 20);
        assert_eq!(
            f.spill_after,
            Duration::ZERO,
            "0: every block is spooled first"
        );
        // The check-config line names the paths, never the contents.
        let line = f.describe(&[]);
        assert!(
            line.contains(&format!("auth=creds {}", creds.display())),
            "{line}"
        );
        assert!(
            line.contains("subject=logs.edge-1.<0-15> partitions=16 replicas=3"),
            "{line}"
        );
        assert!(
            line.contains("max_age=36h max_bytes=10G duplicate_window=90s"),
            "{line}"
        );
        assert!(
            line.contains("spool_max_bytes=2G (128M per partition)"),
            "{line}"
        );
        assert!(line.contains("facilities=all"), "{line}");
        assert!(!line.contains("secret") && !line.contains("JWT"), "{line}");
        // max_age = 0: no retention.
        let f = parse("[forward]\nservers = nats://h:1\nmax_age = 0\n")
            .unwrap()
            .forward
            .unwrap();
        assert!(f.stream.max_age.is_zero());
        assert!(f
            .describe(&["a".into(), "b:c".into()])
            .contains("max_age=none max_bytes=none"));
        assert!(f
            .describe(&["a".into(), "b:c".into()])
            .ends_with("facilities=a,b:c"));
    }

    #[test]
    fn consume_keys_read() {
        let c = parse("[consume]\nservers = nats://127.0.0.1:4222\n").unwrap();
        let s = c.consume.unwrap();
        assert_eq!(s.owned, (0..8).collect::<Vec<_>>());
        assert!(!s.name.is_empty());
        assert_eq!(s.lease_bucket, "loghogd_leases");
        assert_eq!(s.lease_ttl, Duration::from_secs(10));
        assert_eq!(s.fetch_batch, 256);
        assert!(
            s.describe().contains("partitions_owned=all (0-7)"),
            "{}",
            s.describe()
        );

        let c = parse(
            "[consume]\nservers = nats://127.0.0.1:4222\npartitions = 12\n\
             partitions_owned = 6, 0-3 2 11\nname = writer-a\nlease_bucket = L_1\n\
             lease_ttl = 1m\nfetch_batch = 32\nstream = S\n",
        )
        .unwrap();
        let s = c.consume.unwrap();
        assert_eq!(s.owned, [0, 1, 2, 3, 6, 11]);
        assert_eq!(s.name, "writer-a");
        assert_eq!(s.lease_bucket, "L_1");
        assert_eq!(s.lease_ttl, Duration::from_secs(60));
        assert_eq!(s.fetch_batch, 32);
        assert_eq!(s.stream.stream, "S");
        let line = s.describe();
        assert!(
            line.contains("partitions_owned=0-3,6,11 name=writer-a lease_bucket=L_1 lease_ttl=1m"),
            "{line}"
        );
    }

    #[test]
    fn server_urls() {
        for ok in [
            "nats://a:1",
            "tls://10.0.0.1:4222",
            "nats://[fe80::1]:4222",
            "nats://n_1.x-y:65535",
        ] {
            assert_eq!(check_server(ok), Ok(()), "{ok}");
        }
        for bad in [
            "127.0.0.1:4222",
            "http://a:1",
            "nats://a",
            "nats://a:0",
            "nats://a:1/x",
            "nats://:1",
            "nats://u:p@a:1",
            "nats://::1:4222",
            "nats://[::1:4222",
        ] {
            assert!(check_server(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn owned_lists_and_ranges() {
        assert_eq!(parse_owned("ALL", 3), Ok(vec![0, 1, 2]));
        assert_eq!(parse_owned("2,0-1,1", 3), Ok(vec![0, 1, 2]));
        assert!(parse_owned("3", 3).is_err());
        assert!(parse_owned("2-1", 3).is_err());
        assert!(parse_owned("x", 3).is_err());
        assert_eq!(ranges(&[0, 1, 2, 5, 7, 8]), "0-2,5,7-8");
        assert_eq!(ranges(&[4]), "4");
    }

    #[test]
    fn every_error_names_the_key_and_the_fix() {
        const S: &str = "servers = nats://127.0.0.1:4222\n";
        let f = |body: &str| format!("[forward]\n{S}{body}\n");
        let c = |body: &str| format!("[consume]\n{S}{body}\n");
        let cases = [
            ("[forward]\nservers = 127.0.0.1:4222\n".to_owned(), "[forward] servers (line 2)", "not a nats:// or tls:// URL; write e.g. nats://"),
            ("[consume]\nservers = nats://u:pw@h:1\n".to_owned(), "[consume] servers (line 2)", "put them in creds or nkey"),
            (f("partitions = 0"), "[forward] partitions (line 3)", "from 1 to 1024"),
            (f("partitions = 1025"), "[forward] partitions", "from 1 to 1024"),
            (f("replicas = 6"), "[forward] replicas", "from 1 to 5"),
            (f("batch_bytes = 1023"), "[forward] batch_bytes", "from 1K to 1M"),
            (f("batch_bytes = 2M"), "[forward] batch_bytes", "from 1K to 1M"),
            (f("max_age = 7 days"), "[forward] max_age", "s, m, h or d suffix"),
            (f("max_bytes = 10T"), "[forward] max_bytes", "K, M or G suffix"),
            (f("duplicate_window = 0"), "[forward] duplicate_window", "from 1s to 7d"),
            (f("max_age = 1m\nduplicate_window = 2m"), "[forward] duplicate_window", "shorten duplicate_window or raise max_age"),
            (f("spool_max_bytes = 1M\npartitions = 16"), "[forward] spool_max_bytes", "raise spool_max_bytes or lower partitions"),
            (f("spool_segment_bytes = 1K"), "[forward] spool_segment_bytes", "from 1M to 4G"),
            (f("all = sometimes"), "[forward] all", "use yes or no"),
            (f("stream = a.b"), "[forward] stream", "not a stream name"),
            (f("subject_prefix = logs.*"), "[forward] subject_prefix", "no wildcards"),
            (f("subject_prefix = logs."), "[forward] subject_prefix", "separated by '.'"),
            (f("creds = /nonexistent/nats.creds"), "[forward] creds", "/nonexistent/nats.creds: cannot read it"),
            (f("tls_ca = /"), "[forward] tls_ca", "is not a regular file"),
            (f("tls_ca ="), "[forward] tls_ca", "is empty; give a path"),
            (c("partitions_owned = 8"), "[consume] partitions_owned", "\"8\" is not a partition of the 8; use all, or partition numbers and ranges from 0 to 7"),
            (c("partitions = 4\npartitions_owned = 3-1"), "[consume] partitions_owned", "write it low-high"),
            (c("partitions_owned = ,"), "[consume] partitions_owned", "partitions_owned is empty"),
            (c("lease_ttl = 2"), "[consume] lease_ttl", "from 3s to 10m"),
            (c("lease_ttl = 11m"), "[consume] lease_ttl", "from 3s to 10m"),
            (c("fetch_batch = 0"), "[consume] fetch_batch", "from 1 to 4096"),
            (c("lease_bucket = a/b"), "[consume] lease_bucket", "not a bucket name"),
        ];
        for (text, place, fix) in &cases {
            let err = parse(text).expect_err(text);
            assert_eq!(err.file, Path::new("/etc/loghogd/loghogd.conf"), "{text}");
            assert!(err.place.starts_with(place), "{text}: {}", err.place);
            assert!(err.problem.contains(fix), "{text}: {}", err.problem);
        }
        assert_errors(&[(&f("replicas = x"), "replicas", "whole number")]);
    }

    #[test]
    fn credential_files_are_exclusive_and_paired() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        std::fs::write(&a, "x").unwrap();
        let a = a.display();
        for (body, place, fix) in [
            (
                format!("creds = {a}\nnkey = {a}"),
                "[forward] nkey",
                "keep one of the two",
            ),
            (
                format!("tls_cert = {a}"),
                "[forward] tls_cert",
                "set tls_key",
            ),
            (
                format!("tls_key = {a}"),
                "[forward] tls_key",
                "set tls_cert",
            ),
        ] {
            let text = format!("[forward]\nservers = tls://h:1\n{body}\n");
            let err = parse(&text).expect_err(&text);
            assert!(err.place.starts_with(place), "{text}: {err}");
            assert!(err.problem.contains(fix), "{text}: {err}");
        }
        let text =
            format!("[consume]\nservers = tls://h:1\nnkey = {a}\ntls_cert = {a}\ntls_key = {a}\n");
        let s = parse(&text).unwrap().consume.unwrap();
        assert!(s.conn.nkey.is_some() && s.conn.tls_cert.is_some() && s.conn.tls_key.is_some());
        assert!(
            s.describe().contains(&format!("auth=nkey {a}")),
            "{}",
            s.describe()
        );
    }

    #[test]
    fn unknown_keys_in_the_sections_are_warned_about() {
        let c = parse("[forward]\nservers = nats://h:1\nbatch_size = 3\n[consume]\nleas_ttl = 3\n")
            .unwrap();
        let w: Vec<String> = c.warnings.iter().map(ToString::to_string).collect();
        assert_eq!(w.len(), 2, "{w:?}");
        assert!(w[0].contains("batch_size"), "{w:?}");
        assert!(w[1].ends_with("did you mean `lease_ttl`?"), "{w:?}");
    }

    #[test]
    fn both_sections_know_the_connection_and_stream_keys() {
        assert_eq!(FORWARD_KEYS[..13], CONSUME_KEYS[..13]);
        assert_eq!(FORWARD_KEYS[0], "servers");
        assert_eq!(FORWARD_KEYS[12], "duplicate_window");
    }
}
