//! Replicate: repository → repository. Copies snapshots, ref entries and only the chunks the
//! target lacks, as stored frames (verified on the way, never recompressed).
//!
//! A sharded replication (`--shard I/N --run ID`) splits the chunks by id: every shard adopts
//! the run's plan (written once to the target), copies the chunks it owns, records that it is
//! done, and whoever sees every shard done writes the snapshots and moves the refs, each entry
//! exactly once (`Repository::advance_ref_once`).

use std::collections::HashSet;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::app::RunId;
use crate::ids::{ChunkId, SnapshotId};
use crate::index::{Index, RepoIndex};
use crate::ops::fetch::{fetch, locate, plan, Want};
use crate::ops::ref_log::ref_log;
use crate::ops::shard::Shard;
use crate::ops::sync::{check_not_marked, sync_index};
use crate::ops::uploader::{PackUploader, UploadStats};
use crate::ops::OpError;
use crate::progress::Reporter;
use crate::repo::config::DELTA_VERSION;
use crate::repo::replicas::{PlannedRef, ReplicaPlan, ReplicaPointer};
use crate::repo::Repository;

/// One shard of a sharded replication: copies the chunks `shard` owns for run `run`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaShard {
    pub shard: Shard,
    pub run: RunId,
}

/// What one shard of a sharded replication found and did.
#[derive(Debug, Clone, Serialize)]
pub struct ReplicaShardReport {
    pub run: String,
    pub shard: Shard,
    /// Distinct chunks of the planned snapshots this shard owns, copied now or already there.
    pub chunks_owned: u64,
    /// Shards of the run that have not finished yet.
    pub missing: Vec<u32>,
    /// True once the run is committed (by this process or another).
    pub committed: bool,
}

/// What a replication copied.
#[derive(Debug, Serialize)]
pub struct ReplicateReport {
    pub from: String,
    pub to: String,
    pub refs: Vec<String>,
    pub snapshots_copied: u64,
    pub chunks_copied: u64,
    pub bytes_downloaded: u64,
    /// Copied chunks that are element deltas, copied as they are stored (none into a
    /// repository older than the delta format, which gets them whole; not forecast by a dry
    /// run).
    pub chunks_delta: u64,
    /// What the copied delta frames saved, estimated: for each, the stored size of the full
    /// frame its chain rests on (the same tensor range in an earlier step) minus its own.
    pub bytes_saved_by_deltas: u64,
    #[serde(flatten)]
    pub upload: UploadStats,
    /// Ref log entries this process appended in the target.
    pub refs_advanced: u64,
    /// The two repositories are sealed differently (plain ↔ encrypted, or two data keys):
    /// every chunk was read, named and sealed anew for the target, as a full frame.
    pub resealed: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ReplicaShardReport>,
    pub duration_secs: f64,
    /// A dry run (`--dry-run`): nothing was written; the counts above are the forecast.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<crate::ops::egress::DryRun>,
}

