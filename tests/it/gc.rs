//! Retention and garbage collection: `forget` and `gc` with `--dry-run` change nothing; `gc`
//! marks unneeded packs on one run and deletes them on a later one, so space comes back while
//! kept snapshots still restore; a marked pack a snapshot needs again is unmarked. And gc in a
//! loop beside pushes loses nothing: every snapshot left in a ref log restores.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::badinput::plant_ref;
use crate::checks::{self, Logged};
use crate::data::{self, KIB, MIB};
use crate::harness::{array, boolean, pushed_snapshot, s, uint, Backend, Ctx};
use crate::raw::{Location, RawStore};
use crate::run::Ferry;

per_backend!(forget_and_gc_reclaim, gc_unmarks_a_pack_needed_again);

#[test]
fn gc_beside_pushes_file() {
    gc_beside_pushes(Backend::File);
}

#[test]
fn gc_beside_pushes_s3() {
    gc_beside_pushes(Backend::S3);
}

/// Version `v` of a tree: a shard of its own, and a file every version shares.
fn write_version(root: &Path, v: u64) {
    data::write_file(root, "common.bin", &data::random_bytes(500, 300 * KIB));
    data::write_file(root, "model.bin", &data::random_bytes(500 + v, 2 * MIB));
    data::write_file(root, "step.json", format!("{{\"step\": {v}}}\n").as_bytes());
}

/// Bytes and count of pack objects.
fn pack_bytes(raw: &RawStore) -> (u64, usize) {
    let packs = crate::raw::pack_objects(raw);
    (packs.iter().map(|p| p.size).sum(), packs.len())
}

fn keys(raw: &RawStore, sub: &str) -> Vec<String> {
    raw.list(sub).into_iter().map(|o| o.key).collect()
}

fn all_objects(raw: &RawStore) -> Vec<(String, u64)> {
    raw.list("").into_iter().map(|o| (o.key, o.size)).collect()
}

/// A repository with 1 MiB packs and four versions of `ckpt`; returns their snapshot ids and
/// a copy of each tree.
fn four_versions(ctx: &Ctx, ferry: &Ferry, repo: &Location) -> Vec<(String, PathBuf)> {
    ferry.json(&[
        "init",
        &repo.url,
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "256KiB",
    ]);
    let src = ctx.dir("src");
    (1..=4)
        .map(|v| {
            write_version(&src, v);
            let id = pushed_snapshot(&ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]));
            let copy = ctx.path("expected");
            checks::copy_tree(&src, &copy);
            (id, copy)
        })
        .collect()
}

pub fn forget_and_gc_reclaim(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    let versions = four_versions(&ctx, &ferry, &repo);
    let url = &repo.url;
    let everything = all_objects(&repo.raw);

    // Dry runs change nothing.
    let dry = ferry.json(&["forget", url, "ckpt", "--keep-last", "2", "--dry-run"]);
    assert!(boolean(&dry, "dry_run"), "{dry}");
    assert_eq!(seqs(&dry, "forgotten"), [1, 2], "{dry}");
    assert_eq!(seqs(&dry, "kept"), [3, 4], "{dry}");
    let dry_gc = ferry.json(&["gc", url, "--grace", "0s", "--dry-run"]);
    assert_eq!(uint(&dry_gc, "packs_marked"), 0, "all is live: {dry_gc}");
    assert_eq!(
        all_objects(&repo.raw),
        everything,
        "a dry run changed the repository"
    );

    let forget = ferry.json(&["forget", url, "ckpt", "--keep-last", "2"]);
    assert_eq!(seqs(&forget, "forgotten"), [1, 2], "{forget}");
    let log = checks::ref_log(&ferry, url, "ckpt");
    assert_eq!(log.iter().map(|e| e.seq).collect::<Vec<_>>(), [3, 4]);
    let after_forget = all_objects(&repo.raw);
    let dry_gc = ferry.json(&["gc", url, "--grace", "0s", "--dry-run"]);
    assert_eq!(uint(&dry_gc, "snapshots_deleted"), 2, "{dry_gc}");
    assert!(uint(&dry_gc, "packs_marked") >= 2, "{dry_gc}");
    assert_eq!(
        all_objects(&repo.raw),
        after_forget,
        "gc --dry-run changed the repository"
    );

    // First run: marks, deletes the forgotten snapshots, deletes no pack.
    let (bytes_before, _) = pack_bytes(&repo.raw);
    let first = ferry.json(&["gc", url, "--grace", "0s"]);
    assert_eq!(uint(&first, "snapshots_deleted"), 2, "{first}");
    assert_eq!(uint(&first, "packs_deleted"), 0, "{first}");
    let marked = uint(&first, "packs_marked");
    assert_eq!(
        marked,
        uint(&dry_gc, "packs_marked"),
        "dry run and run differ: {first}"
    );
    assert_eq!(keys(&repo.raw, "gc/").len() as u64, marked, "{first}");
    for (id, _) in &versions[..2] {
        assert!(
            keys(&repo.raw, &format!("snapshots/{id}")).is_empty(),
            "forgotten snapshot {id} is still stored"
        );
        let gone = ferry.run(&["restore", url, &format!("ckpt@{id}"), s(&ctx.path("r"))]);
        assert!(gone.error_line().contains(&id[..12]), "{gone}");
    }
    // Marked packs are still there: kept snapshots restore, and a fresh index agrees.
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    for (id, tree) in &versions[2..] {
        checks::assert_restores(&ctx, &fresh, url, &format!("ckpt@{id}"), tree);
    }
    checks::verify_read_data(&ferry, url);

    // Second run: deletes what the first marked; the space comes back.
    let second = ferry.json(&["gc", url, "--grace", "0s"]);
    assert_eq!(uint(&second, "packs_deleted"), marked, "{second}");
    assert_eq!(uint(&second, "packs_marked"), 0, "{second}");
    assert!(
        keys(&repo.raw, "gc/").is_empty(),
        "marks left after deletion"
    );
    let (bytes_after, _) = pack_bytes(&repo.raw);
    assert!(uint(&second, "bytes_deleted") > 0, "{second}");
    // Two of four versions' own shards (2 MiB each, incompressible) are gone.
    assert!(
        bytes_after + 3 * MIB as u64 <= bytes_before,
        "space was not reclaimed: {bytes_before} → {bytes_after} bytes of packs"
    );
    checks::verify_read_data(&ferry, url);
    for (id, tree) in &versions[2..] {
        checks::assert_restores(&ctx, &ferry, url, &format!("ckpt@{id}"), tree);
        checks::assert_restores(&ctx, &fresh, url, &format!("ckpt@{id}"), tree);
    }
    let third = ferry.json(&["gc", url, "--grace", "0s"]);
    for key in [
        "packs_marked",
        "packs_deleted",
        "snapshots_deleted",
        "packs_rewritten",
    ] {
        assert_eq!(uint(&third, key), 0, "nothing left to collect: {third}");
    }
    eprintln!(
        "gc ({backend:?}): marked {marked} packs, then deleted them: {bytes_before} → {bytes_after} bytes"
    );
}

