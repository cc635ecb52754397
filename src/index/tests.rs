//! Unit tests of the local index: file records, rebuilding a damaged index, the lock, reopening.

use super::*;

#[test]
fn file_records_round_trip_and_garbage_reads_as_missing() {
    let f = CachedFile {
        size: 10,
        mtime_ns: -5,
        ctime_ns: 7,
        ino: 42,
        etag: Some("\"abc\"".into()),
        mode: 0o644,
        blake3: FileHash::of(b"x"),
        layout: Layout::Safetensors,
        chunks: vec![
            ChunkRef(ChunkId::of(b"a"), 4),
            ChunkRef(ChunkId::of(b"b"), 6),
        ],
    };
    let enc = encode_file(&f);
    assert_eq!(decode_file(&enc), Some(f));
    assert_eq!(decode_file(&enc[..enc.len() - 1]), None);
    assert_eq!(decode_file(b""), None);
}

/// A v3 record laid out byte by byte (as ferry has written them since v3) decodes, whole-file
/// digest included, and encodes back to the same bytes.
#[test]
fn a_stored_v3_record_decodes_and_reencodes_identically() {
    let mut v = vec![3u8];
    v.extend_from_slice(&10u64.to_le_bytes()); // size
    v.extend_from_slice(&(-5i64).to_le_bytes()); // mtime_ns
    v.extend_from_slice(&7i64.to_le_bytes()); // ctime_ns
    v.extend_from_slice(&42u64.to_le_bytes()); // ino
    v.extend_from_slice(&[1, 2, 0, b'e', b't']); // etag "et"
    v.extend_from_slice(&0o644u32.to_le_bytes()); // mode
    v.push(1); // safetensors
    v.extend_from_slice(&[0xab; 32]); // whole-file BLAKE3
    v.extend_from_slice(&1u32.to_le_bytes());
    v.extend_from_slice(&[0xcd; 32]);
    v.extend_from_slice(&10u32.to_le_bytes());
    let f = decode_file(&v).expect("a v3 record decodes");
    assert_eq!(f.blake3, FileHash([0xab; 32]));
    assert_eq!(f.chunks, vec![ChunkRef(ChunkId([0xcd; 32]), 10)]);
    assert_eq!((f.size, f.mtime_ns, f.ctime_ns, f.ino), (10, -5, 7, 42));
    assert_eq!(f.etag.as_deref(), Some("et"));
    assert_eq!(encode_file(&f), v);
}

/// A record written before ctime and inode were kept (v2) is a cache miss: the file is
/// read again, never trusted on size and mtime alone, and never an error.
#[test]
fn an_old_file_record_counts_as_changed() {
    let f = CachedFile {
        size: 10,
        mtime_ns: 5,
        ctime_ns: 6,
        ino: 7,
        etag: None,
        mode: 0o644,
        blake3: FileHash::of(b"x"),
        layout: Layout::Cdc,
        chunks: vec![ChunkRef(ChunkId::of(b"a"), 10)],
    };
    let mut v2 = encode_file(&f);
    v2.drain(17..33);
    v2[0] = 2;
    assert_eq!(decode_file(&v2), None);
    let dir = tempfile::tempdir().unwrap();
    let idx = Index::open(dir.path(), Duration::ZERO).unwrap();
    let cache = idx.files("file:///src").unwrap();
    cache.tree.insert("a", v2).unwrap();
    assert_eq!(cache.get("a").unwrap(), None);
}

proptest::proptest! {
    #[test]
    fn file_records_round_trip(
        size: u64, mtime_ns: i64, ctime_ns: i64, ino: u64, mode: u32,
        etag in proptest::option::of("[ -~]{0,40}"),
        lens in proptest::collection::vec(1u32.., 0..20),
    ) {
        let f = CachedFile {
            size, mtime_ns, ctime_ns, ino, etag, mode,
            blake3: FileHash::of(&size.to_le_bytes()),
            layout: Layout::Cdc,
            chunks: lens.iter().map(|l| ChunkRef(ChunkId::of(&l.to_le_bytes()), *l)).collect(),
        };
        let enc = encode_file(&f);
        proptest::prop_assert_eq!(decode_file(&enc), Some(f));
        for n in 0..enc.len() {
            proptest::prop_assert_eq!(decode_file(&enc[..n]), None);
        }
    }
}

#[test]
fn a_damaged_index_is_rebuilt_empty() {
    let dir = tempfile::tempdir().unwrap();
    {
        let idx = Index::open(dir.path(), Duration::ZERO).unwrap();
        idx.mark_replicated("a", "b", &SnapshotId::of(b"s"))
            .unwrap();
        idx.flush().unwrap();
    }
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let p = entry.unwrap().path();
        if p.is_file() {
            std::fs::write(&p, vec![0xA5u8; 4096]).unwrap();
        }
    }
    let idx = Index::open(dir.path(), Duration::ZERO).expect("a damaged cache is rebuilt");
    assert!(!idx.is_replicated("a", "b", &SnapshotId::of(b"s")).unwrap());
    drop(idx);
    // A folder that is not a sled database is never wiped.
    let other = tempfile::tempdir().unwrap();
    std::fs::write(other.path().join("conf"), b"garbage").unwrap();
    std::fs::write(other.path().join("notes.txt"), b"precious").unwrap();
    let _ = Index::open(other.path(), Duration::ZERO);
    assert_eq!(
        std::fs::read(other.path().join("notes.txt")).unwrap(),
        b"precious"
    );
}

#[test]
fn a_held_index_is_refused_at_once_naming_its_holder() {
    let dir = tempfile::tempdir().unwrap();
    let _held = Index::open(dir.path(), Duration::ZERO).unwrap();
    let e = Index::open(dir.path(), Duration::ZERO)
        .err()
        .expect("a second open of a held index fails");
    let IndexError::Locked { holder, .. } = &e else {
        panic!("not a lock error: {e}");
    };
    if cfg!(target_os = "linux") {
        assert_eq!(holder.pid, Some(std::process::id()), "{e}");
    }
    let text = e.to_string();
    assert!(text.contains("is in use by process"), "{text}");
    assert!(text.contains("--index-dir"), "{text}");
    assert!(
        !text.contains("WouldBlock") && !text.contains("Os {"),
        "{text}"
    );
}

#[test]
fn repo_index_survives_reopen_and_clear() {
    let dir = tempfile::tempdir().unwrap();
    let entry = PackEntry {
        chunk: ChunkId::of(b"c"),
        offset: 8,
        frame_len: 3,
        raw_len: 2,
    };
    let pack = PackIndex {
        pack: PackId::of(b"p"),
        pack_size: 100,
        entries: vec![entry],
        bases: Vec::new(),
    };
    {
        let idx = Index::open(dir.path(), Duration::ZERO).unwrap();
        idx.repo("r1").unwrap().add_pack(&pack).unwrap();
        idx.flush().unwrap();
    }
    let idx = Index::open(dir.path(), Duration::ZERO).unwrap();
    let r = idx.repo("r1").unwrap();
    assert_eq!(
        r.chunk_location(&entry.chunk).unwrap(),
        Some(ChunkLocation {
            pack: pack.pack,
            entry
        })
    );
    assert!(!idx.repo("r2").unwrap().has_chunk(&entry.chunk).unwrap());
    r.clear().unwrap();
    assert!(!r.has_chunk(&entry.chunk).unwrap());
}
