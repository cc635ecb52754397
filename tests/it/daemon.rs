//! The sidecar daemon end to end, once per backend: a checkpoint written in pieces is pushed
//! once, after it completes, to every target; interval and cron triggers fire on an injected
//! clock; a failing target is retried and reported without holding back the other; SIGTERM
//! mid-push exits promptly and the restarted daemon finishes without re-sending landed packs.

use std::fs;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::data::{self, MIB};
use crate::harness::{array, s, string, uint, Backend, Ctx};
use crate::http;
use crate::raw::{indexed_pack_ids, pack_objects};
use crate::run::{Ferry, Run, Running};

per_backend!(
    watched_checkpoint_is_pushed_once_when_complete,
    interval_and_cron_fire_on_an_injected_clock,
    failing_target_is_retried_then_reported,
    sigterm_mid_push_exits_and_restart_resumes,
);

/// Writes a daemon config: a `[runner]` fit for tests, then `jobs`.
pub fn write_config(ctx: &Ctx, runner: &str, jobs: &str) -> PathBuf {
    let path = ctx.path("ferry").with_extension("toml");
    let text = format!(
        "version = 1\n\n[runner]\nretries = 2\nretry_initial = \"100ms\"\nretry_max = \"1s\"\nshutdown_grace = \"5s\"\n{runner}\n{jobs}"
    );
    fs::write(&path, text).expect("write config");
    path
}

/// A `ferry daemon` process and its HTTP address.
pub struct Daemon {
    running: Option<Running>,
    pub addr: String,
}

