//! The local index: a sled database that caches what is where. It is never the only copy of
//! anything: delete it and the next run rebuilds what it needs from the repositories' pack
//! indexes. Only this module speaks sled.
//!
//! Trees (all keys and values binary, see FORMAT.md "Local index"):
//! - `chunks/<repo id>`: chunk id → pack id, frame offset, frame length, raw length
//! - `packs/<repo id>`: pack id → () for every pack index loaded
//! - `damaged/<repo id>`: pack id → () for every damaged pack the chunk locations account for
//! - `files/<source key>`: relative path → size, mtime, ctime, inode, etag, mode, BLAKE3,
//!   chunk list
//! - `replicated/<from id>/<to id>`: snapshot id → () once replicated
//! - `jobs/items`, `jobs/runs`: the daemon's work items and run history (`jobs.rs`)
//! - `mirror/…`, `mirror-uploads/…`: objects `ferry mirror` wrote (`mirror.rs`)

mod bases;
pub use bases::{BaseCache, BaseEntry};
mod jobs;
mod lock;
mod mirror;

pub(crate) use jobs::{ItemRecord, ItemState, JobLog};
pub(crate) use lock::{Holder, TemporaryIndex};
pub(crate) use mirror::{MirrorCache, MirrorRecord};

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::chunker::Layout;
use crate::ids::{ChunkId, FileHash, PackId, SnapshotId};
use crate::repo::pack::{PackEntry, PackIndex};
use crate::repo::snapshot::ChunkRef;

/// Version of the index's own layout; a mismatch wipes the cache.
const INDEX_VERSION: &[u8] = b"1";
const VERSION_KEY: &[u8] = b"ferry-index-version";

/// Errors opening or using the index.
#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    /// The sled database would not open.
    #[error("cannot open the local index at {path}: {source} (the index is only a cache, so a damaged one can be deleted)")]
    Open {
        /// The index folder.
        path: PathBuf,
        /// What sled said.
        source: sled::Error,
    },
    /// Another process holds the index.
    #[error("the local index at {path} is in use by {holder}: pass --index-dir DIR (or set FERRY_INDEX_DIR) to use another one, or stop that process")]
    Locked {
        /// The index folder.
        path: PathBuf,
        /// Which process holds it.
        holder: Holder,
    },
    /// A read or write of the open database failed.
    #[error(
        "local index at {path}: {source} (it is only a cache: delete the folder to rebuild it)"
    )]
    Db {
        /// The index folder.
        path: PathBuf,
        /// What sled said.
        source: sled::Error,
    },
}

/// The local index.
#[derive(Clone)]
pub struct Index {
    db: sled::Db,
    path: PathBuf,
    base_cache_max: u64,
}

/// Where a chunk is stored in one repository.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChunkLocation {
    /// The pack holding the chunk.
    pub pack: PackId,
    /// The chunk's frame in that pack.
    pub entry: PackEntry,
}

/// What the index remembers about one source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CachedFile {
    /// Size in bytes when last pushed.
    pub size: u64,
    /// Modification time, nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
    /// Status-change time (local files; 0 for objects): an mtime put back by `cp -p` or
    /// `rsync -a` does not put it back.
    pub ctime_ns: i64,
    /// Inode number (local files; 0 for objects).
    pub ino: u64,
    /// Object etag for object sources.
    pub etag: Option<String>,
    /// Unix permission bits.
    pub mode: u32,
    /// Whole-file BLAKE3.
    pub blake3: FileHash,
    /// How the file was cut.
    pub layout: Layout,
    /// The file's chunks in order, as in the snapshot.
    pub chunks: Vec<ChunkRef>,
}

/// The default size limit of the local base cache ([`Index::base_cache`]).
pub const DEFAULT_BASE_CACHE: u64 = 32 << 30;

impl Index {
    /// The same index with a base cache of at most `max_bytes` (0: none).
    pub fn with_base_cache(mut self, max_bytes: u64) -> Self {
        self.base_cache_max = max_bytes;
        self
    }

