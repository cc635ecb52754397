//! Fuzzes `codec::delta::decode`, which rebuilds a chunk from its base and a delta payload
//! read from a pack. The input is a u16 base length (little-endian), then the payload; the
//! base is a fixed pattern of that length. A payload that decodes must give a chunk of the
//! base's length, and encoding that chunk against the base must decode to it again.
#![no_main]

use ferry::codec::delta::{decode, DeltaEncoder};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let len = u16::from_le_bytes([data[0], data[1]]) as usize;
    let base: Vec<u8> = (0..len).map(|i| (i * 31 % 251) as u8).collect();
    if let Ok(raw) = decode(&data[2..], &base, len) {
        assert_eq!(raw.len(), len);
        for width in [1u8, 2, 4] {
            let again = DeltaEncoder::new(1)
                .encode(&base, &raw, width)
                .expect("same length");
            assert_eq!(decode(&again, &base, len).expect("own payload"), raw);
        }
    }
});
