//! Fuzzes the encryption envelope's parsers (`ferry::crypto`): a wrapped data key
//! (`keys/<key id>`), a sealed object or frame, a key's text, and an encrypted repository's
//! pack (its sealed table). The first byte picks which, and by its high bit the cipher
//! (AES-256-GCM-SIV or XChaCha20-Poly1305); the rest is the input. Nothing may panic (a sealed
//! head's unauthenticated peek included); no forged input may open or unwrap (the fuzzer
//! cannot forge a tag), and what `seal` makes must open to itself.
#![no_main]

use ferry::crypto::{Cipher, DataKey, UserKey, KEY_LEN};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let user = UserKey::from_bytes([1; KEY_LEN]);
    // The high bit picks the cipher: both sealings are parsed.
    let cipher = if mode & 0x80 == 0 {
        Cipher::Aes256GcmSiv
    } else {
        Cipher::XChaCha20Poly1305
    };
    let key = DataKey::from_bytes([2; KEY_LEN], cipher);
    match mode % 5 {
        0 => assert!(DataKey::unwrap(rest, &user, "repo", "keys/x", cipher).is_err()),
        1 => {
            assert!(key.open("packs/x", b"frame", rest).is_err());
            let _ = key.peek(rest);
        }
        2 => {
            let sealed = key.seal(b"frame", rest);
            assert_eq!(
                key.open("packs/x", b"frame", &sealed).expect("own sealing"),
                rest
            );
            let wrapped = key.wrap(&user, "repo");
            let again =
                DataKey::unwrap(&wrapped, &user, "repo", "keys/x", cipher).expect("own wrapping");
            assert_eq!(again.chunk_id(rest), key.chunk_id(rest));
        }
        3 => {
            // An encrypted repository's pack: hostile bytes never parse into entries (the
            // table must open), and a pack built with the key reads back.
            let sealing = ferry::repo::Sealing::with(std::sync::Arc::new(DataKey::from_bytes(
                [2; KEY_LEN],
                cipher,
            )));
            let _ = ferry::repo::pack::read_pack_table(rest, &sealing, "packs/x");
            let mut b = ferry::repo::pack::PackBuilder::new(sealing.clone());
            let chunk = ferry::ids::ChunkId::of(rest);
            let frame = sealing.seal_frame(&chunk, rest.to_vec());
            b.add(chunk, &frame, rest.len() as u32, None);
            let pack = b.seal();
            let table = ferry::repo::pack::read_pack_table(&pack.data, &sealing, "packs/x")
                .expect("own pack");
            assert_eq!(table, pack.entries);
        }
        _ => {
            if let Ok(text) = std::str::from_utf8(rest) {
                if let Ok(k) = UserKey::parse(text, "fuzz") {
                    let back = UserKey::parse(&k.to_text(), "fuzz").expect("own text");
                    assert_eq!(back.id(), k.id());
                }
            }
        }
    }
});
