//! Client-side encryption (issue 15), its core: user keys and their files, the envelope that
//! wraps a repository's data key under each user key (so a key can be rotated without
//! rewriting packs), sealed objects and frames (XChaCha20-Poly1305, a fresh random nonce
//! each), and keyed chunk ids. FORMAT.md "Encryption" is the design. Repositories do not use
//! it yet: the format version that does (3) comes with the repository layer's side.
//!
//! Nothing here prints, logs or formats a key: `Debug` shows only a key's id, errors never
//! carry key bytes or the text they were parsed from, and key bytes are zeroed when dropped.

mod keyfile;
mod keyring;

use chacha20poly1305::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

pub use keyfile::{generate_key_file, KeyFileReport};
pub use keyring::{KeySources, Keyring, KEY_FILE_VAR, KEY_VAR};

/// Bytes of every key: user keys, data keys and the keys derived from them.
pub const KEY_LEN: usize = 32;
/// Bytes of an XChaCha20 nonce.
const NONCE_LEN: usize = 24;
/// Bytes of a Poly1305 tag.
const TAG_LEN: usize = 16;
/// The first byte of a sealed object or frame: the layout's version.
const SEAL_VERSION: u8 = 1;
/// What sealing adds to its plaintext: version, nonce, tag.
pub const SEAL_OVERHEAD: usize = 1 + NONCE_LEN + TAG_LEN;
/// Where a sealed object's ciphertext starts (after the version byte and the nonce).
pub const PEEK_OFFSET: usize = 1 + NONCE_LEN;
/// The first bytes of a wrapped data key (`keys/<key id>`).
const WRAP_MAGIC: &[u8; 8] = b"FRYKEY01";
/// Bytes of a key id.
pub const KEY_ID_LEN: usize = 16;
/// Bytes of a wrapped data key: magic, key id, nonce, the data key sealed (key + tag).
pub const WRAPPED_LEN: usize = WRAP_MAGIC.len() + KEY_ID_LEN + NONCE_LEN + KEY_LEN + TAG_LEN;

// BLAKE3 `derive_key` contexts: one per use of a key, never reused for another.
const CONTEXT_KEY_ID: &str = "ferry 2026-12-02 user key id";
const CONTEXT_WRAP: &str = "ferry 2026-12-02 data key wrapping";
const CONTEXT_CHUNK_ID: &str = "ferry 2026-12-02 keyed chunk id";
const CONTEXT_SEAL: &str = "ferry 2026-12-02 object and frame sealing";

/// Why a key, an envelope or a sealed object could not be used. No variant carries key bytes
/// or the text a key was read from.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// The text is not a ferry key (`ferry key generate` writes them).
    #[error("{what} is not a ferry key: {why} (make one with `ferry key generate PATH`)")]
    BadKeyText {
        /// Where the text came from (a path, or the variable's name).
        what: String,
        /// What is wrong with it, never the text itself.
        why: &'static str,
    },
    /// The key is well formed but not one the repository's data key is wrapped under, or the
    /// wrapping does not authenticate under it.
    #[error("the key does not open this repository ({object}): use a key file this repository was created or rotated with")]
    WrongKey {
        /// The wrapped key object (or the repository) tried.
        object: String,
    },
    /// A wrapped key object that is not one (wrong magic or length).
    #[error("{object} is not a wrapped ferry data key: {why}")]
    BadEnvelope {
        /// The object.
        object: String,
        /// What is wrong with it.
        why: &'static str,
    },
    /// A sealed object or frame that does not authenticate: damaged, truncated, or sealed
    /// for another place or under another key.
    #[error("{object} fails authentication: {why}; it was changed, truncated or sealed under another key (`ferry verify --read-data` lists every such object)")]
    Unauthentic {
        /// The object (and, for a frame, its offset).
        object: String,
        /// What failed.
        why: &'static str,
    },
    /// `ferry key generate` found a file where the key was to go.
    #[error("{path} already exists: a key file is never overwritten (choose another path, or move that file away first)")]
    KeyFileExists {
        /// The path.
        path: String,
    },
    /// Reading or writing a key file.
    #[error("key file {path}: {source}")]
    Io {
        /// The key file.
        path: String,
        /// The failure.
        #[source]
        source: std::io::Error,
    },
}

