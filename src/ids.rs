//! Content ids: `ChunkId`, `PackId`, `SnapshotId` and `FileHash`, each a BLAKE3-256 digest
//! shown as hex.

use std::fmt;
use std::str::FromStr;

/// Error parsing an id from hex.
#[derive(Debug, thiserror::Error)]
#[error("invalid {kind} id {text:?}: expected 64 hex digits")]
pub struct IdParseError {
    kind: &'static str,
    text: String,
}

macro_rules! digest_id {
    ($name:ident, $kind:literal) => {
        #[doc = concat!("BLAKE3-256 digest naming a ", $kind, ".")]
        #[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(pub [u8; 32]);

        impl $name {
            /// Hashes `bytes` into an id.
            pub fn of(bytes: &[u8]) -> Self {
                Self(*blake3::hash(bytes).as_bytes())
            }

            /// Lowercase hex, 64 characters.
            pub fn to_hex(&self) -> String {
                hex(&self.0)
            }

            /// Reads an id from the first 32 bytes of `bytes`, if there are that many.
            pub fn from_slice(bytes: &[u8]) -> Option<Self> {
                bytes.get(..32)?.try_into().ok().map(Self)
            }
        }

        impl From<blake3::Hash> for $name {
            fn from(h: blake3::Hash) -> Self {
                Self(*h.as_bytes())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.to_hex())
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({})", stringify!($name), &self.to_hex()[..12])
            }
        }

        impl FromStr for $name {
            type Err = IdParseError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                parse_hex32(s).map(Self).ok_or_else(|| IdParseError {
                    kind: $kind,
                    text: s.chars().take(80).collect(),
                })
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(&self.to_hex())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

digest_id!(ChunkId, "chunk");
digest_id!(PackId, "pack");
digest_id!(SnapshotId, "snapshot");
digest_id!(FileHash, "file's whole content");

/// How a repository names its chunks and snapshots: plain BLAKE3, or — in an encrypted
/// repository — BLAKE3 keyed with a key derived from its data key (`crypto::DataKey`), so
/// dedup still works inside the repository while an outsider with a guess of some content
/// cannot compute its id. Every check of bytes against an id goes through the repository's
/// naming.
#[derive(Clone, Default)]
pub struct Naming(Option<std::sync::Arc<zeroize::Zeroizing<[u8; 32]>>>);

impl Naming {
    /// Plain BLAKE3 (an unencrypted repository).
    pub const PLAIN: Naming = Naming(None);

    /// BLAKE3 keyed with `key`.
    pub fn keyed(key: [u8; 32]) -> Self {
        Self(Some(std::sync::Arc::new(zeroize::Zeroizing::new(key))))
    }

    /// Whether ids are keyed.
    pub fn is_keyed(&self) -> bool {
        self.0.is_some()
    }

    fn digest(&self, bytes: &[u8]) -> [u8; 32] {
        match &self.0 {
            None => *blake3::hash(bytes).as_bytes(),
            Some(k) => *blake3::keyed_hash(k, bytes).as_bytes(),
        }
    }

    /// The id of a chunk's bytes.
    pub fn chunk(&self, bytes: &[u8]) -> ChunkId {
        ChunkId(self.digest(bytes))
    }

    /// The id of a snapshot's encoded bytes.
    pub fn snapshot(&self, bytes: &[u8]) -> SnapshotId {
        SnapshotId(self.digest(bytes))
    }

    /// A public tag of the naming, for keying local caches by it: empty for plain BLAKE3,
    /// else 16 hex digits derived from the key (they reveal nothing of it).
    pub fn tag(&self) -> String {
        match &self.0 {
            None => String::new(),
            Some(k) => hex(&blake3::derive_key("ferry 2026-12-02 naming tag", &k[..])[..8]),
        }
    }
}

impl PartialEq for Naming {
    fn eq(&self, other: &Self) -> bool {
        match (&self.0, &other.0) {
            (None, None) => true,
            (Some(a), Some(b)) => a[..] == b[..],
            _ => false,
        }
    }
}

impl Eq for Naming {}

impl fmt::Debug for Naming {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            None => f.write_str("Naming::PLAIN"),
            Some(_) => write!(f, "Naming::keyed({})", self.tag()),
        }
    }
}

/// Lowercase hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[(b >> 4) as usize] as char);
        out.push(DIGITS[(b & 15) as usize] as char);
    }
    out
}

fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    let s = s.as_bytes();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = ChunkId::of(b"hello");
        let text = id.to_hex();
        assert_eq!(text.len(), 64);
        assert_eq!(text.parse::<ChunkId>().unwrap(), id);
        assert!("zz".parse::<ChunkId>().is_err());
        assert!(text[..63].parse::<ChunkId>().is_err());
    }
}
