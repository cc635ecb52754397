//! The operations behind the CLI: push, restore, replicate, verify and listings. Each takes
//! opened stores and the local index and returns a serializable report.

pub(crate) mod delta_base;
pub mod egress;
pub(crate) mod fetch;
pub mod gc;
pub(crate) mod hasher;
pub mod pull;
pub mod push;
mod push_delta;
mod push_finish;
mod push_read;
pub(crate) mod ref_log;
pub(crate) mod repair;
pub(crate) mod replicate;
pub(crate) mod replicate_dry;
pub(crate) mod reseal;
pub mod restore;
pub(crate) mod restore_local;
pub mod select;
pub mod shard;
pub(crate) mod source;
pub(crate) mod sync;
pub(crate) mod targets;
pub(crate) mod uploader;
pub(crate) mod verify;

use crate::chunker::ChunkerParamsError;
use crate::ids::{ChunkId, FileHash};
use crate::index::IndexError;
use crate::repo::RepoError;
use crate::store::delta::NativeError;
use crate::store::key::{KeyError, UnholdableNames};
use crate::store::StoreError;

/// Errors from an operation. Messages name the object concerned and, where known, the fix;
/// [`OpError::transience`] says whether trying again may help.
#[derive(Debug, thiserror::Error)]
pub enum OpError {
    /// A repository object could not be read, written or trusted.
    #[error(transparent)]
    Repo(#[from] RepoError),
    /// A store call failed (status and transience inside).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A native cloud write (block lists, part copies) failed.
    #[error(transparent)]
    Native(#[from] NativeError),
    /// The local index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// The repository's chunker parameters are invalid.
    #[error(transparent)]
    Chunker(#[from] ChunkerParamsError),
    /// An object key no store can hold.
    #[error(transparent)]
    Key(#[from] KeyError),
    /// Source names the destination cannot hold, listed after the rest of the run.
    #[error(transparent)]
    Names(#[from] UnholdableNames),
    /// A local file or folder could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or folder, as the user named it.
        path: String,
        /// What the OS said.
        #[source]
        source: std::io::Error,
    },
    /// A source object whose key is no relative path ferry can record (`..`, empty parts).
    #[error("{path}: {why}: ferry records relative paths only; rename the object")]
    SourcePath {
        /// The object's key in the source.
        path: String,
        /// Which part of the key is not a relative path.
        why: &'static str,
    },
    /// A source object whose key no store can hold as it is.
    #[error("{path}: {source}")]
    SourceKey {
        /// The object's key in the source.
        path: String,
        /// Why no store can hold it.
        #[source]
        source: KeyError,
    },
    /// A source file or folder whose name is not UTF-8.
    #[error("{path}: file name is not UTF-8; ferry stores UTF-8 paths: rename it")]
    NonUtf8Name {
        /// The path as the OS gave it (lossily decoded).
        path: String,
    },
    /// A source symlink whose target is not UTF-8.
    #[error("{path}: symlink target is not UTF-8; ferry stores UTF-8 paths: point it elsewhere")]
    NonUtf8Target {
        /// The symlink's path.
        path: String,
    },
    /// A source file kept changing while it was read (twice): nothing was recorded for it.
    /// Transient: once the writer is done, the same push succeeds.
    #[error("{path} changed while it was being read ({what}), twice in a row: no snapshot was written; push again once the file is complete (the daemon retries by itself)")]
    SourceChanged {
        /// The file's path in the source.
        path: String,
        /// What differed between the looks before and after the read.
        what: String,
    },
    /// A file mirrored had another size than listed once read. Transient: the rerun lists
    /// it again.
    #[error("{path}: it changed while being read ({listed} bytes listed, {read} read): rerun the mirror")]
    MirrorSourceChanged {
        /// The file's path in the source.
        path: String,
        /// Its size in the listing, in bytes.
        listed: u64,
        /// The bytes actually read.
        read: u64,
    },
    /// A pack `ferry repair` marked damaged, or a gc marked for deletion, is needed by the
    /// snapshot about to be written. Transient: the rerun uploads those chunks anew.
    #[error("{} pack {pack} in {repo} {} while this run relied on it; run again (the affected chunks will be uploaded anew)", .why.who(), .why.what())]
    PackWithdrawn {
        /// The pack id.
        pack: String,
        /// The repository's URL.
        repo: String,
        /// Damaged (`bad/`) or gc-marked (`gc/`).
        why: Withdrawn,
    },
    /// A restored file's bytes hash to another BLAKE3 than the snapshot records.
    #[error("{path}: restored content hashes to {got}, the snapshot says {want}")]
    RestoredMismatch {
        /// The restored file's path in the snapshot.
        path: String,
        /// BLAKE3 of the bytes written.
        got: FileHash,
        /// BLAKE3 the snapshot records for the file.
        want: FileHash,
    },
    /// A snapshot path restore refuses to write: absolute, `..`, empty parts, NUL.
    #[error("refusing to restore {path:?}: {why}")]
    UnsafePath {
        /// The entry's path as recorded in the snapshot.
        path: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A snapshot entry below a symlink (the snapshot's own, or one at the destination).
    #[error("refusing to restore {path:?}: {link} is a symlink; restore never writes through one")]
    ThroughSymlink {
        /// The entry's path as recorded in the snapshot.
        path: String,
        /// The symlink, as the message shows it.
        link: String,
    },
    /// A snapshot symlink with an empty target or one containing NUL.
    #[error("refusing to restore {path:?}: symlink target {target:?} is invalid")]
    BadSymlinkTarget {
        /// The symlink's path as recorded in the snapshot.
        path: String,
        /// Its recorded target.
        target: String,
    },
    /// A folder at the destination where the snapshot has a file or symlink.
    #[error(
        "refusing to restore {path:?}: {folder} is a folder; move it away or restore elsewhere"
    )]
    FolderInTheWay {
        /// The entry's path as recorded in the snapshot.
        path: String,
        /// The folder at the destination.
        folder: String,
    },
    /// `push --deltas N` asked for chains deeper than a target repository allows.
    #[error("--deltas {asked} is deeper than {url} allows ({max}): a push may only lower the repository's delta depth (0 stores changed chunks whole); the repository's bound is set by `ferry init --deltas N`")]
    DeltaDepthAboveRepository {
        /// The repository's URL.
        url: String,
        /// The depth the push asked for.
        asked: u8,
        /// The repository's `max_depth` (0 when it stores no deltas).
        max: u8,
    },
    /// Two repositories of one push cut chunks differently, so one chunk list cannot serve both.
    #[error("{a} and {b} use different chunker parameters: push to them separately, or replicate between repositories with the same parameters")]
    ChunkerMismatch {
        /// The first repository's URL.
        a: String,
        /// The repository whose parameters differ.
        b: String,
    },
    /// Two repositories of one push (or replication) seal or name chunks differently: one
    /// plain and one encrypted, or encrypted under different data keys.
    #[error("{a} and {b} are not encrypted alike (one plain and one encrypted, or under different data keys): chunks are named and sealed per data key, so push to them separately; `ferry replicate` between them re-encrypts, but not sharded or as a dry run")]
    KeyMismatch {
        /// The first repository's URL.
        a: String,
        /// The repository sealed otherwise.
        b: String,
    },
    /// `ferry mirror` of a location holding an encrypted repository, not asked for.
    #[error("{location} holds an encrypted ferry repository: a mirror would copy its objects as they are (ciphertext, readable by no consumer); to publish plain files, `ferry restore` a snapshot to the destination, or pass --allow-encrypted-source to copy the repository's objects anyway")]
    EncryptedMirrorSource {
        /// The mirror's source.
        location: String,
    },
    /// `init --pack-size` outside [`crate::repo::config::PACK_SIZE_RANGE`].
    #[error(
        "pack size {size} is out of range: choose between 1MiB and 1GiB (e.g. --pack-size 32MiB)"
    )]
    PackSizeOutOfRange {
        /// The requested pack size, in bytes.
        size: u64,
    },
    /// A push to no repository.
    #[error("push takes 1 or more repositories, not {count}")]
    TargetCount {
        /// How many repositories were given.
        count: usize,
    },
    /// A repository inside the source it would push (or the reverse).
    #[error("cannot push {source_url} into {repo}: one is inside the other; choose a repository outside the source")]
    RepoInsideSource {
        /// The source's URL.
        source_url: String,
        /// The repository's URL.
        repo: String,
    },
    /// A mirror destination inside its source (or the reverse).
    #[error("cannot mirror {source_url} to {dest}: one is inside the other; choose a destination outside the source")]
    MirrorInsideSource {
        /// The source's URL.
        source_url: String,
        /// The destination's URL.
        dest: String,
    },
    /// `mirror --delete` from a source that lists nothing: most likely an unmounted folder or
    /// a wrong prefix, not a wish to delete everything.
    #[error("{source_url} lists no files: refusing --delete, which would remove all {objects} objects under {dest} (is the folder mounted, the prefix right?)")]
    DeleteEverything {
        /// The source's URL.
        source_url: String,
        /// How many objects the destination holds under its prefix.
        objects: usize,
        /// The destination's URL.
        dest: String,
    },
    /// `forget --keep-last 0` with `--keep-every`.
    #[error(
        "deleting a ref keeps nothing: drop --keep-every, or keep the newest with --keep-last 1"
    )]
    KeepEveryWithoutKeep,
    /// `forget --keep-every 0`: every step needs at least one snapshot between kept ones.
    #[error("--keep-every must be at least 1")]
    KeepEveryZero,
    /// `ferry commit` of a run no shard pushed to.
    #[error("run {run:?} of ref {name:?} has no partial snapshots in {repo}: push with --shard I/N --run {run} first")]
    NoPartials {
        /// The run id.
        run: String,
        /// The ref name.
        name: String,
        /// The repository's URL.
        repo: String,
    },
    /// The partial snapshots of one sharded push disagree on N.
    #[error("run {run:?} of ref {name:?} in {repo} mixes shard counts: give every shard of a run the same N, or start a new run id")]
    MixedShardCounts {
        /// The run id.
        run: String,
        /// The ref name.
        name: String,
        /// The repository's URL.
        repo: String,
    },
    /// A sharded replication's shard given another N than its run's plan.
    #[error("run {run:?} in {repo} was planned with {planned} shards, not {given}: give every shard of a run the same N, or start a new run id")]
    ShardCountMismatch {
        /// The run id.
        run: String,
        /// The target repository's URL.
        repo: String,
        /// The shard count in the run's plan.
        planned: u32,
        /// The shard count this shard was started with.
        given: u32,
    },
    /// A sharded replication's run id reused for another source repository.
    #[error("run {run:?} in {repo} replicates another source repository than {from}: give each replication its own run id")]
    RunFromOtherSource {
        /// The run id.
        run: String,
        /// The target repository's URL.
        repo: String,
        /// The source repository this shard was given.
        from: String,
    },
    /// Every shard of a sharded replication reported done, yet a chunk is missing: the
    /// owning shard's copy was lost (or its pack marked) after it reported.
    #[error("chunk {chunk} is missing from {repo} although every shard of run {run:?} reported done: rerun shard {owner}/{count} with --run {run}")]
    ShardChunkMissing {
        /// The missing chunk.
        chunk: ChunkId,
        /// The target repository's URL.
        repo: String,
        /// The run id.
        run: String,
        /// The shard (1-based) whose part of the plan holds the chunk.
        owner: u32,
        /// The run's shard count.
        count: u32,
    },
    /// A chunk stored as a delta whose base chunk cannot be read (damaged, missing or not
    /// reachable right now: [`OpError::transience`] follows the base's error).
    #[error("{object}: chunk {chunk} at offset {offset} is stored as a delta against base chunk {base}, which cannot be read: {source}")]
    DeltaBaseUnreadable {
        /// The pack's URL.
        object: String,
        /// The chunk the delta frame holds.
        chunk: ChunkId,
        /// The frame's offset in the pack.
        offset: u64,
        /// The base chunk.
        base: ChunkId,
        /// Why the base cannot be read.
        source: Box<OpError>,
    },
    /// A broken internal invariant: a bug in ferry, not in the input.
    #[error("internal error: {0}; please report it")]
    Bug(&'static str),
    /// A blocking or spawned task was cancelled (a panic is resumed, never turned into this).
    #[error("internal task failed: {0}")]
    Join(#[source] tokio::task::JoinError),
    /// The caller cancelled the operation (daemon shutdown).
    #[error("cancelled")]
    Cancelled,
    /// `ferry pull` refused or failed (its destination folder named inside).
    #[error(transparent)]
    Pull(#[from] pull::PullError),
    /// An `--include` / `--exclude` glob is invalid or matches nothing.
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
            OpError::DeltaBaseUnreadable { source, .. } => source.transience(),
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
            | OpError::UnsafePath { .. }
            | OpError::ThroughSymlink { .. }
            | OpError::BadSymlinkTarget { .. }
            | OpError::FolderInTheWay { .. }
            | OpError::ChunkerMismatch { .. }
            | OpError::KeyMismatch { .. }
            | OpError::EncryptedMirrorSource { .. }
            | OpError::DeltaDepthAboveRepository { .. }
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
    /// Whether an object of a repository failed its checks (see [`RepoError::is_corrupt`]),
    /// a delta's unreadable base included.
    pub fn is_corrupt(&self) -> bool {
        match self {
            OpError::Repo(e) => e.is_corrupt(),
            OpError::DeltaBaseUnreadable { .. } => true,
            _ => false,
        }
    }

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
