//! Client-side encryption (issue 15), its core: user keys and their files, the envelope that
//! wraps a repository's data key under each user key (so a key can be rotated without
//! rewriting packs), sealed objects and frames (AES-256-GCM-SIV by default, XChaCha20-Poly1305
//! for repositories made so; a fresh random nonce each), and keyed chunk ids. FORMAT.md
//! "Encryption" is the design; `repo::seal` applies it to a repository's objects.
//!
//! Nothing here prints, logs or formats a key: `Debug` shows only a key's id, errors never
//! carry key bytes or the text they were parsed from, and key bytes are zeroed when dropped.

mod keyfile;
mod keyring;

use aes_gcm_siv::aead::inout::InOutBuf;
use aes_gcm_siv::aead::AeadInOut;
use aes_gcm_siv::aes::cipher::{BlockCipherEncrypt, KeyInit as _};
use aes_gcm_siv::aes::Aes256;
use aes_gcm_siv::Aes256GcmSiv;
use chacha20poly1305::aead::rand_core::RngCore;
use chacha20poly1305::aead::{Aead, AeadCore, AeadInPlace, KeyInit, OsRng, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use zeroize::Zeroizing;

pub use keyfile::{generate_key_file, KeyFileReport};
pub use keyring::{KeySources, Keyring, KEY_FILE_VAR, KEY_VAR};

/// Bytes of every key: user keys, data keys and the keys derived from them.
pub const KEY_LEN: usize = 32;
/// Bytes of an XChaCha20 nonce (sealings and wrappings under XChaCha20-Poly1305).
const NONCE_LEN: usize = 24;
/// Bytes of an AES-GCM-SIV nonce.
const SIV_NONCE_LEN: usize = 12;
/// Bytes of a Poly1305 or AES-GCM-SIV tag.
const TAG_LEN: usize = 16;
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

/// The AEAD that seals an encrypted repository's objects and frames, named in its config
/// (FORMAT.md "Encryption" argues the choice). The data key's wrappings (`keys/`) are
/// XChaCha20-Poly1305 under either.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cipher {
    /// AES-256-GCM-SIV (RFC 8452), the default: misuse-resistant, and about three times
    /// XChaCha20-Poly1305's speed where AES and carry-less multiply are in hardware.
    /// Layout: version 2, nonce (12), tag (16), ciphertext.
    Aes256GcmSiv,
    /// XChaCha20-Poly1305, the cipher of encrypted repositories made before 2026-12-02.
    /// Layout: version 1, nonce (24), ciphertext, tag (16).
    XChaCha20Poly1305,
}

impl Cipher {
    /// What new encrypted repositories use.
    pub const DEFAULT: Cipher = Cipher::Aes256GcmSiv;

    /// The name in a repository's config.
    pub fn name(self) -> &'static str {
        match self {
            Cipher::Aes256GcmSiv => "aes256gcmsiv",
            Cipher::XChaCha20Poly1305 => "xchacha20poly1305",
        }
    }

    /// The cipher a config names, if this build knows it.
    pub fn from_name(name: &str) -> Option<Self> {
        [Cipher::Aes256GcmSiv, Cipher::XChaCha20Poly1305]
            .into_iter()
            .find(|c| c.name() == name)
    }

    /// The first byte of what it seals: the layout's version.
    fn version(self) -> u8 {
        match self {
            Cipher::Aes256GcmSiv => 2,
            Cipher::XChaCha20Poly1305 => 1,
        }
    }

    fn nonce_len(self) -> usize {
        match self {
            Cipher::Aes256GcmSiv => SIV_NONCE_LEN,
            Cipher::XChaCha20Poly1305 => NONCE_LEN,
        }
    }

    /// What sealing adds to a plaintext: version, nonce, tag.
    pub fn overhead(self) -> usize {
        1 + self.nonce_len() + TAG_LEN
    }

    /// Where a sealed payload's ciphertext starts: what [`DataKey::peek`] needs before the
    /// head it decrypts.
    pub fn peek_offset(self) -> usize {
        match self {
            Cipher::Aes256GcmSiv => 1 + SIV_NONCE_LEN + TAG_LEN,
            Cipher::XChaCha20Poly1305 => 1 + NONCE_LEN,
        }
    }
}

