//! Chunk frames: how one chunk's bytes are stored inside a pack (codec byte + payload).

use crate::ids::{ChunkId, Naming};

pub mod delta;
mod delta_frame;

pub use delta_frame::{
    apply_delta, decode_delta, delta_frame, delta_header, is_delta, DeltaHeader, DELTA_HEADER_LEN,
    MAX_DELTA_DEPTH,
};

/// Codec ids as they appear in the first byte of every frame. Append only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Codec {
    /// Payload is the chunk's raw bytes.
    Raw = 0,
    /// Payload is one zstd frame.
    Zstd = 1,
    /// Payload is the chunk split into byte planes (byte k of every element together), each
    /// plane stored raw or as zstd: `width u8`, then per plane `codec u8, len u32, bytes`,
    /// then the `raw_len % width` tail bytes raw.
    Planes = 2,
    /// Payload is an element delta against a base chunk (format version 2):
    /// `depth u8, base chunk id (32), delta payload` (see `codec::delta`).
    Delta = 3,
}

impl Codec {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Codec::Raw),
            1 => Some(Codec::Zstd),
            2 => Some(Codec::Planes),
            3 => Some(Codec::Delta),
            _ => None,
        }
    }
}

/// No chunk is longer than the chunker's largest `max_size`, whatever the repository.
pub const MAX_CHUNK: usize = fastcdc::v2020::MAXIMUM_MAX;

