//! Restore: repository snapshot → plain files in a local folder or under an object prefix.
//! Every chunk is checked against its id and every file against its whole-file BLAKE3; nothing
//! is written outside the destination.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;
use std::time::Instant;

use bytes::Bytes;
use futures::StreamExt;
use serde::Serialize;

use crate::ids::{FileHash, SnapshotId};
use crate::index::RepoIndex;
use crate::ops::fetch::{fetch, locate, plan, Want};
use crate::ops::restore_local::{applied_mode, restore_dir, restore_link, restore_local, Existing};
use crate::ops::OpError;
use crate::progress::{Progress, Reporter};
use crate::repo::snapshot::{check_path, ChunkRef, Entry, Snapshot};
use crate::repo::Repository;
use crate::store::key::{key_at, object_key, UnholdableNames};
use crate::store::{Store, StoreUrl, Upload};

/// What to do with files already at the destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Overwrite {
    /// Leave every existing file as it is (listed as kept).
    Never,
    /// Replace files whose content differs (listed as replaced); leave identical ones
    /// untouched, not rewritten.
    #[default]
    Changed,
    /// Rewrite every file (those that existed are listed as replaced).
    Always,
}

/// An `--overwrite` value that is none of the choices.
#[derive(Debug, thiserror::Error)]
#[error("--overwrite {0:?} is not one of never, changed, always")]
pub struct OverwriteParseError(String);

impl std::str::FromStr for Overwrite {
    type Err = OverwriteParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "never" => Ok(Overwrite::Never),
            "changed" => Ok(Overwrite::Changed),
            "always" => Ok(Overwrite::Always),
            other => Err(OverwriteParseError(other.to_string())),
        }
    }
}

/// Whether setuid and setgid bits recorded in a snapshot are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SpecialModes {
    /// Dropped: a restore (often as root) never creates setuid or setgid files.
    #[default]
    Drop,
    /// Applied as recorded (`--preserve-special-modes`).
    Preserve,
}

/// How a restore treats the destination.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// What to do with files already at the destination.
    pub overwrite: Overwrite,
    /// Whether setuid and setgid bits are applied.
    pub special_modes: SpecialModes,
    /// `--include` / `--exclude`: the paths taken (all by default).
    pub selection: crate::ops::select::Selection,
}

/// What a restore wrote.
#[derive(Debug, Serialize)]
pub struct RestoreReport {
    /// The snapshot restored.
    pub snapshot: SnapshotId,
    /// The destination's URL or path.
    pub destination: String,
    /// The overwrite policy used.
    pub overwrite: Overwrite,
    /// Files in the snapshot (restored or already there).
    pub files: u64,
    /// Files and symlinks already exactly as recorded: left untouched, not rewritten.
    pub unchanged: u64,
    /// Existing files and symlinks that were overwritten.
    pub replaced: Vec<String>,
    /// Existing files and symlinks left as they were (`--overwrite never`).
    pub kept: Vec<String>,
    /// Bytes written to the destination.
    pub bytes_written: u64,
    /// Bytes read from the repository (frames, as stored).
    pub bytes_downloaded: u64,
    /// Chunks read and checked against their BLAKE3 id.
    pub chunks_verified: u64,
    /// Wall-clock time of the restore, in seconds.
    pub duration_secs: f64,
}

/// Where restored files go.
pub enum Destination {
    /// A local folder.
    Local(PathBuf),
    /// Plain objects under a store prefix.
    Objects(Store),
}

impl Destination {
    /// The destination as a path or URL, for messages.
    pub fn describe(&self) -> String {
        match self {
            Destination::Local(p) => StoreUrl::Local(p.clone()).to_string(),
            Destination::Objects(s) => s.url().to_string(),
        }
    }
}

