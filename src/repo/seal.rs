//! Encrypted repositories (format version 3, FORMAT.md "Encryption"): the data key, found
//! through `keys/<key id>` with one of the process's user keys, and the sealing of every
//! object and frame that derives from content. A plain repository's bytes pass untouched.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use object_store::path::Path;

use super::{RepoError, Repository};
use crate::crypto::{Cipher, CryptoError, DataKey, KeyId, Keyring, UserKey};
use crate::ids::{ChunkId, Naming};
use crate::store::Store;

/// `keys/<key id>`: the repository's data key wrapped under one user key.
pub(crate) fn key_path(id: &KeyId) -> Path {
    Path::from(format!("keys/{id}"))
}

/// What sealed bytes are for: the associated data that keeps one sealed object from being
/// passed off as another. Objects also name themselves inside (a pack index its pack, a
/// snapshot hashes to its id, a ref entry holds its name and sequence number), which readers
/// check after opening.
pub(crate) mod context {
    pub(crate) const PACK_INDEX: &[u8] = b"pack index";
    pub(crate) const PACK_TABLE: &[u8] = b"pack table";
    pub(crate) const SNAPSHOT: &[u8] = b"snapshot";
    pub(crate) const REF_ENTRY: &[u8] = b"ref entry";
    pub(crate) const BAD_MARK: &[u8] = b"damage mark";
}

/// How a repository's bytes are sealed: not at all, or under its data key. Cheap to clone
/// (compressors each hold one).
#[derive(Clone, Default, Debug)]
pub struct Sealing(Option<Arc<DataKey>>);

impl Sealing {
    /// A plain repository's: nothing sealed.
    pub const PLAIN: Sealing = Sealing(None);

    /// Sealing under `key`.
    pub fn with(key: Arc<DataKey>) -> Self {
        Self(Some(key))
    }

    /// Whether the repository is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.0.is_some()
    }

    /// The data key, for a repository made to share it (a replication target).
    pub fn data_key(&self) -> Option<&Arc<DataKey>> {
        self.0.as_ref()
    }

    /// How chunks and snapshots are named: keyed BLAKE3 under a data key, else plain.
    pub fn naming(&self) -> Naming {
        self.0.as_ref().map_or(Naming::PLAIN, |k| k.naming())
    }

    /// Whether bytes sealed under `self` open under `other` (both plain, or the same data
    /// key): frames and objects then copy between the two as stored.
    pub fn same_as(&self, other: &Sealing) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => a.same_as(b),
            _ => false,
        }
    }

    /// Bytes sealing adds to each object or frame.
    pub fn overhead(&self) -> u64 {
        self.0.as_ref().map_or(0, |k| k.cipher().overhead() as u64)
    }

    /// The range to read for the first `len` bytes of the frame stored at `frame` (in a pack):
    /// an encrypted frame's head comes after its version byte and nonce (and, under
    /// AES-256-GCM-SIV, its tag).
    pub fn head_range(&self, frame: std::ops::Range<u64>, len: u64) -> std::ops::Range<u64> {
        let len = len
            + self
                .0
                .as_ref()
                .map_or(0, |k| k.cipher().peek_offset() as u64);
        frame.start..frame.end.min(frame.start + len)
    }

    /// The head of a frame from the bytes [`Self::head_range`] named: as read in a plain
    /// repository; decrypted without its tag in an encrypted one (`DataKey::peek`) — a hint,
    /// as an unchecked head read is, never data. `None` when it cannot be read.
    pub fn peek_frame_head(&self, prefix: Bytes) -> Option<Bytes> {
        match &self.0 {
            None => Some(prefix),
            Some(k) => k.peek(&prefix).map(Bytes::from),
        }
    }

    /// Seals the frame of chunk `chunk`; a plain repository's frame is returned as is.
    pub fn seal_frame(&self, chunk: &ChunkId, frame: Vec<u8>) -> Vec<u8> {
        match &self.0 {
            None => frame,
            Some(k) => k.seal(&frame_context(chunk), &frame),
        }
    }

    /// Opens the stored frame of chunk `chunk` (`object` and `offset` name it in errors).
    pub fn open_frame(
        &self,
        object: &str,
        offset: u64,
        chunk: &ChunkId,
        stored: Bytes,
    ) -> Result<Bytes, CryptoError> {
        match &self.0 {
            None => Ok(stored),
            Some(k) => k
                .open(
                    &frame_object(object, chunk, offset),
                    &frame_context(chunk),
                    &stored,
                )
                .map(Bytes::from),
        }
    }

    /// [`Self::open_frame`] of a frame held in bytes of its own, opened where they lie (no
    /// copy): the result is a view of them.
    pub fn open_frame_in_place(
        &self,
        object: &str,
        offset: u64,
        chunk: &ChunkId,
        mut stored: BytesMut,
    ) -> Result<Bytes, CryptoError> {
        match &self.0 {
            None => Ok(stored.freeze()),
            Some(k) => {
                let plain = k.open_in_place(
                    &frame_object(object, chunk, offset),
                    &frame_context(chunk),
                    &mut stored,
                )?;
                Ok(stored.freeze().slice(plain))
            }
        }
    }

    /// Seals a whole object (`context`: what it is).
    pub(crate) fn seal(&self, context: &[u8], plain: Vec<u8>) -> Vec<u8> {
        match &self.0 {
            None => plain,
            Some(k) => k.seal(context, &plain),
        }
    }

    /// Opens a whole object sealed for `context`; `object` names it in errors.
    pub(crate) fn open(
        &self,
        object: &str,
        context: &[u8],
        stored: Bytes,
    ) -> Result<Bytes, CryptoError> {
        match &self.0 {
            None => Ok(stored),
            Some(k) => k.open(object, context, &stored).map(Bytes::from),
        }
    }
}