/// A frame that cannot be turned back into its chunk.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// No bytes at all.
    #[error("empty frame")]
    Empty,
    /// The recorded raw length is longer than any chunk.
    #[error("recorded length {0} is longer than any chunk ({MAX_CHUNK} bytes)")]
    TooLong(usize),
    /// A codec byte this ferry does not know.
    #[error("unknown codec {0} (written by a newer ferry?)")]
    UnknownCodec(u8),
    /// The zstd stream is damaged.
    #[error("zstd payload does not decompress: {0}")]
    Zstd(std::io::Error),
    /// A byte-plane payload that does not decode; what is wrong.
    #[error("byte-plane payload is malformed: {0}")]
    Planes(&'static str),
    /// The decoded length is not the recorded one.
    #[error("decoded length {got} differs from the recorded {want}")]
    Length {
        /// Bytes decoded.
        got: usize,
        /// Bytes recorded.
        want: usize,
    },
    /// The decoded bytes do not hash to the chunk id.
    #[error("content hash {got} differs from the chunk id {want}")]
    Hash {
        /// BLAKE3 of the decoded bytes.
        got: ChunkId,
        /// The chunk id.
        want: ChunkId,
    },
    /// A delta frame: decoding needs its base chunk (`decode_delta`).
    #[error("frame is a delta against base chunk {base}, which decoding needs")]
    NeedsBase {
        /// The base chunk's id, from the frame's header.
        base: ChunkId,
    },
    /// A delta frame's header (depth, base id) is cut short or out of range.
    #[error("delta frame is malformed: {0}")]
    DeltaHeader(&'static str),
    /// The delta payload does not apply to its base.
    #[error(transparent)]
    Delta(#[from] delta::DeltaError),
}

/// Encodes chunks into frames, reusing one zstd context (one per worker thread).
pub struct Encoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
    /// For byte planes: long minimum matches and a shallow search, so zstd spends its time
    /// on entropy coding (what exponent planes need) rather than hunting short matches.
    planes: Option<zstd::bulk::Compressor<'static>>,
}

impl Encoder {
    /// An encoder compressing at zstd `level`.
    pub fn new(level: i32) -> Self {
        use zstd::zstd_safe::CParameter;
        let planes = zstd::bulk::Compressor::new(level).ok().and_then(|mut c| {
            c.set_parameter(CParameter::MinMatch(7)).ok()?;
            c.set_parameter(CParameter::SearchLog(1)).ok()?;
            c.set_parameter(CParameter::HashLog(12)).ok()?;
            Some(c)
        });
        Self {
            zstd: zstd::bulk::Compressor::new(level).ok(),
            planes,
        }
    }

    /// Encodes a chunk of unknown type: zstd, or raw when a quick entropy estimate says it
    /// will not compress or compression saves less than 1/32 of the size.
    pub fn encode(&mut self, raw: &[u8]) -> Vec<u8> {
        if raw.len() >= 64 && entropy_bits(raw, 7) < INCOMPRESSIBLE_BITS {
            if let Some(frame) = self.zstd_frame(raw) {
                return frame;
            }
        }
        raw_frame(raw)
    }

    /// Encodes a chunk of `width`-byte elements (2: F16/BF16, 4: F32) as byte planes, each
    /// compressed only when it pays; other widths fall back to `encode`.
    pub fn encode_elements(&mut self, raw: &[u8], width: u8) -> Vec<u8> {
        let w = width as usize;
        if !(w == 2 || w == 4) || raw.len() < 64 * w {
            return self.encode(raw);
        }
        let n = raw.len() / w;
        let mut out = Vec::with_capacity(raw.len() + 2 + 5 * w);
        out.push(Codec::Planes as u8);
        out.push(width);
        for plane in split_planes(&raw[..n * w], w) {
            let packed = if entropy_bits(&plane, 3) < PLANE_INCOMPRESSIBLE_BITS {
                compress_with(self.planes.as_mut(), &plane)
            } else {
                None
            };
            match packed {
                Some(z) => {
                    out.push(Codec::Zstd as u8);
                    out.extend_from_slice(&(z.len() as u32).to_le_bytes());
                    out.extend_from_slice(&z);
                }
                None => {
                    out.push(Codec::Raw as u8);
                    out.extend_from_slice(&(n as u32).to_le_bytes());
                    out.extend_from_slice(&plane);
                }
            }
        }
        out.extend_from_slice(&raw[n * w..]);
        if out.len() > raw.len() {
            return raw_frame(raw);
        }
        out
    }

    fn compress(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        compress_with(self.zstd.as_mut(), raw)
    }

    fn zstd_frame(&mut self, raw: &[u8]) -> Option<Vec<u8>> {
        let z = self.compress(raw)?;
        let mut out = Vec::with_capacity(1 + z.len());
        out.push(Codec::Zstd as u8);
        out.extend_from_slice(&z);
        Some(out)
    }
}

/// zstd of `raw` if it saves at least 1/32.
fn compress_with(z: Option<&mut zstd::bulk::Compressor<'static>>, raw: &[u8]) -> Option<Vec<u8>> {
    let z = z?;
    let mut out = Vec::with_capacity(zstd::zstd_safe::compress_bound(raw.len()));
    let n = z.compress_to_buffer(raw, &mut out).ok()?;
    (n < raw.len() - raw.len() / 32).then_some(out)
}

/// Splits whole elements into `w` byte planes in one pass (w = 2 or 4).
fn split_planes(raw: &[u8], w: usize) -> Vec<Vec<u8>> {
    let n = raw.len() / w;
    let mut planes = vec![vec![0u8; n]; w];
    match planes.as_mut_slice() {
        [p0, p1] => {
            for ((a, b), e) in p0.iter_mut().zip(p1.iter_mut()).zip(raw.chunks_exact(2)) {
                *a = e[0];
                *b = e[1];
            }
        }
        [p0, p1, p2, p3] => {
            let dst = p0
                .iter_mut()
                .zip(p1.iter_mut())
                .zip(p2.iter_mut())
                .zip(p3.iter_mut());
            for ((((a, b), c), d), e) in dst.zip(raw.chunks_exact(4)) {
                *a = e[0];
                *b = e[1];
                *c = e[2];
                *d = e[3];
            }
        }
        _ => {
            for (i, e) in raw.chunks_exact(w).enumerate() {
                for (k, byte) in e.iter().enumerate() {
                    planes[k][i] = *byte;
                }
            }
        }
    }
    planes
}

/// Order-0 entropy above which a whole chunk is not worth handing to zstd (bits per byte).
const INCOMPRESSIBLE_BITS: f64 = 7.95;
/// The same for one byte plane: mantissa planes sit near 8 and gain nothing.
const PLANE_INCOMPRESSIBLE_BITS: f64 = 7.7;

/// Order-0 entropy in bits per byte, estimated from every `stride`-th byte.
fn entropy_bits(data: &[u8], stride: usize) -> f64 {
    let mut hist = [0u32; 256];
    let mut n = 0u32;
    for b in data.iter().step_by(stride.max(1)) {
        hist[*b as usize] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = n as f64;
    hist.iter()
        .filter(|c| **c > 0)
        .map(|c| {
            let p = *c as f64 / n;
            -p * p.log2()
        })
        .sum()
}

fn raw_frame(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(1 + raw.len());
    out.push(Codec::Raw as u8);
    out.extend_from_slice(raw);
    out
}

/// Encodes one chunk with a fresh context (see `Encoder` for many).
pub fn encode(raw: &[u8], level: i32) -> Vec<u8> {
    Encoder::new(level).encode(raw)
}

/// Decodes a frame into `raw_len` bytes and checks them against `id`, named by `naming` (the
/// repository's: plain or keyed BLAKE3).
pub fn decode(
    frame: &[u8],
    raw_len: usize,
    id: &ChunkId,
    naming: &Naming,
) -> Result<Vec<u8>, FrameError> {
    let raw = decode_unchecked(frame, raw_len)?;
    check(&raw, raw_len, id, naming)?;
    Ok(raw)
}

/// Decodes a full frame into `raw_len` bytes without checking them against their id: for the
/// key under a chain of deltas, whose bytes the check of the chain's top covers
/// (`ops::delta_base`). Everything else calls `decode`.
pub fn decode_unchecked(frame: &[u8], raw_len: usize) -> Result<Vec<u8>, FrameError> {
    let (&codec, payload) = frame.split_first().ok_or(FrameError::Empty)?;
    // The length comes from a pack table: never let it size an allocation unchecked.
    if raw_len > MAX_CHUNK {
        return Err(FrameError::TooLong(raw_len));
    }
    let raw = match Codec::from_byte(codec).ok_or(FrameError::UnknownCodec(codec))? {
        Codec::Raw => payload.to_vec(),
        Codec::Zstd => {
            // The capacity bound keeps a hostile frame from allocating without limit.
            unzstd(payload, raw_len).map_err(FrameError::Zstd)?
        }
        Codec::Planes => decode_planes(payload, raw_len)?,
        Codec::Delta => {
            let h = delta_header(frame)?.ok_or(FrameError::DeltaHeader("not a delta"))?;
            return Err(FrameError::NeedsBase { base: h.base });
        }
    };
    if raw.len() != raw_len {
        return Err(FrameError::Length {
            got: raw.len(),
            want: raw_len,
        });
    }
    Ok(raw)
}

/// Decompresses one zstd frame into at most `max` bytes with this thread's decompression
/// context: making a context per call (as `zstd::bulk::decompress` does) costs more than
/// decoding a small plane.
pub(crate) fn unzstd(body: &[u8], max: usize) -> std::io::Result<Vec<u8>> {
    thread_local! {
        static CONTEXT: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { std::cell::RefCell::new(None) };
    }
    CONTEXT.with(|c| {
        let mut c = c.borrow_mut();
        let d = match c.as_mut() {
            Some(d) => d,
            None => c.insert(zstd::bulk::Decompressor::new()?),
        };
        d.decompress(body, max)
    })
}

/// Checks a chunk's bytes against the length recorded for it and its id, named by `naming`.
pub fn check(raw: &[u8], raw_len: usize, id: &ChunkId, naming: &Naming) -> Result<(), FrameError> {
    if raw.len() != raw_len {
        return Err(FrameError::Length {
            got: raw.len(),
            want: raw_len,
        });
    }
    let got = naming.chunk(raw);
    if got != *id {
        return Err(FrameError::Hash { got, want: *id });
    }
    Ok(())
}

fn decode_planes(payload: &[u8], raw_len: usize) -> Result<Vec<u8>, FrameError> {
    let (&width, mut rest) = payload
        .split_first()
        .ok_or(FrameError::Planes("no width"))?;
    let w = width as usize;
    if !(w == 2 || w == 4) {
        return Err(FrameError::Planes("width must be 2 or 4"));
    }
    let n = raw_len / w;
    let mut planes = Vec::with_capacity(w);
    for _ in 0..w {
        if rest.len() < 5 {
            return Err(FrameError::Planes("truncated plane header"));
        }
        let codec = rest[0];
        let len = u32::from_le_bytes(rest[1..5].try_into().expect("4 bytes")) as usize;
        let body = rest
            .get(5..5 + len)
            .ok_or(FrameError::Planes("truncated plane"))?;
        rest = &rest[5 + len..];
        let plane = match Codec::from_byte(codec) {
            Some(Codec::Raw) => std::borrow::Cow::Borrowed(body),
            Some(Codec::Zstd) => {
                std::borrow::Cow::Owned(unzstd(body, n).map_err(FrameError::Zstd)?)
            }
            _ => return Err(FrameError::Planes("plane codec must be raw or zstd")),
        };
        if plane.len() != n {
            return Err(FrameError::Planes("plane length differs from the chunk's"));
        }
        planes.push(plane);
    }
    // One pass over the output, element by element (widths 2 and 4 only).
    let mut out = vec![0u8; raw_len];
    match planes.as_slice() {
        [a, b] => {
            for ((e, x), y) in out.chunks_exact_mut(2).zip(a.iter()).zip(b.iter()) {
                e.copy_from_slice(&[*x, *y]);
            }
        }
        [a, b, c, d] => {
            let bytes = a.iter().zip(b.iter()).zip(c.iter()).zip(d.iter());
            for (e, (((x, y), z), t)) in out.chunks_exact_mut(4).zip(bytes) {
                e.copy_from_slice(&[*x, *y, *z, *t]);
            }
        }
        _ => return Err(FrameError::Planes("width must be 2 or 4")),
    }
    if rest.len() != raw_len - n * w {
        return Err(FrameError::Planes("tail length differs from the chunk's"));
    }
    out[n * w..].copy_from_slice(rest);
    Ok(out)
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
        assert_eq!(
            decode(&frame, raw.len(), &ChunkId::of(&raw), &Naming::PLAIN).unwrap(),
            raw
        );
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
        assert!(decode(&frame, raw.len(), &id, &Naming::PLAIN).is_err());
        assert!(matches!(
            decode(&[9, 1, 2], 2, &id, &Naming::PLAIN),
            Err(FrameError::UnknownCodec(9))
        ));
        assert!(matches!(
            decode(&[], 0, &id, &Naming::PLAIN),
            Err(FrameError::Empty)
        ));
        // A hostile table cannot make decode allocate gigabytes.
        assert!(matches!(
            decode(&frame, u32::MAX as usize, &id, &Naming::PLAIN),
            Err(FrameError::TooLong(_))
        ));
    }

    /// bf16-like data: sign/exponent bytes cluster, mantissa bytes look random.
    fn bf16ish(n: usize) -> Vec<u8> {
        let mut x = 88172645463325252u64;
        (0..n)
            .flat_map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let v = ((x >> 40) as f32 / (1u64 << 24) as f32 - 0.5) * 0.04;
                ((v.to_bits() >> 16) as u16).to_le_bytes()
            })
            .collect()
    }

    #[test]
    fn byte_planes_beat_plain_zstd_on_floats() {
        let raw = bf16ish(1 << 18);
        let mut enc = Encoder::new(1);
        let planes = enc.encode_elements(&raw, 2);
        let plain = enc.encode(&raw);
        assert_eq!(planes[0], Codec::Planes as u8);
        assert!(
            planes.len() < plain.len(),
            "planes {} vs plain {}",
            planes.len(),
            plain.len()
        );
        assert_eq!(
            decode(&planes, raw.len(), &ChunkId::of(&raw), &Naming::PLAIN).unwrap(),
            raw
        );
        // An odd length keeps a raw tail.
        let odd = &raw[..raw.len() - 1];
        let f = enc.encode_elements(odd, 2);
        assert_eq!(
            decode(&f, odd.len(), &ChunkId::of(odd), &Naming::PLAIN).unwrap(),
            odd
        );
    }

    #[test]
    fn malformed_planes_are_errors() {
        let raw = bf16ish(4096);
        let frame = Encoder::new(1).encode_elements(&raw, 2);
        let id = ChunkId::of(&raw);
        for cut in [1, 2, 5, frame.len() / 2, frame.len() - 1] {
            assert!(
                decode(&frame[..cut], raw.len(), &id, &Naming::PLAIN).is_err(),
                "cut {cut}"
            );
        }
        let mut bad_width = frame.clone();
        bad_width[1] = 3;
        assert!(decode(&bad_width, raw.len(), &id, &Naming::PLAIN).is_err());
    }

    proptest! {
        #[test]
        fn planes_round_trip(raw in proptest::collection::vec(any::<u8>(), 0..3000), rep in 1usize..6, width in prop_oneof![Just(2u8), Just(4u8)]) {
            let raw = raw.repeat(rep);
            let frame = Encoder::new(1).encode_elements(&raw, width);
            prop_assert_eq!(decode(&frame, raw.len(), &ChunkId::of(&raw), &Naming::PLAIN).unwrap(), raw);
        }

        #[test]
        fn round_trip(raw in proptest::collection::vec(any::<u8>(), 0..5000), rep in 1usize..4) {
            let raw = raw.repeat(rep);
            let frame = encode(&raw, 1);
            prop_assert_eq!(decode(&frame, raw.len(), &ChunkId::of(&raw), &Naming::PLAIN).unwrap(), raw);
        }
    }
}
