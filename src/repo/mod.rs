//! The repository: content-addressed storage on one store (config, packs, pack indexes,
//! snapshots, refs) and the only code that knows its layout.
//!
//! Write order is packs → pack index → snapshot → ref; nothing is referenced before it is
//! durable, so a crash anywhere leaves a valid repository.

pub mod config;
mod error;
pub mod pack;
pub(crate) mod partial;
mod probe;
mod refs;
pub(crate) mod replicas;
mod seal;
pub mod snapshot;

use bytes::Bytes;
use object_store::path::Path;

use crate::crypto::{DataKey, Keyring};
use crate::ids::{Naming, PackId, SnapshotId};
use crate::store::Store;
pub use config::RepoConfig;
pub use error::RepoError;
use pack::{PackIndex, SealedPack};
use refs::ref_path;
pub use refs::{check_ref_name, RefEntry, RefEntryError};
use seal::{context, key_path};
pub use seal::{Rotated, Sealing};
pub use snapshot::Snapshot;

/// An object found by listing: its id, size and last-modified time (the store's clock).
#[derive(Debug, Clone, Copy)]
pub struct Listed<T> {
    /// The object's id, parsed from its key.
    pub id: T,
    /// Size in bytes.
    pub size: u64,
    /// Last-modified time as the store reports it.
    pub modified: std::time::SystemTime,
}

/// An opened repository.
#[derive(Debug, Clone)]
pub struct Repository {
    store: Store,
    config: RepoConfig,
    /// Plain, or the data key of an encrypted repository.
    sealing: Sealing,
    /// How chunks and snapshots are named (the sealing's).
    naming: Naming,
}

fn config_path() -> Path {
    Path::from("config")
}

/// `packs/<first 2 hex digits>/<pack id>`: a pack object.
pub fn pack_path(id: &PackId) -> Path {
    let hex = id.to_hex();
    Path::from(format!("packs/{}/{}", &hex[..2], hex))
}

/// `index/<pack id>`: the pack index written after its pack.
pub fn index_path(id: &PackId) -> Path {
    Path::from(format!("index/{id}"))
}

/// `snapshots/<snapshot id>`: a snapshot's JSON.
pub fn snapshot_path(id: &SnapshotId) -> Path {
    Path::from(format!("snapshots/{id}"))
}

/// `gc/<pack id>`: gc's first phase marked the pack for deletion.
pub fn gc_mark_path(id: &PackId) -> Path {
    Path::from(format!("gc/{id}"))
}

/// `bad/<pack id>`: `ferry repair` found the pack damaged (or missing); its chunks count as
/// absent until gc deletes it.
pub fn bad_mark_path(id: &PackId) -> Path {
    Path::from(format!("bad/{id}"))
}

impl Repository {
    /// The repository at `store` with `config`, its data key found with one of `keys` when it
    /// is encrypted.
    async fn unlock(store: Store, config: RepoConfig, keys: &Keyring) -> Result<Self, RepoError> {
        let sealing = if config.is_encrypted() {
            seal::unlock(&store, &config.id, keys, cipher_of(&config)).await?
        } else {
            Sealing::PLAIN
        };
        Ok(Self::assemble(store, config, sealing))
    }

    fn assemble(store: Store, config: RepoConfig, sealing: Sealing) -> Self {
        Self {
            naming: sealing.naming(),
            store,
            config,
            sealing,
        }
    }

    /// Opens the repository at `store`; fails if there is none. An encrypted one opens with
    /// whichever of `keys` it holds a wrapping for, and fails clearly without one.
    pub async fn open(store: Store, keys: &Keyring) -> Result<Self, RepoError> {
        match Self::read_config(&store).await? {
            Some(config) => Self::unlock(store, config, keys).await,
            None => {
                // Listing proves the bucket/container exists before blaming the prefix.
                store.is_empty().await?;
                Err(RepoError::NotARepo {
                    url: store.url().to_string(),
                })
            }
        }
    }

    /// Creates a repository at an empty location. An encrypted `config` gets a new random data
    /// key, wrapped under every key of `keys` (at least one).
    pub async fn init(store: Store, config: RepoConfig, keys: &Keyring) -> Result<Self, RepoError> {
        Self::init_sharing(store, config, keys, None).await
    }

