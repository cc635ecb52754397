//! Content-defined chunking: cuts a byte stream into chunks with FastCDC (2020).
//!
//! The chunker never does I/O of its own beyond pulling from the `Read` it is given, and its
//! boundaries depend only on the bytes, never on how the reader hands them over.

pub mod safetensors;

use std::io::{self, Read};

use fastcdc::v2020;
use serde::{Deserialize, Serialize};

/// The chunker's parameters. They are part of a repository's format (stored in its config)
/// and never change under it: changing them would stop new data deduplicating against old.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    /// Algorithm name; only `fastcdc-v2020` exists.
    pub algorithm: ChunkerAlgorithm,
    /// Smallest chunk in bytes (except a file's last).
    pub min_size: u32,
    /// Target average chunk size in bytes.
    pub avg_size: u32,
    /// Largest chunk in bytes.
    pub max_size: u32,
    /// FastCDC normalization level (0–3).
    pub normalization: u8,
}

/// Chunking algorithms a repository may record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkerAlgorithm {
    /// FastCDC as in the 2020 paper, as the `fastcdc` crate implements it.
    #[serde(rename = "fastcdc-v2020")]
    FastCdc2020,
}

/// Parameters that FastCDC cannot honour.
#[derive(Debug, thiserror::Error)]
#[error("chunk average size {avg} is out of range: choose a power of two between 1KiB and 4MiB (e.g. --chunk-avg 1MiB)")]
pub struct ChunkerParamsError {
    avg: u64,
}

impl ChunkerParams {
    /// Default average chunk size: 1 MiB (min 256 KiB, max 4 MiB).
    pub const DEFAULT_AVG: u32 = 1 << 20;

    /// Parameters from an average size: min = avg/4, max = avg*4, normalization level 1.
    pub fn with_avg(avg: u64) -> Result<Self, ChunkerParamsError> {
        let ok = avg.is_power_of_two()
            && (1024..=v2020::AVERAGE_MAX as u64).contains(&avg)
            && avg / 4 <= v2020::MINIMUM_MAX as u64;
        if !ok {
            return Err(ChunkerParamsError { avg });
        }
        let avg = avg as u32;
        Ok(Self {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: avg / 4,
            avg_size: avg,
            max_size: (avg * 4).min(v2020::MAXIMUM_MAX as u32),
            normalization: 1,
        })
    }

    /// Checks parameters read from a repository config.
    pub fn validate(&self) -> Result<(), ChunkerParamsError> {
        let in_range = (v2020::MINIMUM_MIN..=v2020::MINIMUM_MAX)
            .contains(&(self.min_size as usize))
            && (v2020::AVERAGE_MIN..=v2020::AVERAGE_MAX).contains(&(self.avg_size as usize))
            && (v2020::MAXIMUM_MIN..=v2020::MAXIMUM_MAX).contains(&(self.max_size as usize))
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.normalization <= 3;
        if in_range {
            Ok(())
        } else {
            Err(ChunkerParamsError {
                avg: self.avg_size as u64,
            })
        }
    }

    fn level(&self) -> v2020::Normalization {
        match self.normalization {
            0 => v2020::Normalization::Level0,
            1 => v2020::Normalization::Level1,
            2 => v2020::Normalization::Level2,
            _ => v2020::Normalization::Level3,
        }
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        Self::with_avg(Self::DEFAULT_AVG as u64).expect("default chunker parameters are valid")
    }
}

