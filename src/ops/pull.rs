//! `ferry pull`: the serving side. A snapshot becomes a new version folder beside the live
//! one, and is published by swapping one symlink:
//!
//! ```text
//! DIR/current -> versions/<seq>-<short id>      (replaced by rename: atomic for readers)
//! DIR/versions/<seq>-<short id>/...             complete versions (the newest --keep)
//! DIR/versions/.partial-<version>/...           the version being written (resumed on rerun)
//! DIR/.ferry/<version>.snapshot                 what each version holds (snapshot format)
//! DIR/.ferry/lock                               one pull at a time per DIR
//! ```
//!
//! Chunks already present in earlier versions are read from them, each checked against its
//! BLAKE3 id as it is read (a damaged local file is fetched again, never copied on); only the
//! rest is read from the store, as coalesced range reads. A pull killed at any point leaves
//! `current` pointing at a complete version; the rerun keeps the files it finished.

use std::collections::HashMap;
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, UNIX_EPOCH};

use futures::StreamExt;
use serde::Serialize;

use crate::ids::{ChunkId, SnapshotId};
use crate::index::RepoIndex;
use crate::ops::fetch::{fetch, locate, plan, Want};
use crate::ops::restore::{check_before_writing, Destination, SpecialModes};
use crate::ops::restore_local::{applied_mode, partial_name, restore_dir, safe_join};
use crate::ops::select::Selection;
use crate::ops::sync::sync_index;
use crate::ops::OpError;
use crate::progress::Progress;
use crate::repo::snapshot::{ChunkRef, Entry, Snapshot};
use crate::repo::Repository;

/// How a pull behaves.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Complete versions kept (the live one always among them); at least 1.
    pub keep: usize,
    /// `--include` / `--exclude`.
    pub selection: Selection,
    pub special_modes: SpecialModes,
}

impl Default for PullOptions {
    fn default() -> Self {
        PullOptions {
            keep: 2,
            selection: Selection::default(),
            special_modes: SpecialModes::default(),
        }
    }
}

/// What a pull did.
#[derive(Debug, Clone, Serialize)]
pub struct PullReport {
    pub name: String,
    pub seq: u64,
    pub snapshot: SnapshotId,
    /// The published version's folder (`DIR/versions/<seq>-<short id>`).
    pub version: String,
    /// False when `current` already was this version: nothing was read or written.
    pub published: bool,
    pub files: u64,
    /// Bytes of the version's files.
    pub bytes: u64,
    /// Bytes read from the store (frames, as stored).
    pub bytes_read_from_store: u64,
    /// Bytes taken from earlier versions in DIR (each chunk verified), or kept from an
    /// interrupted pull of the same version.
    pub bytes_reused: u64,
    pub chunks_fetched: u64,
    pub chunks_reused: u64,
    /// Versions removed beyond `--keep`.
    pub removed: Vec<String>,
    pub duration_secs: f64,
}

/// Why a pull cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error("another ferry pull into {dir} is running (lock {lock}); wait for it, or pull into another folder")]
    Busy { dir: String, lock: String },
    #[error("{path} is not a symlink ferry made (it should point into versions/); move it away and pull again")]
    ForeignCurrent { path: String },
    #[error("--keep must be at least 1 (the live version is always kept)")]
    KeepZero,
}