    /// [`Self::init`]; an encrypted repository gets data key `share` when given (a replication
    /// target, so frames copy as stored), and its cipher; else a new one.
    pub async fn init_sharing(
        store: Store,
        config: RepoConfig,
        keys: &Keyring,
        share: Option<std::sync::Arc<DataKey>>,
    ) -> Result<Self, RepoError> {
        let config = sharing_cipher(config, share.as_deref());
        if Self::read_config(&store).await?.is_some() {
            return Err(RepoError::Exists {
                url: store.url().to_string(),
            });
        }
        if !store.is_empty().await? {
            return Err(occupied(&store).await?);
        }
        let sealing = if config.is_encrypted() {
            if keys.is_empty() {
                return Err(RepoError::NoKeyToEncrypt);
            }
            let data =
                share.unwrap_or_else(|| std::sync::Arc::new(DataKey::generate(cipher_of(&config))));
            // The wrappings before the config: a repository is never without its keys.
            for key in keys.keys() {
                if !seal::wrap_new(&store, &config.id, key, &data).await? {
                    // Another process is initializing it with the same key.
                    return Err(RepoError::Exists {
                        url: store.url().to_string(),
                    });
                }
            }
            Sealing::with(data)
        } else {
            Sealing::PLAIN
        };
        if !store
            .put_new(&config_path(), Bytes::from(config.encode()))
            .await?
        {
            // Another process initialized it first: use theirs.
            return Self::open(store, keys).await;
        }
        Ok(Self::assemble(store, config, sealing))
    }

    /// Opens the repository, or initializes an empty location with `config()`.
    /// Returns whether it was created.
    pub async fn open_or_init(
        store: Store,
        keys: &Keyring,
        (config, share): (impl FnOnce() -> RepoConfig, Option<std::sync::Arc<DataKey>>),
    ) -> Result<(Self, bool), RepoError> {
        if let Some(config) = Self::read_config(&store).await? {
            return Ok((Self::unlock(store, config, keys).await?, false));
        }
        match Self::init_sharing(store.clone(), config(), keys, share).await {
            Ok(repo) => Ok((repo, true)),
            // Another process initialized it between our read and our init (shards of one
            // run starting at once): use theirs, once its config is there.
            Err(
                e @ (RepoError::Exists { .. }
                | RepoError::Occupied { .. }
                | RepoError::Unfinished { .. }),
            ) => {
                for _ in 0..20 {
                    if let Some(config) = Self::read_config(&store).await? {
                        return Ok((Self::unlock(store, config, keys).await?, false));
                    }
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e)
            }
            Err(e) => Err(e),
        }
    }

    /// Opens the repository, or describes the one [`Self::open_or_init`] would create at an
    /// empty location, without writing it (a dry run). Returns whether it would be created.
    pub async fn open_or_plan(
        store: Store,
        keys: &Keyring,
        (config, share): (impl FnOnce() -> RepoConfig, Option<std::sync::Arc<DataKey>>),
    ) -> Result<(Self, bool), RepoError> {
        if let Some(config) = Self::read_config(&store).await? {
            return Ok((Self::unlock(store, config, keys).await?, false));
        }
        if !store.is_empty().await? {
            return Err(occupied(&store).await?);
        }
        let config = sharing_cipher(config(), share.as_deref());
        let sealing = match (config.is_encrypted(), share) {
            (false, _) => Sealing::PLAIN,
            (true, Some(data)) => Sealing::with(data),
            (true, None) if keys.is_empty() => return Err(RepoError::NoKeyToEncrypt),
            (true, None) => {
                Sealing::with(std::sync::Arc::new(DataKey::generate(cipher_of(&config))))
            }
        };
        Ok((Self::assemble(store, config, sealing), true))
    }

    /// Whether `store` holds an encrypted ferry repository (a `config` object that is one;
    /// anything else, or nothing, is not).
    pub async fn encrypted_at(store: &Store) -> Result<bool, RepoError> {
        let config = store.get_opt(&config_path()).await?;
        Ok(config
            .and_then(|b| RepoConfig::decode(&b).ok())
            .is_some_and(|c| c.is_encrypted()))
    }

