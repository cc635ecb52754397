//! Whole files into a local destination folder, written beside their place under a
//! temporary name that always fits in NAME_MAX (`object_store`'s local store stages
//! `NAME#N`, which a 254-byte name cannot have) and renamed into place.

use std::io::Write;
use std::path::Path;

use object_store::path::Path as ObjPath;

use crate::mirror::parts::LocalCheck;
use crate::ops::restore_local::partial_name;
use crate::ops::OpError;
use crate::store::delta::{normalize_etag, PartSource};
use crate::store::Store;

/// Bytes read from the source per write.
const STEP: u64 = 8 << 20;

/// Writes `size` bytes from `reader` to `key` under `root`; returns the etag the
/// destination store lists for it afterwards.
pub(super) async fn put_file(
    dest: &Store,
    root: &Path,
    key: &ObjPath,
    reader: &dyn PartSource,
    size: u64,
    check: Option<LocalCheck>,
    source: &str,
) -> Result<String, OpError> {
    let target = root.join(key.as_ref());
    let parent = target.parent().unwrap_or(root).to_path_buf();
    let name = target
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("file")
        .to_string();
    let tmp = parent.join(partial_name(&name));
    let result = async {
        let (p, t) = (parent.clone(), tmp.clone());
        let mut file = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&p)?;
            std::fs::File::create(&t)
        })
        .await
        .map_err(OpError::join)?
        .map_err(|e| OpError::io(tmp.display(), e))?;
        let mut at = 0;
        while at < size {
            let end = (at + STEP).min(size);
            let data = reader
                .read(at..end)
                .await
                .map_err(|e| OpError::io(source, e))?;
            file = tokio::task::spawn_blocking(move || file.write_all(&data).map(|_| file))
                .await
                .map_err(OpError::join)?
                .map_err(|e| OpError::io(tmp.display(), e))?;
            at = end;
        }
        let (t, dst) = (tmp.clone(), target.clone());
        tokio::task::spawn_blocking(move || {
            file.sync_data()?;
            drop(file);
            // The rename into place is the commit: the source must not have changed before it.
            if let Some(c) = check {
                c.unchanged()?;
            }
            std::fs::rename(&t, &dst)
        })
        .await
        .map_err(OpError::join)?
        .map_err(|e| OpError::io(target.display(), e))
    }
    .await;
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    let meta = dest.head(key).await?;
    Ok(meta
        .e_tag
        .as_deref()
        .map(normalize_etag)
        .unwrap_or_default())
}
