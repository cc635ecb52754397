//! `ferry mirror`: makes a destination prefix hold the same plain objects as a source (a local
//! folder or a store prefix), byte-identical, for consumers that cannot run ferry. Sends only
//! what changed:
//!
//! * an unchanged file (same size, mtime and source etag as last time, and the destination
//!   object still carrying the etag ferry got back) costs nothing: no read, no request but
//!   the destination listing;
//! * a new file is uploaded whole;
//! * a changed file is cut by the chunker and planned against what the destination holds
//!   ([`plan`]): on Azure only blocks the blob lacks are staged and `Put Block List`
//!   re-commits the rest; on S3 a multipart upload copies unchanged ranges of the previous
//!   object server-side ([`native`]). Local folders get whole files (written atomically).
//!
//! Safety: a write is atomic (readers see the old object until the commit) and pinned to the
//! etag it was planned against; if the destination changed behind ferry's back, the file is
//! uploaded whole. The whole-file BLAKE3 is stored as object metadata, which
//! [`verify_mirror`] compares.

mod local;
pub mod native;
pub mod plan;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path as ObjPath;
use serde::Serialize;

use crate::chunker::{cut_file, ChunkerParams};
use crate::index::{Index, MirrorCache, MirrorRecord};
use crate::mirror::native::{
    normalize_etag, DeltaStore, NativeError, PartSource, RemoteObject, WriteObserver, WriteRequest,
};
use crate::mirror::plan::{Base, Chunk, Plan};
use crate::ops::hasher::FileHasher;
use crate::ops::source::{Source, SourceEntry, SourceFile};
use crate::ops::OpError;
use crate::progress::Progress;
use crate::store::key::{key_at, object_key, KeyError, UnholdableNames};
use crate::store::{Store, StoreUrl};

/// Files mirrored at once.
const FILES_IN_FLIGHT: usize = 4;
/// Files larger than this get their whole-file hash computed on a second thread.
const PARALLEL_HASH_FROM: u64 = 16 << 20;

/// What to do beyond copying.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorOptions {
    /// Remove destination objects the source no longer has.
    pub delete: bool,
    /// Plan and report, change nothing.
    pub dry_run: bool,
    /// Read and hash every source file, even those the index records as unchanged.
    pub rehash: bool,
}

/// What happened to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// New at the destination: uploaded whole.
    Create,
    /// Changed: only the changed parts were sent.
    Update,
    /// Changed, but nothing usable of the old object was known (or it changed behind
    /// ferry's back): uploaded whole.
    Replace,
    /// The destination already held exactly this content (BLAKE3 metadata): recorded only.
    Adopt,
    /// Gone from the source: removed (`--delete`).
    Delete,
}

/// One object written (or, in a dry run, that would be).
#[derive(Debug, Clone, Serialize)]
pub struct FileAction {
    pub path: String,
    pub action: Action,
    pub size: u64,
    /// Bytes sent for it (planned, in a dry run).
    pub sent: u64,
    /// Why a changed file was uploaded whole, when it was.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// What a mirror run did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct MirrorReport {
    pub source: String,
    pub dest: String,
    pub dry_run: bool,
    pub files: u64,
    pub unchanged: u64,
    pub created: u64,
    pub updated: u64,
    pub replaced: u64,
    pub adopted: u64,
    pub deleted: u64,
    /// Symlinks: objects have no such thing. (A file whose name the destination cannot
    /// hold is not skipped: the run fails listing it, after mirroring everything else.)
    pub skipped: u64,
    /// Size of the files written.
    pub bytes_written: u64,
    /// Payload bytes sent to the destination.
    pub bytes_sent: u64,
    /// Bytes the destination reused from previous versions (server-side copy or re-commit).
    pub bytes_kept: u64,
    pub actions: Vec<FileAction>,
}

