//! Verify: checks a repository's structure (configs, pack indexes, snapshots, refs) and,
//! with `--read-data`, re-reads every pack and re-hashes every chunk. A damaged or missing
//! pack's problem names `ferry repair`; packs already marked damaged are notes, and their
//! chunks count as absent (a snapshot that needs them is the problem then).

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use bytes::Bytes;
use serde::Serialize;

use crate::ids::{ChunkId, Naming, PackId, SnapshotId};
use crate::index::ChunkLocation;
use crate::ops::delta_base::decode_frame;
use crate::ops::OpError;
use crate::repo::pack::{read_pack_table, PackEntry, PackIndex};
use crate::repo::{index_path, snapshot_path, Repository, Sealing};

/// One problem found, with the object that holds it.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    pub object: String,
    pub problem: String,
}

/// The outcome of a verify.
#[derive(Debug, Serialize)]
pub struct VerifyReport {
    pub repo: String,
    pub ok: bool,
    pub problems: Vec<Problem>,
    /// Harmless findings, e.g. packs left without an index by an interrupted push.
    pub notes: Vec<Problem>,
    pub packs_checked: u64,
    pub chunks_checked: u64,
    pub snapshots_checked: u64,
    pub duration_secs: f64,
}

/// At most this many bad chunks are listed per pack.
const CHUNK_PROBLEMS_PER_PACK: usize = 5;

