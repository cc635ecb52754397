//! Many writers, one ref: four shard processes of one sharded push at once, one of them
//! killed and rerun, combine into one snapshot that restores byte-identical; four merging
//! writers pushing different rank files into one ref lose none of them; four shards of one
//! replication, one killed and rerun, copy disjoint chunks and move the target's ref once per
//! snapshot; daemon jobs with `merge = true` (one sidecar per rank) keep every rank's file;
//! gc prunes the pointers and markers of committed runs, and only those.

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::checks::{self, Logged};
use crate::daemon::write_config;
use crate::data::{self, KIB, MIB};
use crate::harness::{array, boolean, only_target, s, uint, Backend, Ctx};
use crate::raw::Location;
use crate::run::{Ferry, Run, Running};

per_backend!(
    sharded_push_survives_a_killed_shard,
    merging_writers_keep_every_rank,
    sharded_replicate_survives_a_killed_shard,
    merge_jobs_keep_every_rank,
    gc_prunes_committed_runs
);

const SHARDS: usize = 4;

/// The `shard` object of a sharded push's only target.
fn shard_report(push: &Value) -> &Value {
    only_target(push)
        .get("shard")
        .unwrap_or_else(|| panic!("no shard report in {push}"))
}

fn committed(report: &Value) -> Option<String> {
    report
        .get("committed")
        .and_then(Value::as_str)
        .map(str::to_string)
}

pub fn sharded_push_survives_a_killed_shard(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    ctx.ferry().json(&["init", &repo.url]);
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 70);
    for i in 0..16u64 {
        data::write_file(
            &src,
            &format!("ranks/rank-{i:02}/optim.bin"),
            &data::random_bytes(7000 + i, MIB),
        );
    }
    let run = format!("run-{}", std::process::id());
    let shard_args = |i: usize| -> Vec<String> {
        [
            "push",
            s(&src),
            &repo.url,
            "--name",
            "ckpt",
            "--shard",
            &format!("{i}/{SHARDS}"),
            "--run",
            &run,
        ]
        .map(String::from)
        .to_vec()
    };
    // Every shard is its own process with its own index, as pods of an Indexed Job are.
    let runners: Vec<_> = (0..SHARDS)
        .map(|_| ctx.ferry_with_index(&ctx.path("index")))
        .collect();
    let running: Vec<_> = runners
        .iter()
        .enumerate()
        .map(|(i, f)| {
            let args = shard_args(i);
            f.spawn(&args.iter().map(String::as_str).collect::<Vec<_>>())
        })
        .collect();
    let mut running = running.into_iter();
    let victim = running.next().expect("shard 0");
    thread::sleep(Duration::from_millis(150));
    let killed = victim.kill();
    let survivors: Vec<Value> = running.map(|r| r.wait().json()).collect();
    let victim_finished = killed.status.success();
    eprintln!("shard 0 finished before the kill: {victim_finished}");
    if !victim_finished {
        for push in &survivors {
            let r = shard_report(push);
            assert_eq!(committed(r), None, "committed without shard 0: {push}");
            let missing = array(r, "missing");
            assert!(missing.contains(&Value::from(0)), "{push}");
        }
        let pending = ctx
            .ferry()
            .json(&["commit", &repo.url, "--name", "ckpt", "--run", &run]);
        assert_eq!(
            array(&array(&pending, "targets")[0], "missing"),
            &vec![Value::from(0)],
            "{pending}"
        );
        // gc keeps the partials of a run still waiting for a shard, however old.
        ctx.ferry().json(&["gc", &repo.url, "--grace", "0s"]);
    }

    // The rerun (a fresh pod: empty index) finishes last and commits the run.
    let args = shard_args(0);
    let rerun = ctx
        .ferry_with_index(&ctx.path("index"))
        .json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let combined = committed(shard_report(&rerun)).unwrap_or_else(|| panic!("{rerun}"));
    for push in &survivors {
        if let Some(c) = committed(shard_report(push)) {
            assert_eq!(c, combined, "two combined snapshots for one run");
        }
    }

    // Committing again changes nothing; the ref holds one snapshot that restores the tree.
    let again = ctx
        .ferry()
        .json(&["commit", &repo.url, "--name", "ckpt", "--run", &run]);
    assert_eq!(
        committed(&array(&again, "targets")[0]),
        Some(combined.clone()),
        "{again}"
    );
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    let log = checks::ref_log(&fresh, &repo.url, "ckpt");
    assert_eq!(log.len(), 1, "{log:?}");
    assert_eq!(log[0].snapshot, combined);
    checks::assert_restores(&ctx, &fresh, &repo.url, "ckpt", &src);
    checks::verify_read_data(&fresh, &repo.url);
}

