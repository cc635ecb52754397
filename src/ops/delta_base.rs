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
use crate::ids::{ChunkId, Naming};
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

/// A chunk's raw bytes, the depth of the frame they came from (0: a full frame), and what
/// its chain cost to read.
pub(crate) struct Decoded {
    pub(crate) raw: Vec<u8>,
    pub(crate) depth: u8,
    /// Stored bytes of every frame read for it (its own and its bases'); a base taken from
    /// `LocalBases` counts nothing.
    pub(crate) read: u64,
    /// Stored bytes of its own frame.
    pub(crate) stored: u64,
    /// Stored bytes of the full frame at the bottom of the chain when it was read from the
    /// repository and the chunk is a delta (0 otherwise): what replicate counts a copied
    /// delta frame as saving against.
    pub(crate) key_stored: u64,
    /// The full frame at the bottom of the chain, when the chunk is a delta: its chunk id,
    /// raw bytes and stored size. Kept only when asked for (push encodes against it).
    pub(crate) key: Option<Key>,
}

/// The full frame under a chain of deltas (`Decoded::key`).
pub(crate) struct Key {
    pub(crate) id: ChunkId,
    pub(crate) raw: Vec<u8>,
    pub(crate) stored: u64,
}

/// One frame of a chain, opened (an encrypted repository's frames are sealed as stored).
struct Link {
    loc: ChunkLocation,
    /// The frame, opened.
    frame: Bytes,
    /// Its stored size (sealed, in an encrypted repository).
    stored: u64,
    object: String,
}

/// Opens chunk `loc`'s stored frame, read from `object` (the bytes as they are in a plain
/// repository).
pub(crate) fn open_frame(
    repo: &Repository,
    loc: &ChunkLocation,
    object: &str,
    stored: Bytes,
) -> Result<Bytes, OpError> {
    repo.sealing()
        .open_frame(object, loc.entry.offset, &loc.entry.chunk, stored)
        .map_err(|e| OpError::Repo(e.into()))
}

/// What a chain rests on: the full frame of its last link, or a local copy of that link's base.
enum Bottom {
    Full,
    Local(Vec<u8>),
}

/// Decodes `frame` (the stored frame of chunk `loc`, read from `object`), reading the bases
/// of a delta frame from `repo`.
pub(crate) async fn decode_frame(
    repo: &Repository,
    bases: &dyn Locator,
    frame: Bytes,
    loc: &ChunkLocation,
    object: &str,
) -> Result<Decoded, OpError> {
    let stored = frame.len() as u64;
    let frame = open_frame(repo, loc, object, frame)?;
    decode_frame_with(repo, bases, None, (frame, stored), loc, object).await
}

/// `decode_frame`, taking each base from `local` when it holds a good copy of it.
pub(crate) async fn decode_frame_with(
    repo: &Repository,
    bases: &dyn Locator,
    local: Option<&dyn LocalBases>,
    (frame, stored): (Bytes, u64),
    loc: &ChunkLocation,
    object: &str,
) -> Result<Decoded, OpError> {
    let top = Link {
        loc: *loc,
        frame,
        stored,
        object: object.to_string(),
    };
    let (links, bottom) = gather(repo, bases, local, top).await?;
    let naming = repo.naming().clone();
    blocking(move || rebuild(&links, bottom, false, &naming)).await?
}

/// Reads chunk `id` from `repo` and decodes it (following delta bases); with `keep_key`, a
/// delta's key frame's raw bytes are returned too.
pub(crate) async fn read_chunk(
    repo: &Repository,
    bases: &dyn Locator,
    id: &ChunkId,
    keep_key: bool,
) -> Result<Decoded, OpError> {
    let top = read_link(repo, bases, id).await?;
    let (links, bottom) = gather(repo, bases, None, top).await?;
    let naming = repo.naming().clone();
    blocking(move || rebuild(&links, bottom, keep_key, &naming)).await?
}

async fn read_link(repo: &Repository, bases: &dyn Locator, id: &ChunkId) -> Result<Link, OpError> {
    let loc = bases.locate(id)?.ok_or_else(|| {
        OpError::Repo(RepoError::ChunkNotIndexed {
            object: repo.url(),
            chunk: *id,
        })
    })?;
    let stored = repo.read_pack_range(&loc.pack, loc.entry.range()).await?;
    let object = repo.pack_url(&loc.pack);
    Ok(Link {
        loc,
        stored: stored.len() as u64,
        frame: open_frame(repo, &loc, &object, stored)?,
        object,
    })
}

