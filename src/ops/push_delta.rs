//! Push's side of element deltas (format version 2, FORMAT.md "Delta frames"): finding each
//! tensor chunk's counterpart in the ref's previous snapshot, and choosing, per changed chunk,
//! between its full frame and a delta frame against that counterpart.
//!
//! A counterpart is the chunk of the same file path at the same byte offset with the same
//! length in a file the previous snapshot recorded with the `tensors` layout (position-stable
//! cuts): the same element range of the same tensor while the file's header keeps its size.
//! Deltas are written only for single-repository pushes into a repository whose config
//! enables them; the base must be present there (the previous snapshot holds it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::chunker::{Layout, TensorCuts};
use crate::codec::delta::DeltaEncoder;
use crate::codec::{self, delta_frame, Encoder};
use crate::ids::{ChunkId, Naming};
use crate::index::{BaseCache, BaseEntry, Index, RepoIndex};
use crate::ops::delta_base::{read_chunk, Decoded, Key, Locator};
use crate::ops::OpError;
use crate::repo::config::DeltaParams;
use crate::repo::snapshot::Entry;
use crate::repo::Repository;

/// The chunks of the ref's previous snapshot by (path, byte offset): id and length.
#[derive(Debug, Default)]
pub(crate) struct Counterparts {
    files: HashMap<String, HashMap<u64, (ChunkId, u32)>>,
}

impl Counterparts {
    /// The counterparts in `repo`'s head of ref `name` (empty when there is none).
    pub(crate) async fn of_head(repo: &Repository, name: &str) -> Result<Self, OpError> {
        let Some(head) = repo.ref_head(name).await? else {
            return Ok(Self::default());
        };
        let snap = repo.read_snapshot(&head.snapshot).await?;
        let mut files = HashMap::new();
        for e in snap.entries {
            if let Entry::File {
                path,
                layout: Layout::Tensors,
                chunks,
                ..
            } = e
            {
                let mut at = 0u64;
                let mut by_offset = HashMap::with_capacity(chunks.len());
                for c in chunks {
                    by_offset.insert(at, (c.0, c.1));
                    at += c.1 as u64;
                }
                files.insert(path, by_offset);
            }
        }
        Ok(Self { files })
    }

    /// The base for the chunk `id` of `len` bytes at `offset` in `path`: its counterpart, if
    /// there is one of the same length and other content.
    pub(crate) fn base(&self, path: &str, offset: u64, len: u32, id: &ChunkId) -> Option<ChunkId> {
        let (cid, clen) = self.files.get(path)?.get(&offset)?;
        (*clen == len && cid != id).then_some(*cid)
    }
}

/// How tensors are cut for a push into `targets`: position-stable only when every target
/// takes deltas (format version 2 with `deltas` set), so the snapshot is valid in all.
pub(crate) fn tensor_cuts(targets: &[(Repository, bool)]) -> TensorCuts {
    if targets
        .iter()
        .all(|(r, _)| r.config().delta_params().is_some())
    {
        TensorCuts::Fixed
    } else {
        TensorCuts::ContentDefined
    }
}

/// What a compressor needs to write delta frames into one repository.
#[derive(Clone)]
pub(crate) struct DeltaTarget {
    pub(crate) repo: Repository,
    pub(crate) rindex: RepoIndex,
    pub(crate) params: DeltaParams,
    pub(crate) rt: tokio::runtime::Handle,
    /// The ref's local base cache (`index::bases`), unless turned off.
    pub(crate) cache: Option<Arc<BaseCache>>,
    /// Bytes read back from the repository to encode deltas (bases not in the cache, and the
    /// frame heads that check a cached base).
    pub(crate) read_back: Arc<AtomicU64>,
}

/// One compressor's encoders.
pub(crate) struct FrameChooser {
    pub(crate) full: Encoder,
    delta: DeltaEncoder,
    target: Option<DeltaTarget>,
}

/// A chunk's frame and, for a delta frame, the bytes it saved against the full frame.
pub(crate) struct Chosen {
    pub(crate) frame: Vec<u8>,
    pub(crate) delta_saved: Option<u64>,
}

/// `choose`'s pick: a delta frame and where it sits, or (`frame` `None`) the full frame.
struct Pick {
    frame: Option<Vec<u8>>,
    delta_saved: Option<u64>,
    chain: Option<Chain>,
    full_len: u64,
}

