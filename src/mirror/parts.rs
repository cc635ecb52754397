//! The mirror's I/O adapters: the source file opened once, its cut (chunk boundaries, chunk
//! hashes, whole-file BLAKE3) on a blocking thread, its parts read back for the write and
//! checked against the cut ([`PartSource`]s for local files and source objects), the
//! before-commit check of a local file, and the BLAKE3 of a destination object's bytes.

use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt;
use object_store::path::Path as ObjPath;

use crate::chunker::{cut_file, ChunkerParams};
use crate::ids::FileHash;
use crate::mirror::decide::Cut;
use crate::mirror::plan::Chunk;
use crate::ops::hasher::FileHasher;
use crate::ops::source::{Source, SourceFile};
use crate::ops::OpError;
use crate::store::delta::PartSource;
use crate::store::key::object_key;
use crate::store::Store;

/// Files larger than this get their whole-file hash computed on a second thread.
const PARALLEL_HASH_FROM: u64 = 16 << 20;

/// A local source file's path, size, mtime, ctime and inode as listed.
pub(super) struct LocalCheck {
    path: String,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl LocalCheck {
    /// Fails if the file no longer has its listed size, mtime, ctime and inode (an mtime put
    /// back after a rewrite, or another file renamed into place, is still a change).
    pub(super) fn unchanged(&self) -> std::io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = std::fs::metadata(&self.path)?;
        if meta.len() != self.size
            || crate::ops::source::mtime_ns(&meta) != self.mtime_ns
            || crate::ops::source::ctime_ns(&meta) != self.ctime_ns
            || meta.ino() != self.ino
        {
            return Err(std::io::Error::other(format!(
                "{} changed while it was being mirrored: not committed, rerun the mirror",
                self.path
            )));
        }
        Ok(())
    }
}

/// The source file opened once, for local sources: one open file for the cut and the part
/// reads, so a writer renaming a new version into place cannot mix two versions into one
/// object.
pub(super) fn open_local(
    source: &Source,
    f: &SourceFile,
) -> Result<Option<Arc<std::fs::File>>, OpError> {
    match source {
        Source::Local { .. } => {
            let path = source.describe(&f.rel);
            let file = std::fs::File::open(&path).map_err(|e| OpError::io(&path, e))?;
            Ok(Some(Arc::new(file)))
        }
        Source::Objects(_) => Ok(None),
    }
}

/// What `before_commit` compares: a local source file as it was listed.
pub(super) fn local_check(source: &Source, f: &SourceFile) -> Option<LocalCheck> {
    match source {
        Source::Local { .. } => Some(LocalCheck {
            path: source.describe(&f.rel),
            size: f.size,
            mtime_ns: f.mtime_ns,
            ctime_ns: f.ctime_ns,
            ino: f.ino,
        }),
        Source::Objects(_) => None,
    }
}

/// Reads parts of the file, each checked against the chunk hashes of the cut: bytes that
/// changed since are never sent under the old hashes (and block ids).
pub(super) fn part_source(
    source: &Source,
    f: &SourceFile,
    local: Option<Arc<std::fs::File>>,
    cut: &Cut,
) -> Result<Box<dyn PartSource>, OpError> {
    let inner: Box<dyn PartSource> = match (source, local) {
        (_, Some(file)) => Box::new(LocalPart(file)),
        (Source::Objects(store), None) => Box::new(ObjectPart {
            store: store.clone(),
            path: object_key(&f.rel)?,
            etag: f.etag.clone(),
        }),
        (Source::Local { .. }, None) => match open_local(source, f)? {
            Some(file) => Box::new(LocalPart(file)),
            None => return Err(OpError::Bug("a local source opened no file")),
        },
    };
    let mut at = 0;
    let chunks = cut
        .chunks
        .iter()
        .map(|c| {
            let start = at;
            at += c.len;
            (start, c.len, c.hash)
        })
        .collect();
    Ok(Box::new(Verified {
        inner,
        chunks: Arc::new(chunks),
    }))
}

/// Reads the file once (the opened local file, or the source object): chunk boundaries,
/// chunk hashes and the whole-file BLAKE3. Blocking: run it on a blocking thread.
pub(super) fn cut_blocking(
    source: &Source,
    file: &SourceFile,
    local: Option<Arc<std::fs::File>>,
    rt: &tokio::runtime::Handle,
    buffer: &mut Vec<u8>,
) -> Result<Cut, OpError> {
    let reader: Box<dyn std::io::Read + Send> = match local {
        Some(f) => Box::new(SharedFile(f)),
        None => source.reader(file, rt)?,
    };
    // Large files: the whole-file hash runs on a second thread, beside chunking.
    let mut inline = blake3::Hasher::new();
    let threaded = (file.size > PARALLEL_HASH_FROM).then(FileHasher::spawn);
    let mut chunks = Vec::new();
    let describe = |e| OpError::io(source.describe(&file.rel), e);
    cut_file(
        reader,
        &file.rel,
        file.size,
        ChunkerParams::default(),
        buffer,
        |data, _| {
            match &threaded {
                Some(h) => h.update(data.into())?,
                None => {
                    inline.update(data);
                }
            }
            chunks.push(Chunk {
                hash: *blake3::hash(data).as_bytes(),
                len: data.len() as u64,
            });
            Ok(())
        },
    )
    .map_err(describe)?;
    let blake3 = match &threaded {
        Some(h) => h.finish().map_err(describe)?,
        None => FileHash::from(inline.finalize()),
    };
    let size = chunks.iter().map(|c| c.len).sum();
    if size != file.size {
        return Err(OpError::MirrorSourceChanged {
            path: source.describe(&file.rel),
            listed: file.size,
            read: size,
        });
    }
    Ok(Cut {
        chunks,
        blake3,
        size,
    })
}

