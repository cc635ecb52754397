//! Replication between repositories sealed differently — one plain and one encrypted, or
//! encrypted under two data keys — where frames cannot be copied as stored: each chunk of each
//! snapshot the target lacks is read and checked in the source, named and sealed anew for the
//! target (a full frame: delta chains are not carried over), and each snapshot is written again
//! with the target's chunk ids, then the target's ref is moved to it.
//!
//! Which source snapshot became which target snapshot is kept in the local index
//! (`resealed/<from id>/<to id>`); a snapshot whose target counterpart is already in the
//! target's ref log is skipped. Without that record (a new local index) a run reads the
//! source's chunks again, but uploads only what the target lacks, and writes the same target
//! snapshot (its bytes, and so its id, depend only on the source snapshot and the target's
//! naming), which the ref log already names.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;

use crate::ids::{ChunkId, SnapshotId};
use crate::index::{Index, RepoIndex};
use crate::ops::fetch::{fetch, locate, plan, Want};
use crate::ops::ref_log::ref_log;
use crate::ops::replicate::ReplicateReport;
use crate::ops::sync::{check_not_marked, sync_index, Presence};
use crate::ops::uploader::PackUploader;
use crate::ops::OpError;
use crate::progress::Reporter;
use crate::repo::snapshot::{ChunkRef, Entry, Snapshot};
use crate::repo::{RepoError, Repository};

/// What one run re-sealed, counted as it goes.
#[derive(Default)]
struct Counts {
    chunks: u64,
    bytes_downloaded: u64,
}

/// Copies the refs `names` (all when empty) from `from` into `to`, re-naming and re-sealing
/// every chunk (see the module).
pub(crate) async fn replicate_resealed(
    from: &Repository,
    to: &Repository,
    names: &[String],
    index: &Index,
    progress: &Reporter,
) -> Result<ReplicateReport, OpError> {
    let started = Instant::now();
    let from_index = index.repo(from.id())?;
    let to_index = index.repo(to.id())?;
    sync_index(from, &from_index).await?;
    let presence = sync_index(to, &to_index).await?;
    let names = if names.is_empty() {
        from.ref_names().await?
    } else {
        names.to_vec()
    };
    let mut uploader =
        PackUploader::new(to.clone(), to_index.clone(), 2).avoiding(presence.gc_marked());
    let mut renamed: HashMap<ChunkId, ChunkId> = HashMap::new();
    let mut counts = Counts::default();
    // (ref, source snapshot, the target's snapshot, encoded), in log order.
    let mut written: Vec<(String, SnapshotId, Bytes)> = Vec::new();
    let mut referenced: HashSet<ChunkId> = HashSet::new();
    let mut mapped: HashMap<SnapshotId, SnapshotId> = HashMap::new();
    for name in &names {
        let log = ref_log(from, &from_index, name).await?;
        if log.is_empty() {
            return Err(RepoError::NoSuchSnapshot {
                spec: name.clone(),
                url: from.url(),
            }
            .into());
        }
        let have: HashSet<SnapshotId> = ref_log(to, &to_index, name)
            .await?
            .into_iter()
            .map(|e| e.snapshot)
            .collect();
        for entry in log {
            let known = index.resealed(from.id(), to.id(), &entry.snapshot)?;
            if let Some(dst) = known {
                mapped.insert(entry.snapshot, dst);
                if have.contains(&dst) {
                    continue;
                }
            }
            let snap = from.read_snapshot(&entry.snapshot).await?;
            let need: Vec<ChunkId> = snap
                .chunks()
                .map(|c| c.0)
                .filter(|c| !renamed.contains_key(c))
                .collect::<HashSet<_>>()
                .into_iter()
                .collect();
            let sink = (&mut uploader, &mut renamed, &mut counts);
            reseal_chunks(from, &from_index, to, need, (&presence, sink), progress).await?;
            let snap = renamed_snapshot(from, snap, &renamed, &mapped)?;
            referenced.extend(snap.chunks().map(|c| c.0));
            let encoded = Bytes::from(snap.encode());
            mapped.insert(entry.snapshot, to.naming().snapshot(&encoded));
            written.push((name.clone(), entry.snapshot, encoded));
        }
    }
    // Packs first, then snapshots, then refs.
    let upload = uploader.finish().await?;
    check_not_marked(to, &to_index, referenced).await?;
    let mut refs_advanced = 0;
    for (name, src, encoded) in &written {
        let dst = to.write_snapshot_bytes(encoded.clone()).await?;
        if to.advance_ref_once(name, dst).await?.is_some() {
            refs_advanced += 1;
        }
        index.mark_resealed(from.id(), to.id(), src, &dst)?;
    }
    index.flush()?;
    Ok(ReplicateReport {
        from: from.url(),
        to: to.url(),
        refs: names,
        snapshots_copied: written.len() as u64,
        chunks_copied: counts.chunks,
        bytes_downloaded: counts.bytes_downloaded,
        chunks_delta: 0,
        bytes_saved_by_deltas: 0,
        upload,
        refs_advanced,
        resealed: true,
        shard: None,
        duration_secs: started.elapsed().as_secs_f64(),
        dry_run: None,
    })
}

