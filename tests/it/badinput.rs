//! Bad input: corrupted, truncated and wrong-version configs, packs, pack indexes, snapshots
//! and ref entries, and locations holding someone else's objects. Every command that meets one
//! fails with one error line naming the object (`verify` lists it as a problem instead) and
//! changes nothing. Hostile snapshots live in `hostile.rs`.

use ferry::ids::{ChunkId, FileHash, SnapshotId};
use ferry::repo::pack::PackIndex;
use ferry::repo::snapshot::{ChunkRef, Entry, Snapshot, SNAPSHOT_VERSION};
use serde_json::Value;

use crate::data::{self, KIB};
use crate::harness::{array, pushed_snapshot, s, string, Backend, Ctx};
use crate::raw::{indexed_pack_ids, pack_objects, Location, RawStore};
use crate::run::Run;

#[test]
fn damaged_objects_file() {
    damaged_objects(Backend::File);
}

#[test]
fn damaged_objects_s3() {
    damaged_objects(Backend::S3);
}

#[test]
fn foreign_locations_file() {
    foreign_locations(Backend::File);
}

#[test]
fn foreign_locations_s3() {
    foreign_locations(Backend::S3);
}

/// The commands a damaged repository is fed to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Push,
    Restore,
    /// Replicate from the damaged repository to a new one.
    ReplicateFrom,
    /// Replicate from a good repository into the damaged one.
    ReplicateTo,
    Snapshots,
    Ls,
    Verify,
    VerifyData,
    Gc,
    Forget,
}
use Cmd::*;

/// Every command that opens the repository.
const ALL: &[Cmd] = &[
    Push,
    Restore,
    ReplicateFrom,
    ReplicateTo,
    Snapshots,
    Ls,
    Verify,
    Gc,
    Forget,
];
/// Commands that read pack indexes (with an empty local index).
const INDEX_READERS: &[Cmd] = &[Push, Restore, ReplicateFrom, Verify, Gc];
/// Commands that read pack data.
const PACK_READERS: &[Cmd] = &[Restore, ReplicateFrom, VerifyData];
/// Commands that read the head snapshot.
const SNAPSHOT_READERS: &[Cmd] = &[Push, Restore, ReplicateFrom, Snapshots, Ls, Verify, Gc];
/// Commands that read the ref log.
const REF_READERS: &[Cmd] = &[
    Push,
    Restore,
    ReplicateFrom,
    Snapshots,
    Ls,
    Verify,
    Gc,
    Forget,
];

/// A small repository with two snapshots of `ckpt` and 1 MiB packs.
struct Repo {
    loc: Location,
    src: std::path::PathBuf,
    head: String,
}

fn small_repo(ctx: &Ctx, backend: Backend) -> Repo {
    let loc = ctx.location(backend);
    let src = ctx.dir("src");
    let ferry = ctx.ferry();
    ferry.json(&[
        "init",
        &loc.url,
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "64KiB",
    ]);
    data::random_tree(&src, 40, 2, 700 * KIB);
    data::write_file(&src, "config.json", &data::text_bytes(41, 3 * KIB));
    ferry.json(&["push", s(&src), &loc.url, "--name", "ckpt"]);
    data::write_file(&src, "shard-01.bin", &data::random_bytes(42, 300 * KIB));
    let head = pushed_snapshot(&ferry.json(&["push", s(&src), &loc.url, "--name", "ckpt"]));
    Repo { loc, src, head }
}

/// Runs `cmd` against the repository at `url` with an empty local index.
fn run(ctx: &Ctx, cmd: Cmd, url: &str, src: &std::path::Path, good: &str) -> Run {
    let ferry = ctx.ferry_with_index(&ctx.path("index"));
    let dest = ctx.path("restore");
    let other = ctx.dir("other");
    let other = format!("file://{}", s(&other));
    match cmd {
        Push => ferry.run(&["push", s(src), url, "--name", "ckpt"]),
        Restore => ferry.run(&["restore", url, "ckpt", s(&dest)]),
        ReplicateFrom => ferry.run(&["replicate", url, &other]),
        ReplicateTo => ferry.run(&["replicate", good, url]),
        Snapshots => ferry.run(&["snapshots", url]),
        Ls => ferry.run(&["ls", url, "ckpt"]),
        Verify => ferry.run(&["verify", url]),
        VerifyData => ferry.run(&["verify", url, "--read-data"]),
        Gc => ferry.run(&["gc", url, "--grace", "0s"]),
        Forget => ferry.run(&["forget", url, "ckpt", "--keep-last", "1"]),
    }
}