pub fn merging_writers_keep_every_rank(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    ctx.ferry().json(&["init", &repo.url]);
    // Each rank's sidecar sees only its own checkpoint shard.
    let ranks: Vec<_> = (0..SHARDS)
        .map(|_| (ctx.dir("rank"), ctx.ferry_with_index(&ctx.path("index"))))
        .collect();
    let all = ctx.dir("all");
    for round in 0..4u64 {
        for (r, (dir, _)) in ranks.iter().enumerate() {
            let rel = format!("step/model-{:05}-of-{SHARDS:05}.safetensors", r + 1);
            let bytes = data::random_bytes(9000 + 10 * round + r as u64, 96 * KIB);
            data::write_file(dir, &rel, &bytes);
            data::write_file(&all, &rel, &bytes);
        }
        let running: Vec<_> = ranks
            .iter()
            .map(|(dir, f)| f.spawn(&["push", s(dir), &repo.url, "--name", "ckpt", "--merge"]))
            .collect();
        for push in running {
            push.wait().json();
        }
        // After every round the ref's head holds every rank's newest file.
        checks::assert_restores(&ctx, &ctx.ferry(), &repo.url, "ckpt", &all);
    }
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    let log = checks::ref_log(&fresh, &repo.url, "ckpt");
    checks::assert_linear(&log);
    checks::verify_read_data(&fresh, &repo.url);
}

/// The `shard` object of a sharded replicate's report.
fn replica_shard(report: &Value) -> &Value {
    report
        .get("shard")
        .unwrap_or_else(|| panic!("no shard report in {report}"))
}

/// Pushes two snapshots of `ckpt` from `src` into a fresh `from`; returns the source's chunk
/// count, a copy of the first tree, and the source's log.
fn two_source_snapshots(ctx: &Ctx, from: &Location, src: &Path) -> (u64, PathBuf, Vec<Logged>) {
    data::checkpoint_tree(src, 90);
    for i in 0..12u64 {
        data::write_file(
            src,
            &format!("ranks/rank-{i:02}/optim.bin"),
            &data::random_bytes(8000 + i, MIB),
        );
    }
    let ferry = ctx.ferry();
    // Small packs (the target inherits them), so a shard lands several before it is done.
    ferry.json(&["init", &from.url, "--pack-size", "1MiB"]);
    let push1 = ferry.json(&["push", s(src), &from.url, "--name", "ckpt"]);
    let first = ctx.dir("first");
    checks::copy_tree(src, &first);
    for i in 0..4u64 {
        data::write_file(
            src,
            &format!("ranks/rank-{i:02}/optim.bin"),
            &data::random_bytes(8100 + i, MIB),
        );
    }
    let push2 = ferry.json(&["push", s(src), &from.url, "--name", "ckpt"]);
    // The source repository is fresh: its chunk set is what the two pushes added.
    let total = uint(&push1, "chunks_new") + uint(&push2, "chunks_new");
    let source_log = checks::ref_log(&ferry, &from.url, "ckpt");
    assert_eq!(source_log.len(), 2, "{source_log:?}");
    (total, first, source_log)
}

/// Waits until shard 0 has landed a pack (the target holds more pack indexes than the
/// `others` the other shards wrote) or has exited, then SIGKILLs it; returns whether it had
/// landed one, and its run.
fn kill_once_landed(mut victim: Running, to: &Location, others: u64) -> (bool, Run) {
    let mut landed = false;
    while !landed && !victim.has_exited() {
        landed = to.raw.list("index/").len() as u64 > others;
        thread::sleep(Duration::from_millis(20));
    }
    let killed = victim.kill();
    (landed, killed)
}

/// Without shard 0 the others neither commit nor touch the target's ref.
fn assert_waiting_for_shard_0(survivors: &[Value]) {
    for r in survivors {
        let sh = replica_shard(r);
        assert!(!boolean(sh, "committed"), "committed without shard 0: {r}");
        assert!(array(sh, "missing").contains(&Value::from(0)), "{r}");
        assert_eq!(uint(r, "refs_advanced"), 0, "{r}");
        assert_eq!(uint(r, "snapshots_copied"), 0, "{r}");
    }
}

