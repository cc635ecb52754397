//! Push → restore round trips: a checkpoint tree, an unchanged re-push, a 100-byte insertion
//! into a large file, and a re-push after the local index was deleted.

use std::collections::BTreeMap;
use std::fs;

use crate::data::{self, MIB};
use crate::harness::{
    array, boolean, number, only_target, pushed_snapshot, s, size_field, string, uint, Backend, Ctx,
};
use crate::raw::{indexed_pack_ids, pack_objects, RawStore};

per_backend!(
    push_restore_roundtrip,
    repush_unchanged_uploads_nothing,
    insertion_uploads_few_chunks,
    deleted_index_is_rebuilt_from_repo,
    object_prefix_source_and_dest,
);

/// Push a tree, restore it to a fresh dir, and see it byte-identical; `ls` and `snapshots`
/// describe what was pushed.
pub fn push_restore_roundtrip(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 1);
    let (files, bytes) = data::totals(&src);
    let ferry = ctx.ferry();

    let push = ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    assert_eq!(uint(&push, "files_total"), files, "{push}");
    assert_eq!(uint(&push, "bytes_total"), bytes, "{push}");
    assert_eq!(
        uint(&push, "chunks_new") + uint(&push, "chunks_reused"),
        uint(&push, "chunks_total"),
        "{push}"
    );
    assert!(uint(&push, "chunks_new") >= 1, "{push}");
    assert!(uint(&push, "packs_uploaded") >= 1, "{push}");
    // Half of the big shard and all text files compress, so the packs are smaller than the
    // tree even with their tables.
    let uploaded = uint(&push, "bytes_uploaded");
    assert!(uploaded > 0 && uploaded < bytes, "{push}");
    // Nothing repeats in the tree, so every byte is new to the repository.
    assert_eq!(uint(&push, "bytes_new_logical"), bytes, "{push}");
    assert_eq!(uint(&push, "files_read"), files, "{push}");
    assert_eq!(uint(&push, "bytes_read"), bytes, "{push}");
    for key in ["dedup_ratio", "compression_ratio", "duration_secs"] {
        assert!(number(&push, key) >= 0.0, "{push}");
    }
    let target = only_target(&push);
    assert!(!boolean(target, "unchanged"), "{push}");
    assert_eq!(uint(target, "bytes_uploaded"), uploaded, "{push}");
    let snapshot = pushed_snapshot(&push);
    assert!(!snapshot.is_empty(), "{push}");

    let dest = ctx.path("restore");
    let restore = ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    data::assert_same_tree(&src, &dest);
    assert_eq!(string(&restore, "snapshot"), snapshot, "{restore}");
    assert_eq!(uint(&restore, "files"), files, "{restore}");
    assert_eq!(uint(&restore, "bytes_written"), bytes, "{restore}");
    assert!(uint(&restore, "bytes_downloaded") > 0, "{restore}");

    let ls = ferry.json(&["ls", &repo.url, "ckpt"]);
    assert_eq!(string(&ls, "snapshot"), snapshot, "{ls}");
    let source_tree = data::tree(&src);
    let mut listed_files = 0;
    for entry in array(&ls, "entries") {
        let path = string(entry, "path");
        match (string(entry, "kind"), source_tree.get(path)) {
            ("file", Some(data::Entry::File(len))) => {
                assert_eq!(uint(entry, "size"), *len, "size of {path} in {ls}");
                listed_files += 1;
            }
            ("dir", Some(data::Entry::Dir)) => {}
            (kind, found) => panic!("ls lists {path} as {kind}, the source has {found:?}: {ls}"),
        }
    }
    assert_eq!(listed_files, files, "ls must list every file: {ls}");

    // Global flags are accepted after the subcommand, too.
    let index = s(ctx.index_dir());
    let snapshots = ferry
        .run_bare(
            &[
                "snapshots",
                &repo.url,
                "ckpt",
                "--json",
                "-v",
                "--index-dir",
                index,
            ],
            &[],
        )
        .json();
    let list = array(&snapshots, "snapshots");
    assert_eq!(list.len(), 1, "{snapshots}");
    assert_eq!(string(&list[0], "name"), "ckpt", "{snapshots}");
    assert_eq!(string(&list[0], "snapshot"), snapshot, "{snapshots}");
    assert!(!string(&list[0], "time").is_empty(), "{snapshots}");
    assert_layout(&repo.raw, &snapshot, uint(&list[0], "seq"));
    assert_eq!(uint(&list[0], "files"), files, "{snapshots}");
    assert_eq!(uint(&list[0], "bytes"), bytes, "{snapshots}");
}

