//! What `ferry mirror` remembers about each destination object it wrote: the source file's
//! state when it was mirrored, the destination etag it got back, and the object's layout
//! (its chunks), which the next mirror plans its delta against. A cache like the rest of
//! the index: without a record, ferry probes the destination (and adopts an object whose
//! BLAKE3 metadata already matches) or uploads the file whole.
//!
//! Trees (see FORMAT.md "Local index"):
//! - `mirror/<BLAKE3 of source URL \n destination URL>`: relative path → v1 record: u8
//!   version, u64 size, i64 mtime ns, i64 ctime ns, u64 inode, u16 + source etag, u16 + destination etag, 32-byte
//!   BLAKE3, u32 chunk count, then (32-byte hash, u64 length) per chunk
//! - `mirror-uploads/<same>`: relative path → an unfinished multipart upload's id, aborted
//!   by the next run

use std::path::PathBuf;

use super::{Index, IndexError};
use crate::ids::FileHash;

/// v2 added ctime and inode; a v1 record reads as "no record" (the file is cut again).
const RECORD_VERSION: u8 = 2;

/// One mirrored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MirrorRecord {
    /// The source file when it was mirrored.
    pub size: u64,
    pub mtime_ns: i64,
    /// Status-change time and inode of a local source file (0 for objects).
    pub ctime_ns: i64,
    pub ino: u64,
    pub source_etag: Option<String>,
    /// The destination object's etag after the write (without quotes).
    pub dest_etag: String,
    /// Whole-file BLAKE3.
    pub blake3: FileHash,
    /// The object's chunks in order: (BLAKE3, length).
    pub chunks: Vec<([u8; 32], u64)>,
}

/// One source → destination pair's records.
#[derive(Clone)]
pub struct MirrorCache {
    records: sled::Tree,
    uploads: sled::Tree,
    path: PathBuf,
}

impl Index {
    /// The mirror records of `source_url` → `dest_url`.
    pub fn mirror(&self, source_url: &str, dest_url: &str) -> Result<MirrorCache, IndexError> {
        let key = blake3::hash(format!("{source_url}\n{dest_url}").as_bytes()).to_hex();
        Ok(MirrorCache {
            records: self.tree(format!("mirror/{key}"))?,
            uploads: self.tree(format!("mirror-uploads/{key}"))?,
            path: self.path.clone(),
        })
    }
}

impl MirrorCache {
    fn err(&self, source: sled::Error) -> IndexError {
        IndexError::Db {
            path: self.path.clone(),
            source,
        }
    }

    /// The record for `rel`; a record that does not decode counts as none.
    pub fn get(&self, rel: &str) -> Result<Option<MirrorRecord>, IndexError> {
        let v = self.records.get(rel.as_bytes()).map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| decode(&v)))
    }

    pub fn put(&self, rel: &str, rec: &MirrorRecord) -> Result<(), IndexError> {
        self.records
            .insert(rel.as_bytes(), encode(rec))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn remove(&self, rel: &str) -> Result<(), IndexError> {
        self.records
            .remove(rel.as_bytes())
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Remembers an upload in progress (before any part is sent), so a crash leaves a trace.
    pub fn upload_started(&self, rel: &str, upload_id: &str) -> Result<(), IndexError> {
        self.uploads
            .insert(rel.as_bytes(), upload_id.as_bytes())
            .map_err(|e| self.err(e))?;
        self.uploads.flush().map(|_| ()).map_err(|e| self.err(e))
    }

    pub fn upload_finished(&self, rel: &str) -> Result<(), IndexError> {
        self.uploads
            .remove(rel.as_bytes())
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// The unfinished upload recorded for `rel`, if any.
    pub fn unfinished_upload(&self, rel: &str) -> Result<Option<String>, IndexError> {
        let v = self.uploads.get(rel.as_bytes()).map_err(|e| self.err(e))?;
        Ok(v.map(|v| String::from_utf8_lossy(&v).into_owned()))
    }
}

fn put_str(v: &mut Vec<u8>, s: &str) {
    let b = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    v.extend_from_slice(&(b.len() as u16).to_le_bytes());
    v.extend_from_slice(b);
}

fn encode(r: &MirrorRecord) -> Vec<u8> {
    let mut v = Vec::with_capacity(64 + r.chunks.len() * 40);
    v.push(RECORD_VERSION);
    v.extend_from_slice(&r.size.to_le_bytes());
    v.extend_from_slice(&r.mtime_ns.to_le_bytes());
    v.extend_from_slice(&r.ctime_ns.to_le_bytes());
    v.extend_from_slice(&r.ino.to_le_bytes());
    match &r.source_etag {
        Some(e) => {
            v.push(1);
            put_str(&mut v, e);
        }
        None => v.push(0),
    }
    put_str(&mut v, &r.dest_etag);
    v.extend_from_slice(&r.blake3.0);
    v.extend_from_slice(&(r.chunks.len() as u32).to_le_bytes());
    for (h, len) in &r.chunks {
        v.extend_from_slice(h);
        v.extend_from_slice(&len.to_le_bytes());
    }
    v
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Some(a)
    }
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_le_bytes(b.try_into().expect("4 bytes")))
    }
    fn u64(&mut self) -> Option<u64> {
        self.take(8)
            .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }
    fn str(&mut self) -> Option<String> {
        let n = self.u16()? as usize;
        String::from_utf8(self.take(n)?.to_vec()).ok()
    }
    fn hash(&mut self) -> Option<[u8; 32]> {
        self.take(32).map(|b| b.try_into().expect("32 bytes"))
    }
}

