//! Repair: the way out after `verify --read-data` found a damaged pack. Every pack is
//! re-read and re-hashed like verify does; each damaged one (missing, wrong size, bytes that
//! do not match its id, its index or its chunk ids, or an unreadable index) is marked with
//! `bad/<pack id>`. From then on writers count its chunks as absent, so the next push of the
//! same source uploads them anew (and the snapshots that named them are whole again: they
//! name chunks, not packs); gc deletes the pack once no snapshot needs a chunk only it holds.
//!
//! Then the delta frames (codec 3) of the packs left unmarked are decoded, like
//! `verify --read-data` does, their bases located through the pack indexes: a chunk held only
//! by packs marked damaged (earlier or in this run) is unavailable. A pack holding a delta
//! frame that does not rebuild (its base chain unavailable, damaged or not applying) is
//! marked too, its problem naming the chunk and its base: otherwise the delta would still
//! count as present, a later push would reuse it and its restores would keep failing. Marking
//! a pack makes its chunks unavailable as bases in turn, so this repeats, by the indexes alone
//! (the bytes were checked), until no delta frame of an unmarked pack has its base only in
//! marked packs.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::ids::{ChunkId, PackId};
use crate::index::ChunkLocation;
use crate::ops::delta_base::{decode_frame, Locator};
use crate::ops::verify::check_pack;
use crate::ops::OpError;
use crate::repo::pack::{PackEntry, PackIndex};
use crate::repo::{RepoError, Repository};

/// A pack found damaged.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedPack {
    pub pack: PackId,
    pub object: String,
    pub problem: String,
}

/// What `ferry repair` found and did (or would do, with `dry_run`).
#[derive(Debug, Serialize)]
pub struct RepairReport {
    pub repo: String,
    pub dry_run: bool,
    pub packs_checked: u64,
    /// Delta frames decoded against their bases (in packs that passed their own checks).
    pub deltas_checked: u64,
    /// Packs found damaged in this run (and marked, unless `dry_run`): their own bytes, or a
    /// delta frame they hold that does not rebuild.
    pub damaged: Vec<DamagedPack>,
    /// Packs marked damaged by an earlier run (not checked again).
    pub already_marked: u64,
    pub duration_secs: f64,
}

/// At most this many delta frames that do not rebuild are listed per pack.
const DELTA_PROBLEMS_PER_PACK: usize = 5;

/// The report for people.
pub fn render(r: &RepairReport) -> String {
    let mut s = format!(
        "{}repair {}: {} packs checked, {} delta frames decoded, {} damaged{}",
        if r.dry_run { "[dry run] " } else { "" },
        r.repo,
        r.packs_checked,
        r.deltas_checked,
        r.damaged.len(),
        if r.already_marked > 0 {
            format!(", {} marked damaged before", r.already_marked)
        } else {
            String::new()
        }
    );
    for d in &r.damaged {
        s.push_str(&format!("\n  damaged: {}: {}", d.object, d.problem));
    }
    if !r.damaged.is_empty() || r.already_marked > 0 {
        s.push_str(&format!(
            "\n  next: push the sources again (their chunks in damaged packs are uploaded anew), then `ferry gc {}` deletes the damaged packs once no snapshot needs them",
            r.repo
        ));
    }
    s
}