/// Pulls snapshot `spec` (`NAME`, `NAME@K`, `NAME@id`) of `repo` into `dir`.
pub async fn pull(
    repo: &Repository,
    rindex: &RepoIndex,
    spec: &str,
    dir: &Path,
    opts: &PullOptions,
    progress: bool,
) -> Result<PullReport, OpError> {
    let started = Instant::now();
    if opts.keep == 0 {
        return Err(PullError::KeepZero.into());
    }
    let layout = Layout::open(dir)?;
    let _lock = layout.lock()?;
    let entry = repo.resolve_entry(spec).await?;
    let snap = opts
        .selection
        .apply(&repo.read_snapshot(&entry.snapshot).await?)?;
    let version = version_name(entry.seq, &entry.snapshot, &opts.selection, &snap);
    let mut report = PullReport {
        name: entry.name.clone(),
        seq: entry.seq,
        snapshot: entry.snapshot,
        version: layout.versions.join(&version).display().to_string(),
        published: false,
        files: snap.files() as u64,
        bytes: snap.bytes(),
        bytes_read_from_store: 0,
        bytes_reused: 0,
        chunks_fetched: 0,
        chunks_reused: 0,
        removed: Vec::new(),
        duration_secs: 0.0,
    };
    let current = layout.current()?;
    if current.as_deref() != Some(version.as_str()) || !layout.versions.join(&version).is_dir() {
        let partial = layout.versions.join(format!(".partial-{version}"));
        check_before_writing(&snap, &Destination::Local(partial.clone()))?;
        let sources = layout.local_chunks(current.as_deref())?;
        let bar = Progress::bytes(progress, "pull", snap.bytes());
        let mut writer = VersionWriter {
            repo,
            rindex,
            root: &partial,
            sources: &sources,
            synced: false,
            report: &mut report,
            bar: &bar,
        };
        writer.write(&snap, opts.special_modes).await?;
        bar.finish();
        layout.publish(&partial, &version, &snap)?;
        report.published = true;
    }
    report.removed = layout.prune(&version, opts.keep)?;
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// `<seq>-<12 hex of the snapshot id>`, and a digest of the selected paths when only part of
/// the snapshot is taken (another selection of the same snapshot is another version).
fn version_name(seq: u64, id: &SnapshotId, sel: &Selection, snap: &Snapshot) -> String {
    let short = &id.to_hex()[..12];
    if sel.is_everything() {
        format!("{seq}-{short}")
    } else {
        let mut h = blake3::Hasher::new();
        for e in &snap.entries {
            h.update(e.path().as_bytes());
            h.update(b"\0");
        }
        format!("{seq}-{short}-{}", &h.finalize().to_hex()[..8])
    }
}

/// The sequence number a version folder's name starts with.
fn version_seq(name: &str) -> Option<u64> {
    name.split('-').next()?.parse().ok()
}

/// Where one chunk can be read locally: a file of an earlier version, at an offset.
#[derive(Debug, Clone)]
struct LocalChunk {
    file: PathBuf,
    offset: u64,
    len: u32,
}

/// The folders of a pull destination.
struct Layout {
    dir: PathBuf,
    versions: PathBuf,
    meta: PathBuf,
}

impl Layout {
    fn open(dir: &Path) -> Result<Self, OpError> {
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

    /// Takes the folder's lock (released when the file is dropped, or the process dies).
    fn lock(&self) -> Result<std::fs::File, OpError> {
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
    fn current(&self) -> Result<Option<String>, OpError> {
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
    fn complete_versions(&self) -> Result<Vec<String>, OpError> {
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
    fn local_chunks(&self, current: Option<&str>) -> Result<HashMap<ChunkId, LocalChunk>, OpError> {
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
    fn publish(&self, partial: &Path, version: &str, snap: &Snapshot) -> Result<(), OpError> {
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
    fn prune(&self, live: &str, keep: usize) -> Result<Vec<String>, OpError> {
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

/// Writes one version's entries under `root`.
struct VersionWriter<'a> {
    repo: &'a Repository,
    rindex: &'a RepoIndex,
    root: &'a Path,
    sources: &'a HashMap<ChunkId, LocalChunk>,
    /// Whether the local index has been brought up to date (only when a chunk is fetched).
    synced: bool,
    report: &'a mut PullReport,
    bar: &'a Progress,
}

impl VersionWriter<'_> {
    async fn write(&mut self, snap: &Snapshot, special: SpecialModes) -> Result<(), OpError> {
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
        let done = tokio::task::spawn_blocking(move || holds(&d, size, &want))
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
                if let Some(bytes) = read_local(local.clone(), *id).await? {
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

    /// Fetches the pending chunks (in order, coalesced reads) and writes them.
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
        let mut frames = std::pin::pin!(fetch(self.repo, reads, Want::Raw));
        while let Some(batch) = frames.next().await {
            for frame in batch? {
                let raw = frame.raw.unwrap_or_default();
                self.report.chunks_fetched += 1;
                self.bar.inc(raw.len() as u64);
                out.write(raw).await?;
            }
        }
        Ok(())
    }
}

struct FileOut<'a> {
    dest: &'a Path,
    size: u64,
    mode: u32,
    mtime_ns: i64,
    blake3: &'a ChunkId,
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
        let got = ChunkId::from(self.hasher.take().unwrap_or_default().finalize());
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
async fn read_local(at: LocalChunk, id: ChunkId) -> Result<Option<Vec<u8>>, OpError> {
    tokio::task::spawn_blocking(move || {
        let read = || -> std::io::Result<Vec<u8>> {
            let mut f = std::fs::File::open(&at.file)?;
            f.seek(SeekFrom::Start(at.offset))?;
            let mut buf = vec![0u8; at.len as usize];
            f.read_exact(&mut buf)?;
            Ok(buf)
        };
        match read() {
            Ok(buf) if ChunkId::of(&buf) == id => Some(buf),
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

/// True when `dest` is a regular file of `size` bytes hashing to `want`.
fn holds(dest: &Path, size: u64, want: &ChunkId) -> bool {
    let check = || -> std::io::Result<bool> {
        let meta = std::fs::symlink_metadata(dest)?;
        if !meta.file_type().is_file() || meta.len() != size {
            return Ok(false);
        }
        let mut h = blake3::Hasher::new();
        h.update_reader(std::fs::File::open(dest)?)?;
        Ok(ChunkId::from(h.finalize()) == *want)
    };
    check().unwrap_or(false)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_names_sort_by_sequence() {
        assert_eq!(version_seq("12-abcdef012345"), Some(12));
        assert_eq!(version_seq("12-abcdef012345-0011aabb"), Some(12));
        assert_eq!(version_seq(".partial-3-x"), None);
        let id = SnapshotId::of(b"x");
        let everything = Selection::default();
        let snap = Snapshot {
            version: 1,
            time: String::new(),
            name: "m".into(),
            source: String::new(),
            parent: None,
            entries: vec![],
        };
        let name = version_name(7, &id, &everything, &snap);
        assert_eq!(name, format!("7-{}", &id.to_hex()[..12]));
        let some = Selection::new(&["*.json".into()], &[]).unwrap();
        assert!(version_name(7, &id, &some, &snap).starts_with(&name));
        assert_ne!(version_name(7, &id, &some, &snap), name);
    }
}