/// Checks a snapshot against a destination before anything is written: no entry under one
/// of the snapshot's symlinks, no invalid link target, and (object destinations) every name
/// an object key.
pub(crate) fn check_before_writing(snap: &Snapshot, dest: &Destination) -> Result<(), OpError> {
    let links: HashSet<&str> = snap
        .entries
        .iter()
        .filter_map(|e| match e {
            Entry::Symlink { path, .. } => Some(path.as_str()),
            _ => None,
        })
        .collect();
    for e in &snap.entries {
        check_path(e.path()).map_err(|why| OpError::UnsafePath {
            path: e.path().into(),
            why,
        })?;
        if let Some(link) = linked_prefix(e.path(), &links) {
            return Err(OpError::ThroughSymlink {
                path: e.path().into(),
                link: format!("{link:?}"),
            });
        }
        if let Entry::Symlink { path, target } = e {
            if target.is_empty() || target.contains('\0') {
                return Err(OpError::BadSymlinkTarget {
                    path: path.clone(),
                    target: target.clone(),
                });
            }
        }
    }
    if let Destination::Objects(store) = dest {
        let names: Vec<_> = snap
            .entries
            .iter()
            .filter(|e| matches!(e, Entry::File { .. }))
            .filter_map(|e| key_at(store.url(), e.path()).err())
            .collect();
        if !names.is_empty() {
            return Err(UnholdableNames {
                dest: store.url().to_string(),
                names,
            }
            .into());
        }
    }
    Ok(())
}

/// Restores snapshot `id` of `repo` into `dest`.
pub async fn restore(
    repo: &Repository,
    rindex: &RepoIndex,
    id: SnapshotId,
    dest: &Destination,
    opts: RestoreOptions,
    progress: &Reporter,
) -> Result<RestoreReport, OpError> {
    let started = Instant::now();
    let snap = opts.selection.apply(&repo.read_snapshot(&id).await?)?;
    // Validate everything before writing anything.
    check_before_writing(&snap, dest)?;
    let present = present_objects(dest).await?;
    let bar = progress.bytes("restore", snap.bytes());
    let mut report = RestoreReport {
        snapshot: id,
        destination: dest.describe(),
        overwrite: opts.overwrite,
        files: 0,
        unchanged: 0,
        replaced: Vec::new(),
        kept: Vec::new(),
        bytes_written: 0,
        bytes_downloaded: 0,
        chunks_verified: 0,
        duration_secs: 0.0,
    };
    let mut dir_modes = Vec::new();
    let mut symlinks = Vec::new();
    for e in &snap.entries {
        match e {
            Entry::Dir { path, mode } => {
                if let Destination::Local(root) = dest {
                    let p = restore_dir(root, path)?;
                    dir_modes.push((p, applied_mode(*mode, opts.special_modes)));
                }
            }
            Entry::Symlink { path, target } => symlinks.push((path, target)),
            Entry::File {
                path,
                size,
                mode,
                mtime_ns,
                blake3,
                chunks,
                ..
            } => {
                let file = FileSpec {
                    path,
                    size: *size,
                    mode: *mode,
                    mtime_ns: *mtime_ns,
                    blake3,
                    chunks,
                };
                let (existing, downloaded, n) =
                    restore_file(repo, rindex, dest, &file, &present, &opts, &bar).await?;
                note(&mut report, path, existing);
                report.files += 1;
                if matches!(existing, Existing::Absent | Existing::Replaced) {
                    report.bytes_written += size;
                }
                report.bytes_downloaded += downloaded;
                report.chunks_verified += n;
            }
        }
    }
    match dest {
        Destination::Local(root) => {
            for (path, target) in symlinks {
                let existing = restore_link(root, path, target, opts.overwrite)?;
                note(&mut report, path, existing);
            }
            // Deepest first, so a read-only parent does not block its children.
            for (p, mode) in dir_modes.into_iter().rev() {
                std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode))
                    .map_err(|e| OpError::io(p.display(), e))?;
            }
        }
        Destination::Objects(_) => {
            if !symlinks.is_empty() {
                tracing::warn!(
                    count = symlinks.len(),
                    "object stores have no symlinks; skipped them"
                );
            }
        }
    }
    bar.finish();
    report.duration_secs = started.elapsed().as_secs_f64();
    Ok(report)
}

/// Object destinations: what is there already (one listing), by key with its size.
async fn present_objects(dest: &Destination) -> Result<HashMap<String, u64>, OpError> {
    Ok(match dest {
        Destination::Objects(store) => store
            .list(None)
            .await?
            .into_iter()
            .map(|m| (m.location.as_ref().to_string(), m.size))
            .collect(),
        Destination::Local(_) => HashMap::new(),
    })
}

