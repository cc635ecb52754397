//! Fuzzes `PackIndex::decode`, the parser of `index/<pack id>` objects. Each input is tried as
//! it is, and again with its magic and checksum made right, so the fuzzer also reaches the
//! table checks behind them.
#![no_main]

use ferry::repo::pack::PackIndex;
use libfuzzer_sys::fuzz_target;

fn check(bytes: &[u8]) {
    if let Ok(idx) = PackIndex::decode(bytes) {
        for e in &idx.entries {
            assert!(e.frame_len > 0 && e.range().end <= idx.pack_size);
        }
        assert_eq!(PackIndex::decode(&idx.encode()).expect("re-decodes"), idx);
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() < 8 + 32 {
        return;
    }
    // Both magics: FRYIDX02 adds the list of delta bases after the entries.
    for magic in [b"FRYIDX01", b"FRYIDX02"] {
        let mut fixed = data.to_vec();
        fixed[..8].copy_from_slice(magic);
        let body = fixed.len() - 32;
        let sum = *blake3::hash(&fixed[..body]).as_bytes();
        fixed[body..].copy_from_slice(&sum);
        check(&fixed);
    }
});
