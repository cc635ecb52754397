//! Repair: the way out after `verify --read-data` found a damaged pack. Every pack is
//! re-read and re-hashed like verify does; each damaged one (missing, wrong size, bytes that
//! do not match its id, its index or its chunk ids, or an unreadable index) is marked with
//! `bad/<pack id>`. From then on writers count its chunks as absent, so the next push of the
//! same source uploads them anew (and the snapshots that named them are whole again: they
//! name chunks, not packs); gc deletes the pack once no snapshot needs a chunk only it holds.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use serde::Serialize;

use crate::ids::PackId;
use crate::ops::verify::check_pack;
use crate::ops::OpError;
use crate::repo::Repository;

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
    /// Packs found damaged in this run (and marked, unless `dry_run`).
    pub damaged: Vec<DamagedPack>,
    /// Packs marked damaged by an earlier run (not checked again).
    pub already_marked: u64,
    pub duration_secs: f64,
}

/// The report for people.
pub fn render(r: &RepairReport) -> String {
    let mut s = format!(
        "{}repair {}: {} packs checked, {} damaged{}",
        if r.dry_run { "[dry run] " } else { "" },
        r.repo,
        r.packs_checked,
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
    let mut damaged = Vec::new();
    let mut checked = 0u64;
    for id in repo.list_pack_indexes().await? {
        if bad.contains(&id) {
            continue;
        }
        checked += 1;
        let problem = match check_one(repo, &id, sizes.get(&id).copied()).await? {
            Some(p) => p,
            None => continue,
        };
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
        damaged,
        already_marked: bad.len() as u64,
        duration_secs: started.elapsed().as_secs_f64(),
    })
}

/// What is wrong with one indexed pack, if anything. Store failures other than a missing
/// object stop the repair (they say nothing about the pack).
async fn check_one(
    repo: &Repository,
    id: &PackId,
    size: Option<u64>,
) -> Result<Option<String>, OpError> {
    use crate::repo::RepoError;
    let idx = match repo.read_pack_index(id).await {
        Ok(idx) => idx,
        Err(RepoError::Store(e)) if e.is_not_found() => return Ok(None), // gc'd meanwhile
        Err(e) if e.is_corrupt() => return Ok(Some(format!("index unreadable: {e}"))),
        Err(e) => return Err(e.into()),
    };
    let Some(size) = size else {
        return Ok(Some("the pack object is missing".into()));
    };
    if size != idx.pack_size {
        return Ok(Some(format!(
            "size {size} differs from the {} its index records",
            idx.pack_size
        )));
    }
    let data = match repo.read_pack(id).await {
        Ok(d) => d,
        Err(RepoError::Store(e)) if e.is_not_found() => {
            return Ok(Some("the pack object is missing".into()))
        }
        Err(e) => return Err(e.into()),
    };
    let pack = *id;
    let found = tokio::task::spawn_blocking(move || check_pack(&pack, &data, &idx.entries))
        .await
        .map_err(OpError::join)?;
    Ok((!found.is_empty()).then(|| found.join("; ")))
}
