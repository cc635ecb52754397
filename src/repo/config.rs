//! The repository config object (`config`): format version, repository id, chunker
//! parameters, pack size and compression. Written once at init, never changed.

use serde::{Deserialize, Serialize};

use crate::chunker::ChunkerParams;
use crate::crypto::Cipher;

/// Highest repository format version this build reads and writes. Version 2 adds delta
/// frames and position-stable cuts inside tensors (FORMAT.md); version 1 repositories stay
/// readable and writable as they were (no deltas).
pub const FORMAT_VERSION: u32 = 3;
/// The first format version whose repositories may hold delta frames.
pub const DELTA_VERSION: u32 = 2;
/// The first format version whose repositories may be encrypted (FORMAT.md "Encryption").
pub const ENCRYPTION_VERSION: u32 = 3;
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
    /// Element deltas (version 2 and later; absent: none are written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deltas: Option<DeltaParams>,
    /// Client-side encryption (version 3 and later; absent: a plain repository). Set at
    /// `init`, for the repository's life.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encryption: Option<Encryption>,
}

/// How an encrypted repository's objects are sealed (FORMAT.md "Encryption"). The data key
/// itself is in `keys/`, wrapped under each user key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Encryption {
    /// The AEAD's name ([`Cipher::name`]): `aes256gcmsiv` by default,
    /// `xchacha20poly1305` for those made before 2026-12-02 (or asked for with `--cipher`).
    pub cipher: String,
}

/// How pushes into a repository write element deltas (FORMAT.md, "Delta frames").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeltaParams {
    /// Longest chain of delta frames over a full frame: a restore reads at most
    /// `max_depth + 1` frames per chunk. 0 writes no deltas.
    pub max_depth: u8,
}

impl DeltaParams {
    /// Default chain bound: four deltas, then a full frame.
    pub const DEFAULT_MAX_DEPTH: u8 = 4;
}