fn seqs(report: &serde_json::Value, key: &str) -> Vec<u64> {
    array(report, key)
        .iter()
        .map(|v| v.as_u64().expect("seq"))
        .collect()
}

/// A snapshot written after gc marked its packs (as by a push that raced the mark) makes
/// the next gc unmark those packs instead of deleting them.
pub fn gc_unmarks_a_pack_needed_again(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    let versions = four_versions(&ctx, &ferry, &repo);
    let url = &repo.url;
    let (first_id, first_tree) = &versions[0];
    let first_bytes = repo.raw.get(&format!("snapshots/{first_id}"));

    ferry.json(&["forget", url, "ckpt", "--keep-last", "1"]);
    let mark = ferry.json(&["gc", url, "--grace", "0s"]);
    assert!(uint(&mark, "packs_marked") >= 3, "{mark}");
    // The racing push's snapshot and ref entry land now.
    repo.raw.put(&format!("snapshots/{first_id}"), &first_bytes);
    plant_ref(&repo.raw, "ckpt", 5, first_id);

    let second = ferry.json(&["gc", url, "--grace", "0s"]);
    assert!(uint(&second, "packs_unmarked") >= 1, "{second}");
    assert!(
        uint(&second, "packs_deleted") < uint(&mark, "packs_marked"),
        "every marked pack went, needed or not: {second}"
    );
    checks::verify_read_data(&ferry, url);
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    checks::assert_restores(&ctx, &fresh, url, &format!("ckpt@{first_id}"), first_tree);
    checks::assert_restores(&ctx, &fresh, url, "ckpt@4", &versions[3].1);
    // Nothing is marked that a snapshot needs, so further runs delete nothing needed.
    ferry.json(&["gc", url, "--grace", "0s"]);
    ferry.json(&["gc", url, "--grace", "0s"]);
    checks::verify_read_data(&ferry, url);
    checks::assert_restores(&ctx, &fresh, url, &format!("ckpt@{first_id}"), first_tree);
}

/// Tree `i` of writer `w` in the concurrent test: a shard of its own, one that changes every
/// other push, and one per writer that never changes.
fn writer_tree(root: &Path, w: u64, i: u64) {
    data::write_file(root, "base.bin", &data::random_bytes(9000 + w, 256 * KIB));
    data::write_file(
        root,
        "half.bin",
        &data::random_bytes(9100 + 100 * w + i / 2, 256 * KIB),
    );
    data::write_file(
        root,
        "own.bin",
        &data::random_bytes(10_000 + 1000 * w + i, 512 * KIB),
    );
}

