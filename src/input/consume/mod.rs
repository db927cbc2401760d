//! The broker consumer (issue 16): a consumer is an input like a socket.
//! For every partition it may own (`[consume] partitions_owned`) a task
//! waits for the partition's [`lease`], then reads the partition's blocks
//! from JetStream through a durable pull consumer, routes their records
//! through an ordinary [`Router`] (this daemon's facilities, rotation and
//! compression; never the forward output) and commits each cycle in this
//! order: lines written and fdatasynced → the commit (stream sequence, and
//! where each of the partition's files ends: [`Checkpoint`]) saved in the
//! rotation state → lease renewed carrying that commit → acknowledged
//! (each block). A block already written (seq at or below the commit) is
//! acknowledged and skipped, so a redelivery after a crash or a take-over
//! writes nothing twice. Lines an owner wrote after its last commit (it
//! was SIGKILLed between writing and committing) are cut off the files by
//! whoever owns the partition next, before it writes them again
//! ([`cut_back`]); a block that cannot be decoded is counted and skipped
//! and never holds its partition up.

pub(crate) mod lease;

use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures_util::StreamExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::broker::codec::decode_block;
use crate::broker::nats::{connect, ensure_stream, subject};
use crate::config::ConsumeSection;
use crate::escape::esc;
use crate::output::file::mark::{self, Cut, Marked};
use crate::output::file::Command;
use crate::ratelimit::RateLimit;
use crate::record::{Auth, Record, Transport};
use crate::rotation::state::Checkpoint;
use crate::rotation::StateDb;
use crate::router::{Router, RouterCtx};
use crate::stats::Stats;
use lease::{Lease, LeaseStore};

/// How long a JetStream message may stay unacknowledged before the
/// server delivers it again (only matters if a writer hangs: a take-over
/// recreates the consumer and gets everything unacknowledged at once).
const ACK_WAIT: Duration = Duration::from_secs(60);

/// How much longer than its own wait a fetch may take before it counts as
/// failed.
const FETCH_SLACK: Duration = Duration::from_secs(5);

/// Failed fetches in a row after which the consumer is made afresh.
const FETCH_FAILURES: u32 = 3;

/// Most files a partition's commit lists (the least recently written are
/// dropped beyond it: such a file is not cut back at a take-over, so at
/// worst its last uncommitted cycle is written twice, never lost).
const MAX_MARKS: usize = 1024;

/// What every partition task shares.
struct Shared {
    section: ConsumeSection,
    /// The connection: its connect count tells a partition that deliveries
    /// may have been lost in flight.
    client: async_nats::Client,
    js: jetstream::Context,
    kv: LeaseStore,
    /// Routes to this daemon's files only (its outputs have no forward).
    router: Arc<RouterCtx>,
    state: Arc<Mutex<StateDb>>,
    stats: Arc<Stats>,
    limiter: RateLimit,
    stop: CancellationToken,
}

