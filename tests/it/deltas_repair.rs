//! Element deltas (issue 11) meet repair and sharding: `ferry repair` marks the pack of a
//! delta frame whose base is damaged (not only the damaged pack), so the next push stores
//! those chunks anew; a sharded push writes deltas against the ref's previous snapshot, each
//! shard for its own files; a sharded replicate carries the bases a delta frame needs.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use serde_json::Value;

use crate::checks;
use crate::data;
use crate::deltas::{
    delta_frames, newest_step_source, pack_table, weights, weights_from, write_step,
};
use crate::harness::{array, boolean, only_target, pushed_snapshot, s, string, uint, Backend, Ctx};
use crate::raw::pack_objects;

per_backend!(
    repair_marks_deltas_on_a_damaged_base,
    repair_follows_bases_into_marked_packs,
    sharded_push_writes_deltas,
    sharded_replicate_carries_bases,
);

/// The file name (pack id) of each pack object in `raw`.
fn pack_ids(raw: &crate::raw::RawStore) -> HashSet<String> {
    pack_objects(raw)
        .iter()
        .map(|p| p.file_name().to_string())
        .collect()
}

/// Steps 1 and 2 in `--deltas 4`; a flipped byte in step 1's biggest frame (a base of step
/// 2's deltas). `repair --dry-run` reports and marks nothing; `repair` marks step 1's pack
/// (its own bytes) and step 2's delta pack (its deltas cannot be rebuilt), naming a base.
/// Pushing step 2's folder again then stores its chunks anew: it restores byte-identical;
/// once step 1's folder is pushed again too, `verify --read-data` is ok, and gc deletes the
/// marked packs.
pub fn repair_marks_deltas_on_a_damaged_base(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let url = repo.url.as_str();
    let ferry = ctx.ferry();
    ferry.json(&["init", url, "--deltas", "4"]);
    let src1 = ctx.dir("step-1");
    write_step(&src1, 1);
    ferry.json(&["push", s(&src1), url, "--name", "ckpt"]);
    let step1_packs = pack_objects(&repo.raw);
    assert_eq!(step1_packs.len(), 1, "step 1 should fit one pack");
    let step1 = step1_packs[0].clone();
    let src2 = ctx.dir("step-2");
    write_step(&src2, 2);
    let push = ferry.json(&["push", s(&src2), url, "--name", "ckpt"]);
    assert!(uint(&push, "chunks_delta") >= 3, "{push}");
    let delta_packs: Vec<String> = pack_objects(&repo.raw)
        .iter()
        .filter(|p| p.key != step1.key && !delta_frames(&repo.raw.get(&p.key)).is_empty())
        .map(|p| p.file_name().to_string())
        .collect();
    assert!(!delta_packs.is_empty(), "step 2 stored no delta frame");

    let mut bytes = repo.raw.get(&step1.key);
    let table = pack_table(&bytes);
    let step1_chunks: Vec<String> = table.iter().map(|e| e.0.clone()).collect();
    let (base, off, len) = table.into_iter().max_by_key(|e| e.2).unwrap();
    bytes[off + len / 2] ^= 0x55;
    repo.raw.put(&step1.key, &bytes);

    let dry = ferry.json(&["repair", url, "--dry-run"]);
    assert!(
        repo.raw.list("bad/").is_empty(),
        "a dry run marked a pack: {dry}"
    );
    let report = ferry.json(&["repair", url]);
    assert!(uint(&report, "deltas_checked") >= 3, "{report}");
    for r in [&dry, &report] {
        let damaged = array(r, "damaged");
        let marked: HashSet<String> = damaged
            .iter()
            .map(|d| string(d, "pack").to_string())
            .collect();
        let want: HashSet<String> = delta_packs
            .iter()
            .cloned()
            .chain([step1.file_name().to_string()])
            .collect();
        assert_eq!(marked, want, "{r}");
        let step1_problem = damaged
            .iter()
            .find(|d| string(d, "pack") == step1.file_name())
            .map(|d| string(d, "problem"))
            .unwrap_or_default();
        assert!(step1_problem.contains(&base), "{r}");
        // Each delta pack's problem names one of step 1's chunks as the base it lacks.
        for d in damaged
            .iter()
            .filter(|d| string(d, "pack") != step1.file_name())
        {
            let problem = string(d, "problem");
            assert!(
                problem.contains("delta against base chunk")
                    && step1_chunks.iter().any(|c| problem.contains(c.as_str())),
                "{r}"
            );
        }
    }
    assert_eq!(repo.raw.list("bad/").len(), delta_packs.len() + 1);

    // Step 2's folder again: its chunks count as absent, so they are stored anew.
    let again = ferry.json(&["push", s(&src2), url, "--name", "ckpt"]);
    assert!(uint(&again, "chunks_new") >= 3, "{again}");
    checks::assert_restores(&ctx, &ferry, url, "ckpt", &src2);
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    checks::assert_restores(&ctx, &fresh, url, "ckpt", &src2);
    // Step 1's snapshot still names chunks only the damaged pack held: push its folder too.
    ferry.json(&["push", s(&src1), url, "--name", "ckpt"]);
    checks::verify_read_data(&ferry, url);
    checks::assert_restores(&ctx, &fresh, url, "ckpt", &src1);
    // gc deletes the marked packs (their chunks have good copies now).
    for _ in 0..2 {
        ferry.json(&["gc", url, "--grace", "0s"]);
    }
    let left = pack_ids(&repo.raw);
    assert!(
        !left.contains(step1.file_name()) && delta_packs.iter().all(|p| !left.contains(p)),
        "marked packs left after gc: {left:?}"
    );
    checks::verify_read_data(&ferry, url);
    checks::assert_restores(&ctx, &fresh, url, "ckpt", &src1);
}

