//! Many writers, one ref: sharded pushes (`--shard I/N --run ID`) that each write a partial
//! snapshot and combine them when the last shard finishes, and merging pushes (`--merge`) that
//! add files to the ref's head. The store's conditional writes are the only coordinator.
//!
//! Combining is idempotent: every shard that sees all N partials builds the combined
//! snapshot, exactly one `commit` marker wins (If-None-Match), and the ref moves to the
//! marker's snapshot unless its log already holds it. So any shard may finish last, two may
//! finish at once, and a crashed shard is simply rerun.

use std::collections::{BTreeMap, BTreeSet};
use std::str::FromStr;

use bytes::Bytes;
use serde::Serialize;

use crate::app::{RefName, RunId};
use crate::ids::{ChunkId, SnapshotId};
use crate::ops::source::SourceEntry;
use crate::ops::OpError;
use crate::repo::partial::{CommitMarker, PartialEntry};
use crate::repo::snapshot::Entry;
use crate::repo::{RefEntry, Repository, Snapshot};

/// Attempts at a conditional ref append before giving up.
const APPEND_ATTEMPTS: usize = 64;
/// The most shards one run may have.
pub const MAX_SHARDS: u32 = 4096;

/// Shard `index` of `count`: owns the paths whose BLAKE3 (first 8 bytes, little-endian)
/// is `index` modulo `count`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Shard {
    /// This shard's number, from 0.
    pub index: u32,
    /// How many shards the run has.
    pub count: u32,
}

/// A `--shard` value that is not `I/N` with `0 <= I < N <=` [`MAX_SHARDS`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid shard {text:?}: write I/N with 0 <= I < N <= {MAX_SHARDS}")]
pub struct BadShard {
    /// The text as given.
    pub text: String,
}

impl FromStr for Shard {
    type Err = BadShard;

    fn from_str(s: &str) -> Result<Self, BadShard> {
        let bad = || BadShard { text: s.into() };
        let (i, n) = s.split_once('/').ok_or_else(bad)?;
        let index: u32 = i.trim().parse().map_err(|_| bad())?;
        let count: u32 = n.trim().parse().map_err(|_| bad())?;
        if count == 0 || count > MAX_SHARDS || index >= count {
            return Err(bad());
        }
        Ok(Shard { index, count })
    }
}

impl Shard {
    /// True when this shard pushes the entry at `rel`.
    pub fn owns(&self, rel: &str) -> bool {
        let h = blake3::hash(rel.as_bytes());
        let mut first = [0u8; 8];
        first.copy_from_slice(&h.as_bytes()[..8]);
        u64::from_le_bytes(first) % self.count as u64 == self.index as u64
    }

    /// True when this shard copies the chunk in a sharded replication: the chunk id's first
    /// 8 bytes, little-endian, are `index` modulo `count` (ids are uniform, so bytes split
    /// evenly whatever the files' sizes).
    pub fn owns_chunk(&self, id: &ChunkId) -> bool {
        let mut first = [0u8; 8];
        first.copy_from_slice(&id.0[..8]);
        u64::from_le_bytes(first) % self.count as u64 == self.index as u64
    }
}

/// How a push turns its tree into the ref's next snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PushMode {
    /// The tree becomes the ref's snapshot (the default).
    Replace,
    /// The tree's entries are laid over the ref's head: other paths are kept.
    Merge,
    /// Only this shard's paths are pushed, into a partial snapshot of run `run`.
    Shard {
        /// This process's shard.
        shard: Shard,
        /// The run id shared by every shard of the push.
        run: RunId,
    },
    /// Only the files in `ready` are read (directories and symlinks always are); each path in
    /// `held` keeps the entry the ref's head has, if any; other files are left out. With
    /// `merge`, the tree is laid over the head as in `Merge`. The daemon's per-file settling:
    /// files still being written keep their previous version.
    Settled {
        /// Settled files: read and pushed.
        ready: BTreeSet<String>,
        /// Files still changing: they keep the head's entry.
        held: BTreeSet<String>,
        /// Whether the tree is laid over the head (paths not in it kept).
        merge: bool,
    },
}

impl PushMode {
    /// The entries of the source this push owns.
    pub fn select(&self, listing: Vec<SourceEntry>) -> Vec<SourceEntry> {
        match self {
            PushMode::Shard { shard, .. } => {
                listing.into_iter().filter(|e| shard.owns(rel(e))).collect()
            }
            PushMode::Settled { ready, .. } => listing
                .into_iter()
                .filter(|e| !matches!(e, SourceEntry::File(f) if !ready.contains(&f.rel)))
                .collect(),
            _ => listing,
        }
    }
}

