//! Reading one source file for push: chunks, whole-file BLAKE3, and the proof that the bytes
//! belong together. A local file is stat'ed (through its open descriptor) before and after
//! the read; if its size, mtime or ctime moved, or fewer or more bytes came than it had, it
//! changed while it was read. It is read once more, and if it changes again the push fails
//! with [`OpError::SourceChanged`] rather than record bytes that never existed together.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::chunker::{cut_file_with, ChunkerParams, Layout, TensorCuts};
use crate::ids::{ChunkId, FileHash, Naming};
use crate::ops::hasher::FileHasher;
use crate::ops::push::{Job, Out};
use crate::ops::push_delta::Counterparts;
use crate::ops::source::{ctime_ns, mtime_ns, Source, SourceFile};
use crate::ops::sync::Presence;
use crate::ops::targets::TargetSet;
use crate::ops::OpError;
use crate::repo::snapshot::ChunkRef;

/// A file's state as far as change detection goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct FileState {
    pub(crate) size: u64,
    pub(crate) mtime_ns: i64,
    pub(crate) ctime_ns: i64,
    pub(crate) ino: u64,
}

impl FileState {
    fn of(meta: &std::fs::Metadata) -> Self {
        Self {
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            ctime_ns: ctime_ns(meta),
            ino: meta.ino(),
        }
    }

    fn listed(f: &SourceFile) -> Self {
        Self {
            size: f.size,
            mtime_ns: f.mtime_ns,
            ctime_ns: f.ctime_ns,
            ino: f.ino,
        }
    }
}

/// One consistent read of a file.
pub(crate) struct ReadFile {
    /// The state the bytes belong to (taken right before the read).
    pub(crate) state: FileState,
    pub(crate) chunks: Vec<ChunkRef>,
    pub(crate) blake3: FileHash,
    pub(crate) layout: Layout,
}

/// How one attempt went.
enum Attempt {
    Stable(ReadFile),
    Changed(String),
}

/// The producer's reading state, kept across files.
pub(crate) struct FileReader<'a> {
    pub(crate) source: &'a Source,
    pub(crate) params: ChunkerParams,
    /// How tensors are cut inside (position-stable on format version 2 repositories).
    pub(crate) cuts: TensorCuts,
    /// Each tensor chunk's counterpart in the ref's previous snapshot (delta bases).
    pub(crate) counterparts: &'a Counterparts,
    pub(crate) presences: &'a [Presence],
    /// How the repositories name chunks (plain BLAKE3, or keyed in encrypted ones).
    pub(crate) naming: Naming,
    pub(crate) out: &'a Out<'a>,
    pub(crate) buffer: Vec<u8>,
    pub(crate) hasher: FileHasher,
    /// Chunks already on their way to each repository in this run.
    pub(crate) sent: Vec<HashSet<ChunkId>>,
    /// Time spent waiting for the compressors.
    pub(crate) waited: Duration,
}

