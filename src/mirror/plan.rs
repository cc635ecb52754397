//! Delta planning: which bytes of a changed file a destination already holds, and how to
//! build the new object from kept and sent parts within the store's limits. Pure functions,
//! no I/O.
//!
//! The source file is cut by the chunker (content-defined, so an edit moves only nearby
//! boundaries). Two destinations:
//!
//! * **Azure** keeps *blocks by id*. Chunks are grouped into blocks at content-defined points
//!   (a chunk whose hash is 0 modulo `k` ends a block, `k` a power of two chosen so the file
//!   stays under the block limit), so unchanged regions give the same blocks, with the same
//!   ids, version after version. A block is kept when the blob's committed list holds its id
//!   at its size.
//! * **S3** keeps *byte ranges* of the previous object. Each chunk found in the previous
//!   layout (recorded by the last mirror) maps to its old offset; adjacent ones form copy
//!   runs. Parts but the last must be at least 5 MiB, so short copy runs are sent instead and
//!   short send runs borrow bytes from their neighbours until they are long enough.

use std::collections::HashMap;
use std::ops::Range;

use crate::store::delta::{BlockId, Limits, Part};

/// One chunk of a file, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Chunk {
    /// BLAKE3 of the chunk's bytes.
    pub hash: [u8; 32],
    pub len: u64,
}

/// What the destination already holds of the file's previous version.
#[derive(Debug, Clone, Copy)]
pub enum Base<'a> {
    /// Nothing usable: send everything.
    None,
    /// Azure: the blob's committed blocks, id → size.
    Blocks(&'a HashMap<BlockId, u64>),
    /// S3: the chunks of the previous object, in order (their offsets follow from lengths).
    Layout(&'a [Chunk]),
}

/// A plan and what it costs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub parts: Vec<Part>,
    pub size: u64,
    /// Bytes sent.
    pub sent: u64,
    /// Bytes reused from the previous object.
    pub kept: u64,
}

impl Plan {
    fn new(parts: Vec<Part>) -> Self {
        let size = parts.iter().map(Part::len).sum();
        let sent = parts
            .iter()
            .filter(|p| matches!(p, Part::Send { .. }))
            .map(Part::len)
            .sum();
        Plan {
            parts,
            size,
            sent,
            kept: size - sent,
        }
    }

    pub fn has_keeps(&self) -> bool {
        self.kept > 0
    }
}

/// Plans the object for `chunks` under `limits`, reusing what `base` holds.
pub fn plan(chunks: &[Chunk], base: Base<'_>, limits: &Limits) -> Plan {
    if limits.keep_by_block_id {
        plan_blocks(chunks, base, limits)
    } else {
        plan_ranges(chunks, base, limits)
    }
}

// ---------------------------------------------------------------------------------------
// Azure: content-defined blocks.

/// A block made of consecutive chunks: its id and its range in the file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    pub id: BlockId,
    pub range: Range<u64>,
}

/// Groups chunks into at most `limits.max_parts` blocks of at most `limits.max_part` bytes.
/// A one-chunk block's id is the chunk's hash; a larger block's id is a keyed BLAKE3 of its
/// chunks' hashes (content-derived either way, without rereading the bytes).
pub fn blocks(chunks: &[Chunk], limits: &Limits) -> Vec<Block> {
    let budget = (limits.max_parts as u64 * 4 / 5).max(1);
    let mut k = (chunks.len() as u64).div_ceil(budget).next_power_of_two();
    loop {
        let out = group(chunks, k, limits.max_part);
        if out.len() <= limits.max_parts || k >= 1 << 40 {
            return out;
        }
        k *= 2;
    }
}

