//! Partition ownership for the broker consumer (issue 16): a lease per
//! partition, value `{"owner":NAME,"seq":LAST_WRITTEN,"files":{PATH:MARK}}`
//! (the owner's last commit: see [`Checkpoint`]), kept as the one
//! message of subject `BUCKET.KEY` in a small JetStream stream (what a
//! JetStream key-value bucket is underneath; the client's KV API does not
//! speak to Debian's nats-server 2.9, so [`LeaseStore`] does the two
//! operations itself). A write is a compare-and-set on the entry's
//! revision (`Nats-Expected-Last-Subject-Sequence`).
//!
//! The owner renews every cycle (at least every third of `lease_ttl`) and
//! stops writing once two thirds of the TTL passed since its last
//! successful renewal was sent. A standby takes the lease over only after
//! it has seen the same revision for a whole TTL by its own clock, so the
//! owner has stopped a third of a TTL before anyone else may start: no
//! clock is compared across hosts. The value also carries the owner's
//! last commit, so a new owner skips what the old one wrote and cuts off
//! what it wrote after that commit. A clean stop hands the lease back (owner `""`), and a standby
//! takes a free lease at once.

use std::time::Duration;

use async_nats::jetstream::{self, context::PublishErrorKind, stream};
use base64::Engine as _;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::escape::esc;
use crate::ratelimit::RateLimit;
use crate::rotation::state::Checkpoint;

/// The lease's value.
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    /// The owning writer's `[consume] name`; `""` when handed back.
    owner: String,
    /// The owner's last commit.
    #[serde(flatten)]
    commit: Checkpoint,
}

/// The lease entries: one stream, one subject per lease, one message kept
/// per subject.
#[derive(Debug, Clone)]
pub(crate) struct LeaseStore {
    js: jetstream::Context,
    client: async_nats::Client,
    /// The stream's name (`[consume] lease_bucket`).
    bucket: String,
}

/// An entry as read: its revision (the stream sequence) and value.
struct Entry {
    revision: u64,
    value: Vec<u8>,
}

/// Why a write failed.
#[derive(Debug)]
enum WriteError {
    /// The entry changed since the revision given: someone else wrote.
    Conflict,
    /// The broker did not answer, or refused for another reason.
    Other(String),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::Conflict => f.write_str("the lease changed (another writer holds it)"),
            WriteError::Other(e) => f.write_str(e),
        }
    }
}

/// The answer to `$JS.API.STREAM.MSG.GET`.
#[derive(Deserialize)]
struct GetReply {
    message: Option<GetMessage>,
    error: Option<GetError>,
}

#[derive(Deserialize)]
struct GetMessage {
    seq: u64,
    #[serde(default)]
    data: String,
}

#[derive(Deserialize)]
struct GetError {
    code: u16,
    #[serde(default)]
    description: String,
}

// === impl LeaseStore ===