/// Restores one file into `dest`; returns what was there before, the bytes downloaded and
/// the chunks verified.
async fn restore_file(
    repo: &Repository,
    rindex: &RepoIndex,
    dest: &Destination,
    file: &FileSpec<'_>,
    present: &HashMap<String, u64>,
    opts: &RestoreOptions,
    bar: &Progress,
) -> Result<(Existing, u64, u64), OpError> {
    Ok(match dest {
        Destination::Local(root) => {
            restore_local(
                repo,
                rindex,
                root,
                file,
                opts.overwrite,
                opts.special_modes,
                bar,
            )
            .await?
        }
        Destination::Objects(store) => {
            let existing =
                existing_object(store, file, present.get(file.path), opts.overwrite).await?;
            if matches!(existing, Existing::Same | Existing::Kept) {
                bar.inc(file.size);
                (existing, 0, 0)
            } else {
                let (d, n) = restore_object(repo, rindex, store, file, bar).await?;
                (existing, d, n)
            }
        }
    })
}

/// Counts or lists what was at a path before restore.
fn note(report: &mut RestoreReport, path: &str, existing: Existing) {
    match existing {
        Existing::Absent => {}
        Existing::Same => report.unchanged += 1,
        Existing::Replaced => report.replaced.push(path.to_string()),
        Existing::Kept => report.kept.push(path.to_string()),
    }
}

/// What an object destination already holds at a file's key, by the overwrite policy.
async fn existing_object(
    store: &Store,
    file: &FileSpec<'_>,
    size: Option<&u64>,
    overwrite: Overwrite,
) -> Result<Existing, OpError> {
    let Some(size) = size else {
        return Ok(Existing::Absent);
    };
    Ok(match overwrite {
        Overwrite::Never => Existing::Kept,
        Overwrite::Always => Existing::Replaced,
        Overwrite::Changed if *size != file.size => Existing::Replaced,
        Overwrite::Changed => {
            let path = object_key(file.path)?;
            let mut stream = store.get_stream(&path).await?;
            let mut h = blake3::Hasher::new();
            while let Some(b) = stream.next().await {
                h.update(&b?);
            }
            if FileHash::from(h.finalize()) == *file.blake3 {
                Existing::Same
            } else {
                Existing::Replaced
            }
        }
    })
}

pub(crate) struct FileSpec<'a> {
    pub path: &'a str,
    pub size: u64,
    pub mode: u32,
    pub mtime_ns: i64,
    pub blake3: &'a FileHash,
    pub chunks: &'a [ChunkRef],
}

/// The symlink among `links` that a proper prefix of `path` names, if any.
fn linked_prefix<'a>(path: &str, links: &HashSet<&'a str>) -> Option<&'a str> {
    path.match_indices('/')
        .find_map(|(i, _)| links.get(&path[..i]).copied())
}

