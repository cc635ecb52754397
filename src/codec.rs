//! Chunk frames: how one chunk's bytes are stored inside a pack (codec byte + payload).

use crate::ids::ChunkId;

/// Codec ids as they appear in the first byte of every frame. Append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Payload is the chunk's raw bytes.
    Raw = 0,
    /// Payload is one zstd frame.
    Zstd = 1,
}

impl Codec {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            _ => None,
        }
    }
}

/// A frame that cannot be turned back into its chunk.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("empty frame")]
    Empty,
    #[error("unknown codec {0} (written by a newer ferry?)")]
    UnknownCodec(u8),
    #[error("zstd payload does not decompress: {0}")]
    Zstd(std::io::Error),
    #[error("decoded length {got} differs from the recorded {want}")]
    Length { got: usize, want: usize },
    #[error("content hash {got} differs from the chunk id {want}")]
    Hash { got: ChunkId, want: ChunkId },
}

/// Encodes chunks into frames, reusing one zstd context (one per worker thread).
pub struct Encoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    pub fn new(level: i32) -> Self {
        Self {
            zstd: zstd::bulk::Compressor::new(level).ok(),
        }
    }

    /// Encodes a chunk: zstd, or raw when compression saves less than 1/32 of the size.
    pub fn encode(&mut self, raw: &[u8]) -> Vec<u8> {
        if let (true, Some(z)) = (raw.len() >= 64, self.zstd.as_mut()) {
            let bound = zstd::zstd_safe::compress_bound(raw.len());
            let mut out = vec![0u8; 1 + bound];
            out[0] = Codec::Zstd as u8;
            if let Ok(n) = z.compress_to_buffer(raw, &mut out[1..]) {
                if n < raw.len() - raw.len() / 32 {
                    out.truncate(1 + n);
                    return out;
                }
            }
        }
        let mut out = Vec::with_capacity(1 + raw.len());
        out.push(Codec::Raw as u8);
        out.extend_from_slice(raw);
        out
    }
}

/// Encodes one chunk with a fresh context (see `Encoder` for many).
pub fn encode(raw: &[u8], level: i32) -> Vec<u8> {
    Encoder::new(level).encode(raw)
}

/// Decodes a frame into `raw_len` bytes and checks them against `id`.
pub fn decode(frame: &[u8], raw_len: usize, id: &ChunkId) -> Result<Vec<u8>, FrameError> {
    let (&codec, payload) = frame.split_first().ok_or(FrameError::Empty)?;
    let raw = match Codec::from_byte(codec).ok_or(FrameError::UnknownCodec(codec))? {
        Codec::Raw => payload.to_vec(),
        Codec::Zstd => {
            // The capacity bound keeps a hostile frame from allocating without limit.
            zstd::bulk::decompress(payload, raw_len).map_err(FrameError::Zstd)?
        }
    };
    if raw.len() != raw_len {
        return Err(FrameError::Length {
            got: raw.len(),
            want: raw_len,
        });
    }
    let got = ChunkId::of(&raw);
    if got != *id {
        return Err(FrameError::Hash { got, want: *id });
    }
    Ok(raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compressible_data_is_compressed() {
        let raw = b"weights ".repeat(1000);
        let frame = encode(&raw, 1);
        assert_eq!(frame[0], Codec::Zstd as u8);
        assert!(frame.len() < raw.len() / 10);
        assert_eq!(decode(&frame, raw.len(), &ChunkId::of(&raw)).unwrap(), raw);
    }

    #[test]
    fn incompressible_data_is_stored_raw() {
        let mut x = 0x2545F4914F6CDD1Du64;
        let raw: Vec<u8> = (0..10_000)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 32) as u8
            })
            .collect();
        let frame = encode(&raw, 1);
        assert_eq!(frame[0], Codec::Raw as u8);
        assert_eq!(&frame[1..], &raw[..]);
    }

    #[test]
    fn corruption_is_detected() {
        let raw = b"abc".repeat(100);
        let mut frame = encode(&raw, 1);
        let id = ChunkId::of(&raw);
        let last = frame.len() - 1;
        frame[last] ^= 1;
        assert!(decode(&frame, raw.len(), &id).is_err());
        assert!(matches!(
            decode(&[9, 1, 2], 2, &id),
            Err(FrameError::UnknownCodec(9))
        ));
        assert!(matches!(decode(&[], 0, &id), Err(FrameError::Empty)));
    }

    proptest! {
        #[test]
        fn round_trip(raw in proptest::collection::vec(any::<u8>(), 0..5000), rep in 1usize..4) {
            let raw = raw.repeat(rep);
            let frame = encode(&raw, 1);
            prop_assert_eq!(decode(&frame, raw.len(), &ChunkId::of(&raw)).unwrap(), raw);
        }
    }
}
