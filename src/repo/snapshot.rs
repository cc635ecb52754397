//! Snapshots: immutable records of a tree (paths, sizes, modes, times, whole-file BLAKE3 and
//! chunk lists). Stored as `FRYSNAP1` + zstd(JSON); the snapshot id is the object's BLAKE3.

use std::cmp::Ordering;
use std::collections::HashSet;
use std::io::Read;

use serde::{Deserialize, Serialize};

use crate::chunker::Layout;
use crate::ids::{ChunkId, FileHash, SnapshotId};

const MAGIC: &[u8; 8] = b"FRYSNAP1";
/// Snapshot JSON version this build writes and the highest it reads.
pub const SNAPSHOT_VERSION: u32 = 1;
/// A snapshot larger than this once decompressed is refused (hostile input guard).
const MAX_JSON: usize = 4 << 30;

/// A snapshot as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Format version of the JSON ([`SNAPSHOT_VERSION`] when written).
    pub version: u32,
    /// RFC 3339 time the push finished reading the source.
    pub time: String,
    /// The ref this snapshot was pushed under.
    pub name: String,
    /// Where the tree came from (URL or path), for people.
    pub source: String,
    /// The ref's head the push compared against, if any.
    pub parent: Option<SnapshotId>,
    /// Entries sorted by path; parents come before children.
    pub entries: Vec<Entry>,
}

/// One path in a snapshot. Paths are relative, `/`-separated, without `.` or `..`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum Entry {
    /// A regular file.
    File {
        /// Relative path, `/`-separated, UTF-8.
        path: String,
        /// Size in bytes.
        size: u64,
        /// Unix permission bits.
        mode: u32,
        /// Modification time, nanoseconds since the Unix epoch.
        mtime_ns: i64,
        /// BLAKE3 of the whole file.
        blake3: FileHash,
        /// How the file was cut (absent: plain content-defined chunking).
        #[serde(default, skip_serializing_if = "Layout::is_cdc")]
        layout: Layout,
        /// The file's chunks in order; their lengths add up to `size`.
        chunks: Vec<ChunkRef>,
    },
    /// A folder (recorded so empty folders and their modes survive).
    Dir {
        /// Relative path, `/`-separated, UTF-8.
        path: String,
        /// Unix permission bits.
        mode: u32,
    },
    /// A symbolic link, restored as recorded (never followed).
    Symlink {
        /// Relative path, `/`-separated, UTF-8.
        path: String,
        /// The link's target, as read.
        target: String,
    },
}

/// A chunk of a file: its id and raw length. Serialized as `["hex", len]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRef(pub ChunkId, pub u32);

impl Entry {
    /// The entry's relative path.
    pub fn path(&self) -> &str {
        match self {
            Entry::File { path, .. } | Entry::Dir { path, .. } | Entry::Symlink { path, .. } => {
                path
            }
        }
    }

    /// `file`, `dir` or `symlink`, as serialized.
    pub fn kind(&self) -> &'static str {
        match self {
            Entry::File { .. } => "file",
            Entry::Dir { .. } => "dir",
            Entry::Symlink { .. } => "symlink",
        }
    }

    /// Size in bytes (0 for folders and symlinks).
    pub fn size(&self) -> u64 {
        match self {
            Entry::File { size, .. } => *size,
            _ => 0,
        }
    }

    /// A file's chunks, in order (none for folders and symlinks).
    pub fn chunks(&self) -> &[ChunkRef] {
        match self {
            Entry::File { chunks, .. } => chunks,
            _ => &[],
        }
    }
}

impl Snapshot {
    /// Number of file entries.
    pub fn files(&self) -> usize {
        self.entries
            .iter()
            .filter(|e| matches!(e, Entry::File { .. }))
            .count()
    }

    /// Sum of the file sizes, in bytes.
    pub fn bytes(&self) -> u64 {
        self.entries.iter().map(Entry::size).sum()
    }

    /// Every chunk the snapshot references, in order of appearance (with repeats).
    pub fn chunks(&self) -> impl Iterator<Item = &ChunkRef> {
        self.entries.iter().flat_map(Entry::chunks)
    }

    /// True when both describe the same tree (ignores time, parent and source).
    pub fn same_tree(&self, other: &Snapshot) -> bool {
        self.entries == other.entries
    }

