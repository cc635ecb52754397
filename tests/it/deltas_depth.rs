//! `push --deltas N` (issue 11): one push may lower the repository's delta depth. `0` stores
//! every changed chunk whole, a keyframe the next push's deltas rest on at depth 1; a depth
//! above the repository's is refused before anything is sent. The behaviour is the push's
//! encoder, the same on every store, so it runs on `file://`.

use crate::deltas::{assert_steps_restore, delta_frames, write_step};
use crate::harness::{pushed_snapshot, s, uint, Backend, Ctx};
use crate::raw::pack_objects;

/// The delta depths of the packs `push` added, and its report.
fn push_depths(
    ctx: &Ctx,
    repo: &crate::raw::Location,
    step: u32,
    extra: &[&str],
) -> (Vec<u8>, serde_json::Value) {
    let before: Vec<String> = pack_objects(&repo.raw).into_iter().map(|p| p.key).collect();
    let src = ctx.dir(&format!("step-{step}"));
    write_step(&src, step);
    let mut args = vec!["push", s(&src), &repo.url, "--name", "ckpt"];
    args.extend_from_slice(extra);
    let push = ctx.ferry().json(&args);
    let depths = pack_objects(&repo.raw)
        .into_iter()
        .filter(|p| !before.contains(&p.key))
        .flat_map(|p| delta_frames(&repo.raw.get(&p.key)))
        .map(|f| f.depth)
        .collect();
    (depths, push)
}

#[test]
fn push_deltas_sets_one_pushs_depth() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo = ctx.location(Backend::File);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "2"]);
    let mut snapshots = Vec::new();
    for step in 1..=2 {
        let (_, push) = push_depths(&ctx, &repo, step, &[]);
        snapshots.push(pushed_snapshot(&push));
    }

    // Above the repository's depth: refused, naming both, before anything is sent.
    let packs = pack_objects(&repo.raw).len();
    let src = ctx.dir("step-3");
    write_step(&src, 3);
    let deep = ferry.run(&[
        "push",
        s(&src),
        &repo.url,
        "--name",
        "ckpt",
        "--deltas",
        "3",
    ]);
    assert!(!deep.status.success(), "{deep}");
    let error = deep.error_line();
    assert!(
        error.contains("--deltas 3 is deeper than") && error.contains("allows (2)"),
        "{deep}"
    );
    assert_eq!(
        pack_objects(&repo.raw).len(),
        packs,
        "a refused push sent nothing"
    );

    // A keyframe: every changed chunk whole.
    let (depths, push) = push_depths(&ctx, &repo, 3, &["--deltas", "0"]);
    assert_eq!(uint(&push, "chunks_delta"), 0, "{push}");
    assert!(
        depths.is_empty(),
        "a keyframe push stored deltas: {depths:?}"
    );
    snapshots.push(pushed_snapshot(&push));

    // The next push rests on it: depth 1 everywhere (without the keyframe the BF16/F16
    // chains would be at depth 2 here).
    let (depths, push) = push_depths(&ctx, &repo, 4, &[]);
    assert!(uint(&push, "chunks_delta") >= 3, "{push}");
    assert!(depths.iter().all(|&d| d == 1), "{depths:?}");
    snapshots.push(pushed_snapshot(&push));

    // `--deltas 1`: the BF16/F16 chains, which would go to depth 2, rebase onto the key.
    let (depths, push) = push_depths(&ctx, &repo, 5, &["--deltas", "1"]);
    assert!(uint(&push, "chunks_delta") >= 3, "{push}");
    assert!(
        !depths.is_empty() && depths.iter().all(|&d| d == 1),
        "{depths:?}"
    );
    snapshots.push(pushed_snapshot(&push));

    assert_steps_restore(&ctx, &repo.url, &snapshots, 1);
}
