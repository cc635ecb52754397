//! Retention and garbage collection: `forget` trims a ref's log; `gc` deletes what no
//! snapshot needs, in two phases so that it is safe alongside pushes.
//!
//! Phase 1 marks a pack no live snapshot needs (`gc/<pack id>`), but only once the pack is
//! older than the grace period, so a running push's fresh packs are never marked. Pushes stop
//! relying on marked packs, and refuse to write a snapshot that relies on one. Phase 2, in a
//! later gc run, deletes a marked pack once its mark is older than the grace period and it is
//! still not needed by any snapshot that exists then; a pack needed again is unmarked. Packs
//! whose live chunks fill less than half of them are rewritten: their live chunks are copied
//! into new packs, then the old pack is marked.
//!
//! Duplicates: each live chunk keeps one copy. Its *owner* is the first pack holding it in
//! a fixed order (most live bytes first, then pack id) among the usable packs (indexed,
//! present, neither marked nor damaged); a pack that owns nothing is marked like a dead one,
//! and one that owns less than half of itself is rewritten. Damaged packs (`bad/<pack id>`,
//! written by `ferry repair`) own nothing: they are marked once every live chunk they hold
//! has a copy in a usable pack, and never unmarked.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant, SystemTime};

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::app::RefName;
use crate::ids::{ChunkId, PackId, SnapshotId};
use crate::index::{ChunkLocation, Index};
use crate::ops::fetch::{fetch, plan, Want};
use crate::ops::uploader::{PackUploader, UploadStats};
use crate::ops::OpError;
use crate::repo::pack::{PackEntry, PackIndex};
use crate::repo::{RepoError, Repository};

/// How gc decides and whether it acts.
#[derive(Debug, Clone, Copy)]
pub struct GcOptions {
    /// Minimum age of a pack before it is marked, and of a mark before the pack is deleted.
    /// Must exceed the longest push.
    pub grace: Duration,
    /// Report what would be marked and deleted, and change nothing.
    pub dry_run: bool,
}

/// What gc found and did (or would do, with `dry_run`).
#[derive(Debug, Default, Serialize)]
pub struct GcReport {
    /// The repository's URL.
    pub repo: String,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// The grace period, in seconds.
    pub grace_secs: u64,
    /// Snapshots some ref names.
    pub snapshots_live: u64,
    /// Snapshots no ref names, deleted.
    pub snapshots_deleted: u64,
    /// Packs listed in the repository.
    pub packs_total: u64,
    /// Packs marked for deletion this run (`gc/<pack id>`).
    pub packs_marked: u64,
    /// Of `packs_marked`: live packs whose every live chunk another pack also holds
    /// (duplicates left by concurrent pushes), and damaged packs no longer needed.
    pub packs_redundant: u64,
    /// Marked packs some snapshot needs again; their mark was removed.
    pub packs_unmarked: u64,
    /// Packs deleted (marked longer than the grace period ago).
    pub packs_deleted: u64,
    /// Packs whose live chunks were copied into new packs, so the old ones can go.
    pub packs_rewritten: u64,
    /// Packs without a pack index (left by interrupted writers) older than the grace period, deleted.
    pub orphans_deleted: u64,
    /// Committed sharded runs (pushes and replications) whose pointers and marker were
    /// deleted: committed longer ago than the grace period.
    pub runs_pruned: u64,
    /// Objects of pruned runs deleted (pointers and markers).
    pub run_objects_deleted: u64,
    /// Bytes of the deleted packs.
    pub bytes_deleted: u64,
    /// Live chunks copied by rewrites.
    pub chunks_rewritten: u64,
    /// The uploads of rewritten packs.
    pub rewrite: UploadStats,
    /// Wall-clock time of the run, in seconds.
    pub duration_secs: f64,
}

/// Live chunks below this share of a pack's bytes make it a rewrite candidate.
const REWRITE_BELOW: f64 = 0.5;

