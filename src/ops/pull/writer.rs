//! Writing one version: folders, symlinks, and files assembled from local chunks (verified)
//! and fetched ones, each checked whole and moved into place.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, UNIX_EPOCH};

use futures::StreamExt;

use crate::ids::{ChunkId, FileHash, Naming};
use crate::index::RepoIndex;
use crate::ops::fetch::{fetch_with, locate, plan, Want};
use crate::ops::restore::SpecialModes;
use crate::ops::restore_local::{applied_mode, holds, partial_name, restore_dir, safe_join};
use crate::ops::sync::sync_index;
use crate::ops::OpError;
use crate::progress::Progress;
use crate::repo::snapshot::{ChunkRef, Entry, Snapshot};
use crate::repo::Repository;

use super::bases::VersionBases;
use super::layout::LocalChunk;
use super::PullReport;

/// Writes one version's entries under `root`.
pub(super) struct VersionWriter<'a> {
    pub(super) repo: &'a Repository,
    pub(super) rindex: &'a RepoIndex,
    pub(super) root: &'a Path,
    pub(super) sources: &'a HashMap<ChunkId, LocalChunk>,
    /// Whether the local index has been brought up to date (only when a chunk is fetched).
    pub(super) synced: bool,
    pub(super) report: &'a mut PullReport,
    pub(super) bar: &'a Progress,
}

impl VersionWriter<'_> {
    pub(super) async fn write(
        &mut self,
        snap: &Snapshot,
        special: SpecialModes,
    ) -> Result<(), OpError> {
        std::fs::create_dir_all(self.root).map_err(|e| OpError::io(self.root.display(), e))?;
        let mut dir_modes = Vec::new();
        for e in &snap.entries {
            match e {
                Entry::Dir { path, mode } => {
                    let p = restore_dir(self.root, path)?;
                    dir_modes.push((p, applied_mode(*mode, special)));
                }
                Entry::Symlink { path, target } => {
                    let p = safe_join(self.root, path)?;
                    let same = std::fs::read_link(&p).is_ok_and(|t| t.as_os_str() == &**target);
                    if !same {
                        let _ = std::fs::remove_file(&p);
                        std::os::unix::fs::symlink(target, &p)
                            .map_err(|e| OpError::io(p.display(), e))?;
                    }
                }
                Entry::File {
                    path,
                    size,
                    mode,
                    mtime_ns,
                    blake3,
                    chunks,
                    ..
                } => {
                    let dest = safe_join(self.root, path)?;
                    let spec = FileOut {
                        dest: &dest,
                        size: *size,
                        mode: applied_mode(*mode, special),
                        mtime_ns: *mtime_ns,
                        blake3,
                        chunks,
                    };
                    self.file(&spec).await?;
                }
            }
        }
        // Deepest first, so a read-only parent does not block its children.
        for (p, mode) in dir_modes.into_iter().rev() {
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                .map_err(|e| OpError::io(p.display(), e))?;
        }
        Ok(())
    }

    /// One file: kept when an interrupted pull finished it, else assembled from local chunks
    /// and fetched ones, in order, under a temporary name renamed into place.
    async fn file(&mut self, f: &FileOut<'_>) -> Result<(), OpError> {
        let (d, size, want) = (f.dest.to_path_buf(), f.size, *f.blake3);
        let done = tokio::task::spawn_blocking(move || holds(&d, size, &want).unwrap_or(false))
            .await
            .map_err(OpError::join)?;
        if done {
            self.report.bytes_reused += f.size;
            self.report.chunks_reused += f.chunks.len() as u64;
            self.bar.inc(f.size);
            return Ok(());
        }
        let parent = f.dest.parent().unwrap_or(self.root);
        std::fs::create_dir_all(parent).map_err(|e| OpError::io(parent.display(), e))?;
        let name = f
            .dest
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file");
        let tmp = parent.join(partial_name(name));
        let file = std::fs::File::create(&tmp).map_err(|e| OpError::io(tmp.display(), e))?;
        let mut out = Out {
            file: Some(file),
            hasher: Some(blake3::Hasher::new()),
            path: tmp.clone(),
        };
        let result = self.assemble(f, &mut out).await;
        let result = match result {
            Ok(()) => out.finish(f).await,
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => std::fs::rename(&tmp, f.dest).map_err(|e| OpError::io(f.dest.display(), e)),
            Err(e) => {
                let _ = std::fs::remove_file(&tmp);
                Err(e)
            }
        }
    }

    async fn assemble(&mut self, f: &FileOut<'_>, out: &mut Out) -> Result<(), OpError> {
        let mut remote: Vec<ChunkId> = Vec::new();
        for ChunkRef(id, len) in f.chunks {
            if let Some(local) = self.sources.get(id) {
                if let Some(bytes) = read_local(local.clone(), *id, self.repo.naming()).await? {
                    self.fetch_remote(&mut remote, out).await?;
                    self.report.bytes_reused += *len as u64;
                    self.report.chunks_reused += 1;
                    self.bar.inc(*len as u64);
                    out.write(bytes).await?;
                    continue;
                }
            }
            remote.push(*id);
        }
        self.fetch_remote(&mut remote, out).await
    }

    /// Fetches the pending chunks (in order, coalesced reads) and writes them. A delta
    /// frame's base is taken from the earlier versions when one holds a good copy of it.
    async fn fetch_remote(&mut self, ids: &mut Vec<ChunkId>, out: &mut Out) -> Result<(), OpError> {
        if ids.is_empty() {
            return Ok(());
        }
        if !self.synced {
            sync_index(self.repo, self.rindex).await?;
            self.synced = true;
        }
        let reads = plan(locate(self.rindex, self.repo, ids.drain(..))?);
        self.report.bytes_read_from_store += reads.iter().map(|r| r.end - r.start).sum::<u64>();
        let bases = VersionBases::new(self.sources, self.repo.naming().clone());
        let mut frames = std::pin::pin!(fetch_with(
            self.repo,
            self.rindex,
            Some(&bases),
            reads,
            Want::Raw
        ));
        while let Some(frame) = frames.next().await {
            let raw = frame?.raw.unwrap_or_default();
            self.report.chunks_fetched += 1;
            self.bar.inc(raw.len() as u64);
            out.write(raw).await?;
        }
        // Bases read from the store count as read; bases found locally as reused.
        self.report.bytes_read_from_store += bases.read_from_store_bytes();
        self.report.delta_bases_reused += bases.local_bytes();
        Ok(())
    }
}