    async fn read_config(store: &Store) -> Result<Option<RepoConfig>, RepoError> {
        let Some(bytes) = store.get_opt(&config_path()).await? else {
            return Ok(None);
        };
        RepoConfig::decode(&bytes)
            .map(Some)
            .map_err(|problem| RepoError::BadConfig {
                object: store.object_url(&config_path()),
                problem,
            })
    }

    /// The repository's config (chunker parameters, pack size, id).
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// How the repository's objects and frames are sealed (plain, or under its data key).
    pub fn sealing(&self) -> &Sealing {
        &self.sealing
    }

    /// How the repository names chunks and snapshots.
    pub fn naming(&self) -> &Naming {
        &self.naming
    }

    /// The data key wrapped under `key` into `keys/<key id>` (`ferry key rotate`); false when
    /// the repository already holds a wrapping under that key.
    pub async fn add_key(&self, key: &crate::crypto::UserKey) -> Result<bool, RepoError> {
        match self.sealing.data_key() {
            Some(data) => seal::wrap_new(&self.store, self.id(), key, data).await,
            None => Ok(false),
        }
    }

    /// Deletes the wrapping under the key with id `id` (`ferry key rotate`): that key no
    /// longer opens the repository.
    pub async fn remove_key(&self, id: &crate::crypto::KeyId) -> Result<(), RepoError> {
        Ok(self.store.delete(&key_path(id)).await?)
    }

    /// The repository's id (random, from `init`): the key of its trees in the local index.
    pub fn id(&self) -> &str {
        &self.config.id
    }

    /// The store holding the repository.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The repository's store URL, for messages.
    pub fn url(&self) -> String {
        self.store.url().to_string()
    }

    fn vanished(&self, path: &Path) -> RepoError {
        RepoError::Vanished {
            object: self.store.object_url(path),
        }
    }

    fn misplaced(&self, path: &Path, what: &'static str, place: &'static str) -> RepoError {
        RepoError::Misplaced {
            object: self.store.object_url(path),
            what,
            place,
        }
    }

    /// `value` as the stored JSON record `what` (sealed in an encrypted repository).
    fn encode_record<T: serde::Serialize>(&self, what: &'static str, value: &T) -> Bytes {
        let body = serde_json::to_vec(value).expect("records serialize");
        Bytes::from(self.sealing.seal(what.as_bytes(), body))
    }

    /// Opens the object `path` sealed for `context` (a plain repository's bytes as they are).
    fn open_object(&self, path: &Path, context: &[u8], stored: Bytes) -> Result<Bytes, RepoError> {
        Ok(self
            .sealing
            .open(&self.store.object_url(path), context, stored)?)
    }

    /// `bytes` of `path` as the JSON record `what`.
    fn decode_record<T: serde::de::DeserializeOwned>(
        &self,
        path: &Path,
        what: &'static str,
        bytes: &[u8],
    ) -> Result<T, RepoError> {
        let bytes = self.open_object(path, what.as_bytes(), Bytes::copy_from_slice(bytes))?;
        serde_json::from_slice(&bytes).map_err(|problem| RepoError::BadRecord {
            object: self.store.object_url(path),
            what,
            problem,
        })
    }

    /// Writes a sealed pack, then its index. Returns the bytes written.
    pub async fn write_pack(&self, pack: &SealedPack) -> Result<u64, RepoError> {
        self.store
            .put(&pack_path(&pack.id), pack.data.clone())
            .await?;
        let index = self
            .sealing
            .seal(context::PACK_INDEX, pack.index().encode());
        let index_len = index.len() as u64;
        self.store
            .put(&index_path(&pack.id), Bytes::from(index))
            .await?;
        Ok(pack.data.len() as u64 + index_len)
    }

    /// Ids of every pack that has an index.
    pub async fn list_pack_indexes(&self) -> Result<Vec<PackId>, RepoError> {
        let prefix = Path::from("index");
        let mut ids = Vec::new();
        for meta in self.store.list(Some(&prefix)).await? {
            match meta.location.filename().and_then(|n| n.parse().ok()) {
                Some(id) => ids.push(id),
                None => {
                    tracing::warn!(object = %self.store.object_url(&meta.location), "ignoring a stray object under index/")
                }
            }
        }
        Ok(ids)
    }

