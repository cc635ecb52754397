//! Element deltas: a chunk of tensor elements encoded against its counterpart (the same
//! element range of the same tensor) in an earlier step.
//!
//! Two payloads, and the encoder keeps the smaller:
//! - **XOR planes** for updates that touch every element (a full fine-tune step): the new
//!   elements XORed with the base, split into byte planes (byte k of every element together),
//!   each plane zstd-compressed when that pays. Sign, exponent and high mantissa bits rarely
//!   move, so their planes are nearly all zero and cost almost nothing.
//! - **Sparse** for updates that touch a few elements (an RL step in bf16): the indices of the
//!   changed elements as varint gaps, then their XOR with the base as byte planes, all
//!   zstd-compressed.
//!
//! Pure and I/O-free. The payload does not name its base: the frame that carries it does
//! (FORMAT.md). Decoding needs the base's raw bytes, which the caller has verified against
//! the base's chunk id; the result is checked against the new chunk's id by the caller too.

/// Which payload follows the first byte.
const XOR_PLANES: u8 = 0;
const SPARSE: u8 = 1;

/// A delta payload that cannot be applied to its base.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DeltaError {
    /// The payload does not parse; what is wrong.
    #[error("delta payload is malformed: {0}")]
    Malformed(&'static str),
    /// The payload was made for a base of another length.
    #[error("delta of {want} bytes applied to a base of {got} bytes")]
    BaseLength {
        /// The base's length.
        got: usize,
        /// The length the payload expects.
        want: usize,
    },
    /// The payload's zstd section is damaged.
    #[error("zstd section of a delta does not decompress")]
    Zstd,
}

/// Encodes deltas, reusing one zstd context.
pub struct DeltaEncoder {
    zstd: Option<zstd::bulk::Compressor<'static>>,
}

impl DeltaEncoder {
    /// An encoder compressing at zstd `level`.
    pub fn new(level: i32) -> Self {
        Self {
            zstd: zstd::bulk::Compressor::new(level).ok(),
        }
    }

    /// The delta payload of `new` against `base` (`width`-byte elements: 2 for F16/BF16, 4
    /// for F32; any other width is treated as bytes), or `None` when the two differ in length
    /// (no counterpart). The caller compares its size with the full frame's.
    pub fn encode(&mut self, base: &[u8], new: &[u8], width: u8) -> Option<Vec<u8>> {
        if base.len() != new.len() {
            return None;
        }
        let w = match width {
            2 | 4 => width as usize,
            _ => 1,
        };
        let n = new.len() / w;
        let changed = count_changed(base, new, w);
        let xor = self.xor_planes(base, new, w);
        // Sparse pays when few elements moved; at a quarter it never beats XOR planes.
        if changed < n / 4 {
            let sparse = self.sparse(base, new, w, changed);
            if sparse.len() < xor.len() {
                return Some(sparse);
            }
        }
        Some(xor)
    }

    fn xor_planes(&mut self, base: &[u8], new: &[u8], w: usize) -> Vec<u8> {
        let n = new.len() / w;
        let mut out = Vec::with_capacity(new.len() / 2 + 16);
        out.push(XOR_PLANES);
        out.push(w as u8);
        let mut plane = vec![0u8; n];
        for k in 0..w {
            for (i, p) in plane.iter_mut().enumerate() {
                *p = new[i * w + k] ^ base[i * w + k];
            }
            self.section(&mut out, &plane);
        }
        out.extend(new[n * w..].iter().zip(&base[n * w..]).map(|(a, b)| a ^ b));
        out
    }

    fn sparse(&mut self, base: &[u8], new: &[u8], w: usize, changed: usize) -> Vec<u8> {
        let n = new.len() / w;
        let mut gaps = Vec::with_capacity(changed * 2);
        let mut planes = vec![Vec::with_capacity(changed); w];
        let mut last = 0usize;
        for i in 0..n {
            let (a, b) = (&new[i * w..(i + 1) * w], &base[i * w..(i + 1) * w]);
            if a != b {
                put_varint(&mut gaps, (i - last) as u64);
                last = i;
                for k in 0..w {
                    planes[k].push(a[k] ^ b[k]);
                }
            }
        }
        let mut out = Vec::with_capacity(gaps.len() + changed * w + 32);
        out.push(SPARSE);
        out.push(w as u8);
        out.extend_from_slice(&(changed as u32).to_le_bytes());
        self.section(&mut out, &gaps);
        for p in &planes {
            self.section(&mut out, p);
        }
        out.extend(new[n * w..].iter().zip(&base[n * w..]).map(|(a, b)| a ^ b));
        out
    }

