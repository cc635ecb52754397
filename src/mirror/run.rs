//! A mirror run: list the source and the destination, skip files the index knows unchanged
//! (the no-read fast path), mirror the rest a few at a time ([`FileCtx`]), remove what the
//! source dropped (`--delete`), and add it all up in the report.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjPath;

use crate::index::{Index, MirrorCache, MirrorRecord};
use crate::mirror::decide::{self, Listed};
use crate::mirror::file::FileCtx;
use crate::mirror::{
    check_no_overlap, dest_holds, Action, FileAction, MirrorOptions, MirrorReport, MirrorSettings,
    FILES_IN_FLIGHT,
};
use crate::ops::source::{Source, SourceEntry, SourceFile};
use crate::ops::OpError;
use crate::progress::Reporter;
use crate::store::delta::{normalize_etag, DeltaStore};
use crate::store::key::{KeyError, UnholdableNames};
use crate::store::Store;

/// Mirrors `source` to `dest`. `native` writes S3 and Azure destinations (see
/// [`Store::delta`](crate::store::Store::delta)); without it files are written whole
/// through `object_store`. `settings` are the process's, resolved once by the caller.
pub async fn mirror_with(
    source: &Source,
    dest: &Store,
    native: Option<Arc<dyn DeltaStore>>,
    index: &Index,
    opts: MirrorOptions,
    settings: &MirrorSettings,
    progress: &Reporter,
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
    let objects = list_dest(dest).await?;
    let todo = select(entries, &objects, dest, &cache, opts, &mut report)?;

    let total: u64 = todo.work.iter().map(|w| w.file.size).sum();
    let bar = progress.bytes("mirror", total);
    let ctx = Arc::new(FileCtx {
        buffers: Default::default(),
        source: source.clone(),
        dest: dest.clone(),
        native,
        cache: cache.clone(),
        dry_run: opts.dry_run,
        stale_uploads_after: settings.stale_uploads_after,
        bar: bar.clone(),
    });
    let run = run_files(ctx, todo.work, &mut report).await;
    bar.finish();
    let mut actions = run?;
    if opts.delete {
        actions.extend(delete_gone(dest, &cache, &objects, &todo.present, opts, &report).await?);
    }
    tally(&mut report, actions);
    if !opts.dry_run {
        index.flush()?;
    }
    if !todo.unholdable.is_empty() {
        return Err(UnholdableNames {
            dest: report.dest,
            names: todo.unholdable,
        }
        .into());
    }
    Ok(report)
}

/// An object at the destination: as listed, and its location exactly as listed (deletes use
/// it, never a re-encoding of the key).
struct DestObject {
    listed: Listed,
    location: ObjPath,
}

/// The destination's objects by key.
async fn list_dest(dest: &Store) -> Result<BTreeMap<String, DestObject>, OpError> {
    let mut objects = BTreeMap::new();
    for m in dest.list(None).await? {
        let etag = m.e_tag.as_deref().map(normalize_etag).unwrap_or_default();
        let key = m.location.as_ref().to_string();
        let listed = Listed { size: m.size, etag };
        objects.insert(
            key,
            DestObject {
                listed,
                location: m.location,
            },
        );
    }
    Ok(objects)
}

/// A file to mirror, with its record and the destination's listing entry.
struct Work {
    file: SourceFile,
    record: Option<MirrorRecord>,
    listed: Option<Listed>,
}

/// What the listings leave to do.
struct Todo {
    work: Vec<Work>,
    /// Source paths (files and symlinks): what `--delete` spares.
    present: HashSet<String>,
    /// Files whose names the destination cannot hold: the run fails listing them, after
    /// mirroring everything else.
    unholdable: Vec<KeyError>,
}

/// Sorts the source's entries: symlinks skipped, names the destination cannot hold set
/// aside, files the index knows unchanged counted (unless `rehash`), the rest to mirror.
fn select(
    entries: Vec<SourceEntry>,
    objects: &BTreeMap<String, DestObject>,
    dest: &Store,
    cache: &MirrorCache,
    opts: MirrorOptions,
    report: &mut MirrorReport,
) -> Result<Todo, OpError> {
    let mut todo = Todo {
        work: Vec::new(),
        present: HashSet::new(),
        unholdable: Vec::new(),
    };
    for e in entries {
        let SourceEntry::File(f) = e else {
            if let SourceEntry::Symlink { rel, .. } = e {
                // Not mirrored, and not a reason to delete what the destination has there.
                report.skipped += 1;
                todo.present.insert(rel);
            }
            continue;
        };
        report.files += 1;
        todo.present.insert(f.rel.clone());
        if let Err(e) = dest_holds(dest, &f.rel) {
            // Not a skip: the run fails listing it, once everything else is mirrored.
            todo.unholdable.push(e);
            continue;
        }
        let listed = objects.get(&f.rel).map(|o| o.listed.clone());
        let record = cache.get(&f.rel)?;
        if !opts.rehash && decide::unchanged(&f, record.as_ref(), listed.as_ref()) {
            report.unchanged += 1;
            continue;
        }
        todo.work.push(Work {
            file: f,
            record,
            listed,
        });
    }
    Ok(todo)
}

/// Mirrors the files, [`FILES_IN_FLIGHT`] at a time. Every file in flight is let finish;
/// the first failure is the run's error (its last line), any further ones are logged.
async fn run_files(
    ctx: Arc<FileCtx>,
    work: Vec<Work>,
    report: &mut MirrorReport,
) -> Result<Vec<FileAction>, OpError> {
    let mut results = futures::stream::iter(work.into_iter().map(|w| {
        let ctx = ctx.clone();
        async move { ctx.mirror_file(w.file, w.record, w.listed).await }
    }))
    .buffer_unordered(FILES_IN_FLIGHT);
    let mut actions = Vec::new();
    let mut first_error = None;
    while let Some(r) = results.next().await {
        match r {
            Ok(Some(a)) => actions.push(a),
            Ok(None) => report.unchanged += 1,
            Err(e) if first_error.is_some() => tracing::error!("{e}"),
            Err(e) => first_error = Some(e),
        }
    }
    match first_error {
        Some(e) => Err(e),
        None => Ok(actions),
    }
}

/// `--delete`: removes the objects the source no longer has (none in a dry run), refusing
/// when the source lists no files at all (an unmounted folder, a mistyped prefix).
async fn delete_gone(
    dest: &Store,
    cache: &MirrorCache,
    objects: &BTreeMap<String, DestObject>,
    present: &HashSet<String>,
    opts: MirrorOptions,
    report: &MirrorReport,
) -> Result<Vec<FileAction>, OpError> {
    let doomed: Vec<(&String, &DestObject)> = objects
        .iter()
        .filter(|(k, _)| !present.contains(*k))
        .collect();
    if report.files == 0 && !doomed.is_empty() {
        return Err(OpError::DeleteEverything {
            source_url: report.source.clone(),
            objects: doomed.len(),
            dest: report.dest.clone(),
        });
    }
    let mut actions = Vec::new();
    for (path, object) in doomed {
        if !opts.dry_run {
            dest.delete(&object.location).await?;
            cache.remove(path)?;
        }
        actions.push(FileAction {
            path: path.clone(),
            action: Action::Delete,
            size: object.listed.size,
            sent: 0,
            note: None,
        });
    }
    Ok(actions)
}

/// Counts the actions into the report, in path order.
fn tally(report: &mut MirrorReport, mut actions: Vec<FileAction>) {
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
}
