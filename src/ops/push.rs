//! Push: source → one or more repositories. The source is read once; each repository gets
//! only the chunks it lacks.
//!
//! Pipeline (every queue bounded):
//! `producer` (blocking thread: list, read, chunk, hash, dedup) → `compress` workers
//! (blocking threads: zstd) → packer (async: one `PackUploader` per repository, bounded uploads).
//! Then, once every pack is durable: snapshot, then ref.

use std::collections::HashSet;
use std::time::{Duration, Instant, SystemTime};

use serde::Serialize;

use crate::app::RefName;
use crate::chunker::{ChunkerParams, TensorCuts};
use crate::ids::{ChunkId, Naming, SnapshotId};
use crate::index::{CachedFile, FileCache, Index};
use crate::ops::egress::{DryRun, Prices};
use crate::ops::hasher::FileHasher;
use crate::ops::push_delta::{self, Counterparts};
use crate::ops::push_finish::{finish_targets, forecast_targets, SnapshotHead};
use crate::ops::push_read::FileReader;
use crate::ops::shard::{PushMode, ShardReport};
use crate::ops::source::{Source, SourceEntry};
use crate::ops::sync::{sync_index, Presence};
use crate::ops::targets::{common_format, files_cache_key, TargetSet};
use crate::ops::uploader::{PackUploader, UploadStats};
use crate::ops::{ratio, OpError};
use crate::progress::{Progress, Reporter};
use crate::repo::snapshot::Entry;
use crate::repo::{Repository, Sealing};

/// Packs uploading at once per repository.
const UPLOADS_IN_FLIGHT: usize = 2;

/// What a push did, overall and per repository.
#[derive(Debug, Serialize)]
pub struct PushReport {
    /// The ref pushed to.
    pub name: String,
    /// The source, as a store key.
    pub source: String,
    /// Files in the source (read plus unchanged).
    pub files_total: u64,
    /// Files read and cut.
    pub files_read: u64,
    /// Files known unchanged from the local index, not read.
    pub files_unchanged: u64,
    /// Bytes of all files in the source.
    pub bytes_total: u64,
    /// Bytes read and cut.
    pub bytes_read: u64,
    /// Chunks of all files in the snapshot.
    pub chunks_total: u64,
    /// Chunks at least one repository lacked, compressed and sent.
    pub chunks_new: u64,
    /// Chunks every repository already held.
    pub chunks_reused: u64,
    /// New chunks stored as element deltas against their counterpart in the ref's previous
    /// snapshot.
    pub chunks_delta: u64,
    /// Bytes the delta frames saved: their full frames' size minus theirs (what a push
    /// without deltas would have stored more).
    pub bytes_saved_by_deltas: u64,
    /// Bytes read back from the repository to encode deltas: counterparts missing from the
    /// local base cache (`index::bases`) and the frame heads that check a cached one.
    pub bytes_read_for_deltas: u64,
    /// Packs uploaded, summed over the repositories.
    pub packs_uploaded: u64,
    /// Bytes of the packs uploaded, summed over the repositories.
    pub bytes_uploaded: u64,
    /// Raw (uncompressed) bytes of the new chunks, counted once.
    pub bytes_new_logical: u64,
    /// Logical bytes of the tree over the raw bytes of new chunks.
    pub dedup_ratio: f64,
    /// Raw bytes of new chunks over their stored size.
    pub compression_ratio: f64,
    /// Wall-clock time of the push, in seconds.
    pub duration_secs: f64,
    /// One report per repository, in the order given.
    pub targets: Vec<TargetReport>,
    /// A dry run (`--dry-run`): nothing was written; the forecast per target, priced.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<DryRun>,
}

/// One repository's share of a push.
#[derive(Debug, Serialize)]
pub struct TargetReport {
    /// The repository's URL.
    pub repo: String,
    /// The snapshot written.
    pub snapshot: SnapshotId,
    /// True when the tree equals the ref's current snapshot: nothing was written.
    pub unchanged: bool,
    /// True when the push initialized this repository.
    pub created: bool,
    /// What was uploaded to this repository.
    #[serde(flatten)]
    pub stats: UploadStats,
    /// A sharded push: `snapshot` is this shard's partial; this says whether the run is
    /// committed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub shard: Option<ShardReport>,
}