impl Daemon {
    /// Starts `ferry daemon --config CONFIG --bind 127.0.0.1:0 EXTRA...` and waits until it
    /// listens.
    pub fn start(ferry: &Ferry, config: &Path, extra: &[&str], envs: &[(&str, &str)]) -> Daemon {
        let mut args = vec!["daemon", "--config", s(config), "--bind", "127.0.0.1:0"];
        args.extend_from_slice(extra);
        let mut running = ferry.spawn_env(&args, envs);
        let started = Instant::now();
        loop {
            let err = running.stderr_so_far();
            if let Some(rest) = err.split("dashboard on http://").nth(1) {
                let addr = rest.split('/').next().expect("address").to_string();
                return Daemon {
                    running: Some(running),
                    addr,
                };
            }
            if running.has_exited() || started.elapsed() > Duration::from_secs(60) {
                panic!("the daemon did not start listening: {}", running.wait());
            }
            thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn get(&self, path: &str) -> Value {
        let r = http::get(&self.addr, path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        r.json()
    }

    pub fn job(&self, name: &str) -> Value {
        self.get(&format!("/api/v1/jobs/{name}"))
    }

    pub fn runs(&self, query: &str) -> Vec<Value> {
        array(
            &self.get(&format!("/api/v1/runs?limit=1000&{query}")),
            "runs",
        )
        .clone()
    }

    /// Polls `f` every 50 ms until it returns something; fails with `what` after `limit`.
    pub fn wait_for<T>(
        &self,
        what: &str,
        limit: Duration,
        mut f: impl FnMut(&Daemon) -> Option<T>,
    ) -> T {
        let start = Instant::now();
        loop {
            if let Some(v) = f(self) {
                return v;
            }
            if start.elapsed() > limit {
                let err = self
                    .running
                    .as_ref()
                    .map(|r| r.stderr_so_far())
                    .unwrap_or_default();
                panic!(
                    "{what}: not within {limit:?}; jobs: {}\nstderr:\n{err}",
                    self.get("/api/v1/jobs")
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM; returns the finished run and how long the exit took.
    pub fn stop(mut self) -> (Run, Duration) {
        let running = self.running.take().expect("running");
        let t = Instant::now();
        running.terminate();
        let run = running.wait();
        (run, t.elapsed())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(r) = self.running.take() {
            let _ = r.kill();
        }
    }
}

/// Successful runs of `job` that delivered `item`, by target.
fn succeeded(d: &Daemon, job: &str, item: &str) -> Vec<Value> {
    d.runs(&format!("job={job}&state=succeeded"))
        .into_iter()
        .filter(|r| string(r, "item") == item)
        .collect()
}

/// A checkpoint written shard by shard into the watched folder is pushed once, after its
/// marker appears and nothing changed for the settle period, to both targets; it restores
/// byte-identical, and is not pushed again.
pub fn watched_checkpoint_is_pushed_once_when_complete(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (a, b) = (ctx.location(backend), ctx.location(backend));
    let watched = ctx.dir("watched");
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"ckpt\"\nsource = \"{}\"\nlayout = \"steps\"\nref = \"model\"\ntargets = [\"{}\", \"{}\"]\nwatch = true\nsettle = \"1s\"\nmarker = \"_SUCCESS\"\n",
            s(&watched),
            a.url,
            b.url
        ),
    );
    let ferry = ctx.ferry();
    let d = Daemon::start(&ferry, &config, &[], &[]);
    let step = watched.join("step-1000");
    for i in 0..4u64 {
        let shard = format!("model-{:05}-of-00004.safetensors", i + 1);
        data::write_file(&step, &shard, &data::random_bytes(40 + i, 3 * MIB));
        thread::sleep(Duration::from_millis(400));
    }
    data::write_file(&step, "config.json", b"{\"step\": 1000}\n");
    thread::sleep(Duration::from_millis(1500));
    assert!(
        succeeded(&d, "ckpt", "step-1000").is_empty(),
        "pushed before its marker"
    );
    let job = d.job("ckpt");
    let waiting = array(&job, "waiting");
    assert_eq!(string(&waiting[0], "waiting_for"), "marker", "{job}");

    data::write_file(&step, "_SUCCESS", b"");
    let completed = Instant::now();
    let runs = d.wait_for(
        "both targets replicated step-1000",
        Duration::from_secs(120),
        |d| {
            let runs = succeeded(d, "ckpt", "step-1000");
            (runs.len() == 2).then_some(runs)
        },
    );
    let replicated = completed.elapsed();
    let lag: Vec<f64> = runs
        .iter()
        .map(|r| r["lag_secs"].as_f64().unwrap_or(-1.0))
        .collect();
    eprintln!(
        "[{backend:?}] checkpoint completion (marker written) to replicated on both targets: {:.2}s (settle 1s; run lag_secs {lag:?})",
        replicated.as_secs_f64()
    );
    let snapshot = string(&runs[0], "snapshot").to_string();
    assert_eq!(
        string(&runs[1], "snapshot"),
        snapshot,
        "one tree, one snapshot id"
    );

    // A later scan (an API trigger rescans) does not push the same checkpoint again.
    let r = http::post(&d.addr, "/api/v1/jobs/ckpt/run", &[], None);
    assert_eq!(r.status, 202, "{}", r.body);
    thread::sleep(Duration::from_millis(2500));
    assert_eq!(
        d.runs("job=ckpt").len(),
        2,
        "the checkpoint was pushed more than once"
    );
    let job = d.job("ckpt");
    for t in array(&job, "targets") {
        assert_eq!(string(t, "state"), "idle", "{job}");
        assert!(uint(t, "bytes_sent") > 0, "{job}");
    }
    let (stopped, took) = d.stop();
    assert!(stopped.status.success(), "{stopped}");
    assert!(took < Duration::from_secs(10), "SIGTERM took {took:?}");

    for repo in [&a, &b] {
        let list = ferry.json(&["snapshots", &repo.url, "model"]);
        let snaps = array(&list, "snapshots");
        assert_eq!(snaps.len(), 1, "{list}");
        assert_eq!(string(&snaps[0], "snapshot"), snapshot);
        let dest = ctx.path("restore");
        ferry.json(&["restore", &repo.url, "model", s(&dest)]);
        data::assert_same_tree(&step, &dest);
    }
}

/// `every = "1h"` and `cron = "0 */6 * * *"` fire within seconds when the daemon's clock
/// starts at 05:59:00 and runs 3600 times faster than real time.
pub fn interval_and_cron_fire_on_an_injected_clock(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (repo, mirror) = (ctx.location(backend), ctx.location(backend));
    let src = ctx.dir("src");
    data::write_file(&src, "weights.bin", &data::random_bytes(7, MIB));
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"hourly\"\nsource = \"{}\"\ntargets = [\"{}\"]\nevery = \"1h\"\nsettle = \"0s\"\n\n[[jobs]]\nname = \"six-hourly\"\nfrom = \"{}\"\ntargets = [\"{}\"]\ncron = \"0 */6 * * *\"\n",
            s(&src),
            repo.url,
            repo.url,
            mirror.url
        ),
    );
    let d = Daemon::start(
        &ctx.ferry(),
        &config,
        &["--fake-clock", "2026-01-01T05:59:00Z@3600"],
        &[],
    );
    let job = d.job("six-hourly");
    // The next 06:00 is one clock-minute away: a sixtieth of a real second.
    let now_ms = d.get("/api/v1/jobs")["now_ms"].as_i64().expect("now_ms");
    assert!(
        now_ms >= 1_767_247_140_000,
        "the clock starts at 2026-01-01T05:59:00Z: {now_ms}"
    );
    assert!(job["next_run_ms"].as_i64().is_some(), "{job}");
    d.wait_for(
        "the interval and the cron job ran",
        Duration::from_secs(60),
        |d| {
            let every = d
                .runs("job=hourly&state=succeeded")
                .iter()
                .any(|r| string(r, "trigger") == "every");
            // The cron job replicates what the hourly push made; until then it finds nothing.
            let cron = d
                .runs("job=six-hourly&state=succeeded")
                .iter()
                .any(|r| string(r, "trigger") == "cron" && uint(r, "bytes_sent") > 0);
            (every && cron).then_some(())
        },
    );
    let (stopped, _) = d.stop();
    assert!(stopped.status.success(), "{stopped}");
    let list = ctx.ferry().json(&["snapshots", &mirror.url]);
    assert_eq!(array(&list, "snapshots").len(), 1, "{list}");
}

/// The other cloud at a closed port: its target fails transiently, is retried with backoff,
/// then reported as failed, while the good target gets the data. `ferry sync` exits 1.
pub fn failing_target_is_retried_then_reported(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let good = ctx.location(backend);
    let dead = "http://127.0.0.1:9";
    let (bad_url, env) = match backend {
        Backend::Azure => ("s3://ferry-test/nowhere", ("AWS_ENDPOINT", dead)),
        _ => (
            "az://ferry-test/nowhere",
            ("AZURITE_BLOB_STORAGE_URL", dead),
        ),
    };
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 3);
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"fanout\"\nsource = \"{}\"\ntargets = [\"{}\", \"{bad_url}\"]\nevery = \"1h\"\nsettle = \"0s\"\n",
            s(&src),
            good.url
        ),
    );
    let ferry = ctx.ferry();
    let run = ferry
        .spawn_env(&["sync", "--config", s(&config)], &[env])
        .wait();
    assert_eq!(
        run.status.code(),
        Some(1),
        "a failed target makes sync exit 1: {run}"
    );
    let report = run.stdout_json();
    assert_eq!(report["ok"], false, "{run}");
    let runs = array(&report, "runs");
    let good_run = runs
        .iter()
        .find(|r| string(r, "target") == good.url && string(r, "state") == "succeeded")
        .unwrap_or_else(|| panic!("the good target did not succeed: {run}"));
    assert!(uint(good_run, "bytes_sent") > 0, "{run}");
    let bad = runs
        .iter()
        .find(|r| string(r, "target") == bad_url && string(r, "state") == "failed")
        .unwrap_or_else(|| panic!("the dead target was not reported failed: {run}"));
    assert_eq!(string(bad, "error_kind"), "transient", "{bad}");
    assert_eq!(
        uint(bad, "attempts"),
        3,
        "one attempt and two retries: {bad}"
    );
    assert!(
        string(bad, "error").contains("nowhere"),
        "the error names the target: {bad}"
    );
    let restored = ctx.path("restore");
    ferry.json(&["restore", &good.url, "fanout", s(&restored)]);
    data::assert_same_tree(&src, &restored);
}