/// Mirrors `source` to `dest`. `native` writes S3 and Azure destinations (see
/// [`native::open`]); without it files are written whole through `object_store`.
pub async fn mirror(
    source: &Source,
    dest: &Store,
    native: Option<Arc<dyn DeltaStore>>,
    index: &Index,
    opts: MirrorOptions,
    progress: bool,
) -> Result<MirrorReport, OpError> {
    let dest_url = dest.url().to_string();
    check_no_overlap(&source.key(), &dest_url)?;
    let cache = index.mirror(&source.key(), &dest_url)?;
    let mut report = MirrorReport {
        source: source.key(),
        dest: dest_url,
        dry_run: opts.dry_run,
        ..Default::default()
    };

    let entries = source.list().await?;
    // Key → (size, etag, the location exactly as listed: deletes use it, never a re-encoding).
    let mut listed: BTreeMap<String, (u64, String)> = BTreeMap::new();
    let mut locations: BTreeMap<String, ObjPath> = BTreeMap::new();
    for m in dest.list(None).await? {
        let etag = m.e_tag.as_deref().map(normalize_etag).unwrap_or_default();
        let key = m.location.as_ref().to_string();
        listed.insert(key.clone(), (m.size, etag));
        locations.insert(key, m.location);
    }

    let mut work = Vec::new();
    let mut present = HashSet::new();
    let mut unholdable = Vec::new();
    for e in entries {
        let SourceEntry::File(f) = e else {
            if let SourceEntry::Symlink { rel, .. } = e {
                // Not mirrored, and not a reason to delete what the destination has there.
                report.skipped += 1;
                present.insert(rel);
            }
            continue;
        };
        report.files += 1;
        present.insert(f.rel.clone());
        if let Err(e) = dest_holds(dest, &f.rel) {
            // Not a skip: the run fails listing it, once everything else is mirrored.
            unholdable.push(e);
            continue;
        }
        let remote = listed.get(&f.rel).cloned();
        let rec = cache.get(&f.rel)?;
        if !opts.rehash && unchanged(&f, rec.as_ref(), remote.as_ref()) {
            report.unchanged += 1;
            continue;
        }
        work.push((f, rec, remote));
    }

    let total: u64 = work.iter().map(|(f, _, _)| f.size).sum();
    let bar = Progress::bytes(progress, "mirror", total);
    let ctx = Arc::new(FileCtx {
        buffers: Default::default(),
        source: source.clone(),
        dest: dest.clone(),
        native,
        cache: cache.clone(),
        dry_run: opts.dry_run,
        bar: bar.clone(),
    });
    let mut results = futures::stream::iter(work.into_iter().map(|(f, rec, remote)| {
        let ctx = ctx.clone();
        async move { ctx.mirror_file(f, rec, remote).await }
    }))
    .buffer_unordered(FILES_IN_FLIGHT);
    let mut actions = Vec::new();
    let mut first_error = None;
    while let Some(r) = results.next().await {
        match r {
            Ok(Some(a)) => actions.push(a),
            Ok(None) => report.unchanged += 1,
            Err(e) => {
                // Let the other files in flight finish; the first failure is the command's
                // error (its last line), any further ones are logged.
                if first_error.is_some() {
                    tracing::error!("{e}");
                } else {
                    first_error = Some(e);
                }
            }
        }
    }
    drop(results);
    bar.finish();
    if let Some(e) = first_error {
        return Err(e);
    }

    if opts.delete {
        let doomed: Vec<&String> = listed.keys().filter(|k| !present.contains(*k)).collect();
        if report.files == 0 && !doomed.is_empty() {
            return Err(OpError::DeleteEverything {
                source_url: report.source.clone(),
                objects: doomed.len(),
                dest: report.dest.clone(),
            });
        }
        for path in doomed {
            if !opts.dry_run {
                dest.delete(&locations[path]).await?;
                cache.remove(path)?;
            }
            actions.push(FileAction {
                path: path.clone(),
                action: Action::Delete,
                size: listed[path].0,
                sent: 0,
                note: None,
            });
        }
    }

    actions.sort_by(|a, b| a.path.cmp(&b.path));
    for a in &actions {
        match a.action {
            Action::Create => report.created += 1,
            Action::Update => report.updated += 1,
            Action::Replace => report.replaced += 1,
            Action::Adopt => report.adopted += 1,
            Action::Delete => report.deleted += 1,
        }
        if !matches!(a.action, Action::Delete | Action::Adopt) {
            report.bytes_written += a.size;
            report.bytes_sent += a.sent;
            report.bytes_kept += a.size - a.sent.min(a.size);
        }
    }
    report.actions = actions;
    if !opts.dry_run {
        index.flush()?;
    }
    if !unholdable.is_empty() {
        return Err(UnholdableNames {
            dest: report.dest,
            names: unholdable,
        }
        .into());
    }
    Ok(report)
}