/// The command failed with one error line containing `needle`; `verify` may instead report
/// it as a problem in its JSON summary (and exit non-zero).
fn assert_named(cmd: Cmd, run: &Run, needle: &str) {
    if matches!(cmd, Verify | VerifyData) && run.stderr.trim().is_empty() {
        assert_eq!(run.status.code(), Some(1), "{cmd:?}: {run}");
        let report = run.stdout_json();
        let named = array(&report, "problems")
            .iter()
            .any(|p| string(p, "object").contains(needle) || string(p, "problem").contains(needle));
        assert!(named, "{cmd:?}: no problem names {needle}: {run}");
        return;
    }
    assert_eq!(
        run.status.code(),
        Some(1),
        "{cmd:?} must fail with an error: {run}"
    );
    let line = run.error_line();
    assert!(
        line.starts_with("error: ") && line.contains(needle),
        "{cmd:?}: the error does not name {needle}: {run}"
    );
}

fn flip(raw: &RawStore, key: &str, at: impl Fn(usize) -> usize) {
    let mut bytes = raw.get(key);
    let i = at(bytes.len());
    bytes[i] ^= 0x5a;
    raw.put(key, &bytes);
}

fn truncate(raw: &RawStore, key: &str) {
    let bytes = raw.get(key);
    raw.put(key, &bytes[..bytes.len() / 2]);
}

fn replace(raw: &RawStore, key: &str, from: &str, to: &str) {
    let text = String::from_utf8(raw.get(key)).expect("UTF-8 object");
    assert!(text.contains(from), "{key} does not contain {from:?}");
    raw.put(key, text.replacen(from, to, 1).as_bytes());
}

/// Writes a snapshot object under its id and makes it the head of `ckpt` (seq 3).
fn plant_head(raw: &RawStore, snapshot: &Snapshot, encoded: Option<Vec<u8>>) -> String {
    let bytes = encoded.unwrap_or_else(|| snapshot.encode());
    let id = SnapshotId::of(&bytes).to_hex();
    raw.put(&format!("snapshots/{id}"), &bytes);
    plant_ref(raw, "ckpt", 3, &id);
    id
}

pub fn plant_ref(raw: &RawStore, name: &str, seq: u64, snapshot: &str) {
    let entry = serde_json::json!({
        "name": name, "seq": seq, "snapshot": snapshot, "time": "2026-11-26T13:00:00.000Z"
    });
    raw.put(
        &format!("refs/{name}/{seq:020}"),
        entry.to_string().as_bytes(),
    );
}

/// Snapshot `id` of a repository, read raw and decoded.
pub fn read_snapshot(raw: &RawStore, id: &str) -> Snapshot {
    Snapshot::decode(&raw.get(&format!("snapshots/{id}"))).expect("snapshot decodes")
}

/// What a damage case does and which commands must notice.
struct Case {
    what: &'static str,
    cmds: &'static [Cmd],
    /// Damages the repository; returns the text every error must contain (the object's key).
    damage: fn(&Repo) -> String,
}