/// Streams chunks out of a reader. Holds at most four `max_size` windows of data.
pub struct Chunker<R> {
    reader: R,
    params: ChunkerParams,
    masks: (u64, u64),
    buf: Vec<u8>,
    /// Start of unconsumed data in `buf`.
    start: usize,
    /// End of valid data in `buf`.
    end: usize,
    eof: bool,
    /// Cuts inside the input fall on multiples of this (element width of a tensor).
    align: usize,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`, cutting with `params`.
    pub fn new(reader: R, params: ChunkerParams) -> Self {
        Self::with_buffer(reader, params, Vec::new())
    }

    /// Like `new`, reusing a buffer from `into_buffer` (saves an allocation per file).
    pub fn with_buffer(reader: R, params: ChunkerParams, mut buf: Vec<u8>) -> Self {
        let masks = v2020::select_masks(params.avg_size as usize, params.level());
        // Four windows: refilling moves at most one window per three consumed.
        buf.resize(4 * params.max_size as usize, 0);
        Self {
            reader,
            params,
            masks,
            buf,
            start: 0,
            end: 0,
            eof: false,
            align: 1,
        }
    }

    /// Makes every cut except the last fall on a multiple of `align` bytes from the start,
    /// so chunks of a tensor hold whole elements (byte-plane compression needs that).
    pub fn aligned(mut self, align: usize) -> Self {
        self.align = align.max(1);
        self
    }

    /// Gives the buffer back for the next file.
    pub fn into_buffer(self) -> Vec<u8> {
        self.buf
    }

    /// Ensures `buf[start..end]` holds at least `max_size` bytes, or everything left.
    fn fill(&mut self) -> io::Result<()> {
        let want = self.params.max_size as usize;
        if self.end - self.start >= want || self.eof {
            return Ok(());
        }
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while self.end < want && !self.eof {
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => self.end += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk as a slice borrowed from the chunker, or `None` at the end.
    pub fn next_chunk(&mut self) -> io::Result<Option<&[u8]>> {
        self.fill()?;
        let avail = &self.buf[self.start..self.end];
        if avail.is_empty() {
            return Ok(None);
        }
        let p = &self.params;
        let (mask_s, mask_l) = self.masks;
        let (_, len) = v2020::cut(
            avail,
            p.min_size as usize,
            p.avg_size as usize,
            p.max_size as usize,
            mask_s,
            mask_l,
            mask_s << 1,
            mask_l << 1,
        );
        let mut len = len.max(1).min(avail.len());
        if self.align > 1 && len < avail.len() && len >= self.align {
            len -= len % self.align;
        }
        let chunk_start = self.start;
        self.start += len;
        Ok(Some(&self.buf[chunk_start..chunk_start + len]))
    }
}

/// How a file was cut into chunks; recorded in its snapshot entry so nothing downstream ever
/// re-derives it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Layout {
    /// Content-defined chunking over the whole file.
    #[default]
    Cdc,
    /// Safetensors: the header and each tensor cut separately, cuts on element boundaries.
    Safetensors,
    /// Safetensors with position-stable cuts (format version 2): as `Safetensors`, but every
    /// F16/BF16/F32 tensor is cut every `avg_size` bytes from its start, so a chunk and its
    /// counterpart in the previous step hold the same element range.
    Tensors,
}

/// How the inside of an F16/BF16/F32 tensor is cut.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TensorCuts {
    /// FastCDC, cuts moved down to element boundaries (format version 1).
    #[default]
    ContentDefined,
    /// Every `avg_size` bytes from the tensor's start (format version 2).
    Fixed,
}

impl Layout {
    /// Whether this is plain content-defined chunking (the default, left out of snapshots).
    pub fn is_cdc(&self) -> bool {
        *self == Layout::Cdc
    }
}

/// Cuts a whole file into chunks, calling `on_chunk(bytes, element_width)` for each in order.
/// Safetensors files (by name, with a valid header) are cut per tensor; anything else, or a
/// file whose header does not parse, is cut as plain bytes. `buffer` is reused across files.
pub fn cut_file<R: Read>(
    reader: R,
    path: &str,
    size: u64,
    params: ChunkerParams,
    buffer: &mut Vec<u8>,
    on_chunk: impl FnMut(&[u8], u8) -> io::Result<()>,
) -> io::Result<Layout> {
    let cuts = TensorCuts::ContentDefined;
    cut_file_with(reader, path, size, params, cuts, buffer, on_chunk)
}

/// [`cut_file`] with a choice of how tensors are cut inside (see [`TensorCuts`]).
pub fn cut_file_with<R: Read>(
    mut reader: R,
    path: &str,
    size: u64,
    params: ChunkerParams,
    cuts: TensorCuts,
    buffer: &mut Vec<u8>,
    mut on_chunk: impl FnMut(&[u8], u8) -> io::Result<()>,
) -> io::Result<Layout> {
    let mut head = Vec::new();
    let mut plan = None;
    if safetensors::is_safetensors(path) && size >= 8 {
        head.resize(8, 0);
        let got = read_full(&mut reader, &mut head)?;
        head.truncate(got);
        let first8: Option<[u8; 8]> = head.as_slice().try_into().ok();
        if let Some(n) = first8.and_then(|f| safetensors::header_len(f, size)) {
            head.resize(8 + n as usize, 0);
            let got = read_full(&mut reader, &mut head[8..])?;
            head.truncate(8 + got);
            plan = safetensors::plan(&head, size);
        }
    }
    let mut input = io::Cursor::new(head).chain(reader);
    let layout = match plan {
        Some(segments) => {
            let fixed = cuts == TensorCuts::Fixed;
            for seg in segments {
                let part = (&mut input).take(seg.len);
                if fixed && seg.width > 1 {
                    cut_fixed(part, params.avg_size as usize, seg.width, &mut on_chunk)?;
                } else {
                    cut_all(part, params, seg.width, buffer, &mut on_chunk)?;
                }
            }
            if fixed {
                Layout::Tensors
            } else {
                Layout::Safetensors
            }
        }
        None => Layout::Cdc,
    };
    // Everything else (a plain file, or bytes past the planned end of a file that grew).
    cut_all(&mut input, params, 1, buffer, &mut on_chunk)?;
    Ok(layout)
}

fn cut_all<R: Read>(
    reader: R,
    params: ChunkerParams,
    width: u8,
    buffer: &mut Vec<u8>,
    on_chunk: &mut impl FnMut(&[u8], u8) -> io::Result<()>,
) -> io::Result<()> {
    let mut chunker =
        Chunker::with_buffer(reader, params, std::mem::take(buffer)).aligned(width as usize);
    while let Some(chunk) = chunker.next_chunk()? {
        on_chunk(chunk, width)?;
    }
    *buffer = chunker.into_buffer();
    Ok(())
}

/// Cuts a tensor every `step` bytes (a power of two, so whole elements) from its start.
fn cut_fixed<R: Read>(
    mut reader: R,
    step: usize,
    width: u8,
    on_chunk: &mut impl FnMut(&[u8], u8) -> io::Result<()>,
) -> io::Result<()> {
    let mut buf = vec![0u8; step];
    loop {
        let n = read_full(&mut reader, &mut buf)?;
        if n > 0 {
            on_chunk(&buf[..n], width)?;
        }
        if n < step {
            return Ok(());
        }
    }
}

/// Reads until `buf` is full or the input ends; returns how much was read.
fn read_full<R: Read>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

#[cfg(test)]
mod tests_tensors;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Deterministic pseudo-random bytes (splitmix64).
    fn seeded(len: usize, seed: u64) -> Vec<u8> {
        let mut s = seed;
        let mut out = Vec::with_capacity(len + 8);
        while out.len() < len {
            s = s.wrapping_add(0x9E3779B97F4A7C15);
            let mut z = s;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58476D1CE4E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D049BB133111EB);
            out.extend_from_slice(&(z ^ (z >> 31)).to_le_bytes());
        }
        out.truncate(len);
        out
    }

    fn lengths<R: Read>(reader: R, params: ChunkerParams) -> Vec<usize> {
        let mut c = Chunker::new(reader, params);
        let mut out = vec![];
        while let Some(chunk) = c.next_chunk().unwrap() {
            out.push(chunk.len());
        }
        out
    }

    /// A reader that hands out at most `step` bytes per call.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }
    impl Read for Trickle<'_> {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            let n = self.step.min(buf.len()).min(self.data.len());
            buf[..n].copy_from_slice(&self.data[..n]);
            self.data = &self.data[n..];
            Ok(n)
        }
    }

    /// Golden test: these boundaries are part of the repository format. If this fails, the
    /// chunker changed and existing repositories would stop deduplicating: bump the format.
    #[test]
    fn golden_boundaries_on_seeded_data() {
        let data = seeded(1 << 20, 42);
        let params = ChunkerParams::with_avg(64 * 1024).unwrap();
        let lens = lengths(&data[..], params);
        assert_eq!(lens.iter().sum::<usize>(), data.len());
        let digest = blake3::hash(
            &lens
                .iter()
                .flat_map(|l| (*l as u64).to_le_bytes())
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            (lens.len(), &lens[..4], &digest.to_hex()[..16]),
            GOLDEN,
            "chunk boundaries moved: {lens:?}"
        );
    }
    const GOLDEN: (usize, &[usize], &str) =
        (13, &[106594, 75208, 19070, 105223], "490ab2ac6251615b");

    #[test]
    fn boundaries_independent_of_read_sizes() {
        let data = seeded(700_000, 7);
        let params = ChunkerParams::with_avg(16 * 1024).unwrap();
        let whole = lengths(&data[..], params);
        for step in [1, 37, 255, 4096, 100_000] {
            let lens = lengths(Trickle { data: &data, step }, params);
            assert_eq!(lens, whole, "read size {step}");
        }
    }

    #[test]
    fn sizes_respect_limits() {
        let data = seeded(3 << 20, 9);
        let params = ChunkerParams::with_avg(64 * 1024).unwrap();
        let lens = lengths(&data[..], params);
        let (last, rest) = lens.split_last().unwrap();
        assert!(*last <= params.max_size as usize);
        for l in rest {
            assert!((params.min_size as usize..=params.max_size as usize).contains(l));
        }
        // All zeros: every chunk is cut at max_size.
        let zeros = vec![0u8; 1 << 20];
        assert!(lengths(&zeros[..], params)
            .iter()
            .all(|l| *l == params.max_size as usize || *l < params.min_size as usize * 4));
    }

    #[test]
    fn rejects_bad_params() {
        assert!(ChunkerParams::with_avg(1000).is_err());
        assert!(ChunkerParams::with_avg(64 << 20).is_err());
        assert!(ChunkerParams::default().validate().is_ok());
    }

    /// A safetensors file: a header, then tensors of `sizes` bytes filled from `seed`s.
    pub(super) fn safetensors_file(tensors: &[(usize, u64)]) -> Vec<u8> {
        let mut header = String::from("{");
        let mut off = 0;
        for (i, (len, _)) in tensors.iter().enumerate() {
            header.push_str(&format!(
                "\"t{i}\":{{\"dtype\":\"F32\",\"shape\":[{}],\"data_offsets\":[{off},{}]}},",
                len / 4,
                off + len
            ));
            off += len;
        }
        header.pop();
        header.push('}');
        let mut f = (header.len() as u64).to_le_bytes().to_vec();
        f.extend_from_slice(header.as_bytes());
        for (len, seed) in tensors {
            f.extend_from_slice(&seeded(*len, *seed));
        }
        f
    }

    fn cut(data: &[u8], path: &str, params: ChunkerParams) -> (Layout, Vec<(blake3::Hash, u8)>) {
        let mut out = vec![];
        let mut buf = Vec::new();
        let layout = cut_file(data, path, data.len() as u64, params, &mut buf, |c, w| {
            out.push((blake3::hash(c), w));
            Ok(())
        })
        .unwrap();
        (layout, out)
    }

    #[test]
    fn safetensors_tensors_dedup_whatever_their_neighbours_do() {
        let params = ChunkerParams::with_avg(16 * 1024).unwrap();
        let before = safetensors_file(&[(200_000, 1), (70_000, 2), (300_000, 3)]);
        // The middle tensor changes size and content; the others stay.
        let after = safetensors_file(&[(200_000, 1), (90_004, 9), (300_000, 3)]);
        let (layout, a) = cut(&before, "m.safetensors", params);
        let (_, b) = cut(&after, "m.safetensors", params);
        assert_eq!(layout, Layout::Safetensors);
        let old: std::collections::HashSet<_> = a.iter().map(|c| c.0).collect();
        let new_chunks = b.iter().filter(|c| !old.contains(&c.0)).count();
        // Header + the changed tensor's chunks only (90 KB at 16 KiB average: a handful).
        assert!(
            new_chunks <= 1 + 90_004 / params.min_size as usize,
            "{new_chunks} new"
        );
        assert!(
            b.iter().skip(1).all(|c| c.1 == 4),
            "tensor chunks carry the element width"
        );
        // The same bytes under another name are plain CDC.
        assert_eq!(cut(&before, "m.bin", params).0, Layout::Cdc);
        // A broken header falls back to plain chunking and still covers every byte.
        let mut broken = before.clone();
        broken[9] = b'#';
        let (layout, chunks) = cut(&broken, "m.safetensors", params);
        assert_eq!(layout, Layout::Cdc);
        assert!(!chunks.is_empty());
    }

    /// Golden test of the safetensors layout: boundaries on a generated file are part of the
    /// format. Tensor chunks hold whole F32 elements, and every tensor starts a new chunk.
    #[test]
    fn golden_safetensors_boundaries() {
        let params = ChunkerParams::with_avg(16 * 1024).unwrap();
        let tensors = [(150_000, 11), (4_096, 12), (260_004, 13), (64, 14)];
        let file = safetensors_file(&tensors);
        let mut lens = vec![];
        let mut buf = Vec::new();
        let layout = cut_file(
            &file[..],
            "x.safetensors",
            file.len() as u64,
            params,
            &mut buf,
            |c, w| {
                lens.push((c.len(), w));
                Ok(())
            },
        )
        .unwrap();
        assert_eq!(layout, Layout::Safetensors);
        assert_eq!(lens.iter().map(|l| l.0).sum::<usize>(), file.len());
        // Chunk ends fall on the header end and on every tensor end.
        let header_end = file.len() - tensors.iter().map(|t| t.0).sum::<usize>();
        let mut ends = std::collections::BTreeSet::new();
        let mut pos = 0;
        for (len, _) in &lens {
            pos += len;
            ends.insert(pos);
        }
        let mut tensor_end = header_end;
        assert!(ends.contains(&header_end));
        for (len, _) in &tensors {
            tensor_end += len;
            assert!(
                ends.contains(&tensor_end),
                "no cut at tensor end {tensor_end}"
            );
        }
        assert!(lens[1..].iter().all(|(l, w)| *w == 4 && l % 4 == 0));
        let digest = blake3::hash(
            &lens
                .iter()
                .flat_map(|l| (l.0 as u64).to_le_bytes())
                .collect::<Vec<_>>(),
        );
        assert_eq!(
            (lens.len(), &digest.to_hex()[..16]),
            GOLDEN_SAFETENSORS,
            "safetensors chunk boundaries moved: {lens:?}"
        );
    }
    const GOLDEN_SAFETENSORS: (usize, &str) = (26, "d3eee25bc02099e1");

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]
        #[test]
        fn chunks_concatenate_to_input(len in 0usize..300_000, seed: u64, step in 1usize..5000) {
            let data = seeded(len, seed);
            let params = ChunkerParams::with_avg(4096).unwrap();
            let mut c = Chunker::new(Trickle { data: &data, step }, params);
            let mut joined = Vec::new();
            while let Some(chunk) = c.next_chunk().unwrap() {
                joined.extend_from_slice(chunk);
            }
            prop_assert_eq!(joined, data);
        }
    }
}