/// The key of `rel` at `dest`, exactly the name, or why `dest` cannot hold it.
fn dest_holds(dest: &Store, rel: &str) -> Result<ObjPath, KeyError> {
    key_at(dest.url(), rel)
}

/// How old an unfinished upload of a key must be to count as abandoned.
fn stale_uploads_after() -> std::time::Duration {
    std::env::var("FERRY_MIRROR_STALE_UPLOADS")
        .ok()
        .and_then(|v| humantime::parse_duration(v.trim()).ok())
        .unwrap_or(std::time::Duration::from_secs(3600))
}

/// A destination inside its source (or the reverse) would mirror its own output.
pub fn check_no_overlap(source: &str, dest: &str) -> Result<(), OpError> {
    let inside =
        |a: &str, b: &str| a == b || a.starts_with(&format!("{}/", b.trim_end_matches('/')));
    if inside(source, dest) || inside(dest, source) {
        return Err(OpError::MirrorInsideSource {
            source_url: source.into(),
            dest: dest.into(),
        });
    }
    Ok(())
}

/// The no-read fast path: the source file is as it was mirrored and the destination object
/// still carries the etag ferry wrote.
fn unchanged(f: &SourceFile, rec: Option<&MirrorRecord>, remote: Option<&(u64, String)>) -> bool {
    match (rec, remote) {
        (Some(r), Some((size, etag))) => {
            r.size == f.size
                && r.mtime_ns == f.mtime_ns
                && r.ctime_ns == f.ctime_ns
                && r.ino == f.ino
                && r.source_etag == f.etag
                && *size == f.size
                && !etag.is_empty()
                && *etag == r.dest_etag
        }
        _ => false,
    }
}

struct FileCtx {
    /// Chunker buffers (four max-size windows each), reused across files: allocating and
    /// zeroing one per file would cost more than mirroring a small file.
    buffers: std::sync::Mutex<Vec<Vec<u8>>>,
    source: Source,
    dest: Store,
    native: Option<Arc<dyn DeltaStore>>,
    cache: MirrorCache,
    dry_run: bool,
    bar: Progress,
}

/// A file cut into chunks, with its whole-file hash.
struct Cut {
    chunks: Vec<Chunk>,
    blake3: [u8; 32],
    size: u64,
}

