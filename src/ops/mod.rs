//! The operations behind the CLI: push, restore, replicate, verify and listings. Each takes
//! opened stores and the local index and returns a serializable report.

pub mod fetch;
pub mod gc;
pub(crate) mod hasher;
pub mod push;
mod push_read;
pub mod repair;
pub mod replicate;
pub mod restore;
pub(crate) mod restore_local;
pub mod shard;
pub mod source;
pub mod sync;
pub mod targets;
pub mod uploader;
pub mod verify;

use crate::chunker::ChunkerParamsError;
use crate::index::IndexError;
use crate::repo::RepoError;
use crate::store::key::{KeyError, UnholdableNames};
use crate::store::StoreError;

/// Errors from an operation. Messages name the object concerned and, where known, the fix.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Index(#[from] IndexError),
    #[error(transparent)]
    Chunker(#[from] ChunkerParamsError),
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error(transparent)]
    Names(#[from] UnholdableNames),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: {problem}")]
    Source { path: String, problem: String },
    /// A source file kept changing while it was read (twice): nothing was recorded for it.
    /// Transient: once the writer is done, the same push succeeds.
    #[error("{path} changed while it was being read ({what}), twice in a row: no snapshot was written; push again once the file is complete (the daemon retries by itself)")]
    SourceChanged { path: String, what: String },
    /// A pack `ferry repair` marked damaged, or a gc marked for deletion, is needed by the
    /// snapshot about to be written. Transient: the rerun uploads those chunks anew.
    #[error("{} pack {pack} in {repo} {} while this run relied on it; run again (the affected chunks will be uploaded anew)", .why.who(), .why.what())]
    PackWithdrawn {
        pack: String,
        repo: String,
        why: Withdrawn,
    },
    #[error("refusing to restore {path:?}: {why}")]
    Unsafe { path: String, why: String },
    #[error("{a} and {b} use different chunker parameters: push to them separately, or replicate between repositories with the same parameters")]
    ChunkerMismatch { a: String, b: String },
    #[error("{0}")]
    Invalid(String),
    #[error("internal task failed: {0}")]
    Join(String),
    #[error("cancelled")]
    Cancelled,
}

impl OpError {
    /// Whether trying again may help (the daemon retries transient failures with backoff).
    pub fn transience(&self) -> crate::error::Transience {
        use crate::error::Transience::{Permanent, Transient};
        match self {
            OpError::Store(s) | OpError::Repo(RepoError::Store(s)) => s.transience(),
            OpError::Repo(RepoError::RefContention { .. }) => Transient,
            OpError::Repo(_) => Permanent,
            OpError::Index(_)
            | OpError::Join(_)
            | OpError::Cancelled
            | OpError::SourceChanged { .. }
            | OpError::PackWithdrawn { .. } => Transient,
            OpError::Io { source, .. } => match source.kind() {
                std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Permanent,
                _ => Transient,
            },
            OpError::Chunker(_)
            | OpError::Source { .. }
            | OpError::Unsafe { .. }
            | OpError::ChunkerMismatch { .. }
            | OpError::Key(_)
            | OpError::Names(_)
            | OpError::Invalid(_) => Permanent,
        }
    }
}

/// Why a pack's chunks may no longer be relied on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Withdrawn {
    /// `gc/<pack id>`: a gc will delete it.
    GcMark,
    /// `bad/<pack id>`: `ferry repair` found it damaged.
    Damaged,
}

impl Withdrawn {
    fn who(&self) -> &'static str {
        match self {
            Withdrawn::GcMark => "a concurrent gc marked",
            Withdrawn::Damaged => "`ferry repair` marked",
        }
    }

    fn what(&self) -> &'static str {
        match self {
            Withdrawn::GcMark => "for deletion",
            Withdrawn::Damaged => "as damaged",
        }
    }
}

impl OpError {
    pub(crate) fn join(e: tokio::task::JoinError) -> Self {
        if e.is_panic() {
            std::panic::resume_unwind(e.into_panic());
        }
        OpError::Join(e.to_string())
    }

    pub(crate) fn io(path: impl std::fmt::Display, source: std::io::Error) -> Self {
        OpError::Io {
            path: path.to_string(),
            source,
        }
    }
}

/// Ratio `a / b`, or 1 when `b` is zero.
pub(crate) fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}
