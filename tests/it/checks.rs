//! Whole-repository checks shared by the reliability suites: `verify --read-data` is clean, a
//! ref's log is linear, every logged snapshot restores byte-identical, and no chunk is stored
//! in two indexed packs (read straight from the store with `PackIndex::decode`).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::path::Path;

use ferry::ids::ChunkId;
use ferry::repo::pack::PackIndex;
use serde_json::Value;

use crate::data;
use crate::harness::{array, boolean, s, string, uint, Ctx};
use crate::raw::{is_object_id, RawStore};
use crate::run::Ferry;

/// `verify --read-data` succeeds, reports no problem and re-hashed every indexed chunk.
pub fn verify_read_data(ferry: &Ferry, url: &str) -> Value {
    let verify = ferry.json(&["verify", url, "--read-data"]);
    assert!(boolean(&verify, "ok"), "verify found problems: {verify}");
    assert!(array(&verify, "problems").is_empty(), "{verify}");
    verify
}

/// One entry of a ref's log as `ferry snapshots` lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Logged {
    pub seq: u64,
    pub snapshot: String,
}

/// The log of ref `name`, oldest first, as `ferry snapshots URL NAME` reports it.
pub fn ref_log(ferry: &Ferry, url: &str, name: &str) -> Vec<Logged> {
    let listing = ferry.json(&["snapshots", url, name]);
    array(&listing, "snapshots")
        .iter()
        .map(|row| {
            assert_eq!(string(row, "name"), name, "{listing}");
            Logged {
                seq: uint(row, "seq"),
                snapshot: string(row, "snapshot").to_string(),
            }
        })
        .collect()
}

/// The history is linear: sequence numbers 1..=n without gaps or repeats, each snapshot once.
pub fn assert_linear(log: &[Logged]) {
    let seqs: Vec<u64> = log.iter().map(|e| e.seq).collect();
    let want: Vec<u64> = (1..=log.len() as u64).collect();
    assert_eq!(seqs, want, "ref log is not 1..=n: {log:?}");
    let distinct: BTreeSet<&str> = log.iter().map(|e| e.snapshot.as_str()).collect();
    assert_eq!(
        distinct.len(),
        log.len(),
        "a snapshot appears twice: {log:?}"
    );
}

/// Restores `spec` from `url` into a fresh folder and compares it with `expected`; the folder
/// is removed afterwards.
pub fn assert_restores(ctx: &Ctx, ferry: &Ferry, url: &str, spec: &str, expected: &Path) {
    let dest = ctx.path("restore");
    let restore = ferry.json(&["restore", url, spec, s(&dest)]);
    if let Some(id) = spec.split_once('@').map(|(_, id)| id) {
        if id.len() == 64 {
            assert_eq!(string(&restore, "snapshot"), id, "{restore}");
        }
    }
    data::assert_same_tree(expected, &dest);
    fs::remove_dir_all(&dest).expect("remove restore");
}

/// Copies a tree of plain files and folders.
pub fn copy_tree(from: &Path, to: &Path) {
    fs::create_dir_all(to).expect("create copy root");
    for (rel, entry) in data::tree(from) {
        match entry {
            data::Entry::Dir => fs::create_dir_all(to.join(&rel)).expect("create dir"),
            data::Entry::File(_) => {
                data::write_file(to, &rel, &fs::read(from.join(&rel)).expect("read file"))
            }
            data::Entry::Symlink(target) => {
                std::os::unix::fs::symlink(target, to.join(&rel)).expect("symlink")
            }
        }
    }
}

/// The pack indexes of a repository, read raw and decoded; kept between calls because pack
/// indexes never change once written (only new ones appear, or gc removes some).
#[derive(Default)]
pub struct PackIndexes {
    by_pack: BTreeMap<String, PackIndex>,
}

impl PackIndexes {
    /// Re-lists `index/`, reads and decodes the new objects and forgets removed ones;
    /// returns the ids of the packs whose index is new since the last call.
    pub fn refresh(&mut self, raw: &RawStore) -> BTreeSet<String> {
        let listed = raw.list("index/").into_iter().map(|o| o.key);
        self.update(raw, listed)
    }

    /// Like [`PackIndexes::refresh`], given the current keys under `index/` (others ignored).
    pub fn update(
        &mut self,
        raw: &RawStore,
        keys: impl IntoIterator<Item = String>,
    ) -> BTreeSet<String> {
        let listed: BTreeSet<String> = keys
            .into_iter()
            .filter_map(|k| k.strip_prefix("index/").map(str::to_string))
            .filter(|id| is_object_id(id))
            .collect();
        self.by_pack.retain(|id, _| listed.contains(id));
        let fresh: BTreeSet<String> = listed
            .into_iter()
            .filter(|id| !self.by_pack.contains_key(id))
            .collect();
        let keys: Vec<String> = fresh.iter().map(|id| format!("index/{id}")).collect();
        for (id, bytes) in fresh.iter().zip(raw.get_many(&keys)) {
            let idx = PackIndex::decode(&bytes)
                .unwrap_or_else(|e| panic!("index/{id} does not decode: {e}"));
            assert_eq!(&idx.pack.to_hex(), id, "index/{id} describes another pack");
            self.by_pack.insert(id.clone(), idx);
        }
        fresh
    }

    /// Panics if a chunk id appears in two indexed packs (or twice in one).
    pub fn assert_no_chunk_twice(&self) {
        let mut seen: HashMap<ChunkId, &str> = HashMap::new();
        for (pack, idx) in &self.by_pack {
            for e in &idx.entries {
                if let Some(first) = seen.insert(e.chunk, pack) {
                    panic!(
                        "chunk {} is stored twice: in pack {first} and in pack {pack}",
                        e.chunk
                    );
                }
            }
        }
    }
}