    /// The snapshot as stored: zstd-compressed JSON behind the magic (see FORMAT.md).
    pub fn encode(&self) -> Vec<u8> {
        let json = serde_json::to_vec(self).expect("snapshot serializes");
        let mut out = MAGIC.to_vec();
        out.extend_from_slice(&zstd::bulk::compress(&json, 3).expect("zstd compresses a buffer"));
        out
    }

    /// Parses a snapshot object and checks every path and each file's chunk lengths.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let body = bytes.strip_prefix(MAGIC).ok_or(SnapshotError::BadMagic)?;
        let mut json = Vec::new();
        zstd::stream::read::Decoder::new(body)
            .and_then(|d| std::io::Read::take(d, MAX_JSON as u64 + 1).read_to_end(&mut json))
            .map_err(SnapshotError::Decompress)?;
        if json.len() > MAX_JSON {
            return Err(SnapshotError::TooLarge);
        }
        #[derive(Deserialize)]
        struct Probe {
            version: u32,
        }
        let probe: Probe = serde_json::from_slice(&json).map_err(SnapshotError::Json)?;
        if probe.version > SNAPSHOT_VERSION {
            return Err(SnapshotError::Newer {
                version: probe.version,
            });
        }
        let snap: Snapshot = serde_json::from_slice(&json).map_err(SnapshotError::Json)?;
        check_order(&snap.entries)?;
        for e in &snap.entries {
            check_path(e.path()).map_err(|why| SnapshotError::BadPath {
                path: e.path().into(),
                why,
            })?;
            if let Entry::File { size, chunks, .. } = e {
                let sum: u64 = chunks.iter().map(|c| c.1 as u64).sum();
                if sum != *size {
                    return Err(SnapshotError::ChunkLengths {
                        path: e.path().into(),
                        sum,
                        size: *size,
                    });
                }
            }
        }
        Ok(snap)
    }

    /// The id of a snapshot's encoded bytes (BLAKE3 of them).
    pub fn id_of(encoded: &[u8]) -> SnapshotId {
        SnapshotId::of(encoded)
    }
}

/// The order of a snapshot's entries: paths compared folder by folder, so a folder's
/// contents follow it directly (what a push of a local folder writes).
pub fn path_order(a: &str, b: &str) -> Ordering {
    a.split('/').cmp(b.split('/'))
}

/// Entries must be strictly increasing by [`path_order`], or by plain byte order (what
/// pushes from object prefixes and sharded pushes write); either way a folder comes before
/// its contents and no path appears twice.
fn check_order(entries: &[Entry]) -> Result<(), SnapshotError> {
    let first_unsorted = |cmp: fn(&str, &str) -> Ordering| {
        entries
            .windows(2)
            .position(|w| cmp(w[0].path(), w[1].path()) != Ordering::Less)
    };
    let Some(at) = first_unsorted(path_order) else {
        return Ok(());
    };
    if first_unsorted(|a, b| a.cmp(b)).is_none() {
        return Ok(());
    }
    let mut seen = HashSet::with_capacity(entries.len());
    if let Some(twice) = entries.iter().find(|e| !seen.insert(e.path())) {
        return Err(SnapshotError::Twice {
            path: twice.path().into(),
        });
    }
    Err(SnapshotError::Unsorted {
        first: entries[at].path().into(),
        then: entries[at + 1].path().into(),
    })
}