impl FileReader<'_> {
    /// Which repositories (bit per target) lack a chunk and are not already being sent it.
    pub(crate) fn lacking(&self, id: &ChunkId) -> Result<TargetSet, OpError> {
        lacking(self.presences, &self.sent, id)
    }

    /// Reads `file`; a file that changed during the read is read once more, and fails with
    /// [`OpError::SourceChanged`] if it changed again.
    pub(crate) fn read_stable(&mut self, file: &SourceFile) -> Result<ReadFile, OpError> {
        let path = self.source.describe(&file.rel);
        let mut first = true;
        loop {
            match self.attempt(file)? {
                Attempt::Stable(read) => return Ok(read),
                Attempt::Changed(what) if first => {
                    tracing::info!(path = %path, change = %what, "file changed while it was read; reading it again");
                    first = false;
                }
                Attempt::Changed(what) => {
                    return Err(OpError::SourceChanged { path, what });
                }
            }
        }
    }

    fn attempt(&mut self, file: &SourceFile) -> Result<Attempt, OpError> {
        let path = self.source.describe(&file.rel);
        let io = |e: std::io::Error| OpError::io(&path, e);
        let (reader, before, local): (Box<dyn Read + Send>, FileState, Option<std::fs::File>) =
            match self.source.local_path(&file.rel) {
                Some(p) => {
                    let f = std::fs::File::open(&p).map_err(io)?;
                    let before = FileState::of(&f.metadata().map_err(io)?);
                    let reader = f.try_clone().map_err(io)?;
                    (Box::new(reader), before, Some(f))
                }
                None => (
                    self.source.reader(file, self.out.rt)?,
                    FileState::listed(file),
                    None,
                ),
            };
        let (chunks, size, layout) = self.cut(reader, &file.rel, before.size, &path)?;
        // Always collect the whole-file hash: it also resets the hasher for the next try.
        let blake3 = self.hasher.finish().map_err(io)?;
        if size != before.size {
            return Ok(Attempt::Changed(format!(
                "{size} bytes read where it had {}",
                before.size
            )));
        }
        if let Some(f) = local {
            let after = FileState::of(&f.metadata().map_err(io)?);
            if after != before {
                return Ok(Attempt::Changed(describe_change(&before, &after)));
            }
        }
        Ok(Attempt::Stable(ReadFile {
            state: before,
            chunks,
            blake3,
            layout,
        }))
    }

    /// Cuts one pass over `reader`, hashing every byte and sending chunks a repository lacks.
    fn cut(
        &mut self,
        reader: Box<dyn Read + Send>,
        rel: &str,
        size_hint: u64,
        path: &str,
    ) -> Result<(Vec<ChunkRef>, u64, Layout), OpError> {
        let mut chunks = Vec::new();
        let mut size = 0u64;
        let (presences, out, hasher) = (self.presences, self.out, &self.hasher);
        let (sent, waited) = (&mut self.sent, &mut self.waited);
        let (counterparts, naming) = (self.counterparts, &self.naming);
        let layout = cut_file_with(
            reader,
            rel,
            size_hint,
            self.params,
            self.cuts,
            &mut self.buffer,
            |data, width| {
                let data: std::sync::Arc<[u8]> = data.into();
                hasher.update(data.clone())?;
                let id = naming.chunk(&data);
                let len = data.len() as u32;
                let offset = size;
                size += len as u64;
                chunks.push(ChunkRef(id, len));
                let targets = lacking(presences, sent, &id).map_err(std::io::Error::other)?;
                if !targets.is_empty() {
                    for t in targets.iter() {
                        sent[t].insert(id);
                    }
                    let job = Job {
                        id,
                        data,
                        width,
                        targets,
                        base: (width > 1)
                            .then(|| counterparts.base(rel, offset, len, &id))
                            .flatten()
                            // Only a base the repository holds in a usable pack.
                            .filter(|b| {
                                presences.first().is_some_and(|p| p.has(b).unwrap_or(false))
                            }),
                    };
                    let t = Instant::now();
                    let res = out.jobs.send(job);
                    *waited += t.elapsed();
                    res.map_err(|_| std::io::Error::other(OpError::Cancelled))?;
                }
                out.bar.inc(len as u64);
                Ok(())
            },
        )
        .map_err(|e| match e.downcast::<OpError>() {
            Ok(op) => op,
            Err(e) => OpError::io(path, e),
        })?;
        Ok((chunks, size, layout))
    }
}

fn lacking(
    presences: &[Presence],
    sent: &[HashSet<ChunkId>],
    id: &ChunkId,
) -> Result<TargetSet, OpError> {
    let mut set = TargetSet::new();
    for (t, p) in presences.iter().enumerate() {
        if !sent[t].contains(id) && !p.has(id)? {
            set.insert(t);
        }
    }
    Ok(set)
}

/// What moved between two stats, for the message.
fn describe_change(before: &FileState, after: &FileState) -> String {
    let mut moved = Vec::new();
    if before.size != after.size {
        moved.push(format!("size {} → {}", before.size, after.size));
    }
    if before.mtime_ns != after.mtime_ns {
        moved.push("mtime".to_string());
    }
    if before.ctime_ns != after.ctime_ns {
        moved.push("ctime".to_string());
    }
    if before.ino != after.ino {
        moved.push("inode".to_string());
    }
    moved.join(", ")
}
