//! Delta bases: turning a frame that may be an element delta (codec 3) back into its chunk by
//! reading its chain of bases from the repository, each checked against its id, the result
//! checked against the chunk's id. Shared by restore, pull, replicate, gc's rewrite,
//! `verify --read-data` and push (which reads a counterpart to encode against).
//!
//! Pull passes `LocalBases`: a base found (and checked) in an earlier local version is not
//! read from the store, so pulling a delta step over its predecessor reads about the deltas.
//!
//! At most `codec::MAX_DELTA_DEPTH` delta frames are followed for one chunk, so a broken or
//! hostile chain (even a cycle) ends in an error, not a loop. The depth a frame records is the
//! writer's view; another copy of a base (a chunk stored twice) may sit deeper, which costs
//! reads but never correctness.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;

use bytes::Bytes;

use crate::codec::{self, FrameError, MAX_DELTA_DEPTH};
use crate::ids::ChunkId;
use crate::index::{ChunkLocation, RepoIndex};
use crate::ops::OpError;
use crate::repo::pack::PackIndex;
use crate::repo::{RepoError, Repository};

/// Where a chunk's frame lives: the local index, or a map built from pack indexes.
pub trait Locator: Sync {
    fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, OpError>;
}

impl Locator for RepoIndex {
    fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, OpError> {
        Ok(self.chunk_location(id)?)
    }
}

impl Locator for HashMap<ChunkId, ChunkLocation> {
    fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, OpError> {
        Ok(self.get(id).copied())
    }
}

type Found<'a> = Pin<Box<dyn Future<Output = Result<Option<Vec<u8>>, OpError>> + Send + 'a>>;

/// Copies of chunks outside the repository that a delta's base may be taken from before the
/// store is read (pull: the files of the earlier versions in its folder).
pub(crate) trait LocalBases: Sync {
    /// Chunk `id`'s bytes, checked against `id`; `None` when there is no copy or it is
    /// damaged (the base is then read from the store).
    fn read<'a>(&'a self, id: &'a ChunkId) -> Found<'a>;
    /// Called with the size of each base frame read from the store instead.
    fn read_from_store(&self, bytes: u64);
}

/// A chunk's raw bytes and the depth of the frame they came from (0: a full frame).
pub(crate) struct Decoded {
    pub(crate) raw: Vec<u8>,
    pub(crate) depth: u8,
}

type Boxed<'a> = Pin<Box<dyn Future<Output = Result<Decoded, OpError>> + Send + 'a>>;

/// Decodes `frame` (the stored frame of chunk `loc`, read from `object`), reading the bases
/// of a delta frame from `repo`.
pub(crate) async fn decode_frame(
    repo: &Repository,
    bases: &dyn Locator,
    frame: Bytes,
    loc: &ChunkLocation,
    object: &str,
) -> Result<Decoded, OpError> {
    decode_frame_with(repo, bases, None, frame, loc, object).await
}

/// `decode_frame`, taking each base from `local` when it holds a good copy of it.
pub(crate) async fn decode_frame_with(
    repo: &Repository,
    bases: &dyn Locator,
    local: Option<&dyn LocalBases>,
    frame: Bytes,
    loc: &ChunkLocation,
    object: &str,
) -> Result<Decoded, OpError> {
    decode_below(
        repo,
        bases,
        local,
        frame,
        *loc,
        object.to_string(),
        MAX_DELTA_DEPTH,
    )
    .await
}

/// Reads chunk `id` from `repo` and decodes it (following delta bases).
pub(crate) async fn read_chunk(
    repo: &Repository,
    bases: &dyn Locator,
    id: &ChunkId,
) -> Result<Decoded, OpError> {
    read_below(repo, bases, None, *id, MAX_DELTA_DEPTH).await
}