    /// Appends `codec u8, len u32, bytes`: zstd when it saves at least 1/32, else raw.
    fn section(&mut self, out: &mut Vec<u8>, data: &[u8]) {
        let packed = self.zstd.as_mut().and_then(|z| {
            let mut buf = Vec::with_capacity(zstd::zstd_safe::compress_bound(data.len()));
            let n = z.compress_to_buffer(data, &mut buf).ok()?;
            (n < data.len() - data.len() / 32).then_some(buf)
        });
        let (codec, body) = match &packed {
            Some(z) => (1u8, z.as_slice()),
            None => (0u8, data),
        };
        out.push(codec);
        out.extend_from_slice(&(body.len() as u32).to_le_bytes());
        out.extend_from_slice(body);
    }
}

/// Rebuilds the new chunk from its base and a delta payload.
pub fn decode(payload: &[u8], base: &[u8], raw_len: usize) -> Result<Vec<u8>, DeltaError> {
    if base.len() != raw_len {
        return Err(DeltaError::BaseLength {
            got: base.len(),
            want: raw_len,
        });
    }
    let mut out = base.to_vec();
    apply(payload, &mut out)?;
    Ok(out)
}

/// Applies a delta payload in place: `chunk` holds the base and ends holding the new chunk
/// (on an error its content is unspecified). The caller checks the result against its id.
pub fn apply(payload: &[u8], chunk: &mut [u8]) -> Result<(), DeltaError> {
    let raw_len = chunk.len();
    let mut r = Reader(payload);
    let mode = r.byte()?;
    let w = r.byte()? as usize;
    if !(w == 1 || w == 2 || w == 4) {
        return Err(DeltaError::Malformed("element width must be 1, 2 or 4"));
    }
    let n = raw_len / w;
    match mode {
        XOR_PLANES => {
            let mut planes = Vec::with_capacity(w);
            for _ in 0..w {
                let plane = r.section(n)?;
                if plane.len() != n {
                    return Err(DeltaError::Malformed(
                        "plane length differs from the chunk's",
                    ));
                }
                planes.push(plane);
            }
            xor_planes_into(&planes, &mut chunk[..n * w]);
        }
        SPARSE => apply_sparse(&mut r, w, &mut chunk[..n * w])?,
        _ => return Err(DeltaError::Malformed("unknown delta mode")),
    }
    let tail = r.0;
    if tail.len() != raw_len - n * w {
        return Err(DeltaError::Malformed(
            "tail length differs from the chunk's",
        ));
    }
    for (o, x) in chunk[n * w..].iter_mut().zip(tail) {
        *o ^= x;
    }
    Ok(())
}

/// XORs byte planes (plane k: byte k of every element) into `elements`, in one pass.
fn xor_planes_into(planes: &[Vec<u8>], elements: &mut [u8]) {
    match planes {
        [p0, p1] => {
            for ((e, a), b) in elements.chunks_exact_mut(2).zip(p0).zip(p1) {
                e[0] ^= a;
                e[1] ^= b;
            }
        }
        [p0, p1, p2, p3] => {
            let planes = p0.iter().zip(p1).zip(p2).zip(p3);
            for (e, (((a, b), c), d)) in elements.chunks_exact_mut(4).zip(planes) {
                let x = u32::from_le_bytes([*a, *b, *c, *d]);
                let v = u32::from_le_bytes([e[0], e[1], e[2], e[3]]) ^ x;
                e.copy_from_slice(&v.to_le_bytes());
            }
        }
        _ => {
            let w = planes.len();
            for (k, plane) in planes.iter().enumerate() {
                for (e, x) in elements.chunks_exact_mut(w).zip(plane) {
                    e[k] ^= x;
                }
            }
        }
    }
}

