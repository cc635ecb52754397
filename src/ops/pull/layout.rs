//! The pull destination's folders: the lock, `current`, complete versions and their records,
//! the chunks they hold, publishing a version and pruning old ones.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use crate::ids::ChunkId;
use crate::ops::restore_local::safe_join;
use crate::ops::OpError;
use crate::repo::snapshot::{ChunkRef, Entry, Snapshot};

use super::{version_seq, PullError};

/// Where one chunk can be read locally: a file of an earlier version, at an offset.
#[derive(Debug, Clone)]
pub(super) struct LocalChunk {
    pub(super) file: PathBuf,
    pub(super) offset: u64,
    pub(super) len: u32,
}

/// The folders of a pull destination.
pub(super) struct Layout {
    dir: PathBuf,
    pub(super) versions: PathBuf,
    meta: PathBuf,
}

impl Layout {
    pub(super) fn open(dir: &Path) -> Result<Self, OpError> {
        let layout = Layout {
            dir: dir.to_path_buf(),
            versions: dir.join("versions"),
            meta: dir.join(".ferry"),
        };
        for d in [&layout.versions, &layout.meta] {
            std::fs::create_dir_all(d).map_err(|e| OpError::io(d.display(), e))?;
        }
        Ok(layout)
    }

    /// The layout of `dir` as it is, for a dry run: `None` when `dir` has no `versions/`
    /// (nothing is created).
    pub(super) fn peek(dir: &Path) -> Option<Self> {
        let layout = Layout {
            dir: dir.to_path_buf(),
            versions: dir.join("versions"),
            meta: dir.join(".ferry"),
        };
        layout.versions.is_dir().then_some(layout)
    }

    /// Takes the folder's lock (released when the file is dropped, or the process dies).
    pub(super) fn lock(&self) -> Result<std::fs::File, OpError> {
        let path = self.meta.join("lock");
        let f = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(|e| OpError::io(path.display(), e))?;
        match f.try_lock() {
            Ok(()) => Ok(f),
            Err(std::fs::TryLockError::WouldBlock) => Err(PullError::Busy {
                dir: self.dir.display().to_string(),
                lock: path.display().to_string(),
            }
            .into()),
            Err(std::fs::TryLockError::Error(e)) => Err(OpError::io(path.display(), e)),
        }
    }

