//! Replicate: repository → repository. Copies snapshots, ref entries and only the chunks the
//! target lacks, as stored frames (verified on the way, never recompressed).

use std::collections::HashSet;
use std::time::Instant;

use futures::StreamExt;
use serde::Serialize;

use crate::ids::{ChunkId, SnapshotId};
use crate::index::Index;
use crate::ops::fetch::{fetch, locate, plan, Want};
use crate::ops::sync::{check_not_marked, sync_index};
use crate::ops::uploader::{PackUploader, UploadStats};
use crate::ops::OpError;
use crate::progress::Progress;
use crate::repo::{Repository, Snapshot};

/// What a replication copied.
#[derive(Debug, Serialize)]
pub struct ReplicateReport {
    pub from: String,
    pub to: String,
    pub refs: Vec<String>,
    pub snapshots_copied: u64,
    pub chunks_copied: u64,
    pub bytes_downloaded: u64,
    #[serde(flatten)]
    pub upload: UploadStats,
    pub duration_secs: f64,
}

/// Copies the refs `names` (all refs when empty) from `from` to `to`.
pub async fn replicate(
    from: &Repository,
    to: &Repository,
    names: &[String],
    index: &Index,
    progress: bool,
) -> Result<ReplicateReport, OpError> {
    let started = Instant::now();
    if from.config().chunker != to.config().chunker {
        return Err(OpError::ChunkerMismatch {
            a: from.url(),
            b: to.url(),
        });
    }
    let from_index = index.repo(from.id())?;
    let to_index = index.repo(to.id())?;
    sync_index(from, &from_index).await?;
    let to_presence = sync_index(to, &to_index).await?;

    let names = if names.is_empty() {
        from.ref_names().await?
    } else {
        names.to_vec()
    };
    let present: HashSet<SnapshotId> = to.list_snapshots().await?.into_iter().collect();
    // Per ref: the source log entries the target's log lacks, oldest first.
    let mut plans = Vec::new();
    let mut wanted: Vec<SnapshotId> = Vec::new();
    for name in &names {
        let log = from.ref_log(name).await?;
        if log.is_empty() {
            return Err(crate::repo::RepoError::NoSuchSnapshot {
                spec: name.clone(),
                url: from.url(),
            }
            .into());
        }
        let have: HashSet<SnapshotId> = to
            .ref_log(name)
            .await?
            .into_iter()
            .map(|e| e.snapshot)
            .collect();
        let missing: Vec<SnapshotId> = log
            .iter()
            .map(|e| e.snapshot)
            .filter(|s| !have.contains(s))
            .collect();
        for s in &missing {
            if !present.contains(s) && !wanted.contains(s) {
                wanted.push(*s);
            }
        }
        plans.push((name.clone(), missing));
    }

    let mut uploader = PackUploader::new(to.clone(), to_index.clone(), 2);
    let mut sent: HashSet<ChunkId> = HashSet::new();
    let mut bytes_downloaded = 0;
    let mut chunks_copied = 0;
    let mut snapshots = Vec::new();
    let mut referenced = HashSet::new();
    for id in &wanted {
        let bytes = from.read_snapshot_bytes(id).await?;
        let snap = Snapshot::decode(&bytes).map_err(|p| crate::repo::RepoError::Corrupt {
            object: from.store().object_url(&crate::repo::snapshot_path(id)),
            problem: p,
        })?;
        let mut need = Vec::new();
        referenced.extend(snap.chunks().map(|c| c.0));
        for c in snap.chunks() {
            if !sent.contains(&c.0) && !to_presence.has(&c.0)? {
                sent.insert(c.0);
                need.push(c.0);
            }
        }
        let mut locations = locate(&from_index, from, need)?;
        // Pack order makes reads sequential and coalesced.
        locations.sort_by_key(|l| (l.pack, l.entry.offset));
        let reads = plan(locations);
        let total: u64 = reads.iter().map(|r| r.end - r.start).sum();
        let bar = Progress::bytes(progress, "replicate", total);
        let mut frames = std::pin::pin!(fetch(from, reads, Want::Frames));
        while let Some(batch) = frames.next().await {
            for f in batch? {
                bytes_downloaded += f.frame.len() as u64;
                bar.inc(f.frame.len() as u64);
                chunks_copied += 1;
                uploader
                    .add(f.location.entry.chunk, &f.frame, f.location.entry.raw_len)
                    .await?;
            }
        }
        bar.finish();
        snapshots.push((*id, bytes));
    }
    // Packs first, then snapshots, then refs.
    let upload = uploader.finish().await?;
    check_not_marked(to, &to_index, referenced).await?;
    for (id, bytes) in &snapshots {
        let written = to.write_snapshot_bytes(bytes.clone()).await?;
        debug_assert_eq!(written, *id);
    }
    for (name, missing) in &plans {
        for s in missing {
            to.advance_ref(name, *s).await?;
            index.mark_replicated(from.id(), to.id(), s)?;
        }
    }
    index.flush()?;
    Ok(ReplicateReport {
        from: from.url(),
        to: to.url(),
        refs: names,
        snapshots_copied: snapshots.len() as u64,
        chunks_copied,
        bytes_downloaded,
        upload,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}
