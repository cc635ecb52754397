//! Brings the local index's view of a repository up to date from its pack indexes.

use std::collections::HashSet;

use futures::{StreamExt, TryStreamExt};

use crate::index::RepoIndex;
use crate::ops::OpError;
use crate::repo::Repository;

/// Loads pack indexes the local index has not seen. If a pack the index knows has vanished
/// (garbage collection, a rebuilt repository), the repository's cache is rebuilt from scratch.
/// Returns how many pack indexes were read.
pub async fn sync_index(repo: &Repository, rindex: &RepoIndex) -> Result<usize, OpError> {
    let listed: HashSet<_> = repo.list_pack_indexes().await?.into_iter().collect();
    let known: HashSet<_> = rindex.packs()?.into_iter().collect();
    let fresh: Vec<_> = if known.is_subset(&listed) {
        listed.difference(&known).copied().collect()
    } else {
        tracing::info!(repo = %repo.url(), "packs disappeared since the last run; rebuilding the local index");
        rindex.clear()?;
        listed.into_iter().collect()
    };
    let n = fresh.len();
    if n > 0 {
        tracing::debug!(repo = %repo.url(), packs = n, "loading pack indexes");
    }
    futures::stream::iter(fresh)
        .map(|id| async move { repo.read_pack_index(&id).await })
        .buffer_unordered(8)
        .map_err(OpError::from)
        .try_for_each(|idx| {
            let r = rindex.add_pack(&idx).map_err(OpError::from);
            async move { r }
        })
        .await?;
    Ok(n)
}