/// Reads the source chunks `need` (each checked against its id), names each for the target,
/// and uploads a new full frame sealed for the target unless the target holds it already.
async fn reseal_chunks(
    from: &Repository,
    from_index: &RepoIndex,
    to: &Repository,
    mut need: Vec<ChunkId>,
    (presence, (uploader, renamed, counts)): (
        &Presence,
        (
            &mut PackUploader,
            &mut HashMap<ChunkId, ChunkId>,
            &mut Counts,
        ),
    ),
    progress: &Reporter,
) -> Result<(), OpError> {
    if need.is_empty() {
        return Ok(());
    }
    need.sort();
    let mut locations = locate(from_index, from, need)?;
    locations.sort_by_key(|l| (l.pack, l.entry.offset));
    let reads = plan(locations);
    let total: u64 = reads.iter().map(|r| r.end - r.start).sum();
    let bar = progress.bytes("re-encrypt", total);
    let (naming, sealing, level) = (
        to.naming().clone(),
        to.sealing().clone(),
        to.config().zstd_level,
    );
    // Each chunk named, compressed and sealed on a blocking thread, one per core at a time,
    // in fetch order.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get().min(16));
    let resealed = fetch(from, from_index, reads, Want::Raw)
        .map(|f| {
            let (naming, sealing) = (naming.clone(), sealing.clone());
            async move {
                let mut f = f?;
                let raw = f.raw.take().expect("fetch with Want::Raw yields the bytes");
                let (dst, frame) = tokio::task::spawn_blocking(move || {
                    let dst = naming.chunk(&raw);
                    let frame = crate::codec::encode(&raw, level);
                    (dst, sealing.seal_frame(&dst, frame))
                })
                .await
                .map_err(OpError::join)?;
                Ok::<_, OpError>((f, dst, frame))
            }
        })
        .buffered(workers);
    let mut resealed = std::pin::pin!(resealed);
    let mut sent: HashSet<ChunkId> = HashSet::new();
    while let Some(next) = resealed.next().await {
        let (f, dst, frame) = next?;
        counts.bytes_downloaded += f.stored + f.bases_read;
        bar.inc(f.stored);
        renamed.insert(f.location.entry.chunk, dst);
        if sent.insert(dst) && !presence.has(&dst)? {
            counts.chunks += 1;
            uploader
                .add(dst, &frame, f.location.entry.raw_len, None)
                .await?;
        }
    }
    bar.finish();
    Ok(())
}

/// `snap` (of `from`) with the target's chunk ids (every chunk is in `renamed`: fetching
/// fails on one it cannot find) and its parent's counterpart in the target, when known.
fn renamed_snapshot(
    from: &Repository,
    mut snap: Snapshot,
    renamed: &HashMap<ChunkId, ChunkId>,
    mapped: &HashMap<SnapshotId, SnapshotId>,
) -> Result<Snapshot, OpError> {
    for entry in &mut snap.entries {
        if let Entry::File { chunks, .. } = entry {
            for ChunkRef(id, _) in chunks.iter_mut() {
                *id = *renamed.get(id).ok_or(RepoError::ChunkNotIndexed {
                    object: from.url(),
                    chunk: *id,
                })?;
            }
        }
    }
    snap.parent = snap.parent.and_then(|p| mapped.get(&p).copied());
    Ok(snap)
}
