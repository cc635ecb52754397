//! Fuzzes `codec::decode`, which turns a chunk frame read from a pack back into the chunk.
//! The input is a u32 raw length (little-endian, as a pack table stores it), then the frame;
//! the chunk id is the hash of the frame's payload, so raw frames can pass the hash check.
//! A delta frame (codec 3) is also applied to a base made of the frame's own bytes.
#![no_main]

use ferry::codec::{decode, decode_delta, delta_header};
use ferry::ids::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let raw_len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    let frame = &data[4..];
    let id = ChunkId::of(frame.get(1..).unwrap_or_default());
    if let Ok(raw) = decode(frame, raw_len, &id, &ferry::ids::Naming::PLAIN) {
        assert_eq!(raw.len(), raw_len);
        assert_eq!(ChunkId::of(&raw), id);
    }
    if let Ok(Some(h)) = delta_header(frame) {
        let base: Vec<u8> = frame
            .iter()
            .copied()
            .cycle()
            .take(raw_len.min(1 << 20))
            .collect();
        if let Ok(raw) = decode_delta(&h, &base, raw_len, (&id, &ferry::ids::Naming::PLAIN)) {
            assert_eq!(ChunkId::of(&raw), id);
        }
    }
});
