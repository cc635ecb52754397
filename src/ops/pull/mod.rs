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
//! rest is read from the store, as coalesced range reads. A delta frame fetched from the
//! store is decoded against its base taken from an earlier version (checked the same way;
//! read from the store when no good local copy exists), so a delta step costs its deltas. A pull killed at any point leaves
//! `current` pointing at a complete version; the rerun keeps the files it finished.

mod bases;
mod dry;
mod layout;
mod live;
mod writer;

pub use dry::pull_dry;
pub use live::{live_version, LiveVersion};

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::ids::SnapshotId;
use crate::index::RepoIndex;
use crate::ops::restore::{check_before_writing, Destination, SpecialModes};
use crate::ops::select::Selection;
use crate::ops::OpError;
use crate::progress::Reporter;
use crate::repo::snapshot::Snapshot;
use crate::repo::RefEntry;
use crate::repo::Repository;

use self::layout::Layout;
use self::writer::VersionWriter;

/// How a pull behaves.
#[derive(Debug, Clone)]
pub struct PullOptions {
    /// Complete versions kept (the live one always among them); at least 1.
    pub keep: usize,
    /// `--include` / `--exclude`.
    pub selection: Selection,
    /// Whether setuid and setgid bits are applied.
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
    /// The ref pulled.
    pub name: String,
    /// Position of the pulled entry in the ref's log.
    pub seq: u64,
    /// The snapshot pulled.
    pub snapshot: SnapshotId,
    /// The published version's folder (`DIR/versions/<seq>-<short id>`).
    pub version: String,
    /// False when `current` already was this version: nothing was read or written.
    pub published: bool,
    /// Files in the version.
    pub files: u64,
    /// Bytes of the version's files.
    pub bytes: u64,
    /// Bytes read from the store (frames, as stored).
    pub bytes_read_from_store: u64,
    /// Bytes taken from earlier versions in DIR (each chunk verified), or kept from an
    /// interrupted pull of the same version.
    pub bytes_reused: u64,
    /// Bytes of delta bases decoded from earlier versions in DIR (each verified) instead of
    /// being read from the store: the new step's delta frames are read, their bases are not.
    pub delta_bases_reused: u64,
    /// Chunks read from the store.
    pub chunks_fetched: u64,
    /// Chunks taken from earlier versions or an interrupted pull.
    pub chunks_reused: u64,
    /// Versions removed beyond `--keep`.
    pub removed: Vec<String>,
    /// Wall-clock time of the pull, in seconds.
    pub duration_secs: f64,
    /// A dry run (`--dry-run`): nothing was read or written but the ref log, the snapshot
    /// and pack indexes; the counts above are the forecast, priced here.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<crate::ops::egress::DryRun>,
}

impl PullReport {
    /// The report of pulling `entry` (its snapshot `snap`, as selected) into `version`,
    /// before anything is read: nothing published, every count 0.
    fn start(entry: &RefEntry, snap: &Snapshot, version: std::path::PathBuf) -> Self {
        Self {
            name: entry.name.clone(),
            seq: entry.seq,
            snapshot: entry.snapshot,
            version: version.display().to_string(),
            published: false,
            files: snap.files() as u64,
            bytes: snap.bytes(),
            bytes_read_from_store: 0,
            bytes_reused: 0,
            delta_bases_reused: 0,
            chunks_fetched: 0,
            chunks_reused: 0,
            removed: Vec::new(),
            duration_secs: 0.0,
            dry_run: None,
        }
    }
}

/// Why a pull cannot start.
#[derive(Debug, thiserror::Error)]
pub enum PullError {
    /// Another pull holds the destination's lock.
    #[error("another ferry pull into {dir} is running (lock {lock}); wait for it, or pull into another folder")]
    Busy {
        /// The destination folder.
        dir: String,
        /// The lock file.
        lock: String,
    },
    /// `DIR/current` exists but is not a symlink into `versions/`.
    #[error("{path} is not a symlink ferry made (it should point into versions/); move it away and pull again")]
    ForeignCurrent {
        /// The `current` path.
        path: String,
    },
    /// `--keep 0`.
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
    progress: &Reporter,
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
    let mut report = PullReport::start(&entry, &snap, layout.versions.join(&version));
    let current = layout.current()?;
    if current.as_deref() != Some(version.as_str()) || !layout.versions.join(&version).is_dir() {
        let partial = layout.versions.join(format!(".partial-{version}"));
        check_before_writing(&snap, &Destination::Local(partial.clone()))?;
        let sources = layout.local_chunks(current.as_deref())?;
        let bar = progress.bytes("pull", snap.bytes());
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