struct FileOut<'a> {
    dest: &'a Path,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    blake3: &'a FileHash,
    chunks: &'a [ChunkRef],
}

/// The temporary file being written, and the whole-file hash of what went into it.
struct Out {
    file: Option<std::fs::File>,
    hasher: Option<blake3::Hasher>,
    path: PathBuf,
}

impl Out {
    async fn write(&mut self, data: Vec<u8>) -> Result<(), OpError> {
        let (mut file, mut hasher) = (self.take_file()?, self.hasher.take().unwrap_or_default());
        let (file, hasher) = tokio::task::spawn_blocking(move || {
            hasher.update(&data);
            file.write_all(&data).map(|_| (file, hasher))
        })
        .await
        .map_err(OpError::join)?
        .map_err(|e| OpError::io(self.path.display(), e))?;
        self.file = Some(file);
        self.hasher = Some(hasher);
        Ok(())
    }

    fn take_file(&mut self) -> Result<std::fs::File, OpError> {
        self.file.take().ok_or(OpError::Cancelled)
    }

    /// Checks the whole file against the snapshot, then sets mode and time and syncs it.
    async fn finish(&mut self, f: &FileOut<'_>) -> Result<(), OpError> {
        let got = FileHash::from(self.hasher.take().unwrap_or_default().finalize());
        if got != *f.blake3 {
            return Err(OpError::RestoredMismatch {
                path: f.dest.display().to_string(),
                got,
                want: *f.blake3,
            });
        }
        let file = self.take_file()?;
        let (mode, mtime_ns) = (f.mode, f.mtime_ns);
        tokio::task::spawn_blocking(move || -> std::io::Result<()> {
            file.set_permissions(std::fs::Permissions::from_mode(mode))?;
            let mtime = if mtime_ns >= 0 {
                UNIX_EPOCH + Duration::from_nanos(mtime_ns as u64)
            } else {
                UNIX_EPOCH
            };
            file.set_modified(mtime)?;
            file.sync_data()
        })
        .await
        .map_err(OpError::join)?
        .map_err(|e| OpError::io(self.path.display(), e))
    }
}

/// Reads one chunk from an earlier version; `None` when it is missing, short or damaged
/// (it is fetched from the store instead).
pub(super) async fn read_local(
    at: LocalChunk,
    id: ChunkId,
    naming: &Naming,
) -> Result<Option<Vec<u8>>, OpError> {
    let naming = naming.clone();
    tokio::task::spawn_blocking(move || {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(&at.file)?;
            f.seek(SeekFrom::Start(at.offset))?;
            let mut buf = vec![0u8; at.len as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        match read() {
            Ok(buf) if naming.chunk(&buf) == id => Some(buf),
            Ok(_) => {
                tracing::warn!(file = %at.file.display(), offset = at.offset, chunk = %id,
                    "a local copy of a chunk is damaged; fetching it from the store");
                None
            }
            Err(_) => None,
        }
    })
    .await
    .map_err(OpError::join)
}