/// Two-phase garbage collection (see ARCHITECTURE.md): marks packs no live snapshot needs, deletes packs marked more than `grace` ago, rewrites packs that are mostly dead.
pub async fn gc(repo: &Repository, index: &Index, opts: GcOptions) -> Result<GcReport, OpError> {
    let started = Instant::now();
    let now = SystemTime::now();
    let old = |t: SystemTime| now.duration_since(t).is_ok_and(|age| age >= opts.grace);
    let mut report = GcReport {
        repo: repo.url(),
        dry_run: opts.dry_run,
        grace_secs: opts.grace.as_secs(),
        ..Default::default()
    };

    let (roots, doomed_snapshots, existing) = snapshot_roots(repo, old).await?;
    let live = live_chunks(repo, roots.iter().filter(|r| existing.contains(r)).copied()).await?;
    report.snapshots_live = roots.len() as u64;

    let packs = Packs::list(repo).await?;
    // A live delta keeps its base alive, and the base's own base, down to a full frame.
    let live = crate::ops::delta_base::with_bases(live, &packs.indexes);
    report.packs_total = packs.objects.len() as u64;
    let owned = owners(packs.indexes.iter().filter(|i| packs.usable(i)), &live);
    let mut plan = packs.plan(&live, &owned, now, old);
    let (orphans, stale_marks) = packs.leftovers(old);

    report.snapshots_deleted = doomed_snapshots.len() as u64;
    report.packs_marked = (plan.mark.len() + plan.rewrite.len()) as u64;
    report.packs_redundant = plan.redundant;
    report.packs_unmarked = plan.unmark.len() as u64;
    report.packs_deleted = plan.delete.len() as u64;
    report.bytes_deleted = plan.delete.iter().map(|(_, size)| size).sum();
    report.packs_rewritten = plan.rewrite.len() as u64;
    report.orphans_deleted = orphans.len() as u64;
    // A committed run's pointers are never read again; wait out the grace period anyway, so
    // that a shard still finishing sees the marker rather than a half-pruned run.
    let finished_runs: Vec<_> = repo
        .committed_runs()
        .await?
        .into_iter()
        .filter(|r| old(r.committed))
        .collect();
    report.runs_pruned = finished_runs.len() as u64;
    report.run_objects_deleted = finished_runs
        .iter()
        .map(|r| r.objects.len() as u64 + 1)
        .sum();
    if opts.dry_run {
        report.chunks_rewritten = plan
            .rewrite
            .iter()
            .flat_map(|i| i.entries.iter().map(move |e| (*i, e)))
            .filter(|(i, e)| owns(&owned, i, e))
            .count() as u64;
        report.duration_secs = started.elapsed().as_secs_f64();
        return Ok(report);
    }

    // Rewrite first: new packs are durable before the old ones are marked.
    if !plan.rewrite.is_empty() {
        rewrite_packs(repo, index, &plan.rewrite, &owned, &mut report).await?;
        plan.mark.extend(plan.rewrite.iter().map(|i| i.pack));
    }
    for id in &plan.mark {
        repo.mark_pack(id).await?;
    }
    for id in &plan.unmark {
        repo.unmark_pack(id).await?;
    }
    for (id, _) in &plan.delete {
        repo.delete_pack(id).await?;
    }
    for id in orphans.iter().chain(&stale_marks) {
        repo.delete_pack(id).await?;
    }
    for id in &doomed_snapshots {
        repo.delete_snapshot(id).await?;
    }
    for run in &finished_runs {
        repo.delete_run(run).await?;
    }
    index.flush()?;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Roots: every snapshot a ref log names, and every young snapshot (a push may be about to
/// point a ref at it). Old snapshots no ref names are garbage. Returns the roots, the
/// garbage, and every snapshot that exists.
async fn snapshot_roots(
    repo: &Repository,
    old: impl Fn(SystemTime) -> bool,
) -> Result<(HashSet<SnapshotId>, Vec<SnapshotId>, HashSet<SnapshotId>), OpError> {
    let mut roots: HashSet<SnapshotId> = HashSet::new();
    for name in repo.ref_names().await? {
        roots.extend(repo.ref_log(&name).await?.into_iter().map(|e| e.snapshot));
    }
    // Partial snapshots of sharded runs still waiting for a shard are live too.
    roots.extend(repo.pending_partial_snapshots().await?);
    let mut doomed_snapshots = Vec::new();
    let existing: HashSet<SnapshotId> = repo
        .list_snapshot_objects()
        .await?
        .into_iter()
        .map(|s| {
            if !roots.contains(&s.id) {
                if old(s.modified) {
                    doomed_snapshots.push(s.id);
                } else {
                    roots.insert(s.id);
                }
            }
            s.id
        })
        .collect();
    Ok((roots, doomed_snapshots, existing))
}

/// The repository's packs as gc sees them: pack objects, gc marks, damage marks, indexes.
struct Packs {
    objects: HashMap<PackId, SystemTime>,
    marks: HashMap<PackId, SystemTime>,
    bad: HashSet<PackId>,
    indexes: Vec<PackIndex>,
}

/// What gc does to indexed packs.
#[derive(Default)]
struct PackPlan<'a> {
    mark: Vec<PackId>,
    unmark: Vec<PackId>,
    /// With each pack's size.
    delete: Vec<(PackId, u64)>,
    rewrite: Vec<&'a PackIndex>,
    /// Of the marked: packs whose live chunks all have another copy, and damaged packs no
    /// longer needed.
    redundant: u64,
}

impl Packs {
    async fn list(repo: &Repository) -> Result<Self, OpError> {
        let objects: HashMap<PackId, SystemTime> = repo
            .list_packs()
            .await?
            .into_iter()
            .map(|p| (p.id, p.modified))
            .collect();
        let marks: HashMap<PackId, SystemTime> = repo
            .list_gc_marks()
            .await?
            .into_iter()
            .map(|m| (m.id, m.modified))
            .collect();
        let bad: HashSet<PackId> = repo.bad_pack_ids().await?;
        let bad_ref = &bad;
        let indexes: Vec<PackIndex> = futures::stream::iter(repo.list_pack_indexes().await?)
            .map(|id| async move {
                match repo.read_pack_index(&id).await {
                    // A damaged pack's unreadable index locates no chunk for anyone: it holds
                    // nothing gc must keep.
                    Err(e) if e.is_corrupt() && bad_ref.contains(&id) => Ok(PackIndex {
                        pack: id,
                        pack_size: 0,
                        entries: Vec::new(),
                        bases: Vec::new(),
                    }),
                    other => other,
                }
            })
            .buffer_unordered(8)
            .try_collect()
            .await?;
        Ok(Self {
            objects,
            marks,
            bad,
            indexes,
        })
    }

    /// Usable packs: indexed, present, neither marked nor damaged.
    fn usable(&self, i: &PackIndex) -> bool {
        self.objects.contains_key(&i.pack)
            && !self.marks.contains_key(&i.pack)
            && !self.bad.contains(&i.pack)
    }

    /// Decides, for each indexed pack, whether to mark, unmark, delete or rewrite it.
    fn plan(
        &self,
        live: &HashSet<ChunkId>,
        owned: &HashMap<ChunkId, PackId>,
        now: SystemTime,
        old: impl Fn(SystemTime) -> bool,
    ) -> PackPlan<'_> {
        // How many usable packs hold each live chunk.
        let mut copies: HashMap<ChunkId, u32> = HashMap::new();
        for idx in self.indexes.iter().filter(|i| self.usable(i)) {
            for e in idx.entries.iter().filter(|e| live.contains(&e.chunk)) {
                *copies.entry(e.chunk).or_default() += 1;
            }
        }
        let mut plan = PackPlan::default();
        for idx in &self.indexes {
            let damaged = self.bad.contains(&idx.pack);
            let pack_time = match self.objects.get(&idx.pack) {
                Some(&t) => t,
                // A damaged pack whose object is gone: its index goes the same way as below.
                None if damaged => now,
                None => continue, // index without pack: verify reports it, repair marks it
            };
            // Holds a live chunk no usable pack holds: deleting it would lose that chunk.
            let needed = idx.entries.iter().any(|e| {
                live.contains(&e.chunk) && copies.get(&e.chunk).copied().unwrap_or(0) == 0
            });
            if let Some(&mark_time) = self.marks.get(&idx.pack) {
                if needed {
                    // A damaged pack stays marked: writers must not rely on it either way.
                    if !damaged {
                        plan.unmark.push(idx.pack);
                    }
                } else if old(mark_time) {
                    plan.delete.push((idx.pack, idx.pack_size));
                }
                continue;
            }
            if damaged {
                if !needed {
                    plan.mark.push(idx.pack);
                    plan.redundant += 1;
                }
                continue;
            }
            if !old(pack_time) {
                continue;
            }
            let live_bytes: u64 = idx
                .entries
                .iter()
                .filter(|e| owns(owned, idx, e))
                .map(|e| e.frame_len as u64)
                .sum();
            let frame_bytes: u64 = idx.entries.iter().map(|e| e.frame_len as u64).sum();
            if live_bytes == 0 {
                if idx.entries.iter().any(|e| live.contains(&e.chunk)) {
                    plan.redundant += 1;
                }
                plan.mark.push(idx.pack);
            } else if live_bytes < frame_bytes
                && (live_bytes as f64) < REWRITE_BELOW * idx.pack_size as f64
            {
                // Only a pack holding dead chunks: a small pack whose every chunk is live would
                // otherwise be rewritten into another such pack on every run.
                plan.rewrite.push(idx);
            }
        }
        plan
    }

    /// Old packs with no index (leftovers of interrupted writers), and marks whose pack is
    /// gone (damage marks: whose pack and index are gone).
    fn leftovers(&self, old: impl Fn(SystemTime) -> bool) -> (Vec<PackId>, Vec<PackId>) {
        let indexed: HashSet<PackId> = self.indexes.iter().map(|i| i.pack).collect();
        let orphans: Vec<PackId> = self
            .objects
            .iter()
            .filter(|(id, t)| !indexed.contains(id) && old(**t))
            .map(|(id, _)| *id)
            .collect();
        let stale_marks: Vec<PackId> = self
            .marks
            .keys()
            .filter(|id| !self.objects.contains_key(id))
            .chain(
                self.bad
                    .iter()
                    .filter(|id| !self.objects.contains_key(id) && !indexed.contains(id)),
            )
            .copied()
            .collect::<HashSet<_>>()
            .into_iter()
            .collect();
        (orphans, stale_marks)
    }
}