/// Each shard owns a proper, non-empty share, the shares add up to the source's `total`
/// chunks, and no shard copied more than it owns.
fn assert_shards_split(finals: &[Value], total: u64) {
    let mut owned_sum = 0;
    for (i, r) in finals.iter().enumerate() {
        let sh = replica_shard(r);
        assert_eq!(uint(&sh["shard"], "index"), i as u64, "{r}");
        let owned = uint(sh, "chunks_owned");
        assert!(
            owned > 0 && owned < total,
            "shard {i} owns {owned} of {total}: {r}"
        );
        assert!(uint(r, "chunks_copied") <= owned, "{r}");
        eprintln!(
            "replicate shard {i}: owns {owned} of {total} chunks, copied {} ({} bytes uploaded)",
            uint(r, "chunks_copied"),
            uint(r, "bytes_uploaded")
        );
        owned_sum += owned;
    }
    assert_eq!(
        owned_sum, total,
        "shards' chunks do not cover the source: {finals:?}"
    );
}

/// A late shard of the committed run (`shard_args`), or an unsharded replicate, copies and
/// moves nothing.
fn assert_nothing_left_to_do(
    ctx: &Ctx,
    fresh: &Ferry,
    from: &Location,
    to: &Location,
    shard_args: &[String],
) {
    let late = ctx
        .ferry_with_index(&ctx.path("index"))
        .json(&shard_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!(uint(&late, "chunks_copied"), 0, "{late}");
    assert_eq!(uint(&late, "refs_advanced"), 0, "{late}");
    assert!(boolean(replica_shard(&late), "committed"), "{late}");
    let plain = fresh.json(&["replicate", &from.url, &to.url]);
    assert_eq!(uint(&plain, "chunks_copied"), 0, "{plain}");
    assert_eq!(uint(&plain, "snapshots_copied"), 0, "{plain}");
    assert_eq!(uint(&plain, "refs_advanced"), 0, "{plain}");
}

/// A source repository (`file://`) with two snapshots of `ckpt`, replicated into `backend` by
/// four shard processes at once; shard 0 is SIGKILLed (if still running) and rerun.
pub fn sharded_replicate_survives_a_killed_shard(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let from = ctx.location(Backend::File);
    let to = ctx.location(backend);
    let src = ctx.dir("src");
    let (total, first, source_log) = two_source_snapshots(&ctx, &from, &src);

    let run = format!("rep-{}", std::process::id());
    let shard_args = |i: usize| -> Vec<String> {
        [
            "replicate",
            &from.url,
            &to.url,
            "--shard",
            &format!("{i}/{SHARDS}"),
            "--run",
            &run,
        ]
        .map(String::from)
        .to_vec()
    };
    // All four start at once; shard 0's every request is slowed down (no failures), so it is
    // still copying when the others are done.
    let spawn = |i: usize, env: &[(&str, &str)]| {
        let args = shard_args(i);
        ctx.ferry_with_index(&ctx.path("index"))
            .spawn_env(&args.iter().map(String::as_str).collect::<Vec<_>>(), env)
    };
    let victim = spawn(0, &[("FERRY_FAULTS", "rate=0,latency_ms=400")]);
    let survivors: Vec<Value> = (1..SHARDS)
        .map(|i| spawn(i, &[]))
        .collect::<Vec<_>>()
        .into_iter()
        .map(|r| r.wait().json())
        .collect();
    // SIGKILL shard 0 midway: once it has landed a pack (the target holds more pack indexes
    // than the other shards wrote), unless it finished first.
    let others: u64 = survivors.iter().map(|r| uint(r, "packs_uploaded")).sum();
    let (landed, killed) = kill_once_landed(victim, &to, others);
    let victim_finished = killed.status.success();
    eprintln!(
        "replicate shard 0 finished before the kill: {victim_finished}; had landed a pack: {landed}"
    );
    let mut finals = survivors.clone();
    if victim_finished {
        finals.insert(0, killed.json());
    } else {
        assert_waiting_for_shard_0(&survivors);
    }

    // A shard given another shard count cannot join the run.
    let wrong = ctx.ferry().run(&[
        "replicate",
        &from.url,
        &to.url,
        "--shard",
        "1/3",
        "--run",
        &run,
    ]);
    assert!(
        wrong.error_line().contains("planned with 4 shards"),
        "{wrong}"
    );

    // The rerun (a fresh pod: empty index) finishes last and commits the run.
    let args = shard_args(0);
    let rerun = ctx
        .ferry_with_index(&ctx.path("index"))
        .json(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(boolean(replica_shard(&rerun), "committed"), "{rerun}");
    if landed && !victim_finished {
        // The rerun resumed: what the killed shard landed is not copied again.
        let owned = uint(replica_shard(&rerun), "chunks_owned");
        assert!(uint(&rerun, "chunks_copied") < owned, "{rerun}");
    }
    if !victim_finished {
        finals.insert(0, rerun.clone());
    }

    // The shards split the chunks: each owns a proper, non-empty share, the shares add up to
    // the source's chunk set, and no shard copied more than it owns.
    assert_shards_split(&finals, total);

    // Each snapshot entered the target's log exactly once, in the source's order.
    let mut advanced: u64 = survivors.iter().map(|r| uint(r, "refs_advanced")).sum();
    advanced += uint(&rerun, "refs_advanced");
    if victim_finished {
        advanced += uint(&finals[0], "refs_advanced");
    }
    assert_eq!(
        advanced, 2,
        "the target's ref moved {advanced} times for 2 snapshots"
    );
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    let target_log = checks::ref_log(&fresh, &to.url, "ckpt");
    checks::assert_linear(&target_log);
    let ids = |log: &[checks::Logged]| -> Vec<String> {
        log.iter().map(|e| e.snapshot.clone()).collect()
    };
    assert_eq!(ids(&target_log), ids(&source_log));

    // Rerunning a shard of a committed run, or replicating unsharded, finds nothing to do.
    assert_nothing_left_to_do(&ctx, &fresh, &from, &to, &shard_args(2));

    checks::assert_restores(&ctx, &fresh, &to.url, "ckpt", &src);
    checks::assert_restores(&ctx, &fresh, &to.url, "ckpt@1", &first);
    checks::verify_read_data(&fresh, &to.url);
}

/// One sidecar per rank, each `ferry sync` with its own config whose job pushes only that
/// rank's folder into the shared ref with `merge = true`: all ranks' files stay in the ref. A
/// job without `merge` then replaces the tree, which shows the option is what keeps them.
pub fn merge_jobs_keep_every_rank(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let all = ctx.dir("all");
    let sidecar = |r: usize, merge: &str| {
        let dir = ctx.dir("rank");
        let rel = format!("step/model-{:05}-of-{SHARDS:05}.safetensors", r + 1);
        let bytes = data::random_bytes(9500 + r as u64, 96 * KIB);
        data::write_file(&dir, &rel, &bytes);
        let job = format!(
            "[[jobs]]\nname = \"rank-{r}\"\nsource = \"{}\"\ntargets = [\"{}\"]\nref = \"ckpt\"\nevery = \"1h\"\nsettle = \"0s\"\n{merge}\n",
            s(&dir),
            repo.url
        );
        (dir, rel, bytes, write_config(&ctx, "", &job))
    };
    let ranks: Vec<_> = (0..SHARDS).map(|r| sidecar(r, "merge = true")).collect();
    for (_, rel, bytes, _) in &ranks {
        data::write_file(&all, rel, bytes);
    }
    // All sidecars sync at once, each a process with its own index.
    let running: Vec<_> = ranks
        .iter()
        .map(|(_, _, _, config)| {
            ctx.ferry_with_index(&ctx.path("index"))
                .spawn(&["sync", "--config", s(config)])
        })
        .collect();
    for r in running {
        let report = r.wait().json();
        assert_eq!(report["ok"], true, "{report}");
    }
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    checks::assert_restores(&ctx, &fresh, &repo.url, "ckpt", &all);
    let log = checks::ref_log(&fresh, &repo.url, "ckpt");
    assert_eq!(log.len(), SHARDS, "one snapshot per rank: {log:?}");
    checks::assert_linear(&log);

    // Without merge, a job's push replaces the ref's tree with its own folder.
    let (dir, _, _, config) = sidecar(SHARDS, "");
    let report = ctx.ferry().json(&["sync", "--config", s(&config)]);
    assert_eq!(report["ok"], true, "{report}");
    checks::assert_restores(&ctx, &fresh, &repo.url, "ckpt", &dir);
}

fn keys(raw: &crate::raw::RawStore, sub: &str) -> Vec<String> {
    raw.list(sub).into_iter().map(|o| o.key).collect()
}

/// A committed sharded push, an uncommitted one and a committed sharded replication: gc keeps
/// their run objects while the markers are younger than the grace period, then deletes those
/// of the committed runs only; the uncommitted run still completes and everything restores.
pub fn gc_prunes_committed_runs(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let copy = ctx.location(backend);
    let ferry = ctx.ferry();
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 120);
    let shard = |run: &str, i: usize| {
        ferry.json(&[
            "push",
            s(&src),
            &repo.url,
            "--name",
            "ckpt",
            "--shard",
            &format!("{i}/2"),
            "--run",
            run,
        ])
    };
    shard("done", 0);
    assert!(committed(shard_report(&shard("done", 1))).is_some());
    for i in 0..2 {
        let r = ferry.json(&[
            "replicate",
            &repo.url,
            &copy.url,
            "--shard",
            &format!("{i}/2"),
            "--run",
            "copied",
        ]);
        assert_eq!(boolean(replica_shard(&r), "committed"), i == 1, "{r}");
    }
    let other = ctx.dir("other");
    data::checkpoint_tree(&other, 121);
    let open = ferry.json(&[
        "push",
        s(&other),
        &repo.url,
        "--name",
        "other",
        "--shard",
        "0/2",
        "--run",
        "open",
    ]);
    assert_eq!(committed(shard_report(&open)), None, "{open}");
    let pushed_runs = [
        "partials/ckpt/done/0-of-2",
        "partials/ckpt/done/1-of-2",
        "partials/ckpt/done/commit",
        "partials/other/open/0-of-2",
    ];
    assert_eq!(keys(&repo.raw, "partials/"), pushed_runs);
    let replica_run = [
        "replicas/copied/0-of-2",
        "replicas/copied/1-of-2",
        "replicas/copied/commit",
        "replicas/copied/plan",
    ];
    assert_eq!(keys(&copy.raw, "replicas/"), replica_run);

    // Markers younger than the grace period: nothing is pruned.
    let young = ferry.json(&["gc", &repo.url, "--grace", "1h"]);
    assert_eq!(uint(&young, "runs_pruned"), 0, "{young}");
    assert_eq!(keys(&repo.raw, "partials/"), pushed_runs);

    // Committed runs go (a dry run only counts them); the open run stays.
    let dry = ferry.json(&["gc", &repo.url, "--grace", "0s", "--dry-run"]);
    assert_eq!(uint(&dry, "runs_pruned"), 1, "{dry}");
    assert_eq!(uint(&dry, "run_objects_deleted"), 3, "{dry}");
    assert_eq!(keys(&repo.raw, "partials/"), pushed_runs);
    let gc = ferry.json(&["gc", &repo.url, "--grace", "0s"]);
    assert_eq!(uint(&gc, "runs_pruned"), 1, "{gc}");
    assert_eq!(uint(&gc, "run_objects_deleted"), 3, "{gc}");
    assert_eq!(keys(&repo.raw, "partials/"), ["partials/other/open/0-of-2"]);
    let gc = ferry.json(&["gc", &copy.url, "--grace", "0s"]);
    assert_eq!(uint(&gc, "runs_pruned"), 1, "{gc}");
    assert_eq!(uint(&gc, "run_objects_deleted"), 4, "{gc}");
    assert!(keys(&copy.raw, "replicas/").is_empty());

    // The open run's partial survived gc and completes; every ref still restores.
    let last = ferry.json(&[
        "push",
        s(&other),
        &repo.url,
        "--name",
        "other",
        "--shard",
        "1/2",
        "--run",
        "open",
    ]);
    assert!(committed(shard_report(&last)).is_some(), "{last}");
    let fresh = ctx.ferry_with_index(&ctx.path("index"));
    checks::assert_restores(&ctx, &fresh, &repo.url, "ckpt", &src);
    checks::assert_restores(&ctx, &fresh, &repo.url, "other", &other);
    checks::assert_restores(&ctx, &fresh, &copy.url, "ckpt", &src);
    checks::verify_read_data(&fresh, &repo.url);
    checks::verify_read_data(&fresh, &copy.url);
}