impl Default for DeltaParams {
    fn default() -> Self {
        Self {
            max_depth: Self::DEFAULT_MAX_DEPTH,
        }
    }
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
            // Version 1 unless deltas are asked for: older ferry keeps reading it.
            version: 1,
            id: uuid::Uuid::new_v4().simple().to_string(),
            chunker,
            pack_size,
            zstd_level: DEFAULT_ZSTD_LEVEL,
            created: humantime::format_rfc3339_seconds(std::time::SystemTime::now()).to_string(),
            deltas: None,
            encryption: None,
        }
    }

    /// The same config at format version 3, encrypted with the default cipher.
    pub fn encrypted(self) -> Self {
        self.encrypted_with(Cipher::DEFAULT)
    }

    /// The same config at format version 3, encrypted with `cipher`.
    pub fn encrypted_with(mut self, cipher: Cipher) -> Self {
        self.version = self.version.max(ENCRYPTION_VERSION);
        self.encryption = Some(Encryption {
            cipher: cipher.name().into(),
        });
        self
    }

    /// Whether the repository is encrypted.
    pub fn is_encrypted(&self) -> bool {
        self.encryption.is_some()
    }

    /// The cipher an encrypted repository seals with (`None`: plain, or a cipher this build
    /// does not know, which [`Self::decode`] refuses).
    pub fn cipher(&self) -> Option<Cipher> {
        self.encryption
            .as_ref()
            .and_then(|e| Cipher::from_name(&e.cipher))
    }

    /// The same config at format version 2 with element deltas at most `max_depth` deep.
    pub fn with_deltas(mut self, max_depth: u8) -> Result<Self, ConfigError> {
        if max_depth > crate::codec::MAX_DELTA_DEPTH {
            return Err(ConfigError::Deltas {
                depth: max_depth,
                version: DELTA_VERSION,
            });
        }
        self.version = self.version.max(DELTA_VERSION);
        self.deltas = Some(DeltaParams { max_depth });
        Ok(self)
    }

    /// The delta settings pushes into this repository use, `None` when it writes none
    /// (a version 1 repository, or `max_depth` 0).
    pub fn delta_params(&self) -> Option<DeltaParams> {
        self.deltas
            .filter(|d| self.version >= DELTA_VERSION && d.max_depth > 0)
    }

    /// The same parameters under a new id (for a replication target).
    pub fn derived(&self) -> Self {
        let mut c = Self::new(self.chunker, self.pack_size);
        c.zstd_level = self.zstd_level;
        // The target may receive delta frames and the source's tensor cuts: same version.
        c.version = self.version;
        c.deltas = self.deltas;
        c.encryption = self.encryption.clone();
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
        if let Some(d) = cfg.deltas {
            if cfg.version < DELTA_VERSION || d.max_depth > crate::codec::MAX_DELTA_DEPTH {
                return Err(ConfigError::Deltas {
                    depth: d.max_depth,
                    version: cfg.version,
                });
            }
        }
        if let Some(e) = &cfg.encryption {
            if cfg.version < ENCRYPTION_VERSION || Cipher::from_name(&e.cipher).is_none() {
                return Err(ConfigError::Encryption {
                    cipher: e.cipher.chars().take(40).collect(),
                    version: cfg.version,
                });
            }
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
    /// `deltas` in a config whose version cannot hold it, or a depth out of range.
    #[error("deltas.max_depth {depth} needs format version 2 or later and at most {} (this config has version {version}): choose --deltas 1 to 16", crate::codec::MAX_DELTA_DEPTH)]
    Deltas {
        /// The `max_depth` found.
        depth: u8,
        /// The config's format version.
        version: u32,
    },
    /// `encryption` in a config whose version cannot hold it, or an unknown cipher.
    #[error("encryption with cipher {cipher:?} needs format version {ENCRYPTION_VERSION} and a cipher this ferry knows, aes256gcmsiv or xchacha20poly1305 (this config has version {version}; a newer ferry may read it)")]
    Encryption {
        /// The cipher named (at most 40 characters of it).
        cipher: String,
        /// The config's format version.
        version: u32,
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

    #[test]
    fn version_1_configs_stay_readable_and_write_no_deltas() {
        let v1 = RepoConfig::new(ChunkerParams::default(), DEFAULT_PACK_SIZE);
        assert_eq!((v1.version, v1.deltas), (1, None));
        let back = RepoConfig::decode(&v1.encode()).unwrap();
        assert_eq!(back, v1);
        assert_eq!(back.delta_params(), None);
        assert_eq!(back.derived().version, 1);
        let v2 = v1.clone().with_deltas(4).unwrap();
        assert_eq!(v2.version, 2);
        assert_eq!(v2.delta_params(), Some(DeltaParams::default()));
        assert!(v1.clone().with_deltas(99).is_err());
        assert_eq!(v2.derived().deltas, v2.deltas);
        // Deltas on a version 1 config, or a chain deeper than readers follow, are refused.
        let mut bad = v1.clone();
        bad.deltas = Some(DeltaParams::default());
        assert!(matches!(
            RepoConfig::decode(&bad.encode()),
            Err(ConfigError::Deltas { .. })
        ));
        let mut deep = v2.clone();
        deep.deltas = Some(DeltaParams { max_depth: 99 });
        assert!(matches!(
            RepoConfig::decode(&deep.encode()),
            Err(ConfigError::Deltas { .. })
        ));
    }

    #[test]
    fn encryption_needs_version_3_and_the_known_cipher() {
        let plain = RepoConfig::new(ChunkerParams::default(), DEFAULT_PACK_SIZE);
        let enc = plain.clone().encrypted();
        assert_eq!(enc.version, 3);
        assert!(enc.is_encrypted() && !plain.is_encrypted());
        assert_eq!(RepoConfig::decode(&enc.encode()).unwrap(), enc);
        assert_eq!(enc.cipher(), Some(Cipher::Aes256GcmSiv));
        assert_eq!(plain.cipher(), None);
        // Repositories made with the first cipher keep opening.
        let first = plain.clone().encrypted_with(Cipher::XChaCha20Poly1305);
        let back = RepoConfig::decode(&first.encode()).unwrap();
        assert_eq!(back.cipher(), Some(Cipher::XChaCha20Poly1305));
        assert!(String::from_utf8(first.encode())
            .unwrap()
            .contains(r#""cipher": "xchacha20poly1305""#));
        assert!(enc.derived().is_encrypted());
        let mut old = enc.clone();
        old.version = 2;
        assert!(matches!(
            RepoConfig::decode(&old.encode()),
            Err(ConfigError::Encryption { version: 2, .. })
        ));
        let mut other = enc;
        other.encryption = Some(Encryption {
            cipher: "rot13".into(),
        });
        assert!(matches!(
            RepoConfig::decode(&other.encode()),
            Err(ConfigError::Encryption { .. })
        ));
    }
}