/// A user's key: 32 random bytes, kept in a key file or `FERRY_KEY`. It never encrypts data
/// itself: it wraps the repository's data key (the envelope), so it can be replaced by
/// `ferry key rotate` without rewriting anything else.
pub struct UserKey(Zeroizing<[u8; KEY_LEN]>);

impl UserKey {
    /// A new random key, from the operating system's generator.
    pub fn generate() -> Self {
        Self(Zeroizing::new(random_key()))
    }

    /// The key from its raw bytes.
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        Self(Zeroizing::new(bytes))
    }

    /// The key's public id: 16 bytes derived from it (naming its wrapped data key object);
    /// it reveals nothing of the key.
    pub fn id(&self) -> KeyId {
        let d = Zeroizing::new(blake3::derive_key(CONTEXT_KEY_ID, &self.0[..]));
        let mut id = [0u8; KEY_ID_LEN];
        id.copy_from_slice(&d[..KEY_ID_LEN]);
        KeyId(id)
    }

    fn wrapping_cipher(&self) -> XChaCha20Poly1305 {
        let k = Zeroizing::new(blake3::derive_key(CONTEXT_WRAP, &self.0[..]));
        XChaCha20Poly1305::new((&*k).into())
    }
}

impl std::fmt::Debug for UserKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UserKey({})", self.id())
    }
}

/// A user key's public id (hex when printed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; KEY_ID_LEN]);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}

/// A repository's data key: random, made once at `init`, stored only wrapped under user
/// keys. The keys that seal objects and key chunk ids are derived from it.
pub struct DataKey {
    raw: Zeroizing<[u8; KEY_LEN]>,
    id_key: Zeroizing<[u8; KEY_LEN]>,
    /// The sealing key itself, for [`Self::peek`].
    seal_key: Zeroizing<[u8; KEY_LEN]>,
    sealer: XChaCha20Poly1305,
}

impl DataKey {
    /// A new random data key.
    pub fn generate() -> Self {
        Self::from_bytes(random_key())
    }

    /// The data key from its raw bytes (an unwrapped envelope; tests and fuzzing).
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Self {
        let raw = Zeroizing::new(bytes);
        let id_key = Zeroizing::new(blake3::derive_key(CONTEXT_CHUNK_ID, &raw[..]));
        let seal_key = Zeroizing::new(blake3::derive_key(CONTEXT_SEAL, &raw[..]));
        Self {
            sealer: XChaCha20Poly1305::new((&*seal_key).into()),
            seal_key,
            raw,
            id_key,
        }
    }

    /// How the repository names chunks and snapshots: BLAKE3 keyed with the id key.
    pub fn naming(&self) -> crate::ids::Naming {
        crate::ids::Naming::keyed(*self.id_key)
    }

    /// Whether `other` is the same data key (frames sealed under one open under the other).
    pub fn same_as(&self, other: &DataKey) -> bool {
        self.raw[..] == other.raw[..]
    }

    /// A chunk's id in an encrypted repository: BLAKE3 keyed with a key derived from the data
    /// key, so dedup works inside the repository while an outsider cannot confirm a guess.
    pub fn chunk_id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    /// Seals `plaintext` with a fresh random nonce, authenticating `context` too (what the
    /// sealed bytes are for: an object's kind and name, so one cannot be swapped for another).
    /// Layout: version (1), nonce (24), ciphertext, tag (16).
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
        out.push(SEAL_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(plaintext);
        // Encrypted where it lies: one copy of the plaintext, not two.
        let tag = self
            .sealer
            .encrypt_in_place_detached(&nonce, &aad(context), &mut out[1 + NONCE_LEN..])
            .expect("XChaCha20-Poly1305 seals any length a process holds");
        out.extend_from_slice(&tag);
        out
    }

    /// The first bytes of what [`Self::seal`] sealed, from a prefix of the sealed bytes (at
    /// least [`PEEK_OFFSET`] long), decrypted **without authentication**: XChaCha20's
    /// keystream from the payload's first block on, as the AEAD applies it. A hint only,
    /// never trusted as data — what a plain repository's unchecked head read would give (a
    /// delta push reads a frame's 34-byte head so). `None` when the prefix is too short or of
    /// another sealing version.
    pub fn peek(&self, sealed_prefix: &[u8]) -> Option<Vec<u8>> {
        use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
        if sealed_prefix.len() < PEEK_OFFSET || sealed_prefix[0] != SEAL_VERSION {
            return None;
        }
        let nonce = &sealed_prefix[1..PEEK_OFFSET];
        let mut out = sealed_prefix[PEEK_OFFSET..].to_vec();
        let mut cipher =
            chacha20::XChaCha20::new((&*self.seal_key).into(), XNonce::from_slice(nonce));
        // Block 0 keys Poly1305; the payload is encrypted from block 1 on (RFC 8439 § 2.8).
        cipher.seek(64u64);
        cipher.apply_keystream(&mut out);
        Some(out)
    }

