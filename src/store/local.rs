//! The local backends: folders (`file://`, plain paths) through object_store's
//! `LocalFileSystem` with fsync, and the process-wide `memory://` stores of tests. Neither has
//! a native delta client: files are written whole.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, OnceLock};

use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::ObjectStore;

use super::{prefixed, Access, Backend, StoreError, StoreUrl};
use crate::error::first_line;

/// Opens a local folder; with [`Access::Write`] a missing one is created.
pub(crate) fn open_folder(
    url: &StoreUrl,
    path: &Path,
    access: Access,
) -> Result<Backend, StoreError> {
    let fail = |reason: String| StoreError::Open {
        url: url.to_string(),
        reason,
    };
    if access == Access::Write {
        std::fs::create_dir_all(path)
            .map_err(|e| fail(format!("cannot create the folder: {e}")))?;
    } else if !path.is_dir() {
        return Err(StoreError::NoSuchFolder {
            url: url.to_string(),
        });
    }
    // fsync: a pack must be on disk before the snapshot that needs it is written.
    let fs = LocalFileSystem::new_with_prefix(path)
        .map_err(|e| fail(first_line(&e.to_string()).to_string()))?
        .with_fsync(true);
    Ok(Backend {
        inner: Arc::new(fs),
        endpoint: None,
        delta: None,
    })
}

/// The `memory://name` store of this process (the same one for every open of `name`),
/// below `prefix`.
pub(crate) fn open_memory(name: &str, prefix: &str) -> Backend {
    static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
    let mut stores = STORES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|e| e.into_inner());
    let mem: Arc<dyn ObjectStore> = stores.entry(name.to_string()).or_default().clone();
    Backend {
        inner: prefixed(mem, prefix),
        endpoint: None,
        delta: None,
    }
}