/// Copies the refs `names` (all refs when empty) from `from` to `to`; with `sharded`, only
/// the chunks that shard owns, committing the run when every shard is done. Between
/// repositories sealed differently (plain ↔ encrypted, or two data keys) every chunk is
/// re-sealed instead (`ops::reseal`; not sharded).
pub async fn replicate(
    from: &Repository,
    to: &Repository,
    names: &[String],
    index: &Index,
    progress: &Reporter,
    sharded: Option<&ReplicaShard>,
) -> Result<ReplicateReport, OpError> {
    let started = Instant::now();
    if from.config().chunker == to.config().chunker
        && !from.sealing().same_as(to.sealing())
        && sharded.is_none()
    {
        return crate::ops::reseal::replicate_resealed(from, to, names, index, progress).await;
    }
    crate::ops::targets::check_alike(from, to)?;
    let from_index = index.repo(from.id())?;
    let to_index = index.repo(to.id())?;
    sync_index(from, &from_index).await?;
    let to_presence = sync_index(to, &to_index).await?;

    let plans = match sharded {
        None => plan_refs(from, to, names, (&from_index, &to_index)).await?,
        Some(s) => adopt_plan(from, to, names, (&from_index, &to_index), s).await?,
    };
    // Nothing planned (the common run of a schedule): no listing of the target's snapshots.
    let present: HashSet<SnapshotId> = if plans.iter().all(|p| p.snapshots.is_empty()) {
        HashSet::new()
    } else {
        to.list_snapshots().await?.into_iter().collect()
    };
    let wanted = wanted_snapshots(&plans, &present);

    let owns = |c: &ChunkId| sharded.is_none_or(|s| s.shard.owns_chunk(c));
    let mut uploader =
        PackUploader::new(to.clone(), to_index.clone(), 2).avoiding(to_presence.gc_marked());
    let mut sent: HashSet<ChunkId> = HashSet::new();
    let mut owned: HashSet<ChunkId> = HashSet::new();
    let mut copied = Copied::default();
    let mut snapshots = Vec::new();
    let mut referenced = HashSet::new();
    for id in &wanted {
        let bytes = from.read_snapshot_bytes(id).await?;
        let snap = from.decode_snapshot(id, &bytes)?;
        let mut need = Vec::new();
        referenced.extend(snap.chunks().map(|c| c.0));
        for c in snap.chunks().filter(|c| owns(&c.0)) {
            owned.insert(c.0);
            if !sent.contains(&c.0) && !to_presence.has(&c.0)? {
                sent.insert(c.0);
                need.push(c.0);
            }
        }
        let mut lacks = |c: &ChunkId| -> Result<bool, OpError> {
            Ok(!sent.contains(c) && !to_presence.has(c)? && sent.insert(*c))
        };
        let round = (&mut uploader, &mut copied);
        copy_chunks(from, &from_index, need, round, &mut lacks, progress).await?;
        snapshots.push((*id, bytes));
    }
    // Packs first, then snapshots, then refs.
    let upload = uploader.finish().await?;
    let mut report = ReplicateReport {
        from: from.url(),
        to: to.url(),
        refs: plans.iter().map(|p| p.name.clone()).collect(),
        snapshots_copied: 0,
        chunks_copied: copied.chunks,
        bytes_downloaded: copied.bytes_downloaded,
        chunks_delta: copied.chunks_delta,
        bytes_saved_by_deltas: copied.bytes_saved_by_deltas,
        upload,
        refs_advanced: 0,
        resealed: false,
        shard: None,
        duration_secs: 0.0,
        dry_run: None,
    };
    if let Some(s) = sharded {
        let shard = record_shard_done(to, s, owned.len() as u64).await?;
        let all_done = shard.missing.is_empty();
        report.shard = Some(shard);
        if !all_done {
            report.duration_secs = started.elapsed().as_secs_f64();
            return Ok(report);
        }
        check_run_complete(to, &to_index, s, &referenced).await?;
    }
    check_not_marked(to, &to_index, referenced).await?;
    for (id, bytes) in &snapshots {
        let written = to.write_snapshot_bytes(bytes.clone()).await?;
        debug_assert_eq!(written, *id);
    }
    report.snapshots_copied = snapshots.len() as u64;
    if let Some(s) = sharded {
        to.commit_replica_once(&s.run).await?;
    }
    report.refs_advanced = advance_refs(from, to, index, &plans).await?;
    index.flush()?;
    if let Some(r) = &mut report.shard {
        r.committed = true;
    }
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// The planned snapshots the target lacks, each once, in plan order.
pub(crate) fn wanted_snapshots(
    plans: &[PlannedRef],
    present: &HashSet<SnapshotId>,
) -> Vec<SnapshotId> {
    let mut wanted: Vec<SnapshotId> = Vec::new();
    for s in plans.iter().flat_map(|p| &p.snapshots) {
        if !present.contains(s) && !wanted.contains(s) {
            wanted.push(*s);
        }
    }
    wanted
}

/// What a replication copied, counted as it goes.
#[derive(Debug, Default)]
struct Copied {
    chunks: u64,
    bytes_downloaded: u64,
    chunks_delta: u64,
    bytes_saved_by_deltas: u64,
}

/// Copies the chunks `need` from `from` into `uploader` as stored frames, and the delta bases
/// they need that the target `lacks` (which marks what it answers `true` for as sent), so a
/// delta frame never lands without its base; counts what it copied into `copied`. Into a
/// target older than the delta format, delta frames are stored whole instead.
async fn copy_chunks(
    from: &Repository,
    from_index: &RepoIndex,
    mut need: Vec<ChunkId>,
    (uploader, copied): (&mut PackUploader, &mut Copied),
    lacks: &mut (dyn FnMut(&ChunkId) -> Result<bool, OpError> + Send),
    progress: &Reporter,
) -> Result<(), OpError> {
    let whole = uploader.repo().config().version < DELTA_VERSION;
    while !need.is_empty() {
        let bases = copy_frames(from, from_index, need, uploader, whole, progress, copied).await?;
        need = Vec::new();
        for b in bases {
            if lacks(&b)? {
                need.push(b);
            }
        }
    }
    Ok(())
}

/// One round of `copy_chunks`: returns the bases of the delta frames it copied.
async fn copy_frames(
    from: &Repository,
    from_index: &RepoIndex,
    need: Vec<ChunkId>,
    uploader: &mut PackUploader,
    whole: bool,
    progress: &Reporter,
    copied: &mut Copied,
) -> Result<Vec<ChunkId>, OpError> {
    let mut bases = Vec::new();
    let mut locations = locate(from_index, from, need)?;
    // Pack order makes reads sequential and coalesced.
    locations.sort_by_key(|l| (l.pack, l.entry.offset));
    let reads = plan(locations);
    let total: u64 = reads.iter().map(|r| r.end - r.start).sum();
    let bar = progress.bytes("replicate", total);
    let want = if whole { Want::Both } else { Want::Frames };
    let mut frames = std::pin::pin!(fetch(from, from_index, reads, want));
    while let Some(f) = frames.next().await {
        let f = f?;
        copied.bytes_downloaded += f.frame.len() as u64;
        bar.inc(f.frame.len() as u64);
        copied.chunks += 1;
        if f.delta && !whole {
            copied.chunks_delta += 1;
            copied.bytes_saved_by_deltas += f.key_stored.saturating_sub(f.frame.len() as u64);
        }
        let chunk = f.location.entry.chunk;
        let (frame, base) = match (&f.raw, f.delta) {
            (Some(raw), true) => {
                let to = uploader.repo();
                let full = crate::codec::encode(raw, to.config().zstd_level);
                (Bytes::from(to.sealing().seal_frame(&chunk, full)), None)
            }
            // As stored: the two repositories seal alike (`replicate` checked).
            _ => (f.frame, f.base),
        };
        bases.extend(base);
        uploader
            .add(chunk, &frame, f.location.entry.raw_len, base)
            .await?;
    }
    bar.finish();
    Ok(bases)
}

/// Appends each planned snapshot to its ref in `to` (once, whoever commits), and remembers
/// it as replicated; returns the entries this process appended.
async fn advance_refs(
    from: &Repository,
    to: &Repository,
    index: &Index,
    plans: &[PlannedRef],
) -> Result<u64, OpError> {
    let mut advanced = 0;
    for p in plans {
        for s in &p.snapshots {
            if to.advance_ref_once(&p.name, *s).await?.is_some() {
                advanced += 1;
            }
            index.mark_replicated(from.id(), to.id(), s)?;
        }
    }
    Ok(advanced)
}

/// Records that shard `s` is done and reports which shards of its run are not.
async fn record_shard_done(
    to: &Repository,
    s: &ReplicaShard,
    chunks_owned: u64,
) -> Result<ReplicaShardReport, OpError> {
    to.write_replica_pointer(&ReplicaPointer {
        run: s.run.to_string(),
        shard: s.shard.index,
        of: s.shard.count,
    })
    .await?;
    let done = to.list_replica_pointers(&s.run).await?;
    let missing: Vec<u32> = (0..s.shard.count)
        .filter(|i| !done.iter().any(|p| p.shard == *i && p.of == s.shard.count))
        .collect();
    Ok(ReplicaShardReport {
        run: s.run.to_string(),
        shard: s.shard,
        chunks_owned,
        missing,
        committed: false,
    })
}

/// Every shard is done: the target must now hold every chunk the snapshots need.
async fn check_run_complete(
    to: &Repository,
    to_index: &RepoIndex,
    s: &ReplicaShard,
    referenced: &HashSet<ChunkId>,
) -> Result<(), OpError> {
    let presence = sync_index(to, to_index).await?;
    for c in referenced {
        if !presence.has(c)? {
            let owner = (0..s.shard.count)
                .find(|i| {
                    Shard {
                        index: *i,
                        count: s.shard.count,
                    }
                    .owns_chunk(c)
                })
                .unwrap_or(0);
            return Err(OpError::ShardChunkMissing {
                chunk: *c,
                repo: to.url(),
                run: s.run.to_string(),
                owner,
                count: s.shard.count,
            });
        }
    }
    Ok(())
}

/// Per ref: the source log's snapshots the target's log lacks, oldest first.
pub(crate) async fn plan_refs(
    from: &Repository,
    to: &Repository,
    names: &[String],
    (from_index, to_index): (&RepoIndex, &RepoIndex),
) -> Result<Vec<PlannedRef>, OpError> {
    let names = if names.is_empty() {
        from.ref_names().await?
    } else {
        names.to_vec()
    };
    let mut plans = Vec::new();
    for name in names {
        let log = ref_log(from, from_index, &name).await?;
        if log.is_empty() {
            return Err(crate::repo::RepoError::NoSuchSnapshot {
                spec: name.clone(),
                url: from.url(),
            }
            .into());
        }
        let have: HashSet<SnapshotId> = ref_log(to, to_index, &name)
            .await?
            .into_iter()
            .map(|e| e.snapshot)
            .collect();
        let snapshots = log
            .iter()
            .map(|e| e.snapshot)
            .filter(|s| !have.contains(s))
            .collect();
        plans.push(PlannedRef { name, snapshots });
    }
    Ok(plans)
}

/// The run's plan: the one in the target if a shard wrote it, else ours, written once.
async fn adopt_plan(
    from: &Repository,
    to: &Repository,
    names: &[String],
    indexes: (&RepoIndex, &RepoIndex),
    s: &ReplicaShard,
) -> Result<Vec<PlannedRef>, OpError> {
    let plan = match to.read_replica_plan(&s.run).await? {
        Some(p) => p,
        None => {
            let refs = plan_refs(from, to, names, indexes).await?;
            to.plan_replica_once(&ReplicaPlan {
                run: s.run.to_string(),
                of: s.shard.count,
                from: from.id().to_string(),
                refs,
            })
            .await?
        }
    };
    if plan.of != s.shard.count {
        return Err(OpError::ShardCountMismatch {
            run: s.run.to_string(),
            repo: to.url(),
            planned: plan.of,
            given: s.shard.count,
        });
    }
    if plan.from != from.id() {
        return Err(OpError::RunFromOtherSource {
            run: s.run.to_string(),
            repo: to.url(),
            from: from.url(),
        });
    }
    Ok(plan.refs)
}
