//! Packs and pack indexes: the binary formats (see FORMAT.md) and a builder that gathers
//! frames into a pack.
//!
//! A pack is `magic | frames… | table | trailer`; its pack index object repeats the table so a
//! client learns a repository's chunk set without reading packs.

use bytes::Bytes;

use super::seal::context;
use super::Sealing;
use crate::ids::{ChunkId, PackId};

const PACK_MAGIC: &[u8; 8] = b"FRYPACK1";
const PACK_END: &[u8; 8] = b"FRYPEND1";
const INDEX_MAGIC: &[u8; 8] = b"FRYIDX01";
/// A pack index that also lists the delta bases of the pack's delta frames (format version 2).
const INDEX_MAGIC_BASES: &[u8; 8] = b"FRYIDX02";
/// One table entry: chunk id, frame offset, frame length, raw length.
pub const ENTRY_LEN: usize = 32 + 8 + 4 + 4;
/// Trailer: table offset (u64), entry count (u32), BLAKE3 of the table (32), end magic (8).
const TRAILER_LEN: usize = 8 + 4 + 32 + 8;

/// Where one chunk's frame sits in a pack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PackEntry {
    /// The chunk the frame holds.
    pub chunk: ChunkId,
    /// Byte offset of the frame from the start of the pack.
    pub offset: u64,
    /// Frame length (codec byte + payload).
    pub frame_len: u32,
    /// Length of the chunk's raw bytes.
    pub raw_len: u32,
}

impl PackEntry {
    /// The frame's byte range in the pack.
    pub fn range(&self) -> std::ops::Range<u64> {
        self.offset..self.offset + self.frame_len as u64
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.chunk.0);
        out.extend_from_slice(&self.offset.to_le_bytes());
        out.extend_from_slice(&self.frame_len.to_le_bytes());
        out.extend_from_slice(&self.raw_len.to_le_bytes());
    }

    fn read(b: &[u8]) -> Self {
        Self {
            chunk: ChunkId::from_slice(b).expect("entry slice holds an id"),
            offset: u64::from_le_bytes(b[32..40].try_into().expect("8 bytes")),
            frame_len: u32::from_le_bytes(b[40..44].try_into().expect("4 bytes")),
            raw_len: u32::from_le_bytes(b[44..48].try_into().expect("4 bytes")),
        }
    }
}

/// The stored sizes of a pack of `frames` frames holding `frame_bytes` bytes, `bases` of them
/// delta frames, and of its pack index: what [`PackBuilder::seal`] and [`PackIndex::encode`]
/// produce, without the bytes (a dry run's forecast). `overhead`: what sealing adds to the
/// table and the index (0 in a plain repository; frames come sealed in `frame_bytes`).
pub fn sealed_sizes(frames: usize, frame_bytes: u64, bases: usize, overhead: u64) -> (u64, u64) {
    let table = (frames * ENTRY_LEN) as u64;
    let pack = PACK_MAGIC.len() as u64 + frame_bytes + table + overhead + TRAILER_LEN as u64;
    let base_list = if bases == 0 { 0 } else { 4 + 64 * bases as u64 };
    let index = (INDEX_MAGIC.len() + 32 + 8 + 4) as u64 + table + base_list + 32 + overhead;
    (pack, index)
}

/// The length a [`PackBuilder`] reaches with `frame_bytes` of frames (its magic first).
pub fn builder_len(frame_bytes: u64) -> u64 {
    PACK_MAGIC.len() as u64 + frame_bytes
}

/// A pack or pack index that does not parse.
#[derive(Debug, thiserror::Error)]
pub enum PackFormatError {
    /// Shorter than the smallest valid object; the length found.
    #[error("too short ({0} bytes)")]
    TooShort(usize),
    /// The magic is wrong; names what was expected (pack or pack index).
    #[error("bad magic: not a ferry {0} (or a newer format version)")]
    Magic(&'static str),
    /// The BLAKE3 checksum of the table (or of the index body) does not match.
    #[error("table checksum mismatch")]
    Checksum,
    /// The table contradicts itself or the object's size; what is wrong.
    #[error("table is inconsistent: {0}")]
    Table(String),
    /// An encrypted repository's table that does not authenticate.
    #[error(transparent)]
    Sealed(#[from] crate::crypto::CryptoError),
}

/// Gathers frames into one pack in memory.
pub struct PackBuilder {
    buf: Vec<u8>,
    entries: Vec<PackEntry>,
    bases: Vec<DeltaBase>,
    /// Seals the table (frames come sealed).
    sealing: Sealing,
}

/// A delta frame's chunk and the base chunk it needs (codec 3, FORMAT.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DeltaBase {
    /// The chunk stored as a delta frame.
    pub chunk: ChunkId,
    /// The chunk its delta applies to.
    pub base: ChunkId,
}

/// A finished pack, ready to upload.
pub struct SealedPack {
    /// The pack's id (BLAKE3 of `data`).
    pub id: PackId,
    /// The pack object's bytes: frames, then the table.
    pub data: Bytes,
    /// Where each chunk's frame sits in `data`.
    pub entries: Vec<PackEntry>,
    /// The bases of its delta frames, in frame order.
    pub bases: Vec<DeltaBase>,
}

impl SealedPack {
    /// Its pack index.
    pub fn index(&self) -> PackIndex {
        PackIndex {
            pack: self.id,
            pack_size: self.data.len() as u64,
            entries: self.entries.clone(),
            bases: self.bases.clone(),
        }
    }
}

impl Default for PackBuilder {
    fn default() -> Self {
        Self::new(Sealing::PLAIN)
    }
}

impl PackBuilder {
    /// An empty pack for a repository sealed by `sealing` (its frames are added sealed; its
    /// table is sealed by [`Self::seal`]).
    pub fn new(sealing: Sealing) -> Self {
        Self {
            buf: PACK_MAGIC.to_vec(),
            entries: Vec::new(),
            bases: Vec::new(),
            sealing,
        }
    }

