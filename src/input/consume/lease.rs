//! Partition ownership for the broker consumer (issue 16): a lease per
//! partition in a JetStream key-value bucket, value
//! `{"owner":NAME,"seq":LAST_WRITTEN}`, changed only by compare-and-set on
//! the entry's revision.
//!
//! The owner renews every cycle (at least every third of `lease_ttl`) and
//! stops writing once two thirds of the TTL passed since its last
//! successful renewal was sent. A standby takes the lease over only after
//! it has seen the same revision for a whole TTL by its own clock, so the
//! owner has stopped a third of a TTL before anyone else may start: no
//! clock is compared across hosts. The value also carries the owner's
//! last written stream sequence, so a new owner skips what the old one
//! wrote. A clean stop hands the lease back (owner `""`), and a standby
//! takes a free lease at once.

use std::time::Duration;

use async_nats::jetstream::kv;
use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::escape::esc;
use crate::ratelimit::RateLimit;

/// The lease's value.
#[derive(Debug, Serialize, Deserialize)]
struct Value {
    /// The owning writer's `[consume] name`; `""` when handed back.
    owner: String,
    /// The last stream sequence whose lines the owner has written.
    seq: u64,
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
    /// The sequence the value says is written.
    pub(crate) seq: u64,
    /// Until when this writer may write (two thirds of the TTL after the
    /// last successful renewal was sent).
    valid_until: Instant,
    /// `[consume] lease_ttl`.
    ttl: Duration,
    /// When the last renewal was sent successfully.
    renewed: Instant,
}

fn encode(owner: &str, seq: u64) -> bytes::Bytes {
    let v = Value {
        owner: owner.to_owned(),
        seq,
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
    kv: &kv::Store,
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
        let attempt = match kv.entry(key).await {
            Ok(None) => kv
                .create(key, encode(me, 0))
                .await
                .ok()
                .map(|rev| (rev, 0)),
            Ok(Some(e)) => {
                let value = match e.operation {
                    kv::Operation::Put => decode(&e.value),
                    kv::Operation::Delete | kv::Operation::Purge => None,
                };
                let seq = value.as_ref().map_or(0, |v| v.seq);
                let free = value
                    .as_ref()
                    .is_none_or(|v| v.owner.is_empty() || v.owner == me);
                let stale = match watching {
                    Some((rev, since)) if rev == e.revision => since.elapsed() >= ttl,
                    _ => {
                        watching = Some((e.revision, Instant::now()));
                        false
                    }
                };
                if free || stale {
                    if stale {
                        let owner = value.as_ref().map_or("", |v| v.owner.as_str());
                        warn!(lease = key, owner = %esc(owner), "taking over a partition whose owner stopped renewing");
                    }
                    kv.update(key, encode(me, seq), e.revision)
                        .await
                        .ok()
                        .map(|rev| (rev, seq))
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
        if let Some((rev, seq)) = attempt {
            return Some(Lease {
                key: key.to_owned(),
                me: me.to_owned(),
                rev,
                seq,
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

    /// Renews the lease and records `seq` as written. `false` when the
    /// renewal failed: the lease may still be valid for a while (a broker
    /// hiccup), or be gone for good (someone took it: the CAS failed).
    pub(crate) async fn renew(&mut self, kv: &kv::Store, seq: u64) -> bool {
        let sent = Instant::now();
        match kv.update(&self.key, encode(&self.me, seq), self.rev).await {
            Ok(rev) => {
                self.rev = rev;
                self.seq = seq;
                self.renewed = sent;
                self.valid_until = sent + self.ttl * 2 / 3;
                true
            }
            Err(err) => {
                if matches!(err.kind(), kv::UpdateErrorKind::WrongLastRevision) {
                    // Taken over: never write again under this lease.
                    self.valid_until = Instant::now();
                }
                warn!(lease = %self.key, cause = %err, "partition lease renewal failed");
                false
            }
        }
    }

    /// Hands the lease back at a clean stop, keeping the written sequence,
    /// so a standby takes over at once.
    pub(crate) async fn release(self, kv: &kv::Store) {
        if let Err(err) = kv.update(&self.key, encode("", self.seq), self.rev).await {
            warn!(lease = %self.key, cause = %err, "cannot hand the partition lease back; a standby takes it after the TTL");
        }
    }
}
