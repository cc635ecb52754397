//! The local base cache (`index::bases`): a delta push encodes against the previous step's
//! chunks kept beside the local index, so it reads (almost) nothing back from the repository;
//! without the cache, or with a damaged one, it reads its bases back and stays correct.

use std::fs;
use std::path::{Path, PathBuf};

use crate::deltas::{weights, write_step};
use crate::harness::{only_target, pushed_snapshot, s, uint, Backend, Ctx};
use crate::run::Ferry;

per_backend!(delta_pushes_read_no_bases_back);

/// Pushes step `step` of `crate::deltas`' series to `url` under `ckpt` (with extra `envs`).
fn push_step(
    ctx: &Ctx,
    ferry: &Ferry,
    url: &str,
    step: u32,
    envs: &[(&str, &str)],
) -> serde_json::Value {
    let src = ctx.dir(&format!("step-{step}"));
    write_step(&src, step);
    ferry
        .run_env(&["push", s(&src), url, "--name", "ckpt"], envs)
        .json()
}

/// Restores `ckpt@snapshot` of `url` and asserts it is step `step`, byte for byte.
fn assert_restores(ctx: &Ctx, ferry: &Ferry, url: &str, push: &serde_json::Value, step: u32) {
    let dest = ctx.path(&format!("restore-{step}"));
    let at = format!("ckpt@{}", pushed_snapshot(push));
    ferry.json(&["restore", url, &at, s(&dest)]);
    let got = fs::read(dest.join("model.safetensors")).expect("restored file");
    assert!(got == weights(step), "step {step} restored different bytes");
}

/// The files under `dir`, at any depth.
fn files_under(dir: &Path) -> Vec<(PathBuf, u64)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).into_iter().flatten().flatten() {
            let meta = e.metadata().expect("stat cache entry");
            if meta.is_dir() {
                stack.push(e.path());
            } else {
                out.push((e.path(), meta.len()));
            }
        }
    }
    out
}

/// The base cache folder beside index `dir`, and the bytes it holds.
pub(crate) fn cache_bytes(index: &Path) -> (PathBuf, u64) {
    let mut dir = index.as_os_str().to_owned();
    dir.push(".bases");
    let dir = PathBuf::from(dir);
    let total = files_under(&dir).iter().map(|f| f.1).sum();
    (dir, total)
}

/// With the cache, steps 2 and 3 read under 1 % of the file back from the repository (the
/// heads of the frames that check each cached base); with `FERRY_BASE_CACHE=off`, a push
/// from another index reads its bases back (over a third of the file); a fresh index fills
/// its cache on that push and the next step reads little again. Every step restores
/// byte-identical, and the cache holds about one step (its chunks and their keys).
pub fn delta_pushes_read_no_bases_back(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "4"]);
    let size = weights(1).len() as u64;
    let mut pushes = vec![push_step(&ctx, &ferry, &repo.url, 1, &[])];
    for step in 2..=3 {
        let push = push_step(&ctx, &ferry, &repo.url, step, &[]);
        assert!(uint(&push, "chunks_delta") >= 3, "step {step}: {push}");
        let read = uint(&push, "bytes_read_for_deltas");
        assert!(
            read > 0 && read * 100 < size,
            "step {step} read {read} of {size} back: {push}"
        );
        pushes.push(push);
    }
    let (dir, held) = cache_bytes(ctx.index_dir());
    assert!(
        held > size / 2 && held < 3 * size,
        "{} holds {held} bytes for a {size}-byte step",
        dir.display()
    );

    // Another index without a cache reads the bases back; its deltas are as small.
    let other_index = ctx.path("other-index");
    let other = ctx.ferry_with_index(&other_index);
    let off = push_step(&ctx, &other, &repo.url, 4, &[("FERRY_BASE_CACHE", "off")]);
    let read = uint(&off, "bytes_read_for_deltas");
    assert!(
        read * 3 > size,
        "without a cache step 4 read {read} of {size}: {off}"
    );
    assert!(
        uint(only_target(&off), "bytes_uploaded") * 2 < size,
        "{off}"
    );
    assert_eq!(
        cache_bytes(&other_index).1,
        0,
        "FERRY_BASE_CACHE=off writes no cache"
    );
    pushes.push(off);

    // The same index with its cache on: step 5 reads its bases back once (cold cache) and
    // fills it, step 6 reads little.
    let cold = push_step(&ctx, &other, &repo.url, 5, &[]);
    assert!(uint(&cold, "bytes_read_for_deltas") * 3 > size, "{cold}");
    let warm = push_step(&ctx, &other, &repo.url, 6, &[]);
    assert!(uint(&warm, "bytes_read_for_deltas") * 100 < size, "{warm}");
    pushes.push(cold);
    pushes.push(warm);

    for (k, push) in pushes.iter().enumerate() {
        assert_restores(&ctx, &ferry, &repo.url, push, k as u32 + 1);
    }
    let verify = ferry.json(&["verify", &repo.url, "--read-data"]);
    assert!(crate::harness::boolean(&verify, "ok"), "{verify}");
}

/// A damaged cache is a miss, never a wrong delta: every entry's frame bytes flipped (then
/// every entry truncated), the next pushes read their bases back and restore byte-identical.
#[test]
fn damaged_cache_is_a_miss() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo = ctx.location(Backend::File);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "4"]);
    let size = weights(1).len() as u64;
    let first = push_step(&ctx, &ferry, &repo.url, 1, &[]);
    let (dir, _) = cache_bytes(ctx.index_dir());
    let entries =
        |dir: &Path| -> Vec<PathBuf> { files_under(dir).into_iter().map(|f| f.0).collect() };
    let cached = entries(&dir);
    assert!(cached.len() >= 3, "{cached:?}");
    for path in &cached {
        let mut bytes = fs::read(path).unwrap();
        let n = bytes.len();
        for b in &mut bytes[n - n / 2..] {
            *b ^= 0x5a;
        }
        fs::write(path, bytes).unwrap();
    }
    let second = push_step(&ctx, &ferry, &repo.url, 2, &[]);
    assert!(uint(&second, "chunks_delta") >= 3, "{second}");
    assert!(
        uint(&second, "bytes_read_for_deltas") * 3 > size,
        "{second}"
    );
    for path in entries(&dir) {
        fs::write(&path, b"FRYBASE1").unwrap();
    }
    let third = push_step(&ctx, &ferry, &repo.url, 3, &[]);
    assert!(uint(&third, "bytes_read_for_deltas") * 3 > size, "{third}");
    for (k, push) in [first, second, third].iter().enumerate() {
        assert_restores(&ctx, &ferry, &repo.url, push, k as u32 + 1);
    }
}