impl LeaseStore {
    /// Finds the lease stream, creating it when missing.
    ///
    /// # Errors
    /// The broker does not answer or refuses the stream.
    pub(crate) async fn open(
        client: async_nats::Client,
        js: jetstream::Context,
        bucket: &str,
        replicas: usize,
    ) -> anyhow::Result<LeaseStore> {
        js.get_or_create_stream(stream::Config {
            name: bucket.to_owned(),
            subjects: vec![format!("{bucket}.>")],
            max_messages_per_subject: 1,
            discard: stream::DiscardPolicy::Old,
            storage: stream::StorageType::File,
            num_replicas: replicas,
            description: Some("loghogd partition leases".to_owned()),
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("lease stream {bucket}: {e}"))?;
        Ok(LeaseStore {
            js,
            client,
            bucket: bucket.to_owned(),
        })
    }

    fn subject(&self, key: &str) -> String {
        format!("{}.{key}", self.bucket)
    }

    /// The entry of `key`, `None` when there is none.
    async fn get(&self, key: &str) -> anyhow::Result<Option<Entry>> {
        let body = serde_json::json!({ "last_by_subj": self.subject(key) }).to_string();
        let reply = self
            .client
            .request(
                format!("$JS.API.STREAM.MSG.GET.{}", self.bucket),
                body.into(),
            )
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        let r: GetReply = serde_json::from_slice(&reply.payload)
            .map_err(|e| anyhow::anyhow!("unreadable answer: {e}"))?;
        if let Some(e) = r.error {
            if e.code == 404 {
                return Ok(None);
            }
            anyhow::bail!("{} ({})", e.description, e.code);
        }
        let Some(m) = r.message else {
            return Ok(None);
        };
        let value = base64::engine::general_purpose::STANDARD
            .decode(m.data.as_bytes())
            .map_err(|e| anyhow::anyhow!("unreadable value: {e}"))?;
        Ok(Some(Entry {
            revision: m.seq,
            value,
        }))
    }

    /// Writes `value` to `key` if its revision is still `expect` (0: if
    /// it has none); returns the new revision.
    async fn put(&self, key: &str, value: bytes::Bytes, expect: u64) -> Result<u64, WriteError> {
        let mut headers = async_nats::HeaderMap::new();
        headers.insert(
            "Nats-Expected-Last-Subject-Sequence",
            expect.to_string().as_str(),
        );
        let ack = self
            .js
            .publish_with_headers(self.subject(key), headers, value)
            .await
            .map_err(|e| WriteError::Other(e.to_string()))?
            .await;
        match ack {
            Ok(a) => Ok(a.sequence),
            Err(e) if matches!(e.kind(), PublishErrorKind::WrongLastSequence) => {
                Err(WriteError::Conflict)
            }
            Err(e) => Err(WriteError::Other(e.to_string())),
        }
    }
}

/// A partition lease this writer holds.
#[derive(Debug)]
pub(crate) struct Lease {
    /// The KV key (`STREAM.pN`).
    key: String,
    /// This writer's name.
    me: String,
    /// The entry's revision after our last write: the next CAS expects it.
    rev: u64,
    /// The last commit, as the value says.
    pub(crate) commit: Checkpoint,
    /// Until when this writer may write (two thirds of the TTL after the
    /// last successful renewal was sent).
    valid_until: Instant,
    /// `[consume] lease_ttl`.
    ttl: Duration,
    /// When the last renewal was sent successfully.
    renewed: Instant,
}

fn encode(owner: &str, commit: &Checkpoint) -> bytes::Bytes {
    let v = Value {
        owner: owner.to_owned(),
        commit: commit.clone(),
    };
    serde_json::to_vec(&v).unwrap_or_default().into()
}

fn decode(bytes: &[u8]) -> Option<Value> {
    serde_json::from_slice(bytes).ok()
}

/// Waits until this writer holds the lease `key`, or `stop` is cancelled
/// (`None`). `local_seq` is the writer's own record of what it wrote (a
/// lease value that cannot be read falls back to it).
pub(crate) async fn acquire(
    kv: &LeaseStore,
    key: &str,
    me: &str,
    ttl: Duration,
    stop: &CancellationToken,
    limiter: &RateLimit,
) -> Option<Lease> {
    let poll = (ttl / 6).max(Duration::from_millis(100));
    // The revision of another owner's lease and when we first saw it.
    let mut watching: Option<(u64, Instant)> = None;
    loop {
        let sent = Instant::now();
        let attempt = match kv.get(key).await {
            Ok(None) => {
                let commit = Checkpoint::default();
                kv.put(key, encode(me, &commit), 0)
                    .await
                    .ok()
                    .map(|rev| (rev, commit))
            }
            Ok(Some(e)) => {
                let value = decode(&e.value);
                let owner = value.as_ref().map_or("", |v| v.owner.as_str()).to_owned();
                let commit = value.map(|v| v.commit).unwrap_or_default();
                let free = owner.is_empty() || owner == me;
                let stale = match watching {
                    Some((rev, since)) if rev == e.revision => since.elapsed() >= ttl,
                    _ => {
                        watching = Some((e.revision, Instant::now()));
                        false
                    }
                };
                if free || stale {
                    if stale {
                        warn!(lease = key, owner = %esc(&owner), "taking over a partition whose owner stopped renewing");
                    }
                    kv.put(key, encode(me, &commit), e.revision)
                        .await
                        .ok()
                        .map(|rev| (rev, commit))
                } else {
                    None
                }
            }
            Err(err) => {
                if let Some(suppressed) = limiter.check() {
                    warn!(lease = key, cause = %err, suppressed, "cannot read the partition lease");
                }
                None
            }
        };
        if let Some((rev, commit)) = attempt {
            return Some(Lease {
                key: key.to_owned(),
                me: me.to_owned(),
                rev,
                commit,
                valid_until: sent + ttl * 2 / 3,
                ttl,
                renewed: sent,
            });
        }
        tokio::select! {
            () = tokio::time::sleep(poll) => {}
            () = stop.cancelled() => return None,
        }
    }
}

// === impl Lease ===

impl Lease {
    /// Whether this writer may still write.
    pub(crate) fn is_valid(&self) -> bool {
        Instant::now() < self.valid_until
    }

    /// Whether a renewal is due (a third of the TTL since the last).
    pub(crate) fn renewal_due(&self) -> bool {
        self.renewed.elapsed() >= self.ttl / 3
    }

    /// Renews the lease and records `commit` as the last. `false` when the
    /// renewal failed: the lease may still be valid for a while (a broker
    /// hiccup), or be gone for good (someone took it: the CAS failed).
    pub(crate) async fn renew(&mut self, kv: &LeaseStore, commit: &Checkpoint) -> bool {
        let sent = Instant::now();
        match kv.put(&self.key, encode(&self.me, commit), self.rev).await {
            Ok(rev) => {
                self.rev = rev;
                if &self.commit != commit {
                    self.commit = commit.clone();
                }
                self.renewed = sent;
                self.valid_until = sent + self.ttl * 2 / 3;
                true
            }
            Err(err) => {
                if matches!(err, WriteError::Conflict) {
                    // Taken over: never write again under this lease.
                    self.valid_until = Instant::now();
                }
                warn!(lease = %self.key, cause = %err, "partition lease renewal failed");
                false
            }
        }
    }

    /// Hands the lease back at a clean stop, keeping the last commit, so a
    /// standby takes over at once.
    pub(crate) async fn release(self, kv: &LeaseStore) {
        if let Err(err) = kv.put(&self.key, encode("", &self.commit), self.rev).await {
            warn!(lease = %self.key, cause = %err, "cannot hand the partition lease back; a standby takes it after the TTL");
        }
    }
}
