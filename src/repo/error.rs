//! `RepoError`: what can go wrong with a repository, each case naming the object or location
//! concerned; the known corruption cases as named variants.

use super::{config, pack, snapshot, RefEntryError};
use crate::codec::FrameError;
use crate::ids::{ChunkId, PackId};
use crate::store::StoreError;

/// Errors about a repository. Each names the object or location concerned.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// A store call failed (status and transience inside).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The location holds no repository config.
    #[error(
        "no ferry repository at {url}: run `ferry init {url}` first, or push to an empty location"
    )]
    NotARepo {
        /// The store URL looked at.
        url: String,
    },
    /// `init` of a location that already holds other objects.
    #[error("{url} is not empty and holds no ferry repository: choose an empty location")]
    Occupied {
        /// The store URL looked at.
        url: String,
    },
    /// `init` of a location that holds only `keys/`: an `init --encrypt` that was stopped
    /// after wrapping its data key and before writing the config.
    #[error("{url} holds only the key wrappings (keys/) of an `init --encrypt` that did not finish, and no config: delete {url}/keys/ and run init again")]
    Unfinished {
        /// The store URL looked at.
        url: String,
    },
    /// `init` of a location that already holds a repository.
    #[error("{url} already holds a ferry repository")]
    Exists {
        /// The store URL looked at.
        url: String,
    },
    /// An object's bytes do not hash to the id it is stored under.
    #[error("{object}: content does not match its id")]
    ContentMismatch {
        /// The object's URL.
        object: String,
    },
    /// A pack index describes another pack than the one its name says.
    #[error("{object}: describes pack {pack} instead")]
    IndexOfOtherPack {
        /// The pack index's URL.
        object: String,
        /// The pack it describes.
        pack: PackId,
    },
    /// A range read returned fewer bytes than asked for.
    #[error("{object}: short read: {got} of {expected} bytes")]
    ShortRead {
        /// The object's URL.
        object: String,
        /// Bytes returned.
        got: u64,
        /// Bytes asked for.
        expected: u64,
    },
    /// A ref log entry stored somewhere else than its name and sequence number say.
    #[error("{object}: entry for ref {name:?} seq {seq} belongs at {home}")]
    RefEntryNotAtHome {
        /// The entry's URL.
        object: String,
        /// The ref name inside the entry.
        name: String,
        /// The sequence number inside the entry.
        seq: u64,
        /// Where that entry belongs (URL).
        home: String,
    },
    /// The repository config does not decode.
    #[error("{object}: {problem}")]
    BadConfig {
        /// The config's URL.
        object: String,
        /// The decoder's error.
        problem: config::ConfigError,
    },
    /// A snapshot does not decode.
    #[error("{object}: {problem}")]
    BadSnapshot {
        /// The snapshot's URL.
        object: String,
        /// The decoder's error.
        problem: snapshot::SnapshotError,
    },
    /// A pack index does not decode.
    #[error("{object}: {problem}")]
    BadPackIndex {
        /// The pack index's URL.
        object: String,
        /// The decoder's error.
        problem: pack::PackFormatError,
    },
    /// A ref log entry does not decode.
    #[error("{object}: {problem}")]
    BadRefEntry {
        /// The entry's URL.
        object: String,
        /// The decoder's error.
        problem: RefEntryError,
    },
    /// An object a conditional write found taken was gone when read right after.
    #[error("{object}: vanished right after a conflicting write")]
    Vanished {
        /// The object's URL.
        object: String,
    },
    /// A JSON record (sharded runs' partials, commit markers, replica plans and pointers) is
    /// stored under a name its content does not match.
    #[error("{object}: {what} stored under the wrong {place}")]
    Misplaced {
        /// The object's URL.
        object: String,
        /// The record (`partial`, `plan`, `pointer`).
        what: &'static str,
        /// What its name gets wrong (`name`, `run`).
        place: &'static str,
    },
    /// A JSON record (see [`RepoError::Misplaced`]) does not decode.
    #[error("{object}: invalid {what}: {problem}")]
    BadRecord {
        /// The object's URL.
        object: String,
        /// The record (`partial`, `commit marker`, `replica plan`, `replica pointer`).
        what: &'static str,
        /// The decoder's error.
        problem: serde_json::Error,
    },
    /// A replica plan (see [`RepoError::Misplaced`]) lists a ref name that is not a plain
    /// file name (see [`super::check_ref_name`]).
    #[error("{object}: invalid ref name {name:?}: use letters, digits, '.', '_' and '-' (not starting with '.')")]
    BadRefNameIn {
        /// The plan's URL.
        object: String,
        /// The ref name as recorded.
        name: String,
    },
    /// A snapshot or a delta frame references a chunk that no pack index holds.
    #[error("{object}: chunk {chunk} is referenced but no pack index holds it")]
    ChunkNotIndexed {
        /// The repository's URL.
        object: String,
        /// The chunk referenced.
        chunk: ChunkId,
    },
    /// A chunk (a delta's base) whose only copies are in packs marked damaged (`bad/<pack
    /// id>`): it counts as absent until a push uploads it anew.
    #[error("{object}: chunk {chunk} is held only by pack {pack}, which is marked damaged (`bad/{pack}`); push its source again to upload it anew")]
    ChunkOnlyInDamagedPack {
        /// The repository's URL.
        object: String,
        /// The chunk.
        chunk: ChunkId,
        /// A damaged pack holding it.
        pack: PackId,
    },
    /// A chunk's frame in a pack does not decode to the chunk (damaged bytes, wrong length or
    /// hash, an overlong delta chain).
    #[error("{object}: chunk {chunk} at offset {offset}: {problem}")]
    BadFrame {
        /// The pack's URL.
        object: String,
        /// The chunk the frame should hold.
        chunk: ChunkId,
        /// The frame's offset in the pack.
        offset: u64,
        /// What the decoder found (boxed: the error stays small).
        problem: Box<FrameError>,
    },
    /// A chunk's delta frame does not decode against its (readable) base chunk.
    #[error(
        "{object}: chunk {chunk} at offset {offset}, a delta against base chunk {base}: {problem}"
    )]
    BadDelta {
        /// The pack's URL.
        object: String,
        /// The chunk the frame should hold.
        chunk: ChunkId,
        /// The frame's offset in the pack.
        offset: u64,
        /// The base chunk the delta applies to.
        base: ChunkId,
        /// What the decoder found (boxed: the error stays small).
        problem: Box<FrameError>,
    },
    /// A ref name that is not a plain file name (see [`super::check_ref_name`]).
    #[error(
        "invalid ref name {name:?}: use letters, digits, '.', '_' and '-' (not starting with '.')"
    )]
    BadRefName {
        /// The name as given.
        name: String,
    },
    /// No snapshot matches the given id, prefix or ref.
    #[error("{spec:?} not found in {url}: `ferry snapshots {url}` lists what is there")]
    NoSuchSnapshot {
        /// What the user asked for.
        spec: String,
        /// The repository's URL.
        url: String,
    },
    /// A run id that is not a plain file name, or longer than 128 bytes.
    #[error(
        "invalid run id {run:?}: use letters, digits, '.', '_' and '-' (not starting with '.'), at most 128 bytes"
    )]
    BadRunId {
        /// The run id as given.
        run: String,
    },
    /// An encrypted repository opened without any key.
    #[error("{url} is encrypted: give its key with --key-file PATH (or FERRY_KEY_FILE, or the key itself in FERRY_KEY)")]
    KeyNeeded {
        /// The repository's URL.
        url: String,
    },
    /// A key that does not open the repository, a sealed object that does not authenticate,
    /// or a wrapped data key that is not one. Never carries key bytes.
    #[error(transparent)]
    Crypto(#[from] crate::crypto::CryptoError),
    /// A key command on a plain repository.
    #[error("{url} is not encrypted: it has no keys to rotate (encryption is chosen at `ferry init --encrypt`)")]
    NotEncrypted {
        /// The repository's URL.
        url: String,
    },
    /// `--encrypt` with no key to wrap the new repository's data key under.
    #[error("`--encrypt` needs a key: give --key-file PATH (make one with `ferry key generate PATH`), or set FERRY_KEY_FILE or FERRY_KEY")]
    NoKeyToEncrypt,
    /// The ref's next log entry was taken by other writers too many times in a row.
    #[error("ref {name:?} in {url} kept moving under concurrent writers; try again")]
    RefContention {
        /// The ref name.
        name: String,
        /// The repository's URL.
        url: String,
    },
}

impl RepoError {
    /// Whether an object of the repository failed its checks (hash, format, placement), as
    /// opposed to a store failure or a wrong request.
    pub fn is_corrupt(&self) -> bool {
        matches!(
            self,
            Self::ContentMismatch { .. }
                | Self::IndexOfOtherPack { .. }
                | Self::ShortRead { .. }
                | Self::RefEntryNotAtHome { .. }
                | Self::BadConfig { .. }
                | Self::BadSnapshot { .. }
                | Self::BadPackIndex { .. }
                | Self::BadRefEntry { .. }
                | Self::Vanished { .. }
                | Self::Misplaced { .. }
                | Self::BadRecord { .. }
                | Self::BadRefNameIn { .. }
                | Self::ChunkNotIndexed { .. }
                | Self::ChunkOnlyInDamagedPack { .. }
                | Self::BadFrame { .. }
                | Self::BadDelta { .. }
                | Self::Crypto(
                    crate::crypto::CryptoError::Unauthentic { .. }
                        | crate::crypto::CryptoError::BadEnvelope { .. }
                )
        )
    }
}
