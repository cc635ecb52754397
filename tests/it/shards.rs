//! Many writers, one ref: four shard processes of one sharded push at once, one of them
//! killed and rerun, combine into one snapshot that restores byte-identical; four merging
//! writers pushing different rank files into one ref lose none of them.

use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::checks;
use crate::data::{self, KIB, MIB};
use crate::harness::{array, only_target, s, Backend, Ctx};

per_backend!(
    sharded_push_survives_a_killed_shard,
    merging_writers_keep_every_rank
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
