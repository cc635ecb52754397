//! Restore: repository snapshot → plain files in a local folder or under an object prefix.
//! Every chunk is checked against its id and every file against its whole-file BLAKE3; nothing
//! is written outside the destination.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::StreamExt;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use serde::Serialize;

use crate::ids::{ChunkId, SnapshotId};
use crate::index::RepoIndex;
use crate::ops::fetch::{fetch, locate, plan, Want};
use crate::ops::OpError;
use crate::progress::Progress;
use crate::repo::snapshot::{check_path, ChunkRef, Entry};
use crate::repo::Repository;
use crate::store::{Store, StoreUrl};

/// What a restore wrote.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    pub snapshot: SnapshotId,
    pub destination: String,
    pub files: u64,
    pub bytes_written: u64,
    pub bytes_downloaded: u64,
    pub chunks_verified: u64,
    pub duration_secs: f64,
}

/// Where restored files go.
pub enum Destination {
    Local(PathBuf),
    Objects(Store),
}

impl Destination {
    pub fn describe(&self) -> String {
        match self {
            Destination::Local(p) => StoreUrl::Local(p.clone()).to_string(),
            Destination::Objects(s) => s.url().to_string(),
        }
    }
}

/// Restores snapshot `id` of `repo` into `dest`.
pub async fn restore(
    repo: &Repository,
    rindex: &RepoIndex,
    id: SnapshotId,
    dest: &Destination,
    progress: bool,
) -> Result<RestoreReport, OpError> {
    let started = Instant::now();
    let snap = repo.read_snapshot(&id).await?;
    // Validate everything before writing anything.
    let links: HashSet<&str> = snap
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Symlink { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    for e in &snap.entries {
        check_path(e.path()).map_err(|why| OpError::Unsafe {
            path: e.path().into(),
            why: why.into(),
        })?;
        if let Some(link) = linked_prefix(e.path(), &links) {
            return Err(OpError::Unsafe {
                path: e.path().into(),
                why: format!("{link:?} is a symlink; restore never writes through one"),
            });
        }
        if let Entry::Symlink { path, target } = e {
            check_symlink(path, target, &links)?;
        }
    }
    let bar = Progress::bytes(progress, "restore", snap.bytes());
    let mut report = RestoreReport {
        snapshot: id,
        destination: dest.describe(),
        files: 0,
        bytes_written: 0,
        bytes_downloaded: 0,
        chunks_verified: 0,
        duration_secs: 0.0,
    };
    let mut dir_modes = Vec::new();
    let mut symlinks = Vec::new();
    for e in &snap.entries {
        match e {
            Entry::Dir { path, mode } => {
                if let Destination::Local(root) = dest {
                    let p = safe_join(root, path)?;
                    if std::fs::symlink_metadata(&p).is_ok_and(|m| m.file_type().is_symlink()) {
                        return Err(OpError::Unsafe {
                            path: path.clone(),
                            why: format!(
                                "{} is a symlink; restore never writes through one",
                                p.display()
                            ),
                        });
                    }
                    std::fs::create_dir_all(&p).map_err(|err| OpError::io(p.display(), err))?;
                    dir_modes.push((p, *mode));
                }
            }
            Entry::Symlink { path, target } => symlinks.push((path, target)),
            Entry::File {
                path,
                size,
                mode,
                mtime_ns,
                blake3,
                chunks,
                ..
            } => {
                let file = FileSpec {
                    path,
                    size: *size,
                    mode: *mode,
                    mtime_ns: *mtime_ns,
                    blake3,
                    chunks,
                };
                let (downloaded, n) = match dest {
                    Destination::Local(root) => {
                        restore_local(repo, rindex, root, &file, &bar).await?
                    }
                    Destination::Objects(store) => {
                        restore_object(repo, rindex, store, &file, &bar).await?
                    }
                };
                report.files += 1;
                report.bytes_written += size;
                report.bytes_downloaded += downloaded;
                report.chunks_verified += n;
            }
        }
    }
    match dest {
        Destination::Local(root) => {
            for (path, target) in symlinks {
                let p = safe_join(root, path)?;
                if std::fs::symlink_metadata(&p).is_ok() {
                    std::fs::remove_file(&p).map_err(|e| OpError::io(p.display(), e))?;
                }
                std::os::unix::fs::symlink(target, &p).map_err(|e| OpError::io(p.display(), e))?;
            }
            // Deepest first, so a read-only parent does not block its children.
            for (p, mode) in dir_modes.into_iter().rev() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| OpError::io(p.display(), e))?;
            }
        }
        Destination::Objects(_) => {
            if !symlinks.is_empty() {
                tracing::warn!(
                    count = symlinks.len(),
                    "object stores have no symlinks; skipped them"
                );
            }
        }
    }
    bar.finish();
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

struct FileSpec<'a> {
    path: &'a str,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    blake3: &'a ChunkId,
    chunks: &'a [ChunkRef],
}

