//! Brings the local index's view of a repository up to date from its pack indexes, and
//! answers "does this repository hold chunk X?" with packs marked for deletion by gc counted
//! as absent.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use crate::ids::{ChunkId, PackId};
use crate::index::RepoIndex;
use crate::ops::OpError;
use crate::repo::{RepoError, Repository};

/// A repository's chunk set as of the last sync.
#[derive(Clone)]
pub struct Presence {
    pub rindex: RepoIndex,
    /// Packs a gc marked for deletion: their chunks must not be relied on.
    pub marked: HashSet<PackId>,
}

impl Presence {
    /// True when the repository holds the chunk in a pack that is not marked for deletion.
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

/// Loads pack indexes the local index has not seen. If a pack the index knows has vanished
/// (garbage collection, a rebuilt repository), the repository's cache is rebuilt from scratch.
pub async fn sync_index(repo: &Repository, rindex: &RepoIndex) -> Result<Presence, OpError> {
    let (listed, marks) = futures::try_join!(repo.list_pack_indexes(), repo.list_gc_marks())?;
    let listed: HashSet<_> = listed.into_iter().collect();
    let known: HashSet<_> = rindex.packs()?.into_iter().collect();
    let fresh: Vec<_> = if known.is_subset(&listed) {
        listed.difference(&known).copied().collect()
    } else {
        tracing::info!(repo = %repo.url(), "packs disappeared since the last run; rebuilding the local index");
        rindex.clear()?;
        listed.into_iter().collect()
    };
    if !fresh.is_empty() {
        tracing::debug!(repo = %repo.url(), packs = fresh.len(), "loading pack indexes");
    }
    futures::stream::iter(fresh)
        .map(|id| async move {
            match repo.read_pack_index(&id).await {
                Ok(idx) => Ok(Some(idx)),
                // Deleted by a gc since the listing (index first, then pack): nothing to learn.
                Err(RepoError::Store(e)) if e.is_not_found() => Ok(None),
                Err(e) => Err(OpError::from(e)),
            }
        })
        .buffer_unordered(8)
        .try_for_each(|idx| {
            let r = match idx {
                Some(idx) => rindex.add_pack(&idx).map_err(OpError::from),
                None => Ok(()),
            };
            async move { r }
        })
        .await?;
    Ok(Presence {
        rindex: rindex.clone(),
        marked: marks.into_iter().map(|m| m.id).collect(),
    })
}

/// Fails if any of `chunks` lives only in a pack a gc has marked for deletion since the
/// caller synced. Called right before a snapshot that relies on those chunks is written, so a
/// concurrent gc can never delete a pack out from under a new snapshot.
pub async fn check_not_marked(
    repo: &Repository,
    rindex: &RepoIndex,
    chunks: impl IntoIterator<Item = ChunkId>,
) -> Result<(), OpError> {
    let marks: HashSet<PackId> = repo
        .list_gc_marks()
        .await?
        .into_iter()
        .map(|m| m.id)
        .collect();
    if marks.is_empty() {
        return Ok(());
    }
    for id in chunks {
        if let Some(loc) = rindex.chunk_location(&id)? {
            if marks.contains(&loc.pack) {
                return Err(OpError::Invalid(format!(
                    "a concurrent gc marked pack {} in {} for deletion while this run relied on it; run again (the affected chunks will be uploaded anew)",
                    loc.pack,
                    repo.url()
                )));
            }
        }
    }
    Ok(())
}