/// A chunk some repository lacks, on its way to a compressor.
pub(crate) struct Job {
    pub(crate) id: ChunkId,
    pub(crate) data: std::sync::Arc<[u8]>,
    /// Element width for byte-plane compression (1: not elements).
    pub(crate) width: u8,
    /// The repositories that lack the chunk.
    pub(crate) targets: TargetSet,
    /// Its counterpart in the ref's previous snapshot, when a delta against it may pay.
    pub(crate) base: Option<ChunkId>,
}

struct Frame {
    id: ChunkId,
    raw_len: u32,
    /// The frame as stored (sealed in an encrypted repository).
    frame: Vec<u8>,
    /// The chunk a delta frame applies to.
    base: Option<ChunkId>,
    targets: TargetSet,
    /// For a delta frame, the bytes it saved against the full frame.
    delta_saved: Option<u64>,
}

#[derive(Default)]
struct Produced {
    entries: Vec<Entry>,
    files_read: u64,
    files_unchanged: u64,
    bytes_total: u64,
    bytes_read: u64,
    chunks_total: u64,
}

/// How a push decides that a file is unchanged since the last push, without reading it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ChangeCheck {
    /// Size, mtime, ctime and inode (local files) or etag (objects) equal the local index's
    /// record, and every chunk is still in each repository.
    #[default]
    Stat,
    /// Read and hash every file (`--rehash`), whatever the index says.
    Rehash,
}

/// How a push recognizes unchanged files and how deep its element deltas may chain.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PushOptions {
    /// How unchanged files are recognized.
    pub check: ChangeCheck,
    /// `push --deltas N`: the deepest delta chain this push builds on a delta repository, at
    /// most the repository's `max_depth`; 0 stores every changed chunk whole, a keyframe the
    /// next push's deltas rest on. `None`: the repository's.
    pub max_depth: Option<u8>,
}

/// Pushes `source` into every repository in `targets` under the ref `name`.
/// `targets` pairs each opened repository with whether this push created it.
pub async fn push(
    source: &Source,
    targets: Vec<(Repository, bool)>,
    name: &RefName,
    index: &Index,
    progress: &Reporter,
) -> Result<PushReport, OpError> {
    push_with(source, targets, name, index, progress, &PushMode::Replace).await
}

/// [`push`] with a choice of what the new snapshot holds (see [`PushMode`]).
pub async fn push_with(
    source: &Source,
    targets: Vec<(Repository, bool)>,
    name: &RefName,
    index: &Index,
    progress: &Reporter,
    mode: &PushMode,
) -> Result<PushReport, OpError> {
    push_checked(
        source,
        targets,
        name,
        index,
        progress,
        mode,
        PushOptions::default(),
    )
    .await
}

/// [`push_with`] with a choice of how unchanged files are recognized and how deep deltas
/// chain (see [`PushOptions`]).
/// A file that keeps changing while it is read fails the whole push with
/// [`OpError::SourceChanged`]: no snapshot is written, the ref does not move, and the chunks
/// of the files read so far stay in the repositories for the rerun.
pub async fn push_checked(
    source: &Source,
    targets: Vec<(Repository, bool)>,
    name: &RefName,
    index: &Index,
    progress: &Reporter,
    mode: &PushMode,
    opts: PushOptions,
) -> Result<PushReport, OpError> {
    run(source, targets, name, index, progress, (mode, opts, None)).await
}

/// A dry run of a plain push: reads the source, chunks, compresses and delta-encodes it as
/// [`push_checked`] would, and reports what it would send (`bytes_uploaded` per target is the
/// forecast of packs and pack indexes) with a dry-run forecast priced by `prices`; writes
/// nothing to any repository. The local index may learn the repositories' pack indexes (the
/// cache a real run refreshes too); the file cache is left alone.
pub async fn push_dry(
    source: &Source,
    targets: Vec<(Repository, bool)>,
    name: &RefName,
    index: &Index,
    progress: &Reporter,
    (opts, prices): (PushOptions, &Prices),
) -> Result<PushReport, OpError> {
    let how = (&PushMode::Replace, opts, Some(prices));
    run(source, targets, name, index, progress, how).await
}

