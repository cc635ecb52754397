//! Delta savings in the daemon (issue 11): a push job into a repository created with
//! `--deltas` records, per run, the chunks stored as deltas and the bytes they saved; the
//! job's target totals sum them, `/metrics` counts them in `ferry_delta_saved_bytes_total`,
//! and `ferry status` says how much deltas saved; a replicate job's run counts the delta
//! frames it copied as stored and estimates what they saved.

use std::time::Duration;

use serde_json::Value;

use crate::daemon::{write_config, Daemon};
use crate::data;
use crate::deltas::write_step;
use crate::harness::{array, s, string, uint, Backend, Ctx};
use crate::http;

per_backend!(delta_savings_reach_runs_totals_and_metrics);

/// The value of `ferry_delta_saved_bytes_total` for `job` and `target`, if it is exported.
fn saved_metric(metrics: &str, job: &str, target: &str) -> Option<u64> {
    let (job, target) = (format!("job=\"{job}\""), format!("target=\"{target}\""));
    metrics
        .lines()
        .filter(|l| l.starts_with("ferry_delta_saved_bytes_total{"))
        .find(|l| l.contains(&job) && l.contains(&target))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .map(|v| v as u64)
}

/// The succeeded runs of job `ckpt`, oldest first, once there are `n`.
fn wait_runs(d: &Daemon, n: usize) -> Vec<Value> {
    d.wait_for(
        &format!("{n} succeeded runs of job ckpt"),
        Duration::from_secs(120),
        |d| {
            let mut runs = d.runs("job=ckpt&state=succeeded");
            runs.reverse();
            (runs.len() == n).then_some(runs)
        },
    )
}

/// Two training steps pushed by a watching daemon into a `--deltas 2` repository: the first
/// stores whole chunks, the second deltas against it; the run records, the target's totals,
/// `/metrics` and `ferry status` all show what the deltas saved, and the numbers agree.
pub fn delta_savings_reach_runs_totals_and_metrics(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["init", &repo.url, "--deltas", "2"]);
    let watched = ctx.dir("watched");
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"ckpt\"\nsource = \"{}\"\nlayout = \"steps\"\nref = \"model\"\ntargets = [\"{}\"]\nwatch = true\nsettle = \"300ms\"\nmarker = \"_SUCCESS\"\n",
            s(&watched),
            repo.url
        ),
    );
    let d = Daemon::start(&ferry, &config, &[], &[]);
    let mut size = 0;
    for step in 1..=2u32 {
        let dir = watched.join(format!("step-{step}"));
        size = write_step(&dir, step);
        data::write_file(&dir, "_SUCCESS", b"");
        wait_runs(&d, step as usize);
    }
    let runs = wait_runs(&d, 2);
    let (first, second) = (&runs[0], &runs[1]);
    assert_eq!(string(first, "item"), "step-1", "{runs:?}");
    assert_eq!(
        (
            uint(first, "chunks_delta"),
            uint(first, "bytes_saved_by_deltas")
        ),
        (0, 0),
        "the first step has no previous snapshot to delta against: {first}"
    );
    let (chunks, saved) = (
        uint(second, "chunks_delta"),
        uint(second, "bytes_saved_by_deltas"),
    );
    assert!(
        chunks > 0 && saved > 0,
        "the second step stored deltas: {second}"
    );
    // Deltas of a 1e-3 nudge and of 1 % flipped bits save a good part of the file, never
    // more than all of it.
    assert!(
        saved > size / 10 && saved < size,
        "saved {saved} of a {size}-byte file: {second}"
    );
    assert!(
        uint(second, "bytes_sent") + saved > size / 2,
        "sent plus saved is about a full push: {second}"
    );

    let job = d.job("ckpt");
    let target = &array(&job, "targets")[0];
    let sum = |field: &str| runs.iter().map(|r| uint(r, field)).sum::<u64>();
    assert_eq!(
        (
            uint(target, "chunks_delta"),
            uint(target, "bytes_saved_by_deltas")
        ),
        (sum("chunks_delta"), sum("bytes_saved_by_deltas")),
        "the target's totals are the runs' sums: {job}"
    );

    let metrics = http::get(&d.addr, "/metrics").body;
    assert_eq!(
        saved_metric(&metrics, "ckpt", string(target, "target")),
        Some(saved),
        "ferry_delta_saved_bytes_total counts the runs' savings:\n{metrics}"
    );
    assert!(
        metrics.contains("# HELP ferry_delta_saved_bytes_total"),
        "{metrics}"
    );

    let status = ferry.run_bare(&["status", "--url", &format!("http://{}", d.addr)], &[]);
    assert!(
        status.status.success() && status.stdout.contains("deltas saved"),
        "ferry status mentions the savings: {status}"
    );
    let (stopped, _) = d.stop();
    assert!(stopped.status.success(), "{stopped}");

    replicate_job_counts_savings(&ctx, backend, &repo.url, chunks, saved);
}

/// A replicate job copies the delta frames of `url` as they are stored, and its run says what
/// they saved: estimated against the full frames under them (step 1's), so close to what the
/// push measured against step 2's own full frames (`chunks` deltas saving `saved`).
fn replicate_job_counts_savings(ctx: &Ctx, backend: Backend, url: &str, chunks: u64, saved: u64) {
    let ferry = ctx.ferry();
    let copy = ctx.location(backend);
    let config = write_config(
        ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"copy\"\nfrom = \"{url}\"\nrefs = [\"model\"]\ntargets = [\"{}\"]\nevery = \"1h\"\n",
            copy.url
        ),
    );
    let sync = ferry.json(&["sync", "--config", s(&config)]);
    let run = array(&sync, "runs")
        .iter()
        .find(|r| string(r, "job") == "copy")
        .unwrap_or_else(|| panic!("no run of job copy: {sync}"));
    assert_eq!(
        uint(run, "chunks_delta"),
        chunks,
        "every delta frame of step 2 is copied as stored: {run}"
    );
    let copied = uint(run, "bytes_saved_by_deltas");
    assert!(
        copied > saved / 10 * 8 && copied < saved / 10 * 12,
        "replication estimated {copied} saved, the push measured {saved}: {run}"
    );
}