/// Connects and starts one task per partition this writer may own, in
/// `tracker`; they end when `stop` is cancelled, handing their leases back.
///
/// # Errors
/// The credentials or NKey file cannot be read.
pub(crate) async fn start(
    section: &ConsumeSection,
    router: Arc<RouterCtx>,
    state: Arc<Mutex<StateDb>>,
    stats: Arc<Stats>,
    stop: CancellationToken,
    tracker: &TaskTracker,
) -> anyhow::Result<()> {
    let client = connect(&section.conn, &format!("loghogd-consume-{}", section.name)).await?;
    let js = jetstream::new(client.clone());
    let section = section.clone();
    let tracker2 = tracker.clone();
    info!(servers = ?section.conn.servers, stream = %section.stream.stream, partitions = ?section.owned, name = %section.name, "consuming from the broker");
    tracker.spawn(async move {
        // The stream and the lease bucket, retried until the broker answers.
        let mut backoff = Duration::from_millis(200);
        let kv = loop {
            let ready = async {
                ensure_stream(&js, &section.stream).await?;
                LeaseStore::open(
                    client.clone(),
                    js.clone(),
                    &section.lease_bucket,
                    section.stream.replicas,
                )
                .await
            };
            tokio::select! {
                r = ready => match r {
                    Ok(kv) => break kv,
                    Err(e) => warn!(cause = %e, "consume: the broker is not ready; retrying"),
                },
                () = stop.cancelled() => return,
            }
            tokio::select! {
                () = tokio::time::sleep(backoff) => {}
                () = stop.cancelled() => return,
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        };
        let shared = Arc::new(Shared {
            section,
            client,
            js,
            kv,
            router,
            state,
            stats,
            limiter: RateLimit::new(10, Duration::from_secs(10)),
            stop,
        });
        for &p in &shared.section.owned {
            tracker2.spawn(partition_loop(shared.clone(), p));
        }
    });
    Ok(())
}

/// Why owning a partition ended.
enum Ended {
    /// The daemon is stopping: hand the lease back.
    Stopped,
    /// The lease was lost or could not be renewed in time.
    Lost,
    /// The partition's consumer must be made afresh (the lease is still
    /// ours: take it again at once): it stopped answering (a broker
    /// restart or a leader change can leave a pull request unanswered), or
    /// the connection was re-made, and a block delivered into the old one
    /// would come again only after the ack wait, behind later blocks.
    Stuck(&'static str),
}

/// Waits for partition `p`'s lease, writes while it holds it, and waits
/// again after losing it.
async fn partition_loop(sh: Arc<Shared>, p: u32) {
    let key = format!("{}.p{p}", sh.section.stream.stream);
    loop {
        let Some(mut lease) = lease::acquire(
            &sh.kv,
            &key,
            &sh.section.name,
            sh.section.lease_ttl,
            &sh.stop,
            &sh.limiter,
        )
        .await
        else {
            return;
        };
        sh.stats.consume_owned_partitions.fetch_add(1, Relaxed);
        info!(partition = p, seq = lease.commit.seq, "owns partition");
        let ended = own(&sh, p, &mut lease).await;
        sh.stats.consume_owned_partitions.fetch_sub(1, Relaxed);
        if let Ok(mut lag) = sh.stats.consume_lag_by.lock() {
            if let Some(l) = lag.remove(&p) {
                sh.stats.consume_lag_messages.fetch_sub(l, Relaxed);
            }
        }
        match ended {
            Ended::Stopped => {
                lease.release(&sh.kv).await;
                info!(partition = p, "handed partition back");
                return;
            }
            Ended::Stuck(why) => {
                warn!(partition = p, "{why}; making a fresh consumer");
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(200)) => {}
                    () = sh.stop.cancelled() => return,
                }
            }
            Ended::Lost => {
                warn!(
                    partition = p,
                    "lost partition lease; writing nothing more to it"
                );
                tokio::select! {
                    () = tokio::time::sleep(sh.section.lease_ttl / 3) => {}
                    () = sh.stop.cancelled() => return,
                }
            }
        }
    }
}

