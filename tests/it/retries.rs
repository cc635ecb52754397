//! The daemon's retries follow what an error is, not its text (issue 13): a mirror job whose
//! first attempt meets an HTTP 503 (injected: `FERRY_FAULTS=fail_first=1`) is retried and
//! completes, and a push whose chunks sit in a pack a concurrent gc marked (`gc/<pack id>`,
//! "run again") is retried, uploads those chunks anew and restores byte-identical. Both
//! would end in a failed run after one attempt if the error were classified permanent.

use std::collections::BTreeSet;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::daemon::write_config;
use crate::data::{self, MIB};
use crate::harness::{array, s, string, uint, Backend, Ctx};
use crate::raw::{indexed_pack_ids, Location};
use crate::run::Run;

per_backend!(
    mirror_job_retries_a_transient_503,
    push_job_retries_the_gc_mark_race,
);

/// The one run of a `ferry sync` that succeeded, after the attempts it took.
fn one_succeeded_run(sync: &Run) -> Value {
    assert!(sync.status.success(), "sync failed: {sync}");
    let report = sync.stdout_json();
    assert_eq!(report["ok"], true, "{sync}");
    let runs = array(&report, "runs");
    assert_eq!(runs.len(), 1, "one job, one target: {sync}");
    let run = runs[0].clone();
    assert_eq!(string(&run, "state"), "succeeded", "{sync}");
    run
}

/// True when the daemon logged a failed attempt, classified transient, whose error says
/// `what`.
fn logged_transient_failure(sync: &Run, what: &str) -> bool {
    sync.stderr.lines().any(|l| {
        l.contains("run failed")
            && l.to_ascii_lowercase().contains("kind=transient")
            && l.contains(what)
    })
}

fn assert_object(dest: &Location, key: &str, expected: &[u8]) {
    let got = dest.raw.get(key);
    assert!(
        got == expected,
        "{key}: the destination holds {} bytes that differ from the source's {}",
        got.len(),
        expected.len()
    );
}

/// A mirror job run by `ferry sync` whose first store request fails with an injected HTTP
/// 503: the runner retries (transient) and the second attempt writes every file.
pub fn mirror_job_retries_a_transient_503(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let dest = ctx.location(backend);
    let src = ctx.dir("src");
    let model = data::random_bytes(131, 3 * MIB);
    data::write_file(&src, "model.bin", &model);
    data::write_file(&src, "tokenizer/vocab.txt", b"hello world\n");
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"serve\"\nkind = \"mirror\"\nsource = \"{}\"\ntargets = [\"{}\"]\nevery = \"1h\"\nsettle = \"0s\"\n",
            s(&src),
            dest.url
        ),
    );
    let ferry = ctx.ferry();
    let sync = ferry
        .spawn_env(
            &["sync", "--config", s(&config)],
            &[("FERRY_FAULTS", "rate=0,fail_first=1")],
        )
        .wait();
    let run = one_succeeded_run(&sync);
    assert_eq!(
        uint(&run, "attempts"),
        2,
        "the injected 503 failed the first attempt and the retry succeeded: {sync}"
    );
    assert!(
        logged_transient_failure(&sync, "HTTP 503"),
        "no transient failure naming the 503 was logged: {sync}"
    );
    assert_object(&dest, "model.bin", &model);
    assert_object(&dest, "tokenizer/vocab.txt", b"hello world\n");
    let verify = ferry.json(&["verify", "--mirror", s(&src), &dest.url, "--read-data"]);
    assert_eq!(uint(&verify, "matched"), 2, "{verify}");
}

/// Polls until `f` holds; fails naming `what` after a minute.
fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{what}: not within a minute"
        );
        thread::sleep(Duration::from_millis(5));
    }
}

/// A push job run by `ferry sync` reuses the chunks of `shared.bin` from packs an earlier,
/// forgotten push left. While it uploads the rest, a gc marks those packs (the test writes
/// the `gc/<pack id>` marks gc writes, at that moment): the push refuses to write its
/// snapshot ("run again"), the runner retries, the retry uploads `shared.bin`'s chunks anew,
/// and once gc deleted the marked packs the snapshot still restores byte-identical.
pub fn push_job_retries_the_gc_mark_race(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&[
        "init",
        &repo.url,
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "256KiB",
    ]);
    let shared = data::random_bytes(141, 2 * MIB);
    let old = ctx.dir("old");
    data::write_file(&old, "shared.bin", &shared);
    ferry.json(&["push", s(&old), &repo.url, "--name", "old"]);
    ferry.json(&["forget", &repo.url, "old", "--delete-ref"]);
    let doomed = indexed_pack_ids(&repo.raw);
    assert!(!doomed.is_empty(), "the first push left no pack");

    let src = ctx.dir("src");
    data::write_file(&src, "shared.bin", &shared);
    data::write_file(&src, "big.bin", &data::random_bytes(142, 16 * MIB));
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"train\"\nsource = \"{}\"\ntargets = [\"{}\"]\nevery = \"1h\"\nsettle = \"0s\"\n",
            s(&src),
            repo.url
        ),
    );
    // Slow requests (up to 400 ms each) keep the push uploading `big.bin` well after it
    // synced and found `shared.bin`'s chunks in the doomed packs.
    let running = ferry.spawn_env(
        &["sync", "--config", s(&config)],
        &[("FERRY_FAULTS", "rate=0,latency_ms=400")],
    );
    wait_until("the push's first pack index", || {
        indexed_pack_ids(&repo.raw).len() > doomed.len()
    });
    for id in &doomed {
        repo.raw.put(&format!("gc/{id}"), b"{}");
    }
    let sync = running.wait();
    let run = one_succeeded_run(&sync);
    assert_eq!(
        uint(&run, "attempts"),
        2,
        "the mark failed the first attempt and the retry succeeded (1 attempt: the marks landed after the snapshot, the push outran the test): {sync}"
    );
    assert!(
        logged_transient_failure(&sync, "a concurrent gc marked pack"),
        "no transient failure naming the gc mark was logged: {sync}"
    );

    // The marked packs go; the snapshot needs none of them.
    let gc = ferry.json(&["gc", &repo.url, "--grace", "0s"]);
    assert_eq!(uint(&gc, "packs_deleted"), doomed.len() as u64, "{gc}");
    let left: BTreeSet<String> = indexed_pack_ids(&repo.raw);
    assert!(left.is_disjoint(&doomed), "{gc}");
    let fresh = ctx.ferry_with_index(&ctx.dir("fresh-index"));
    let restored = ctx.path("restored");
    fresh.json(&["restore", &repo.url, "train", s(&restored)]);
    data::assert_same_tree(&src, &restored);
    crate::checks::verify_read_data(&fresh, &repo.url);
}
