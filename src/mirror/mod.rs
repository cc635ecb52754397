//! `ferry mirror`: makes a destination prefix hold the same plain objects as a source (a local
//! folder or a store prefix), byte-identical, for consumers that cannot run ferry. Sends only
//! what changed:
//!
//! * an unchanged file (same size, mtime and source etag as last time, and the destination
//!   object still carrying the etag ferry got back) costs nothing: no read, no request but
//!   the destination listing;
//! * a new file is uploaded whole;
//! * a changed file is cut by the chunker and planned against what the destination holds
//!   (`plan.rs`): on Azure only blocks the blob lacks are staged and `Put Block List`
//!   re-commits the rest; on S3 a multipart upload copies unchanged ranges of the previous
//!   object server-side ([`crate::store::delta`]). Local folders get whole files (written atomically).
//!
//! Safety: a write is atomic (readers see the old object until the commit) and pinned to the
//! etag it was planned against; if the destination changed behind ferry's back, the file is
//! uploaded whole. The whole-file BLAKE3 is stored as object metadata, which
//! [`verify_mirror`] compares.
//!
//! The module is split by job: `decide` is the per-file policy (pure, property-tested);
//! `run.rs` the orchestration (listing, the unchanged fast path, files in flight, deletes,
//! the report); `file.rs` one file's journey (cut, probe, decision, write, record);
//! `parts.rs` the I/O adapters (reading the source and its parts, checked against the cut);
//! `local.rs` whole files into local folders; `verify.rs` `verify --mirror`.

pub(crate) mod decide;
mod file;
mod local;
mod parts;
pub(crate) mod plan;
mod run;
mod verify;

use std::time::Duration;

use object_store::path::Path as ObjPath;
use serde::Serialize;

use crate::ops::OpError;
use crate::store::delta::NativeError;
use crate::store::key::{key_at, KeyError};
use crate::store::Store;

pub use run::mirror_with;
pub use verify::{verify_mirror, Mismatch, VerifyMirrorReport};

/// Files mirrored at once.
const FILES_IN_FLIGHT: usize = 4;

/// What to do beyond copying: the command's choices.
#[derive(Debug, Clone, Copy, Default)]
pub struct MirrorOptions {
    /// Remove destination objects the source no longer has.
    pub delete: bool,
    /// Plan and report, change nothing.
    pub dry_run: bool,
    /// Read and hash every source file, even those the index records as unchanged.
    pub rehash: bool,
    /// Mirror a source that holds an encrypted ferry repository anyway (its objects are
    /// ciphertext: the mirror would hold the repository's objects, not plain files).
    pub allow_encrypted_source: bool,
}

/// The environment variable [`MirrorSettings::stale_uploads_after`] is read from.
pub const STALE_UPLOADS_VAR: &str = "FERRY_MIRROR_STALE_UPLOADS";
/// [`MirrorSettings::stale_uploads_after`] when the variable is not set.
pub const DEFAULT_STALE_UPLOADS: Duration = Duration::from_secs(3600);

/// Settings of the process rather than of one command, resolved once at the edge
/// ([`MirrorSettings::from_env`]) and passed down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MirrorSettings {
    /// How old an unfinished upload of a key must be to count as abandoned and be aborted
    /// (one whose id the index recorded is aborted whatever its age). Long enough not to
    /// abort a concurrent writer's live upload.
    pub stale_uploads_after: Duration,
}

impl Default for MirrorSettings {
    fn default() -> Self {
        MirrorSettings {
            stale_uploads_after: DEFAULT_STALE_UPLOADS,
        }
    }
}

impl MirrorSettings {
    /// Reads `FERRY_MIRROR_STALE_UPLOADS` (a humantime duration, e.g. `30m`) from the
    /// process environment.
    pub fn from_env() -> Self {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// [`MirrorSettings::from_env`] over any variable lookup. A value that is not a
    /// duration leaves the default (and says so in the log).
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Self {
        let mut settings = MirrorSettings::default();
        if let Some(v) = var(STALE_UPLOADS_VAR) {
            match humantime::parse_duration(v.trim()) {
                Ok(d) => settings.stale_uploads_after = d,
                Err(e) => tracing::warn!(
                    variable = STALE_UPLOADS_VAR,
                    value = %v,
                    error = %e,
                    default = %humantime::format_duration(DEFAULT_STALE_UPLOADS),
                    "not a duration: using the default"
                ),
            }
        }
        settings
    }
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
    /// The object's key below the destination prefix.
    pub path: String,
    /// What was done to it.
    pub action: Action,
    /// The file's size in bytes.
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
    /// The source's URL.
    pub source: String,
    /// The destination's URL.
    pub dest: String,
    /// Whether this was a dry run (nothing written).
    pub dry_run: bool,
    /// Files in the source.
    pub files: u64,
    /// Files the destination already held as they are.
    pub unchanged: u64,
    /// Objects created.
    pub created: u64,
    /// Objects updated from kept parts of their previous version plus new bytes.
    pub updated: u64,
    /// Objects uploaded whole over a previous version.
    pub replaced: u64,
    /// Objects already holding the content, only recorded.
    pub adopted: u64,
    /// Objects deleted (`--delete`).
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
    /// One entry per object not left unchanged.
    pub actions: Vec<FileAction>,
}

/// The key of `rel` at `dest`, exactly the name, or why `dest` cannot hold it.
fn dest_holds(dest: &Store, rel: &str) -> Result<ObjPath, KeyError> {
    key_at(dest.url(), rel)
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

fn native_err(e: NativeError) -> OpError {
    OpError::Native(e)
}

#[cfg(test)]
mod tests {
    use super::*;

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

    #[test]
    fn stale_upload_age_is_read_once_from_the_environment() {
        let with = |v: Option<&str>| {
            MirrorSettings::from_vars(|name| {
                assert_eq!(name, STALE_UPLOADS_VAR);
                v.map(str::to_string)
            })
            .stale_uploads_after
        };
        assert_eq!(with(None), Duration::from_secs(3600));
        assert_eq!(with(Some("0s")), Duration::ZERO);
        assert_eq!(with(Some(" 30m ")), Duration::from_secs(1800));
        assert_eq!(with(Some("soon")), DEFAULT_STALE_UPLOADS);
    }
}