/// Bytes of the files in `listing`.
fn file_bytes(listing: &[SourceEntry]) -> u64 {
    listing
        .iter()
        .map(|e| match e {
            SourceEntry::File(f) => f.size,
            _ => 0,
        })
        .sum()
}

async fn run(
    source: &Source,
    targets: Vec<(Repository, bool)>,
    name: &RefName,
    index: &Index,
    progress: &Reporter,
    (mode, opts, dry): (&PushMode, PushOptions, Option<&Prices>),
) -> Result<PushReport, OpError> {
    let started = Instant::now();
    let time = SystemTime::now();
    let (params, level) = common_format(&targets)?;
    let mut presences = Vec::new();
    for (repo, _) in &targets {
        let ri = index.repo(repo.id())?;
        presences.push(sync_index(repo, &ri).await?);
    }

    let listing = mode.select(source.list().await?);
    let bar = progress.bytes("push", file_bytes(&listing));
    // Chunk ids in the file cache are the repositories' names for the chunks: one cache per
    // source and naming.
    let naming = targets[0].0.naming().clone();
    let cache = index.files(&files_cache_key(&source.key(), &naming))?;
    let cuts = push_delta::tensor_cuts(&targets);
    let rindexes: Vec<_> = presences.iter().map(|p| p.rindex.clone()).collect();
    let (delta_target, counterparts) = push_delta::setup(
        &targets,
        &rindexes,
        index,
        name,
        (opts.max_depth, dry.is_some()),
    )
    .await?;
    let delta_side = push_delta::DeltaSide::of(delta_target.as_ref());

    // Stage 1 → 2: chunks to compress. Stage 2 → 3: frames to pack.
    let workers = std::thread::available_parallelism()
        .map_or(2, |n| n.get())
        .clamp(1, 8);
    let (job_tx, job_rx) = crossbeam_channel::bounded::<Job>(workers * 2);
    let (frame_tx, mut frame_rx) = tokio::sync::mpsc::channel::<Frame>(workers * 2);

    let rt = tokio::runtime::Handle::current();
    let producer = {
        let (source, presences, bar) = (source.clone(), presences.clone(), bar.clone());
        let check = (opts.check, dry.is_none());
        tokio::task::spawn_blocking(move || {
            let out = Out {
                jobs: &job_tx,
                rt: &rt,
                bar: &bar,
            };
            let read = (params, cuts, &counterparts, naming);
            produce(&source, listing, &cache, &presences, read, check, &out)
        })
    };
    let sealing = targets[0].0.sealing().clone();
    let compressors = spawn_compressors(workers, (level, sealing), delta_target, job_rx, frame_tx);

    let mut uploaders: Vec<PackUploader> = targets
        .iter()
        .zip(&presences)
        .map(|((repo, _), p)| {
            PackUploader::new(repo.clone(), p.rindex.clone(), UPLOADS_IN_FLIGHT)
                .repairing(p.damaged.clone())
                .avoiding(p.gc_marked())
                .dry_run(dry.is_some())
        })
        .collect();
    let mut packed = pack_frames(&mut frame_rx, &mut uploaders).await?;
    let produced = producer.await.map_err(OpError::join)??;
    for c in compressors {
        c.await.map_err(OpError::join)?;
    }
    packed.read_back = delta_side.read_back();
    let mut stats = Vec::new();
    for up in uploaders {
        bar.set_message(format!("finishing uploads to {}", up.repo().url()));
        stats.push(up.finish().await?);
    }
    bar.finish();

    // Every pack is durable: now the snapshot, then the ref.
    let referenced: HashSet<ChunkId> = produced
        .entries
        .iter()
        .flat_map(Entry::chunks)
        .map(|c| c.0)
        .collect();
    let head = SnapshotHead {
        time: humantime::format_rfc3339_seconds(time).to_string(),
        name,
        source: source.key(),
        entries: &produced.entries,
    };
    let targets = targets.into_iter().zip(stats).zip(&presences);
    let (reports, forecast) = match dry {
        None => (
            finish_targets(targets, &referenced, &head, mode).await?,
            None,
        ),
        Some(prices) => {
            let (reports, forecast) = forecast_targets(targets, &head, prices).await?;
            (reports, Some(forecast))
        }
    };
    index.flush()?;
    delta_side.keep_for_next(referenced).await?;

    let mut report = report(name, source, &produced, &packed, started, reports);
    report.dry_run = forecast;
    Ok(report)
}