/// The documented repository layout: `config`, `packs/<2 hex>/<pack id>` each with its
/// `index/<pack id>`, `snapshots/<id>`, `refs/<name>/<seq>`.
fn assert_layout(raw: &RawStore, snapshot: &str, seq: u64) {
    let keys: Vec<String> = raw.list("").into_iter().map(|o| o.key).collect();
    assert!(keys.iter().any(|k| k == "config"), "no config in {keys:?}");
    let packs = pack_objects(raw);
    assert!(!packs.is_empty(), "no packs/<2 hex>/<64 hex> in {keys:?}");
    let indexed = indexed_pack_ids(raw);
    for pack in &packs {
        let id = pack.file_name();
        assert_eq!(pack.key, format!("packs/{}/{id}", &id[..2]), "{keys:?}");
        assert!(
            indexed.contains(id),
            "pack {id} has no index/{id}: {keys:?}"
        );
    }
    assert!(
        keys.contains(&format!("snapshots/{snapshot}")),
        "no snapshots/{snapshot} in {keys:?}"
    );
    let refs: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("refs/ckpt/"))
        .collect();
    assert_eq!(refs.len(), 1, "{keys:?}");
    let ref_seq = refs[0].trim_start_matches("refs/ckpt/").parse::<u64>();
    assert_eq!(ref_seq, Ok(seq), "ref object {} for seq {seq}", refs[0]);
}

/// Pushing the same tree again sends no pack.
pub fn repush_unchanged_uploads_nothing(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 2);
    let ferry = ctx.ferry();
    let args = ["push", s(&src), &repo.url, "--name", "ckpt"];
    let first = ferry.json(&args);
    assert!(uint(&first, "packs_uploaded") >= 1, "{first}");

    let again = ferry.json(&args);
    assert_eq!(uint(&again, "packs_uploaded"), 0, "{again}");
    assert_eq!(uint(&again, "bytes_uploaded"), 0, "{again}");
    assert_eq!(uint(&again, "chunks_new"), 0, "{again}");
    assert_eq!(
        uint(&again, "files_unchanged"),
        uint(&again, "files_total"),
        "the index knows every file: {again}"
    );
    let target = only_target(&again);
    assert!(boolean(target, "unchanged"), "{again}");
    assert_eq!(uint(target, "packs_uploaded"), 0, "{again}");
    assert_eq!(uint(target, "bytes_uploaded"), 0, "{again}");
    assert_eq!(uint(target, "chunks_new"), 0, "{again}");

    let dest = ctx.path("restore");
    ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    data::assert_same_tree(&src, &dest);
}

/// With 64 KiB chunks, 100 bytes inserted into the middle of a 24 MiB file cost a few chunks,
/// not the rest of the file; both versions restore.
pub fn insertion_uploads_few_chunks(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    let init = ferry.json(&["init", &repo.url, "--chunk-avg", "64KiB"]);
    assert_eq!(size_field(&init, "chunk_avg"), 64 * 1024, "{init}");
    assert!(size_field(&init, "pack_size") >= MIB as u64, "{init}");
    assert!(!string(&init, "id").is_empty(), "{init}");
    assert_eq!(string(&init, "repo"), repo.url, "{init}");

    let original = data::random_bytes(3, 24 * MIB);
    let v1 = ctx.dir("v1");
    data::write_file(&v1, "weights.bin", &original);
    let src = ctx.dir("src");
    data::write_file(&src, "weights.bin", &original);
    let first = ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    let chunks = uint(&first, "chunks_total");
    // 24 MiB at a 64 KiB average is ~384 chunks; allow the chunker its spread.
    assert!(
        (96..=1536).contains(&chunks),
        "--chunk-avg 64KiB not honoured: {chunks} chunks for 24 MiB: {first}"
    );
    let snapshot_v1 = pushed_snapshot(&first);

    let mut edited = original.clone();
    let at = 12 * MIB + 12_345;
    edited.splice(at..at, data::random_bytes(33, 100));
    data::write_file(&src, "weights.bin", &edited);
    let second = ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    assert!(
        uint(&second, "bytes_uploaded") < MIB as u64,
        "an insertion re-sent too much: {second}"
    );
    assert!(uint(&second, "chunks_new") <= 4, "{second}");
    assert!(uint(&second, "chunks_new") >= 1, "{second}");
    assert_eq!(
        uint(&second, "chunks_new") + uint(&second, "chunks_reused"),
        uint(&second, "chunks_total"),
        "{second}"
    );
    assert_eq!(
        uint(&second, "bytes_total"),
        edited.len() as u64,
        "{second}"
    );

    let dest = ctx.path("restore");
    ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    data::assert_same_tree(&src, &dest);

    let old = ctx.path("restore-v1");
    let restore = ferry.json(&[
        "restore",
        &repo.url,
        &format!("ckpt@{snapshot_v1}"),
        s(&old),
    ]);
    assert_eq!(string(&restore, "snapshot"), snapshot_v1, "{restore}");
    data::assert_same_tree(&v1, &old);
}