fn rel(e: &SourceEntry) -> &str {
    match e {
        SourceEntry::File(f) => &f.rel,
        SourceEntry::Dir { rel, .. } | SourceEntry::Symlink { rel, .. } => rel,
    }
}

/// What a sharded push or `ferry commit` found and did in one repository.
#[derive(Debug, Clone, Serialize)]
pub struct ShardReport {
    /// The run id.
    pub run: String,
    /// The shard this process ran, for a sharded push or replication; `None` for `ferry commit`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<Shard>,
    /// Shards of the run whose partial snapshot is not there yet.
    pub missing: Vec<u32>,
    /// The combined snapshot, once the run is committed.
    pub committed: Option<SnapshotId>,
}

/// Writes a merging push's snapshot: `ours` laid over the ref's head, appended only on top of
/// the head it was built from. Returns the snapshot and whether the tree was unchanged.
pub async fn finish_merge(
    repo: &Repository,
    ours: Snapshot,
) -> Result<(SnapshotId, bool), OpError> {
    finish_over(repo, ours, |_| true).await
}

/// Writes a [`PushMode::Settled`] push's snapshot: `ours` plus the head's file entries at the
/// `held` paths (or laid over the whole head with `merge`).
pub async fn finish_settled(
    repo: &Repository,
    ours: Snapshot,
    held: &BTreeSet<String>,
    merge: bool,
) -> Result<(SnapshotId, bool), OpError> {
    finish_over(repo, ours, |e| {
        merge || (matches!(e, Entry::File { .. }) && held.contains(e.path()))
    })
    .await
}

/// `ours` laid over the head's entries that `keep` accepts, appended only on top of the head
/// it was built from (retried when the ref moves).
async fn finish_over(
    repo: &Repository,
    ours: Snapshot,
    keep: impl Fn(&Entry) -> bool,
) -> Result<(SnapshotId, bool), OpError> {
    for _ in 0..APPEND_ATTEMPTS {
        let head = repo.ref_head(&ours.name).await?;
        let base = match &head {
            Some(h) => Some((h.snapshot, repo.read_snapshot(&h.snapshot).await?)),
            None => None,
        };
        let mut next = ours.clone();
        next.parent = base.as_ref().map(|b| b.0);
        if let Some((_, b)) = &base {
            let kept: Vec<Entry> = b.entries.iter().filter(|e| keep(e)).cloned().collect();
            next.entries = overlay(&kept, &ours.entries);
        }
        if let Some((id, b)) = &base {
            if b.same_tree(&next) {
                return Ok((*id, true));
            }
        }
        let id = repo
            .write_snapshot_bytes(Bytes::from(next.encode()))
            .await?;
        if repo
            .append_ref(&ours.name, head.as_ref(), id)
            .await?
            .is_some()
        {
            return Ok((id, false));
        }
        tracing::debug!(name = %ours.name, "ref moved under the push; laying it over the new head");
    }
    Err(crate::repo::RepoError::RefContention {
        name: ours.name,
        url: repo.url(),
    }
    .into())
}

/// `base` with every entry of `ours` added or replaced, and whatever `ours` shadows (children
/// of a path that is now a file, or a file where `ours` needs a directory) dropped.
pub fn overlay(base: &[Entry], ours: &[Entry]) -> Vec<Entry> {
    let mut out: BTreeMap<&str, &Entry> = BTreeMap::new();
    for e in base {
        out.insert(e.path(), e);
    }
    for e in ours {
        let path = e.path();
        if !matches!(e, Entry::Dir { .. }) {
            let under = format!("{path}/");
            let doomed: Vec<&str> = out
                .range(under.as_str()..)
                .take_while(|(p, _)| p.starts_with(&under))
                .map(|(p, _)| *p)
                .collect();
            for p in doomed {
                out.remove(p);
            }
        }
        let mut parent = path;
        while let Some((up, _)) = parent.rsplit_once('/') {
            if out.get(up).is_some_and(|x| !matches!(x, Entry::Dir { .. })) {
                out.remove(up);
            }
            parent = up;
        }
        out.insert(path, e);
    }
    out.into_values().cloned().collect()
}

/// Records a shard's partial snapshot, then commits the run if every shard is there.
pub async fn finish_shard(
    repo: &Repository,
    partial: Snapshot,
    shard: Shard,
    run: &RunId,
) -> Result<(SnapshotId, ShardReport), OpError> {
    let id = repo
        .write_snapshot_bytes(Bytes::from(partial.encode()))
        .await?;
    repo.write_partial(&PartialEntry {
        name: partial.name.clone(),
        run: run.to_string(),
        shard: shard.index,
        of: shard.count,
        snapshot: id,
    })
    .await?;
    let mut report = commit_run(repo, &partial.name, run).await?;
    report.shard = Some(shard);
    Ok((id, report))
}

