//! `Settings`: what the process environment decides for every operation (store retries,
//! timeouts and fault injection; the mirror's stale-upload age; the local base cache's size), resolved once where the
//! process starts — `main.rs` for a command, `Daemon::open` for the daemon — and handed to
//! [`super::App`], which passes it down. Nothing below reads these variables itself.

use crate::crypto::{KeySources, Keyring};
use crate::mirror::MirrorSettings;
use crate::store::{StoreError, StoreOptions};

/// The environment's choices for every store and operation of one process.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Retries, timeouts, `FERRY_FAULTS` and `FERRY_SLOW_SECS`: every store the process opens.
    pub store: StoreOptions,
    /// `FERRY_MIRROR_STALE_UPLOADS`: when `ferry mirror` aborts another run's upload.
    pub mirror: MirrorSettings,
    /// `FERRY_BASE_CACHE`: the size limit of each ref's local base cache, in bytes (0: none).
    pub base_cache: u64,
    /// The user keys encrypted repositories open with (`--key-file`, `FERRY_KEY_FILE`,
    /// `FERRY_KEY`; the daemon's `key_file`s), read once at the edge.
    pub keys: Keyring,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            store: StoreOptions::default(),
            mirror: MirrorSettings::default(),
            base_cache: crate::index::DEFAULT_BASE_CACHE,
            keys: Keyring::default(),
        }
    }
}

/// The variable that sizes the local base cache: a size (`32GiB`), or `0` / `off`.
pub const BASE_CACHE_VAR: &str = "FERRY_BASE_CACHE";

/// `FERRY_BASE_CACHE`'s value in bytes; a value that is not a size leaves the default (and
/// says so in the log).
pub fn base_cache_from(value: Option<&str>) -> u64 {
    let default = crate::index::DEFAULT_BASE_CACHE;
    match value.map(str::trim) {
        None | Some("") => default,
        Some("off") => 0,
        Some(v) => v.parse::<bytesize::ByteSize>().map_or_else(
            |e| {
                tracing::warn!(variable = BASE_CACHE_VAR, value = v, error = %e, "not a size (e.g. 32GiB, or off): using the default");
                default
            },
            |b| b.as_u64(),
        ),
    }
}

impl Settings {
    /// Reads every variable once from the process environment; an invalid one is an error
    /// that names it.
    pub fn from_env() -> Result<Self, StoreError> {
        Ok(Self {
            store: StoreOptions::from_env()?,
            mirror: MirrorSettings::from_env(),
            base_cache: base_cache_from(std::env::var(BASE_CACHE_VAR).ok().as_deref()),
            keys: Keyring::default(),
        })
    }

    /// Where the process's keys come from: `files` (`--key-file`, or the daemon config's),
    /// then `FERRY_KEY_FILE` and `FERRY_KEY` from the environment. Read them with
    /// [`Keyring::read`] into [`Self::keys`].
    pub fn key_sources(files: Vec<std::path::PathBuf>) -> KeySources {
        KeySources {
            files,
            env_file: std::env::var_os(crate::crypto::KEY_FILE_VAR)
                .filter(|v| !v.is_empty())
                .map(Into::into),
            env_key: std::env::var(crate::crypto::KEY_VAR)
                .ok()
                .filter(|v| !v.trim().is_empty())
                .map(zeroize::Zeroizing::new),
            bound: Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_cache_sizes() {
        let default = crate::index::DEFAULT_BASE_CACHE;
        assert_eq!(base_cache_from(None), default);
        assert_eq!(base_cache_from(Some("off")), 0);
        assert_eq!(base_cache_from(Some("0")), 0);
        assert_eq!(base_cache_from(Some("2GiB")), 2 << 30);
        assert_eq!(base_cache_from(Some("lots")), default);
    }
}