/// Whether `idx` is the pack that keeps the copy of `e`'s chunk.
fn owns(owned: &HashMap<ChunkId, PackId>, idx: &PackIndex, e: &PackEntry) -> bool {
    owned.get(&e.chunk) == Some(&idx.pack)
}

/// Copies the chunks each of `packs` owns into new packs.
async fn rewrite_packs(
    repo: &Repository,
    index: &Index,
    packs: &[&PackIndex],
    owned: &HashMap<ChunkId, PackId>,
    report: &mut GcReport,
) -> Result<(), OpError> {
    let rindex = index.repo(repo.id())?;
    let mut uploader = PackUploader::new(repo.clone(), rindex.clone(), 2);
    for idx in packs {
        // Only the chunks this pack owns: every other live chunk keeps its owner's copy.
        let locations: Vec<ChunkLocation> = idx
            .entries
            .iter()
            .filter(|e| owns(owned, idx, e))
            .map(|e| ChunkLocation {
                pack: idx.pack,
                entry: *e,
            })
            .collect();
        let mut frames = std::pin::pin!(fetch(repo, &rindex, plan(locations), Want::Frames));
        while let Some(f) = frames.next().await {
            let f = f?;
            report.chunks_rewritten += 1;
            uploader
                .add(
                    f.location.entry.chunk,
                    &f.frame,
                    f.location.entry.raw_len,
                    f.base,
                )
                .await?;
        }
    }
    report.rewrite = uploader.finish().await?;
    Ok(())
}

