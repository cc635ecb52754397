//! The local base cache: the chunks a delta push just encoded, kept beside the index so the
//! next push of the same ref encodes its deltas against them instead of reading them back
//! from the repository (which, for a repository in a cloud, is egress paid on every step).
//!
//! One folder per repository and ref, one file per chunk: a small header (the chain the
//! repository stores the chunk in: depth, base, key, bytes a restore reads) and the chunk's
//! full frame. Like the index it is only a cache: an entry is written to a temporary name and
//! renamed, every read is checked by its caller (the frame against the chunk id, the header
//! against the frame the repository holds), and anything unreadable is simply a miss. After
//! each push the folder keeps only what the next push can use: the chunks of the new snapshot
//! and the keys under them. It holds at most `max_bytes`; past that, new entries are skipped.

use std::collections::HashSet;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use crate::ids::ChunkId;

const MAGIC: &[u8; 8] = b"FRYBASE1";
/// magic, depth, has-base flag, base id, key id, read, chunk length.
const HEADER: usize = 8 + 1 + 1 + 32 + 32 + 8 + 4;

/// How the repository stores a cached chunk, and the chunk's full frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BaseEntry {
    /// Delta frames from the stored frame down to a full frame (0: stored whole).
    pub depth: u8,
    /// The stored frame's base (`None` for a full frame).
    pub base: Option<ChunkId>,
    /// The full frame at the bottom of its chain (the chunk itself when stored whole).
    pub key: ChunkId,
    /// Stored bytes a restore of the chunk reads (its frame and every base's).
    pub read: u64,
    /// The chunk's length.
    pub len: u32,
    /// The chunk's full frame (`codec`): what the caller decodes and checks against the id.
    pub frame: Vec<u8>,
}

/// The base cache of one repository and ref (see the module docs).
#[derive(Debug)]
pub struct BaseCache {
    dir: PathBuf,
    max_bytes: u64,
    used: AtomicU64,
    read_only: bool,
}

impl BaseCache {
    /// The cache in `dir` (created on first write), holding at most `max_bytes`.
    pub(super) fn open(dir: PathBuf, max_bytes: u64) -> Self {
        let used = fs::read_dir(&dir)
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .filter_map(|e| e.metadata().ok())
                    .map(|m| m.len())
                    .sum()
            })
            .unwrap_or(0);
        Self {
            dir,
            max_bytes,
            used: AtomicU64::new(used),
            read_only: false,
        }
    }

    /// The same cache for a dry run: read, never written or trimmed.
    pub fn read_only(mut self) -> Self {
        self.read_only = true;
        self
    }

    /// The folder it lives in.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Chunk `id`'s entry, `None` when there is none or it cannot be read (unchecked: see
    /// [`BaseEntry::frame`]).
    pub fn get(&self, id: &ChunkId) -> Option<BaseEntry> {
        let bytes = fs::read(self.path(id)).ok()?;
        parse(&bytes)
    }

    /// Keeps `entry` for chunk `id`, unless that would pass the size limit. Best effort: a
    /// cache that cannot be written is a warning, never a failed push.
    pub fn put(&self, id: &ChunkId, entry: &BaseEntry) {
        if self.read_only {
            return;
        }
        let len = (HEADER + entry.frame.len()) as u64;
        if self.used.fetch_add(len, Ordering::Relaxed) + len > self.max_bytes {
            self.used.fetch_sub(len, Ordering::Relaxed);
            return;
        }
        if let Err(e) = self.write(id, entry) {
            self.used.fetch_sub(len, Ordering::Relaxed);
            tracing::warn!(dir = %self.dir.display(), error = %e, "cannot write the local base cache; the next push reads its bases from the repository");
        }
    }

    fn write(&self, id: &ChunkId, entry: &BaseEntry) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let path = self.path(id);
        // Compressor threads may write the same chunk (a key under many chunks) at once.
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tmp = path.with_extension(format!("{}.{n}.tmp", std::process::id()));
        let mut f = fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&[entry.depth, u8::from(entry.base.is_some())])?;
        f.write_all(&entry.base.map_or([0; 32], |b| b.0))?;
        f.write_all(&entry.key.0)?;
        f.write_all(&entry.read.to_le_bytes())?;
        f.write_all(&entry.len.to_le_bytes())?;
        f.write_all(&entry.frame)?;
        drop(f);
        fs::rename(&tmp, &path)
    }

    /// Removes every entry but those of `keep` and the keys under them (and any leftover
    /// temporary file). Returns how many entries it removed.
    pub fn retain(&self, keep: &HashSet<ChunkId>) -> usize {
        if self.read_only {
            return 0;
        }
        let Ok(entries) = fs::read_dir(&self.dir) else {
            return 0;
        };
        let mut keys = HashSet::new();
        let mut files = Vec::new();
        for e in entries.filter_map(Result::ok) {
            let name = e.file_name();
            match name.to_str().and_then(|n| n.parse::<ChunkId>().ok()) {
                Some(id) if keep.contains(&id) => {
                    if let Some(key) = self.key_of(&e.path()) {
                        keys.insert(key);
                    }
                }
                id => files.push((id, e.path())),
            }
        }
        let mut removed = 0;
        for (id, path) in files {
            if id.is_some_and(|id| keys.contains(&id)) {
                continue;
            }
            let len = fs::metadata(&path).map_or(0, |m| m.len());
            if fs::remove_file(&path).is_ok() {
                self.used.fetch_sub(
                    len.min(self.used.load(Ordering::Relaxed)),
                    Ordering::Relaxed,
                );
                removed += 1;
            }
        }
        removed
    }

    fn key_of(&self, path: &Path) -> Option<ChunkId> {
        let mut head = [0u8; HEADER];
        let mut f = fs::File::open(path).ok()?;
        std::io::Read::read_exact(&mut f, &mut head).ok()?;
        parse_header(&head).map(|(_, _, key, _)| key)
    }

    fn path(&self, id: &ChunkId) -> PathBuf {
        self.dir.join(id.to_string())
    }
}

