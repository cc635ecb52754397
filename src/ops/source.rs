//! Sources: the trees a push reads, either a local folder (or single file) or the objects
//! under a store prefix. Lists entries and opens blocking readers over file contents.

use std::io::Read;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use futures::TryStreamExt;
use tokio_util::io::{StreamReader, SyncIoBridge};

use crate::ops::OpError;
use crate::repo::snapshot::check_path;
use crate::store::key::object_key;
use crate::store::{Access, Store, StoreOptions, StoreUrl};

/// A tree to push.
#[derive(Clone)]
pub enum Source {
    /// A local folder, or a single file (then its name is the only path).
    Local { root: PathBuf, single_file: bool },
    /// Plain objects under a store prefix.
    Objects(Store),
}

/// A regular file in a source.
#[derive(Debug, Clone)]
pub struct SourceFile {
    /// Relative `/`-separated path.
    pub rel: String,
    pub size: u64,
    pub mtime_ns: i64,
    pub mode: u32,
    /// Object etag (object sources only).
    pub etag: Option<String>,
    /// Status-change time in nanoseconds (local files; 0 for objects). Restoring an mtime
    /// (`cp -p`, `rsync -a`, `touch -r`) cannot restore it.
    pub ctime_ns: i64,
    /// Inode number (local files; 0 for objects): a file replaced by another one with the
    /// same size and times is still another file.
    pub ino: u64,
}

/// One entry of a source, in path order.
#[derive(Debug, Clone)]
pub enum SourceEntry {
    File(SourceFile),
    Dir { rel: String, mode: u32 },
    Symlink { rel: String, target: String },
}

impl Source {
    pub fn open(url: &StoreUrl, options: &StoreOptions) -> Result<Self, OpError> {
        match url {
            StoreUrl::Local(path) => {
                let meta = std::fs::metadata(path).map_err(|e| OpError::io(path.display(), e))?;
                Ok(Source::Local {
                    root: path.clone(),
                    single_file: meta.is_file(),
                })
            }
            other => Ok(Source::Objects(Store::open_with(
                other,
                Access::Read,
                options,
            )?)),
        }
    }

    /// Names the source in the local index's file cache.
    pub fn key(&self) -> String {
        match self {
            Source::Local { root, .. } => format!("file://{}", root.display()),
            Source::Objects(store) => store.url().to_string(),
        }
    }

    /// Every entry, sorted by path (parents before children).
    pub async fn list(&self) -> Result<Vec<SourceEntry>, OpError> {
        match self {
            Source::Local { root, single_file } => {
                let (root, single) = (root.clone(), *single_file);
                tokio::task::spawn_blocking(move || list_local(&root, single))
                    .await
                    .map_err(OpError::join)?
            }
            Source::Objects(store) => {
                let mut out = Vec::new();
                for meta in store.list(None).await? {
                    let rel = meta.location.as_ref().to_string();
                    check_path(&rel).map_err(|why| OpError::SourcePath {
                        path: store.object_url(&meta.location),
                        why,
                    })?;
                    out.push(SourceEntry::File(SourceFile {
                        rel,
                        size: meta.size,
                        mtime_ns: meta.last_modified.timestamp_nanos_opt().unwrap_or(0),
                        mode: 0o644,
                        etag: meta.e_tag,
                        ctime_ns: 0,
                        ino: 0,
                    }));
                }
                out.sort_by(|a, b| entry_rel(a).cmp(entry_rel(b)));
                Ok(out)
            }
        }
    }

    /// A blocking reader over a file's contents. Call from a blocking thread.
    pub fn reader(
        &self,
        file: &SourceFile,
        rt: &tokio::runtime::Handle,
    ) -> Result<Box<dyn Read + Send>, OpError> {
        match self {
            Source::Local { root, single_file } => {
                let path = if *single_file {
                    root.clone()
                } else {
                    root.join(&file.rel)
                };
                let f = std::fs::File::open(&path).map_err(|e| OpError::io(path.display(), e))?;
                Ok(Box::new(f))
            }
            Source::Objects(store) => {
                // The key exactly as listed: `Path::from` would percent-encode it again.
                let path = object_key(&file.rel).map_err(|source| OpError::SourceKey {
                    path: store.url().join(&file.rel),
                    source,
                })?;
                let got = rt.block_on(store.get_stream(&path))?;
                let stream = got.map_err(std::io::Error::other);
                Ok(Box::new(SyncIoBridge::new_with_handle(
                    StreamReader::new(stream),
                    rt.clone(),
                )))
            }
        }
    }

