//! Damage from outside: a pack flipped at rest must be caught and named; a push killed with
//! SIGKILL must leave a valid repository and resume without re-sending what landed.

use crate::data::{self, MIB};
use crate::harness::{array, boolean, s, size_field, string, uint, Backend, Ctx};
use crate::raw::{indexed_pack_ids, pack_objects, Object};

per_backend!(corrupted_pack_is_named, killed_push_resumes);

/// One byte flipped in the middle of a pack: `verify --read-data` and `restore` both fail and
/// name the pack.
pub fn corrupted_pack_is_named(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 5);
    let ferry = ctx.ferry();
    ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);

    let packs = pack_objects(&repo.raw);
    assert!(!packs.is_empty(), "no pack object under {}", repo.url);
    let victim: &Object = packs.iter().max_by_key(|p| p.size).expect("a pack");
    let pack_id = victim.file_name().to_string();
    let mut bytes = repo.raw.get(&victim.key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    repo.raw.put(&victim.key, &bytes);

    let verify = ferry.run(&["verify", &repo.url, "--read-data"]);
    assert!(
        !verify.status.success() && verify.status.code().is_some(),
        "verify must exit non-zero on a damaged pack: {verify}"
    );
    let report = verify.stdout_json();
    assert!(!boolean(&report, "ok"), "{verify}");
    let problems = array(&report, "problems");
    assert!(
        problems
            .iter()
            .any(|p| string(p, "object").contains(&pack_id)),
        "no problem names pack {pack_id}: {verify}"
    );

    let restore = ferry.run(&["restore", &repo.url, "ckpt", s(&ctx.path("restore"))]);
    let error = restore.error_line();
    assert!(
        error.contains(&pack_id),
        "the restore error does not name pack {pack_id}: {restore}"
    );
}

/// SIGKILL a push once its first pack (and pack index) landed; the rerun completes, sends
/// only what was missing, and the repository verifies and restores.
pub fn killed_push_resumes(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::random_tree(&src, 600, 12, 8 * MIB);
    let (_, bytes_total) = data::totals(&src);
    let ferry = ctx.ferry();
    // Small packs: the first index lands early, while most of the push is still to come.
    let init = ferry.json(&[
        "init",
        &repo.url,
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "256KiB",
    ]);
    assert_eq!(size_field(&init, "pack_size"), MIB as u64, "{init}");

    let args = ["push", s(&src), &repo.url, "--name", "ckpt"];
    // Each pack's index follows its pack: once one index landed, a pack is durable.
    let watch = repo.raw.watch("index/");
    let mut push = ferry.spawn(&args);
    let landed = watch.wait(|| push.has_exited());
    assert!(
        landed,
        "the push ended before a pack index landed, so it could not be killed mid-way: {}",
        push.wait()
    );
    let killed = push.kill();
    assert!(
        !killed.status.success(),
        "the push finished before the kill; the test needs more data: {killed}"
    );

    // A pack with its index has landed for good: the rerun must not send its chunks again.
    let landed = pack_objects(&repo.raw);
    let indexed = indexed_pack_ids(&repo.raw);
    let durable: Vec<&Object> = landed
        .iter()
        .filter(|p| indexed.contains(p.file_name()))
        .collect();
    assert!(
        !durable.is_empty(),
        "no pack with its index after the kill; objects: {:?}",
        repo.raw.list("")
    );
    let durable_bytes: u64 = durable.iter().map(|p| p.size).sum();
    eprintln!(
        "killed after {} packs landed, {} with their index",
        landed.len(),
        durable.len()
    );

    let rerun = ferry.json(&args);
    let total_packs = pack_objects(&repo.raw).len() as u64;
    assert!(
        uint(&rerun, "packs_uploaded") < total_packs,
        "the rerun re-uploaded every pack ({total_packs} in the repo): {rerun}"
    );
    assert!(uint(&rerun, "chunks_reused") >= 1, "{rerun}");
    // Random data does not compress: a whole push stores about bytes_total.
    let allowed = bytes_total + bytes_total / 50 + 256 * 1024;
    assert!(
        uint(&rerun, "bytes_uploaded") + durable_bytes <= allowed,
        "the rerun re-sent data that had landed ({} packs, {durable_bytes} bytes, before the \
         kill): {rerun}",
        durable.len()
    );

    let verify = ferry.json(&["verify", &repo.url, "--read-data"]);
    assert!(boolean(&verify, "ok"), "{verify}");
    assert!(array(&verify, "problems").is_empty(), "{verify}");
    assert!(uint(&verify, "packs_checked") >= 1, "{verify}");
    assert!(
        uint(&verify, "chunks_checked") >= uint(&rerun, "chunks_total"),
        "verify --read-data skipped chunks: {verify} after {rerun}"
    );
    let snapshots = ferry.json(&["snapshots", &repo.url, "ckpt"]);
    assert_eq!(array(&snapshots, "snapshots").len(), 1, "{snapshots}");
    let dest = ctx.path("restore");
    ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    data::assert_same_tree(&src, &dest);
}