fn group(chunks: &[Chunk], k: u64, max_block: u64) -> Vec<Block> {
    let mut out = Vec::new();
    let mut start = 0u64;
    let mut offset = 0u64;
    let mut members: Vec<[u8; 32]> = Vec::new();
    let mut flush = |members: &mut Vec<[u8; 32]>, start: &mut u64, end: u64| {
        if members.is_empty() {
            return;
        }
        let id = if members.len() == 1 {
            members[0]
        } else {
            let mut h = blake3::Hasher::new_derive_key("ferry 2026 mirror block id");
            for m in members.iter() {
                h.update(m);
            }
            *h.finalize().as_bytes()
        };
        out.push(Block {
            id,
            range: *start..end,
        });
        members.clear();
        *start = end;
    };
    for c in chunks {
        if !members.is_empty() && offset - start + c.len > max_block {
            flush(&mut members, &mut start, offset);
        }
        members.push(c.hash);
        offset += c.len;
        let tag = u64::from_le_bytes(c.hash[..8].try_into().expect("8 bytes"));
        if tag % k == 0 {
            flush(&mut members, &mut start, offset);
        }
    }
    flush(&mut members, &mut start, offset);
    out
}

fn plan_blocks(chunks: &[Chunk], base: Base<'_>, limits: &Limits) -> Plan {
    let committed = match base {
        Base::Blocks(ids) => Some(ids),
        _ => None,
    };
    let parts = blocks(chunks, limits)
        .into_iter()
        .map(|b| match committed {
            Some(ids) if ids.get(&b.id) == Some(&(b.range.end - b.range.start)) => Part::Keep {
                block: b.id,
                old: b.range,
            },
            _ => Part::Send {
                block: b.id,
                new: b.range,
            },
        })
        .collect();
    Plan::new(parts)
}

// ---------------------------------------------------------------------------------------
// S3: copy runs of the previous object.

/// A run of the new file: sent, or copied from `old_start` of the previous object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Run {
    new: (u64, u64),
    old_start: Option<u64>,
}

impl Run {
    fn len(&self) -> u64 {
        self.new.1 - self.new.0
    }
}

/// Maps each new chunk to where the same bytes sit in the previous object, merging
/// neighbours into runs. Prefers the old position right after the previous match, so a
/// repeated chunk continues its run instead of jumping.
fn runs(chunks: &[Chunk], old: &[Chunk]) -> Vec<Run> {
    let mut at: HashMap<([u8; 32], u64), Vec<u64>> = HashMap::new();
    let mut off = 0;
    for c in old {
        at.entry((c.hash, c.len)).or_default().push(off);
        off += c.len;
    }
    let mut out: Vec<Run> = Vec::new();
    let mut offset = 0u64;
    for c in chunks {
        let found = at.get(&(c.hash, c.len));
        let continues = out.last().and_then(|r| r.old_start.map(|s| s + r.len()));
        let old_start = match (found, continues) {
            (Some(offs), Some(next)) if offs.contains(&next) => Some(next),
            (Some(offs), _) => offs.first().copied(),
            (None, _) => None,
        };
        let range = (offset, offset + c.len);
        offset += c.len;
        if let Some(last) = out.last_mut() {
            let extends = match (last.old_start, old_start) {
                (None, None) => true,
                (Some(s), Some(o)) => s + last.len() == o,
                _ => false,
            };
            if extends {
                last.new.1 = range.1;
                continue;
            }
        }
        out.push(Run {
            new: range,
            old_start,
        });
    }
    out
}

fn plan_ranges(chunks: &[Chunk], base: Base<'_>, limits: &Limits) -> Plan {
    let size: u64 = chunks.iter().map(|c| c.len).sum();
    let runs = match base {
        Base::Layout(old) => runs(chunks, old),
        _ if size == 0 => Vec::new(),
        _ => vec![Run {
            new: (0, size),
            old_start: None,
        }],
    };
    // Too many parts: raise the smallest part until the count fits (a few passes at most).
    // An object too large for the limits at all is left to the store to refuse.
    let mut min_part = limits.min_part.max(1);
    loop {
        let parts = fit_ranges(&runs, limits, min_part);
        if parts.len() <= limits.max_parts || min_part >= limits.max_part {
            return Plan::new(parts);
        }
        min_part = (min_part.max(size / (limits.max_parts as u64 * 3 / 4).max(1)) * 2)
            .min(limits.max_part);
    }
}

/// Sent parts are read into memory whole: this bounds them (a few are in flight), unless the
/// part-count limit needs larger ones.
pub const SEND_PART: u64 = 16 << 20;