/// Why bytes are not a snapshot ferry can read. The repository names the object.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// The bytes do not start with the snapshot magic.
    #[error("bad magic: not a ferry snapshot (or a newer format version)")]
    BadMagic,
    /// The zstd stream is damaged.
    #[error("does not decompress: {0}")]
    Decompress(#[source] std::io::Error),
    /// The JSON would be over 4 GiB.
    #[error("larger than 4 GiB once decompressed")]
    TooLarge,
    /// The JSON does not parse as a snapshot.
    #[error("invalid snapshot: {0}")]
    Json(#[source] serde_json::Error),
    /// Written by a newer ferry.
    #[error("snapshot version {version} is newer than this ferry reads: upgrade ferry")]
    Newer {
        /// The version found.
        version: u32,
    },
    /// Two entries share a path.
    #[error("entry {path:?} appears twice")]
    Twice {
        /// The duplicated path.
        path: String,
    },
    /// Entries must be sorted by path, so a snapshot has one encoding.
    #[error("entries are not sorted by path: {first:?} comes before {then:?}")]
    Unsorted {
        /// The entry that comes first in the file.
        first: String,
        /// The entry after it, which sorts before it.
        then: String,
    },
    /// A path restore would refuse (absolute, `..`, empty parts, NUL).
    #[error("entry {path:?}: {why}")]
    BadPath {
        /// The path as recorded.
        path: String,
        /// Which rule it breaks.
        why: &'static str,
    },
    /// A file entry whose chunk lengths do not add up to its size.
    #[error("entry {path:?}: chunk lengths add up to {sum}, not {size}")]
    ChunkLengths {
        /// The file's path.
        path: String,
        /// Sum of its chunk lengths.
        sum: u64,
        /// Its recorded size.
        size: u64,
    },
}

/// Checks a snapshot path: relative, `/`-separated, no empty, `.` or `..` parts, no NUL.
pub fn check_path(path: &str) -> Result<(), &'static str> {
    if path.is_empty() {
        return Err("empty path");
    }
    // A leading `\` is an ordinary name on Unix (a push reads such files), not a root.
    if path.starts_with('/') || (cfg!(windows) && (path.starts_with('\\') || path.contains(':'))) {
        return Err("absolute path");
    }
    if path.contains('\0') {
        return Err("NUL in path");
    }
    for part in path.split('/') {
        match part {
            "" => return Err("empty path component"),
            "." | ".." => return Err("'.' or '..' in path"),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Snapshot {
        let data = b"hello world";
        Snapshot {
            version: SNAPSHOT_VERSION,
            time: "2026-01-01T00:00:00Z".into(),
            name: "m".into(),
            source: "/src".into(),
            parent: None,
            entries: vec![
                Entry::Dir {
                    path: "d".into(),
                    mode: 0o755,
                },
                Entry::File {
                    path: "d/f".into(),
                    size: data.len() as u64,
                    mode: 0o644,
                    mtime_ns: 1,
                    blake3: FileHash::of(data),
                    layout: Layout::Safetensors,
                    chunks: vec![ChunkRef(ChunkId::of(data), data.len() as u32)],
                },
                Entry::Symlink {
                    path: "l".into(),
                    target: "d/f".into(),
                },
            ],
        }
    }

    #[test]
    fn round_trip() {
        let s = sample();
        let enc = s.encode();
        assert_eq!(Snapshot::decode(&enc).unwrap(), s);
        assert!(Snapshot::decode(&enc[..enc.len() - 4]).is_err());
        assert!(Snapshot::decode(b"FRYSNAP1garbage").is_err());
    }

    /// A snapshot as an earlier ferry wrote it (JSON by hand, whole-file digest in hex) still
    /// decodes, and encodes back to the very same bytes, so its id does not change.
    #[test]
    fn stored_json_decodes_and_reencodes_byte_identically() {
        let hello = "d74981efa70a0c880b8d8c1985d075dbcbf679b99a5f9914e5aaf96b831a9e24";
        let json = format!(
            concat!(
                r#"{{"version":1,"time":"2026-01-01T00:00:00Z","name":"m","source":"/src","#,
                r#""parent":null,"entries":[{{"kind":"dir","path":"d","mode":493}},"#,
                r#"{{"kind":"file","path":"d/f","size":11,"mode":420,"mtime_ns":1,"#,
                r#""blake3":"{h}","layout":"safetensors","chunks":[["{h}",11]]}},"#,
                r#"{{"kind":"symlink","path":"l","target":"d/f"}}]}}"#
            ),
            h = hello
        );
        let mut stored = MAGIC.to_vec();
        stored.extend_from_slice(&zstd::bulk::compress(json.as_bytes(), 3).unwrap());
        let snap = Snapshot::decode(&stored).unwrap();
        assert_eq!(snap, sample());
        match &snap.entries[1] {
            Entry::File { blake3, .. } => assert_eq!(blake3.to_hex(), hello),
            other => panic!("not a file: {other:?}"),
        }
        assert_eq!(serde_json::to_string(&snap).unwrap(), json);
        assert_eq!(snap.encode(), stored);
    }

    #[test]
    fn hostile_paths_are_refused() {
        for bad in [
            "/etc/passwd",
            "../x",
            "a/../../x",
            "a//b",
            "",
            "./a",
            "a/\0",
        ] {
            let mut s = sample();
            if let Entry::Dir { path, .. } = &mut s.entries[0] {
                *path = bad.into();
            }
            let err = Snapshot::decode(&s.encode()).unwrap_err();
            assert!(
                matches!(&err, SnapshotError::BadPath { path, .. } if path == bad),
                "{bad:?}: {err}"
            );
        }
    }

    #[test]
    fn duplicate_and_unsorted_entries_are_refused() {
        let mut dup = sample();
        dup.entries.push(Entry::Symlink {
            path: "d/f".into(),
            target: "x".into(),
        });
        let err = Snapshot::decode(&dup.encode()).unwrap_err().to_string();
        assert!(err.contains("\"d/f\" appears twice"), "{err}");

        let mut same = sample();
        same.entries.push(same.entries[2].clone());
        let err = Snapshot::decode(&same.encode()).unwrap_err();
        assert!(matches!(err, SnapshotError::Twice { .. }), "{err}");

        let mut unsorted = sample();
        unsorted.entries.swap(0, 1);
        let err = Snapshot::decode(&unsorted.encode()).unwrap_err();
        assert!(matches!(err, SnapshotError::Unsorted { .. }), "{err}");
    }

    #[test]
    fn both_orders_writers_use_are_read() {
        let dir = |p: &str| Entry::Dir {
            path: p.into(),
            mode: 0o755,
        };
        let link = |p: &str| Entry::Symlink {
            path: p.into(),
            target: "t".into(),
        };
        let mut s = sample();
        // Folder by folder (a local push): "a", "a/x", "a-b".
        s.entries = vec![dir("a"), link("a/x"), link("a-b")];
        assert!(Snapshot::decode(&s.encode()).is_ok());
        // Byte order (object prefixes, sharded pushes): "a", "a-b", "a/x".
        s.entries = vec![dir("a"), link("a-b"), link("a/x")];
        assert!(Snapshot::decode(&s.encode()).is_ok());
        // Neither.
        s.entries = vec![link("a-b"), dir("a"), link("a/x")];
        assert!(Snapshot::decode(&s.encode()).is_err());
    }

    proptest::proptest! {
        /// Distinct paths in either order writers use are read; a path twice never is.
        #[test]
        fn order_rule_holds_for_any_paths(
            set in proptest::collection::btree_set("[a.-]{1,2}(/[a.-]{1,2}){0,2}", 1..12),
            dup in proptest::prelude::any::<proptest::sample::Index>(),
        ) {
            let paths: Vec<String> = set
                .into_iter()
                .filter(|p| check_path(p).is_ok())
                .collect();
            proptest::prop_assume!(!paths.is_empty());
            let link = |p: &String| Entry::Symlink { path: p.clone(), target: "t".into() };
            let mut s = sample();
            let mut by_bytes = paths.clone();
            by_bytes.sort();
            s.entries = by_bytes.iter().map(link).collect();
            proptest::prop_assert!(Snapshot::decode(&s.encode()).is_ok());
            let mut by_folder = paths.clone();
            by_folder.sort_by(|a, b| path_order(a, b));
            s.entries = by_folder.iter().map(link).collect();
            proptest::prop_assert!(Snapshot::decode(&s.encode()).is_ok());
            let twice = dup.get(&by_folder).clone();
            let at = by_folder.iter().position(|p| *p == twice).unwrap_or(0);
            by_folder.insert(at, twice);
            s.entries = by_folder.iter().map(link).collect();
            proptest::prop_assert!(Snapshot::decode(&s.encode()).is_err());
        }
    }

    #[test]
    fn names_a_unix_file_system_holds_are_paths() {
        for ok in ["\\", "\\x/y", "a\\b", "c:d", " ", "~", "...", ".x"] {
            assert_eq!(check_path(ok), Ok(()), "{ok:?}");
        }
    }

    #[test]
    fn chunk_lengths_must_add_up() {
        let mut s = sample();
        if let Entry::File { size, .. } = &mut s.entries[1] {
            *size += 1;
        }
        assert!(Snapshot::decode(&s.encode())
            .unwrap_err()
            .to_string()
            .contains("add up to"));
    }
}
