//! Reading chunks back out of a repository: plans coalesced range reads over packs, fetches
//! them with a bounded number in flight, and checks every chunk against its id.

use bytes::Bytes;
use futures::{Stream, StreamExt};

use crate::ids::{ChunkId, PackId};
use crate::index::{ChunkLocation, RepoIndex};
use crate::ops::delta_base::{decode_frame_with, LocalBases, Locator};
use crate::ops::OpError;
use crate::repo::{RepoError, Repository};

/// Largest single range read.
const MAX_READ: u64 = 16 << 20;
/// Range reads in flight.
pub const READS_IN_FLIGHT: usize = 4;

/// One ranged GET covering adjacent frames of one pack.
#[derive(Debug, Clone)]
pub struct PackRead {
    pub pack: PackId,
    pub start: u64,
    pub end: u64,
    pub chunks: Vec<ChunkLocation>,
}

/// Looks up where each chunk lives; a chunk the index does not know is an error naming it.
pub fn locate(
    rindex: &RepoIndex,
    repo: &Repository,
    chunks: impl IntoIterator<Item = ChunkId>,
) -> Result<Vec<ChunkLocation>, OpError> {
    chunks
        .into_iter()
        .map(|id| {
            rindex.chunk_location(&id)?.ok_or_else(|| {
                OpError::Repo(RepoError::ChunkNotIndexed {
                    object: repo.url(),
                    chunk: id,
                })
            })
        })
        .collect()
}

/// Groups locations, in the given order, into reads of adjacent frames.
pub fn plan(locations: impl IntoIterator<Item = ChunkLocation>) -> Vec<PackRead> {
    let mut reads: Vec<PackRead> = Vec::new();
    for loc in locations {
        let r = loc.entry.range();
        if let Some(last) = reads.last_mut() {
            if last.pack == loc.pack && last.end == r.start && r.end - last.start <= MAX_READ {
                last.end = r.end;
                last.chunks.push(loc);
                continue;
            }
        }
        reads.push(PackRead {
            pack: loc.pack,
            start: r.start,
            end: r.end,
            chunks: vec![loc],
        });
    }
    reads
}

/// A frame read from a pack, checked against its chunk id.
pub struct CheckedFrame {
    pub location: ChunkLocation,
    /// The stored frame, as in the pack.
    pub frame: Bytes,
    /// The decoded bytes (only when asked for).
    pub raw: Option<Vec<u8>>,
    /// True when the frame is a delta (codec 3): it needs its base chunk to decode.
    pub delta: bool,
    /// Stored bytes of the base frames read from the repository to decode it (0 for a full
    /// frame).
    pub bases_read: u64,
}

/// Whether fetched chunks are returned decoded or as stored frames (both are verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Raw,
    Frames,
}

/// Fetches the planned reads in order, `READS_IN_FLIGHT` at a time, and verifies each chunk.
/// A delta frame's bases are looked up in `bases` and read from `repo` (`ops::delta_base`).
pub fn fetch<'a>(
    repo: &'a Repository,
    bases: &'a dyn Locator,
    reads: Vec<PackRead>,
    want: Want,
) -> impl Stream<Item = Result<Vec<CheckedFrame>, OpError>> + 'a {
    fetch_with(repo, bases, None, reads, want)
}

/// `fetch`, taking a delta frame's bases from `local` where it holds good copies (pull).
pub(crate) fn fetch_with<'a>(
    repo: &'a Repository,
    bases: &'a dyn Locator,
    local: Option<&'a dyn LocalBases>,
    reads: Vec<PackRead>,
    want: Want,
) -> impl Stream<Item = Result<Vec<CheckedFrame>, OpError>> + 'a {
    futures::stream::iter(reads)
        .map(move |read| async move {
            let bytes = repo
                .read_pack_range(&read.pack, read.start..read.end)
                .await?;
            let url = repo.pack_url(&read.pack);
            let object = url.clone();
            let mut frames = tokio::task::spawn_blocking(move || check(read, bytes, want, &url))
                .await
                .map_err(OpError::join)??;
            // A read's delta frames rebuild concurrently: each reads its chain of bases.
            let decoded =
                futures::future::try_join_all(frames.iter().filter(|f| f.delta).map(|f| {
                    decode_frame_with(repo, bases, local, f.frame.clone(), &f.location, &object)
                }))
                .await?;
            for (f, d) in frames.iter_mut().filter(|f| f.delta).zip(decoded) {
                f.bases_read = d.read.saturating_sub(f.frame.len() as u64);
                if want == Want::Raw {
                    f.raw = Some(d.raw);
                }
            }
            Ok(frames)
        })
        .buffered(READS_IN_FLIGHT)
}

fn check(
    read: PackRead,
    bytes: Bytes,
    want: Want,
    url: &str,
) -> Result<Vec<CheckedFrame>, OpError> {
    read.chunks
        .into_iter()
        .map(|loc| {
            let r = loc.entry.range();
            let frame = bytes.slice((r.start - read.start) as usize..(r.end - read.start) as usize);
            let (raw, delta) =
                match crate::codec::decode(&frame, loc.entry.raw_len as usize, &loc.entry.chunk) {
                    Ok(raw) => (Some(raw), false),
                    // Decoded (base read, result checked) by `fetch`.
                    Err(crate::codec::FrameError::NeedsBase { .. }) => (None, true),
                    Err(e) => {
                        return Err(OpError::Repo(RepoError::BadFrame {
                            object: url.to_string(),
                            chunk: loc.entry.chunk,
                            offset: r.start,
                            problem: Box::new(e),
                        }))
                    }
                };
            Ok(CheckedFrame {
                location: loc,
                frame,
                raw: raw.filter(|_| want == Want::Raw),
                delta,
                bases_read: 0,
            })
        })
        .collect()
}
