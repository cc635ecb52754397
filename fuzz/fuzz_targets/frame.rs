//! Fuzzes `codec::decode`, which turns a chunk frame read from a pack back into the chunk.
//! The input is a u32 raw length (little-endian, as a pack table stores it), then the frame;
//! the chunk id is the hash of the frame's payload, so raw frames can pass the hash check.
#![no_main]

use ferry::codec::decode;
use ferry::ids::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let raw_len = u32::from_le_bytes(data[..4].try_into().expect("4 bytes")) as usize;
    let frame = &data[4..];
    let id = ChunkId::of(frame.get(1..).unwrap_or_default());
    if let Ok(raw) = decode(frame, raw_len, &id) {
        assert_eq!(raw.len(), raw_len);
        assert_eq!(ChunkId::of(&raw), id);
    }
});
