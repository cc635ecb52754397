//! Delta frames (codec 3): a chunk stored as an element delta against a base chunk.
//!
//! Frame: `3 | depth u8 | base chunk id (32) | delta payload` (`codec::delta`). `depth` counts
//! the delta frames from this one down to the first full frame: 1 when the base is stored
//! whole. Readers refuse a depth above [`MAX_DELTA_DEPTH`], so a hostile or broken chain can
//! never make a read walk without bound; writers keep it at or under the repository's
//! `deltas.max_depth`.

use super::{check, delta, Codec, FrameError, MAX_CHUNK};
use crate::ids::{ChunkId, Naming};

/// Deepest chain a reader follows, whatever a repository's config says.
pub const MAX_DELTA_DEPTH: u8 = 16;

/// Bytes before a delta frame's payload: codec, depth, base id.
pub const DELTA_HEADER_LEN: usize = 34;

/// The parsed head of a delta frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaHeader<'a> {
    /// Delta frames from this one down to a full frame (1: the base is stored whole).
    pub depth: u8,
    /// The chunk the payload applies to.
    pub base: ChunkId,
    /// The element-delta payload (`codec::delta`).
    pub payload: &'a [u8],
}

/// Whether `frame` is a delta frame (codec 3), by its first byte alone.
pub fn is_delta(frame: &[u8]) -> bool {
    frame.first() == Some(&(Codec::Delta as u8))
}

/// The delta header of `frame`, `None` when it is not a delta frame.
pub fn delta_header(frame: &[u8]) -> Result<Option<DeltaHeader<'_>>, FrameError> {
    match frame.split_first() {
        Some((&c, rest)) if c == Codec::Delta as u8 => {
            if rest.len() < 33 {
                return Err(FrameError::DeltaHeader("truncated header"));
            }
            let depth = rest[0];
            if depth == 0 || depth > MAX_DELTA_DEPTH {
                return Err(FrameError::DeltaHeader(
                    "chain depth must be between 1 and 16",
                ));
            }
            let base = ChunkId::from_slice(&rest[1..33])
                .ok_or(FrameError::DeltaHeader("truncated base id"))?;
            Ok(Some(DeltaHeader {
                depth,
                base,
                payload: &rest[33..],
            }))
        }
        Some(_) => Ok(None),
        None => Err(FrameError::Empty),
    }
}

/// A delta frame around `payload` (from `delta::DeltaEncoder::encode`).
pub fn delta_frame(base: &ChunkId, depth: u8, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(34 + payload.len());
    out.push(Codec::Delta as u8);
    out.push(depth);
    out.extend_from_slice(&base.0);
    out.extend_from_slice(payload);
    out
}

/// Applies a delta frame to its base's raw bytes (which the caller checked against the
/// base's id) and checks the result against `id` (named by `naming`).
pub fn decode_delta(
    header: &DeltaHeader<'_>,
    base: &[u8],
    raw_len: usize,
    (id, naming): (&ChunkId, &Naming),
) -> Result<Vec<u8>, FrameError> {
    if raw_len > MAX_CHUNK {
        return Err(FrameError::TooLong(raw_len));
    }
    let raw = delta::decode(header.payload, base, raw_len)?;
    check(&raw, raw_len, id, naming)?;
    Ok(raw)
}

/// Applies a delta frame in place: `chunk` holds the base's raw bytes (checked by the
/// caller) and ends holding the chunk's, unchecked: a chain of deltas is checked once, at its
/// top (`ops::delta_base`), and link by link only when that check fails.
pub fn apply_delta(
    header: &DeltaHeader<'_>,
    chunk: &mut [u8],
    raw_len: usize,
) -> Result<(), FrameError> {
    if raw_len > MAX_CHUNK {
        return Err(FrameError::TooLong(raw_len));
    }
    if chunk.len() != raw_len {
        return Err(delta::DeltaError::BaseLength {
            got: chunk.len(),
            want: raw_len,
        }
        .into());
    }
    delta::apply(header.payload, chunk)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{decode, delta::DeltaEncoder};
    use proptest::prelude::*;

    fn frame_for(base: &[u8], new: &[u8], width: u8) -> Vec<u8> {
        let payload = DeltaEncoder::new(1).encode(base, new, width).unwrap();
        delta_frame(&ChunkId::of(base), 1, &payload)
    }

    #[test]
    fn delta_frames_need_their_base_and_check_the_result() {
        let base: Vec<u8> = (0..4099u32).map(|i| (i * 7 % 251) as u8).collect();
        let mut new = base.clone();
        new[17] ^= 0x40;
        let frame = frame_for(&base, &new, 4);
        let id = ChunkId::of(&new);
        assert!(matches!(
            decode(&frame, new.len(), &id, &Naming::PLAIN),
            Err(FrameError::NeedsBase { base: b }) if b == ChunkId::of(&base)
        ));
        let h = delta_header(&frame).unwrap().unwrap();
        assert_eq!(h.depth, 1);
        assert_eq!(
            decode_delta(&h, &base, new.len(), (&id, &Naming::PLAIN)).unwrap(),
            new
        );
        // The wrong base gives an error, never wrong bytes.
        let mut other = base.clone();
        other[0] ^= 1;
        assert!(matches!(
            decode_delta(&h, &other, new.len(), (&id, &Naming::PLAIN)),
            Err(FrameError::Hash { .. })
        ));
        assert!(delta_header(&[Codec::Delta as u8, 1, 2]).is_err());
        assert!(delta_header(&delta_frame(&id, 0, &[])).is_err());
        assert!(delta_header(&delta_frame(&id, MAX_DELTA_DEPTH + 1, &[])).is_err());
        assert_eq!(delta_header(&[0, 1, 2]).unwrap(), None);
    }

    proptest! {
        /// F32/BF16/F16-like widths and odd lengths: encode → frame → decode is identity.
        #[test]
        fn delta_frame_round_trip(
            base in proptest::collection::vec(any::<u8>(), 0..5000),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..100),
            width in prop_oneof![Just(1u8), Just(2u8), Just(4u8)],
        ) {
            let mut new = base.clone();
            for (at, x) in edits {
                if !new.is_empty() {
                    let i = at % new.len();
                    new[i] ^= x;
                }
            }
            let frame = frame_for(&base, &new, width);
            let h = delta_header(&frame).unwrap().unwrap();
            prop_assert_eq!(decode_delta(&h, &base, new.len(), (&ChunkId::of(&new), &Naming::PLAIN)).unwrap(), new);
        }
    }
}