/// The index is a cache: after deleting it, a re-push finds every chunk in the repository.
pub fn deleted_index_is_rebuilt_from_repo(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 7);
    let args = ["push", s(&src), &repo.url, "--name", "ckpt"];
    let first = ctx.ferry().json(&args);
    assert!(uint(&first, "packs_uploaded") >= 1, "{first}");

    fs::remove_dir_all(ctx.index_dir()).expect("delete the index dir");
    // The index dir may come from the environment instead of --index-dir.
    let index = s(ctx.index_dir());
    let mut bare = vec!["--json"];
    bare.extend(args);
    let again = ctx
        .ferry()
        .run_bare(&bare, &[("FERRY_INDEX_DIR", index)])
        .json();
    assert!(
        ctx.index_dir().exists(),
        "FERRY_INDEX_DIR={index} was not used"
    );
    assert_eq!(uint(&again, "packs_uploaded"), 0, "{again}");
    assert_eq!(uint(&again, "bytes_uploaded"), 0, "{again}");
    assert_eq!(uint(&again, "chunks_new"), 0, "{again}");

    let dest = ctx.path("restore");
    ctx.ferry().json(&["restore", &repo.url, "ckpt", s(&dest)]);
    data::assert_same_tree(&src, &dest);
}

/// A source held as plain objects under a store prefix pushes like a folder, and a snapshot
/// restores to plain objects under another prefix (for `file://`, URLs of folders).
pub fn object_prefix_source_and_dest(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let tree = ctx.dir("tree");
    data::checkpoint_tree(&tree, 10);
    let (files, bytes) = data::totals(&tree);
    let want = data::file_contents(&tree);
    let source = ctx.location(backend);
    for (key, contents) in &want {
        source.raw.put(key, contents);
    }
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();

    let push = ferry.json(&["push", &source.url, &repo.url, "--name", "ckpt"]);
    assert_eq!(uint(&push, "files_total"), files, "{push}");
    assert_eq!(uint(&push, "bytes_total"), bytes, "{push}");

    let dest = ctx.location(backend);
    let restore = ferry.json(&["restore", &repo.url, "ckpt", &dest.url]);
    assert_eq!(uint(&restore, "files"), files, "{restore}");
    assert_eq!(uint(&restore, "bytes_written"), bytes, "{restore}");
    let got: BTreeMap<String, Vec<u8>> = dest
        .raw
        .list("")
        .into_iter()
        .map(|o| {
            let contents = dest.raw.get(&o.key);
            (o.key, contents)
        })
        .collect();
    assert_eq!(
        got.keys().collect::<Vec<_>>(),
        want.keys().collect::<Vec<_>>(),
        "restored objects under {}",
        dest.url
    );
    for (key, contents) in &want {
        assert!(
            got[key] == *contents,
            "object {key} differs from the source"
        );
    }

    let local = ctx.path("restore");
    ferry.json(&["restore", &repo.url, "ckpt", s(&local)]);
    data::assert_same_tree(&tree, &local);
}

/// One push, three repositories (the sidecar's fan-out to a disk and both clouds): each gets
/// its snapshot and restores byte-identical; a re-push leaves all three unchanged.
#[test]
fn fan_out_push_to_file_s3_and_azure() {
    let Some(ctx) = Ctx::new(&[Backend::File, Backend::S3, Backend::Azure]) else {
        return;
    };
    let repos = [Backend::File, Backend::S3, Backend::Azure].map(|b| ctx.location(b));
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 11);
    let ferry = ctx.ferry();
    let mut args = vec!["push", s(&src)];
    args.extend(repos.iter().map(|r| r.url.as_str()));
    args.extend(["--name", "ckpt"]);

    let push = ferry.json(&args);
    let targets = array(&push, "targets");
    assert_eq!(targets.len(), repos.len(), "{push}");
    for (target, repo) in targets.iter().zip(&repos) {
        assert_eq!(string(target, "repo"), repo.url, "{push}");
        assert!(uint(target, "packs_uploaded") >= 1, "{push}");
        assert!(!boolean(target, "unchanged"), "{push}");
        let dest = ctx.path("restore");
        let restore = ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
        assert_eq!(string(&restore, "snapshot"), string(target, "snapshot"));
        data::assert_same_tree(&src, &dest);
    }

    let again = ferry.json(&args);
    assert_eq!(uint(&again, "packs_uploaded"), 0, "{again}");
    for target in array(&again, "targets") {
        assert!(boolean(target, "unchanged"), "{again}");
        assert_eq!(uint(target, "packs_uploaded"), 0, "{again}");
    }
}