/// The BLAKE3 (hex) of the bytes of the object at `rel` under `dest`, or `None` if there is
/// no such object.
pub(super) async fn hash_object(dest: &Store, rel: &str) -> Result<Option<String>, OpError> {
    let path = object_key(rel)?;
    let mut stream = match dest.get_stream(&path).await {
        Ok(stream) => stream,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let mut h = blake3::Hasher::new();
    while let Some(b) = stream.next().await {
        h.update(&b?);
    }
    Ok(Some(h.finalize().to_hex().to_string()))
}

/// A shared open file as a sequential reader (the chunker's pass).
struct SharedFile(Arc<std::fs::File>);

impl std::io::Read for SharedFile {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        (&*self.0).read(buf)
    }
}

/// Part reads checked against the cut: every chunk wholly inside a range must still hash to
/// what the cut saw (partial chunks at a part's edges are covered by the before-commit
/// check of the file's size and mtime).
struct Verified {
    inner: Box<dyn PartSource>,
    /// (offset, length, BLAKE3) of each chunk, in order.
    chunks: Arc<Vec<(u64, u64, [u8; 32])>>,
}

#[async_trait]
impl PartSource for Verified {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let data = self.inner.read(range.clone()).await?;
        if data.len() as u64 != range.end - range.start {
            return Err(std::io::Error::other(format!(
                "read {} bytes of {}..{}: the file changed while being mirrored; rerun the mirror",
                data.len(),
                range.start,
                range.end
            )));
        }
        let chunks = self.chunks.clone();
        let bytes = data.clone();
        tokio::task::spawn_blocking(move || {
            let first = chunks.partition_point(|c| c.0 < range.start);
            for &(off, len, hash) in &chunks[first..] {
                if off + len > range.end {
                    break;
                }
                let at = (off - range.start) as usize;
                if blake3::hash(&bytes[at..at + len as usize]).as_bytes() != &hash {
                    return Err(std::io::Error::other(format!(
                        "bytes {off}..{} changed while being mirrored; rerun the mirror",
                        off + len
                    )));
                }
            }
            Ok(())
        })
        .await
        .map_err(std::io::Error::other)??;
        Ok(data)
    }
}

/// Ranges of a local file (positioned reads on a blocking thread).
struct LocalPart(Arc<std::fs::File>);

#[async_trait]
impl PartSource for LocalPart {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let file = self.0.clone();
        tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; (range.end - range.start) as usize];
            file.read_exact_at(&mut buf, range.start).map_err(|e| {
                if e.kind() == std::io::ErrorKind::UnexpectedEof {
                    std::io::Error::other(
                        "it changed while being mirrored (it got shorter); rerun the mirror",
                    )
                } else {
                    e
                }
            })?;
            Ok(Bytes::from(buf))
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

/// Ranges of a source object, pinned to the version that was listed.
struct ObjectPart {
    store: Store,
    path: ObjPath,
    etag: Option<String>,
}

#[async_trait]
impl PartSource for ObjectPart {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        self.store
            .get_range_if_match(&self.path, range, self.etag.clone())
            .await
            .map_err(std::io::Error::other)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Serves ranges of an in-memory file.
    struct Mem(Bytes);

    #[async_trait]
    impl PartSource for Mem {
        async fn read(&self, r: Range<u64>) -> std::io::Result<Bytes> {
            let end = (r.end as usize).min(self.0.len());
            Ok(self.0.slice(r.start as usize..end))
        }
    }

    #[tokio::test]
    async fn part_reads_are_checked_against_the_cut() {
        let old: Vec<u8> = (0..300u32).map(|i| (i * 7) as u8).collect();
        let chunks: Vec<(u64, u64, [u8; 32])> = (0..3u64)
            .map(|i| {
                let span = &old[(i * 100) as usize..((i + 1) * 100) as usize];
                (i * 100, 100, *blake3::hash(span).as_bytes())
            })
            .collect();
        let verified = |data: Vec<u8>| Verified {
            inner: Box::new(Mem(Bytes::from(data))),
            chunks: Arc::new(chunks.clone()),
        };
        let same = verified(old.clone());
        assert_eq!(&same.read(0..300).await.unwrap()[..], &old[..]);
        assert_eq!(&same.read(100..200).await.unwrap()[..], &old[100..200]);

        let mut changed = old.clone();
        changed[150] ^= 1;
        let v = verified(changed);
        let e = v.read(0..300).await.unwrap_err().to_string();
        assert!(e.contains("bytes 100..200 changed"), "{e}");
        assert!(v.read(100..200).await.is_err());
        // Chunks wholly outside the change still read fine.
        assert!(v.read(0..100).await.is_ok() && v.read(200..300).await.is_ok());
        // A file that got shorter is a short read.
        let short = verified(old[..250].to_vec());
        assert!(short.read(200..300).await.is_err());
    }
}
