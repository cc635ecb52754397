//! Damage and leftovers that must not wedge a repository: gc after a killed push (a pack
//! without its index, a mark without its pack), `ferry repair` after a corrupt pack, and gc
//! reclaiming packs that duplicate each other's chunks (left by concurrent pushes).

use crate::checks;
use crate::data::{self, KIB, MIB};
use crate::harness::{array, s, string, uint, Backend, Ctx};
use crate::raw::{indexed_pack_ids, pack_objects};

per_backend!(
    gc_deletes_leftovers_of_a_killed_push,
    repair_drops_a_corrupt_pack,
    gc_reclaims_duplicate_packs,
    repair_lets_an_old_index_find_a_good_copy,
    a_push_after_repair_may_rewrite_the_damaged_pack_whole
);

/// A 64-hex id that names nothing in the repository.
fn bogus_id(seed: u8) -> String {
    format!("{:02x}", seed).repeat(32)
}

/// A killed push leaves a pack without its index; a gc killed between deleting a pack and its
/// mark leaves a mark without its pack. gc deletes both and succeeds, run after run: deleting
/// an object that is already gone is success on every backend.
pub fn gc_deletes_leftovers_of_a_killed_push(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 7);
    let ferry = ctx.ferry();
    ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);

    let orphan = bogus_id(0xab);
    let some_pack = &pack_objects(&repo.raw)[0];
    let bytes = repo.raw.get(&some_pack.key);
    repo.raw.put(&format!("packs/ab/{orphan}"), &bytes);
    let stale_mark = bogus_id(0xcd);
    repo.raw.put(&format!("gc/{stale_mark}"), b"{}");
    assert!(!indexed_pack_ids(&repo.raw).contains(&orphan));

    for run in 0..2 {
        let gc = ferry.run(&["gc", &repo.url, "--grace", "0s"]);
        assert!(gc.status.success(), "gc run {run} failed: {gc}");
        let report = gc.stdout_json();
        if run == 0 {
            assert_eq!(uint(&report, "orphans_deleted"), 1, "{report}");
        }
    }
    assert!(
        repo.raw.list(&format!("packs/ab/{orphan}")).is_empty(),
        "the orphan pack is still there"
    );
    assert!(
        repo.raw.list(&format!("gc/{stale_mark}")).is_empty(),
        "the stale mark is still there"
    );
    checks::verify_read_data(&ferry, &repo.url);
    checks::assert_restores(&ctx, &ferry, &repo.url, "ckpt", &src);
}