impl FrameChooser {
    pub(crate) fn new(level: i32, target: Option<DeltaTarget>) -> Self {
        Self {
            full: Encoder::new(level),
            delta: DeltaEncoder::new(level),
            target,
        }
    }

    /// The chunk's frame: a delta against its counterpart `base` (chaining on it), or
    /// against the full frame under the counterpart's chain (its key), or the full frame:
    /// the smallest that keeps a restore of this chunk within `max_depth` delta frames and
    /// `READ_BUDGET` full frames' worth of stored bytes (FORMAT.md, "Base topology"). Runs on
    /// a blocking thread.
    pub(crate) fn choose(
        &mut self,
        id: &ChunkId,
        data: &[u8],
        width: u8,
        base: Option<ChunkId>,
    ) -> Chosen {
        let full = self.full.encode_elements(data, width);
        let pick = self.pick(&full, data, width, base);
        if let Some(cache) = self.target.as_ref().and_then(|t| t.cache.as_ref()) {
            if width > 1 {
                // What the next push of this ref finds as this chunk's counterpart.
                cache.put(id, &pick.cache_entry(id, data.len(), &full));
            }
        }
        Chosen {
            frame: pick.frame.unwrap_or(full),
            delta_saved: pick.delta_saved,
        }
    }

    fn pick(&mut self, full: &[u8], data: &[u8], width: u8, base: Option<ChunkId>) -> Pick {
        let whole = Pick::full(full.len() as u64);
        let (Some(t), Some(base)) = (&self.target, base) else {
            return whole;
        };
        if t.params.max_depth == 0 {
            // A keyframe push (`push --deltas 0`): every changed chunk whole.
            return whole;
        }
        let prev = match t.rt.block_on(read_base(t, &base)) {
            Ok(d) => d,
            Err(e) => {
                // A push never fails for want of a base: the full frame is always valid.
                tracing::warn!(base = %base, error = %e, "delta base unreadable; storing the chunk whole");
                return whole;
            }
        };
        let budget = READ_BUDGET * full.len() as u64;
        let mut best: Option<Pick> = None;
        let full_len = full.len();
        // A chain whose next delta, if about as big as its last, would read past the budget
        // is not tried: steps of one series change alike (a fine-tune's deltas are ~2/3 of
        // a full frame), so encoding it would be wasted work.
        let hopeless = prev.depth > 0 && prev.read + prev.stored > budget;
        if prev.depth < t.params.max_depth && !hopeless {
            if let Some(payload) = self.delta.encode(&prev.raw, data, width) {
                let frame = delta_frame(&base, prev.depth + 1, &payload);
                let read = prev.read + frame.len() as u64;
                let key = prev.key.as_ref().map_or(base, |k| k.id);
                keep_smaller(
                    &mut best,
                    full_len,
                    budget,
                    frame,
                    Chain {
                        depth: prev.depth + 1,
                        base,
                        key,
                        read,
                    },
                );
            }
        }
        // Chaining on the counterpart is too deep or reads too much: rebase onto its key.
        if best.is_none() {
            if let Some(key) = &prev.key {
                if let Some(payload) = self.delta.encode(&key.raw, data, width) {
                    let frame = delta_frame(&key.id, 1, &payload);
                    let read = key.stored + frame.len() as u64;
                    keep_smaller(
                        &mut best,
                        full_len,
                        budget,
                        frame,
                        Chain {
                            depth: 1,
                            base: key.id,
                            key: key.id,
                            read,
                        },
                    );
                }
            }
        }
        best.unwrap_or(whole)
    }
}

/// Where a delta frame sits: its depth, base, the key under it and the stored bytes a
/// restore of it reads.
#[derive(Clone, Copy)]
struct Chain {
    depth: u8,
    base: ChunkId,
    key: ChunkId,
    read: u64,
}

/// What a push keeps of its delta target once the compressors are done: the count of bytes
/// read back and the base cache to trim.
#[derive(Default)]
pub(crate) struct DeltaSide {
    read_back: Option<Arc<AtomicU64>>,
    cache: Option<Arc<BaseCache>>,
}

impl DeltaSide {
    pub(crate) fn of(target: Option<&DeltaTarget>) -> Self {
        target.map_or_else(Self::default, |t| Self {
            read_back: Some(t.read_back.clone()),
            cache: t.cache.clone(),
        })
    }