/// Writer `w`: pushes its tree to ref `w{w}` in a loop until `stop`, retrying a push that
/// a concurrent gc's mark turned away; returns each snapshot with its tree version, and how
/// many pushes were retried.
fn push_until_stopped(
    ctx: &Ctx,
    url: &str,
    w: u64,
    stop: &AtomicBool,
) -> (BTreeMap<String, (u64, u64)>, u64) {
    let ferry = ctx.ferry_with_index(&ctx.path("index"));
    let src = ctx.dir("src");
    let name = format!("w{w}");
    let mut pushed = BTreeMap::new();
    let mut retried = 0;
    let mut i = 0;
    while !stop.load(Ordering::Relaxed) {
        writer_tree(&src, w, i);
        let args = ["push", s(&src), url, "--name", &name];
        let mut attempts = 0;
        let snapshot = loop {
            let run = ferry.run(&args);
            if run.status.success() {
                break pushed_snapshot(&run.json());
            }
            attempts += 1;
            assert!(attempts < 20, "a push kept failing beside gc: {run}");
            let line = run.error_line();
            assert!(
                line.contains("a concurrent gc marked pack") && line.contains("run again"),
                "a push beside gc failed for another reason: {run}"
            );
            retried += 1;
        };
        pushed.insert(snapshot, (w, i));
        i += 1;
    }
    (pushed, retried)
}

/// `forget --keep-last 2` on both refs and `gc --grace 2s` in a loop until `until`, then
/// sets `stop`; returns gc's totals.
fn forget_and_gc_until(
    ctx: &Ctx,
    url: &str,
    until: Instant,
    stop: &AtomicBool,
) -> BTreeMap<&'static str, u64> {
    let ferry = ctx.ferry_with_index(&ctx.path("index"));
    let mut totals = BTreeMap::<&str, u64>::new();
    while Instant::now() < until {
        for name in ["w0", "w1"] {
            let forget = ferry.run(&["forget", url, name, "--keep-last", "2"]);
            // Before a writer's first push its ref does not exist yet.
            assert!(
                forget.status.success() || forget.stderr.contains("not found"),
                "{forget}"
            );
        }
        let gc = ferry.json(&["gc", url, "--grace", "2s"]);
        for key in [
            "packs_marked",
            "packs_deleted",
            "packs_unmarked",
            "packs_rewritten",
            "snapshots_deleted",
        ] {
            *totals.entry(key).or_default() += uint(&gc, key);
        }
        *totals.entry("runs").or_default() += 1;
        thread::sleep(Duration::from_millis(300));
    }
    stop.store(true, Ordering::Relaxed);
    totals
}

/// Every snapshot left in either writer's log restores to the tree it was pushed from;
/// returns how many there were.
fn assert_logs_restore(
    ctx: &Ctx,
    ferry: &Ferry,
    url: &str,
    pushed: &BTreeMap<String, (u64, u64)>,
) -> u64 {
    let mut restored = 0;
    for name in ["w0", "w1"] {
        let log: Vec<Logged> = checks::ref_log(ferry, url, name);
        assert!(log.len() >= 2, "{name}: {log:?}");
        for entry in &log {
            let (w, i) = pushed
                .get(&entry.snapshot)
                .unwrap_or_else(|| panic!("{name}: {} was never pushed", entry.snapshot));
            let tree = ctx.dir("expected");
            writer_tree(&tree, *w, *i);
            checks::assert_restores(
                ctx,
                ferry,
                url,
                &format!("{name}@{}", entry.snapshot),
                &tree,
            );
            restored += 1;
        }
    }
    restored
}

/// Pushes in a loop, two writers (refs `w0`, `w1`), while `forget --keep-last 2` and
/// `gc --grace 2s` run in a loop beside them; then every snapshot in either log restores.
fn gc_beside_pushes(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let url = repo.url.clone();
    ctx.ferry()
        .json(&["init", &url, "--pack-size", "1MiB", "--chunk-avg", "64KiB"]);
    let run_for = Duration::from_secs(16);
    let stop = AtomicBool::new(false);
    let started = Instant::now();

    // Each pushed snapshot: which writer's tree, which version.
    let (pushed, retried, gcs) = thread::scope(|scope| {
        let writers: Vec<_> = (0..2u64)
            .map(|w| {
                let (ctx, url, stop) = (&ctx, &url, &stop);
                scope.spawn(move || push_until_stopped(ctx, url, w, stop))
            })
            .collect();
        let collector = scope.spawn(|| forget_and_gc_until(&ctx, &url, started + run_for, &stop));
        let gcs = collector.join().expect("gc loop");
        let mut pushed = BTreeMap::new();
        let mut retried = 0;
        for w in writers {
            let (p, r) = w.join().expect("writer");
            pushed.extend(p);
            retried += r;
        }
        (pushed, retried, gcs)
    });

    let ferry = ctx.ferry_with_index(&ctx.path("index"));
    checks::verify_read_data(&ferry, &url);
    let restored = assert_logs_restore(&ctx, &ferry, &url, &pushed);
    eprintln!(
        "gc beside pushes ({backend:?}): {} pushes ({retried} retried after a concurrent mark), gc {gcs:?}; {restored} snapshots left, all restored",
        pushed.len()
    );
    assert!(
        gcs["packs_deleted"] >= 1,
        "gc deleted nothing, so the test proved nothing: {gcs:?}"
    );
}
