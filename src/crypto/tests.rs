use proptest::prelude::*;

use super::*;

fn user(b: u8) -> UserKey {
    UserKey::from_bytes([b; KEY_LEN])
}

/// Every cipher a repository may seal with.
const CIPHERS: [Cipher; 2] = [Cipher::Aes256GcmSiv, Cipher::XChaCha20Poly1305];

#[test]
fn sealed_bytes_open_only_with_their_key_cipher_and_context() {
    for cipher in CIPHERS {
        let dk = DataKey::generate(cipher);
        let plain = b"model.layers.0.weight: the crown jewels";
        let sealed = dk.seal(b"snapshot abc", plain);
        assert_eq!(sealed.len(), plain.len() + cipher.overhead(), "{cipher:?}");
        assert!(
            !sealed.windows(10).any(|w| w == &plain[..10]),
            "plaintext visible in the sealed bytes"
        );
        assert_eq!(dk.open("o", b"snapshot abc", &sealed).unwrap(), plain);
        // Fresh nonces: the same plaintext never seals to the same bytes.
        assert_ne!(dk.seal(b"snapshot abc", plain), sealed);

        let other = DataKey::generate(cipher);
        let raw = *dk.raw;
        let other_cipher = CIPHERS.into_iter().find(|c| *c != cipher).unwrap();
        let same_bytes = DataKey::from_bytes(raw, other_cipher);
        assert!(!same_bytes.same_as(&dk));
        for (key, context) in [
            (&other, &b"snapshot abc"[..]),
            (&dk, &b"snapshot abd"[..]),
            (&same_bytes, &b"snapshot abc"[..]),
        ] {
            let e = key.open("packs/p1", context, &sealed).unwrap_err();
            assert!(matches!(e, CryptoError::Unauthentic { .. }), "{e}");
            assert!(e.to_string().contains("packs/p1"), "{e}");
        }
        for cut in [0, 1, cipher.overhead() - 1, sealed.len() - 1] {
            let e = dk.open("o", b"snapshot abc", &sealed[..cut]).unwrap_err();
            assert!(matches!(e, CryptoError::Unauthentic { .. }), "{cut}: {e}");
        }
    }
}

#[test]
fn every_flipped_bit_of_a_sealed_object_fails_authentication() {
    for cipher in CIPHERS {
        let dk = DataKey::from_bytes([7; KEY_LEN], cipher);
        let sealed = dk.seal(b"c", b"0123456789abcdef");
        for i in 0..sealed.len() {
            for bit in 0..8 {
                let mut bad = sealed.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    dk.open("o", b"c", &bad).is_err(),
                    "{cipher:?} byte {i} bit {bit}"
                );
            }
        }
    }
}

#[test]
fn a_wrapped_data_key_opens_with_its_user_key_for_its_repository_only() {
    let dk = DataKey::generate(Cipher::DEFAULT);
    let (alice, bob) = (user(1), user(2));
    let wrapped = dk.wrap(&alice, "repo-1");
    assert_eq!(wrapped.len(), WRAPPED_LEN);
    let again = DataKey::unwrap(&wrapped, &alice, "repo-1", "keys/a", Cipher::DEFAULT).unwrap();
    let sealed = dk.seal(b"c", b"weights");
    assert_eq!(again.open("o", b"c", &sealed).unwrap(), b"weights");
    assert_eq!(again.chunk_id(b"x"), dk.chunk_id(b"x"));

    // Rotation: the same data key wrapped under a second key opens with it alone.
    let rewrapped = again.wrap(&bob, "repo-1");
    let by_bob = DataKey::unwrap(&rewrapped, &bob, "repo-1", "keys/b", Cipher::DEFAULT).unwrap();
    assert_eq!(by_bob.open("o", b"c", &sealed).unwrap(), b"weights");

    for (key, repo) in [(&bob, "repo-1"), (&alice, "repo-2")] {
        let e = DataKey::unwrap(&wrapped, key, repo, "keys/a", Cipher::DEFAULT).unwrap_err();
        assert!(matches!(e, CryptoError::WrongKey { .. }), "{e}");
        assert!(
            e.to_string()
                .starts_with("the key does not open this repository"),
            "{e}"
        );
    }
    let mut damaged = wrapped.clone();
    damaged[WRAPPED_LEN - 1] ^= 1;
    assert!(matches!(
        DataKey::unwrap(&damaged, &alice, "repo-1", "keys/a", Cipher::DEFAULT),
        Err(CryptoError::WrongKey { .. })
    ));
    for bad in [&wrapped[..10], &b"FRYKEY02"[..]] {
        assert!(matches!(
            DataKey::unwrap(bad, &alice, "repo-1", "keys/a", Cipher::DEFAULT),
            Err(CryptoError::BadEnvelope { .. })
        ));
    }
}