/// Writes partition `p` while `lease` is valid.
async fn own(sh: &Shared, p: u32, lease: &mut Lease) -> Ended {
    let state_key = format!("{}/{p}", sh.section.stream.stream);
    let local = lock(&sh.state).partition(&state_key);
    // The newest commit: ours (we wrote last, or crashed between saving it
    // and renewing the lease) or the lease's (someone wrote after us).
    let mut commit = if local.seq >= lease.commit.seq {
        local
    } else {
        lease.commit.clone()
    };
    cut_back(sh, p, &commit).await;
    let mut touched: std::collections::HashMap<String, u64> =
        commit.files.keys().map(|k| (k.clone(), 0)).collect();
    let mut cycle = 0u64;
    let mut marks = Vec::new();
    // Taken before the consumer is made: a reconnect from here on counts.
    let epoch = connects(&sh.client);
    let consumer = loop {
        match fresh_consumer(sh, p).await {
            Ok((c, last)) => {
                if last < commit.seq {
                    // The stream lost its tail (a single node killed before
                    // it wrote out what it had stored): it gives those
                    // sequences again, to new records, which must not be
                    // skipped as written.
                    warn!(
                        partition = p,
                        written = commit.seq,
                        stream_last = last,
                        "the stream ends before what this partition wrote; its sequences are used again"
                    );
                    commit.seq = last;
                }
                break c;
            }
            Err(e) => {
                if let Some(suppressed) = sh.limiter.check() {
                    warn!(partition = p, cause = %e, suppressed, "cannot create the partition's consumer; retrying");
                }
            }
        }
        if !renew_if_due(sh, lease, &commit).await {
            return Ended::Lost;
        }
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
            () = sh.stop.cancelled() => return Ended::Stopped,
        }
    };
    let mut router = Router::new(
        sh.router.clone(),
        IpAddr::V4(Ipv4Addr::UNSPECIFIED),
        Transport::Broker,
    );
    let wait = (sh.section.lease_ttl / 3).min(Duration::from_secs(1));
    let mut failures = 0u32;
    loop {
        if sh.stop.is_cancelled() {
            return Ended::Stopped;
        }
        if !lease.is_valid() {
            return Ended::Lost;
        }
        // Bounded: a pull request the server never answers must not hold
        // the partition up for ever.
        let fetched = tokio::time::timeout(
            wait + FETCH_SLACK,
            next_messages(&consumer, sh.section.fetch_batch, wait),
        )
        .await
        .unwrap_or_else(|_| Err(anyhow::anyhow!("no answer within {:?}", wait + FETCH_SLACK)));
        let msgs = match fetched {
            Ok(m) => {
                failures = 0;
                m
            }
            Err(e) => {
                if let Some(suppressed) = sh.limiter.check() {
                    warn!(partition = p, cause = %e, suppressed, "consume: fetch failed");
                }
                failures += 1;
                if failures >= FETCH_FAILURES {
                    settle(&mut router, &mut marks).await;
                    return Ended::Stuck("the partition's consumer does not answer");
                }
                if !renew_if_due(sh, lease, &commit).await {
                    return Ended::Lost;
                }
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_millis(500)) => {}
                    () = sh.stop.cancelled() => return Ended::Stopped,
                }
                continue;
            }
        };
        if connects(&sh.client) != epoch {
            // Blocks the server sent into the old connection count as
            // delivered and come again only after ACK_WAIT; writing later
            // ones first would reorder (and skip) them. And a restarted
            // server may keep a consumer whose position is past what the
            // stream kept. Nothing of this fetch is written or
            // acknowledged: a fresh consumer delivers from the oldest
            // unacknowledged block, in order.
            settle(&mut router, &mut marks).await;
            return Ended::Stuck("the broker connection was made again");
        }
        if msgs.is_empty() {
            if !renew_if_due(sh, lease, &commit).await {
                return Ended::Lost;
            }
            continue;
        }
        let mut upto = commit.seq;
        let mut pending = 0;
        router.begin_chunk();
        for m in &msgs {
            let Ok(info) = m.info() else {
                sh.stats.consume_poison.fetch_add(1, Relaxed);
                continue;
            };
            let seq = info.stream_sequence;
            pending = info.pending;
            if seq <= commit.seq {
                sh.stats.consume_redeliveries.fetch_add(1, Relaxed);
                continue;
            }
            route_block(sh, p, seq, &m.payload, &mut router).await;
            upto = upto.max(seq);
        }
        if !lease.is_valid() {
            settle(&mut router, &mut marks).await;
            return Ended::Lost;
        }
        router.flush().await;
        // Written and synced before the position is recorded.
        while !router.sync(&mut marks).await {
            if !renew_if_due(sh, lease, &commit).await || !lease.is_valid() {
                settle(&mut router, &mut marks).await;
                return Ended::Lost;
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        if upto > commit.seq {
            cycle += 1;
            let mut next = commit.clone();
            next.seq = upto;
            note_marks(
                sh,
                &mut next,
                &mut touched,
                std::mem::take(&mut marks),
                cycle,
            );
            if let Err(e) = save_position(sh, &state_key, &next).await {
                // Not acknowledged: the blocks come again and are written
                // again once the state can be saved (cut back first by
                // the next owner, or by us after a restart). Writing
                // lines twice is better than claiming a position not on disk.
                warn!(partition = p, cause = %e, "cannot save the partition position; not acknowledging");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
            commit = next;
        }
        if !lease.renew(&sh.kv, &commit).await && !lease.is_valid() {
            return Ended::Lost;
        }
        // Work-queue streams need every message acknowledged (AckAll is
        // refused); an ack is one small publish, per block, not per record.
        for m in &msgs {
            if let Err(e) = m.ack().await {
                if let Some(suppressed) = sh.limiter.check() {
                    warn!(partition = p, cause = %e, suppressed, "consume: ack failed (the block comes again and is skipped)");
                }
                break;
            }
        }
        set_lag(&sh.stats, p, pending);
    }
}

/// Before giving a lost partition up: every line routed so far is handed
/// to its file and written, so none lands after the next owner cut the
/// files back to the last commit.
async fn settle(router: &mut Router, marks: &mut Vec<Marked>) {
    router.flush().await;
    let _ = router.sync(marks).await;
}

/// Puts the files' ends after this cycle into `next` (paths relative to
/// the log directory); keeps at most [`MAX_MARKS`], dropping the files
/// written least recently.
fn note_marks(
    sh: &Shared,
    next: &mut Checkpoint,
    touched: &mut std::collections::HashMap<String, u64>,
    marks: Vec<Marked>,
    cycle: u64,
) {
    let logdir = sh.router.outputs.files.logdir();
    for m in marks {
        let Some(rel) = m.path.strip_prefix(logdir).ok().and_then(|r| r.to_str()) else {
            continue;
        };
        next.files.insert(rel.to_owned(), m.mark);
        touched.insert(rel.to_owned(), cycle);
    }
    if next.files.len() > MAX_MARKS {
        let mut by_age: Vec<(u64, String)> = touched.iter().map(|(k, &c)| (c, k.clone())).collect();
        by_age.sort_unstable();
        for (_, k) in by_age.into_iter().take(next.files.len() - MAX_MARKS) {
            next.files.remove(&k);
            touched.remove(&k);
        }
    }
}

/// Cuts each file of `commit` back to where it ended at that commit: what
/// is past it was written by an owner that died before committing it, and
/// comes again from the stream. Writers of this daemon that have one of
/// those files open reopen it, so they take its new size.
async fn cut_back(sh: &Shared, p: u32, commit: &Checkpoint) {
    if commit.files.is_empty() {
        return;
    }
    let logdir = sh.router.outputs.files.logdir().to_path_buf();
    let files: Vec<(std::path::PathBuf, mark::Mark)> = commit
        .files
        .iter()
        .map(|(rel, m)| (logdir.join(rel), *m))
        .collect();
    let job = tokio::task::spawn_blocking(move || {
        files
            .into_iter()
            .map(|(path, m)| {
                let r = mark::cut_back(&logdir, &path, m);
                (path, r)
            })
            .collect::<Vec<_>>()
    });
    let Ok(results) = job.await else {
        return;
    };
    let open = sh.router.outputs.files.all();
    for (path, r) in results {
        match r {
            Ok(Cut::Shortened(bytes)) => {
                warn!(partition = p, path = %esc(&path.display().to_string()), bytes, "cut off lines written after the partition's last commit (they are written again from the stream)");
                if let Some((_, tx)) = open.iter().find(|(q, _)| q == &path) {
                    let _ = tx.send(Command::Reopen).await;
                }
            }
            Ok(Cut::Nothing) => {}
            Ok(Cut::Differs) => {
                info!(partition = p, path = %esc(&path.display().to_string()), "file changed since the partition's last commit (rotated?); not cut back");
            }
            Err(e) => {
                warn!(partition = p, path = %esc(&path.display().to_string()), cause = %e, "cannot check the file against the partition's last commit");
            }
        }
    }
}

/// Routes the records of one block; an undecodable block or record is
/// counted and skipped.
async fn route_block(sh: &Shared, p: u32, seq: u64, payload: &[u8], router: &mut Router) {
    let records = match decode_block(payload) {
        Ok(r) => r,
        Err(e) => {
            sh.stats.consume_poison.fetch_add(1, Relaxed);
            if let Some(suppressed) = sh.limiter.check() {
                warn!(partition = p, seq, cause = %e, suppressed, "consume: undecodable block skipped");
            }
            return;
        }
    };
    let mut n = 0u64;
    for rec in records {
        let rec = match rec {
            Ok(r) => r,
            Err(e) => {
                sh.stats.consume_poison.fetch_add(1, Relaxed);
                if let Some(suppressed) = sh.limiter.check() {
                    warn!(partition = p, seq, cause = %e, suppressed, "consume: undecodable record skipped");
                }
                continue;
            }
        };
        router.set_received(rec.received_micros);
        router.route(&Record {
            app_id: rec.app_id,
            module: rec.module,
            host: Some(rec.host),
            body: rec.body,
            auth: Auth::Forwarded,
            syslog: rec.syslog.as_ref(),
        });
        n += 1;
        if router.needs_flush() {
            router.flush().await;
        }
    }
    sh.stats.consume_written_records.fetch_add(n, Relaxed);
}

/// Renews the lease when a renewal is due; `false` when it is no longer
/// valid.
async fn renew_if_due(sh: &Shared, lease: &mut Lease, commit: &Checkpoint) -> bool {
    if lease.renewal_due() {
        lease.renew(&sh.kv, commit).await;
    }
    lease.is_valid()
}

/// Deletes and recreates the partition's durable consumer, so everything
/// not yet acknowledged is delivered now, in stream order (not after the
/// old owner's messages time out). Also returns the stream's last
/// sequence as the stream said it just before.
async fn fresh_consumer(sh: &Shared, p: u32) -> anyhow::Result<(consumer::PullConsumer, u64)> {
    let stream = sh
        .js
        .get_stream(&sh.section.stream.stream)
        .await
        .map_err(|e| anyhow::anyhow!("stream {}: {e}", sh.section.stream.stream))?;
    let last = stream.cached_info().state.last_sequence;
    let name = format!("loghogd-p{p}");
    let _ = stream.delete_consumer(&name).await;
    let c = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(name.clone()),
            filter_subject: subject(&sh.section.stream, p),
            ack_policy: consumer::AckPolicy::Explicit,
            deliver_policy: consumer::DeliverPolicy::All,
            ack_wait: ACK_WAIT,
            max_ack_pending: -1,
            ..Default::default()
        })
        .await
        .map_err(|e| anyhow::anyhow!("consumer {name}: {e}"))?;
    Ok((c, last))
}