/// What the frames of one push came to.
#[derive(Default)]
struct Packed {
    stored_new: u64,
    raw_new: u64,
    chunks_new: u64,
    chunks_delta: u64,
    delta_saved: u64,
    read_back: u64,
}

/// Hands each frame to the uploaders of the repositories that lack its chunk.
async fn pack_frames(
    frames: &mut tokio::sync::mpsc::Receiver<Frame>,
    uploaders: &mut [PackUploader],
) -> Result<Packed, OpError> {
    let mut p = Packed::default();
    while let Some(f) = frames.recv().await {
        p.stored_new += f.frame.len() as u64;
        p.raw_new += f.raw_len as u64;
        p.chunks_new += 1;
        if let Some(saved) = f.delta_saved {
            p.chunks_delta += 1;
            p.delta_saved += saved;
        }
        for t in f.targets.iter() {
            uploaders[t].add(f.id, &f.frame, f.raw_len, f.base).await?;
        }
    }
    Ok(p)
}

fn report(
    name: &str,
    source: &Source,
    produced: &Produced,
    packed: &Packed,
    started: Instant,
    reports: Vec<TargetReport>,
) -> PushReport {
    let Packed {
        stored_new,
        raw_new,
        chunks_new,
        chunks_delta,
        delta_saved,
        read_back,
    } = *packed;
    let packs_uploaded = reports.iter().map(|r| r.stats.packs_uploaded).sum();
    let bytes_uploaded = reports.iter().map(|r| r.stats.bytes_uploaded).sum();
    PushReport {
        name: name.to_string(),
        source: source.key(),
        files_total: produced.files_read + produced.files_unchanged,
        files_read: produced.files_read,
        files_unchanged: produced.files_unchanged,
        bytes_total: produced.bytes_total,
        bytes_read: produced.bytes_read,
        chunks_total: produced.chunks_total,
        chunks_new,
        chunks_reused: produced.chunks_total.saturating_sub(chunks_new),
        chunks_delta,
        bytes_saved_by_deltas: delta_saved,
        bytes_read_for_deltas: read_back,
        packs_uploaded,
        bytes_uploaded,
        bytes_new_logical: raw_new,
        dedup_ratio: ratio(produced.bytes_total, raw_new),
        compression_ratio: ratio(raw_new, stored_new),
        duration_secs: started.elapsed().as_secs_f64(),
        targets: reports,
        dry_run: None,
    }
}

/// One compressor per worker, each on a blocking thread: chunks in, frames out.
fn spawn_compressors(
    workers: usize,
    (level, sealing): (i32, Sealing),
    delta_target: Option<push_delta::DeltaTarget>,
    job_rx: crossbeam_channel::Receiver<Job>,
    frame_tx: tokio::sync::mpsc::Sender<Frame>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let mut compressors = Vec::new();
    for _ in 0..workers {
        let (rx, tx) = (job_rx.clone(), frame_tx.clone());
        let (delta_target, sealing) = (delta_target.clone(), sealing.clone());
        compressors.push(tokio::task::spawn_blocking(move || {
            let mut encoder = push_delta::FrameChooser::new(level, delta_target);
            let (mut busy, mut blocked) = (Duration::ZERO, Duration::ZERO);
            for job in rx {
                let t0 = Instant::now();
                let chosen = encoder.choose(&job.id, &job.data, job.width, job.base);
                let base = crate::codec::delta_header(&chosen.frame)
                    .ok()
                    .flatten()
                    .map(|h| h.base);
                let frame = sealing.seal_frame(&job.id, chosen.frame);
                let t1 = Instant::now();
                busy += t1 - t0;
                let out = Frame {
                    id: job.id,
                    raw_len: job.data.len() as u32,
                    frame,
                    base,
                    targets: job.targets,
                    delta_saved: chosen.delta_saved,
                };
                if tx.blocking_send(out).is_err() {
                    break;
                }
                blocked += t1.elapsed();
            }
            tracing::debug!(?busy, ?blocked, "compressor done");
        }));
    }
    compressors
}

