//! Ref logs read through the local index. A ref-log entry is written once (create-only) and
//! never changed, so an entry read before is reused while the listing shows the same object
//! with the same version tag: a replication that runs every second lists each log and reads
//! only the entries that are new, instead of every entry of both repositories (issue 19: that
//! read grew with the history on every run). The cache keeps at most the ref's current log,
//! and like the rest of the index it can be thrown away.

use std::collections::HashSet;

use object_store::ObjectMeta;

use crate::index::RepoIndex;
use crate::ops::sync::blocking;
use crate::ops::OpError;
use crate::repo::{RefEntry, Repository};

/// The log of ref `name` in `repo`, oldest first, as [`Repository::ref_log`] returns it,
/// reading from the store only the entries `rindex` has not seen.
pub async fn ref_log(
    repo: &Repository,
    rindex: &RepoIndex,
    name: &str,
) -> Result<Vec<RefEntry>, OpError> {
    let metas = repo.ref_log_objects(name).await?;
    let keys: Vec<Option<Vec<u8>>> = metas.iter().map(cache_key).collect();
    let cached = {
        let (ri, keys) = (rindex.clone(), keys.clone());
        blocking(move || {
            keys.iter()
                .map(|k| match k {
                    Some(k) => ri.ref_entry(k),
                    None => Ok(None),
                })
                .collect::<Result<Vec<_>, _>>()
                .map_err(OpError::from)
        })
        .await?
    };
    let mut out = Vec::with_capacity(metas.len());
    let mut new = Vec::new();
    for ((meta, key), hit) in metas.iter().zip(&keys).zip(cached) {
        match hit {
            Some(bytes) => out.push(repo.decode_ref_entry(&meta.location, &bytes)?),
            None => {
                let (bytes, entry) = repo.read_ref_entry(&meta.location).await?;
                if let Some(k) = key {
                    new.push((k.clone(), bytes));
                }
                out.push(entry);
            }
        }
    }
    // Entries only leave a log when `forget` deletes them; prune then too, on the next new
    // entry, so a steady log costs no scan of the cache.
    if !new.is_empty() {
        let live: HashSet<Vec<u8>> = keys.into_iter().flatten().collect();
        let (ri, prefix) = (rindex.clone(), format!("refs/{name}/"));
        blocking(move || {
            ri.keep_ref_entries(new, prefix.as_bytes(), &live)
                .map_err(OpError::from)
        })
        .await?;
    }
    Ok(out)
}

/// `<object path>\n<version tag>`; `None` when the store gives no tag (nothing is cached).
fn cache_key(meta: &ObjectMeta) -> Option<Vec<u8>> {
    let tag = meta.e_tag.as_ref()?;
    Some(format!("{}\n{tag}", meta.location).into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chunker::ChunkerParams;
    use crate::ids::SnapshotId;
    use crate::index::Index;
    use crate::repo::config::RepoConfig;
    use crate::store::options::StoreOptions;
    use crate::store::{Access, Store, StoreUrl};
    use std::time::Duration;

    fn key_of(metas: &[ObjectMeta], seq_name: &str) -> Vec<u8> {
        let m = metas
            .iter()
            .find(|m| m.location.filename() == Some(seq_name))
            .unwrap();
        cache_key(m).unwrap()
    }

    /// Entries read once are served from the index (an entry object damaged in place, with
    /// its version tag kept, still reads back as the entry first read), and an entry that
    /// `forget` deleted leaves the cache with the next new entry.
    #[tokio::test]
    async fn entries_are_read_once_and_pruned_after_forget() {
        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::Local(dir.path().join("repo"));
        let store = Store::open_with(&url, Access::Write, &StoreOptions::default()).unwrap();
        let config = RepoConfig::new(ChunkerParams::default(), 1 << 20);
        let repo = Repository::init(store, config, &Default::default())
            .await
            .unwrap();
        let index = Index::open(&dir.path().join("index"), Duration::ZERO).unwrap();
        let ri = index.repo(repo.id()).unwrap();
        for n in 1..=3u8 {
            repo.advance_ref("ckpt", SnapshotId([n; 32])).await.unwrap();
        }
        let first = ref_log(&repo, &ri, "ckpt").await.unwrap();
        assert_eq!(first, repo.ref_log("ckpt").await.unwrap());
        assert_eq!(first.len(), 3);

        // Damage the first entry's object in place: same length, same inode, same mtime,
        // so the same version tag. The store itself now reads garbage there.
        let metas = repo.ref_log_objects("ckpt").await.unwrap();
        let first_name = metas[0].location.filename().unwrap().to_string();
        let file = dir.path().join("repo").join(metas[0].location.as_ref());
        let modified = std::fs::metadata(&file).unwrap().modified().unwrap();
        let len = std::fs::metadata(&file).unwrap().len() as usize;
        std::fs::write(&file, vec![b'x'; len]).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&file)
            .unwrap()
            .set_modified(modified)
            .unwrap();
        assert_eq!(repo.ref_log_objects("ckpt").await.unwrap(), metas);
        assert!(
            repo.ref_log("ckpt").await.is_err(),
            "the store reads garbage"
        );
        assert_eq!(ref_log(&repo, &ri, "ckpt").await.unwrap(), first);

        // forget deletes the first entry; the next new entry prunes it from the cache.
        let gone = key_of(&metas, &first_name);
        repo.delete_ref_entry("ckpt", first[0].seq).await.unwrap();
        assert_eq!(ref_log(&repo, &ri, "ckpt").await.unwrap(), first[1..]);
        repo.advance_ref("ckpt", SnapshotId([4; 32])).await.unwrap();
        let now = ref_log(&repo, &ri, "ckpt").await.unwrap();
        assert_eq!(now.len(), 3);
        assert_eq!(now[2].snapshot, SnapshotId([4; 32]));
        assert_eq!(
            ri.ref_entry(&gone).unwrap(),
            None,
            "a deleted entry is pruned"
        );
        let metas = repo.ref_log_objects("ckpt").await.unwrap();
        for m in &metas {
            assert!(ri.ref_entry(&cache_key(m).unwrap()).unwrap().is_some());
        }
    }
}
