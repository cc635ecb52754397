//! `ferry pull --dry-run`: what a pull would read from the store, priced, without touching
//! DIR (no folder, lock, version or link is made) or the store.
//!
//! Chunks the complete versions in DIR hold are counted as reused (a real pull checks each
//! and fetches a damaged one); every other chunk is read as stored, and the delta bases of
//! those frames that DIR does not hold are read too (from the source's pack indexes). A
//! partial version left by a killed pull is not counted: the forecast is then an upper bound.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Instant;

use super::layout::Layout;
use super::{version_name, PullOptions, PullReport};
use crate::ids::{ChunkId, PackId};
use crate::index::RepoIndex;
use crate::ops::egress::{DryRun, DryTarget, Prices};
use crate::ops::fetch::locate;
use crate::ops::sync::sync_index;
use crate::ops::OpError;
use crate::repo::Repository;

/// Forecasts [`super::pull`] of `spec` from `repo` into `dir`, priced by `prices`.
pub async fn pull_dry(
    repo: &Repository,
    rindex: &RepoIndex,
    (spec, dir): (&str, &Path),
    opts: &PullOptions,
    prices: &Prices,
) -> Result<PullReport, OpError> {
    let started = Instant::now();
    sync_index(repo, rindex).await?;
    let entry = repo.resolve_entry(spec).await?;
    let snap = opts
        .selection
        .apply(&repo.read_snapshot(&entry.snapshot).await?)?;
    let version = version_name(entry.seq, &entry.snapshot, &opts.selection, &snap);
    let layout = Layout::peek(dir);
    let current = match &layout {
        Some(l) => l.current()?,
        None => None,
    };
    let live = current.as_deref() == Some(version.as_str())
        && layout
            .as_ref()
            .is_some_and(|l| l.versions.join(&version).is_dir());
    let local = match (&layout, live) {
        (Some(l), false) => l.local_chunks(current.as_deref())?,
        _ => HashMap::new(),
    };
    let mut report = PullReport {
        published: !live,
        ..PullReport::start(&entry, &snap, dir.join("versions").join(&version))
    };
    if !live {
        let mut seen = HashSet::new();
        let mut need = Vec::new();
        for c in snap.chunks() {
            if !seen.insert(c.0) {
                continue;
            }
            if local.contains_key(&c.0) {
                report.chunks_reused += 1;
                report.bytes_reused += c.1 as u64;
            } else {
                need.push(c.0);
            }
        }
        measure(repo, rindex, need, (&local, &mut seen), &mut report).await?;
    }
    let to = format!("file://{}", dir.display());
    let quote = prices.quote(&repo.url(), &to);
    let sizes = [report.bytes_read_from_store, 0, 0, 0];
    report.dry_run = Some(DryRun::of(vec![DryTarget::priced(to, sizes, quote)]));
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Counts the frames of `need` and, round by round, the delta bases they need that DIR
/// lacks and were not counted yet.
async fn measure(
    repo: &Repository,
    rindex: &RepoIndex,
    mut need: Vec<ChunkId>,
    (local, seen): (
        &HashMap<ChunkId, super::layout::LocalChunk>,
        &mut HashSet<ChunkId>,
    ),
    report: &mut PullReport,
) -> Result<(), OpError> {
    let mut bases: HashMap<PackId, HashMap<ChunkId, ChunkId>> = HashMap::new();
    let deltas = repo.config().version >= crate::repo::config::DELTA_VERSION;
    while !need.is_empty() {
        let mut next = Vec::new();
        for l in locate(rindex, repo, need)? {
            report.chunks_fetched += 1;
            report.bytes_read_from_store += l.entry.frame_len as u64;
            if deltas && !bases.contains_key(&l.pack) {
                let idx = repo.read_pack_index(&l.pack).await?;
                bases.insert(
                    l.pack,
                    idx.bases.iter().map(|b| (b.chunk, b.base)).collect(),
                );
            }
            if let Some(b) = bases.get(&l.pack).and_then(|m| m.get(&l.entry.chunk)) {
                if local.contains_key(b) {
                    report.delta_bases_reused += local[b].len as u64;
                } else if seen.insert(*b) {
                    next.push(*b);
                }
            }
        }
        need = next;
    }
    Ok(())
}