/// Where the producer sends its work.
pub(crate) struct Out<'a> {
    pub(crate) jobs: &'a crossbeam_channel::Sender<Job>,
    pub(crate) rt: &'a tokio::runtime::Handle,
    pub(crate) bar: &'a Progress,
}

/// Reads every file that changed, chunks and hashes it, and sends chunks some repository
/// lacks to the compressors. Runs on a blocking thread.
fn produce(
    source: &Source,
    listing: Vec<SourceEntry>,
    cache: &FileCache,
    presences: &[Presence],
    (params, cuts, counterparts, naming): (ChunkerParams, TensorCuts, &Counterparts, Naming),
    (check, keep_cache): (ChangeCheck, bool),
    out_to: &Out<'_>,
) -> Result<Produced, OpError> {
    let mut out = Produced::default();
    let mut reader = FileReader {
        source,
        params,
        cuts,
        counterparts,
        presences,
        naming,
        out: out_to,
        buffer: Vec::new(),
        hasher: FileHasher::spawn(),
        sent: vec![HashSet::new(); presences.len()],
        waited: Duration::ZERO,
    };
    let started = Instant::now();
    for entry in listing {
        let file = match entry {
            SourceEntry::Dir { rel, mode } => {
                out.entries.push(Entry::Dir { path: rel, mode });
                continue;
            }
            SourceEntry::Symlink { rel, target } => {
                out.entries.push(Entry::Symlink { path: rel, target });
                continue;
            }
            SourceEntry::File(f) => f,
        };
        let cached = match check {
            ChangeCheck::Stat => cache.get(&file.rel)?,
            ChangeCheck::Rehash => None,
        };
        if let Some(c) = cached {
            if c.size == file.size
                && c.mtime_ns == file.mtime_ns
                && c.ctime_ns == file.ctime_ns
                && c.ino == file.ino
                && c.etag == file.etag
            {
                let mut complete = true;
                for ch in &c.chunks {
                    if !reader.lacking(&ch.0)?.is_empty() {
                        complete = false;
                        break;
                    }
                }
                if complete {
                    out.bytes_total += file.size;
                    out.files_unchanged += 1;
                    out.chunks_total += c.chunks.len() as u64;
                    out_to.bar.inc(file.size);
                    out.entries.push(Entry::File {
                        path: file.rel,
                        size: c.size,
                        mode: file.mode,
                        mtime_ns: file.mtime_ns,
                        blake3: c.blake3,
                        layout: c.layout,
                        chunks: c.chunks,
                    });
                    continue;
                }
            }
        }
        let read = reader.read_stable(&file)?;
        let state = &read.state;
        out.bytes_total += state.size;
        out.files_read += 1;
        out.bytes_read += state.size;
        out.chunks_total += read.chunks.len() as u64;
        let record = CachedFile {
            size: state.size,
            mtime_ns: state.mtime_ns,
            ctime_ns: state.ctime_ns,
            ino: state.ino,
            etag: file.etag.clone(),
            mode: file.mode,
            blake3: read.blake3,
            layout: read.layout,
            chunks: read.chunks.clone(),
        };
        if keep_cache {
            cache.put(&file.rel, &record)?;
        }
        out.entries.push(Entry::File {
            path: file.rel,
            size: state.size,
            mode: file.mode,
            mtime_ns: state.mtime_ns,
            blake3: read.blake3,
            layout: read.layout,
            chunks: read.chunks,
        });
    }
    tracing::debug!(elapsed = ?started.elapsed(), blocked_on_compressors = ?reader.waited, "producer done");
    Ok(out)
}
