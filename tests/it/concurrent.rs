//! Two pushes of different trees to the same repository and name at once: refs change only by
//! conditional write, so neither snapshot is lost.

use std::collections::BTreeSet;

use crate::data::{self, MIB};
use crate::harness::{array, pushed_snapshot, s, string, uint, Backend, Ctx};

per_backend!(concurrent_pushes_keep_both_snapshots);

pub fn concurrent_pushes_keep_both_snapshots(backend: Backend) {
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
}