/// SIGTERM while a push runs: the daemon exits within the grace period, the run is recorded
/// as interrupted, and the next start finishes it without re-sending the packs that landed.
pub fn sigterm_mid_push_exits_and_restart_resumes(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::random_tree(&src, 900, 12, 8 * MIB);
    let (_, bytes_total) = data::totals(&src);
    let ferry = ctx.ferry();
    ferry.json(&[
        "init",
        &repo.url,
        "--pack-size",
        "1MiB",
        "--chunk-avg",
        "256KiB",
    ]);
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"big\"\nsource = \"{}\"\ntargets = [\"{}\"]\nevery = \"24h\"\nsettle = \"0s\"\n",
            s(&src),
            repo.url
        ),
    );
    let text = fs::read_to_string(&config)
        .expect("config")
        .replace("shutdown_grace = \"5s\"", "shutdown_grace = \"0s\"");
    fs::write(&config, text).expect("config");

    let d = Daemon::start(&ferry, &config, &[], &[]);
    let watch = repo.raw.watch("index/");
    let r = http::post(&d.addr, "/api/v1/jobs/big/run", &[], None);
    assert_eq!(r.status, 202, "{}", r.body);
    let asked = Instant::now();
    assert!(
        watch.wait(|| asked.elapsed() > Duration::from_secs(60)),
        "no pack index landed within a minute"
    );
    let (stopped, took) = d.stop();
    assert!(
        stopped.status.success(),
        "a SIGTERM'd daemon exits 0: {stopped}"
    );
    assert!(
        took < Duration::from_secs(10),
        "exit took {took:?} (grace 0s)"
    );
    let durable: u64 = {
        let indexed = indexed_pack_ids(&repo.raw);
        pack_objects(&repo.raw)
            .iter()
            .filter(|p| indexed.contains(p.file_name()))
            .map(|p| p.size)
            .sum()
    };
    assert!(durable > 0);
    let list = ferry.json(&["snapshots", &repo.url]);
    assert!(
        array(&list, "snapshots").is_empty(),
        "no snapshot before the push finished: {list}"
    );

    let d = Daemon::start(&ferry, &config, &[], &[]);
    let runs = d.wait_for(
        "the interrupted push finished after the restart",
        Duration::from_secs(180),
        |d| {
            let runs = d.runs("job=big");
            runs.iter()
                .any(|r| string(r, "state") == "succeeded")
                .then_some(runs)
        },
    );
    let interrupted = runs
        .iter()
        .find(|r| string(r, "state") == "interrupted")
        .unwrap_or_else(|| panic!("{runs:?}"));
    assert!(
        string(interrupted, "error").contains("resumes"),
        "{interrupted}"
    );
    let resumed = runs
        .iter()
        .find(|r| string(r, "state") == "succeeded")
        .expect("succeeded");
    assert_eq!(string(resumed, "trigger"), "startup", "{resumed}");
    let allowed = bytes_total + bytes_total / 50 + 256 * 1024;
    let sent = uint(resumed, "bytes_sent");
    eprintln!("[{backend:?}] SIGTERM exit took {took:?}; {durable} bytes had landed; the resumed run sent {sent} of {bytes_total}");
    assert!(
        sent + durable <= allowed,
        "the resumed run re-sent landed packs: {resumed}"
    );
    let (stopped, _) = d.stop();
    assert!(stopped.status.success(), "{stopped}");
    let dest = ctx.path("restore");
    ferry.json(&["restore", &repo.url, "big", s(&dest)]);
    data::assert_same_tree(&src, &dest);
}
