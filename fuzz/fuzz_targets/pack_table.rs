//! Fuzzes `read_pack_table`, the parser of a pack's trailer and table. Each input is tried as
//! it is, and again with its magics and table checksum made right, so the fuzzer also reaches
//! the table checks behind them.
#![no_main]

use ferry::repo::pack::read_pack_table;
use libfuzzer_sys::fuzz_target;

/// Trailer: table offset (8), entry count (4), BLAKE3 of the table (32), end magic (8).
const TRAILER: usize = 52;

fn check(pack: &[u8]) {
    if let Ok(entries) = read_pack_table(pack, &ferry::repo::Sealing::PLAIN, "packs/x") {
        for e in entries {
            assert!(e.frame_len > 0);
            assert!(e.offset >= 8 && e.range().end <= pack.len() as u64);
        }
    }
}

fuzz_target!(|data: &[u8]| {
    check(data);
    if data.len() < 8 + TRAILER {
        return;
    }
    let mut pack = data.to_vec();
    let n = pack.len();
    pack[..8].copy_from_slice(b"FRYPACK1");
    pack[n - 8..].copy_from_slice(b"FRYPEND1");
    let t = n - TRAILER;
    let offset = u64::from_le_bytes(pack[t..t + 8].try_into().expect("8 bytes"));
    if let Some(table) = usize::try_from(offset).ok().and_then(|o| pack.get(o..t)) {
        let sum = *blake3::hash(table).as_bytes();
        pack[t + 12..t + 44].copy_from_slice(&sum);
    }
    check(&pack);
});
