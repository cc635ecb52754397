//! Pushes of different trees to the same repository and name at once: refs change only by
//! conditional write, so no snapshot is lost, the ref history stays linear and the
//! repository verifies with `--read-data`.

use std::collections::BTreeSet;
use std::fs;

use crate::checks;
use crate::data::{self, MIB};
use crate::harness::{array, pushed_snapshot, s, string, uint, Backend, Ctx};

per_backend!(concurrent_pushes_keep_every_snapshot);

pub fn concurrent_pushes_keep_every_snapshot(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    ctx.ferry().json(&["init", &repo.url]);
    // Same shape, different bytes: both pushes take about as long, so their ref writes race.
    let sources = [ctx.dir("src-a"), ctx.dir("src-b")];
    for (i, src) in sources.iter().enumerate() {
        data::random_tree(src, 900 + 100 * i as u64, 4, MIB);
        data::write_file(src, "who.txt", format!("writer {i}\n").as_bytes());
    }
    let runners: Vec<_> = sources
        .iter()
        .map(|_| ctx.ferry_with_index(&ctx.path("index")))
        .collect();
    let running: Vec<_> = sources
        .iter()
        .zip(&runners)
        .map(|(src, ferry)| ferry.spawn(&["push", s(src), &repo.url, "--name", "ckpt"]))
        .collect();
    let pushed: Vec<String> = running
        .into_iter()
        .map(|push| pushed_snapshot(&push.wait().json()))
        .collect();
    assert_ne!(pushed[0], pushed[1], "two different trees, one snapshot id");

    let listing = ctx.ferry().json(&["snapshots", &repo.url, "ckpt"]);
    let snapshots = array(&listing, "snapshots");
    assert_eq!(
        snapshots.len(),
        2,
        "a concurrent push lost a snapshot: {listing}"
    );
    let ids: BTreeSet<&str> = snapshots.iter().map(|x| string(x, "snapshot")).collect();
    let want: BTreeSet<&str> = pushed.iter().map(String::as_str).collect();
    assert_eq!(ids, want, "{listing}");
    let seqs: BTreeSet<u64> = snapshots.iter().map(|x| uint(x, "seq")).collect();
    assert_eq!(seqs.len(), 2, "both snapshots got the same seq: {listing}");

    for (src, snapshot) in sources.iter().zip(&pushed) {
        let dest = ctx.path("restore");
        ctx.ferry()
            .json(&["restore", &repo.url, &format!("ckpt@{snapshot}"), s(&dest)]);
        data::assert_same_tree(src, &dest);
    }

    // Two multi-megabyte pushes seldom reach the ref in the same few milliseconds, so that
    // race needs more chances: rounds of four quick pushes collide most of the time (measured
    // on file:// and moto), and every one of their snapshots must be kept as well.
    let writers: Vec<_> = (0..4)
        .map(|_| (ctx.dir("small"), ctx.ferry_with_index(&ctx.path("index"))))
        .collect();
    let mut expected = Vec::new();
    for round in 0..5u64 {
        for (w, (src, _)) in writers.iter().enumerate() {
            let seed = 2000 + 10 * round + w as u64;
            data::write_file(src, "weights.bin", &data::random_bytes(seed, 64 * 1024));
        }
        let running: Vec<_> = writers
            .iter()
            .map(|(src, ferry)| ferry.spawn(&["push", s(src), &repo.url, "--name", "ckpt"]))
            .collect();
        for (push, (src, _)) in running.into_iter().zip(&writers) {
            let snapshot = pushed_snapshot(&push.wait().json());
            let copy = ctx.dir("expected");
            data::write_file(
                &copy,
                "weights.bin",
                &fs::read(src.join("weights.bin")).unwrap(),
            );
            expected.push((snapshot, copy));
        }
    }
    let listing = ctx.ferry().json(&["snapshots", &repo.url, "ckpt"]);
    let snapshots = array(&listing, "snapshots");
    assert_eq!(
        snapshots.len(),
        2 + expected.len(),
        "concurrent pushes lost snapshots: {listing}"
    );
    let ids: BTreeSet<&str> = snapshots.iter().map(|x| string(x, "snapshot")).collect();
    let seqs: BTreeSet<u64> = snapshots.iter().map(|x| uint(x, "seq")).collect();
    assert_eq!(seqs.len(), snapshots.len(), "seqs repeat: {listing}");
    for (snapshot, copy) in &expected {
        assert!(
            ids.contains(snapshot.as_str()),
            "{snapshot} lost: {listing}"
        );
        let dest = ctx.path("restore");
        ctx.ferry()
            .json(&["restore", &repo.url, &format!("ckpt@{snapshot}"), s(&dest)]);
        data::assert_same_tree(copy, &dest);
    }

    // The history is linear (seqs 1..=n, each snapshot once), and no pack was damaged.
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    let log = checks::ref_log(&fresh, &repo.url, "ckpt");
    checks::assert_linear(&log);
    assert_eq!(log.len(), 2 + expected.len(), "{log:?}");
    checks::verify_read_data(&fresh, &repo.url);
}
