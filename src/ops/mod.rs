//! The operations behind the CLI: push, restore, replicate, verify and listings. Each takes
//! opened stores and the local index and returns a serializable report.

pub(crate) mod delta_base;
pub mod fetch;
pub mod gc;
pub(crate) mod hasher;
pub mod pull;
pub mod push;
mod push_delta;
mod push_read;
pub mod repair;
pub mod replicate;
pub mod restore;
pub(crate) mod restore_local;
pub mod select;
pub mod shard;
pub mod source;
pub mod sync;
pub mod targets;
pub mod uploader;
pub mod verify;

use crate::chunker::ChunkerParamsError;
use crate::ids::ChunkId;
use crate::index::IndexError;
use crate::repo::RepoError;
use crate::store::delta::NativeError;
use crate::store::key::{KeyError, UnholdableNames};
use crate::store::StoreError;

/// Errors from an operation. Messages name the object concerned and, where known, the fix;
/// [`OpError::transience`] says whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    #[error(transparent)]
    Repo(#[from] RepoError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A native cloud write (block lists, part copies) failed.
    #[error(transparent)]
    Native(#[from] NativeError),
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
    /// A source object whose key is no relative path ferry can record (`..`, empty parts).
    #[error("{path}: {why}: ferry records relative paths only; rename the object")]
    SourcePath { path: String, why: &'static str },
    /// A source object whose key no store can hold as it is.
    #[error("{path}: {source}")]
    SourceKey {
        path: String,
        #[source]
        source: KeyError,
    },
    /// A source file or folder whose name is not UTF-8.
    #[error("{path}: file name is not UTF-8; ferry stores UTF-8 paths: rename it")]
    NonUtf8Name { path: String },
    /// A source symlink whose target is not UTF-8.
    #[error("{path}: symlink target is not UTF-8; ferry stores UTF-8 paths: point it elsewhere")]
    NonUtf8Target { path: String },
    /// A source file kept changing while it was read (twice): nothing was recorded for it.
    /// Transient: once the writer is done, the same push succeeds.
    #[error("{path} changed while it was being read ({what}), twice in a row: no snapshot was written; push again once the file is complete (the daemon retries by itself)")]
    SourceChanged { path: String, what: String },
    /// A file mirrored had another size than listed once read. Transient: the rerun lists
    /// it again.
    #[error("{path}: it changed while being read ({listed} bytes listed, {read} read): rerun the mirror")]
    MirrorSourceChanged {
        path: String,
        listed: u64,
        read: u64,
    },
    /// A pack `ferry repair` marked damaged, or a gc marked for deletion, is needed by the
    /// snapshot about to be written. Transient: the rerun uploads those chunks anew.
    #[error("{} pack {pack} in {repo} {} while this run relied on it; run again (the affected chunks will be uploaded anew)", .why.who(), .why.what())]
    PackWithdrawn {
        pack: String,
        repo: String,
        why: Withdrawn,
    },
    /// A restored file's bytes hash to another BLAKE3 than the snapshot records.
    #[error("{path}: restored content hashes to {got}, the snapshot says {want}")]
    RestoredMismatch {
        path: String,
        got: ChunkId,
        want: ChunkId,
    },
    #[error("refusing to restore {path:?}: {why}")]
    Unsafe { path: String, why: String },
    #[error("{a} and {b} use different chunker parameters: push to them separately, or replicate between repositories with the same parameters")]
    ChunkerMismatch { a: String, b: String },
    /// `init --pack-size` outside [`crate::repo::config::PACK_SIZE_RANGE`].
    #[error(
        "pack size {size} is out of range: choose between 1MiB and 1GiB (e.g. --pack-size 32MiB)"
    )]
    PackSizeOutOfRange { size: u64 },
    /// A push to no repository.
    #[error("push takes 1 or more repositories, not {count}")]
    TargetCount { count: usize },
    /// A repository inside the source it would push (or the reverse).
    #[error("cannot push {source_url} into {repo}: one is inside the other; choose a repository outside the source")]
    RepoInsideSource { source_url: String, repo: String },
    /// A mirror destination inside its source (or the reverse).
    #[error("cannot mirror {source_url} to {dest}: one is inside the other; choose a destination outside the source")]
    MirrorInsideSource { source_url: String, dest: String },
    /// `mirror --delete` from a source that lists nothing: most likely an unmounted folder or
    /// a wrong prefix, not a wish to delete everything.
    #[error("{source_url} lists no files: refusing --delete, which would remove all {objects} objects under {dest} (is the folder mounted, the prefix right?)")]
    DeleteEverything {
        source_url: String,
        objects: usize,
        dest: String,
    },
    /// `forget --keep-last 0` with `--keep-every`.
    #[error(
        "deleting a ref keeps nothing: drop --keep-every, or keep the newest with --keep-last 1"
    )]
    KeepEveryWithoutKeep,
    #[error("--keep-every must be at least 1")]
    KeepEveryZero,
    /// `ferry commit` of a run no shard pushed to.
    #[error("run {run:?} of ref {name:?} has no partial snapshots in {repo}: push with --shard I/N --run {run} first")]
    NoPartials {
        run: String,
        name: String,
        repo: String,
    },
    /// The partial snapshots of one sharded push disagree on N.
    #[error("run {run:?} of ref {name:?} in {repo} mixes shard counts: give every shard of a run the same N, or start a new run id")]
    MixedShardCounts {
        run: String,
        name: String,
        repo: String,
    },
    /// A sharded replication's shard given another N than its run's plan.
    #[error("run {run:?} in {repo} was planned with {planned} shards, not {given}: give every shard of a run the same N, or start a new run id")]
    ShardCountMismatch {
        run: String,
        repo: String,
        planned: u32,
        given: u32,
    },
    /// A sharded replication's run id reused for another source repository.
    #[error("run {run:?} in {repo} replicates another source repository than {from}: give each replication its own run id")]
    RunFromOtherSource {
        run: String,
        repo: String,
        from: String,
    },
    /// Every shard of a sharded replication reported done, yet a chunk is missing: the
    /// owning shard's copy was lost (or its pack marked) after it reported.
    #[error("chunk {chunk} is missing from {repo} although every shard of run {run:?} reported done: rerun shard {owner}/{count} with --run {run}")]
    ShardChunkMissing {
        chunk: ChunkId,
        repo: String,
        run: String,
        owner: u32,
        count: u32,
    },
    /// A broken internal invariant: a bug in ferry, not in the input.
    #[error("internal error: {0}; please report it")]
    Bug(&'static str),
    /// A blocking or spawned task was cancelled (a panic is resumed, never turned into this).
    #[error("internal task failed: {0}")]
    Join(#[source] tokio::task::JoinError),
    #[error("cancelled")]
    Cancelled,
    #[error(transparent)]
    Pull(#[from] pull::PullError),
    #[error(transparent)]
    Select(#[from] select::SelectError),
}

impl OpError {
    /// Whether trying again may help (the daemon retries transient failures with backoff).
    /// Decided by what the error is: the store's and the native writer's own verdict, a
    /// race (contention on a ref, a file being written, a concurrent gc), a cancelled
    /// task; everything the user must fix first is permanent.
    pub fn transience(&self) -> crate::error::Transience {
        use crate::error::Transience::{Permanent, Transient};
        match self {
            OpError::Store(s) | OpError::Repo(RepoError::Store(s)) => s.transience(),
            OpError::Native(n) => native_transience(n),
            OpError::Repo(RepoError::RefContention { .. }) => Transient,
            OpError::Repo(_) => Permanent,
            OpError::Index(_)
            | OpError::Join(_)
            | OpError::Cancelled
            | OpError::SourceChanged { .. }
            | OpError::MirrorSourceChanged { .. }
            | OpError::PackWithdrawn { .. } => Transient,
            OpError::Io { source, .. } => io_transience(source),
            OpError::Chunker(_)
            | OpError::SourcePath { .. }
            | OpError::SourceKey { .. }
            | OpError::NonUtf8Name { .. }
            | OpError::NonUtf8Target { .. }
            | OpError::RestoredMismatch { .. }
            | OpError::Unsafe { .. }
            | OpError::ChunkerMismatch { .. }
            | OpError::Key(_)
            | OpError::Names(_)
            | OpError::PackSizeOutOfRange { .. }
            | OpError::TargetCount { .. }
            | OpError::RepoInsideSource { .. }
            | OpError::MirrorInsideSource { .. }
            | OpError::DeleteEverything { .. }
            | OpError::KeepEveryWithoutKeep
            | OpError::KeepEveryZero
            | OpError::NoPartials { .. }
            | OpError::MixedShardCounts { .. }
            | OpError::ShardCountMismatch { .. }
            | OpError::RunFromOtherSource { .. }
            | OpError::ShardChunkMissing { .. }
            | OpError::Bug(_) => Permanent,
            OpError::Pull(pull::PullError::Busy { .. }) => Transient,
            OpError::Pull(_) | OpError::Select(_) => Permanent,
        }
    }
}

/// A missing file or a refused permission stays so until someone acts; anything else (a
/// full disk being cleaned, an interrupted read) may pass.
fn io_transience(e: &std::io::Error) -> crate::error::Transience {
    use crate::error::Transience::{Permanent, Transient};
    match e.kind() {
        std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Permanent,
        _ => Transient,
    }
}

/// A native write's failure: the store decided it where the answer was seen, except that a
/// read of the source follows the I/O rule (a vanished file will not come back by itself).
fn native_transience(e: &NativeError) -> crate::error::Transience {
    match e {
        NativeError::Source { source, .. } => io_transience(source),
        other => other.transience(),
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
        OpError::Join(e)
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