/// The sparse payload after its mode and width: changed-element indices, then their XORs.
fn apply_sparse(r: &mut Reader<'_>, w: usize, elements: &mut [u8]) -> Result<(), DeltaError> {
    let n = elements.len() / w;
    let count = u32::from_le_bytes(r.array()?) as usize;
    if count > n {
        return Err(DeltaError::Malformed("more changed elements than elements"));
    }
    // Each gap is at most 10 varint bytes; the bound keeps zstd's output sized by the chunk,
    // not by the payload's claim.
    let gaps = r.section(count.saturating_mul(10))?;
    let mut planes = Vec::with_capacity(w);
    for _ in 0..w {
        let p = r.section(count)?;
        if p.len() != count {
            return Err(DeltaError::Malformed(
                "value plane length differs from the count",
            ));
        }
        planes.push(p);
    }
    let mut g = gaps.as_slice();
    let mut at = 0usize;
    for j in 0..count {
        let gap = get_varint(&mut g)?;
        at = usize::try_from(gap)
            .ok()
            .and_then(|gap| at.checked_add(gap))
            .filter(|&i| i < n && (j == 0 || gap > 0))
            .ok_or(DeltaError::Malformed(
                "changed element index out of order or range",
            ))?;
        for (k, p) in planes.iter().enumerate() {
            elements[at * w + k] ^= p[j];
        }
    }
    if !g.is_empty() {
        return Err(DeltaError::Malformed("trailing index bytes"));
    }
    Ok(())
}

fn count_changed(base: &[u8], new: &[u8], w: usize) -> usize {
    new.chunks_exact(w)
        .zip(base.chunks_exact(w))
        .filter(|(a, b)| a != b)
        .count()
}

fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push(v as u8 | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn get_varint(data: &mut &[u8]) -> Result<u64, DeltaError> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let (&b, rest) = data
            .split_first()
            .ok_or(DeltaError::Malformed("truncated index"))?;
        *data = rest;
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err(DeltaError::Malformed("index varint too long"))
}

