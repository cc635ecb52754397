//! The repository config object (`config`): format version, repository id, chunker
//! parameters, pack size and compression. Written once at init, never changed.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;

/// Highest repository format version this build reads and writes.
pub const FORMAT_VERSION: u32 = 1;
/// Marker that tells a ferry config from any other JSON object.
pub const FORMAT_NAME: &str = "ferry-repository";

/// Persisted form of the config (JSON). Kept apart from in-memory types on purpose.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Always `ferry`: tells a ferry repository from other JSON at `config`.
    pub format: String,
    /// Format version ([`FORMAT_VERSION`] when written); a newer one is refused.
    pub version: u32,
    /// Random id; the local index keys everything it knows about this repository by it.
    pub id: String,
    /// How files are cut; fixed for the repository's life (part of its format).
    pub chunker: ChunkerParams,
    /// Target size of a pack object in bytes.
    pub pack_size: u64,
    /// zstd level used for new chunks.
    pub zstd_level: i32,
    /// RFC 3339 creation time.
    pub created: String,
}

/// Pack size bounds: below 1 MiB request costs dominate, above 1 GiB memory does.
pub const PACK_SIZE_RANGE: std::ops::RangeInclusive<u64> = (1 << 20)..=(1 << 30);
/// Default pack size, 32 MiB: in the 16–64 MiB range the industry settled on.
pub const DEFAULT_PACK_SIZE: u64 = 32 << 20;
/// Default zstd level: fast enough to keep up with two cores' hashing.
pub const DEFAULT_ZSTD_LEVEL: i32 = 1;

impl RepoConfig {
    /// A new repository's config: a fresh random id, the default zstd level, created now.
    pub fn new(chunker: ChunkerParams, pack_size: u64) -> Self {
        Self {
            format: FORMAT_NAME.into(),
            version: FORMAT_VERSION,
            id: uuid::Uuid::new_v4().simple().to_string(),
            chunker,
            pack_size,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
        }
    }

    /// The same parameters under a new id (for a replication target).
    pub fn derived(&self) -> Self {
        let mut c = Self::new(self.chunker, self.pack_size);
        c.zstd_level = self.zstd_level;
        c
    }

    /// Parses and checks a config object's bytes.
    pub fn decode(bytes: &[u8]) -> Result<Self, ConfigError> {
        #[derive(Deserialize)]
        struct Probe {
            format: Option<String>,
            version: Option<u32>,
        }
        let probe: Probe = serde_json::from_slice(bytes).map_err(ConfigError::NotJson)?;
        if probe.format.as_deref() != Some(FORMAT_NAME) {
            return Err(ConfigError::NotFerry);
        }
        match probe.version {
            Some(v) if v > FORMAT_VERSION => return Err(ConfigError::Newer { version: v }),
            Some(_) => {}
            None => return Err(ConfigError::NoVersion),
        }
        let cfg: RepoConfig = serde_json::from_slice(bytes).map_err(ConfigError::Invalid)?;
        cfg.chunker.validate()?;
        if !PACK_SIZE_RANGE.contains(&cfg.pack_size) {
            return Err(ConfigError::PackSize {
                size: cfg.pack_size,
            });
        }
        if cfg.id.is_empty() || !cfg.id.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(ConfigError::BadId);
        }
        if !(-7..=22).contains(&cfg.zstd_level) {
            return Err(ConfigError::ZstdLevel {
                level: cfg.zstd_level,
            });
        }
        Ok(cfg)
    }

    /// The config as stored (pretty JSON).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = serde_json::to_vec_pretty(self).expect("config serializes");
        out.push(b'\n');
        out
    }
}

/// Why bytes are not a repository config this ferry can use. The repository names the object.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The bytes are not JSON.
    #[error("not a ferry config: {0}")]
    NotJson(#[source] serde_json::Error),
    /// The JSON's `format` is not `ferry`.
    #[error("not a ferry repository config")]
    NotFerry,
    /// Written by a newer ferry.
    #[error(
        "format version {version} is newer than this ferry reads ({FORMAT_VERSION}): upgrade ferry"
    )]
    Newer {
        /// The format version found.
        version: u32,
    },
    /// The JSON has no `version`.
    #[error("config has no version")]
    NoVersion,
    /// The JSON does not match the config's fields.
    #[error("invalid config: {0}")]
    Invalid(#[source] serde_json::Error),
    /// The chunker parameters are invalid.
    #[error(transparent)]
    Chunker(#[from] crate::chunker::ChunkerParamsError),
    /// The pack size is outside [`PACK_SIZE_RANGE`].
    #[error("pack size {size} out of range")]
    PackSize {
        /// The size found, in bytes.
        size: u64,
    },
    /// The id is empty or not alphanumeric.
    #[error("config id must be alphanumeric")]
    BadId,
    /// The zstd level is outside what zstd accepts.
    #[error("zstd level {level} out of range")]
    ZstdLevel {
        /// The level found.
        level: i32,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_rejects() {
        let cfg = RepoConfig::new(ChunkerParams::default(), DEFAULT_PACK_SIZE);
        assert_eq!(RepoConfig::decode(&cfg.encode()).unwrap(), cfg);
        assert!(matches!(
            RepoConfig::decode(b"{}"),
            Err(ConfigError::NotFerry)
        ));
        assert!(matches!(
            RepoConfig::decode(b"\x00garbage"),
            Err(ConfigError::NotJson(_))
        ));
        let newer = String::from_utf8(cfg.encode())
            .unwrap()
            .replace("\"version\": 1", "\"version\": 99");
        let err = RepoConfig::decode(newer.as_bytes()).unwrap_err();
        assert!(matches!(err, ConfigError::Newer { version: 99 }), "{err}");
        assert!(err.to_string().contains("upgrade ferry"), "{err}");
        let unknown = String::from_utf8(cfg.encode())
            .unwrap()
            .replacen('{', "{\"extra\": 1,", 1);
        assert!(matches!(
            RepoConfig::decode(unknown.as_bytes()),
            Err(ConfigError::Invalid(_))
        ));
    }
}