/// A sealing taken apart: version byte, nonce (the first [`Cipher`]'s nonce length bytes),
/// tag, and where the ciphertext lies.
struct Parts {
    version: u8,
    nonce: [u8; NONCE_LEN],
    tag: [u8; TAG_LEN],
    body: std::ops::Range<usize>,
}

/// The sealing cipher, keyed.
enum Sealer {
    /// The key-generating AES key too, for [`DataKey::peek`].
    Siv(Box<Aes256GcmSiv>, Box<Aes256>),
    XChaCha(Box<XChaCha20Poly1305>),
}

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
    cipher: Cipher,
    sealer: Sealer,
}

impl DataKey {
    /// A new random data key that seals with `cipher`.
    pub fn generate(cipher: Cipher) -> Self {
        Self::from_bytes(random_key(), cipher)
    }

    /// The data key from its raw bytes (an unwrapped envelope; tests and fuzzing), sealing
    /// with `cipher` (the repository's config names it).
    pub fn from_bytes(bytes: [u8; KEY_LEN], cipher: Cipher) -> Self {
        let raw = Zeroizing::new(bytes);
        let id_key = Zeroizing::new(blake3::derive_key(CONTEXT_CHUNK_ID, &raw[..]));
        let seal_key = Zeroizing::new(blake3::derive_key(CONTEXT_SEAL, &raw[..]));
        let sealer = match cipher {
            Cipher::Aes256GcmSiv => {
                let aes = Aes256::new((&*seal_key).into());
                Sealer::Siv(Box::new(Aes256GcmSiv::from(aes.clone())), Box::new(aes))
            }
            Cipher::XChaCha20Poly1305 => {
                Sealer::XChaCha(Box::new(XChaCha20Poly1305::new((&*seal_key).into())))
            }
        };
        Self {
            sealer,
            cipher,
            seal_key,
            raw,
            id_key,
        }
    }

    /// The cipher it seals with.
    pub fn cipher(&self) -> Cipher {
        self.cipher
    }

    /// How the repository names chunks and snapshots: BLAKE3 keyed with the id key.
    pub fn naming(&self) -> crate::ids::Naming {
        crate::ids::Naming::keyed(*self.id_key)
    }

    /// Whether `other` is the same data key sealing with the same cipher (frames sealed
    /// under one open under the other).
    pub fn same_as(&self, other: &DataKey) -> bool {
        self.raw[..] == other.raw[..] && self.cipher == other.cipher
    }

    /// A chunk's id in an encrypted repository: BLAKE3 keyed with a key derived from the data
    /// key, so dedup works inside the repository while an outsider cannot confirm a guess.
    pub fn chunk_id(&self, data: &[u8]) -> [u8; 32] {
        *blake3::keyed_hash(&self.id_key, data).as_bytes()
    }

    /// Seals `plaintext` with a fresh random nonce, authenticating `context` too (what the
    /// sealed bytes are for: an object's kind and name, so one cannot be swapped for another).
    /// Layout: [`Cipher`]'s.
    pub fn seal(&self, context: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let version = self.cipher.version();
        let aad = aad(version, context);
        let mut out = Vec::with_capacity(self.cipher.overhead() + plaintext.len());
        out.push(version);
        match &self.sealer {
            Sealer::Siv(siv, _) => {
                let mut nonce = [0u8; SIV_NONCE_LEN];
                OsRng.fill_bytes(&mut nonce);
                out.extend_from_slice(&nonce);
                // The tag's place, filled once the ciphertext is made.
                out.extend_from_slice(&[0; TAG_LEN]);
                let start = out.len();
                out.extend_from_slice(plaintext);
                // Encrypted where it lies (measured a little faster than into zeroed bytes).
                let tag = siv
                    .encrypt_inout_detached(
                        (&nonce).into(),
                        &aad,
                        InOutBuf::from(&mut out[start..]),
                    )
                    .expect("AES-256-GCM-SIV seals up to 64 GiB, more than a frame or object");
                out[start - TAG_LEN..start].copy_from_slice(&tag);
            }
            Sealer::XChaCha(x) => {
                let nonce = XChaCha20Poly1305::generate_nonce(&mut OsRng);
                out.extend_from_slice(&nonce);
                out.extend_from_slice(plaintext);
                // Encrypted where it lies: one copy of the plaintext, not two.
                let tag = x
                    .encrypt_in_place_detached(&nonce, &aad, &mut out[1 + NONCE_LEN..])
                    .expect("XChaCha20-Poly1305 seals any length a process holds");
                out.extend_from_slice(&tag);
            }
        }
        out
    }