    /// Every object under `prefix` whose name parses as an id, with size and time.
    async fn list_ids<T: std::str::FromStr>(
        &self,
        prefix: &str,
    ) -> Result<Vec<Listed<T>>, RepoError> {
        let prefix = Path::from(prefix);
        Ok(self
            .store
            .list(Some(&prefix))
            .await?
            .into_iter()
            .filter_map(|m| {
                Some(Listed {
                    id: m.location.filename()?.parse().ok()?,
                    size: m.size,
                    modified: std::time::SystemTime::from(m.last_modified),
                })
            })
            .collect())
    }

    /// Every pack object.
    pub async fn list_packs(&self) -> Result<Vec<Listed<PackId>>, RepoError> {
        self.list_ids("packs").await
    }

    /// Every snapshot object.
    pub async fn list_snapshot_objects(&self) -> Result<Vec<Listed<SnapshotId>>, RepoError> {
        self.list_ids("snapshots").await
    }

    /// Packs marked for deletion by gc (`gc/<pack id>`), with the marker's time.
    pub async fn list_gc_marks(&self) -> Result<Vec<Listed<PackId>>, RepoError> {
        self.list_ids("gc").await
    }

    /// Marks a pack for deletion by a later gc. Pushes stop relying on its chunks.
    pub async fn mark_pack(&self, id: &PackId) -> Result<(), RepoError> {
        Ok(self
            .store
            .put(&gc_mark_path(id), Bytes::from_static(b"{}"))
            .await?)
    }

    /// Packs `ferry repair` marked as damaged (`bad/<pack id>`).
    pub async fn list_bad_packs(&self) -> Result<Vec<Listed<PackId>>, RepoError> {
        self.list_ids("bad").await
    }

    /// The ids of the packs marked damaged.
    pub async fn bad_pack_ids(&self) -> Result<std::collections::HashSet<PackId>, RepoError> {
        Ok(self
            .list_bad_packs()
            .await?
            .into_iter()
            .map(|b| b.id)
            .collect())
    }

    /// Marks a pack as damaged: writers stop relying on its chunks and upload them anew;
    /// gc deletes it once no snapshot needs a chunk only it holds. The body says what was
    /// wrong, for people; readers go by the name only.
    pub async fn mark_bad(&self, id: &PackId, problem: &str) -> Result<(), RepoError> {
        let body = serde_json::json!({ "pack": id.to_hex(), "problem": problem }).to_string();
        let body = self.sealing.seal(context::BAD_MARK, body.into_bytes());
        Ok(self
            .store
            .put(&bad_mark_path(id), Bytes::from(body))
            .await?)
    }

    /// Removes a pack's damage mark (its object was written anew with its correct bytes).
    pub async fn clear_bad(&self, id: &PackId) -> Result<(), RepoError> {
        Ok(self.store.delete(&bad_mark_path(id)).await?)
    }

    /// Removes the gc mark of a pack (gc does, for a marked pack a snapshot needs again).
    pub async fn unmark_pack(&self, id: &PackId) -> Result<(), RepoError> {
        Ok(self.store.delete(&gc_mark_path(id)).await?)
    }

    /// Deletes a pack: its index first (so no client learns of it any more), then the pack,
    /// then any damage mark, then any gc mark. Each may already be gone.
    pub async fn delete_pack(&self, id: &PackId) -> Result<(), RepoError> {
        self.store.delete(&index_path(id)).await?;
        self.store.delete(&pack_path(id)).await?;
        self.store.delete(&bad_mark_path(id)).await?;
        Ok(self.store.delete(&gc_mark_path(id)).await?)
    }

    /// Deletes a snapshot object (its refs must already be gone).
    pub async fn delete_snapshot(&self, id: &SnapshotId) -> Result<(), RepoError> {
        Ok(self.store.delete(&snapshot_path(id)).await?)
    }

    /// Reads and checks a pack index (format and pack id).
    pub async fn read_pack_index(&self, id: &PackId) -> Result<PackIndex, RepoError> {
        let path = index_path(id);
        let bytes = self.store.get(&path).await?;
        let bytes = self.open_object(&path, context::PACK_INDEX, bytes)?;
        let idx = PackIndex::decode(&bytes).map_err(|problem| RepoError::BadPackIndex {
            object: self.store.object_url(&path),
            problem,
        })?;
        if idx.pack != *id {
            return Err(RepoError::IndexOfOtherPack {
                object: self.store.object_url(&path),
                pack: idx.pack,
            });
        }
        Ok(idx)
    }

