//! Injected faults (`FERRY_FAULTS`): with 10 % of store requests failing (HTTP 503, timeouts,
//! resets, bodies cut short), push, replicate and restore each either succeed or fail with one
//! `error:` line naming an object, and rerunning them completes the job. Afterwards, without
//! faults, both repositories verify with `--read-data`, hold no chunk twice, and restore
//! byte-identical.

use crate::checks::{self, PackIndexes};
use crate::data::{self, KIB, MIB};
use crate::harness::{pushed_snapshot, s, string, uint, Backend, Ctx};
use crate::run::{Ferry, Run};

per_backend!(faults_push_replicate_restore);

/// Attempts per command before the test gives up. At 10 % a command of ~20 requests
/// succeeds about one time in eight, and each failure leaves its finished packs behind.
const MAX_ATTEMPTS: u64 = 80;

/// What the reruns went through.
#[derive(Default)]
struct Tally {
    attempts: u64,
    failures: u64,
    faults: u64,
    /// The last seed used; each attempt takes the next one.
    seed: u64,
}

/// Lines of the `fault injected` warning the fault store logs once per fault.
fn faults_in(run: &Run) -> u64 {
    run.stderr
        .lines()
        .filter(|l| l.contains("fault injected"))
        .count() as u64
}

/// A failed attempt exits 1; its stderr is log lines (timestamped tracing events) and then
/// exactly one `error:` line that says a fault was injected and names an object under one of
/// `locations`.
fn check_failed_attempt(run: &Run, locations: &[&str]) {
    assert_eq!(
        run.status.code(),
        Some(1),
        "a failed attempt must exit 1: {run}"
    );
    let lines: Vec<&str> = run
        .stderr
        .lines()
        .filter(|l| !l.trim().is_empty())
        .collect();
    let (last, logs) = lines.split_last().expect("a failed attempt says why");
    assert!(
        last.starts_with("error: "),
        "stderr does not end in an error line: {run}"
    );
    for line in logs {
        assert!(
            line.starts_with(|c: char| c.is_ascii_digit()) && !line.contains("error:"),
            "unexpected stderr line {line:?} (not a log event): {run}"
        );
    }
    assert!(
        last.contains("injected fault"),
        "the error hides the fault that caused it: {run}"
    );
    assert!(
        locations.iter().any(|l| last.contains(l)),
        "the error names nothing under {locations:?}: {run}"
    );
    assert!(faults_in(run) >= 1, "failed without a fault: {run}");
}

/// Runs `args` under injected faults, a new seed per attempt, until it succeeds.
fn until_success(ferry: &Ferry, args: &[&str], locations: &[&str], tally: &mut Tally) -> Run {
    for _ in 0..MAX_ATTEMPTS {
        tally.seed += 1;
        let spec = format!("rate=0.1,seed={},latency_ms=3", tally.seed);
        let run = ferry.run_env(args, &[("FERRY_FAULTS", &spec)]);
        tally.attempts += 1;
        tally.faults += faults_in(&run);
        if run.status.success() {
            return run;
        }
        check_failed_attempt(&run, locations);
        tally.failures += 1;
    }
    panic!(
        "`ferry {}` did not succeed in {MAX_ATTEMPTS} attempts under injected faults",
        args.join(" ")
    );
}

pub fn faults_push_replicate_restore(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let a = ctx.location(backend);
    let b = ctx.location(backend);
    let ferry = ctx.ferry();
    // Small packs and chunks: many requests, so many chances to fail.
    ferry.json(&[
        "init",
        &a.url,
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "256KiB",
    ]);
    let src = ctx.dir("src");
    data::random_tree(&src, 3100, 3, MIB);
    data::write_file(&src, "logs/train.log", &data::text_bytes(3200, 300 * KIB));
    let first_tree = ctx.path("expected");
    checks::copy_tree(&src, &first_tree);
    let mut tally = Tally {
        seed: 1000 * (backend as u64 + 1),
        ..Tally::default()
    };

    let push = until_success(
        &ferry,
        &["push", s(&src), &a.url, "--name", "ckpt"],
        &[&a.url],
        &mut tally,
    );
    let first = pushed_snapshot(&push.json());
    data::write_file(&src, "shard-01.bin", &data::random_bytes(3300, MIB));
    data::write_file(&src, "logs/train.log", &data::text_bytes(3301, 400 * KIB));
    let push = until_success(
        &ferry,
        &["push", s(&src), &a.url, "--name", "ckpt"],
        &[&a.url],
        &mut tally,
    );
    let second = pushed_snapshot(&push.json());

    let replicate = until_success(
        &ferry,
        &["replicate", &a.url, &b.url],
        &[&a.url, &b.url],
        &mut tally,
    )
    .json();
    // The last attempt copies what earlier ones had not: never more than both snapshots.
    assert!(uint(&replicate, "snapshots_copied") <= 2, "{replicate}");

    // Restores into the same folders on every attempt: a rerun leaves no debris behind.
    let dest_first = ctx.path("restore");
    let dest_second = ctx.path("restore");
    for (spec, dest, snapshot) in [
        (format!("ckpt@{first}"), &dest_first, &first),
        ("ckpt".to_string(), &dest_second, &second),
    ] {
        let restore = until_success(
            &ferry,
            &["restore", &b.url, &spec, s(dest)],
            &[&b.url],
            &mut tally,
        )
        .json();
        assert_eq!(string(&restore, "snapshot"), snapshot, "{restore}");
    }
    data::assert_same_tree(&first_tree, &dest_first);
    data::assert_same_tree(&src, &dest_second);

    // Without faults: both repositories are whole, and a fresh index agrees.
    let clean = ctx.ferry_with_index(&ctx.path("index"));
    for repo in [&a, &b] {
        checks::verify_read_data(&clean, &repo.url);
        let log = checks::ref_log(&clean, &repo.url, "ckpt");
        checks::assert_linear(&log);
        let ids: Vec<&str> = log.iter().map(|e| e.snapshot.as_str()).collect();
        assert_eq!(ids, [first.as_str(), second.as_str()], "{}", repo.url);
        let mut indexes = PackIndexes::default();
        indexes.refresh(&repo.raw);
        indexes.assert_no_chunk_twice();
        checks::assert_restores(
            &ctx,
            &clean,
            &repo.url,
            &format!("ckpt@{first}"),
            &first_tree,
        );
    }
    checks::assert_restores(&ctx, &clean, &b.url, "ckpt", &src);

    eprintln!(
        "faults ({backend:?}): {} faults injected over {} attempts; {} failed attempts survived",
        tally.faults, tally.attempts, tally.failures
    );
    assert!(
        tally.failures >= 3,
        "too few failures to prove anything ({} of {} attempts)",
        tally.failures,
        tally.attempts
    );
}