/// How errors name a frame: its pack, chunk and offset.
fn frame_object(object: &str, chunk: &ChunkId, offset: u64) -> String {
    format!("{object} (the frame of chunk {chunk} at offset {offset})")
}

fn frame_context(chunk: &ChunkId) -> Vec<u8> {
    let mut c = b"frame ".to_vec();
    c.extend_from_slice(&chunk.0);
    c
}

/// The data key of the encrypted repository `repo_id` at `store`, opened with the first key
/// of `keys` it has a wrapping for, to seal with `cipher`.
pub(super) async fn unlock(
    store: &Store,
    repo_id: &str,
    keys: &Keyring,
    cipher: Cipher,
) -> Result<Sealing, RepoError> {
    if keys.is_empty() {
        return Err(RepoError::KeyNeeded {
            url: store.url().to_string(),
        });
    }
    for key in keys.keys() {
        let path = key_path(&key.id());
        if let Some(wrapped) = store.get_opt(&path).await? {
            let object = store.object_url(&path);
            let data = DataKey::unwrap(&wrapped, key, repo_id, &object, cipher)?;
            return Ok(Sealing::with(Arc::new(data)));
        }
    }
    Err(CryptoError::WrongKey {
        object: store.url().to_string(),
    }
    .into())
}

/// Wraps `data` under `key` into `keys/<key id>` unless that object exists; `false` when it
/// does (another process is initializing the same location with the same key).
pub(super) async fn wrap_new(
    store: &Store,
    repo_id: &str,
    key: &UserKey,
    data: &DataKey,
) -> Result<bool, RepoError> {
    let path = key_path(&key.id());
    Ok(store
        .put_new(&path, Bytes::from(data.wrap(key, repo_id)))
        .await?)
}

/// What `ferry key rotate` did to a repository's keys.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Rotated {
    /// The repository.
    pub repo: String,
    /// The id of the key that opens it now.
    pub key_id: String,
    /// The ids of the keys whose wrappings were deleted (they no longer open it).
    pub retired: Vec<String>,
}

impl Repository {
    /// Wraps the data key under `new`, checks that the wrapping opens, then deletes every
    /// other key's wrapping: only `new` opens the repository afterwards. Packs, snapshots and
    /// everything else stay as they are (sealed under the data key, which does not change).
    pub async fn rotate_key(&self, new: &UserKey) -> Result<Rotated, RepoError> {
        let Some(data) = self.sealing.data_key() else {
            return Err(RepoError::NotEncrypted { url: self.url() });
        };
        let id = new.id();
        wrap_new(&self.store, self.id(), new, data).await?;
        // Read back: the new key must open this very data key before any other goes.
        let path = key_path(&id);
        let wrapped = self.store.get(&path).await?;
        let object = self.store.object_url(&path);
        let opened = DataKey::unwrap(&wrapped, new, self.id(), &object, data.cipher())?;
        if !opened.same_as(data) {
            return Err(CryptoError::BadEnvelope {
                object,
                why: "it wraps another data key than the one the repository opened with",
            }
            .into());
        }
        let mut retired = Vec::new();
        for meta in self.store.list(Some(&Path::from("keys"))).await? {
            let Some(name) = meta.location.filename().map(str::to_string) else {
                continue;
            };
            if name != id.to_string() {
                self.store.delete(&meta.location).await?;
                retired.push(name);
            }
        }
        Ok(Rotated {
            repo: self.url(),
            key_id: id.to_string(),
            retired,
        })
    }
}