/// How many times the client has connected (the first time included).
fn connects(client: &async_nats::Client) -> u64 {
    client.statistics().connects.load(Relaxed)
}

/// What is there now, up to `max` messages; when nothing is, waits up to
/// `wait` for one.
async fn next_messages(
    c: &consumer::PullConsumer,
    max: usize,
    wait: Duration,
) -> anyhow::Result<Vec<jetstream::Message>> {
    let mut out = Vec::new();
    let mut batch = c.fetch().max_messages(max).messages().await?;
    while let Some(m) = batch.next().await {
        out.push(m.map_err(|e| anyhow::anyhow!("{e}"))?);
    }
    if out.is_empty() {
        let mut batch = c.batch().max_messages(1).expires(wait).messages().await?;
        while let Some(m) = batch.next().await {
            out.push(m.map_err(|e| anyhow::anyhow!("{e}"))?);
        }
    }
    Ok(out)
}

/// Records `commit` for partition `key` and saves the state now.
async fn save_position(sh: &Shared, key: &str, commit: &Checkpoint) -> std::io::Result<()> {
    let state = sh.state.clone();
    let key = key.to_owned();
    let commit = commit.clone();
    tokio::task::spawn_blocking(move || {
        let mut s = lock(&state);
        s.set_partition(&key, &commit);
        s.save()
    })
    .await
    .map_err(std::io::Error::other)?
}

fn set_lag(stats: &Stats, p: u32, pending: u64) {
    if let Ok(mut lag) = stats.consume_lag_by.lock() {
        let old = lag.insert(p, pending).unwrap_or(0);
        stats.consume_lag_messages.fetch_add(pending, Relaxed);
        stats.consume_lag_messages.fetch_sub(old, Relaxed);
    }
}

fn lock(state: &Mutex<StateDb>) -> std::sync::MutexGuard<'_, StateDb> {
    state.lock().unwrap_or_else(|e| e.into_inner())
}