/// Turns runs into parts: every part but the last at least `min_part` bytes (short copies
/// become sends, short sends borrow from the next run), none over `limits.max_part`, sends
/// cut into pieces of about [`SEND_PART`].
fn fit_ranges(runs: &[Run], limits: &Limits, min_part: u64) -> Vec<Part> {
    let total_end = runs.last().map(|r| r.new.1).unwrap_or(0);
    let send_max = SEND_PART
        .max(total_end.div_ceil((limits.max_parts as u64 * 3 / 4).max(1)))
        .max(min_part)
        .min(limits.max_part);
    let mut parts: Vec<Part> = Vec::new();
    // The send part being built: a range of the new file.
    let mut pending: Option<(u64, u64)> = None;
    for run in runs {
        let Some(old_start) = run.old_start else {
            pending = Some(match pending {
                Some((s, _)) => (s, run.new.1),
                None => run.new,
            });
            continue;
        };
        let is_last = run.new.1 == total_end;
        let mut keep = (run.new.0, run.new.1);
        if let Some((s, e)) = pending {
            let short = min_part.saturating_sub(e - s);
            if short > 0 {
                // The pending send is too short to stand alone: it takes the run's head.
                let take = short.min(keep.1 - keep.0);
                pending = Some((s, e + take));
                keep.0 += take;
            }
        }
        let keep_len = keep.1 - keep.0;
        if keep_len == 0 {
            continue;
        }
        if keep_len < min_part && !is_last {
            // Too short to copy: send it.
            pending = Some(match pending {
                Some((s, _)) => (s, keep.1),
                None => keep,
            });
            continue;
        }
        if let Some(p) = pending.take() {
            push_sends(&mut parts, p, send_max);
        }
        let old = old_start + (keep.0 - run.new.0);
        push_keeps(&mut parts, old, keep_len, limits.max_part);
    }
    if let Some(p) = pending.take() {
        push_sends(&mut parts, p, send_max);
    }
    parts
}

fn pieces(len: u64, max: u64) -> u64 {
    len.div_ceil(max.max(1)).max(1)
}

fn push_sends(parts: &mut Vec<Part>, (start, end): (u64, u64), max: u64) {
    let n = pieces(end - start, max);
    let step = (end - start).div_ceil(n);
    let mut s = start;
    while s < end {
        let e = (s + step).min(end);
        parts.push(Part::Send {
            block: [0; 32],
            new: s..e,
        });
        s = e;
    }
}