impl FileCtx {
    /// Mirrors one changed or new file; `None` when it turned out unchanged.
    async fn mirror_file(
        &self,
        f: SourceFile,
        rec: Option<MirrorRecord>,
        remote: Option<(u64, String)>,
    ) -> Result<Option<FileAction>, OpError> {
        // One open file for the cut and the part reads: a writer renaming a new version
        // into place cannot mix two versions into one object.
        let local = self.open_local(&f)?;
        let cut = self.cut(&f, local.clone()).await?;
        let hex = blake3::Hash::from_bytes(cut.blake3).to_hex().to_string();
        let record = |etag: String| MirrorRecord {
            size: f.size,
            mtime_ns: f.mtime_ns,
            ctime_ns: f.ctime_ns,
            ino: f.ino,
            source_etag: f.etag.clone(),
            dest_etag: etag,
            blake3: cut.blake3,
            chunks: cut.chunks.iter().map(|c| (c.hash, c.len)).collect(),
        };
        let remote_etag = remote.as_ref().map(|(_, e)| e.clone());
        let trusted = match (&rec, &remote_etag) {
            (Some(r), Some(e)) => !e.is_empty() && *e == r.dest_etag,
            _ => false,
        };

        // Same content as what ferry wrote last time (only the mtime moved): record only.
        if trusted && rec.as_ref().is_some_and(|r| r.blake3 == cut.blake3) {
            if !self.dry_run {
                self.cache
                    .put(&f.rel, &record(remote_etag.clone().unwrap_or_default()))?;
            }
            self.bar.inc(f.size);
            return Ok(None);
        }

        let native = self.native.clone();
        let probe = match (&native, &remote) {
            (Some(n), Some(_)) => n.probe(&f.rel).await.map_err(native_err)?,
            _ => None,
        };
        // Not written by this mirror (or changed since), but already the same content: the
        // BLAKE3 metadata says so, or (local folders) the file's own bytes.
        let same = match (&probe, &native, &remote) {
            (Some(p), _, _) => p.blake3.as_deref() == Some(hex.as_str()) && p.size == cut.size,
            (None, None, Some((size, _))) if *size == cut.size => {
                hash_object(&self.dest, &f.rel).await?.as_deref() == Some(hex.as_str())
            }
            _ => false,
        };
        if same {
            let etag = match &probe {
                Some(p) => p.etag.clone(),
                None => remote_etag.clone().unwrap_or_default(),
            };
            if !self.dry_run {
                self.cache.put(&f.rel, &record(etag))?;
            }
            self.bar.inc(f.size);
            return Ok(Some(FileAction {
                path: f.rel,
                action: Action::Adopt,
                size: cut.size,
                sent: 0,
                note: None,
            }));
        }

        let (action, note) = match (&remote, &rec) {
            (None, _) => (Action::Create, None),
            (Some(_), None) => (
                Action::Replace,
                Some("no record of the destination object's layout".to_string()),
            ),
            (Some(_), Some(_)) if !trusted => (
                Action::Replace,
                Some("the destination object changed since ferry wrote it".to_string()),
            ),
            (Some(_), Some(_)) => (Action::Update, None),
        };

        let Some(native) = native else {
            // A local folder: whole files, written atomically.
            if !self.dry_run {
                let etag = self.put_whole(&f, local, &cut).await?;
                self.cache.put(&f.rel, &record(etag))?;
            }
            self.bar.inc(f.size);
            let action = if action == Action::Update {
                Action::Replace
            } else {
                action
            };
            return Ok(Some(FileAction {
                path: f.rel,
                action,
                size: cut.size,
                sent: cut.size,
                note,
            }));
        };

        let limits = native.limits();
        let old_chunks: Vec<Chunk>;
        let committed: HashMap<native::BlockId, u64>;
        let base_etag;
        let base = match (&action, &probe, &rec) {
            (Action::Update, Some(p), Some(r)) if !p.etag.is_empty() && p.etag == r.dest_etag => {
                base_etag = Some(p.etag.clone());
                if limits.keep_by_block_id {
                    committed = p.committed();
                    Base::Blocks(&committed)
                } else {
                    old_chunks = r
                        .chunks
                        .iter()
                        .map(|(hash, len)| Chunk {
                            hash: *hash,
                            len: *len,
                        })
                        .collect();
                    Base::Layout(&old_chunks)
                }
            }
            // No local record (a new machine, a deleted index) of a blob an earlier mirror
            // wrote: its committed blocks are named by their content, so they can be reused.
            (Action::Replace, Some(p), None)
                if limits.keep_by_block_id && p.blake3.is_some() && !p.etag.is_empty() =>
            {
                base_etag = Some(p.etag.clone());
                committed = p.committed();
                Base::Blocks(&committed)
            }
            _ => {
                base_etag = None;
                Base::None
            }
        };
        let (action, note) = match (action, &base) {
            (Action::Update, Base::None) => (
                Action::Replace,
                Some("the destination object changed since ferry wrote it".to_string()),
            ),
            (Action::Replace, Base::Blocks(_)) => (Action::Update, None),
            (action, _) => (action, note),
        };
        let mut planned = plan::plan(&cut.chunks, base, &limits);
        let mut action = action;
        let mut note = note;
        if planned.kept == 0 && action == Action::Update {
            action = Action::Replace;
            note = Some("no part of the previous object could be reused".into());
        }
        if self.dry_run {
            self.bar.inc(f.size);
            return Ok(Some(FileAction {
                path: f.rel,
                action,
                size: cut.size,
                sent: planned.sent,
                note,
            }));
        }

        self.abort_unfinished(&*native, &f.rel).await?;
        let reader = self.part_source(&f, local, &cut)?;
        let observer = Observed {
            check: self.local_check(&f),
            cache: &self.cache,
            rel: &f.rel,
            bar: &self.bar,
            sent: AtomicU64::new(0),
        };
        let etag = match self
            .write(
                &*native,
                &f,
                &planned,
                base_etag.as_deref(),
                &hex,
                &*reader,
                &observer,
            )
            .await
        {
            Err(NativeError::Changed { url, .. }) => {
                tracing::warn!("{url} changed while mirroring: uploading it whole");
                planned = plan::plan(&cut.chunks, Base::None, &limits);
                action = Action::Replace;
                note = Some("the destination object changed during the write".into());
                self.write(&*native, &f, &planned, None, &hex, &*reader, &observer)
                    .await
            }
            other => other,
        }
        .map_err(native_err)?;
        // (The source was checked unchanged right before the commit: `before_commit`.)
        self.cache.upload_finished(&f.rel)?;
        self.cache.put(&f.rel, &record(etag))?;
        let sent = observer.sent.load(Ordering::Relaxed);
        self.bar.inc(f.size.saturating_sub(sent));
        Ok(Some(FileAction {
            path: f.rel,
            action,
            size: cut.size,
            sent,
            note,
        }))
    }