    /// Whether no frame was added yet.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Bytes gathered so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Appends one chunk's frame as stored (sealed in an encrypted repository); `raw_len`:
    /// the chunk's length before encoding; `base`: the chunk a delta frame applies to.
    pub fn add(&mut self, chunk: ChunkId, frame: &[u8], raw_len: u32, base: Option<ChunkId>) {
        debug_assert!(
            self.sealing.is_encrypted()
                || base
                    == crate::codec::delta_header(frame)
                        .ok()
                        .flatten()
                        .map(|h| h.base),
            "a plain frame's base is the one its header names"
        );
        self.entries.push(PackEntry {
            chunk,
            offset: self.buf.len() as u64,
            frame_len: frame.len() as u32,
            raw_len,
        });
        if let Some(base) = base {
            self.bases.push(DeltaBase { chunk, base });
        }
        self.buf.extend_from_slice(frame);
    }

    /// Appends the table and trailer; the pack id is the BLAKE3 of the whole object.
    pub fn seal(self) -> SealedPack {
        let Self {
            mut buf,
            entries,
            bases,
            sealing,
        } = self;
        let table_offset = buf.len() as u64;
        let mut table = Vec::with_capacity(entries.len() * ENTRY_LEN);
        for e in &entries {
            e.write(&mut table);
        }
        let table = sealing.seal(context::PACK_TABLE, table);
        buf.extend_from_slice(&table);
        buf.extend_from_slice(&table_offset.to_le_bytes());
        buf.extend_from_slice(&(entries.len() as u32).to_le_bytes());
        buf.extend_from_slice(blake3::hash(&table).as_bytes());
        buf.extend_from_slice(PACK_END);
        SealedPack {
            id: PackId::of(&buf),
            data: Bytes::from(buf),
            entries,
            bases,
        }
    }
}

fn parse_entries(table: &[u8], limit: u64) -> Result<Vec<PackEntry>, PackFormatError> {
    let entries: Vec<PackEntry> = table.chunks_exact(ENTRY_LEN).map(PackEntry::read).collect();
    for e in &entries {
        // Checked: a hostile offset near u64::MAX must not wrap around into the data area.
        let end = e.offset.checked_add(e.frame_len as u64);
        if e.frame_len == 0
            || e.offset < PACK_MAGIC.len() as u64
            || end.is_none_or(|end| end > limit)
        {
            return Err(PackFormatError::Table(format!(
                "chunk {} has frame {}..{} outside the data area",
                e.chunk,
                e.offset,
                e.offset.saturating_add(e.frame_len as u64)
            )));
        }
    }
    Ok(entries)
}

/// Reads the table from a whole pack object of a repository sealed by `sealing` (`object`
/// names the pack in errors).
pub fn read_pack_table(
    pack: &[u8],
    sealing: &Sealing,
    object: &str,
) -> Result<Vec<PackEntry>, PackFormatError> {
    if pack.len() < PACK_MAGIC.len() + TRAILER_LEN {
        return Err(PackFormatError::TooShort(pack.len()));
    }
    if &pack[..8] != PACK_MAGIC || &pack[pack.len() - 8..] != PACK_END {
        return Err(PackFormatError::Magic("pack"));
    }
    let t = &pack[pack.len() - TRAILER_LEN..];
    let table_offset = u64::from_le_bytes(t[0..8].try_into().expect("8 bytes"));
    let count = u32::from_le_bytes(t[8..12].try_into().expect("4 bytes")) as u64;
    let table_end = (pack.len() - TRAILER_LEN) as u64;
    if table_offset < 8
        || table_offset > table_end
        || table_end - table_offset != count * ENTRY_LEN as u64 + sealing.overhead()
    {
        return Err(PackFormatError::Table(
            "table size does not match its entry count".into(),
        ));
    }
    let table = &pack[table_offset as usize..table_end as usize];
    if blake3::hash(table).as_bytes() != &t[12..44] {
        return Err(PackFormatError::Checksum);
    }
    let table = sealing.open(
        &format!("{object} (its table)"),
        context::PACK_TABLE,
        Bytes::copy_from_slice(table),
    )?;
    parse_entries(&table, table_offset)
}

/// A pack index object: which chunks a pack holds and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PackIndex {
    /// The pack described.
    pub pack: PackId,
    /// The pack object's size in bytes.
    pub pack_size: u64,
    /// Every chunk in the pack, in frame order.
    pub entries: Vec<PackEntry>,
    /// The bases of the pack's delta frames (`FRYIDX02`; empty in `FRYIDX01`).
    pub bases: Vec<DeltaBase>,
}