    /// The local base cache of ref `name` in repository `repo_id` (`index::bases`), in a
    /// folder beside the index (`<index>.bases/`); `None` when the limit is 0.
    pub fn base_cache(&self, repo_id: &str, name: &str) -> Option<BaseCache> {
        if self.base_cache_max == 0 {
            return None;
        }
        let mut dir = self.path.clone().into_os_string();
        dir.push(".bases");
        // Both come from outside (a repository's config, a user's ref name): hashed, never
        // used as path components.
        let short = |s: &str| blake3::hash(s.as_bytes()).to_hex()[..24].to_string();
        let dir = PathBuf::from(dir).join(short(repo_id)).join(short(name));
        Some(BaseCache::open(dir, self.base_cache_max))
    }

    /// The default location: `<data dir>/ferry/index` (e.g. `~/.local/share/ferry/index`).
    pub fn default_dir() -> PathBuf {
        directories::ProjectDirs::from("", "", "ferry")
            .map(|d| d.data_dir().join("index"))
            .unwrap_or_else(|| std::env::temp_dir().join("ferry-index"))
    }

    /// Opens (or creates) the index, waiting up to `wait` for another process to release it.
    /// While another process holds it, says at once which one (a `ferry daemon` is not
    /// waited for: it keeps the index for its lifetime); after `wait`, [`IndexError::Locked`].
    pub fn open(path: &Path, wait: Duration) -> Result<Self, IndexError> {
        let start = Instant::now();
        let mut wiped = false;
        let mut announced = false;
        let db = loop {
            match sled::Config::new()
                .path(path)
                .cache_capacity(64 << 20)
                .flush_every_ms(Some(1000))
                .open()
            {
                Ok(db) => break db,
                Err(e) if is_lock_error(&e) => {
                    let holder = Holder::find(path);
                    if holder.is_daemon() || start.elapsed() >= wait {
                        return Err(IndexError::Locked {
                            path: path.into(),
                            holder,
                        });
                    }
                    if !announced {
                        tracing::warn!(
                            path = %path.display(),
                            %holder,
                            wait_secs = wait.as_secs(),
                            "the local index is in use by another process; waiting for it (pass --index-dir DIR to use another index)"
                        );
                        announced = true;
                    }
                    std::thread::sleep(Duration::from_millis(100));
                }
                // A cache damaged by a crash is rebuilt, not repaired: nothing is lost.
                Err(e) if !wiped && looks_like_sled(path) => {
                    tracing::warn!(path = %path.display(), error = %e, "the local index is damaged; rebuilding it from the repositories");
                    std::fs::remove_dir_all(path).map_err(|io| IndexError::Open {
                        path: path.into(),
                        source: sled::Error::Io(io),
                    })?;
                    wiped = true;
                }
                Err(source) => {
                    return Err(IndexError::Open {
                        path: path.into(),
                        source,
                    })
                }
            }
        };
        let index = Self {
            db,
            path: path.into(),
            base_cache_max: DEFAULT_BASE_CACHE,
        };
        let version = index.db.get(VERSION_KEY).map_err(|e| index.err(e))?;
        if version.as_deref() != Some(INDEX_VERSION) {
            for name in index.db.tree_names() {
                if name != b"__sled__default" {
                    index.db.drop_tree(name).map_err(|e| index.err(e))?;
                }
            }
            index
                .db
                .insert(VERSION_KEY, INDEX_VERSION)
                .map_err(|e| index.err(e))?;
        }
        Ok(index)
    }

    fn err(&self, source: sled::Error) -> IndexError {
        IndexError::Db {
            path: self.path.clone(),
            source,
        }
    }

    fn tree(&self, name: String) -> Result<sled::Tree, IndexError> {
        self.db.open_tree(name).map_err(|e| self.err(e))
    }

    /// What the index knows about one repository's chunks and packs.
    pub fn repo(&self, repo_id: &str) -> Result<RepoIndex, IndexError> {
        Ok(RepoIndex {
            chunks: self.tree(format!("chunks/{repo_id}"))?,
            packs: self.tree(format!("packs/{repo_id}"))?,
            damaged: self.tree(format!("damaged/{repo_id}"))?,
            refs: self.tree(format!("refs/{repo_id}"))?,
            path: self.path.clone(),
        })
    }