fn decode(v: &[u8]) -> Option<MirrorRecord> {
    let mut r = Reader(v);
    if r.u8()? != RECORD_VERSION {
        return None;
    }
    let size = r.u64()?;
    let mtime_ns = r.u64()? as i64;
    let ctime_ns = r.u64()? as i64;
    let ino = r.u64()?;
    let source_etag = match r.u8()? {
        0 => None,
        1 => Some(r.str()?),
        _ => return None,
    };
    let dest_etag = r.str()?;
    let blake3 = FileHash(r.hash()?);
    let n = r.u32()? as usize;
    if r.0.len() != n.checked_mul(40)? {
        return None;
    }
    let mut chunks = Vec::with_capacity(n);
    for _ in 0..n {
        chunks.push((r.hash()?, r.u64()?));
    }
    Some(MirrorRecord {
        size,
        mtime_ns,
        ctime_ns,
        ino,
        source_etag,
        dest_etag,
        blake3,
        chunks,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_round_trip_and_damage_is_a_miss() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::open(dir.path(), std::time::Duration::from_secs(1)).unwrap();
        let cache = index.mirror("file:///src", "s3://b/p").unwrap();
        let rec = MirrorRecord {
            size: 3 << 20,
            mtime_ns: -5,
            ctime_ns: 9,
            ino: 77,
            source_etag: Some("\"abc\"".into()),
            dest_etag: "etag-1".into(),
            blake3: FileHash([7; 32]),
            chunks: vec![([1; 32], 1 << 20), ([2; 32], 2 << 20)],
        };
        cache.put("a/b.bin", &rec).unwrap();
        assert_eq!(cache.get("a/b.bin").unwrap(), Some(rec.clone()));
        assert_eq!(cache.get("other").unwrap(), None);
        // Another destination does not see it.
        let other = index.mirror("file:///src", "az://c/p").unwrap();
        assert_eq!(other.get("a/b.bin").unwrap(), None);
        // Every truncation decodes to nothing rather than garbage or a panic.
        let bytes = encode(&rec);
        for n in 0..bytes.len() {
            assert_eq!(decode(&bytes[..n]), None, "prefix of {n} bytes");
        }
        cache.upload_started("a/b.bin", "up-1").unwrap();
        assert_eq!(
            cache.unfinished_upload("a/b.bin").unwrap().as_deref(),
            Some("up-1")
        );
        cache.upload_finished("a/b.bin").unwrap();
        assert_eq!(cache.unfinished_upload("a/b.bin").unwrap(), None);
        cache.remove("a/b.bin").unwrap();
        assert_eq!(cache.get("a/b.bin").unwrap(), None);
    }
}
