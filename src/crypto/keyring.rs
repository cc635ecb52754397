//! The user keys one process holds: `--key-file` (repeatable), `FERRY_KEY_FILE` and
//! `FERRY_KEY`, read where the process starts. An encrypted repository opens with whichever
//! of them it has a wrapped data key for (`keys/<key id>`), so one command can read one
//! repository and write another under a different key.

use std::path::PathBuf;
use std::sync::Arc;

use zeroize::Zeroizing;

use super::{CryptoError, KeyId, UserKey};

/// Where the keys of a process come from, as the edge found them (nothing read yet).
#[derive(Default)]
pub struct KeySources {
    /// `--key-file PATH`, each given.
    pub files: Vec<PathBuf>,
    /// `FERRY_KEY_FILE`.
    pub env_file: Option<PathBuf>,
    /// `FERRY_KEY`: the key's text itself.
    pub env_key: Option<Zeroizing<String>>,
    /// Keys bound to one store (the daemon's `key_file` per `[stores]` entry): its URL, the
    /// key file.
    pub bound: Vec<(String, PathBuf)>,
}

/// The name `FERRY_KEY` goes by in errors (never its value).
pub const KEY_VAR: &str = "FERRY_KEY";
/// The variable naming a key file.
pub const KEY_FILE_VAR: &str = "FERRY_KEY_FILE";

/// The user keys of one process (none: it works with plain repositories only), some of them
/// bound to one store. Cheap to clone; `Debug` shows key ids only.
#[derive(Clone, Default)]
pub struct Keyring {
    keys: Arc<Vec<UserKey>>,
    /// Store URL → the id of its key (see [`Self::for_store`]).
    bound: Arc<Vec<(String, KeyId)>>,
}

impl Keyring {
    /// Reads every key `sources` name; a file that cannot be read or text that is not a key
    /// is an error naming where it came from, never the text.
    pub fn read(sources: KeySources) -> Result<Self, CryptoError> {
        let mut keys = Vec::new();
        for path in sources.files.iter().chain(&sources.env_file) {
            keys.push(UserKey::read_file(path)?);
        }
        if let Some(text) = &sources.env_key {
            keys.push(UserKey::parse(text, KEY_VAR)?);
        }
        let mut bound = Vec::new();
        for (url, path) in &sources.bound {
            let key = UserKey::read_file(path)?;
            bound.push((url.clone(), key.id()));
            keys.push(key);
        }
        let mut ring = Self::new(keys);
        ring.bound = Arc::new(bound);
        Ok(ring)
    }

    /// A ring of `keys` (the same key given twice is kept once).
    pub fn new(keys: Vec<UserKey>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let keys = keys.into_iter().filter(|k| seen.insert(k.id())).collect();
        Self {
            keys: Arc::new(keys),
            bound: Arc::default(),
        }
    }

    /// The keys for the store at `url`: the ones bound to it when there are (a repository
    /// created there is wrapped under those only, and must open with them), else the keys
    /// bound to no store (`--key-file`, `FERRY_KEY_FILE`, `FERRY_KEY`) — so a daemon store
    /// without a `key_file` never gets another store's key.
    pub fn for_store(&self, url: &str) -> Keyring {
        let mine: Vec<KeyId> = self
            .bound
            .iter()
            .filter(|(u, _)| u == url)
            .map(|(_, id)| *id)
            .collect();
        if self.bound.is_empty() {
            return self.clone();
        }
        let keys = self
            .keys
            .iter()
            .filter(|k| {
                let id = k.id();
                match mine.is_empty() {
                    false => mine.contains(&id),
                    true => !self.bound.iter().any(|(_, b)| *b == id),
                }
            })
            .map(|k| UserKey::from_bytes(*k.0))
            .collect();
        Self::new(keys)
    }

    /// Whether the process holds no key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The keys, in the order given.
    pub fn keys(&self) -> &[UserKey] {
        &self.keys
    }

    /// The ids of the keys, in the order given.
    pub fn ids(&self) -> Vec<KeyId> {
        self.keys.iter().map(UserKey::id).collect()
    }
}

impl std::fmt::Debug for Keyring {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.ids()).finish()
    }
}

impl PartialEq for Keyring {
    fn eq(&self, other: &Self) -> bool {
        self.ids() == other.ids()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_with_a_bound_key_gets_that_key_only() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.key"), dir.path().join("b.key"));
        UserKey::from_bytes([1; 32]).write_new(&a).unwrap();
        UserKey::from_bytes([2; 32]).write_new(&b).unwrap();
        let ring = Keyring::read(KeySources {
            files: vec![a.clone()],
            bound: vec![("s3://bucket/b".into(), b.clone())],
            ..KeySources::default()
        })
        .unwrap();
        assert_eq!(ring.keys().len(), 2);
        let b_id = UserKey::from_bytes([2; 32]).id();
        assert_eq!(ring.for_store("s3://bucket/b").ids(), vec![b_id]);
        let a_id = UserKey::from_bytes([1; 32]).id();
        assert_eq!(ring.for_store("s3://bucket/other").ids(), vec![a_id]);
        let daemon = Keyring::read(KeySources {
            bound: vec![("s3://bucket/b".into(), b.clone())],
            ..KeySources::default()
        })
        .unwrap();
        assert!(daemon.for_store("s3://bucket/other").is_empty());
        assert_eq!(daemon.for_store("s3://bucket/b").ids(), vec![b_id]);
        assert!(!format!("{ring:?}").contains(&"01".repeat(32)), "{ring:?}");
        let missing = Keyring::read(KeySources {
            files: vec![dir.path().join("gone.key")],
            ..KeySources::default()
        })
        .expect_err("a missing key file fails");
        assert!(
            missing.to_string().starts_with("key file ")
                && missing.to_string().contains("gone.key"),
            "{missing}"
        );
    }
}
