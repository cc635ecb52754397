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

use crate::chunker::{Layout, TensorCuts};
use crate::codec::delta::DeltaEncoder;
use crate::codec::{delta_frame, Encoder};
use crate::ids::ChunkId;
use crate::index::RepoIndex;
use crate::ops::delta_base::read_chunk;
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
    pub(crate) fn choose(&mut self, data: &[u8], width: u8, base: Option<ChunkId>) -> Chosen {
        let full = self.full.encode_elements(data, width);
        let (Some(t), Some(base)) = (&self.target, base) else {
            return Chosen::full(full);
        };
        let got = t.rt.block_on(read_chunk(&t.repo, &t.rindex, &base, true));
        let prev = match got {
            Ok(d) => d,
            Err(e) => {
                // A push never fails for want of a base: the full frame is always valid.
                tracing::warn!(base = %base, error = %e, "delta base unreadable; storing the chunk whole");
                return Chosen::full(full);
            }
        };
        let budget = READ_BUDGET * full.len() as u64;
        let mut best: Option<Chosen> = None;
        let full_len = full.len();
        // A chain whose next delta, if about as big as its last, would read past the budget
        // is not tried: steps of one series change alike (a fine-tune's deltas are ~2/3 of
        // a full frame), so encoding it would be wasted work.
        let hopeless = prev.depth > 0 && prev.read + prev.stored > budget;
        if prev.depth < t.params.max_depth && !hopeless {
            if let Some(payload) = self.delta.encode(&prev.raw, data, width) {
                let frame = delta_frame(&base, prev.depth + 1, &payload);
                let read = prev.read + frame.len() as u64;
                keep_smaller(&mut best, full_len, budget, frame, read);
            }
        }
        // Chaining on the counterpart is too deep or reads too much: rebase onto its key.
        if best.is_none() {
            if let Some(key) = &prev.key {
                if let Some(payload) = self.delta.encode(&key.raw, data, width) {
                    let frame = delta_frame(&key.id, 1, &payload);
                    let read = key.stored + frame.len() as u64;
                    keep_smaller(&mut best, full_len, budget, frame, read);
                }
            }
        }
        best.unwrap_or(Chosen::full(full))
    }
}

/// Keeps delta `frame` in `best` when restoring it reads (`read`) within `budget` and it is
/// smaller than both the full frame and what `best` holds.
fn keep_smaller(
    best: &mut Option<Chosen>,
    full_len: usize,
    budget: u64,
    frame: Vec<u8>,
    read: u64,
) {
    let smaller = frame.len() < best.as_ref().map_or(full_len, |b| b.frame.len());
    if read <= budget && smaller {
        let saved = (full_len - frame.len()) as u64;
        *best = Some(Chosen {
            frame,
            delta_saved: Some(saved),
        });
    }
}

/// A restore reads at most this many full frames' worth of stored bytes for one chunk (its
/// delta frames and the full frame under them); a delta that would read more is written
/// against the chain's key instead, or not at all. With every element nudged (a full
/// fine-tune) a delta is about 2/3 of a full frame, so chains stay one delta deep on their
/// key; with sparse updates (RL) chains reach `max_depth`.
pub(crate) const READ_BUDGET: u64 = 2;

impl Chosen {
    fn full(frame: Vec<u8>) -> Self {
        Self {
            frame,
            delta_saved: None,
        }
    }
}

/// The delta target and counterparts of a push into `targets` under ref `name`: none unless
/// it is a single repository whose config enables deltas.
pub(crate) async fn setup(
    targets: &[(Repository, bool)],
    rindexes: &[RepoIndex],
    name: &str,
) -> Result<(Option<DeltaTarget>, Counterparts), OpError> {
    let ([(repo, _)], [rindex]) = (targets, rindexes) else {
        return Ok((None, Counterparts::default()));
    };
    let Some(params) = repo.config().delta_params() else {
        return Ok((None, Counterparts::default()));
    };
    let counterparts = Counterparts::of_head(repo, name).await?;
    let target = DeltaTarget {
        repo: repo.clone(),
        rindex: rindex.clone(),
        params,
        rt: tokio::runtime::Handle::current(),
    };
    Ok((Some(target), counterparts))
}