    /// Cached state of one source's files. `source_key` names the source (its URL).
    pub fn files(&self, source_key: &str) -> Result<FileCache, IndexError> {
        let key = blake3::hash(source_key.as_bytes()).to_hex();
        Ok(FileCache {
            tree: self.tree(format!("files/{key}"))?,
            path: self.path.clone(),
        })
    }

    /// Records that `snapshot` was replicated from one repository to another.
    pub fn mark_replicated(
        &self,
        from: &str,
        to: &str,
        snapshot: &SnapshotId,
    ) -> Result<(), IndexError> {
        self.tree(format!("replicated/{from}/{to}"))?
            .insert(snapshot.0, &[])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Whether `snapshot` was already replicated from repository `from` to `to` (repository ids).
    pub fn is_replicated(
        &self,
        from: &str,
        to: &str,
        snapshot: &SnapshotId,
    ) -> Result<bool, IndexError> {
        self.tree(format!("replicated/{from}/{to}"))?
            .contains_key(snapshot.0)
            .map_err(|e| self.err(e))
    }

    /// Records that snapshot `src` of repository `from` was re-sealed into `to` as `dst`
    /// (replication between repositories sealed differently, `ops::reseal`).
    pub fn mark_resealed(
        &self,
        from: &str,
        to: &str,
        src: &SnapshotId,
        dst: &SnapshotId,
    ) -> Result<(), IndexError> {
        self.tree(format!("resealed/{from}/{to}"))?
            .insert(src.0, &dst.0)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The snapshot of `to` that snapshot `src` of `from` was re-sealed into, if recorded.
    pub fn resealed(
        &self,
        from: &str,
        to: &str,
        src: &SnapshotId,
    ) -> Result<Option<SnapshotId>, IndexError> {
        Ok(self
            .tree(format!("resealed/{from}/{to}"))?
            .get(src.0)
            .map_err(|e| self.err(e))?
            .and_then(|v| SnapshotId::from_slice(&v)))
    }

    /// Makes everything written so far durable.
    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }
}

/// True when every entry of `dir` is one sled writes, so wiping it can only lose the cache
/// (never a folder someone pointed `--index-dir` at by mistake).
fn looks_like_sled(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut saw_db = false;
    for e in entries {
        let Ok(e) = e else { return false };
        let name = e.file_name();
        let name = name.to_string_lossy();
        match name.as_ref() {
            "conf" | "db" => saw_db = true,
            "blobs" => {}
            n if n.starts_with("snap.") => {}
            _ => return false,
        }
    }
    saw_db
}

fn is_lock_error(e: &sled::Error) -> bool {
    matches!(e, sled::Error::Io(io) if io.kind() == std::io::ErrorKind::WouldBlock
        || io.to_string().contains("lock"))
}

/// One repository's chunk locations and loaded packs.
#[derive(Clone)]
pub struct RepoIndex {
    chunks: sled::Tree,
    packs: sled::Tree,
    /// Damaged packs (`bad/<pack id>`) this index has been rebuilt for.
    damaged: sled::Tree,
    /// Ref-log entries read before, by object path and version tag (they are written once).
    refs: sled::Tree,
    path: PathBuf,
}

impl RepoIndex {
    fn err(&self, source: sled::Error) -> IndexError {
        IndexError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// Whether this repository holds the chunk, as far as the index knows.
    pub fn has_chunk(&self, id: &ChunkId) -> Result<bool, IndexError> {
        self.chunks.contains_key(id.0).map_err(|e| self.err(e))
    }

    /// Where this repository holds the chunk, as far as the index knows.
    pub fn chunk_location(&self, id: &ChunkId) -> Result<Option<ChunkLocation>, IndexError> {
        let Some(v) = self.chunks.get(id.0).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        Ok(decode_location(id, &v))
    }

    /// Whether the pack's index was loaded into this tree.
    pub fn has_pack(&self, id: &PackId) -> Result<bool, IndexError> {
        self.packs.contains_key(id.0).map_err(|e| self.err(e))
    }

    /// Every pack whose index was loaded into this tree.
    pub fn packs(&self) -> Result<Vec<PackId>, IndexError> {
        self.packs
            .iter()
            .keys()
            .map(|k| k.map(|k| PackId::from_slice(&k).unwrap_or(PackId([0; 32]))))
            .collect::<Result<_, _>>()
            .map_err(|e| self.err(e))
    }

    /// Number of chunks known in this repository.
    pub fn chunk_count(&self) -> usize {
        self.chunks.len()
    }

    /// Records a pack's chunks, then the pack itself (so a pack marks a complete load).
    pub fn add_pack(&self, index: &PackIndex) -> Result<(), IndexError> {
        let mut batch = sled::Batch::default();
        for e in &index.entries {
            batch.insert(&e.chunk.0, encode_location(&index.pack, e).as_slice());
        }
        self.chunks.apply_batch(batch).map_err(|e| self.err(e))?;
        self.packs
            .insert(index.pack.0, &[])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Records a pack's chunks only where no location is known yet, then the pack: for packs
    /// whose chunks must not be relied on (marked by gc or damaged), so that they never
    /// displace a good copy held elsewhere.
    pub fn add_pack_weak(&self, index: &PackIndex) -> Result<(), IndexError> {
        for e in &index.entries {
            let loc = encode_location(&index.pack, e);
            // A lost swap means a location is known already: keep it.
            let _ = self
                .chunks
                .compare_and_swap(e.chunk.0, None::<&[u8]>, Some(&loc[..]))
                .map_err(|e| self.err(e))?;
        }
        self.packs
            .insert(index.pack.0, &[])
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// True when the index was built knowing that this pack is damaged.
    pub fn knows_damaged(&self, id: &PackId) -> Result<bool, IndexError> {
        self.damaged.contains_key(id.0).map_err(|e| self.err(e))
    }

    /// Records that the index's locations were built knowing this pack is damaged.
    pub fn note_damaged(&self, id: &PackId) -> Result<(), IndexError> {
        self.damaged
            .insert(id.0, &[])
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// A ref-log entry's bytes stored under `key` by [`RepoIndex::keep_ref_entries`].
    pub fn ref_entry(&self, key: &[u8]) -> Result<Option<Vec<u8>>, IndexError> {
        let found = self.refs.get(key).map_err(|e| self.err(e))?;
        Ok(found.map(|v| v.to_vec()))
    }

    /// Stores `new` ref-log entries, then drops every stored key under `prefix` (one ref's
    /// objects) that is not in `live`, so the cache holds at most the ref's current log.
    pub fn keep_ref_entries(
        &self,
        new: Vec<(Vec<u8>, bytes::Bytes)>,
        prefix: &[u8],
        live: &std::collections::HashSet<Vec<u8>>,
    ) -> Result<(), IndexError> {
        for (k, v) in new {
            self.refs.insert(k, v.as_ref()).map_err(|e| self.err(e))?;
        }
        for k in self.refs.scan_prefix(prefix).keys() {
            let k = k.map_err(|e| self.err(e))?;
            if !live.contains(k.as_ref()) {
                self.refs.remove(k).map_err(|e| self.err(e))?;
            }
        }
        Ok(())
    }

    /// Forgets everything about this repository.
    pub fn clear(&self) -> Result<(), IndexError> {
        self.refs.clear().map_err(|e| self.err(e))?;
        self.damaged.clear().map_err(|e| self.err(e))?;
        self.packs.clear().map_err(|e| self.err(e))?;
        self.chunks.clear().map_err(|e| self.err(e))
    }
}

fn encode_location(pack: &PackId, e: &PackEntry) -> [u8; 48] {
    let mut v = [0u8; 48];
    v[..32].copy_from_slice(&pack.0);
    v[32..40].copy_from_slice(&e.offset.to_le_bytes());
    v[40..44].copy_from_slice(&e.frame_len.to_le_bytes());
    v[44..48].copy_from_slice(&e.raw_len.to_le_bytes());
    v
}

fn decode_location(chunk: &ChunkId, v: &[u8]) -> Option<ChunkLocation> {
    if v.len() != 48 {
        return None;
    }
    Some(ChunkLocation {
        pack: PackId::from_slice(v)?,
        entry: PackEntry {
            chunk: *chunk,
            offset: u64::from_le_bytes(v[32..40].try_into().ok()?),
            frame_len: u32::from_le_bytes(v[40..44].try_into().ok()?),
            raw_len: u32::from_le_bytes(v[44..48].try_into().ok()?),
        },
    })
}

/// Cached source-file states for one source.
#[derive(Clone)]
pub struct FileCache {
    tree: sled::Tree,
    path: PathBuf,
}

impl FileCache {
    fn err(&self, source: sled::Error) -> IndexError {
        IndexError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// What the index remembers about the file at `rel_path`, if anything.
    pub fn get(&self, rel_path: &str) -> Result<Option<CachedFile>, IndexError> {
        let v = self
            .tree
            .get(rel_path.as_bytes())
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| decode_file(&v)))
    }

    /// Remembers `file` for `rel_path`, replacing what was there.
    pub fn put(&self, rel_path: &str, file: &CachedFile) -> Result<(), IndexError> {
        self.tree
            .insert(rel_path.as_bytes(), encode_file(file))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }
}

/// v3 added ctime and inode; a v2 record reads as "not cached", so the file is read again.
const FILE_RECORD_VERSION: u8 = 3;

fn encode_file(f: &CachedFile) -> Vec<u8> {
    let etag = f.etag.as_deref().unwrap_or("").as_bytes();
    let mut v =
        Vec::with_capacity(1 + 8 + 8 + 16 + 2 + etag.len() + 4 + 32 + 4 + f.chunks.len() * 36);
    v.push(FILE_RECORD_VERSION);
    v.extend_from_slice(&f.size.to_le_bytes());
    v.extend_from_slice(&f.mtime_ns.to_le_bytes());
    v.extend_from_slice(&f.ctime_ns.to_le_bytes());
    v.extend_from_slice(&f.ino.to_le_bytes());
    v.push(u8::from(f.etag.is_some()));
    v.extend_from_slice(&(etag.len() as u16).to_le_bytes());
    v.extend_from_slice(etag);
    v.extend_from_slice(&f.mode.to_le_bytes());
    v.push(match f.layout {
        Layout::Cdc => 0,
        Layout::Safetensors => 1,
        Layout::Tensors => 2,
    });
    v.extend_from_slice(&f.blake3.0);
    v.extend_from_slice(&(f.chunks.len() as u32).to_le_bytes());
    for c in &f.chunks {
        v.extend_from_slice(&c.0 .0);
        v.extend_from_slice(&c.1.to_le_bytes());
    }
    v
}

/// Decodes a file record; anything malformed reads as "not cached".
fn decode_file(v: &[u8]) -> Option<CachedFile> {
    let mut r = v;
    let mut take = |n: usize| -> Option<&[u8]> {
        let (a, b) = r.split_at_checked(n)?;
        r = b;
        Some(a)
    };
    if take(1)?[0] != FILE_RECORD_VERSION {
        return None;
    }
    let size = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let mtime_ns = i64::from_le_bytes(take(8)?.try_into().ok()?);
    let ctime_ns = i64::from_le_bytes(take(8)?.try_into().ok()?);
    let ino = u64::from_le_bytes(take(8)?.try_into().ok()?);
    let has_etag = take(1)?[0] == 1;
    let etag_len = u16::from_le_bytes(take(2)?.try_into().ok()?) as usize;
    let etag = String::from_utf8(take(etag_len)?.to_vec()).ok();
    let mode = u32::from_le_bytes(take(4)?.try_into().ok()?);
    let layout = match take(1)?[0] {
        0 => Layout::Cdc,
        1 => Layout::Safetensors,
        2 => Layout::Tensors,
        _ => return None,
    };
    let blake3 = FileHash::from_slice(take(32)?)?;
    let n = u32::from_le_bytes(take(4)?.try_into().ok()?) as usize;
    let mut chunks = Vec::with_capacity(n.min(1 << 20));
    for _ in 0..n {
        let id = ChunkId::from_slice(take(32)?)?;
        let len = u32::from_le_bytes(take(4)?.try_into().ok()?);
        chunks.push(ChunkRef(id, len));
    }
    Some(CachedFile {
        size,
        mtime_ns,
        ctime_ns,
        ino,
        etag: if has_etag { etag } else { None },
        mode,
        blake3,
        layout,
        chunks,
    })
}

#[cfg(test)]
mod tests;