    /// Aborts what interrupted runs left of `rel`'s uploads: the one the index recorded, and
    /// any other older than `FERRY_MIRROR_STALE_UPLOADS` (default 1h), which catches an
    /// upload killed before its id was recorded without touching a concurrent writer's.
    async fn abort_unfinished(&self, native: &dyn DeltaStore, rel: &str) -> Result<(), OpError> {
        let recorded = self.cache.unfinished_upload(rel)?;
        let stale_before = std::time::SystemTime::now()
            .checked_sub(stale_uploads_after())
            .unwrap_or(std::time::UNIX_EPOCH);
        let mut ids: Vec<String> = native
            .unfinished_uploads(rel)
            .await
            .map_err(native_err)?
            .into_iter()
            .filter(|(id, started)| Some(id) == recorded.as_ref() || *started <= stale_before)
            .map(|(id, _)| id)
            .collect();
        if let Some(r) = recorded {
            if !ids.contains(&r) {
                ids.push(r);
            }
        }
        for id in ids {
            tracing::info!(path = rel, upload = %id, "aborting an unfinished upload of an earlier run");
            native.abort(rel, &id).await.map_err(native_err)?;
        }
        self.cache.upload_finished(rel)?;
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    async fn write(
        &self,
        native: &dyn DeltaStore,
        f: &SourceFile,
        planned: &Plan,
        base_etag: Option<&str>,
        hex: &str,
        reader: &dyn PartSource,
        observer: &Observed<'_>,
    ) -> Result<String, NativeError> {
        let req = WriteRequest {
            key: &f.rel,
            parts: &planned.parts,
            size: planned.size,
            base_etag: if planned.has_keeps() { base_etag } else { None },
            blake3: hex,
        };
        native.write(&req, reader, observer).await
    }

    /// Reads the file once: chunk boundaries, chunk hashes and the whole-file BLAKE3.
    async fn cut(&self, f: &SourceFile, local: Option<Arc<std::fs::File>>) -> Result<Cut, OpError> {
        let source = self.source.clone();
        let file = f.clone();
        let rt = tokio::runtime::Handle::current();
        let mut buffer = self
            .buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .pop()
            .unwrap_or_default();
        let (cut, buffer) = tokio::task::spawn_blocking(move || {
            let cut = cut_blocking(&source, &file, local, &rt, &mut buffer);
            (cut, buffer)
        })
        .await
        .map_err(OpError::join)?;
        self.buffers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(buffer);
        cut
    }
}

/// [`FileCtx::cut`] on a blocking thread.
fn cut_blocking(
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
        Some(h) => h.finish().map_err(describe)?.0,
        None => *inline.finalize().as_bytes(),
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

impl FileCtx {
    /// The source file opened once, for local sources.
    fn open_local(&self, f: &SourceFile) -> Result<Option<Arc<std::fs::File>>, OpError> {
        match &self.source {
            Source::Local { .. } => {
                let path = self.source.describe(&f.rel);
                let file = std::fs::File::open(&path).map_err(|e| OpError::io(&path, e))?;
                Ok(Some(Arc::new(file)))
            }
            Source::Objects(_) => Ok(None),
        }
    }

    /// What `before_commit` compares: a local source file as it was listed.
    fn local_check(&self, f: &SourceFile) -> Option<LocalCheck> {
        match &self.source {
            Source::Local { .. } => Some(LocalCheck {
                path: self.source.describe(&f.rel),
                size: f.size,
                mtime_ns: f.mtime_ns,
                ctime_ns: f.ctime_ns,
                ino: f.ino,
            }),
            Source::Objects(_) => None,
        }
    }

    /// Reads parts of the file, each checked against the chunk hashes of the cut: bytes
    /// that changed since are never sent under the old hashes (and block ids).
    fn part_source(
        &self,
        f: &SourceFile,
        local: Option<Arc<std::fs::File>>,
        cut: &Cut,
    ) -> Result<Box<dyn PartSource>, OpError> {
        let inner: Box<dyn PartSource> = match (&self.source, local) {
            (_, Some(file)) => Box::new(LocalPart(file)),
            (Source::Objects(store), None) => Box::new(ObjectPart {
                store: store.clone(),
                path: object_key(&f.rel)?,
                etag: f.etag.clone(),
            }),
            (Source::Local { .. }, None) => match self.open_local(f)? {
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

    /// Writes a whole file through `object_store` (local destinations): a multipart upload,
    /// which the local store stages in a temporary file and renames into place.
    async fn put_whole(
        &self,
        f: &SourceFile,
        local: Option<Arc<std::fs::File>>,
        cut: &Cut,
    ) -> Result<String, OpError> {
        let path = object_key(&f.rel)?;
        let reader = self.part_source(f, local, cut)?;
        if let StoreUrl::Local(root) = self.dest.url() {
            let source = self.source.describe(&f.rel);
            let check = self.local_check(f);
            return local::put_file(&self.dest, root, &path, &*reader, cut.size, check, &source)
                .await;
        }
        let mut w = self.dest.upload(&path, 5 << 20).await?;
        let step = 8u64 << 20;
        let mut at = 0;
        while at < cut.size {
            let end = (at + step).min(cut.size);
            let data = reader
                .read(at..end)
                .await
                .map_err(|e| OpError::io(self.source.describe(&f.rel), e))?;
            w.wait_for_capacity(2).await?;
            w.put(data);
            at = end;
        }
        // The rename into place is the commit: the source must not have changed before it.
        if let Some(Err(e)) = self.local_check(f).map(|c| c.unchanged()) {
            let _ = w.abort().await;
            return Err(OpError::io(self.source.describe(&f.rel), e));
        }
        let etag = w.finish().await?;
        Ok(etag.as_deref().map(normalize_etag).unwrap_or_default())
    }
}

fn native_err(e: NativeError) -> OpError {
    OpError::Native(e)
}

/// A local source file's path, size, mtime, ctime and inode as listed.
struct LocalCheck {
    path: String,
    size: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    ino: u64,
}

impl LocalCheck {
    /// Fails if the file no longer has its listed size, mtime, ctime and inode (an mtime put
    /// back after a rewrite, or another file renamed into place, is still a change).
    fn unchanged(&self) -> std::io::Result<()> {
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

struct Observed<'a> {
    check: Option<LocalCheck>,
    cache: &'a MirrorCache,
    rel: &'a str,
    bar: &'a Progress,
    sent: AtomicU64,
}

impl WriteObserver for Observed<'_> {
    fn before_commit(&self) -> std::io::Result<()> {
        match &self.check {
            Some(c) => c.unchanged(),
            None => Ok(()),
        }
    }

    fn started(&self, _key: &str, upload_id: &str) {
        if let Err(e) = self.cache.upload_started(self.rel, upload_id) {
            tracing::warn!("{e}");
        }
    }

    fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
        self.bar.inc(n);
    }
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

/// `ferry verify --mirror`: one object that does not match its source.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    pub path: String,
    pub problem: String,
}

/// What `verify --mirror` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyMirrorReport {
    pub source: String,
    pub dest: String,
    pub files: u64,
    pub matched: u64,
    pub mismatches: Vec<Mismatch>,
    pub ok: bool,
}

/// Compares every source file's BLAKE3 with the destination object's: the `ferry_blake3`
/// metadata on S3 and Azure (with the size), the object's bytes hashed elsewhere.
///
/// With `read_data`, every object's bytes are read back and hashed as well, so an object
/// whose metadata is right but whose bytes are not is found too.
pub async fn verify_mirror(
    source: &Source,
    dest: &Store,
    native: Option<Arc<dyn DeltaStore>>,
    read_data: bool,
) -> Result<VerifyMirrorReport, OpError> {
    let mut report = VerifyMirrorReport {
        source: source.key(),
        dest: dest.url().to_string(),
        ..Default::default()
    };
    let files: Vec<SourceFile> = source
        .list()
        .await?
        .into_iter()
        .filter_map(|e| match e {
            SourceEntry::File(f) => Some(f),
            _ => None,
        })
        .collect();
    report.files = files.len() as u64;
    let results = futures::stream::iter(files.into_iter().map(|f| {
        let native = native.clone();
        async move {
            if let Err(e) = dest_holds(dest, &f.rel) {
                return Ok((f.rel, Some(e.to_string())));
            }
            let want = hash_source(source, &f).await?;
            let problem = match &native {
                Some(n) => match n.probe(&f.rel).await.map_err(native_err)? {
                    None => Some("missing at the destination".to_string()),
                    Some(RemoteObject { size, .. }) if size != f.size => {
                        Some(format!("size {size}, source {}", f.size))
                    }
                    Some(RemoteObject { blake3: None, .. }) => {
                        Some("no ferry_blake3 metadata (not written by ferry mirror)".into())
                    }
                    Some(RemoteObject {
                        blake3: Some(have), ..
                    }) if have != want => Some(format!("BLAKE3 {have}, source {want}")),
                    Some(_) if read_data => match hash_object(dest, &f.rel).await? {
                        None => Some("missing at the destination".to_string()),
                        Some(have) if have != want => Some(format!(
                            "its bytes hash to BLAKE3 {have} (its metadata says {want}), source {want}"
                        )),
                        Some(_) => None,
                    },
                    Some(_) => None,
                },
                None => match hash_object(dest, &f.rel).await? {
                    None => Some("missing at the destination".to_string()),
                    Some(have) if have != want => Some(format!("BLAKE3 {have}, source {want}")),
                    Some(_) => None,
                },
            };
            Ok::<_, OpError>((f.rel, problem))
        }
    }))
    .buffer_unordered(FILES_IN_FLIGHT)
    .try_collect::<Vec<_>>()
    .await?;
    for (path, problem) in results {
        match problem {
            None => report.matched += 1,
            Some(problem) => report.mismatches.push(Mismatch { path, problem }),
        }
    }
    report.mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    report.ok = report.mismatches.is_empty();
    Ok(report)
}

async fn hash_source(source: &Source, f: &SourceFile) -> Result<String, OpError> {
    let source = source.clone();
    let f = f.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut reader = source.reader(&f, &rt)?;
        let mut h = blake3::Hasher::new();
        std::io::copy(&mut reader, &mut h).map_err(|e| OpError::io(source.describe(&f.rel), e))?;
        Ok(h.finalize().to_hex().to_string())
    })
    .await
    .map_err(OpError::join)?
}

async fn hash_object(dest: &Store, rel: &str) -> Result<Option<String>, OpError> {
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

    #[test]
    fn overlapping_locations_are_refused() {
        for (a, b) in [
            ("file:///data/ckpt", "file:///data/ckpt/out"),
            ("file:///data/ckpt/out", "file:///data/ckpt"),
            ("s3://b/x", "s3://b/x"),
            ("s3://b", "s3://b/mirror"),
        ] {
            let e = check_no_overlap(a, b).unwrap_err().to_string();
            assert!(e.contains("one is inside the other"), "{a} {b}: {e}");
        }
        for (a, b) in [
            ("file:///data/ckpt", "file:///data/ckpt2"),
            ("s3://b/x", "az://b/x"),
            ("s3://b/x", "s3://b/y"),
        ] {
            check_no_overlap(a, b).unwrap();
        }
    }
}