/// Joins a checked relative path to the root, refusing any existing symlink on the way.
fn safe_join(root: &Path, rel: &str) -> Result<PathBuf, OpError> {
    let mut p = root.to_path_buf();
    let parts: Vec<&str> = rel.split('/').collect();
    for (i, part) in parts.iter().enumerate() {
        p.push(part);
        let last = i + 1 == parts.len();
        if let Ok(meta) = std::fs::symlink_metadata(&p) {
            if meta.file_type().is_symlink() && !last {
                return Err(OpError::Unsafe {
                    path: rel.into(),
                    why: format!(
                        "{} is a symlink; restore never writes through one",
                        p.display()
                    ),
                });
            }
        }
    }
    Ok(p)
}

/// The symlink among `links` that a proper prefix of `path` names, if any.
fn linked_prefix<'a>(path: &str, links: &HashSet<&'a str>) -> Option<&'a str> {
    path.match_indices('/')
        .find_map(|(i, _)| links.get(&path[..i]).copied())
}

/// A symlink may only point inside the destination, by a relative target. The target is
/// walked lexically, which is only sound until it passes through another of the snapshot's
/// `links`: a `..` after that could lead anywhere, so it is refused.
fn check_symlink(path: &str, target: &str, links: &HashSet<&str>) -> Result<(), OpError> {
    let unsafe_link = |why: &str| OpError::Unsafe {
        path: path.into(),
        why: format!("symlink target {target:?} {why}"),
    };
    if target.is_empty() || target.contains('\0') {
        return Err(unsafe_link("is invalid"));
    }
    let t = Path::new(target);
    if t.is_absolute() {
        return Err(unsafe_link("is absolute"));
    }
    // Start in the link's folder, then walk the target.
    let mut at: Vec<&str> = path.split('/').collect();
    at.pop();
    let mut through: Option<String> = None;
    for c in t.components() {
        match c {
            Component::ParentDir => {
                if let Some(link) = &through {
                    return Err(unsafe_link(&format!(
                        "goes up after passing through symlink {link:?}"
                    )));
                }
                if at.pop().is_none() {
                    return Err(unsafe_link("points outside the destination"));
                }
            }
            Component::Normal(part) => {
                at.push(part.to_str().ok_or_else(|| unsafe_link("is not UTF-8"))?);
                let here = at.join("/");
                if through.is_none() && links.contains(here.as_str()) {
                    through = Some(here);
                }
            }
            Component::CurDir => {}
            _ => return Err(unsafe_link("is not a plain relative path")),
        }
    }
    Ok(())
}

/// Streams one file's chunks, verified, to `sink`; returns bytes downloaded and chunks.
async fn stream_file<F>(
    repo: &Repository,
    rindex: &RepoIndex,
    file: &FileSpec<'_>,
    bar: &Progress,
    mut sink: F,
) -> Result<(u64, u64), OpError>
where
    F: AsyncSink,
{
    let locations = locate(rindex, repo, file.chunks.iter().map(|c| c.0))?;
    let reads = plan(locations);
    let downloaded: u64 = reads.iter().map(|r| r.end - r.start).sum();
    let mut hasher = blake3::Hasher::new();
    let mut n = 0u64;
    let mut frames = std::pin::pin!(fetch(repo, reads, Want::Raw));
    while let Some(batch) = frames.next().await {
        for f in batch? {
            let raw = f.raw.unwrap_or_default();
            hasher.update(&raw);
            bar.inc(raw.len() as u64);
            n += 1;
            sink.write(raw).await?;
        }
    }
    let got = ChunkId::from(hasher.finalize());
    if got != *file.blake3 {
        return Err(OpError::Source {
            path: file.path.into(),
            problem: format!(
                "restored content hashes to {got}, the snapshot says {}",
                file.blake3
            ),
        });
    }
    Ok((downloaded, n))
}

/// Where `stream_file` puts verified bytes.
trait AsyncSink {
    async fn write(&mut self, data: Vec<u8>) -> Result<(), OpError>;
}

struct FileSink {
    file: Option<std::fs::File>,
    path: PathBuf,
}

impl AsyncSink for FileSink {
    async fn write(&mut self, data: Vec<u8>) -> Result<(), OpError> {
        let mut file = self.file.take().ok_or(OpError::Cancelled)?;
        let path = self.path.clone();
        let file = tokio::task::spawn_blocking(move || file.write_all(&data).map(|_| file))
            .await
            .map_err(OpError::join)?
            .map_err(|e| OpError::io(path.display(), e))?;
        self.file = Some(file);
        Ok(())
    }
}