pub async fn verify(repo: &Repository, read_data: bool) -> Result<VerifyReport, OpError> {
    let started = Instant::now();
    let mut problems = Vec::new();
    let mut notes = Vec::new();
    let mut problem = |object: String, p: String| problems.push(Problem { object, problem: p });
    let repair = format!("; run `ferry repair {}` to stop relying on it", repo.url());
    let bad: HashSet<PackId> = repo.bad_pack_ids().await?;

    let packs: HashMap<PackId, u64> = repo
        .list_packs()
        .await?
        .into_iter()
        .map(|l| (l.id, l.size))
        .collect();
    let mut chunks: HashSet<ChunkId> = HashSet::new();
    let mut indexed = Vec::new();
    for id in repo.list_pack_indexes().await? {
        let url = repo.store().object_url(&index_path(&id));
        match repo.read_pack_index(&id).await {
            Ok(_) if bad.contains(&id) => {
                notes.push(Problem {
                    object: repo.pack_url(&id),
                    problem: "marked damaged by `ferry repair`: its chunks count as absent; a push uploads them anew and gc deletes the pack once no snapshot needs it".into(),
                });
            }
            Ok(idx) => {
                match packs.get(&id) {
                    None => problem(
                        url,
                        format!("its pack {} is missing{repair}", repo.pack_url(&id)),
                    ),
                    Some(size) if *size != idx.pack_size => problem(
                        repo.pack_url(&id),
                        format!(
                            "size {size} differs from the {} its index records{repair}",
                            idx.pack_size
                        ),
                    ),
                    Some(_) => {}
                }
                chunks.extend(idx.entries.iter().map(|e| e.chunk));
                indexed.push(idx);
            }
            Err(e) => problem(url, e.to_string()),
        }
    }
    let indexed_ids: HashSet<PackId> = indexed.iter().map(|i| i.pack).collect();
    for id in packs
        .keys()
        .filter(|id| !indexed_ids.contains(id) && !bad.contains(id))
    {
        notes.push(Problem {
            object: repo.pack_url(id),
            problem: "pack has no index (left by an interrupted push; unused)".into(),
        });
    }

    let snapshot_ids = repo.list_snapshots().await?;
    let snapshot_set: HashSet<_> = snapshot_ids.iter().copied().collect();
    for id in &snapshot_ids {
        let url = repo.store().object_url(&snapshot_path(id));
        match repo.read_snapshot(id).await {
            Ok(snap) => {
                let missing: Vec<_> = snap.chunks().filter(|c| !chunks.contains(&c.0)).collect();
                if let Some(first) = missing.first() {
                    problem(
                        url,
                        format!(
                            "references {} chunks no usable pack holds (first: {}); push its source again to upload them anew, or forget the snapshot",
                            missing.len(),
                            first.0
                        ),
                    );
                }
            }
            Err(e) => problem(url, e.to_string()),
        }
    }
    check_refs(repo, &snapshot_set, &mut problem).await?;

    let chunks_checked = if read_data {
        check_pack_data(repo, &indexed, &packs, &repair, &mut problem).await?
    } else {
        0
    };
    let ok = problems.is_empty();
    Ok(VerifyReport {
        repo: repo.url(),
        ok,
        problems,
        notes,
        packs_checked: indexed.len() as u64,
        chunks_checked,
        snapshots_checked: snapshot_ids.len() as u64,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// Every ref log entry must point to an existing snapshot.
async fn check_refs(
    repo: &Repository,
    snapshot_set: &HashSet<SnapshotId>,
    problem: &mut impl FnMut(String, String),
) -> Result<(), OpError> {
    for name in repo.ref_names().await? {
        match repo.ref_log(&name).await {
            Ok(log) => {
                for e in log.iter().filter(|e| !snapshot_set.contains(&e.snapshot)) {
                    problem(
                        repo.store()
                            .url()
                            .join(&format!("refs/{name}/{:020}", e.seq)),
                        format!("points to missing snapshot {}", e.snapshot),
                    );
                }
            }
            Err(e) => problem(
                repo.store().url().join(&format!("refs/{name}")),
                e.to_string(),
            ),
        }
    }
    Ok(())
}

/// `--read-data`: re-reads every indexed pack that exists and re-hashes its chunks; returns
/// how many chunks it checked.
async fn check_pack_data(
    repo: &Repository,
    indexed: &[PackIndex],
    packs: &HashMap<PackId, u64>,
    repair: &str,
    problem: &mut impl FnMut(String, String),
) -> Result<u64, OpError> {
    let mut chunks_checked = 0;
    let bases: HashMap<ChunkId, ChunkLocation> = indexed
        .iter()
        .filter(|i| packs.contains_key(&i.pack))
        .flat_map(|i| {
            i.entries.iter().map(|e| {
                let loc = ChunkLocation {
                    pack: i.pack,
                    entry: *e,
                };
                (e.chunk, loc)
            })
        })
        .collect();
    for idx in indexed {
        if !packs.contains_key(&idx.pack) {
            continue;
        }
        let url = repo.pack_url(&idx.pack);
        let data = match repo.read_pack(&idx.pack).await {
            Ok(d) => d,
            Err(e) => {
                problem(url, format!("{e}{repair}"));
                continue;
            }
        };
        let entries = idx.entries.clone();
        let pack_id = idx.pack;
        let pack_data = data.clone();
        let how = (repo.sealing().clone(), repo.naming().clone(), url.clone());
        let found = tokio::task::spawn_blocking(move || {
            check_pack(&pack_id, &pack_data, &entries, (&how.0, &how.1, &how.2))
        })
        .await
        .map_err(OpError::join)?;
        chunks_checked += idx.entries.len() as u64;
        for p in found.problems {
            problem(url.clone(), format!("{p}{repair}"));
        }
        // Delta frames: their bases are read (each checked), then the result is checked.
        for (e, _) in found.deltas {
            let r = e.range();
            let loc = ChunkLocation {
                pack: idx.pack,
                entry: e,
            };
            let frame = data.slice(r.start as usize..r.end as usize);
            if let Err(err) = decode_frame(repo, &bases, frame, &loc, &url).await {
                problem(url.clone(), err.to_string());
            }
        }
    }
    Ok(chunks_checked)
}

/// What [`check_pack`] found: problems, and the delta frames (with their bases), which it
/// cannot decode without reading their bases.
pub(crate) struct PackFindings {
    pub(crate) problems: Vec<String>,
    pub(crate) deltas: Vec<(PackEntry, ChunkId)>,
}

/// Re-hashes a pack and every chunk in it (opening each frame of an encrypted repository,
/// sealed as `sealing` says, ids named by `naming`; `object` names the pack).
pub(crate) fn check_pack(
    id: &PackId,
    data: &[u8],
    entries: &[PackEntry],
    (sealing, naming, object): (&Sealing, &Naming, &str),
) -> PackFindings {
    let mut out = Vec::new();
    let mut deltas = Vec::new();
    let actual = PackId::of(data);
    if actual != *id {
        out.push(format!("content hashes to {actual}, not its id"));
    }
    match read_pack_table(data, sealing, object) {
        Ok(table) if table != entries => out.push("its table differs from its index".into()),
        Ok(_) => {}
        Err(e) => out.push(format!("table unreadable: {e}")),
    }
    let mut bad = 0;
    for e in entries {
        let r = e.range();
        let Some(frame) = data.get(r.start as usize..r.end as usize) else {
            out.push(format!("chunk {} lies past the end of the pack", e.chunk));
            continue;
        };
        let opened = sealing.open_frame(object, e.offset, &e.chunk, Bytes::copy_from_slice(frame));
        let decoded = match opened {
            Ok(frame) => {
                if let Ok(Some(h)) = crate::codec::delta_header(&frame) {
                    deltas.push((*e, h.base));
                }
                unless_needs_base(crate::codec::decode(
                    &frame,
                    e.raw_len as usize,
                    &e.chunk,
                    naming,
                ))
                .map_err(|e| e.to_string())
            }
            Err(err) => Err(err.to_string()),
        };
        // A delta frame needs its base: `check_pack_data` checks it with the base read.
        if let Err(err) = decoded {
            bad += 1;
            if bad <= CHUNK_PROBLEMS_PER_PACK {
                out.push(format!("chunk {} at offset {}: {err}", e.chunk, e.offset));
            }
        }
    }
    if bad > CHUNK_PROBLEMS_PER_PACK {
        out.push(format!("{} more bad chunks", bad - CHUNK_PROBLEMS_PER_PACK));
    }
    PackFindings {
        problems: out,
        deltas,
    }
}

/// `Ok` for a frame that decoded or that is a delta (which needs its base to decode).
fn unless_needs_base(
    decoded: Result<Vec<u8>, crate::codec::FrameError>,
) -> Result<(), crate::codec::FrameError> {
    match decoded {
        Ok(_) | Err(crate::codec::FrameError::NeedsBase { .. }) => Ok(()),
        Err(e) => Err(e),
    }
}