/// Streams one file's chunks, verified, to `sink`; returns bytes downloaded (frames and the
/// delta bases read to decode them) and chunks.
///
/// Two halves run side by side: one fetches and decodes (`READS_IN_FLIGHT` reads, each
/// decoded on a blocking thread), the other hashes the file and writes it, in order, a few
/// chunks behind; so decoding, hashing and writing use every core.
pub(crate) async fn stream_file<F>(
    repo: &Repository,
    rindex: &RepoIndex,
    file: &FileSpec<'_>,
    bar: &Progress,
    mut sink: F,
) -> Result<(u64, u64), OpError>
where
    F: AsyncSink,
{
    let locations = locate(rindex, repo, file.chunks.iter().map(|c| c.0))?;
    let reads = plan(locations);
    let downloaded: u64 = reads.iter().map(|r| r.end - r.start).sum();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(WRITE_QUEUE);
    let produce = async move {
        let (mut n, mut bases_read) = (0u64, 0u64);
        let mut frames = std::pin::pin!(fetch(repo, rindex, reads, Want::Raw));
        while let Some(f) = frames.next().await {
            let f = f?;
            n += 1;
            bases_read += f.bases_read;
            if tx.send(f.raw.unwrap_or_default()).await.is_err() {
                // The writer stopped: its error is the one to report.
                break;
            }
        }
        Ok::<_, OpError>((n, bases_read))
    };
    let consume = async {
        let mut hasher = Some(blake3::Hasher::new());
        while let Some(raw) = rx.recv().await {
            let mut h = hasher.take().ok_or(OpError::Cancelled)?;
            let data = Bytes::from(raw);
            let shared = data.clone();
            // Hashing a chunk and writing it run side by side.
            let hashed = tokio::task::spawn_blocking(move || {
                h.update(&shared);
                h
            });
            let (hashed, written) = futures::join!(hashed, sink.write(data.clone()));
            hasher = Some(hashed.map_err(OpError::join)?);
            written?;
            bar.inc(data.len() as u64);
        }
        let h = hasher.ok_or(OpError::Cancelled)?;
        Ok::<_, OpError>(FileHash::from(h.finalize()))
    };
    let (counts, got) = futures::join!(produce, consume);
    let (got, (n, bases_read)) = (got?, counts?);
    if got != *file.blake3 {
        return Err(OpError::RestoredMismatch {
            path: file.path.into(),
            got,
            want: *file.blake3,
        });
    }
    Ok((downloaded + bases_read, n))
}

/// Decoded chunks waiting to be hashed and written (memory: this many chunks, plus the reads
/// in flight).
const WRITE_QUEUE: usize = 8;

/// Where `stream_file` puts verified bytes.
pub(crate) trait AsyncSink {
    async fn write(&mut self, data: Bytes) -> Result<(), OpError>;
}

impl<T: AsyncSink> AsyncSink for &mut T {
    async fn write(&mut self, data: Bytes) -> Result<(), OpError> {
        (**self).write(data).await
    }
}

/// Collects small files in memory, streams large ones as a multipart upload.
struct ObjectSink {
    small: Vec<u8>,
    upload: Option<Upload>,
}

impl AsyncSink for ObjectSink {
    async fn write(&mut self, data: Bytes) -> Result<(), OpError> {
        match &mut self.upload {
            Some(up) => {
                up.wait_for_capacity(4).await?;
                up.write(&data);
            }
            None => self.small.extend_from_slice(&data),
        }
        Ok(())
    }
}

/// Files up to this size are written with one PUT.
const SINGLE_PUT_MAX: u64 = 8 << 20;

async fn restore_object(
    repo: &Repository,
    rindex: &RepoIndex,
    store: &Store,
    file: &FileSpec<'_>,
    bar: &Progress,
) -> Result<(u64, u64), OpError> {
    let path = object_key(file.path)?;
    let upload = if file.size > SINGLE_PUT_MAX {
        Some(store.upload(&path, 8 << 20).await?)
    } else {
        None
    };
    let mut sink = ObjectSink {
        small: Vec::new(),
        upload,
    };
    let result = stream_file(repo, rindex, file, bar, &mut sink).await;
    match (result, sink.upload) {
        (Ok(r), Some(up)) => {
            up.finish().await?;
            Ok(r)
        }
        (Ok(r), None) => {
            store.put(&path, sink.small.into()).await?;
            Ok(r)
        }
        (Err(e), Some(up)) => {
            let _ = up.abort().await;
            Err(e)
        }
        (Err(e), None) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_under_symlinks_are_found() {
        let links = HashSet::from(["d/e/root", "up"]);
        assert_eq!(linked_prefix("up/file", &links), Some("up"));
        assert_eq!(linked_prefix("up", &links), None);
        assert_eq!(linked_prefix("upper/file", &links), None);
        assert_eq!(linked_prefix("d/e/root/x", &links), Some("d/e/root"));
    }

    #[test]
    fn overwrite_parses_its_three_choices() {
        assert_eq!("never".parse::<Overwrite>().unwrap(), Overwrite::Never);
        assert_eq!("changed".parse::<Overwrite>().unwrap(), Overwrite::Changed);
        assert_eq!("always".parse::<Overwrite>().unwrap(), Overwrite::Always);
        assert!("sometimes".parse::<Overwrite>().is_err());
    }
}