    /// Reads a byte range of a pack (one or more adjacent frames).
    pub async fn read_pack_range(
        &self,
        id: &PackId,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, RepoError> {
        let path = pack_path(id);
        let len = range.end - range.start;
        let bytes = self.store.get_range(&path, range).await?;
        if bytes.len() as u64 != len {
            return Err(RepoError::ShortRead {
                object: self.store.object_url(&path),
                got: bytes.len() as u64,
                expected: len,
            });
        }
        Ok(bytes)
    }

    /// Reads a whole pack object.
    pub async fn read_pack(&self, id: &PackId) -> Result<Bytes, RepoError> {
        Ok(self.store.get(&pack_path(id)).await?)
    }

    /// The pack object's URL, for messages.
    pub fn pack_url(&self, id: &PackId) -> String {
        self.store.object_url(&pack_path(id))
    }

    /// Writes an encoded snapshot under its id. Idempotent.
    pub async fn write_snapshot_bytes(&self, encoded: Bytes) -> Result<SnapshotId, RepoError> {
        let id = self.naming.snapshot(&encoded);
        let path = snapshot_path(&id);
        let stored = Bytes::from(self.sealing.seal(context::SNAPSHOT, encoded.into()));
        // Content addressed: an existing object with this name already holds these bytes.
        self.store.put_new(&path, stored).await?;
        Ok(id)
    }

    /// Reads a snapshot's bytes and checks that they hash to its id.
    pub async fn read_snapshot_bytes(&self, id: &SnapshotId) -> Result<Bytes, RepoError> {
        let path = snapshot_path(id);
        let bytes = self.store.get(&path).await?;
        let bytes = self.open_object(&path, context::SNAPSHOT, bytes)?;
        if self.naming.snapshot(&bytes) != *id {
            return Err(RepoError::ContentMismatch {
                object: self.store.object_url(&path),
            });
        }
        Ok(bytes)
    }

    /// Reads, checks and parses a snapshot.
    pub async fn read_snapshot(&self, id: &SnapshotId) -> Result<Snapshot, RepoError> {
        let bytes = self.read_snapshot_bytes(id).await?;
        self.decode_snapshot(id, &bytes)
    }

    /// Parses the bytes of snapshot `id` (read and checked by [`Self::read_snapshot_bytes`]).
    pub fn decode_snapshot(&self, id: &SnapshotId, bytes: &[u8]) -> Result<Snapshot, RepoError> {
        Snapshot::decode(bytes).map_err(|problem| RepoError::BadSnapshot {
            object: self.store.object_url(&snapshot_path(id)),
            problem,
        })
    }

    /// Lists the ids of every snapshot object in the repository.
    pub async fn list_snapshots(&self) -> Result<Vec<SnapshotId>, RepoError> {
        Ok(self
            .list_snapshot_objects()
            .await?
            .into_iter()
            .map(|l| l.id)
            .collect())
    }
}

/// Why a location without a config cannot take `init`: it holds other objects, or only the
/// `keys/` of an encrypted init that stopped before its config.
async fn occupied(store: &Store) -> Result<RepoError, RepoError> {
    let url = store.url().to_string();
    Ok(if store.only_under("keys").await? {
        RepoError::Unfinished { url }
    } else {
        RepoError::Occupied { url }
    })
}

/// An encrypted config's cipher (decoding refused the ones this build does not know).
fn cipher_of(config: &RepoConfig) -> crate::crypto::Cipher {
    config.cipher().unwrap_or(crate::crypto::Cipher::DEFAULT)
}

/// `config`, sealing with `share`'s cipher when it is encrypted and shares that data key.
fn sharing_cipher(config: RepoConfig, share: Option<&DataKey>) -> RepoConfig {
    match share {
        Some(k) if config.is_encrypted() => config.encrypted_with(k.cipher()),
        _ => config,
    }
}

#[cfg(test)]
mod tests;
