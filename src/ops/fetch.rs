//! Reading chunks back out of a repository: plans coalesced range reads over packs, fetches
//! them with a bounded number in flight, and checks every chunk against its id.

use std::sync::Arc;

use bytes::{Buf, Bytes, BytesMut};
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
    /// The stored frame, as in the pack; empty under [`Want::Raw`] in an encrypted repository
    /// (its frames are opened where they were read, not copied).
    pub frame: Bytes,
    /// The stored frame's length.
    pub stored: u64,
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

/// Whether fetched chunks are returned decoded, as stored frames, or both (all are verified).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Raw,
    Frames,
    Both,
}

impl Want {
    fn raw(self) -> bool {
        self != Want::Frames
    }
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
    frame: Stored,
    object: Arc<str>,
}

/// A stored frame: a view of its read, or (an encrypted frame whose stored bytes no caller
/// keeps) bytes of its own, opened where they lie instead of copied out first.
enum Stored {
    Shared(Bytes),
    Owned(BytesMut),
}

impl Stored {
    fn len(&self) -> usize {
        match self {
            Stored::Shared(b) => b.len(),
            Stored::Owned(b) => b.len(),
        }
    }
}

/// The frames of one read, in its plan order. Under [`Want::Raw`] in an encrypted repository
/// each frame gets its own bytes (the read is split where its frames lie, no copy) when the
/// read's buffer is not shared and its frames do not overlap; otherwise each is a view.
fn slice(bytes: Bytes, read: PackRead, own: bool, object: Arc<str>) -> Vec<Sliced> {
    let ranges: Vec<_> = read
        .chunks
        .iter()
        .map(|l| {
            let r = l.entry.range();
            (r.start - read.start) as usize..(r.end - read.start) as usize
        })
        .collect();
    let ordered = ranges.windows(2).all(|w| w[0].end <= w[1].start);
    let owned = if own && ordered {
        bytes.try_into_mut()
    } else {
        Err(bytes)
    };
    let frames: Vec<Stored> = match owned {
        Ok(mut whole) => {
            let mut at = 0;
            ranges
                .iter()
                .map(|r| {
                    whole.advance(r.start - at);
                    at = r.end;
                    Stored::Owned(whole.split_to(r.end - r.start))
                })
                .collect()
        }
        Err(bytes) => ranges
            .iter()
            .map(|r| Stored::Shared(bytes.slice(r.clone())))
            .collect(),
    };
    read.chunks
        .into_iter()
        .zip(frames)
        .map(|(location, frame)| Sliced {
            location,
            frame,
            object: object.clone(),
        })
        .collect()
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
            let own = want == Want::Raw && repo.sealing().is_encrypted();
            let frames = slice(bytes, read, own, object);
            Ok::<_, OpError>(futures::stream::iter(
                frames.into_iter().map(Ok::<_, OpError>),
            ))
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
    let (mut c, opened, object) =
        match tokio::task::spawn_blocking(move || check(&sealing, s, &naming, want))
            .await
            .map_err(OpError::join)??
        {
            Checked::Full(c) => return Ok(c),
            Checked::Delta(c, opened, object) => (c, opened, object),
        };
    c.base = crate::codec::delta_header(&opened)
        .ok()
        .flatten()
        .map(|h| h.base);
    let d = decode_frame_with(repo, bases, local, (opened, c.stored), &c.location, &object).await?;
    c.bases_read = d.read.saturating_sub(c.stored);
    c.key_stored = d.key_stored;
    c.raw = want.raw().then_some(d.raw);
    Ok(c)
}

/// A frame opened on a blocking thread: a full frame decoded and checked, or a delta frame
/// (opened, and its pack's URL) whose chain is still to read.
enum Checked {
    Full(CheckedFrame),
    Delta(CheckedFrame, Bytes, Arc<str>),
}

/// Opens a frame and, when it is a full frame, decodes it and checks it against its chunk
/// id (named by `naming`).
fn check(sealing: &Sealing, s: Sliced, naming: &Naming, want: Want) -> Result<Checked, OpError> {
    let entry = s.location.entry;
    let stored = s.frame.len() as u64;
    let (opened, frame) = match s.frame {
        Stored::Shared(frame) => (
            sealing.open_frame(&s.object, entry.offset, &entry.chunk, frame.clone()),
            frame,
        ),
        Stored::Owned(frame) => (
            sealing.open_frame_in_place(&s.object, entry.offset, &entry.chunk, frame),
            Bytes::new(),
        ),
    };
    let opened = opened.map_err(|e| OpError::Repo(e.into()))?;
    let checked = CheckedFrame {
        location: s.location,
        frame,
        stored,
        raw: None,
        delta: false,
        base: None,
        bases_read: 0,
        key_stored: 0,
    };
    if crate::codec::is_delta(&opened) {
        let delta = CheckedFrame {
            delta: true,
            ..checked
        };
        return Ok(Checked::Delta(delta, opened, s.object));
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
        raw: want.raw().then_some(raw),
        ..checked
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::PackEntry;

    fn read(frames: &[(u64, u32)]) -> PackRead {
        let chunks: Vec<ChunkLocation> = frames
            .iter()
            .map(|&(offset, frame_len)| ChunkLocation {
                pack: PackId([1; 32]),
                entry: PackEntry {
                    chunk: ChunkId([offset as u8; 32]),
                    offset,
                    frame_len,
                    raw_len: frame_len,
                },
            })
            .collect();
        PackRead {
            pack: PackId([1; 32]),
            start: 100,
            end: 160,
            chunks,
        }
    }

    fn contents(frames: &[Sliced]) -> Vec<(bool, Vec<u8>)> {
        frames
            .iter()
            .map(|f| match &f.frame {
                Stored::Owned(b) => (true, b.to_vec()),
                Stored::Shared(b) => (false, b.to_vec()),
            })
            .collect()
    }

    /// A read is split into its frames' own bytes where it may be (gaps between frames
    /// skipped), and into views where the buffer is shared, the frames are out of order, or
    /// owning is not asked: the same bytes either way.
    #[test]
    fn reads_split_into_owned_frames_only_where_they_may() {
        let data: Vec<u8> = (0..60u8).collect();
        let plan = read(&[(100, 10), (110, 20), (140, 15)]);
        let want: Vec<Vec<u8>> = vec![
            data[0..10].to_vec(),
            data[10..30].to_vec(),
            data[40..55].to_vec(),
        ];
        let object: Arc<str> = "packs/p".into();
        let owned = slice(
            Bytes::from(data.clone()),
            plan.clone(),
            true,
            object.clone(),
        );
        assert_eq!(
            contents(&owned),
            want.iter().map(|w| (true, w.clone())).collect::<Vec<_>>()
        );
        let shared_buffer = Bytes::from(data.clone());
        let _other_view = shared_buffer.clone();
        let shared = slice(shared_buffer, plan.clone(), true, object.clone());
        let not_asked = slice(
            Bytes::from(data.clone()),
            plan.clone(),
            false,
            object.clone(),
        );
        let mut backwards = plan;
        backwards.chunks.reverse();
        let unordered = slice(Bytes::from(data), backwards, true, object);
        for (frames, expect) in [
            (&shared, want.clone()),
            (&not_asked, want.clone()),
            (&unordered, want.iter().rev().cloned().collect()),
        ] {
            assert_eq!(
                contents(frames),
                expect.into_iter().map(|w| (false, w)).collect::<Vec<_>>()
            );
        }
    }
}