/// A flipped byte in a pack: verify names `ferry repair`; repair marks the pack; the next
/// push (with a fresh index) uploads its chunks anew instead of deduplicating against them;
/// everything restores; gc then deletes the damaged pack.
pub fn repair_drops_a_corrupt_pack(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let url = &repo.url;
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 21);
    let ferry = ctx.ferry();
    let args = ["push", s(&src), url.as_str(), "--name", "ckpt"];
    ferry.json(&args);

    let packs = pack_objects(&repo.raw);
    let victim = packs.iter().max_by_key(|p| p.size).expect("a pack");
    let pack_id = victim.file_name().to_string();
    let mut bytes = repo.raw.get(&victim.key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    repo.raw.put(&victim.key, &bytes);

    let verify = ferry.run(&["verify", url, "--read-data"]);
    assert!(!verify.status.success(), "{verify}");
    let report = verify.stdout_json();
    assert!(
        array(&report, "problems")
            .iter()
            .any(|p| string(p, "object").contains(&pack_id)
                && string(p, "problem").contains(&format!("ferry repair {url}"))),
        "verify does not say what to run: {verify}"
    );

    let dry = ferry.json(&["repair", url, "--dry-run"]);
    assert_eq!(array(&dry, "damaged").len(), 1, "{dry}");
    assert!(repo.raw.list("bad/").is_empty(), "a dry run marked a pack");
    let repair = ferry.json(&["repair", url]);
    let damaged = array(&repair, "damaged");
    assert_eq!(damaged.len(), 1, "{repair}");
    assert_eq!(string(&damaged[0], "pack"), pack_id, "{repair}");
    assert_eq!(repo.raw.list("bad/").len(), 1);

    // A fresh index: the damaged pack's chunks count as absent, so they are uploaded anew.
    // The next checkpoint has a file more, so its pack cannot be the damaged one rewritten
    // whole (that case: `a_push_after_repair_may_rewrite_the_damaged_pack_whole`).
    let first_tree = ctx.path("first");
    checks::copy_tree(&src, &first_tree);
    data::write_file(&src, "extra/notes.txt", b"step 2\n");
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    let again = fresh.json(&args);
    assert!(uint(&again, "chunks_new") >= 1, "{again}");
    assert!(uint(&again, "packs_uploaded") >= 1, "{again}");
    // The ref's snapshot names chunks, not packs: it is whole again.
    let verify = checks::verify_read_data(&ferry, url);
    assert!(
        array(&verify, "notes")
            .iter()
            .any(|n| string(n, "object").contains(&pack_id)),
        "{verify}"
    );
    checks::assert_restores(&ctx, &ferry, url, "ckpt", &src);
    let other = ctx.ferry_with_index(&ctx.path("index"));
    checks::assert_restores(&ctx, &other, url, "ckpt", &src);
    // The first snapshot names the same chunks: it is whole again too.
    checks::assert_restores(&ctx, &other, url, "ckpt@1", &first_tree);

    // gc marks the damaged pack (nothing needs it now), then deletes it with its marker.
    let first = ferry.json(&["gc", url, "--grace", "0s"]);
    assert!(uint(&first, "packs_marked") >= 1, "{first}");
    let second = ferry.json(&["gc", url, "--grace", "0s"]);
    assert!(uint(&second, "packs_deleted") >= 1, "{second}");
    assert!(
        pack_objects(&repo.raw)
            .iter()
            .all(|p| p.file_name() != pack_id),
        "the damaged pack is still there"
    );
    assert!(repo.raw.list("bad/").is_empty(), "the damage mark is left");
    let verify = checks::verify_read_data(&ferry, url);
    assert!(array(&verify, "notes").is_empty(), "{verify}");
    checks::assert_restores(&ctx, &fresh, url, "ckpt", &src);
}

/// Two packs holding the same chunks (as concurrent pushes leave them): gc keeps one copy of
/// each chunk, marks the redundant pack, deletes it on the next run, and every snapshot still
/// restores.
pub fn gc_reclaims_duplicate_packs(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let other = ctx.location(backend);
    let url = &repo.url;
    let ferry = ctx.ferry();
    let src = duplicate_packs(&ctx, &ferry, &repo, &other);
    let mut indexes = checks::PackIndexes::default();
    indexes.refresh(&repo.raw);
    let twice = std::panic::catch_unwind(|| indexes.assert_no_chunk_twice());
    assert!(twice.is_err(), "the setup holds no duplicate chunk");
    let (before, count) = pack_bytes(&repo.raw);
    assert_eq!(count, 2, "{:?}", repo.raw.list("packs/"));

    let first = ferry.json(&["gc", url, "--grace", "0s"]);
    assert_eq!(uint(&first, "packs_marked"), 1, "{first}");
    assert_eq!(uint(&first, "packs_redundant"), 1, "{first}");
    checks::assert_restores(
        &ctx,
        &ctx.ferry_with_index(&ctx.path("index")),
        url,
        "ckpt",
        &src,
    );
    let second = ferry.json(&["gc", url, "--grace", "0s"]);
    assert_eq!(uint(&second, "packs_deleted"), 1, "{second}");
    let (after, count) = pack_bytes(&repo.raw);
    assert_eq!(count, 1);
    assert!(after < before, "{before} → {after} bytes of packs");
    let mut indexes = checks::PackIndexes::default();
    indexes.refresh(&repo.raw);
    indexes.assert_no_chunk_twice();
    checks::verify_read_data(&ferry, url);
    checks::assert_restores(&ctx, &ferry, url, "ckpt", &src);
    checks::assert_restores(
        &ctx,
        &ctx.ferry_with_index(&ctx.path("index")),
        url,
        "ckpt",
        &src,
    );
    // Stable: nothing more to collect.
    let third = ferry.json(&["gc", url, "--grace", "0s"]);
    assert_eq!(uint(&third, "packs_marked"), 0, "{third}");
    assert_eq!(uint(&third, "packs_unmarked"), 0, "{third}");
}