    /// Bytes read back from the repository to encode deltas.
    pub(crate) fn read_back(&self) -> u64 {
        self.read_back
            .as_ref()
            .map_or(0, |r| r.load(Ordering::Relaxed))
    }

    /// Trims the base cache after a push to what the next push of its ref can use: the
    /// chunks of this push's files (`referenced`) and the keys under them.
    pub(crate) async fn keep_for_next(
        self,
        referenced: std::collections::HashSet<ChunkId>,
    ) -> Result<(), OpError> {
        if let Some(cache) = self.cache {
            tokio::task::spawn_blocking(move || cache.retain(&referenced))
                .await
                .map_err(OpError::join)?;
        }
        Ok(())
    }
}

/// Counterpart `base` as [`FrameChooser::choose`] needs it: from the local base cache when its
/// entry describes the frame the repository holds (one read of that frame's head), else from
/// the repository. Counts what it reads in `t.read_back`.
async fn read_base(t: &DeltaTarget, base: &ChunkId) -> Result<Decoded, OpError> {
    if let Some(cache) = &t.cache {
        if let Some(d) = cached_base(t, cache, base).await {
            return Ok(d);
        }
    }
    let d = read_chunk(&t.repo, &t.rindex, base, true).await?;
    t.read_back.fetch_add(d.read, Ordering::Relaxed);
    if let (Some(cache), Some(key)) = (&t.cache, &d.key) {
        // Later steps are encoded against this key too: keep it.
        cache.put(&key.id, &key_entry(key));
    }
    Ok(d)
}

/// The cache entry of a key (a chunk stored whole) read from the repository: its raw bytes
/// as a raw frame, which costs no compression.
fn key_entry(key: &Key) -> BaseEntry {
    let mut frame = Vec::with_capacity(key.raw.len() + 1);
    frame.push(codec::Codec::Raw as u8);
    frame.extend_from_slice(&key.raw);
    BaseEntry {
        depth: 0,
        base: None,
        key: key.id,
        read: key.stored,
        len: key.raw.len() as u32,
        frame,
    }
}

/// Chunk `id` from the cache, `None` (a miss) unless its entry decodes to `id` and its chain
/// head (depth and base) is the one the repository's frame records, and, for a delta, its
/// key is cached and stored whole in the repository.
async fn cached_base(t: &DeltaTarget, cache: &BaseCache, id: &ChunkId) -> Option<Decoded> {
    let entry = cache.get(id)?;
    let stored = stored_head(t, id).await?;
    if stored.0 != entry.base.map(|b| (entry.depth, b)) {
        return None;
    }
    let key = if entry.depth == 0 {
        None
    } else {
        Some(cached_key(t, cache, &entry.key).await?)
    };
    Some(Decoded {
        raw: decode_full(&entry.frame, entry.len as usize, id, t.repo.naming())?,
        depth: entry.depth,
        read: entry.read,
        stored: stored.1,
        key_stored: key.as_ref().map_or(0, |k| k.stored),
        key,
    })
}

/// Key `id` (a chunk the repository stores whole) from the cache, or read from the repository
/// and cached; `None` when it is not stored whole or cannot be read.
async fn cached_key(t: &DeltaTarget, cache: &BaseCache, id: &ChunkId) -> Option<Key> {
    if let Some(k) = cache.get(id).filter(|k| k.depth == 0) {
        let (head, stored) = stored_head(t, id).await?;
        if head.is_none() {
            if let Some(raw) = decode_full(&k.frame, k.len as usize, id, t.repo.naming()) {
                return Some(Key {
                    id: *id,
                    raw,
                    stored,
                });
            }
        }
    }
    let d = read_chunk(&t.repo, &t.rindex, id, false).await.ok()?;
    t.read_back.fetch_add(d.read, Ordering::Relaxed);
    if d.depth != 0 {
        return None;
    }
    let key = Key {
        id: *id,
        raw: d.raw,
        stored: d.stored,
    };
    cache.put(id, &key_entry(&key));
    Some(key)
}