    /// The first bytes of what [`Self::seal`] sealed, from a prefix of the sealed bytes (at
    /// least [`Cipher::peek_offset`] long), decrypted **without authentication**: the
    /// cipher's keystream from the payload's first byte on, as the AEAD applies it. A hint
    /// only, never trusted as data — what a plain repository's unchecked head read would give
    /// (a delta push reads a frame's 34-byte head so). `None` when the prefix is too short or
    /// of another sealing version.
    pub fn peek(&self, sealed_prefix: &[u8]) -> Option<Vec<u8>> {
        let offset = self.cipher.peek_offset();
        if sealed_prefix.len() < offset || sealed_prefix[0] != self.cipher.version() {
            return None;
        }
        let mut out = sealed_prefix[offset..].to_vec();
        match &self.sealer {
            Sealer::Siv(_, kgk) => {
                let nonce = &sealed_prefix[1..1 + SIV_NONCE_LEN];
                let tag: [u8; TAG_LEN] =
                    sealed_prefix[1 + SIV_NONCE_LEN..offset].try_into().ok()?;
                siv_keystream(kgk, nonce, tag, &mut out);
            }
            Sealer::XChaCha(_) => {
                use chacha20::cipher::{KeyIvInit, StreamCipher, StreamCipherSeek};
                let nonce = &sealed_prefix[1..offset];
                let mut cipher =
                    chacha20::XChaCha20::new((&*self.seal_key).into(), XNonce::from_slice(nonce));
                // Block 0 keys Poly1305; the payload is encrypted from block 1 on
                // (RFC 8439 § 2.8).
                cipher.seek(64u64);
                cipher.apply_keystream(&mut out);
            }
        }
        Some(out)
    }

    /// Opens what [`Self::seal`] made for the same `context`; `object` names it in errors.
    pub fn open(
        &self,
        object: &str,
        context: &[u8],
        sealed: &[u8],
    ) -> Result<Vec<u8>, CryptoError> {
        let parts = self.parts(object, sealed)?;
        let mut body = sealed[parts.body.clone()].to_vec();
        self.decrypt(object, context, &parts, &mut body)?;
        Ok(body)
    }

    /// [`Self::open`] where the sealed bytes lie: decrypts them in `sealed` and returns where
    /// the plaintext is in it. On an error the bytes are garbage.
    pub fn open_in_place(
        &self,
        object: &str,
        context: &[u8],
        sealed: &mut [u8],
    ) -> Result<std::ops::Range<usize>, CryptoError> {
        let parts = self.parts(object, sealed)?;
        self.decrypt(object, context, &parts, &mut sealed[parts.body.clone()])?;
        Ok(parts.body)
    }

    /// A sealing's version, nonce, tag and where its ciphertext lies, once its length and
    /// version are checked.
    fn parts(&self, object: &str, sealed: &[u8]) -> Result<Parts, CryptoError> {
        let unauthentic = |why| CryptoError::Unauthentic {
            object: object.to_string(),
            why,
        };
        let c = self.cipher;
        if sealed.len() < c.overhead() {
            return Err(unauthentic("shorter than its header and tag"));
        }
        if sealed[0] != c.version() {
            return Err(unauthentic("unknown sealing version"));
        }
        let n = c.nonce_len();
        let mut nonce = [0u8; NONCE_LEN];
        nonce[..n].copy_from_slice(&sealed[1..1 + n]);
        let (tag_at, body) = match c {
            Cipher::Aes256GcmSiv => (1 + n, 1 + n + TAG_LEN..sealed.len()),
            Cipher::XChaCha20Poly1305 => (sealed.len() - TAG_LEN, 1 + n..sealed.len() - TAG_LEN),
        };
        let tag: [u8; TAG_LEN] = sealed[tag_at..tag_at + TAG_LEN]
            .try_into()
            .expect("a tag's length");
        Ok(Parts {
            version: sealed[0],
            nonce,
            tag,
            body,
        })
    }