/// Reads the bases under `top`, down to a full frame (or a local copy of a base): at most
/// `MAX_DELTA_DEPTH` delta frames, so a broken or hostile chain (even a cycle) ends.
async fn gather(
    repo: &Repository,
    bases: &dyn Locator,
    local: Option<&dyn LocalBases>,
    top: Link,
) -> Result<(Vec<Link>, Bottom), OpError> {
    let mut links = vec![top];
    loop {
        let last = links.last().expect("the top link");
        let Some(base) = header(last)?.map(|h| h.base) else {
            return Ok((links, Bottom::Full));
        };
        if links.len() > MAX_DELTA_DEPTH as usize {
            return Err(bad_frame(
                last,
                FrameError::DeltaHeader("delta chain longer than 16 frames"),
            ));
        }
        if let Some(local) = local {
            if let Some(raw) = local.read(&base).await? {
                return Ok((links, Bottom::Local(raw)));
            }
        }
        let link = read_link(repo, bases, &base)
            .await
            .map_err(|e| unreadable(&links, links.len() - 1, e))?;
        if let Some(local) = local {
            local.read_from_store(link.stored);
        }
        links.push(link);
    }
}

fn header(link: &Link) -> Result<Option<codec::DeltaHeader<'_>>, OpError> {
    codec::delta_header(&link.frame).map_err(|e| bad_frame(link, e))
}

/// Decodes a gathered chain bottom-up (a blocking call): the full frame (checked against its
/// id, as every full frame is), then each delta applied in place, the top checked against its
/// id. Only when that check fails is the chain decoded again link by link, to name the link
/// that is wrong.
fn rebuild(
    links: &[Link],
    bottom: Bottom,
    keep_key: bool,
    naming: &Naming,
) -> Result<Decoded, OpError> {
    let read = links.iter().map(|l| l.stored).sum();
    let top = &links[0];
    let depth = match header(top)? {
        Some(h) => h.depth,
        None => 0,
    };
    let (mut raw, deltas, key, key_stored) = match bottom {
        Bottom::Local(raw) => (raw, links, None, 0),
        Bottom::Full => {
            let (last, deltas) = links.split_last().expect("the top link");
            let id = last.loc.entry.chunk;
            let raw_len = last.loc.entry.raw_len as usize;
            // A key kept for push is checked now; otherwise the check of the top covers
            // it (a wrong key cannot yield the top's bytes), and `blame` checks it when
            // that check fails.
            let raw = if keep_key || deltas.is_empty() {
                codec::decode(&last.frame, raw_len, &id, naming)
            } else {
                codec::decode_unchecked(&last.frame, raw_len)
            }
            .map_err(|e| bad_key(links, e))?;
            let key_stored = if deltas.is_empty() { 0 } else { last.stored };
            let key = (keep_key && !deltas.is_empty()).then(|| Key {
                id,
                raw: raw.clone(),
                stored: key_stored,
            });
            (raw, deltas, key, key_stored)
        }
    };
    let first_try = apply_all(deltas, &mut raw, None);
    let checked = first_try.and_then(|()| {
        let entry = top.loc.entry;
        codec::check(&raw, entry.raw_len as usize, &entry.chunk, naming).map_err(|e| (0, e))
    });
    if let Err((at, e)) = checked {
        return Err(blame(links, at, e, naming));
    }
    Ok(Decoded {
        raw,
        depth,
        read,
        stored: top.stored,
        key_stored,
        key,
    })
}

/// Applies `deltas` (top first) to `raw` bottom-up; with `check_each` (the repository's
/// naming), checks every link's result against its id. An error says which link (index into
/// `deltas`) failed.
fn apply_all(
    deltas: &[Link],
    raw: &mut [u8],
    check_each: Option<&Naming>,
) -> Result<(), (usize, FrameError)> {
    for (i, link) in deltas.iter().enumerate().rev() {
        let entry = link.loc.entry;
        let h = codec::delta_header(&link.frame)
            .and_then(|h| h.ok_or(FrameError::DeltaHeader("not a delta")))
            .map_err(|e| (i, e))?;
        codec::apply_delta(&h, raw, entry.raw_len as usize).map_err(|e| (i, e))?;
        if let Some(naming) = check_each {
            codec::check(raw, entry.raw_len as usize, &entry.chunk, naming).map_err(|e| (i, e))?;
        }
    }
    Ok(())
}

