//! The operations behind the CLI: push, restore, replicate, verify and listings. Each takes
//! opened stores and the local index and returns a serializable report.

pub mod fetch;
pub mod gc;
pub(crate) mod hasher;
pub mod push;
pub mod replicate;
pub mod restore;
pub(crate) mod restore_local;
pub mod shard;
pub mod source;
pub mod sync;
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