    /// The version `current` points at, if any.
    pub(super) fn current(&self) -> Result<Option<String>, OpError> {
        let link = self.dir.join("current");
        match std::fs::read_link(&link) {
            Ok(target) => {
                let name = target
                    .strip_prefix("versions")
                    .ok()
                    .and_then(|t| t.to_str())
                    .filter(|t| !t.is_empty() && !t.contains('/'))
                    .ok_or_else(|| PullError::ForeignCurrent {
                        path: link.display().to_string(),
                    })?;
                Ok(Some(name.to_string()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => {
                Err(PullError::ForeignCurrent {
                    path: link.display().to_string(),
                }
                .into())
            }
            Err(e) => Err(OpError::io(link.display(), e)),
        }
    }

    /// Complete versions (those with a recorded snapshot), newest sequence first.
    pub(super) fn complete_versions(&self) -> Result<Vec<String>, OpError> {
        let mut out = Vec::new();
        let rd = std::fs::read_dir(&self.versions)
            .map_err(|e| OpError::io(self.versions.display(), e))?;
        for ent in rd {
            let ent = ent.map_err(|e| OpError::io(self.versions.display(), e))?;
            let Some(name) = ent.file_name().to_str().map(str::to_string) else {
                continue;
            };
            if !name.starts_with('.') && self.meta.join(format!("{name}.snapshot")).is_file() {
                out.push(name);
            }
        }
        out.sort_by_key(|n| std::cmp::Reverse((version_seq(n), n.clone())));
        Ok(out)
    }

    /// Every chunk held by a complete version's files, the live version's first. A version
    /// whose record cannot be read is skipped (its chunks are fetched instead).
    pub(super) fn local_chunks(
        &self,
        current: Option<&str>,
    ) -> Result<HashMap<ChunkId, LocalChunk>, OpError> {
        let mut versions = self.complete_versions()?;
        if let Some(c) = current {
            if let Some(i) = versions.iter().position(|v| v == c) {
                let live = versions.remove(i);
                versions.insert(0, live);
            }
        }
        let mut map = HashMap::new();
        for v in versions {
            let record = self.meta.join(format!("{v}.snapshot"));
            let Some(snap) = std::fs::read(&record)
                .ok()
                .and_then(|b| Snapshot::decode(&b).ok())
            else {
                tracing::warn!(record = %record.display(), "unreadable version record; its chunks will be fetched");
                continue;
            };
            let root = self.versions.join(&v);
            for e in &snap.entries {
                if let Entry::File { path, chunks, .. } = e {
                    let Ok(file) = safe_join(&root, path) else {
                        continue;
                    };
                    let mut offset = 0u64;
                    for ChunkRef(id, len) in chunks {
                        map.entry(*id).or_insert_with(|| LocalChunk {
                            file: file.clone(),
                            offset,
                            len: *len,
                        });
                        offset += *len as u64;
                    }
                }
            }
        }
        Ok(map)
    }

    /// Records the version, moves it into place and points `current` at it, each step
    /// durable before the next.
    pub(super) fn publish(
        &self,
        partial: &Path,
        version: &str,
        snap: &Snapshot,
    ) -> Result<(), OpError> {
        let record = self.meta.join(format!("{version}.snapshot"));
        write_durably(&record, &snap.encode())?;
        let dest = self.versions.join(version);
        if dest.exists() {
            // A version folder without `current` pointing at it, from an earlier pull killed
            // between this rename and the swap: the new one replaces it.
            remove_tree(&dest)?;
        }
        std::fs::rename(partial, &dest).map_err(|e| OpError::io(dest.display(), e))?;
        sync_dir(&self.versions)?;
        let tmp = self.dir.join(".current.new");
        let _ = std::fs::remove_file(&tmp);
        std::os::unix::fs::symlink(Path::new("versions").join(version), &tmp)
            .map_err(|e| OpError::io(tmp.display(), e))?;
        let current = self.dir.join("current");
        std::fs::rename(&tmp, &current).map_err(|e| OpError::io(current.display(), e))?;
        sync_dir(&self.dir)
    }

    /// Removes complete versions beyond `keep` (never `live`), their records, and partial
    /// folders of other versions (killed pulls: the lock says no pull is writing them).
    pub(super) fn prune(&self, live: &str, keep: usize) -> Result<Vec<String>, OpError> {
        let mut removed = Vec::new();
        let others = self.complete_versions()?;
        let mut kept = 1;
        for v in others.iter().filter(|v| *v != live) {
            if kept < keep {
                kept += 1;
                continue;
            }
            remove_tree(&self.versions.join(v))?;
            let record = self.meta.join(format!("{v}.snapshot"));
            std::fs::remove_file(&record).map_err(|e| OpError::io(record.display(), e))?;
            removed.push(v.clone());
        }
        let rd = std::fs::read_dir(&self.versions)
            .map_err(|e| OpError::io(self.versions.display(), e))?;
        for ent in rd.flatten() {
            let name = ent.file_name().to_string_lossy().into_owned();
            if name.starts_with(".partial-") {
                remove_tree(&ent.path())?;
            } else if !name.starts_with('.')
                && !others.contains(&name)
                && name != live
                && ent.path().is_dir()
            {
                // A version moved into place whose record was lost: not trusted, not kept.
                remove_tree(&ent.path())?;
            }
        }
        Ok(removed)
    }
}

fn write_durably(path: &Path, bytes: &[u8]) -> Result<(), OpError> {
    let tmp = path.with_extension("tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    };
    write().map_err(|e| OpError::io(path.display(), e))?;
    sync_dir(path.parent().unwrap_or(Path::new(".")))
}

fn sync_dir(dir: &Path) -> Result<(), OpError> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| OpError::io(dir.display(), e))
}

/// Removes a folder tree, first making its folders writable (a version keeps the modes
/// recorded in its snapshot, read-only folders included).
fn remove_tree(path: &Path) -> Result<(), OpError> {
    fn writable(p: &Path) -> std::io::Result<()> {
        let meta = std::fs::symlink_metadata(p)?;
        if meta.is_dir() {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o700))?;
            for ent in std::fs::read_dir(p)? {
                writable(&ent?.path())?;
            }
        }
        Ok(())
    }
    let remove = || -> std::io::Result<()> {
        writable(path)?;
        std::fs::remove_dir_all(path)
    };
    match remove() {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(OpError::io(path.display(), e)),
        _ => Ok(()),
    }
}