/// The error for a chain whose top does not come out right: decoded again with every link
/// checked, the first wrong link is named (the top itself, or a base under it).
fn blame(links: &[Link], at: usize, e: FrameError, naming: &Naming) -> OpError {
    let (at, e) = if at == 0 && matches!(e, FrameError::Hash { .. }) {
        // A base decoded wrongly also ends in a top that does not match: find the first.
        let (last, deltas) = links.split_last().expect("the top link");
        let entry = last.loc.entry;
        match codec::decode(&last.frame, entry.raw_len as usize, &entry.chunk, naming) {
            Ok(mut raw) => apply_all(deltas, &mut raw, Some(naming))
                .err()
                .unwrap_or((at, e)),
            // The key under the chain, whose check was left to the top's.
            Err(key) if !codec::is_delta(&last.frame) => return bad_key(links, key),
            Err(_) => (at, e),
        }
    } else {
        (at, e)
    };
    let wrong = bad_delta(&links[at], e);
    match at {
        0 => wrong,
        _ => unreadable(links, at - 1, wrong),
    }
}

/// The full frame at the bottom of `links` does not decode (or not to its id), as seen from
/// the top.
fn bad_key(links: &[Link], e: FrameError) -> OpError {
    let (last, deltas) = links.split_last().expect("the top link");
    match deltas.len() {
        0 => bad_frame(last, e),
        n => unreadable(links, n - 1, bad_frame(last, e)),
    }
}

/// A delta link that does not decode against its base (or, without a header, a bad frame).
fn bad_delta(link: &Link, problem: FrameError) -> OpError {
    match header(link).ok().flatten() {
        Some(h) => OpError::Repo(RepoError::BadDelta {
            object: link.object.clone(),
            chunk: link.loc.entry.chunk,
            offset: link.loc.entry.offset,
            base: h.base,
            problem: Box::new(problem),
        }),
        None => bad_frame(link, problem),
    }
}

fn bad_frame(link: &Link, problem: FrameError) -> OpError {
    OpError::Repo(RepoError::BadFrame {
        object: link.object.clone(),
        chunk: link.loc.entry.chunk,
        offset: link.loc.entry.offset,
        problem: Box::new(problem),
    })
}

/// `e`, the reason the base of `links[upto]` cannot be read, as seen from the top: each link
/// from `upto` up to the top says its base cannot be read, naming it.
fn unreadable(links: &[Link], upto: usize, e: OpError) -> OpError {
    links[..=upto]
        .iter()
        .rev()
        .fold(e, |source, link| match header(link).ok().flatten() {
            Some(h) => OpError::DeltaBaseUnreadable {
                object: link.object.clone(),
                chunk: link.loc.entry.chunk,
                offset: link.loc.entry.offset,
                base: h.base,
                source: Box::new(source),
            },
            None => source,
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

    fn link(chunk: ChunkId, frame: Vec<u8>, raw_len: usize, object: &str) -> Link {
        let entry = crate::repo::pack::PackEntry {
            chunk,
            offset: 0,
            frame_len: frame.len() as u32,
            raw_len: raw_len as u32,
        };
        Link {
            loc: ChunkLocation {
                pack: crate::ids::PackId::of(object.as_bytes()),
                entry,
            },
            stored: frame.len() as u64,
            frame: frame.into(),
            object: object.to_string(),
        }
    }

    /// A chain of one delta on a key stored raw: the key's own check is left to the top's,
    /// so a key whose bytes are wrong (but decode) must still be the one named.
    #[test]
    fn a_wrong_key_is_named_though_only_the_top_is_checked() {
        let base: Vec<u8> = (0..4099u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = base.clone();
        new[17] ^= 0x40;
        let payload = codec::delta::DeltaEncoder::new(1)
            .encode(&base, &new, 4)
            .expect("a delta");
        let (top_id, key_id) = (ChunkId::of(&new), ChunkId::of(&base));
        let top = || {
            let frame = codec::delta_frame(&key_id, 1, &payload);
            link(top_id, frame, new.len(), "top-pack")
        };
        let key = |bytes: &[u8]| {
            let mut frame = vec![codec::Codec::Raw as u8];
            frame.extend_from_slice(bytes);
            link(key_id, frame, bytes.len(), "key-pack")
        };

        let good =
            rebuild(&[top(), key(&base)], Bottom::Full, false, &Naming::PLAIN).expect("rebuilds");
        assert_eq!(good.raw, new);
        assert!(good.key.is_none());

        let mut wrong = base.clone();
        wrong[1000] ^= 1;
        for keep_key in [false, true] {
            let e = rebuild(
                &[top(), key(&wrong)],
                Bottom::Full,
                keep_key,
                &Naming::PLAIN,
            )
            .err()
            .expect("a wrong key fails");
            let OpError::DeltaBaseUnreadable { base, source, .. } = &e else {
                panic!("not named as the base: {e}");
            };
            assert_eq!(*base, key_id);
            assert!(
                matches!(
                    &**source,
                    OpError::Repo(RepoError::BadFrame { chunk, problem, .. })
                        if *chunk == key_id && matches!(**problem, FrameError::Hash { .. })
                ),
                "{e}: {source:?}"
            );
        }
    }

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
