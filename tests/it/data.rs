//! Test data: a seeded PRNG, checkpoint-like trees written from it, and byte-for-byte
//! comparison of two directory trees.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

pub const KIB: usize = 1 << 10;
pub const MIB: usize = 1 << 20;

/// SplitMix64: tiny, seeded, good enough for test data.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        let last = self.next_u64().to_le_bytes();
        rest.copy_from_slice(&last[..rest.len()]);
    }
}

/// Incompressible bytes.
pub fn random_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0; len];
    Rng::new(seed).fill(&mut buf);
    buf
}

/// Low-entropy bytes (each byte one of 16 values), like the high bytes of trained weights:
/// zstd shrinks them to about half, yet no two chunks repeat.
pub fn low_entropy_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut buf = random_bytes(seed, len);
    for b in &mut buf {
        *b = 0x30 + (*b & 0x0f);
    }
    buf
}

/// Text lines like a training log or a JSON config: very compressible.
pub fn text_bytes(seed: u64, len: usize) -> Vec<u8> {
    let mut rng = Rng::new(seed);
    let mut out = Vec::with_capacity(len + 100);
    let mut step = 0u64;
    while out.len() < len {
        let loss = rng.next_u64() % 100_000;
        let lr = rng.next_u64() % 1000;
        out.extend_from_slice(
            format!("{{\"step\": {step}, \"loss\": 1.{loss:05}, \"lr\": 0.000{lr:03}}}\n")
                .as_bytes(),
        );
        step += 1;
    }
    out.truncate(len);
    out
}

pub fn write_file(root: &Path, rel: &str, data: &[u8]) {
    let path = root.join(rel);
    fs::create_dir_all(path.parent().expect("file has a parent")).expect("create parent dirs");
    fs::write(&path, data).expect("write file");
}

/// A small checkpoint: nested dirs, small files, an empty file and one ~6 MiB shard that is
/// half random and half compressible. Different seeds give trees with different bytes.
pub fn checkpoint_tree(root: &Path, seed: u64) {
    let mut shard = random_bytes(seed, 3 * MIB);
    shard.extend(low_entropy_bytes(seed + 1, 3 * MIB));
    write_file(root, "model/model-00001-of-00002.safetensors", &shard);
    write_file(
        root,
        "model/model-00002-of-00002.safetensors",
        &random_bytes(seed + 2, 200 * KIB),
    );
    write_file(root, "config.json", &text_bytes(seed + 3, 700));
    write_file(
        root,
        "model/tokenizer/vocab.txt",
        &text_bytes(seed + 4, 50 * KIB),
    );
    write_file(
        root,
        "optimizer/rank-0/state.pt",
        &random_bytes(seed + 5, 64 * KIB),
    );
    write_file(
        root,
        "logs/run/deep/events.log",
        &text_bytes(seed + 6, 10 * KIB),
    );
    write_file(root, "empty.txt", b"");
}

/// `count` random files of `size` bytes each, `shard-NN.bin`.
pub fn random_tree(root: &Path, seed: u64, count: usize, size: usize) {
    for i in 0..count {
        write_file(
            root,
            &format!("shard-{i:02}.bin"),
            &random_bytes(seed + i as u64, size),
        );
    }
}

/// What a tree holds at one relative path.
#[derive(Debug, PartialEq, Eq)]
pub enum Entry {
    Dir,
    File(u64),
    Symlink(PathBuf),
}

/// Every entry under `root`, keyed by its `/`-separated relative path.
pub fn tree(root: &Path) -> BTreeMap<String, Entry> {
    fn walk(root: &Path, dir: &Path, out: &mut BTreeMap<String, Entry>) {
        for entry in fs::read_dir(dir).unwrap_or_else(|e| panic!("read {}: {e}", dir.display())) {
            let path = entry.expect("dir entry").path();
            let rel = path
                .strip_prefix(root)
                .expect("under root")
                .to_str()
                .expect("UTF-8 path")
                .replace('\\', "/");
            let meta = fs::symlink_metadata(&path).expect("lstat");
            if meta.file_type().is_symlink() {
                out.insert(rel, Entry::Symlink(fs::read_link(&path).expect("readlink")));
            } else if meta.is_dir() {
                out.insert(rel, Entry::Dir);
                walk(root, &path, out);
            } else {
                out.insert(rel, Entry::File(meta.len()));
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(root, root, &mut out);
    out
}

/// Every regular file under `root` and its bytes, keyed by `/`-separated relative path.
pub fn file_contents(root: &Path) -> BTreeMap<String, Vec<u8>> {
    tree(root)
        .into_iter()
        .filter(|(_, entry)| matches!(entry, Entry::File(_)))
        .map(|(rel, _)| {
            let bytes = fs::read(root.join(&rel)).expect("read file");
            (rel, bytes)
        })
        .collect()
}

/// Number of regular files and their total size.
pub fn totals(root: &Path) -> (u64, u64) {
    tree(root)
        .values()
        .filter_map(|e| match e {
            Entry::File(len) => Some(*len),
            _ => None,
        })
        .fold((0, 0), |(n, bytes), len| (n + 1, bytes + len))
}

/// Panics unless `actual` holds exactly the entries of `expected`, files byte for byte.
pub fn assert_same_tree(expected: &Path, actual: &Path) {
    let want = tree(expected);
    let got = tree(actual);
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{} differs from {}: missing {missing:?}, unexpected {extra:?}",
        actual.display(),
        expected.display()
    );
    for (rel, entry) in &want {
        assert_eq!(entry, &got[rel], "{rel}: entry kind or size differs");
        if let Entry::File(_) = entry {
            let a = fs::read(expected.join(rel)).expect("read expected file");
            let b = fs::read(actual.join(rel)).expect("read actual file");
            if a != b {
                let at = a.iter().zip(&b).position(|(x, y)| x != y).unwrap_or(0);
                panic!(
                    "{rel}: contents differ (first difference at byte {at} of {})",
                    a.len()
                );
            }
        }
    }
}
