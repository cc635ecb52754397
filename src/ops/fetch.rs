//! Reading chunks back out of a repository: plans coalesced range reads over packs, fetches
//! them with a bounded number in flight, and checks every chunk against its id.

use std::sync::Arc;

use bytes::Bytes;
use futures::{Stream, StreamExt, TryStreamExt};

use crate::ids::Naming;
use crate::ids::{ChunkId, PackId};
use crate::index::{ChunkLocation, RepoIndex};
use crate::ops::delta_base::{decode_frame_with, LocalBases, Locator};
use crate::ops::OpError;
use crate::repo::{RepoError, Repository, Sealing};

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
    /// The chunk a delta frame applies to (`None` for a full frame).
    pub base: Option<ChunkId>,
    /// Stored bytes of the base frames read from the repository to decode it (0 for a full
    /// frame).
    pub bases_read: u64,
    /// For a delta frame, the stored size of the full frame its chain rests on (0 for a full
    /// frame, or when that base came from a local copy).
    pub key_stored: u64,
}

/// Whether fetched chunks are returned decoded or as stored frames (both are verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Raw,
    Frames,
}

/// Fetches the planned reads in order, `READS_IN_FLIGHT` at a time, and verifies each chunk,
/// yielding them one by one in plan order.
/// A delta frame's bases are looked up in `bases` and read from `repo` (`ops::delta_base`).
pub fn fetch<'a>(
    repo: &'a Repository,
    bases: &'a dyn Locator,
    reads: Vec<PackRead>,
    want: Want,
) -> impl Stream<Item = Result<CheckedFrame, OpError>> + 'a {
    fetch_with(repo, bases, None, reads, want)
}

/// A frame sliced out of a read, not yet decoded.
struct Sliced {
    location: ChunkLocation,
    frame: Bytes,
    object: Arc<str>,
}

/// `fetch`, taking a delta frame's bases from `local` where it holds good copies (pull).
///
/// Two stages: range reads (`READS_IN_FLIGHT`), then each chunk decoded and checked on a
/// blocking thread, `decodes_in_flight()` at a time over a window that slides chunk by chunk
/// (not read by read), so one slow chain never leaves a core idle while the window waits on it.
pub(crate) fn fetch_with<'a>(
    repo: &'a Repository,
    bases: &'a dyn Locator,
    local: Option<&'a dyn LocalBases>,
    reads: Vec<PackRead>,
    want: Want,
) -> impl Stream<Item = Result<CheckedFrame, OpError>> + 'a {
    futures::stream::iter(reads)
        .map(move |read| async move {
            let bytes = repo
                .read_pack_range(&read.pack, read.start..read.end)
                .await?;
            let object: Arc<str> = repo.pack_url(&read.pack).into();
            let frames: Vec<Result<Sliced, OpError>> = read
                .chunks
                .into_iter()
                .map(|location| {
                    let r = location.entry.range();
                    let at = (r.start - read.start) as usize..(r.end - read.start) as usize;
                    Ok(Sliced {
                        location,
                        frame: bytes.slice(at),
                        object: object.clone(),
                    })
                })
                .collect();
            Ok::<_, OpError>(futures::stream::iter(frames))
        })
        .buffered(READS_IN_FLIGHT)
        .try_flatten()
        .map(move |sliced| async move { decode(repo, bases, local, sliced?, want).await })
        .buffered(decodes_in_flight())
}

/// Chunks decoded at once: one per core, and two more so a core never waits for the next.
/// Asked of the system once per process: `fetch` runs once per file, and finding the cores
/// reads cgroup files.
fn decodes_in_flight() -> usize {
    static N: std::sync::LazyLock<usize> = std::sync::LazyLock::new(|| {
        std::thread::available_parallelism().map_or(2, |n| n.get().min(32)) + 2
    });
    *N
}

/// Decodes and checks one frame: a full frame on a blocking thread, a delta frame through its
/// chain of bases (`delta_base`, which rebuilds on a blocking thread).
async fn decode(
    repo: &Repository,
    bases: &dyn Locator,
    local: Option<&dyn LocalBases>,
    s: Sliced,
    want: Want,
) -> Result<CheckedFrame, OpError> {
    let (sealing, naming) = (repo.sealing().clone(), repo.naming().clone());
    let (s, opened) = match tokio::task::spawn_blocking(move || check(&sealing, s, &naming, want))
        .await
        .map_err(OpError::join)??
    {
        Checked::Full(c) => return Ok(c),
        Checked::Delta(s, opened) => (s, opened),
    };
    let base = crate::codec::delta_header(&opened)
        .ok()
        .flatten()
        .map(|h| h.base);
    let stored = s.frame.len() as u64;
    let d = decode_frame_with(repo, bases, local, (opened, stored), &s.location, &s.object).await?;
    Ok(CheckedFrame {
        location: s.location,
        bases_read: d.read.saturating_sub(stored),
        key_stored: d.key_stored,
        frame: s.frame,
        raw: (want == Want::Raw).then_some(d.raw),
        delta: true,
        base,
    })
}

/// A frame opened on a blocking thread: a full frame decoded and checked, or a delta frame
/// (opened) whose chain is still to read.
enum Checked {
    Full(CheckedFrame),
    Delta(Sliced, Bytes),
}

/// Opens a frame and, when it is a full frame, decodes it and checks it against its chunk
/// id (named by `naming`).
fn check(sealing: &Sealing, s: Sliced, naming: &Naming, want: Want) -> Result<Checked, OpError> {
    let entry = s.location.entry;
    let opened = sealing
        .open_frame(&s.object, entry.offset, &entry.chunk, s.frame.clone())
        .map_err(|e| OpError::Repo(e.into()))?;
    if crate::codec::is_delta(&opened) {
        return Ok(Checked::Delta(s, opened));
    }
    let raw = crate::codec::decode(&opened, entry.raw_len as usize, &entry.chunk, naming).map_err(
        |e| {
            OpError::Repo(RepoError::BadFrame {
                object: s.object.to_string(),
                chunk: entry.chunk,
                offset: entry.offset,
                problem: Box::new(e),
            })
        },
    )?;
    Ok(Checked::Full(CheckedFrame {
        location: s.location,
        frame: s.frame,
        raw: (want == Want::Raw).then_some(raw),
        delta: false,
        base: None,
        bases_read: 0,
        key_stored: 0,
    }))
}