    /// The local file behind a relative path (`None` for object sources).
    pub fn local_path(&self, rel: &str) -> Option<PathBuf> {
        match self {
            Source::Local {
                root,
                single_file: true,
            } => Some(root.clone()),
            Source::Local { root, .. } => Some(root.join(rel)),
            Source::Objects(_) => None,
        }
    }

    /// Where a relative path lives, for messages.
    pub fn describe(&self, rel: &str) -> String {
        match self {
            Source::Local {
                root,
                single_file: true,
            } => root.display().to_string(),
            Source::Local { root, .. } => root.join(rel).display().to_string(),
            Source::Objects(store) => store.url().join(rel),
        }
    }
}

pub fn entry_rel(e: &SourceEntry) -> &str {
    match e {
        SourceEntry::File(f) => &f.rel,
        SourceEntry::Dir { rel, .. } | SourceEntry::Symlink { rel, .. } => rel,
    }
}

/// A file's mtime in nanoseconds, saturating (mtimes past 2262 do not overflow).
pub(crate) fn mtime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.mtime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.mtime_nsec())
}

/// A file's status-change time in nanoseconds, saturating like [`mtime_ns`].
pub(crate) fn ctime_ns(meta: &std::fs::Metadata) -> i64 {
    meta.ctime()
        .saturating_mul(1_000_000_000)
        .saturating_add(meta.ctime_nsec())
}

fn list_local(root: &Path, single_file: bool) -> Result<Vec<SourceEntry>, OpError> {
    if single_file {
        let meta = std::fs::metadata(root).map_err(|e| OpError::io(root.display(), e))?;
        let name =
            root.file_name()
                .and_then(|n| n.to_str())
                .ok_or_else(|| OpError::NonUtf8Name {
                    path: root.display().to_string(),
                })?;
        return Ok(vec![SourceEntry::File(SourceFile {
            rel: name.to_string(),
            size: meta.len(),
            mtime_ns: mtime_ns(&meta),
            mode: meta.permissions().mode() & 0o7777,
            etag: None,
            ctime_ns: ctime_ns(&meta),
            ino: meta.ino(),
        })]);
    }
    let mut out = Vec::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, prefix: &str, out: &mut Vec<SourceEntry>) -> Result<(), OpError> {
    let mut children: Vec<(String, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| OpError::io(dir.display(), e))? {
        let entry = entry.map_err(|e| OpError::io(dir.display(), e))?;
        let name = entry
            .file_name()
            .into_string()
            .map_err(|n| OpError::NonUtf8Name {
                path: dir.join(n).display().to_string(),
            })?;
        children.push((name, entry.path()));
    }
    children.sort();
    for (name, path) in children {
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        let meta = std::fs::symlink_metadata(&path).map_err(|e| OpError::io(path.display(), e))?;
        let ft = meta.file_type();
        let mode = meta.permissions().mode() & 0o7777;
        if ft.is_symlink() {
            let target = std::fs::read_link(&path).map_err(|e| OpError::io(path.display(), e))?;
            let target =
                target
                    .into_os_string()
                    .into_string()
                    .map_err(|_| OpError::NonUtf8Target {
                        path: path.display().to_string(),
                    })?;
            out.push(SourceEntry::Symlink { rel, target });
        } else if ft.is_dir() {
            out.push(SourceEntry::Dir {
                rel: rel.clone(),
                mode,
            });
            walk(&path, &rel, out)?;
        } else if ft.is_file() {
            out.push(SourceEntry::File(SourceFile {
                rel,
                size: meta.len(),
                mtime_ns: mtime_ns(&meta),
                mode,
                etag: None,
                ctime_ns: ctime_ns(&meta),
                ino: meta.ino(),
            }));
        } else {
            tracing::warn!(path = %path.display(), "skipping a special file (socket, fifo or device)");
        }
    }
    Ok(())
}
