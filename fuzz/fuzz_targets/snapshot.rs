//! Fuzzes `Snapshot::decode` (magic, zstd, JSON, path and length checks). The first byte picks
//! how the rest is used: as the object itself, with the magic prepended, or as JSON that is
//! compressed and framed first, so the fuzzer reaches every layer.
#![no_main]

use ferry::repo::snapshot::{check_path, Entry, Snapshot};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let object = match mode % 3 {
        0 => rest.to_vec(),
        1 => [b"FRYSNAP1".as_slice(), rest].concat(),
        _ => {
            let json = zstd::bulk::compress(rest, 1).expect("zstd compresses a buffer");
            [b"FRYSNAP1".as_slice(), &json].concat()
        }
    };
    if let Ok(snap) = Snapshot::decode(&object) {
        for e in &snap.entries {
            assert!(check_path(e.path()).is_ok(), "accepted path {:?}", e.path());
            if let Entry::File { size, chunks, .. } = e {
                assert_eq!(chunks.iter().map(|c| c.1 as u64).sum::<u64>(), *size);
            }
        }
    }
});