#[test]
fn keyed_chunk_ids_differ_from_plain_blake3_and_between_repositories() {
    let (a, b) = (
        DataKey::generate(Cipher::DEFAULT),
        DataKey::generate(Cipher::DEFAULT),
    );
    let data = b"the same chunk";
    assert_eq!(
        a.chunk_id(data),
        a.chunk_id(data),
        "dedup needs a stable id"
    );
    assert_ne!(a.chunk_id(data), *blake3::hash(data).as_bytes());
    assert_ne!(a.chunk_id(data), b.chunk_id(data));
}

#[test]
fn key_text_round_trips_and_bad_text_is_named_but_never_echoed() {
    let k = UserKey::generate();
    let text = k.to_text();
    assert!(text.starts_with("ferry-key-1:") && text.len() == 12 + 64 + 1);
    let back = UserKey::parse(&format!("  {}  ", &*text), "FERRY_KEY").unwrap();
    assert_eq!(back.id(), k.id());
    let secret = "ferry-key-1:zz".to_string() + &"a".repeat(62);
    for bad in ["", "ferry-key-1:abcd", "hunter2", secret.as_str()] {
        let e = UserKey::parse(bad, "FERRY_KEY").unwrap_err();
        let shown = e.to_string();
        assert!(shown.contains("FERRY_KEY is not a ferry key"), "{shown}");
        if !bad.is_empty() {
            assert!(!shown.contains(bad), "the text leaked: {shown}");
        }
    }
    // Debug shows the id only.
    let debug = format!("{k:?}");
    assert!(!debug.contains(&text[12..20]), "{debug}");
    assert!(debug.contains(&k.id().to_string()), "{debug}");
}

#[test]
fn generate_writes_an_owner_only_file_and_never_overwrites() {
    let dir = std::env::temp_dir().join(format!("ferry-key-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("repo.key");
    let _ = std::fs::remove_file(&path);
    let report = generate_key_file(&path).unwrap();
    let key = UserKey::read_file(&path).unwrap();
    assert_eq!(report.key_id, key.id().to_string());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    }
    let e = generate_key_file(&path).unwrap_err();
    assert!(matches!(e, CryptoError::KeyFileExists { .. }), "{e}");
    assert_eq!(
        UserKey::read_file(&path).unwrap().id(),
        key.id(),
        "overwritten"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

proptest! {
    #[test]
    fn seal_then_open_is_identity(plain in proptest::collection::vec(any::<u8>(), 0..4096), context in proptest::collection::vec(any::<u8>(), 0..64)) {
        for cipher in CIPHERS {
            let dk = DataKey::from_bytes([3; KEY_LEN], cipher);
            let sealed = dk.seal(&context, &plain);
            prop_assert_eq!(dk.open("o", &context, &sealed).unwrap(), plain.clone());
        }
    }

    #[test]
    fn arbitrary_bytes_never_open_or_unwrap(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
        for cipher in CIPHERS {
            let dk = DataKey::from_bytes([3; KEY_LEN], cipher);
            prop_assert!(dk.open("o", b"c", &bytes).is_err());
            prop_assert!(DataKey::unwrap(&bytes, &user(1), "r", "keys/x", cipher).is_err());
        }
    }
}

/// `peek` reads a sealed frame's head without the tag: the plaintext's first bytes from any
/// prefix of the sealed bytes, the whole plaintext from all of it; under another key it reads
/// something else, and a short prefix or another version reads nothing. For AES-256-GCM-SIV
/// this holds ferry's own keystream (`siv_keystream`) to the `aes-gcm-siv` crate's sealing,
/// over several nonces (so tags, counters and derived keys vary) and past the 16-byte blocks.
#[test]
fn peek_reads_a_sealed_head_without_the_tag() {
    for cipher in CIPHERS {
        let key = DataKey::from_bytes([5; KEY_LEN], cipher);
        let plain: Vec<u8> = (0..300u32).map(|i| (i * 31 % 251) as u8).collect();
        let offset = cipher.peek_offset();
        for _ in 0..8 {
            let sealed = key.seal(b"frame x", &plain);
            for head in [0, 1, 15, 16, 17, 34, 64, 65, 200] {
                let got = key.peek(&sealed[..offset + head]).expect("a prefix");
                assert_eq!(got, plain[..head], "{cipher:?} head {head}");
            }
            let body_end = match cipher {
                Cipher::Aes256GcmSiv => sealed.len(),
                Cipher::XChaCha20Poly1305 => sealed.len() - 16,
            };
            assert_eq!(key.peek(&sealed[..body_end]).expect("all of it"), plain);
            let other = DataKey::from_bytes([6; KEY_LEN], cipher);
            assert_ne!(other.peek(&sealed[..offset + 34]).unwrap(), plain[..34]);
            assert!(key.peek(&sealed[..offset - 1]).is_none());
            let mut v = sealed.clone();
            v[0] ^= 3;
            assert!(key.peek(&v[..offset + 34]).is_none());
        }
    }
}