pub async fn repair(repo: &Repository, dry_run: bool) -> Result<RepairReport, OpError> {
    let started = Instant::now();
    let sizes: HashMap<PackId, u64> = repo
        .list_packs()
        .await?
        .into_iter()
        .map(|l| (l.id, l.size))
        .collect();
    let bad: HashSet<PackId> = repo.bad_pack_ids().await?;
    let mut found = Vec::new();
    let mut good = Vec::new();
    let mut marked = Vec::new();
    let mut checked = 0u64;
    for id in repo.list_pack_indexes().await? {
        if bad.contains(&id) {
            continue;
        }
        checked += 1;
        match check_one(repo, &id, sizes.get(&id).copied()).await? {
            Checked::Good(g) => good.push(g),
            Checked::Damaged(problem, idx) => {
                found.push((id, problem));
                marked.extend(idx);
            }
            Checked::Gone => {}
        }
    }
    let deltas_checked = good.iter().map(|g| g.deltas.len() as u64).sum();
    if deltas_checked > 0 {
        for id in &bad {
            // Only for messages: a base held by it is named as held by a damaged pack.
            if let Ok(idx) = repo.read_pack_index(id).await {
                marked.push(idx);
            }
        }
        let withdrawn = bad.iter().chain(found.iter().map(|f| &f.0)).copied();
        let mut bases = Bases::new(repo.url(), &good, &marked, withdrawn);
        found.extend(check_deltas(repo, &good, &mut bases).await?);
    }
    let mut damaged = Vec::new();
    for (id, problem) in found {
        tracing::warn!(pack = %id, problem = %problem, "damaged pack");
        if !dry_run {
            repo.mark_bad(&id, &problem).await?;
        }
        damaged.push(DamagedPack {
            pack: id,
            object: repo.pack_url(&id),
            problem,
        });
    }
    Ok(RepairReport {
        repo: repo.url(),
        dry_run,
        packs_checked: checked,
        deltas_checked,
        damaged,
        already_marked: bad.len() as u64,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// A delta frame of a pack that passed its own checks: its table entry and its base chunk.
struct DeltaEntry {
    entry: PackEntry,
    base: ChunkId,
}

/// A pack that passed its own checks, and its delta frames.
struct Good {
    idx: PackIndex,
    deltas: Vec<DeltaEntry>,
}

/// The outcome of one pack's own checks.
enum Checked {
    Good(Good),
    /// What is wrong, and its index when that was readable.
    Damaged(String, Option<PackIndex>),
    /// Its index vanished meanwhile (a gc deleted it).
    Gone,
}

/// What is wrong with one indexed pack, if anything. Store failures other than a missing
/// object stop the repair (they say nothing about the pack).
async fn check_one(repo: &Repository, id: &PackId, size: Option<u64>) -> Result<Checked, OpError> {
    let idx = match repo.read_pack_index(id).await {
        Ok(idx) => idx,
        Err(RepoError::Store(e)) if e.is_not_found() => return Ok(Checked::Gone),
        Err(e) if e.is_corrupt() => {
            return Ok(Checked::Damaged(format!("index unreadable: {e}"), None))
        }
        Err(e) => return Err(e.into()),
    };
    let Some(size) = size else {
        return Ok(Checked::Damaged(
            "the pack object is missing".into(),
            Some(idx),
        ));
    };
    if size != idx.pack_size {
        let problem = format!(
            "size {size} differs from the {} its index records",
            idx.pack_size
        );
        return Ok(Checked::Damaged(problem, Some(idx)));
    }
    let data = match repo.read_pack(id).await {
        Ok(d) => d,
        Err(RepoError::Store(e)) if e.is_not_found() => {
            let problem = "the pack object is missing".into();
            return Ok(Checked::Damaged(problem, Some(idx)));
        }
        Err(e) => return Err(e.into()),
    };
    let pack = *id;
    let how = (
        repo.sealing().clone(),
        repo.naming().clone(),
        repo.pack_url(id),
    );
    tokio::task::spawn_blocking(move || {
        let found = check_pack(&pack, &data, &idx.entries, (&how.0, &how.1, &how.2));
        if found.problems.is_empty() {
            let deltas = found
                .deltas
                .into_iter()
                .map(|(entry, base)| DeltaEntry { entry, base })
                .collect();
            Checked::Good(Good { idx, deltas })
        } else {
            Checked::Damaged(found.problems.join("; "), Some(idx))
        }
    })
    .await
    .map_err(OpError::join)
}

/// Where delta bases are found during a repair: every copy of every chunk, of which those in
/// withdrawn packs (marked damaged, earlier or in this run) are unavailable.
struct Bases {
    repo: String,
    copies: HashMap<ChunkId, Vec<ChunkLocation>>,
    withdrawn: HashSet<PackId>,
}

impl Bases {
    fn new(
        repo: String,
        good: &[Good],
        marked: &[PackIndex],
        withdrawn: impl Iterator<Item = PackId>,
    ) -> Self {
        let mut copies: HashMap<ChunkId, Vec<ChunkLocation>> = HashMap::new();
        for idx in good.iter().map(|g| &g.idx).chain(marked) {
            for e in &idx.entries {
                copies.entry(e.chunk).or_default().push(ChunkLocation {
                    pack: idx.pack,
                    entry: *e,
                });
            }
        }
        Self {
            repo,
            copies,
            withdrawn: withdrawn.collect(),
        }
    }

    /// Why chunk `id` cannot serve as a base, by the indexes alone.
    fn unavailable(&self, id: &ChunkId) -> Option<OpError> {
        self.locate(id).err()
    }
}

impl Locator for Bases {
    fn locate(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, OpError> {
        let copies = self.copies.get(id).map(Vec::as_slice).unwrap_or_default();
        if let Some(loc) = copies.iter().find(|l| !self.withdrawn.contains(&l.pack)) {
            return Ok(Some(*loc));
        }
        Err(OpError::Repo(match copies.first() {
            Some(l) => RepoError::ChunkOnlyInDamagedPack {
                object: self.repo.clone(),
                chunk: *id,
                pack: l.pack,
            },
            None => RepoError::ChunkNotIndexed {
                object: self.repo.clone(),
                chunk: *id,
            },
        }))
    }
}

/// The packs among `good` holding a delta frame that does not rebuild, and why: first every
/// delta frame is decoded; then, while marking packs leaves some delta's base only in marked
/// packs, those deltas' packs are marked too (each added to `bases`' withdrawn packs).
async fn check_deltas(
    repo: &Repository,
    good: &[Good],
    bases: &mut Bases,
) -> Result<Vec<(PackId, String)>, OpError> {
    let mut found = Vec::new();
    for g in good.iter().filter(|g| !g.deltas.is_empty()) {
        if let Some(problem) = decode_deltas(repo, bases, g).await? {
            found.push((g.idx.pack, problem));
        }
    }
    bases.withdrawn.extend(found.iter().map(|f| f.0));
    loop {
        let before = found.len();
        for g in good.iter().filter(|g| !g.deltas.is_empty()) {
            if bases.withdrawn.contains(&g.idx.pack) {
                continue;
            }
            let url = repo.pack_url(&g.idx.pack);
            let problems = g.deltas.iter().filter_map(|d| {
                let e = bases.unavailable(&d.base)?;
                Some(base_unreadable(&url, d, e).to_string())
            });
            if let Some(problem) = summary(problems.collect()) {
                bases.withdrawn.insert(g.idx.pack);
                found.push((g.idx.pack, problem));
            }
        }
        if found.len() == before {
            return Ok(found);
        }
    }
}

/// Decodes every delta frame of pack `g`; what is wrong with them, if anything. Store failures
/// other than a missing object stop the repair.
async fn decode_deltas(
    repo: &Repository,
    bases: &Bases,
    g: &Good,
) -> Result<Option<String>, OpError> {
    let url = repo.pack_url(&g.idx.pack);
    let data = match repo.read_pack(&g.idx.pack).await {
        Ok(d) => d,
        Err(RepoError::Store(e)) if e.is_not_found() => return Ok(None), // gc'd meanwhile
        Err(e) => return Err(e.into()),
    };
    let mut problems = Vec::new();
    for d in &g.deltas {
        let r = d.entry.range();
        if r.end > data.len() as u64 {
            problems.push(format!(
                "chunk {} lies past the end of the pack",
                d.entry.chunk
            ));
            continue;
        }
        let frame = data.slice(r.start as usize..r.end as usize);
        let loc = ChunkLocation {
            pack: g.idx.pack,
            entry: d.entry,
        };
        match decode_frame(repo, bases, frame, &loc, &url).await {
            Ok(_) => {}
            Err(e) if is_damage(&e) => problems.push(e.to_string()),
            Err(e) => return Err(e),
        }
    }
    Ok(summary(problems))
}

/// The error for delta frame `d` whose base is unavailable for reason `e`.
fn base_unreadable(url: &str, d: &DeltaEntry, e: OpError) -> OpError {
    OpError::DeltaBaseUnreadable {
        object: url.to_string(),
        chunk: d.entry.chunk,
        offset: d.entry.offset,
        base: d.base,
        source: Box::new(e),
    }
}

/// Whether a delta's decoding failed for damage in the repository (a frame, an index, a
/// missing object), not for a store failure that says nothing about the pack.
fn is_damage(e: &OpError) -> bool {
    match e {
        OpError::DeltaBaseUnreadable { source, .. } => is_damage(source),
        OpError::Store(s) | OpError::Repo(RepoError::Store(s)) => s.is_not_found(),
        e => e.is_corrupt(),
    }
}

/// One pack's problems, the first few listed; `None` when there are none.
fn summary(mut problems: Vec<String>) -> Option<String> {
    let n = problems.len();
    if n > DELTA_PROBLEMS_PER_PACK {
        problems.truncate(DELTA_PROBLEMS_PER_PACK);
        problems.push(format!(
            "{} more delta frames that do not rebuild",
            n - DELTA_PROBLEMS_PER_PACK
        ));
    }
    (n > 0).then(|| problems.join("; "))
}