/// The head of chunk `id`'s frame in the repository — `(depth, base)` for a delta frame —
/// and its stored length; `None` when it cannot be read (the caller reads the chunk whole).
/// In an encrypted repository the head is decrypted without the frame's tag (a frame opens
/// only whole): a hint, as the plain head read is; the frame itself is checked when decoded.
async fn stored_head(t: &DeltaTarget, id: &ChunkId) -> Option<(Option<(u8, ChunkId)>, u64)> {
    let loc = t.rindex.locate(id).ok()??;
    let range = loc.entry.range();
    let sealing = t.repo.sealing();
    let head = sealing.head_range(range.clone(), codec::DELTA_HEADER_LEN as u64);
    let bytes = t.repo.read_pack_range(&loc.pack, head).await.ok()?;
    t.read_back.fetch_add(bytes.len() as u64, Ordering::Relaxed);
    let bytes = sealing.peek_frame_head(bytes)?;
    let header = codec::delta_header(&bytes).ok()?;
    Some((header.map(|h| (h.depth, h.base)), range.end - range.start))
}

/// A cached full frame's chunk, checked against `id` (`None` when it is not one).
fn decode_full(frame: &[u8], raw_len: usize, id: &ChunkId, naming: &Naming) -> Option<Vec<u8>> {
    codec::decode(frame, raw_len, id, naming).ok()
}

/// Keeps delta `frame` in `best` when restoring it reads (`read`) within `budget` and it is
/// smaller than both the full frame and what `best` holds.
fn keep_smaller(
    best: &mut Option<Pick>,
    full_len: usize,
    budget: u64,
    frame: Vec<u8>,
    chain: Chain,
) {
    let smaller = frame.len() < best.as_ref().map_or(full_len, Pick::len);
    if chain.read <= budget && smaller {
        let saved = (full_len - frame.len()) as u64;
        *best = Some(Pick {
            frame: Some(frame),
            delta_saved: Some(saved),
            chain: Some(chain),
            full_len: full_len as u64,
        });
    }
}

/// A restore reads at most this many full frames' worth of stored bytes for one chunk (its
/// delta frames and the full frame under them); a delta that would read more is written
/// against the chain's key instead, or not at all. With every element nudged (a full
/// fine-tune) a delta is about 2/3 of a full frame, so chains stay one delta deep on their
/// key; with sparse updates (RL) chains reach `max_depth`.
pub(crate) const READ_BUDGET: u64 = 2;

impl Pick {
    /// The full frame of `full_len` bytes.
    fn full(full_len: u64) -> Self {
        Self {
            frame: None,
            delta_saved: None,
            chain: None,
            full_len,
        }
    }

    fn len(&self) -> usize {
        self.frame.as_ref().map_or(self.full_len as usize, Vec::len)
    }

    /// The cache entry of chunk `id` stored this way, whose full frame is `full`.
    fn cache_entry(&self, id: &ChunkId, len: usize, full: &[u8]) -> BaseEntry {
        let (depth, base, key, read) = match self.chain {
            Some(c) => (c.depth, Some(c.base), c.key, c.read),
            None => (0, None, *id, full.len() as u64),
        };
        BaseEntry {
            depth,
            base,
            key,
            read,
            len: len as u32,
            frame: full.to_vec(),
        }
    }
}

/// The delta target and counterparts of a push into `targets` under ref `name`: none unless
/// it is a single repository whose config enables deltas. `max_depth` (`push --deltas N`)
/// lowers the repository's bound for this push and may not exceed it. A dry run only reads
/// the base cache.
pub(crate) async fn setup(
    targets: &[(Repository, bool)],
    rindexes: &[RepoIndex],
    index: &Index,
    name: &str,
    (max_depth, dry_run): (Option<u8>, bool),
) -> Result<(Option<DeltaTarget>, Counterparts), OpError> {
    if let Some(asked) = max_depth {
        for (repo, _) in targets {
            let max = repo.config().delta_params().map_or(0, |d| d.max_depth);
            if asked > max {
                return Err(OpError::DeltaDepthAboveRepository {
                    url: repo.url(),
                    asked,
                    max,
                });
            }
        }
    }
    let ([(repo, _)], [rindex]) = (targets, rindexes) else {
        return Ok((None, Counterparts::default()));
    };
    let Some(mut params) = repo.config().delta_params() else {
        return Ok((None, Counterparts::default()));
    };
    params.max_depth = max_depth.unwrap_or(params.max_depth);
    let counterparts = Counterparts::of_head(repo, name).await?;
    let target = DeltaTarget {
        repo: repo.clone(),
        rindex: rindex.clone(),
        params,
        rt: tokio::runtime::Handle::current(),
        cache: index
            .base_cache(repo.id(), name)
            .map(|c| Arc::new(if dry_run { c.read_only() } else { c })),
        read_back: Arc::default(),
    };
    Ok((Some(target), counterparts))
}
