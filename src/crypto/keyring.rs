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
}

/// The name `FERRY_KEY` goes by in errors (never its value).
pub const KEY_VAR: &str = "FERRY_KEY";
/// The variable naming a key file.
pub const KEY_FILE_VAR: &str = "FERRY_KEY_FILE";

/// The user keys of one process (none: it works with plain repositories only). Cheap to
/// clone; `Debug` shows key ids only.
#[derive(Clone, Default)]
pub struct Keyring(Arc<Vec<UserKey>>);

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
        Ok(Self::new(keys))
    }

    /// A ring of `keys` (the same key given twice is kept once).
    pub fn new(keys: Vec<UserKey>) -> Self {
        let mut seen = std::collections::HashSet::new();
        let keys = keys.into_iter().filter(|k| seen.insert(k.id())).collect();
        Self(Arc::new(keys))
    }

    /// Whether the process holds no key.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The keys, in the order given.
    pub fn keys(&self) -> &[UserKey] {
        &self.0
    }

    /// The ids of the keys, in the order given.
    pub fn ids(&self) -> Vec<KeyId> {
        self.0.iter().map(UserKey::id).collect()
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
