//! Replication between repositories: everything the first time, nothing the second time, only
//! the new chunks after a small change; the target restores byte-identical.

use std::collections::BTreeSet;

use crate::data::{self, KIB};
use crate::harness::{array, pushed_snapshot, s, string, uint, Backend, Ctx};

per_backend!(replicate_from_file);

/// S3 → Azure: the headline cross-cloud copy.
#[test]
fn replicate_s3_to_azure() {
    replicate_between(Backend::S3, Backend::Azure);
}

#[test]
fn replicate_azure_to_s3() {
    replicate_between(Backend::Azure, Backend::S3);
}

/// A local repository replicated to `backend`.
pub fn replicate_from_file(backend: Backend) {
    replicate_between(Backend::File, backend);
}

fn snapshot_ids(ctx: &Ctx, repo: &str) -> BTreeSet<String> {
    let list = ctx.ferry().json(&["snapshots", repo, "ckpt"]);
    array(&list, "snapshots")
        .iter()
        .map(|snap| string(snap, "snapshot").to_string())
        .collect()
}

fn replicate_between(from: Backend, to: Backend) {
    let Some(ctx) = Ctx::new(&[from, to]) else {
        return;
    };
    let a = ctx.location(from);
    let b = ctx.location(to);
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 4);
    let ferry = ctx.ferry();
    let push = ferry.json(&["push", s(&src), &a.url, "--name", "ckpt"]);
    let first_snapshot = pushed_snapshot(&push);

    let copy = ferry.json(&["replicate", &a.url, &b.url]);
    assert_eq!(uint(&copy, "snapshots_copied"), 1, "{copy}");
    assert_eq!(
        uint(&copy, "chunks_copied"),
        uint(&push, "chunks_new"),
        "an empty target needs every chunk of the source: {copy} after {push}"
    );
    assert!(uint(&copy, "packs_uploaded") >= 1, "{copy}");
    assert!(uint(&copy, "bytes_uploaded") > 0, "{copy}");
    assert!(uint(&copy, "bytes_downloaded") > 0, "{copy}");
    assert_eq!(
        snapshot_ids(&ctx, &b.url),
        BTreeSet::from([first_snapshot.clone()])
    );
    let dest = ctx.path("restore");
    let restore = ferry.json(&["restore", &b.url, "ckpt", s(&dest)]);
    assert_eq!(string(&restore, "snapshot"), first_snapshot, "{restore}");
    data::assert_same_tree(&src, &dest);

    let again = ferry.json(&["replicate", &a.url, &b.url]);
    assert_eq!(uint(&again, "snapshots_copied"), 0, "{again}");
    assert_eq!(uint(&again, "chunks_copied"), 0, "{again}");
    assert_eq!(uint(&again, "packs_uploaded"), 0, "{again}");
    assert_eq!(uint(&again, "bytes_uploaded"), 0, "{again}");

    // A small change travels as a few chunks.
    data::write_file(
        &src,
        "model/tokenizer/vocab.txt",
        &data::text_bytes(44, 60 * KIB),
    );
    let push2 = ferry.json(&["push", s(&src), &a.url, "--name", "ckpt"]);
    let second_snapshot = pushed_snapshot(&push2);
    let delta = ferry.json(&["replicate", &a.url, &b.url, "--name", "ckpt"]);
    assert_eq!(uint(&delta, "snapshots_copied"), 1, "{delta}");
    assert_eq!(
        uint(&delta, "chunks_copied"),
        uint(&push2, "chunks_new"),
        "{delta} after {push2}"
    );
    assert!(
        uint(&delta, "bytes_uploaded") < 512 * KIB as u64,
        "a 60 KiB change re-sent too much: {delta}"
    );
    assert_eq!(
        snapshot_ids(&ctx, &b.url),
        BTreeSet::from([first_snapshot, second_snapshot.clone()])
    );
    let dest2 = ctx.path("restore");
    let restore2 = ferry.json(&["restore", &b.url, "ckpt", s(&dest2)]);
    assert_eq!(string(&restore2, "snapshot"), second_snapshot, "{restore2}");
    data::assert_same_tree(&src, &dest2);
}