fn read_below<'a>(
    repo: &'a Repository,
    bases: &'a dyn Locator,
    local: Option<&'a dyn LocalBases>,
    id: ChunkId,
    below: u8,
) -> Boxed<'a> {
    Box::pin(async move {
        if let Some(local) = local {
            if let Some(raw) = local.read(&id).await? {
                return Ok(Decoded { raw, depth: 0 });
            }
        }
        let loc = bases.locate(&id)?.ok_or_else(|| {
            OpError::Repo(RepoError::ChunkNotIndexed {
                object: repo.url(),
                chunk: id,
            })
        })?;
        let frame = repo.read_pack_range(&loc.pack, loc.entry.range()).await?;
        if let Some(local) = local {
            local.read_from_store(frame.len() as u64);
        }
        let object = repo.pack_url(&loc.pack);
        decode_below(repo, bases, local, frame, loc, object, below).await
    })
}

fn decode_below<'a>(
    repo: &'a Repository,
    bases: &'a dyn Locator,
    local: Option<&'a dyn LocalBases>,
    frame: Bytes,
    loc: ChunkLocation,
    object: String,
    below: u8,
) -> Boxed<'a> {
    Box::pin(async move {
        let id = loc.entry.chunk;
        let raw_len = loc.entry.raw_len as usize;
        let at = loc.entry.offset;
        let bad = |problem: FrameError| {
            OpError::Repo(RepoError::BadFrame {
                object: object.clone(),
                chunk: id,
                offset: at,
                problem: Box::new(problem),
            })
        };
        let header = codec::delta_header(&frame)
            .map_err(bad)?
            .map(|h| (h.depth, h.base));
        let Some((depth, base)) = header else {
            let raw = blocking(move || codec::decode(&frame, raw_len, &id))
                .await?
                .map_err(bad)?;
            return Ok(Decoded { raw, depth: 0 });
        };
        if below == 0 {
            return Err(bad(FrameError::DeltaHeader(
                "delta chain longer than 16 frames",
            )));
        }
        let base_raw = read_below(repo, bases, local, base, below - 1)
            .await
            .map_err(|e| OpError::DeltaBaseUnreadable {
                object: object.clone(),
                chunk: id,
                offset: at,
                base,
                source: Box::new(e),
            })?;
        let raw = blocking(move || {
            let h = codec::delta_header(&frame)?.ok_or(FrameError::DeltaHeader("not a delta"))?;
            codec::decode_delta(&h, &base_raw.raw, raw_len, &id)
        })
        .await?
        .map_err(|problem| {
            OpError::Repo(RepoError::BadDelta {
                object: object.clone(),
                chunk: id,
                offset: at,
                base,
                problem: Box::new(problem),
            })
        })?;
        Ok(Decoded { raw, depth })
    })
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, OpError> {
    tokio::task::spawn_blocking(f).await.map_err(OpError::join)
}

/// `live` and every chunk a delta frame of a live chunk needs as its base, transitively (from
/// every pack index, whichever copy of a chunk gc keeps).
pub(crate) fn with_bases(mut live: HashSet<ChunkId>, indexes: &[PackIndex]) -> HashSet<ChunkId> {
    let mut bases: HashMap<ChunkId, Vec<ChunkId>> = HashMap::new();
    for b in indexes.iter().flat_map(|i| &i.bases) {
        bases.entry(b.chunk).or_default().push(b.base);
    }
    if bases.is_empty() {
        return live;
    }
    let mut todo: Vec<ChunkId> = live.iter().copied().collect();
    while let Some(c) = todo.pop() {
        for b in bases.get(&c).into_iter().flatten() {
            if live.insert(*b) {
                todo.push(*b);
            }
        }
    }
    live
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_deltas_keep_their_bases_transitively() {
        use crate::repo::pack::DeltaBase;
        let id = |c: u8| ChunkId::of(&[c]);
        let mut p = PackIndex {
            pack: crate::ids::PackId::of(b"p"),
            pack_size: 0,
            entries: Vec::new(),
            bases: Vec::new(),
        };
        // 3 is a delta on 2, 2 on 1; 4 stands alone.
        p.bases = vec![
            DeltaBase {
                chunk: id(3),
                base: id(2),
            },
            DeltaBase {
                chunk: id(2),
                base: id(1),
            },
        ];
        let live = with_bases([id(3)].into(), std::slice::from_ref(&p));
        assert_eq!(live, [id(1), id(2), id(3)].into());
        let live = with_bases([id(4)].into(), std::slice::from_ref(&p));
        assert_eq!(live, [id(4)].into());
    }
}