impl PackIndex {
    /// The pack index as stored (see FORMAT.md).
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(8 + 32 + 8 + 4 + self.entries.len() * ENTRY_LEN + 32);
        let with_bases = !self.bases.is_empty();
        out.extend_from_slice(if with_bases {
            INDEX_MAGIC_BASES
        } else {
            INDEX_MAGIC
        });
        out.extend_from_slice(&self.pack.0);
        out.extend_from_slice(&self.pack_size.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u32).to_le_bytes());
        for e in &self.entries {
            e.write(&mut out);
        }
        if with_bases {
            out.extend_from_slice(&(self.bases.len() as u32).to_le_bytes());
            for b in &self.bases {
                out.extend_from_slice(&b.chunk.0);
                out.extend_from_slice(&b.base.0);
            }
        }
        let sum = blake3::hash(&out);
        out.extend_from_slice(sum.as_bytes());
        out
    }

    /// Parses and checks a pack index (magic, checksum, entries within the pack).
    pub fn decode(b: &[u8]) -> Result<Self, PackFormatError> {
        const HEAD: usize = 8 + 32 + 8 + 4;
        if b.len() < HEAD + 32 {
            return Err(PackFormatError::TooShort(b.len()));
        }
        let with_bases = &b[..8] == INDEX_MAGIC_BASES;
        if &b[..8] != INDEX_MAGIC && !with_bases {
            return Err(PackFormatError::Magic("pack index"));
        }
        let (body, sum) = b.split_at(b.len() - 32);
        if blake3::hash(body).as_bytes() != sum {
            return Err(PackFormatError::Checksum);
        }
        let pack = PackId::from_slice(&body[8..40]).expect("32 bytes");
        let pack_size = u64::from_le_bytes(body[40..48].try_into().expect("8 bytes"));
        let count = u32::from_le_bytes(body[48..52].try_into().expect("4 bytes")) as usize;
        let mut table = &body[HEAD..];
        let mut bases = Vec::new();
        if with_bases {
            let rest = table
                .get(count.saturating_mul(ENTRY_LEN)..)
                .filter(|r| r.len() >= 4)
                .ok_or(PackFormatError::Table("truncated base list".into()))?;
            let n = u32::from_le_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
            if rest.len() - 4 != n.saturating_mul(64) {
                return Err(PackFormatError::Table(
                    "base count does not match the base list".into(),
                ));
            }
            bases = rest[4..]
                .chunks_exact(64)
                .map(|p| DeltaBase {
                    chunk: ChunkId::from_slice(&p[..32]).expect("32 bytes"),
                    base: ChunkId::from_slice(&p[32..]).expect("32 bytes"),
                })
                .collect();
            table = &table[..count * ENTRY_LEN];
        }
        if table.len() != count * ENTRY_LEN {
            return Err(PackFormatError::Table(
                "entry count does not match the table size".into(),
            ));
        }
        let entries = parse_entries(table, pack_size)?;
        Ok(Self {
            pack,
            pack_size,
            entries,
            bases,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn build(chunks: &[Vec<u8>]) -> SealedPack {
        let mut b = PackBuilder::default();
        for c in chunks {
            let frame = crate::codec::encode(c, 1);
            b.add(ChunkId::of(c), &frame, c.len() as u32, None);
        }
        b.seal()
    }

    /// A dry run's forecast of a pack and its index is their real size, with and without
    /// delta bases.
    #[test]
    fn sealed_sizes_are_the_sealed_packs_sizes() {
        let chunks = [
            b"aaaa".repeat(50),
            b"bbb".to_vec(),
            (0..999u32).map(|i| i as u8).collect(),
        ];
        let pack = build(&chunks);
        let frame_bytes: u64 = pack.entries.iter().map(|e| e.frame_len as u64).sum();
        let want = (pack.data.len() as u64, pack.index().encode().len() as u64);
        assert_eq!(sealed_sizes(3, frame_bytes, 0, 0), want);
        let mut b = PackBuilder::default();
        let base = ChunkId::of(b"base");
        let frame = crate::codec::delta_frame(&base, 1, b"payload");
        b.add(ChunkId::of(b"new"), &frame, 100, Some(base));
        let x = crate::codec::encode(b"x", 1);
        b.add(ChunkId::of(b"x"), &x, 1, None);
        let frames = (frame.len() + x.len()) as u64;
        assert_eq!(b.len() as u64, builder_len(frames));
        let sealed = b.seal();
        assert_eq!(sealed.bases.len(), 1);
        assert_eq!(
            sealed_sizes(2, frames, 1, 0),
            (
                sealed.data.len() as u64,
                sealed.index().encode().len() as u64
            )
        );
    }

    #[test]
    fn corruption_and_truncation_are_errors() {
        let pack = build(&[b"aaaa".repeat(50), b"bbb".to_vec()]);
        let mut bad = pack.data.to_vec();
        let n = bad.len();
        bad[n - 20] ^= 1;
        assert!(read_pack_table(&bad, &Sealing::PLAIN, "p").is_err());
        assert!(read_pack_table(&pack.data[..pack.data.len() - 1], &Sealing::PLAIN, "p").is_err());
        assert!(read_pack_table(b"short", &Sealing::PLAIN, "p").is_err());
        let idx = pack.index().encode();
        assert!(PackIndex::decode(&idx[..idx.len() - 3]).is_err());
        let mut flipped = idx.clone();
        flipped[50] ^= 4;
        assert!(matches!(
            PackIndex::decode(&flipped),
            Err(PackFormatError::Checksum)
        ));
    }

    #[test]
    fn delta_bases_travel_in_the_pack_index() {
        let base = b"base".repeat(100);
        let mut new = base.clone();
        new[7] ^= 1;
        let payload = crate::codec::delta::DeltaEncoder::new(1)
            .encode(&base, &new, 1)
            .unwrap();
        let frame = crate::codec::delta_frame(&ChunkId::of(&base), 1, &payload);
        let mut b = PackBuilder::default();
        b.add(
            ChunkId::of(&base),
            &crate::codec::encode(&base, 1),
            base.len() as u32,
            None,
        );
        b.add(
            ChunkId::of(&new),
            &frame,
            new.len() as u32,
            Some(ChunkId::of(&base)),
        );
        let pack = b.seal();
        let want = vec![DeltaBase {
            chunk: ChunkId::of(&new),
            base: ChunkId::of(&base),
        }];
        assert_eq!(pack.bases, want);
        let encoded = pack.index().encode();
        assert_eq!(&encoded[..8], INDEX_MAGIC_BASES);
        assert_eq!(PackIndex::decode(&encoded).unwrap(), pack.index());
        // Without delta frames the index is the version 1 object, byte for byte.
        let plain = build(std::slice::from_ref(&base)).index().encode();
        assert_eq!(&plain[..8], INDEX_MAGIC);
        for cut in [encoded.len() - 40, encoded.len() - 70] {
            let mut short = encoded[..cut].to_vec();
            short.extend_from_slice(blake3::hash(&short).as_bytes());
            assert!(PackIndex::decode(&short).is_err());
        }
    }

    #[test]
    fn frame_offsets_cannot_wrap_around() {
        let pack = build(&[b"abc".repeat(40)]);
        let mut entries = pack.entries.clone();
        entries[0].offset = u64::MAX - 2;
        entries[0].frame_len = 16;
        let idx = PackIndex {
            entries,
            ..pack.index()
        };
        assert!(matches!(
            PackIndex::decode(&idx.encode()),
            Err(PackFormatError::Table(_))
        ));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(32))]
        #[test]
        fn pack_and_index_round_trip(chunks in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..2000), 0..20)) {
            let pack = build(&chunks);
            prop_assert_eq!(pack.id, PackId::of(&pack.data));
            let table = read_pack_table(&pack.data, &Sealing::PLAIN, "p").unwrap();
            prop_assert_eq!(&table, &pack.entries);
            for (e, c) in table.iter().zip(&chunks) {
                let frame = &pack.data[e.offset as usize..e.range().end as usize];
                prop_assert_eq!(&crate::codec::decode(frame, e.raw_len as usize, &e.chunk, &crate::ids::Naming::PLAIN).unwrap(), c);
            }
            let idx = PackIndex { entries: table, ..pack.index() };
            prop_assert_eq!(PackIndex::decode(&idx.encode()).unwrap(), idx);
        }
    }
}