/// Pushes `files` (name, bytes) as a folder into ref `ckpt` (laid over its head with
/// `merge`); returns the folder, the push report and the one pack the push wrote.
fn push_files(
    ctx: &Ctx,
    repo: &crate::raw::Location,
    files: &[(&str, Vec<u8>)],
    merge: bool,
) -> (std::path::PathBuf, Value, String) {
    let src = ctx.dir("src");
    for (name, bytes) in files {
        data::write_file(&src, name, bytes);
    }
    let mut args = vec!["push", s(&src), &repo.url, "--name", "ckpt"];
    if merge {
        args.push("--merge");
    }
    let before = pack_ids(&repo.raw);
    let push = ctx.ferry().json(&args);
    let new: Vec<String> = pack_ids(&repo.raw).difference(&before).cloned().collect();
    assert_eq!(new.len(), 1, "the push should write one pack: {push}");
    (src, push, new[0].clone())
}

/// Two files, `x` and `y`, whose step 1s sit in separate packs (two pushes into ref `ckpt`,
/// the second with `--merge`); step 2 of both in one pack P2 (deltas on both step 1s); then
/// step 3 of `y` only (its deltas chain on P2's deltas of `y`). A flipped byte in `x`'s step
/// 1: P2's deltas of `x` do not rebuild, so repair marks P2; `y`'s step 3 still decodes (its
/// chain never touches the damage) but its bases now count as absent, held only by P2: repair
/// marks its pack too, naming P2, and leaves `y`'s step 1 alone. Pushing the last folder
/// again then restores it byte-identical.
pub fn repair_follows_bases_into_marked_packs(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let url = repo.url.as_str();
    ctx.ferry().json(&["init", url, "--deltas", "4"]);
    let (x, y) = ("x.safetensors", "y.safetensors");
    let (_, _, p1x) = push_files(&ctx, &repo, &[(x, weights_from(1, 1000))], false);
    let (_, _, p1y) = push_files(&ctx, &repo, &[(y, weights_from(1, 2000))], true);
    let step2 = [(x, weights_from(2, 1000)), (y, weights_from(2, 2000))];
    let (_, push2, p2) = push_files(&ctx, &repo, &step2, false);
    assert!(uint(&push2, "chunks_delta") >= 6, "{push2}");
    let step3 = [(x, weights_from(2, 1000)), (y, weights_from(3, 2000))];
    let (src3, push3, p3) = push_files(&ctx, &repo, &step3, false);
    assert!(uint(&push3, "chunks_delta") >= 3, "{push3}");

    let key = pack_objects(&repo.raw)
        .into_iter()
        .find(|p| p.file_name() == p1x)
        .expect("x's step 1 pack")
        .key;
    let mut bytes = repo.raw.get(&key);
    let (_, off, len) = pack_table(&bytes).into_iter().max_by_key(|e| e.2).unwrap();
    bytes[off + len / 2] ^= 0x55;
    repo.raw.put(&key, &bytes);

    let report = ctx.ferry().json(&["repair", url]);
    let damaged = array(&report, "damaged");
    let marked: HashSet<String> = damaged
        .iter()
        .map(|d| string(d, "pack").to_string())
        .collect();
    let want: HashSet<String> = [&p1x, &p2, &p3].into_iter().cloned().collect();
    assert_eq!(marked, want, "{p1y} must stay: {report}");
    let p3_problem = damaged
        .iter()
        .find(|d| string(d, "pack") == p3)
        .map(|d| string(d, "problem"))
        .expect("step 3's pack");
    assert!(
        p3_problem.contains("delta against base chunk")
            && p3_problem.contains(&format!("held only by pack {p2}")),
        "{report}"
    );
    let again = ctx.ferry().json(&["push", s(&src3), url, "--name", "ckpt"]);
    assert!(uint(&again, "chunks_new") >= 3, "{again}");
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    checks::assert_restores(&ctx, &fresh, url, "ckpt", &src3);
}