/// `repo` with ref `ckpt` (one file) pushed by `ferry`, plus a second pack holding the same
/// chunks (and one file more) under another id, as a concurrent writer unaware of the first
/// leaves it (pushed into `other`, then copied over). Returns the source folder.
fn duplicate_packs(
    ctx: &Ctx,
    ferry: &crate::run::Ferry,
    repo: &crate::raw::Location,
    other: &crate::raw::Location,
) -> std::path::PathBuf {
    let shared = data::random_bytes(31, 2 * MIB);
    let src = ctx.dir("src");
    data::write_file(&src, "shared.bin", &shared);
    ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    let src2 = ctx.dir("src");
    data::write_file(&src2, "shared.bin", &shared);
    data::write_file(&src2, "own.bin", &data::random_bytes(32, 100 * KIB));
    let writer = ctx.ferry_with_index(&ctx.path("index"));
    writer.json(&["push", s(&src2), &other.url, "--name", "ckpt"]);
    for kind in ["packs/", "index/"] {
        for o in other.raw.list(kind) {
            repo.raw.put(&o.key, &other.raw.get(&o.key));
        }
    }
    src
}

/// A local index whose chunk locations point into a pack that is then found damaged, while
/// another pack holds good copies: after `ferry repair`, restore through that same index
/// reads the good copies (the index is rebuilt once, damaged packs never winning).
pub fn repair_lets_an_old_index_find_a_good_copy(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let other = ctx.location(backend);
    let url = &repo.url;
    let ferry = ctx.ferry();
    let src = duplicate_packs(&ctx, &ferry, &repo, &other);
    // The index learns the copied pack last, so its locations win.
    checks::assert_restores(&ctx, &ferry, url, "ckpt", &src);
    let copied: Vec<_> = other
        .raw
        .list("packs/")
        .into_iter()
        .filter(|o| crate::raw::is_object_id(o.file_name()))
        .collect();
    assert_eq!(copied.len(), 1);
    let mut bytes = repo.raw.get(&copied[0].key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    repo.raw.put(&copied[0].key, &bytes);
    let broken = ferry.run(&["restore", url, "ckpt", s(&ctx.path("restore"))]);
    assert!(
        broken.error_line().contains(copied[0].file_name()),
        "the setup did not make the index read the damaged pack: {broken}"
    );

    let repair = ferry.json(&["repair", url]);
    assert_eq!(array(&repair, "damaged").len(), 1, "{repair}");
    checks::assert_restores(&ctx, &ferry, url, "ckpt", &src);
    checks::verify_read_data(&ferry, url);
}

/// A pack of one chunk, damaged: the push after `ferry repair` writes exactly the same pack
/// again (a pack is named by its content), which makes the object whole; the push succeeds
/// and clears the damage mark.
pub fn a_push_after_repair_may_rewrite_the_damaged_pack_whole(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let url = &repo.url;
    let src = ctx.dir("src");
    data::write_file(&src, "one.bin", &data::random_bytes(51, 100 * KIB));
    let ferry = ctx.ferry();
    let args = ["push", s(&src), url.as_str(), "--name", "ckpt"];
    ferry.json(&args);
    let packs = pack_objects(&repo.raw);
    assert_eq!(packs.len(), 1);
    let original = repo.raw.get(&packs[0].key);
    let mut bytes = original.clone();
    bytes[original.len() / 3] ^= 0x01;
    repo.raw.put(&packs[0].key, &bytes);
    let repair = ferry.json(&["repair", url]);
    assert_eq!(array(&repair, "damaged").len(), 1, "{repair}");

    let again = ferry.json(&args);
    assert_eq!(uint(&again, "packs_uploaded"), 1, "{again}");
    assert_eq!(repo.raw.get(&packs[0].key), original, "not the same pack");
    assert!(repo.raw.list("bad/").is_empty(), "the damage mark stayed");
    checks::verify_read_data(&ferry, url);
    checks::assert_restores(
        &ctx,
        &ctx.ferry_with_index(&ctx.path("index")),
        url,
        "ckpt",
        &src,
    );
}

fn pack_bytes(raw: &crate::raw::RawStore) -> (u64, usize) {
    let packs = pack_objects(raw);
    (packs.iter().map(|p| p.size).sum(), packs.len())
}
