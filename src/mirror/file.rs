//! One changed or new file's journey: cut it, look at the destination object as far as
//! [`decide`](crate::mirror::decide) asks, and carry out the decision — record only, write
//! whole through `object_store`, or write parts through the native store (aborting what
//! interrupted runs left first, and falling back to a whole write if the object changes
//! under the write) — then record what the destination now holds.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::index::{MirrorCache, MirrorRecord};
use crate::mirror::decide::{self, Cut, Decision, Delta, Facts, Listed, Note, Probe, ProbeKind};
use crate::mirror::parts::{self, hash_object, LocalCheck};
use crate::mirror::{local, native_err, Action, FileAction};
use crate::ops::source::{Source, SourceFile};
use crate::ops::OpError;
use crate::progress::Progress;
use crate::store::delta::{
    normalize_etag, DeltaStore, NativeError, PartSource, WriteObserver, WriteRequest,
};
use crate::store::key::object_key;
use crate::store::{Store, StoreUrl};

/// What every file of a run shares.
pub(super) struct FileCtx {
    /// Chunker buffers (four max-size windows each), reused across files: allocating and
    /// zeroing one per file would cost more than mirroring a small file.
    pub buffers: std::sync::Mutex<Vec<Vec<u8>>>,
    pub source: Source,
    pub dest: Store,
    pub native: Option<Arc<dyn DeltaStore>>,
    pub cache: MirrorCache,
    pub dry_run: bool,
    /// How old an unfinished upload must be to count as abandoned.
    pub stale_uploads_after: Duration,
    pub bar: Progress,
}

impl FileCtx {
    /// Mirrors one changed or new file; `None` when it turned out unchanged.
    pub(super) async fn mirror_file(
        &self,
        f: SourceFile,
        rec: Option<MirrorRecord>,
        listed: Option<Listed>,
    ) -> Result<Option<FileAction>, OpError> {
        let local = parts::open_local(&self.source, &f)?;
        let cut = self.cut(&f, local.clone()).await?;
        let facts = Facts {
            record: rec.as_ref(),
            listed: listed.as_ref(),
            cut: &cut,
            writer: match &self.native {
                Some(n) => decide::Writer::Delta(n.limits()),
                None => decide::Writer::Whole,
            },
        };
        let probe = self.probe(&f.rel, decide::probe_kind(&facts)).await?;
        let decision = decide::decide(&facts, &probe);
        match (decision, self.native.clone()) {
            (Decision::Unchanged { etag }, _) => {
                self.record_only(&f, &cut, etag)?;
                Ok(None)
            }
            (Decision::Adopt { etag }, _) => {
                self.record_only(&f, &cut, etag)?;
                Ok(Some(FileAction {
                    path: f.rel,
                    action: Action::Adopt,
                    size: cut.size,
                    sent: 0,
                    note: None,
                }))
            }
            (Decision::Delta(d), Some(native)) => {
                let action = self.write_delta(&*native, f, local, &cut, d).await?;
                Ok(Some(action))
            }
            (Decision::Whole { action, note }, _) => {
                let action = self.write_whole(f, local, &cut, action, note).await?;
                Ok(Some(action))
            }
            // Not reached (a delta is decided only for a native writer); a whole write is
            // right for any file.
            (Decision::Delta(d), None) => {
                let action = self.write_whole(f, local, &cut, d.action, d.note).await?;
                Ok(Some(action))
            }
        }
    }

    /// What [`decide::probe_kind`] asks for.
    async fn probe(&self, rel: &str, kind: ProbeKind) -> Result<Probe, OpError> {
        Ok(match (kind, &self.native) {
            (ProbeKind::Native, Some(n)) => Probe::Native(n.probe(rel).await.map_err(native_err)?),
            (ProbeKind::Hash, _) => Probe::Hash(hash_object(&self.dest, rel).await?),
            _ => Probe::Skipped,
        })
    }

    /// Records the file as mirrored at `etag` without writing (not in a dry run).
    fn record_only(&self, f: &SourceFile, cut: &Cut, etag: String) -> Result<(), OpError> {
        if !self.dry_run {
            self.cache.put(&f.rel, &record(f, cut, etag))?;
        }
        self.bar.inc(f.size);
        Ok(())
    }

    /// A whole-file destination (a local folder): the file written whole, atomically.
    async fn write_whole(
        &self,
        f: SourceFile,
        local: Option<Arc<std::fs::File>>,
        cut: &Cut,
        action: Action,
        note: Option<Note>,
    ) -> Result<FileAction, OpError> {
        if !self.dry_run {
            let etag = self.put_whole(&f, local, cut).await?;
            self.cache.put(&f.rel, &record(&f, cut, etag))?;
        }
        self.bar.inc(f.size);
        Ok(FileAction {
            path: f.rel,
            action,
            size: cut.size,
            sent: cut.size,
            note: note.map(|n| n.to_string()),
        })
    }