/// Four rank files, each with its own weights: step `step` of every one under `dir`.
fn write_ranks(dir: &Path, step: u32) {
    for rank in 0..4u64 {
        let bytes = weights_from(step, 1000 + 10 * rank);
        data::write_file(dir, &format!("rank-{rank}/model.safetensors"), &bytes);
    }
}

/// The `shard` object of a sharded push's only target.
fn shard_report(push: &Value) -> &Value {
    only_target(push)
        .get("shard")
        .unwrap_or_else(|| panic!("no shard report in {push}"))
}

/// Two steps of four rank files pushed by two shards each (every shard its own process with
/// its own index) into `--deltas 2`: each shard finds its files' counterparts in the ref's
/// previous snapshot (the combined one of step 1), so step 2's shards both write deltas; both
/// steps restore byte-identical and `verify --read-data` is ok.
pub fn sharded_push_writes_deltas(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let url = repo.url.as_str();
    ctx.ferry().json(&["init", url, "--deltas", "2"]);
    let runners: Vec<_> = (0..2)
        .map(|i| ctx.ferry_with_index(&ctx.path(&format!("index-{i}"))))
        .collect();
    let mut srcs = Vec::new();
    let mut snapshots = Vec::new();
    for step in 1..=2u32 {
        let src = ctx.dir(&format!("step-{step}"));
        write_ranks(&src, step);
        let run = format!("step-{step}-{}", std::process::id());
        let pushes: Vec<Value> = runners
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let shard = format!("{i}/2");
                f.json(&[
                    "push",
                    s(&src),
                    url,
                    "--name",
                    "ckpt",
                    "--shard",
                    &shard,
                    "--run",
                    &run,
                ])
            })
            .collect();
        for p in &pushes {
            // The path split gives each shard some of the four files.
            assert!(uint(p, "chunks_new") > 0, "a shard pushed nothing: {p}");
            let deltas = uint(p, "chunks_delta");
            assert!(
                if step == 1 { deltas == 0 } else { deltas >= 3 },
                "step {step}: {p}"
            );
        }
        let last = shard_report(&pushes[1]);
        let combined = last
            .get("committed")
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("the last shard did not commit: {last}"));
        snapshots.push(combined.to_string());
        srcs.push(src);
    }
    let ferry = ctx.ferry();
    for (src, id) in srcs.iter().zip(&snapshots) {
        checks::assert_restores(&ctx, &ferry, url, &format!("ckpt@{id}"), src);
    }
    checks::verify_read_data(&ferry, url);
}

/// Three steps in a `--deltas 4` source, the older two forgotten; two shards replicate it
/// into an empty location (which replicate creates, version 2). Each delta frame a shard
/// copies brings the bases the target lacks, though no planned snapshot names them and
/// another shard may own them: the target holds delta frames, restores step 3 byte-identical
/// and verifies.
pub fn sharded_replicate_carries_bases(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (from, to, steps) = newest_step_source(&ctx, backend);
    let ferry = ctx.ferry();
    assert!(uint(&steps[2].1, "chunks_delta") >= 3, "{}", steps[2].1);
    let run = format!("rep-{}", std::process::id());
    let reports: Vec<Value> = (0..2)
        .map(|i| {
            ctx.ferry_with_index(&ctx.path(&format!("index-{i}")))
                .json(&[
                    "replicate",
                    &from.url,
                    &to.url,
                    "--shard",
                    &format!("{i}/2"),
                    "--run",
                    &run,
                ])
        })
        .collect();
    let last = reports[1].get("shard").expect("a shard report");
    assert!(boolean(last, "committed"), "{}", reports[1]);
    let config = String::from_utf8(to.raw.get("config")).expect("utf-8 config");
    assert!(config.contains("\"version\": 2"), "{config}");
    let deltas: usize = pack_objects(&to.raw)
        .iter()
        .map(|p| delta_frames(&to.raw.get(&p.key)).len())
        .sum();
    assert!(deltas >= 3, "the target holds {deltas} delta frames");
    let dest = ctx.path("restore");
    ferry.json(&["restore", &to.url, "ckpt", s(&dest)]);
    let got = fs::read(dest.join("model.safetensors")).expect("restored file");
    assert!(
        got == weights(3),
        "replicated step 3 restored different bytes"
    );
    assert_eq!(pushed_snapshot(&steps[2].1), latest(&ctx, &to.url));
    checks::verify_read_data(&ferry, &to.url);
}

/// The snapshot id ref `ckpt` of `url` names.
fn latest(ctx: &Ctx, url: &str) -> String {
    let log = checks::ref_log(&ctx.ferry(), url, "ckpt");
    log.last().expect("a ref entry").snapshot.clone()
}