/// Combines a run's partial snapshots and moves the ref, if every shard has finished.
/// Safe to call from any number of processes at once, and again after a crash.
pub async fn commit(
    repo: &Repository,
    name: &RefName,
    run: &RunId,
) -> Result<ShardReport, OpError> {
    commit_run(repo, name, run).await
}

/// [`commit`] of the ref a partial snapshot names (checked when the snapshot was made).
async fn commit_run(repo: &Repository, name: &str, run: &RunId) -> Result<ShardReport, OpError> {
    let mut report = ShardReport {
        run: run.to_string(),
        shard: None,
        missing: Vec::new(),
        committed: None,
    };
    let marker = match repo.read_commit(name, run).await? {
        Some(m) => m,
        None => {
            let partials = repo.list_partials(name, run).await?;
            let Some(count) = partials.iter().map(|p| p.of).max() else {
                return Err(OpError::NoPartials {
                    run: run.into(),
                    name: name.into(),
                    repo: repo.url(),
                });
            };
            if partials.iter().any(|p| p.of != count) {
                return Err(OpError::MixedShardCounts {
                    run: run.into(),
                    name: name.into(),
                    repo: repo.url(),
                });
            }
            report.missing = (0..count)
                .filter(|i| !partials.iter().any(|p| p.shard == *i))
                .collect();
            if !report.missing.is_empty() {
                return Ok(report);
            }
            let combined = combine(repo, name, &partials).await?;
            repo.commit_once(&CommitMarker {
                name: name.to_string(),
                run: run.to_string(),
                snapshot: combined,
            })
            .await?
        }
    };
    // The marker is durable; the ref may not have moved yet (a crash in between), so move it
    // unless its log already holds the run's snapshot.
    repo.advance_ref_once(name, marker.snapshot).await?;
    report.committed = Some(marker.snapshot);
    Ok(report)
}

/// Writes the snapshot of all partials' entries (or finds the head already equal to it).
async fn combine(
    repo: &Repository,
    name: &str,
    partials: &[PartialEntry],
) -> Result<SnapshotId, OpError> {
    let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
    let mut time = String::new();
    let mut source = String::new();
    for p in partials {
        let s = repo.read_snapshot(&p.snapshot).await?;
        if s.time > time {
            time = s.time.clone();
        }
        source = s.source.clone();
        for e in s.entries {
            entries.insert(e.path().to_string(), e);
        }
    }
    let head: Option<RefEntry> = repo.ref_head(name).await?;
    let snapshot = Snapshot {
        version: crate::repo::snapshot::SNAPSHOT_VERSION,
        time,
        name: name.to_string(),
        source,
        parent: head.as_ref().map(|h| h.snapshot),
        entries: entries.into_values().collect(),
    };
    if let Some(h) = &head {
        if repo.read_snapshot(&h.snapshot).await?.same_tree(&snapshot) {
            return Ok(h.snapshot);
        }
    }
    Ok(repo
        .write_snapshot_bytes(Bytes::from(snapshot.encode()))
        .await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(p: &str) -> Entry {
        Entry::Dir {
            path: p.into(),
            mode: 0o755,
        }
    }

    fn link(p: &str) -> Entry {
        Entry::Symlink {
            path: p.into(),
            target: "x".into(),
        }
    }

    #[test]
    fn shards_partition_paths() {
        let shards: Vec<Shard> = (0..4).map(|i| Shard { index: i, count: 4 }).collect();
        let mut per = [0usize; 4];
        for n in 0..1000 {
            let path = format!("rank-{n}/model.safetensors");
            let owners: Vec<_> = shards.iter().filter(|s| s.owns(&path)).collect();
            assert_eq!(owners.len(), 1, "{path}");
            per[owners[0].index as usize] += 1;
        }
        assert!(per.iter().all(|n| *n > 200), "{per:?}");
    }

    #[test]
    fn shard_specs_parse() {
        assert_eq!("2/4".parse(), Ok(Shard { index: 2, count: 4 }));
        for bad in ["4/4", "0/0", "1", "a/2", "-1/2", "0/5000"] {
            assert_eq!(
                bad.parse::<Shard>(),
                Err(BadShard { text: bad.into() }),
                "{bad}"
            );
        }
    }

    #[test]
    fn overlay_adds_replaces_and_shadows() {
        let base = vec![dir("a"), link("a/x"), link("b"), link("c")];
        let ours = vec![link("a"), dir("b"), link("b/y"), link("d")];
        let merged = overlay(&base, &ours);
        let got: Vec<&str> = merged.iter().map(|e| e.path()).collect();
        assert_eq!(got, ["a", "b", "b/y", "c", "d"]);
    }
}