    /// Decrypts `body`, the ciphertext of `parts`, where it lies, once its tag authenticates
    /// it with `context`.
    fn decrypt(
        &self,
        object: &str,
        context: &[u8],
        parts: &Parts,
        body: &mut [u8],
    ) -> Result<(), CryptoError> {
        let aad = aad(parts.version, context);
        let ok = match &self.sealer {
            Sealer::Siv(siv, _) => {
                let nonce: &[u8; SIV_NONCE_LEN] = parts.nonce[..SIV_NONCE_LEN]
                    .try_into()
                    .expect("a nonce's length");
                siv.decrypt_inout_detached(
                    nonce.into(),
                    &aad,
                    InOutBuf::from(body),
                    (&parts.tag).into(),
                )
                .is_ok()
            }
            Sealer::XChaCha(x) => x
                .decrypt_in_place_detached(
                    XNonce::from_slice(&parts.nonce),
                    &aad,
                    body,
                    chacha20poly1305::Tag::from_slice(&parts.tag),
                )
                .is_ok(),
        };
        if ok {
            Ok(())
        } else {
            Err(CryptoError::Unauthentic {
                object: object.to_string(),
                why: "its tag does not match",
            })
        }
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
    /// `user`, to seal with `cipher` (the repository's config names it): another key, or a
    /// wrapping made for another repository, is [`CryptoError::WrongKey`]; bytes that are not
    /// a wrapping are `BadEnvelope`.
    pub fn unwrap(
        wrapped: &[u8],
        user: &UserKey,
        repo_id: &str,
        object: &str,
        cipher: Cipher,
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
        Ok(Self::from_bytes(bytes, cipher))
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DataKey(…)")
    }
}

/// The associated data of a sealing: its version and its context.
fn aad(version: u8, context: &[u8]) -> Vec<u8> {
    let mut a = Vec::with_capacity(1 + context.len());
    a.push(version);
    a.extend_from_slice(context);
    a
}

/// Applies the AES-GCM-SIV keystream of the message sealed with `nonce` and `tag` under the
/// key-generating key `kgk` to `buf` (the start of its ciphertext), as RFC 8452 § 4 defines
/// it: the message-encryption key is the first halves of AES(kgk, le32(2..=5) ‖ nonce), and
/// the counter blocks run from the tag with its top bit set, the first 32 bits a
/// little-endian counter. The `aes-gcm-siv` crate keeps this inside; [`DataKey::peek`] needs
/// it to read a frame's head without its whole frame. The test against the crate's sealing
/// (`peek_reads_a_sealed_head_without_the_tag`) holds it to the crate's bytes.
fn siv_keystream(kgk: &Aes256, nonce: &[u8], tag: [u8; TAG_LEN], buf: &mut [u8]) {
    let mut enc_key = Zeroizing::new([0u8; KEY_LEN]);
    for (i, half) in enc_key.chunks_mut(8).enumerate() {
        let mut block = [0u8; 16];
        block[..4].copy_from_slice(&(2 + i as u32).to_le_bytes());
        block[4..].copy_from_slice(nonce);
        kgk.encrypt_block((&mut block).into());
        half.copy_from_slice(&block[..8]);
    }
    let enc = Aes256::new((&*enc_key).into());
    let mut counter = tag;
    counter[15] |= 0x80;
    let first = u32::from_le_bytes(counter[..4].try_into().expect("4 bytes"));
    for (i, part) in buf.chunks_mut(16).enumerate() {
        let mut block = counter;
        block[..4].copy_from_slice(&first.wrapping_add(i as u32).to_le_bytes());
        enc.encrypt_block((&mut block).into());
        part.iter_mut().zip(block).for_each(|(b, k)| *b ^= k);
    }
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
    let mut out = [0u8; KEY_LEN];
    OsRng.fill_bytes(&mut out);
    out
}

#[cfg(test)]
mod tests;