/// For each live chunk, the pack that keeps its copy: the first of `usable` holding it, in
/// order of most live bytes, then pack id (a fixed order, so runs agree while nothing
/// changes, and big packs keep their chunks while small duplicates go).
fn owners<'a>(
    usable: impl Iterator<Item = &'a PackIndex>,
    live: &HashSet<ChunkId>,
) -> HashMap<ChunkId, PackId> {
    let mut ranked: Vec<(u64, &PackIndex)> = usable
        .map(|i| {
            let live_bytes = i
                .entries
                .iter()
                .filter(|e| live.contains(&e.chunk))
                .map(|e| e.frame_len as u64)
                .sum();
            (live_bytes, i)
        })
        .collect();
    ranked.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.pack.0.cmp(&b.1.pack.0)));
    let mut owner = HashMap::new();
    for (_, idx) in ranked {
        for e in idx.entries.iter().filter(|e| live.contains(&e.chunk)) {
            owner.entry(e.chunk).or_insert(idx.pack);
        }
    }
    owner
}

/// Every chunk the given snapshots reference. A snapshot that cannot be read stops gc: it
/// cannot know what that snapshot needs.
async fn live_chunks(
    repo: &Repository,
    snapshots: impl Iterator<Item = SnapshotId>,
) -> Result<HashSet<ChunkId>, OpError> {
    let mut live = HashSet::new();
    for id in snapshots {
        match repo.read_snapshot(&id).await {
            Ok(s) => live.extend(s.chunks().map(|c| c.0)),
            // Deleted since listing (another gc): it needs nothing any more.
            Err(RepoError::Store(e)) if e.is_not_found() => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(live)
}

/// Which ref log entries to keep.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// Keep the newest N entries; 0 (with no `keep_every`) deletes the ref.
    pub keep_last: u64,
    /// Also keep every entry whose sequence number is a multiple of N.
    pub keep_every: Option<u64>,
}

/// What `forget` kept and removed from one ref's log.
#[derive(Debug, Serialize)]
pub struct ForgetReport {
    /// The repository's URL.
    pub repo: String,
    /// The ref name.
    pub name: String,
    /// Whether this was a dry run (nothing deleted).
    pub dry_run: bool,
    /// Sequence numbers of the entries kept.
    pub kept: Vec<u64>,
    /// Sequence numbers of the entries deleted (or to delete, with `dry_run`).
    pub forgotten: Vec<u64>,
}

/// Removes ref log entries that `keep` does not keep (oldest first, so an interrupted run
/// never leaves the ref pointing at an older snapshot). The snapshots they named become
/// garbage for a later `gc` unless another ref names them.
pub async fn forget(
    repo: &Repository,
    name: &RefName,
    keep: Retention,
    dry_run: bool,
) -> Result<ForgetReport, OpError> {
    if keep.keep_last == 0 && keep.keep_every.is_some() {
        return Err(OpError::KeepEveryWithoutKeep);
    }
    if keep.keep_every == Some(0) {
        return Err(OpError::KeepEveryZero);
    }
    let log = repo.ref_log(name).await?;
    if log.is_empty() {
        return Err(RepoError::NoSuchSnapshot {
            spec: name.into(),
            url: repo.url(),
        }
        .into());
    }
    let cut = log.len().saturating_sub(keep.keep_last as usize);
    let (mut kept, mut forgotten) = (Vec::new(), Vec::new());
    for (i, e) in log.iter().enumerate() {
        let every = keep.keep_every.is_some_and(|n| e.seq % n == 0);
        if i >= cut || every {
            kept.push(e.seq);
        } else {
            forgotten.push(e.seq);
        }
    }
    if !dry_run {
        for seq in &forgotten {
            repo.delete_ref_entry(name, *seq).await?;
        }
    }
    Ok(ForgetReport {
        repo: repo.url(),
        name: name.into(),
        dry_run,
        kept,
        forgotten,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::PackEntry;
    use proptest::prelude::*;

    fn pack(n: u8, chunks: &[u8]) -> PackIndex {
        PackIndex {
            pack: PackId::of(&[n]),
            pack_size: 100 * chunks.len() as u64,
            entries: chunks
                .iter()
                .map(|c| PackEntry {
                    chunk: ChunkId::of(&[*c]),
                    offset: 8,
                    frame_len: 100,
                    raw_len: 100,
                })
                .collect(),
            bases: Vec::new(),
        }
    }

    proptest! {
        /// Every live chunk some pack holds gets exactly one owner, a pack that holds it;
        /// dead chunks get none; the choice does not depend on listing order.
        #[test]
        fn each_live_chunk_has_one_owner_whatever_the_order(
            packs in proptest::collection::vec(proptest::collection::vec(0u8..24, 0..10), 1..8),
            live in proptest::collection::hash_set(0u8..24, 0..24),
        ) {
            let indexes: Vec<PackIndex> =
                packs.iter().enumerate().map(|(i, c)| pack(i as u8, c)).collect();
            let live: HashSet<ChunkId> = live.iter().map(|c| ChunkId::of(&[*c])).collect();
            let owned = owners(indexes.iter(), &live);
            let reversed = owners(indexes.iter().rev(), &live);
            prop_assert_eq!(&owned, &reversed);
            for idx in &indexes {
                for e in &idx.entries {
                    prop_assert_eq!(owned.contains_key(&e.chunk), live.contains(&e.chunk));
                }
            }
            for (chunk, owner) in &owned {
                let idx = indexes.iter().find(|i| i.pack == *owner).unwrap();
                prop_assert!(idx.entries.iter().any(|e| e.chunk == *chunk));
            }
        }
    }

    #[test]
    fn the_pack_with_more_live_bytes_keeps_the_shared_chunks() {
        let big = pack(1, &[1, 2, 3]);
        let small = pack(2, &[2, 3]);
        let live: HashSet<ChunkId> = [1u8, 2, 3].iter().map(|c| ChunkId::of(&[*c])).collect();
        let owned = owners([&small, &big].into_iter(), &live);
        assert!(owned.values().all(|p| *p == big.pack), "{owned:?}");
    }
}