/// A cursor over a payload whose every read is bounds-checked.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], DeltaError> {
        if self.0.len() < n {
            return Err(DeltaError::Malformed("truncated payload"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, DeltaError> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DeltaError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.take(N)?);
        Ok(a)
    }

    /// One `codec u8, len u32, bytes` section, decompressed to at most `max` bytes.
    fn section(&mut self, max: usize) -> Result<Vec<u8>, DeltaError> {
        let codec = self.byte()?;
        let len = u32::from_le_bytes(self.array()?) as usize;
        let body = self.take(len)?;
        match codec {
            0 => Ok(body.to_vec()),
            1 => super::unzstd(body, max).map_err(|_| DeltaError::Zstd),
            _ => Err(DeltaError::Malformed("section codec must be raw or zstd")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A deterministic normal-ish generator (sum of uniforms), enough for weight-like data.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
        fn normal(&mut self) -> f32 {
            (0..4)
                .map(|_| (self.next() >> 40) as f32 / (1u64 << 24) as f32)
                .sum::<f32>()
                - 2.0
        }
    }

    fn f32_bytes(v: &[f32]) -> Vec<u8> {
        v.iter().flat_map(|x| x.to_le_bytes()).collect()
    }

    fn bf16_bytes(v: &[f32]) -> Vec<u8> {
        v.iter()
            .flat_map(|x| {
                let b = x.to_bits();
                // Round to nearest even, as training frameworks cast.
                let r = b.wrapping_add(0x7fff + ((b >> 16) & 1));
                ((r >> 16) as u16).to_le_bytes()
            })
            .collect()
    }

    fn round_trip(base: &[u8], new: &[u8], width: u8) -> usize {
        let payload = DeltaEncoder::new(3).encode(base, new, width).unwrap();
        assert_eq!(decode(&payload, base, new.len()).unwrap(), new);
        payload.len()
    }

    #[test]
    fn fine_tune_step_costs_about_the_moving_bits() {
        let mut rng = Rng(7);
        let w0: Vec<f32> = (0..1 << 18).map(|_| rng.normal() * 0.02).collect();
        let w1: Vec<f32> = w0.iter().map(|w| w * (1.0 + 1e-3 * rng.normal())).collect();
        let (base, new) = (f32_bytes(&w0), f32_bytes(&w1));
        let size = round_trip(&base, &new, 4);
        let ratio = size as f64 / new.len() as f64;
        // Sign, exponent and the top mantissa bits stay: about half the bytes remain.
        eprintln!(
            "fine-tune step: delta {size} B of {} B = {ratio:.3}",
            new.len()
        );
        assert!(ratio < 0.62, "fine-tune delta ratio {ratio:.3}");
    }

    #[test]
    fn rl_step_costs_a_few_percent() {
        let mut rng = Rng(11);
        let master: Vec<f32> = (0..1 << 18).map(|_| rng.normal() * 0.02).collect();
        let next: Vec<f32> = master
            .iter()
            .map(|w| w * (1.0 + 1.2e-4 * rng.normal()))
            .collect();
        let (base, new) = (bf16_bytes(&master), bf16_bytes(&next));
        let changed = count_changed(&base, &new, 2);
        assert!(
            changed > 0 && changed < (1 << 18) / 20,
            "{changed} elements changed"
        );
        let size = round_trip(&base, &new, 2);
        let ratio = size as f64 / new.len() as f64;
        eprintln!(
            "RL step: {changed} elements changed, delta {size} B of {} B = {ratio:.4}",
            new.len()
        );
        assert!(
            ratio < 0.03,
            "RL delta ratio {ratio:.4} for {changed} changed elements"
        );
    }

    #[test]
    fn identical_chunks_cost_almost_nothing_and_lengths_must_match() {
        let base = vec![7u8; 1 << 16];
        assert!(round_trip(&base, &base, 2) < 64);
        assert_eq!(DeltaEncoder::new(3).encode(&base, &base[1..], 2), None);
        assert_eq!(
            decode(&[0, 2], &base, base.len() - 1),
            Err(DeltaError::BaseLength {
                got: base.len(),
                want: base.len() - 1
            })
        );
    }

    #[test]
    fn malformed_payloads_are_errors_not_panics() {
        let mut rng = Rng(3);
        let base: Vec<u8> = (0..4099).map(|_| rng.next() as u8).collect();
        let mut new = base.clone();
        new[100] ^= 1;
        new[4098] ^= 2;
        let payload = DeltaEncoder::new(3).encode(&base, &new, 2).unwrap();
        assert_eq!(payload[0], SPARSE);
        for cut in 0..payload.len() {
            assert!(
                decode(&payload[..cut], &base, new.len()).is_err(),
                "cut {cut}"
            );
        }
        let mut bad = payload.clone();
        bad[0] = 9;
        assert!(decode(&bad, &base, new.len()).is_err());
        let mut bad = payload.clone();
        bad[1] = 3;
        assert!(decode(&bad, &base, new.len()).is_err());
        // A claimed count beyond the chunk's elements.
        let mut bad = payload;
        bad[2..6].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode(&bad, &base, new.len()).is_err());
    }

    proptest! {
        #[test]
        fn encode_then_decode_is_identity(
            base in proptest::collection::vec(any::<u8>(), 0..4000),
            edits in proptest::collection::vec((any::<usize>(), any::<u8>()), 0..200),
            width in prop_oneof![Just(1u8), Just(2u8), Just(4u8), Just(3u8)],
        ) {
            let mut new = base.clone();
            for (at, x) in edits {
                if !new.is_empty() {
                    let i = at % new.len();
                    new[i] ^= x;
                }
            }
            let payload = DeltaEncoder::new(1).encode(&base, &new, width).unwrap();
            prop_assert_eq!(decode(&payload, &base, new.len()).unwrap(), new);
        }

        #[test]
        fn unrelated_arrays_round_trip(
            base in proptest::collection::vec(any::<u8>(), 0..3000),
            seed in any::<u64>(),
            width in prop_oneof![Just(2u8), Just(4u8)],
        ) {
            let mut rng = Rng(seed | 1);
            let new: Vec<u8> = base.iter().map(|_| rng.next() as u8).collect();
            let payload = DeltaEncoder::new(1).encode(&base, &new, width).unwrap();
            prop_assert_eq!(decode(&payload, &base, new.len()).unwrap(), new);
        }
    }
}