    /// A native destination: the planned parts (all sent, or some kept), one atomic write.
    async fn write_delta(
        &self,
        native: &dyn DeltaStore,
        f: SourceFile,
        local: Option<Arc<std::fs::File>>,
        cut: &Cut,
        mut delta: Delta,
    ) -> Result<FileAction, OpError> {
        tracing::debug!(
            path = %f.rel,
            action = ?delta.action,
            base = ?delta.base,
            kept = delta.plan.kept,
            sent = delta.plan.sent,
            "mirror: delta planned"
        );
        if self.dry_run {
            self.bar.inc(f.size);
            return Ok(FileAction {
                path: f.rel,
                action: delta.action,
                size: cut.size,
                sent: delta.plan.sent,
                note: delta.note.map(|n| n.to_string()),
            });
        }
        self.abort_unfinished(native, &f.rel).await?;
        let reader = parts::part_source(&self.source, &f, local, cut)?;
        let observer = Observed {
            check: parts::local_check(&self.source, &f),
            cache: &self.cache,
            rel: &f.rel,
            bar: &self.bar,
            sent: AtomicU64::new(0),
        };
        let hex = cut.hex();
        let etag = match send(native, &f.rel, &delta, &hex, &*reader, &observer).await {
            Err(NativeError::Changed { url, .. }) => {
                tracing::warn!("{url} changed while mirroring: uploading it whole");
                delta = decide::after_changed_during_write(cut, &native.limits());
                send(native, &f.rel, &delta, &hex, &*reader, &observer).await
            }
            other => other,
        }
        .map_err(native_err)?;
        // (The source was checked unchanged right before the commit: `before_commit`.)
        self.cache.upload_finished(&f.rel)?;
        self.cache.put(&f.rel, &record(&f, cut, etag))?;
        let sent = observer.sent.load(Ordering::Relaxed);
        self.bar.inc(f.size.saturating_sub(sent));
        Ok(FileAction {
            path: f.rel,
            action: delta.action,
            size: cut.size,
            sent,
            note: delta.note.map(|n| n.to_string()),
        })
    }

    /// Aborts what interrupted runs left of `rel`'s uploads: the one the index recorded, and
    /// any other older than the stale-upload age (`FERRY_MIRROR_STALE_UPLOADS`, default 1h),
    /// which catches an upload killed before its id was recorded without touching a
    /// concurrent writer's.
    async fn abort_unfinished(&self, native: &dyn DeltaStore, rel: &str) -> Result<(), OpError> {
        let recorded = self.cache.unfinished_upload(rel)?;
        let stale_before = std::time::SystemTime::now()
            .checked_sub(self.stale_uploads_after)
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
            let cut = parts::cut_blocking(&source, &file, local, &rt, &mut buffer);
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

    /// Writes a whole file through `object_store` (local destinations): a multipart upload,
    /// which the local store stages in a temporary file and renames into place.
    async fn put_whole(
        &self,
        f: &SourceFile,
        local: Option<Arc<std::fs::File>>,
        cut: &Cut,
    ) -> Result<String, OpError> {
        let path = object_key(&f.rel)?;
        let reader = parts::part_source(&self.source, f, local, cut)?;
        let check = parts::local_check(&self.source, f);
        if let StoreUrl::Local(root) = self.dest.url() {
            let source = self.source.describe(&f.rel);
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
        if let Some(Err(e)) = check.map(|c| c.unchanged()) {
            let _ = w.abort().await;
            return Err(OpError::io(self.source.describe(&f.rel), e));
        }
        let etag = w.finish().await?;
        Ok(etag.as_deref().map(normalize_etag).unwrap_or_default())
    }
}

/// What the index keeps of a file mirrored at `etag`.
fn record(f: &SourceFile, cut: &Cut, etag: String) -> MirrorRecord {
    MirrorRecord {
        size: f.size,
        mtime_ns: f.mtime_ns,
        ctime_ns: f.ctime_ns,
        ino: f.ino,
        source_etag: f.etag.clone(),
        dest_etag: etag,
        blake3: cut.blake3,
        chunks: cut.chunks.iter().map(|c| (c.hash, c.len)).collect(),
    }
}

/// One native write of the planned parts, pinned to the base etag when it keeps any.
async fn send(
    native: &dyn DeltaStore,
    rel: &str,
    delta: &Delta,
    hex: &str,
    reader: &dyn PartSource,
    observer: &Observed<'_>,
) -> Result<String, NativeError> {
    let req = WriteRequest {
        key: rel,
        parts: &delta.plan.parts,
        size: delta.plan.size,
        base_etag: delta.base_etag.as_deref(),
        blake3: hex,
    };
    native.write(&req, reader, observer).await
}

/// Told about a native write as it goes: records a started upload's id, counts the bytes
/// sent, and checks right before the commit that a local source did not change.
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
