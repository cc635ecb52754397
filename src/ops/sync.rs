//! Brings the local index's view of a repository up to date from its pack indexes, and
//! answers "does this repository hold chunk X?" with packs marked for deletion by gc, or
//! marked damaged by `ferry repair`, counted as absent. Every local-index call here runs on a
//! blocking thread (sled may block on I/O).

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use crate::ids::{ChunkId, PackId};
use crate::index::RepoIndex;
use crate::ops::{OpError, Withdrawn};
use crate::repo::pack::PackIndex;
use crate::repo::{RepoError, Repository};

/// A repository's chunk set as of the last sync.
#[derive(Clone)]
pub struct Presence {
    pub rindex: RepoIndex,
    /// Packs a gc marked for deletion or `ferry repair` marked damaged: their chunks must
    /// not be relied on.
    pub marked: HashSet<PackId>,
    /// Of `marked`, those marked damaged.
    pub damaged: HashSet<PackId>,
}

impl Presence {
    /// The packs a gc marked, damaged ones aside: an uploader avoids sealing a pack under one
    /// of these ids (`PackUploader::avoiding`).
    pub fn gc_marked(&self) -> HashSet<PackId> {
        self.marked.difference(&self.damaged).copied().collect()
    }

    /// True when the repository holds the chunk in a pack that is neither marked for deletion
    /// nor damaged.
    pub fn has(&self, id: &ChunkId) -> Result<bool, OpError> {
        if self.marked.is_empty() {
            return Ok(self.rindex.has_chunk(id)?);
        }
        Ok(self
            .rindex
            .chunk_location(id)?
            .is_some_and(|l| !self.marked.contains(&l.pack)))
    }
}

/// The packs whose chunks must not be relied on, and why: gc marks and damage marks.
pub async fn withdrawn_packs(
    repo: &Repository,
) -> Result<std::collections::HashMap<PackId, Withdrawn>, OpError> {
    let (marks, bad) = futures::try_join!(repo.list_gc_marks(), repo.list_bad_packs())?;
    let mut out: std::collections::HashMap<PackId, Withdrawn> = marks
        .into_iter()
        .map(|m| (m.id, Withdrawn::GcMark))
        .collect();
    // Damage is the stronger reason: it holds even if a gc later unmarks the pack.
    out.extend(bad.into_iter().map(|b| (b.id, Withdrawn::Damaged)));
    Ok(out)
}

/// Loads pack indexes the local index has not seen. If a pack the index knows has vanished
/// (garbage collection, a rebuilt repository), the repository's cache is rebuilt from scratch.
/// Packs that are marked (by gc or as damaged) are loaded first and never displace a chunk
/// location already known, so a chunk held by a good pack too is found there.
pub async fn sync_index(repo: &Repository, rindex: &RepoIndex) -> Result<Presence, OpError> {
    let (listed, withdrawn) = futures::try_join!(
        async { repo.list_pack_indexes().await.map_err(OpError::from) },
        withdrawn_packs(repo)
    )?;
    let listed: HashSet<_> = listed.into_iter().collect();
    let damaged: Vec<PackId> = withdrawn
        .iter()
        .filter(|(_, w)| **w == Withdrawn::Damaged)
        .map(|(id, _)| *id)
        .collect();
    let fresh = {
        let (ri, damaged, url) = (rindex.clone(), damaged.clone(), repo.url());
        blocking(move || {
            let known: HashSet<_> = ri.packs()?.into_iter().collect();
            // A known pack newly marked damaged may hold the location of a chunk a good pack
            // holds too: rebuild, so that the good copy is found (rare: only after `ferry
            // repair`).
            let mut newly_damaged = false;
            for id in damaged.iter().filter(|id| known.contains(id)) {
                newly_damaged |= !ri.knows_damaged(id)?;
            }
            if known.is_subset(&listed) && !newly_damaged {
                return Ok(listed.difference(&known).copied().collect::<Vec<_>>());
            }
            tracing::info!(repo = %url, "packs disappeared or were marked damaged since the last run; rebuilding the local index");
            ri.clear()?;
            Ok(listed.into_iter().collect())
        })
        .await?
    };
    if !fresh.is_empty() {
        tracing::debug!(repo = %repo.url(), packs = fresh.len(), "loading pack indexes");
    }
    let (weak, strong): (Vec<PackId>, Vec<PackId>) =
        fresh.into_iter().partition(|id| withdrawn.contains_key(id));
    load(repo, weak, Strength::Weak, rindex).await?;
    load(repo, strong, Strength::Strong, rindex).await?;
    {
        let (ri, damaged) = (rindex.clone(), damaged.clone());
        blocking(move || {
            for id in &damaged {
                ri.note_damaged(id)?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(Presence {
        rindex: rindex.clone(),
        marked: withdrawn.into_keys().collect(),
        damaged: damaged.into_iter().collect(),
    })
}

/// How a pack's chunk locations enter the local index.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strength {
    /// A usable pack: its locations replace known ones.
    Strong,
    /// A marked or damaged pack: only where nothing is known, and an unreadable index
    /// (a damaged pack's may be) is skipped.
    Weak,
}

/// Reads the given pack indexes (8 at a time) into the local index.
async fn load(
    repo: &Repository,
    ids: Vec<PackId>,
    strength: Strength,
    rindex: &RepoIndex,
) -> Result<(), OpError> {
    futures::stream::iter(ids)
        .map(|id| async move {
            match repo.read_pack_index(&id).await {
                Ok(idx) => Ok(Some(idx)),
                // Deleted by a gc since the listing (index first, then pack): nothing to learn.
                Err(RepoError::Store(e)) if e.is_not_found() => Ok(None),
                Err(e) if e.is_corrupt() && strength == Strength::Weak => {
                    tracing::warn!(error = %e, "skipping the unreadable index of a marked pack");
                    Ok(None)
                }
                Err(e) => Err(OpError::from(e)),
            }
        })
        .buffer_unordered(8)
        .try_for_each(|idx: Option<PackIndex>| {
            let ri = rindex.clone();
            blocking(move || {
                match (idx, strength) {
                    (Some(idx), Strength::Strong) => ri.add_pack(&idx)?,
                    (Some(idx), Strength::Weak) => ri.add_pack_weak(&idx)?,
                    (None, _) => {}
                }
                Ok(())
            })
        })
        .await
}

/// Fails if any of `chunks` lives only in a pack a gc has marked for deletion, or `ferry
/// repair` marked damaged, since the caller synced. Called right before a snapshot that
/// relies on those chunks is written, so a concurrent gc can never delete a pack out from
/// under a new snapshot, and no new snapshot relies on a damaged pack.
pub async fn check_not_marked(
    repo: &Repository,
    rindex: &RepoIndex,
    chunks: impl IntoIterator<Item = ChunkId>,
) -> Result<(), OpError> {
    let withdrawn = withdrawn_packs(repo).await?;
    if withdrawn.is_empty() {
        return Ok(());
    }
    let chunks: Vec<ChunkId> = chunks.into_iter().collect();
    let (ri, url) = (rindex.clone(), repo.url());
    blocking(move || {
        for id in chunks {
            if let Some(loc) = ri.chunk_location(&id)? {
                if let Some(why) = withdrawn.get(&loc.pack) {
                    return Err(OpError::PackWithdrawn {
                        pack: loc.pack.to_hex(),
                        repo: url,
                        why: *why,
                    });
                }
            }
        }
        Ok(())
    })
    .await
}

/// Runs sled work on a blocking thread: the local index is never touched from async code.
pub(crate) async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> Result<R, OpError> + Send + 'static,
) -> Result<R, OpError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(OpError::join)?
}
