//! Key files: a user key as one line of text, `ferry-key-1:` then 64 hex digits. The same
//! text is what `FERRY_KEY` holds on platforms that inject secrets as variables.

use std::io::Write;
use std::path::Path;

use serde::Serialize;
use zeroize::Zeroizing;

use super::{CryptoError, UserKey, KEY_LEN};

/// The prefix of a key's text; the digit is the text format's version.
const PREFIX: &str = "ferry-key-1:";

impl UserKey {
    /// The key as the one line a key file holds (zeroed when dropped).
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut digits = Zeroizing::new([0u8; 2 * KEY_LEN]);
        hex::encode_to_slice(&self.0[..], &mut digits[..]).expect("64 digits for 32 bytes");
        let mut s = Zeroizing::new(String::with_capacity(PREFIX.len() + 2 * KEY_LEN + 1));
        s.push_str(PREFIX);
        s.push_str(std::str::from_utf8(&digits[..]).expect("hex digits"));
        s.push('\n');
        s
    }

    /// Parses a key's text (surrounding white space ignored); `what` names its origin in
    /// errors, which never repeat the text.
    pub fn parse(text: &str, what: &str) -> Result<Self, CryptoError> {
        let bad = |why| CryptoError::BadKeyText {
            what: what.to_string(),
            why,
        };
        let digits = text
            .trim()
            .strip_prefix(PREFIX)
            .ok_or_else(|| bad("it does not start with `ferry-key-1:`"))?;
        if digits.len() != 2 * KEY_LEN {
            return Err(bad("it needs exactly 64 hex digits after `ferry-key-1:`"));
        }
        let mut key = Zeroizing::new([0u8; KEY_LEN]);
        hex::decode_to_slice(digits, &mut key[..])
            .map_err(|_| bad("it has a character that is not a hex digit"))?;
        Ok(Self(key))
    }

    /// Reads a key file.
    pub fn read_file(path: &Path) -> Result<Self, CryptoError> {
        let text =
            Zeroizing::new(
                std::fs::read_to_string(path).map_err(|source| CryptoError::Io {
                    path: path.display().to_string(),
                    source,
                })?,
            );
        Self::parse(&text, &path.display().to_string())
    }

    /// Writes the key to a new file `path`, readable by its owner only (0600); an existing
    /// file is never overwritten.
    pub fn write_new(&self, path: &Path) -> Result<(), CryptoError> {
        let io = |source| CryptoError::Io {
            path: path.display().to_string(),
            source,
        };
        let mut opts = std::fs::OpenOptions::new();
        opts.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
        let mut f = opts.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => CryptoError::KeyFileExists {
                path: path.display().to_string(),
            },
            _ => io(e),
        })?;
        f.write_all(self.to_text().as_bytes()).map_err(io)?;
        f.sync_all().map_err(io)
    }
}

/// What `ferry key generate` did.
#[derive(Debug, Clone, Serialize)]
pub struct KeyFileReport {
    /// The new key file.
    pub path: String,
    /// The key's public id (names its wrapped data key in a repository's `keys/`).
    pub key_id: String,
}

/// `ferry key generate PATH`: a new random key in a new file, owner-only.
pub fn generate_key_file(path: &Path) -> Result<KeyFileReport, CryptoError> {
    let key = UserKey::generate();
    key.write_new(path)?;
    Ok(KeyFileReport {
        path: path.display().to_string(),
        key_id: key.id().to_string(),
    })
}
