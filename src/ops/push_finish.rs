//! The end of a push, per target: the snapshot and the ref once every pack is durable, or in
//! a dry run the forecast of their bytes, written nowhere.

use std::collections::HashSet;

use bytes::Bytes;

use crate::ids::{ChunkId, SnapshotId};
use crate::ops::egress::{ref_entry_len, DryRun, DryTarget, Prices};
use crate::ops::push::TargetReport;
use crate::ops::shard::{PushMode, ShardReport};
use crate::ops::sync::{check_not_marked, Presence};
use crate::ops::uploader::UploadStats;
use crate::ops::OpError;
use crate::repo::snapshot::SNAPSHOT_VERSION;
use crate::repo::{Repository, Snapshot};

/// What every target's snapshot of one push holds.
pub(crate) struct SnapshotHead<'a> {
    pub(crate) time: String,
    pub(crate) name: &'a str,
    pub(crate) source: String,
    pub(crate) entries: &'a [crate::repo::snapshot::Entry],
}

/// Writes the push's snapshot into `repo` as `mode` says and moves the ref: returns the
/// snapshot id, whether the ref already had this tree, and a sharded push's report.
pub(crate) async fn finish_snapshot(
    repo: &Repository,
    head: &SnapshotHead<'_>,
    mode: &PushMode,
) -> Result<(SnapshotId, bool, Option<ShardReport>), OpError> {
    let mut snapshot = head.snapshot();
    let name = head.name;
    Ok(match mode {
        PushMode::Merge => {
            let (id, unchanged) = crate::ops::shard::finish_merge(repo, snapshot).await?;
            (id, unchanged, None)
        }
        PushMode::Settled { held, merge, .. } => {
            let (id, unchanged) =
                crate::ops::shard::finish_settled(repo, snapshot, held, *merge).await?;
            (id, unchanged, None)
        }
        PushMode::Shard { shard: s, run } => {
            let (id, r) = crate::ops::shard::finish_shard(repo, snapshot, *s, run).await?;
            (id, false, Some(r))
        }
        PushMode::Replace => {
            let head = repo.ref_head(name).await?;
            let parent = match &head {
                Some(h) => Some((h.snapshot, repo.read_snapshot(&h.snapshot).await?)),
                None => None,
            };
            snapshot.parent = parent.as_ref().map(|p| p.0);
            match parent {
                Some((pid, p)) if p.same_tree(&snapshot) => (pid, true, None),
                _ => {
                    let id = repo
                        .write_snapshot_bytes(Bytes::from(snapshot.encode()))
                        .await?;
                    repo.advance_ref(name, id).await?;
                    (id, false, None)
                }
            }
        }
    })
}

impl SnapshotHead<'_> {
    fn snapshot(&self) -> Snapshot {
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: self.time.clone(),
            name: self.name.to_string(),
            source: self.source.clone(),
            parent: None,
            entries: self.entries.to_vec(),
        }
    }
}

/// What a plain push would write into `repo` after its packs, read but not written: the
/// snapshot id, whether the ref already has this tree, and the bytes of the snapshot and of
/// the ref entry (both 0 when unchanged).
pub(crate) async fn forecast_snapshot(
    repo: &Repository,
    head: &SnapshotHead<'_>,
) -> Result<(SnapshotId, bool, u64, u64), OpError> {
    let mut snapshot = head.snapshot();
    let current = repo.ref_head(head.name).await?;
    if let Some(h) = &current {
        let parent = repo.read_snapshot(&h.snapshot).await?;
        snapshot.parent = Some(h.snapshot);
        if parent.same_tree(&snapshot) {
            return Ok((h.snapshot, true, 0, 0));
        }
    }
    let encoded = snapshot.encode();
    let id = repo.naming().snapshot(&encoded);
    let seq = current.as_ref().map_or(1, |h| h.seq + 1);
    let overhead = repo.sealing().overhead();
    let ref_len = ref_entry_len(head.name, seq, id) + overhead;
    Ok((id, false, encoded.len() as u64 + overhead, ref_len))
}

/// A target and what was uploaded to it.
pub(crate) type Finished = ((Repository, bool), UploadStats);

/// Per target: the snapshot, then the ref, once every pack is durable.
pub(crate) async fn finish_targets(
    targets: impl Iterator<Item = (Finished, &Presence)>,
    referenced: &HashSet<ChunkId>,
    head: &SnapshotHead<'_>,
    mode: &PushMode,
) -> Result<Vec<TargetReport>, OpError> {
    let mut reports = Vec::new();
    for (((repo, created), stats), presence) in targets {
        check_not_marked(&repo, &presence.rindex, referenced.iter().copied()).await?;
        let (snapshot, unchanged, shard) = finish_snapshot(&repo, head, mode).await?;
        reports.push(TargetReport {
            repo: repo.url(),
            snapshot,
            unchanged,
            created,
            stats,
            shard,
        });
    }
    Ok(reports)
}

/// A dry run's end: per target, what the snapshot and ref would be and their bytes, priced.
pub(crate) async fn forecast_targets(
    targets: impl Iterator<Item = (Finished, &Presence)>,
    head: &SnapshotHead<'_>,
    prices: &Prices,
) -> Result<(Vec<TargetReport>, DryRun), OpError> {
    let (mut reports, mut forecasts) = (Vec::new(), Vec::new());
    for (((repo, created), stats), _) in targets {
        let (snapshot, unchanged, snap_len, ref_len) = forecast_snapshot(&repo, head).await?;
        let quote = prices.quote(&head.source, &repo.url());
        let config_len = if created {
            repo.config().encode().len() as u64
        } else {
            0
        };
        let sizes = [stats.bytes_uploaded, snap_len, ref_len, config_len];
        forecasts.push(DryTarget::priced(repo.url(), sizes, quote));
        reports.push(TargetReport {
            repo: repo.url(),
            snapshot,
            unchanged,
            created,
            stats,
            shard: None,
        });
    }
    Ok((reports, DryRun::of(forecasts)))
}