fn push_keeps(parts: &mut Vec<Part>, old: u64, len: u64, max: u64) {
    let n = pieces(len, max);
    let step = len.div_ceil(n);
    let mut s = 0;
    while s < len {
        let e = (s + step).min(len);
        parts.push(Part::Keep {
            block: [0; 32],
            old: old + s..old + e,
        });
        s = e;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const MIB: u64 = 1 << 20;

    fn chunk(seed: u64, len: u64) -> Chunk {
        Chunk {
            hash: *blake3::hash(&seed.to_le_bytes()).as_bytes(),
            len,
        }
    }

    /// A file of `n` chunks of about 1 MiB, chunk i named by `seed + i`.
    fn file(n: u64, seed: u64) -> Vec<Chunk> {
        (0..n)
            .map(|i| chunk(seed + i, MIB + (i % 7) * 1000))
            .collect()
    }

    /// Checks the invariants every plan must hold: parts tile the new file (sends and keeps
    /// in new-file order), sizes within limits, keeps point at identical bytes.
    fn check(plan: &Plan, new: &[Chunk], base: Base<'_>, limits: &Limits) {
        let size: u64 = new.iter().map(|c| c.len).sum();
        assert_eq!(plan.size, size);
        assert!(plan.parts.len() <= limits.max_parts);
        let n = plan.parts.len();
        // Byte-level reconstruction: new-file offset → (chunk index, offset in chunk).
        let mut new_starts = Vec::new();
        let mut o = 0;
        for c in new {
            new_starts.push(o);
            o += c.len;
        }
        let mut cursor = 0u64;
        for (i, p) in plan.parts.iter().enumerate() {
            assert!(!p.is_empty(), "empty part");
            assert!(p.len() <= limits.max_part);
            if i + 1 < n {
                assert!(
                    p.len() >= limits.min_part,
                    "part {i} of {n} is {} bytes",
                    p.len()
                );
            }
            match (p, base) {
                (Part::Send { new: r, .. }, _) => assert_eq!(r.start, cursor),
                (Part::Keep { block, old }, Base::Blocks(ids)) => {
                    assert_eq!(ids.get(block), Some(&p.len()));
                    assert_eq!(old.start, cursor);
                }
                (Part::Keep { old, .. }, Base::Layout(prev)) => {
                    // Every byte copied must equal the new file's byte at the same place:
                    // compare (chunk hash, offset within chunk) on both sides at run edges
                    // and at every chunk boundary inside.
                    let resolve = |chunks: &[Chunk], at: u64| {
                        let mut o = 0;
                        for c in chunks {
                            if at < o + c.len {
                                return (c.hash, c.len, at - o);
                            }
                            o += c.len;
                        }
                        panic!("offset {at} past the end");
                    };
                    let mut a = 0;
                    while a < p.len() {
                        let (h1, l1, in1) = resolve(new, cursor + a);
                        let (h2, l2, in2) = resolve(prev, old.start + a);
                        assert_eq!((h1, l1, in1), (h2, l2, in2), "copied bytes differ");
                        a += (l1 - in1).min(p.len() - a);
                    }
                }
                (Part::Keep { .. }, Base::None) => panic!("keep without a base"),
            }
            cursor += p.len();
        }
        assert_eq!(cursor, size);
    }

    #[test]
    fn s3_middle_edit_sends_little_more_than_the_edit() {
        let old = file(90, 0);
        let mut new = old.clone();
        // The middle 15 % (chunks 38..52) changed.
        for (i, c) in new[38..52].iter_mut().enumerate() {
            *c = chunk(10_000 + i as u64, c.len);
        }
        let p = plan(&new, Base::Layout(&old), &Limits::S3);
        check(&p, &new, Base::Layout(&old), &Limits::S3);
        let changed: u64 = new[38..52].iter().map(|c| c.len).sum();
        assert!(p.sent >= changed);
        assert!(p.sent == changed, "sent {} for {changed} changed", p.sent);
        assert_eq!(p.parts.len(), 3, "{:?}", p.parts);
    }

    #[test]
    fn s3_small_edit_borrows_to_the_minimum_part() {
        let old = file(40, 0);
        let mut new = old.clone();
        new[20] = chunk(99_999, new[20].len);
        let p = plan(&new, Base::Layout(&old), &Limits::S3);
        check(&p, &new, Base::Layout(&old), &Limits::S3);
        assert!(p.sent >= 5 * MIB && p.sent < 6 * MIB, "sent {}", p.sent);
        assert!(p.kept >= 34 * MIB);
    }

    #[test]
    fn s3_insertion_copies_shifted_ranges() {
        let old = file(30, 0);
        let mut new = old.clone();
        new.insert(10, chunk(5_000, 300_000));
        let p = plan(&new, Base::Layout(&old), &Limits::S3);
        check(&p, &new, Base::Layout(&old), &Limits::S3);
        assert!(p.sent < 6 * MIB, "sent {}", p.sent);
    }

    #[test]
    fn big_new_files_are_sent_in_bounded_parts() {
        let new = file(300, 1);
        let p = plan(&new, Base::None, &Limits::S3);
        check(&p, &new, Base::None, &Limits::S3);
        assert_eq!(
            p.parts.len() as u64,
            p.size.div_ceil(SEND_PART),
            "{:?}",
            p.parts
        );
        assert!(p.parts.iter().all(|x| x.len() <= SEND_PART));
    }

    #[test]
    fn without_a_base_everything_is_sent() {
        let new = file(20, 3);
        for limits in [Limits::S3, Limits::AZURE] {
            let p = plan(&new, Base::None, &limits);
            check(&p, &new, Base::None, &limits);
            assert_eq!(p.kept, 0);
        }
        assert_eq!(plan(&[], Base::None, &Limits::S3).parts, vec![]);
    }

    #[test]
    fn azure_keeps_committed_blocks_and_sends_the_edit() {
        let old = file(90, 0);
        let mut new = old.clone();
        for (i, c) in new[38..52].iter_mut().enumerate() {
            *c = chunk(10_000 + i as u64, c.len);
        }
        let committed = committed(&old);
        let p = plan(&new, Base::Blocks(&committed), &Limits::AZURE);
        check(&p, &new, Base::Blocks(&committed), &Limits::AZURE);
        let changed: u64 = new[38..52].iter().map(|c| c.len).sum();
        assert_eq!(p.sent, changed);
    }

    #[test]
    fn azure_groups_stay_under_the_block_limit_and_are_stable() {
        let limits = Limits {
            max_parts: 100,
            ..Limits::AZURE
        };
        let old = file(1000, 0);
        let b_old = blocks(&old, &limits);
        assert!(b_old.len() <= 100 && b_old.len() > 10, "{}", b_old.len());
        // Editing one chunk changes at most the block that holds it (and, if the edit
        // moved a group end, its neighbour).
        let mut new = old.clone();
        new[500] = chunk(77_777, new[500].len);
        let b_new = blocks(&new, &limits);
        let ids: std::collections::HashSet<_> = b_old.iter().map(|b| b.id).collect();
        let fresh = b_new.iter().filter(|b| !ids.contains(&b.id)).count();
        assert!(fresh <= 2, "{fresh} new blocks");
    }

    fn committed(chunks: &[Chunk]) -> HashMap<BlockId, u64> {
        blocks(chunks, &Limits::AZURE)
            .iter()
            .map(|b| (b.id, b.range.end - b.range.start))
            .collect()
    }

    #[test]
    fn azure_keeps_a_block_only_at_its_committed_size() {
        let old = file(10, 0);
        let mut sizes = committed(&old);
        let (id, len) = sizes.iter().next().map(|(i, l)| (*i, *l)).unwrap();
        sizes.insert(id, len + 1);
        let p = plan(&old, Base::Blocks(&sizes), &Limits::AZURE);
        check(&p, &old, Base::Blocks(&sizes), &Limits::AZURE);
        assert_eq!(p.sent, len, "{:?}", p.parts);
    }

    fn arb_edit() -> impl Strategy<Value = (Vec<Chunk>, Vec<Chunk>)> {
        (
            1u64..60,
            any::<u64>(),
            prop::collection::vec((0usize..80, 0u8..3), 0..6),
        )
            .prop_map(|(n, seed, edits)| {
                let old: Vec<Chunk> = (0..n)
                    .map(|i| chunk(seed.wrapping_add(i), 1 + (seed.wrapping_add(i) % (3 * MIB))))
                    .collect();
                let mut new = old.clone();
                for (k, (at, kind)) in edits.into_iter().enumerate() {
                    let at = at % (new.len() + 1);
                    let fresh = chunk(seed ^ (0xdead_0000 + k as u64), MIB / 2 + k as u64);
                    match kind {
                        0 => new.insert(at, fresh),
                        1 if at < new.len() => {
                            new.remove(at);
                        }
                        _ if at < new.len() => new[at] = fresh,
                        _ => new.push(fresh),
                    }
                }
                (old, new)
            })
    }

    proptest! {
        #[test]
        fn plans_tile_the_file_within_limits((old, new) in arb_edit()) {
            let p = plan(&new, Base::Layout(&old), &Limits::S3);
            check(&p, &new, Base::Layout(&old), &Limits::S3);
            // Few parts allowed: the planner raises the part size until the plan fits.
            let small = Limits { max_parts: 7, max_part: 64 * MIB, ..Limits::S3 };
            let p = plan(&new, Base::Layout(&old), &small);
            if new.iter().map(|c| c.len).sum::<u64>() <= 7 * 64 * MIB / 4 {
                prop_assert!(p.parts.len() <= 7, "{} parts", p.parts.len());
                check(&p, &new, Base::Layout(&old), &small);
            }
            let committed = committed(&old);
            let p = plan(&new, Base::Blocks(&committed), &Limits::AZURE);
            check(&p, &new, Base::Blocks(&committed), &Limits::AZURE);
        }
    }
}