fn parse(bytes: &[u8]) -> Option<BaseEntry> {
    let (depth, base, key, read) = parse_header(bytes.get(..HEADER)?)?;
    let len = u32::from_le_bytes(bytes[82..86].try_into().ok()?);
    Some(BaseEntry {
        depth,
        base,
        key,
        read,
        len,
        frame: bytes[HEADER..].to_vec(),
    })
}

fn parse_header(h: &[u8]) -> Option<(u8, Option<ChunkId>, ChunkId, u64)> {
    if h.len() < HEADER || &h[..8] != MAGIC {
        return None;
    }
    let depth = h[8];
    let base = match h[9] {
        0 => None,
        1 => Some(ChunkId::from_slice(&h[10..42])?),
        _ => return None,
    };
    let key = ChunkId::from_slice(&h[42..74])?;
    let read = u64::from_le_bytes(h[74..82].try_into().ok()?);
    Some((depth, base, key, read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> ChunkId {
        ChunkId::of(&[n])
    }

    fn entry(key: u8, frame: &[u8]) -> BaseEntry {
        BaseEntry {
            depth: 1,
            base: Some(id(key)),
            key: id(key),
            read: 99,
            len: 5,
            frame: frame.to_vec(),
        }
    }

    #[test]
    fn keeps_what_the_next_push_can_use() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BaseCache::open(dir.path().join("c"), 1 << 20);
        assert_eq!(cache.get(&id(1)), None, "empty");
        let full = BaseEntry {
            depth: 0,
            base: None,
            key: id(9),
            read: 3,
            len: 5,
            frame: b"key".to_vec(),
        };
        cache.put(&id(9), &full);
        cache.put(&id(1), &entry(9, b"one"));
        cache.put(&id(2), &entry(9, b"two"));
        assert_eq!(cache.get(&id(1)), Some(entry(9, b"one")));
        assert_eq!(cache.get(&id(9)), Some(full.clone()));
        // Keeping chunk 1 keeps its key 9; chunk 2 goes.
        let removed = cache.retain(&HashSet::from([id(1)]));
        assert_eq!(removed, 1);
        assert_eq!(cache.get(&id(2)), None);
        assert_eq!(cache.get(&id(9)), Some(full.clone()));
        // A dry run's copy reads but neither writes nor trims.
        let dry = BaseCache::open(dir.path().join("c"), 1 << 20).read_only();
        dry.put(&id(3), &entry(9, b"three"));
        assert_eq!(dry.retain(&HashSet::new()), 0);
        assert_eq!(dry.get(&id(3)), None);
        assert_eq!(dry.get(&id(9)), Some(full));
        // A reopened cache counts what it holds.
        let again = BaseCache::open(dir.path().join("c"), 1 << 20);
        assert_eq!(
            again.used.load(Ordering::Relaxed),
            2 * HEADER as u64 + 6,
            "two entries"
        );
    }

    #[test]
    fn skips_entries_past_its_limit_and_reads_damage_as_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let cache = BaseCache::open(dir.path().to_path_buf(), HEADER as u64 + 10);
        cache.put(&id(1), &entry(9, b"0123456789"));
        cache.put(&id(2), &entry(9, b"x"));
        assert!(cache.get(&id(1)).is_some());
        assert_eq!(cache.get(&id(2)), None, "past the limit");
        fs::write(dir.path().join(id(1).to_string()), b"FRYBASE1\x01").unwrap();
        assert_eq!(cache.get(&id(1)), None, "a truncated entry is a miss");
        fs::write(dir.path().join(id(1).to_string()), vec![7u8; 200]).unwrap();
        assert_eq!(cache.get(&id(1)), None, "a foreign file is a miss");
    }
}