const CASES: &[Case] = &[
    Case {
        what: "config: not JSON",
        cmds: ALL,
        damage: |r| {
            r.loc.raw.put("config", b"\x00\x01 not a config \xff");
            "config".into()
        },
    },
    Case {
        what: "config: truncated",
        cmds: ALL,
        damage: |r| {
            truncate(&r.loc.raw, "config");
            "config".into()
        },
    },
    Case {
        what: "config: newer format version",
        cmds: ALL,
        damage: |r| {
            replace(&r.loc.raw, "config", "\"version\": 1", "\"version\": 99");
            "config".into()
        },
    },
    Case {
        what: "config: unknown field",
        cmds: &[Push, Restore, Snapshots, Verify, Gc],
        damage: |r| {
            replace(&r.loc.raw, "config", "{", "{\"encryption\": \"none\",");
            "config".into()
        },
    },
    Case {
        what: "config: chunker parameters out of range",
        cmds: &[Push, Restore, Snapshots, Verify, Gc],
        damage: |r| {
            replace(
                &r.loc.raw,
                "config",
                "\"avg_size\": 65536",
                "\"avg_size\": 3",
            );
            "config".into()
        },
    },
    Case {
        what: "pack index: byte flipped",
        cmds: INDEX_READERS,
        damage: |r| {
            let key = first_index(&r.loc.raw);
            flip(&r.loc.raw, &key, |n| n / 2);
            key
        },
    },
    Case {
        what: "pack index: truncated",
        cmds: INDEX_READERS,
        damage: |r| {
            let key = first_index(&r.loc.raw);
            truncate(&r.loc.raw, &key);
            key
        },
    },
    Case {
        what: "pack index: newer format version",
        cmds: INDEX_READERS,
        damage: |r| {
            let key = first_index(&r.loc.raw);
            let mut bytes = r.loc.raw.get(&key);
            bytes[..8].copy_from_slice(b"FRYIDX02");
            r.loc.raw.put(&key, &bytes);
            key
        },
    },
    Case {
        what: "pack index: describes another pack",
        cmds: INDEX_READERS,
        damage: |r| {
            let key = first_index(&r.loc.raw);
            let mut idx = PackIndex::decode(&r.loc.raw.get(&key)).expect("index decodes");
            idx.pack = ferry::ids::PackId::of(b"another pack");
            r.loc.raw.put(&key, &idx.encode());
            key
        },
    },
    Case {
        what: "pack: truncated",
        cmds: PACK_READERS,
        damage: |r| {
            let key = largest_pack(&r.loc.raw);
            truncate(&r.loc.raw, &key);
            key
        },
    },
    Case {
        what: "pack: byte flipped in a frame",
        cmds: PACK_READERS,
        damage: |r| {
            let key = largest_pack(&r.loc.raw);
            flip(&r.loc.raw, &key, |n| n / 3);
            key
        },
    },
    Case {
        // Frames are checked one by one against their ids, so restore and replicate read an
        // intact frame safely whatever the header says; only verify reads the whole pack.
        what: "pack: newer format version",
        cmds: &[VerifyData],
        damage: |r| {
            let key = largest_pack(&r.loc.raw);
            let mut bytes = r.loc.raw.get(&key);
            bytes[..8].copy_from_slice(b"FRYPACK2");
            r.loc.raw.put(&key, &bytes);
            key
        },
    },
    Case {
        what: "snapshot: byte flipped",
        cmds: SNAPSHOT_READERS,
        damage: |r| {
            let key = format!("snapshots/{}", r.head);
            flip(&r.loc.raw, &key, |n| n - 3);
            key
        },
    },
    Case {
        what: "snapshot: truncated",
        cmds: SNAPSHOT_READERS,
        damage: |r| {
            let key = format!("snapshots/{}", r.head);
            truncate(&r.loc.raw, &key);
            key
        },
    },
    Case {
        what: "snapshot: newer version",
        cmds: SNAPSHOT_READERS,
        damage: |r| {
            let mut snap = read_snapshot(&r.loc.raw, &r.head);
            snap.version = SNAPSHOT_VERSION + 1;
            format!("snapshots/{}", plant_head(&r.loc.raw, &snap, None))
        },
    },
    Case {
        what: "snapshot: bad magic",
        cmds: SNAPSHOT_READERS,
        damage: |r| {
            let snap = read_snapshot(&r.loc.raw, &r.head);
            let mut bytes = snap.encode();
            bytes[..8].copy_from_slice(b"FRYSNAP2");
            format!("snapshots/{}", plant_head(&r.loc.raw, &snap, Some(bytes)))
        },
    },
    Case {
        what: "snapshot: chunk lengths do not add up",
        cmds: SNAPSHOT_READERS,
        damage: |r| {
            let mut snap = read_snapshot(&r.loc.raw, &r.head);
            for e in &mut snap.entries {
                if let Entry::File { size, .. } = e {
                    *size += 1;
                    break;
                }
            }
            format!("snapshots/{}", plant_head(&r.loc.raw, &snap, None))
        },
    },
    Case {
        what: "snapshot: references a chunk no pack holds",
        cmds: &[Restore, ReplicateFrom, Verify],
        damage: |r| {
            let mut snap = read_snapshot(&r.loc.raw, &r.head);
            let bogus = ChunkId::of(b"a chunk nobody stored");
            snap.entries.push(Entry::File {
                path: "zz-missing.bin".into(),
                size: 21,
                mode: 0o644,
                mtime_ns: 0,
                blake3: FileHash(bogus.0),
                layout: Default::default(),
                chunks: vec![ChunkRef(bogus, 21)],
            });
            plant_head(&r.loc.raw, &snap, None);
            bogus.to_hex()
        },
    },
    Case {
        what: "ref entry: not JSON",
        cmds: REF_READERS,
        damage: |r| {
            let key = format!("refs/ckpt/{:020}", 2);
            r.loc
                .raw
                .put(&key, b"{\"name\": \"ckpt\", \"seq\": 2, \"snap");
            key
        },
    },
    Case {
        what: "ref entry: unknown field",
        cmds: REF_READERS,
        damage: |r| {
            let key = format!("refs/ckpt/{:020}", 2);
            replace(&r.loc.raw, &key, "{", "{\"signed_by\": \"mallory\",");
            key
        },
    },
    Case {
        what: "ref entry: names a missing snapshot",
        cmds: &[Push, Restore, ReplicateFrom, Ls, Snapshots, Verify],
        damage: |r| {
            let missing = SnapshotId::of(b"never written").to_hex();
            plant_ref(&r.loc.raw, "ckpt", 3, &missing);
            missing
        },
    },
    Case {
        what: "ref entry: sequence number differs from its object name",
        cmds: REF_READERS,
        damage: |r| {
            let key = format!("refs/ckpt/{:020}", 3);
            let entry = serde_json::json!({
                "name": "ckpt", "seq": 2, "snapshot": r.head, "time": "2026-11-26T13:00:00.000Z"
            });
            r.loc.raw.put(&key, entry.to_string().as_bytes());
            key
        },
    },
    Case {
        what: "ref entry: names another ref",
        cmds: REF_READERS,
        damage: |r| {
            let key = format!("refs/ckpt/{:020}", 3);
            let entry = serde_json::json!({
                "name": "other", "seq": 3, "snapshot": r.head, "time": "2026-11-26T13:00:00.000Z"
            });
            r.loc.raw.put(&key, entry.to_string().as_bytes());
            key
        },
    },
];