async fn restore_local(
    repo: &Repository,
    rindex: &RepoIndex,
    root: &Path,
    file: &FileSpec<'_>,
    bar: &Progress,
) -> Result<(u64, u64), OpError> {
    let dest = safe_join(root, file.path)?;
    if let Ok(meta) = std::fs::symlink_metadata(&dest) {
        if meta.is_dir() {
            return Err(OpError::Unsafe {
                path: file.path.into(),
                why: format!("{} is a folder", dest.display()),
            });
        }
    }
    let parent = dest.parent().unwrap_or(root);
    std::fs::create_dir_all(parent).map_err(|e| OpError::io(parent.display(), e))?;
    let name = dest.file_name().and_then(|n| n.to_str()).unwrap_or("file");
    let tmp = parent.join(format!(".{name}.ferry-partial"));
    let f = std::fs::File::create(&tmp).map_err(|e| OpError::io(tmp.display(), e))?;
    let mut sink = FileSink {
        file: Some(f),
        path: tmp.clone(),
    };
    let result = stream_file(repo, rindex, file, bar, &mut sink).await;
    let mut finish = || -> std::io::Result<()> {
        let f = sink
            .file
            .take()
            .ok_or_else(|| std::io::Error::other("file lost"))?;
        f.set_permissions(std::fs::Permissions::from_mode(file.mode))?;
        let mtime = if file.mtime_ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(file.mtime_ns as u64)
        } else {
            UNIX_EPOCH
        };
        f.set_modified(mtime)?;
        f.sync_data()?;
        drop(f);
        std::fs::rename(&tmp, &dest)
    };
    match result {
        Ok(r) => {
            finish().map_err(|e| OpError::io(dest.display(), e))?;
            Ok(r)
        }
        Err(e) => {
            let _ = std::fs::remove_file(&tmp);
            Err(e)
        }
    }
}

impl<T: AsyncSink> AsyncSink for &mut T {
    async fn write(&mut self, data: Vec<u8>) -> Result<(), OpError> {
        (**self).write(data).await
    }
}

/// Collects small files in memory, streams large ones as a multipart upload.
struct ObjectSink {
    small: Vec<u8>,
    upload: Option<WriteMultipart>,
}

impl AsyncSink for ObjectSink {
    async fn write(&mut self, data: Vec<u8>) -> Result<(), OpError> {
        match &mut self.upload {
            Some(up) => {
                up.wait_for_capacity(4)
                    .await
                    .map_err(|e| OpError::Invalid(e.to_string()))?;
                up.write(&data);
            }
            None => self.small.extend_from_slice(&data),
        }
        Ok(())
    }
}

/// Files up to this size are written with one PUT.
const SINGLE_PUT_MAX: u64 = 8 << 20;

async fn restore_object(
    repo: &Repository,
    rindex: &RepoIndex,
    store: &Store,
    file: &FileSpec<'_>,
    bar: &Progress,
) -> Result<(u64, u64), OpError> {
    let path = object_store::path::Path::from(file.path);
    let url = store.object_url(&path);
    let upload = if file.size > SINGLE_PUT_MAX {
        let up = store
            .object_store()
            .put_multipart(&path)
            .await
            .map_err(|e| OpError::Source {
                path: url.clone(),
                problem: e.to_string(),
            })?;
        Some(WriteMultipart::new_with_chunk_size(up, 8 << 20))
    } else {
        None
    };
    let mut sink = ObjectSink {
        small: Vec::new(),
        upload,
    };
    let result = stream_file(repo, rindex, file, bar, &mut sink).await;
    match (result, sink.upload) {
        (Ok(r), Some(up)) => {
            up.finish().await.map_err(|e| OpError::Source {
                path: url,
                problem: e.to_string(),
            })?;
            Ok(r)
        }
        (Ok(r), None) => {
            store
                .object_store()
                .put(&path, PutPayload::from(sink.small))
                .await
                .map_err(|e| OpError::Source {
                    path: url,
                    problem: e.to_string(),
                })?;
            Ok(r)
        }
        (Err(e), Some(up)) => {
            let _ = up.abort().await;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn symlink_targets_must_stay_inside() {
        let none = HashSet::new();
        assert!(check_symlink("a/l", "../b", &none).is_ok());
        assert!(check_symlink("a/l", "b/c", &none).is_ok());
        assert!(check_symlink("l", "../x", &none).is_err());
        assert!(check_symlink("a/l", "../../x", &none).is_err());
        assert!(check_symlink("a/l", "/etc/passwd", &none).is_err());
        assert!(check_symlink("a/l", "b/../../../x", &none).is_err());
    }

    #[test]
    fn symlink_targets_may_not_climb_out_through_other_symlinks() {
        // d/e/root -> ../.. is the destination itself, so d/e/root/.. is its parent.
        let links = HashSet::from(["d/e/root", "up"]);
        assert!(check_symlink("d/e/root", "../..", &links).is_ok());
        assert!(check_symlink("up", "d/e/root/..", &links).is_err());
        assert!(check_symlink("x", "d/e/root/f", &links).is_ok());
        assert!(check_symlink("x", "d/e/f/..", &links).is_ok());
        assert_eq!(linked_prefix("up/file", &links), Some("up"));
        assert_eq!(linked_prefix("up", &links), None);
        assert_eq!(linked_prefix("upper/file", &links), None);
    }

    #[test]
    fn safe_join_refuses_symlinked_parents() {
        let dir = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(outside.path(), dir.path().join("esc")).unwrap();
        assert!(safe_join(dir.path(), "esc/file").is_err());
        assert!(safe_join(dir.path(), "ok/file").is_ok());
    }
}