    /// Opens what [`Self::seal`] made for the same `context`; `object` names it in errors.
    pub fn open(
        &self,
        object: &str,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let unauthentic = |why| CryptoError::Unauthentic {
            object: object.to_string(),
            why,
        };
        if sealed.len() < SEAL_OVERHEAD {
            return Err(unauthentic("shorter than its header and tag"));
        }
        let (version, rest) = sealed.split_at(1);
        if version[0] != SEAL_VERSION {
            return Err(unauthentic("unknown sealing version"));
        }
        let (nonce, body) = rest.split_at(NONCE_LEN);
        let aad = aad(context);
        self.sealer
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: &aad,
                },
            )
            .map_err(|_| unauthentic("its tag does not match"))
    }

    /// The data key wrapped under `user` for repository `repo_id`: the content of the
    /// object `keys/<user key id>`. Layout: magic, key id, nonce, sealed data key.
    pub fn wrap(&self, user: &UserKey, repo_id: &str) -> Vec<u8> {
        let id = user.id();
        let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = wrap_aad(&id, repo_id);
        let sealed = user
            .wrapping_cipher()
            .encrypt(
                &nonce,
                Payload {
                    msg: &self.raw[..],
                    aad: &aad,
                },
            )
            .expect("XChaCha20-Poly1305 seals 32 bytes");
        let mut out = Vec::with_capacity(WRAPPED_LEN);
        out.extend_from_slice(WRAP_MAGIC);
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        out
    }

    /// The data key in `wrapped` (object `object` of repository `repo_id`), opened with
    /// `user`: another key, or a wrapping made for another repository, is
    /// [`CryptoError::WrongKey`]; bytes that are not a wrapping are `BadEnvelope`.
    pub fn unwrap(
        wrapped: &[u8],
        user: &UserKey,
        repo_id: &str,
        object: &str,
    ) -> Result<Self, CryptoError> {
        let bad = |why| CryptoError::BadEnvelope {
            object: object.to_string(),
            why,
        };
        if wrapped.len() != WRAPPED_LEN {
            return Err(bad("wrong length"));
        }
        let (magic, rest) = wrapped.split_at(WRAP_MAGIC.len());
        if magic != WRAP_MAGIC {
            return Err(bad("wrong magic"));
        }
        let (id, rest) = rest.split_at(KEY_ID_LEN);
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let wrong = || CryptoError::WrongKey {
            object: object.to_string(),
        };
        let own = user.id();
        if id != own.0 {
            return Err(wrong());
        }
        let raw = Zeroizing::new(
            user.wrapping_cipher()
                .decrypt(
                    XNonce::from_slice(nonce),
                    Payload {
                        msg: sealed,
                        aad: &wrap_aad(&own, repo_id),
                    },
                )
                .map_err(|_| wrong())?,
        );
        let bytes: [u8; KEY_LEN] = raw[..].try_into().map_err(|_| bad("wrong key length"))?;
        Ok(Self::from_bytes(bytes))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// The associated data of a sealing: its version and its context.
fn aad(context: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(1 + context.len());
    a.push(SEAL_VERSION);
    a.extend_from_slice(context);
    a
}

/// The associated data of a wrapping: magic, key id and the repository's id, so a wrapping
/// copied into another repository does not open there.
fn wrap_aad(id: &KeyId, repo_id: &str) -> Vec<u8> {
    let mut a = Vec::with_capacity(WRAP_MAGIC.len() + KEY_ID_LEN + repo_id.len());
    a.extend_from_slice(WRAP_MAGIC);
    a.extend_from_slice(&id.0);
    a.extend_from_slice(repo_id.as_bytes());
    a
}

fn random_key() -> [u8; KEY_LEN] {
    let k = XChaCha20Poly1305::generate_key(&mut OsRng);
    let mut out = [0u8; KEY_LEN];
    out.copy_from_slice(&k);
    out
}

#[cfg(test)]
mod tests;