fn first_index(raw: &RawStore) -> String {
    let id = indexed_pack_ids(raw)
        .into_iter()
        .next()
        .expect("a pack index");
    format!("index/{id}")
}

fn largest_pack(raw: &RawStore) -> String {
    pack_objects(raw)
        .into_iter()
        .max_by_key(|p| p.size)
        .expect("a pack")
        .key
}

/// Every listed object and its bytes' size, to prove a refused command wrote nothing.
fn listing(raw: &RawStore) -> Vec<(String, u64)> {
    raw.list("").into_iter().map(|o| (o.key, o.size)).collect()
}

fn damaged_objects(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let good = ctx.location(Backend::File);
    let good_src = ctx.dir("good-src");
    data::write_file(&good_src, "a.bin", &data::random_bytes(50, 100 * KIB));
    ctx.ferry()
        .json(&["push", s(&good_src), &good.url, "--name", "ckpt"]);
    let mut tried = 0;
    for case in CASES {
        let repo = small_repo(&ctx, backend);
        let needle = (case.damage)(&repo);
        let before = listing(&repo.loc.raw);
        for &cmd in case.cmds {
            let run = run(&ctx, cmd, &repo.loc.url, &repo.src, &good.url);
            let full = if needle.contains('/') {
                format!("{}/{needle}", repo.loc.url)
            } else {
                needle.clone()
            };
            eprintln!("case {:?} ({backend:?}): {cmd:?}", case.what);
            assert_named(cmd, &run, &full);
            tried += 1;
        }
        assert_eq!(
            listing(&repo.loc.raw),
            before,
            "{}: a refused command changed the repository",
            case.what
        );
    }
    eprintln!(
        "bad input ({backend:?}): {} damaged objects, {tried} command runs refused them",
        CASES.len()
    );
}

/// A location holding someone else's objects (or a `config` that is not ferry's) is neither
/// read as a repository nor written to.
fn foreign_locations(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let good = ctx.location(Backend::File);
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(60, 100 * KIB));
    ctx.ferry()
        .json(&["push", s(&src), &good.url, "--name", "ckpt"]);
    let foreign_config: Value = serde_json::json!({"version": 4, "backend": "s3", "bucket": "tf"});
    let foreign_config = foreign_config.to_string();
    let layouts: [&[(&str, &[u8])]; 3] = [
        &[("data/part-0000.parquet", b"PAR1...."), ("README", b"hi\n")],
        &[("config", foreign_config.as_bytes())],
        // Looks like a repository's folders, but without a config.
        &[("snapshots/notes.txt", b"x"), ("refs/ckpt/1", b"{}")],
    ];
    let mut tried = 0;
    for objects in layouts {
        let loc = ctx.location(backend);
        for (key, bytes) in objects {
            loc.raw.put(key, bytes);
        }
        let before = listing(&loc.raw);
        for cmd in [
            Push,
            ReplicateTo,
            Restore,
            ReplicateFrom,
            Snapshots,
            Verify,
            Gc,
        ] {
            let run = run(&ctx, cmd, &loc.url, &src, &good.url);
            assert_named(cmd, &run, &loc.url);
            tried += 1;
        }
        assert_eq!(
            listing(&loc.raw),
            before,
            "a refused command wrote into {}",
            loc.url
        );
    }
    eprintln!("foreign locations ({backend:?}): {tried} command runs refused them");
}
