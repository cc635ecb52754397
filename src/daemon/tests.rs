//! In-process daemon tests on `file://` repositories: one-shot sync, permanent failures that
//! do not hold back other targets, the watch loop's completion rules, API triggers, schedules
//! on a fast clock, and restarts.

use std::fs;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::*;
use crate::config::Env;
use crate::repo::Repository;
use crate::store::{Access, Store};

pub(super) struct World {
    dir: tempfile::TempDir,
}

impl World {
    pub(super) fn new() -> Self {
        World {
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub(super) fn path(&self, p: &str) -> PathBuf {
        self.dir.path().join(p)
    }

    pub(super) fn config(&self, jobs: &str) -> Config {
        let text = format!(
            "version = 1\n[runner]\nretries = 2\nretry_initial = \"20ms\"\nretry_max = \"50ms\"\nshutdown_grace = \"1s\"\n{jobs}"
        )
        .replace("$DIR", self.dir.path().to_str().unwrap());
        Config::from_toml(&text, "test.toml", &Env::from_process()).unwrap()
    }

    pub(super) async fn daemon(&self, config: Config, mode: Mode) -> Daemon {
        Daemon::open(config, &self.path("index"), Clock::real(), mode)
            .await
            .unwrap()
    }
}

pub(super) fn write(path: &Path, data: &[u8]) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, data).unwrap();
}

/// Makes every entry under `path` look written an hour ago.
pub(super) fn age(path: &Path) {
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    for e in fs::read_dir(path).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            age(&p);
        }
        fs::File::open(&p)
            .unwrap()
            .set_times(fs::FileTimes::new().set_modified(old))
            .unwrap();
    }
}

pub(super) async fn snapshots_of(repo: &Path, name: &str) -> Vec<String> {
    let store = Store::open_with(
        &crate::store::StoreUrl::Local(repo.into()),
        Access::Read,
        &Default::default(),
    )
    .unwrap();
    let repo = Repository::open(store, &Default::default()).await.unwrap();
    let mut out = Vec::new();
    for e in repo.ref_log(name).await.unwrap() {
        out.push(repo.read_snapshot(&e.snapshot).await.unwrap().source);
    }
    out
}

pub(super) const STEPS_JOB: &str = r#"
[[jobs]]
name = "ckpt"
source = "$DIR/src"
layout = "steps"
ref = "model"
targets = ["$DIR/repo-a", "$DIR/repo-b"]
every = "1h"
settle = "1s"
marker = "_SUCCESS"
"#;

#[tokio::test]
async fn sync_pushes_each_complete_step_once_to_every_target() {
    let w = World::new();
    write(&w.path("src/step-1/model.bin"), &[1u8; 10_000]);
    write(&w.path("src/step-1/_SUCCESS"), b"");
    write(&w.path("src/step-2/model.bin"), &[2u8; 10_000]);
    age(&w.path("src"));
    write(&w.path("src/step-3/model.bin"), b"still being written");
    write(&w.path("src/step-3/_SUCCESS"), b"");
    let d = w.daemon(w.config(STEPS_JOB), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(report.ok, "{report:?}");
    let done: Vec<_> = report
        .runs
        .iter()
        .map(|r| (r.target.as_str(), r.item.as_str(), r.state))
        .collect();
    let dir = w.path("").display().to_string();
    let (a, b) = (format!("{dir}repo-a"), format!("{dir}repo-b"));
    assert_eq!(
        done,
        [
            (a.as_str(), "step-1", RunState::Succeeded),
            (b.as_str(), "step-1", RunState::Succeeded)
        ]
    );
    let waiting: Vec<_> = report.jobs[0]
        .waiting
        .iter()
        .map(|w| (w.item.as_str(), w.waiting_for.as_str()))
        .collect();
    assert_eq!(waiting, [("step-2", "marker"), ("step-3", "settle")]);
    let src = format!("file://{}", w.path("src/step-1").display());
    assert_eq!(
        snapshots_of(&w.path("repo-a"), "model").await,
        vec![src.clone()]
    );
    assert_eq!(snapshots_of(&w.path("repo-b"), "model").await, [src]);
    assert!(report.runs[0].bytes_sent > 0 && report.runs[0].lag_secs.is_some());
    drop(d);

    // A second sync finds nothing new; after the index is deleted it relearns step-1 from
    // the repositories instead of pushing it again.
    let d = w.daemon(w.config(STEPS_JOB), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(report.ok && report.runs.is_empty(), "{report:?}");
    drop(d);
    fs::remove_dir_all(w.path("index")).unwrap();
    let d = w.daemon(w.config(STEPS_JOB), Mode::Once).await;
    let report = d.sync(Some("ckpt")).await.unwrap();
    assert!(report.ok && report.runs.is_empty(), "{report:?}");
    assert_eq!(snapshots_of(&w.path("repo-a"), "model").await.len(), 1);
    assert!(matches!(
        d.sync(Some("nope")).await,
        Err(DaemonError::NoSuchJob { .. })
    ));
}

#[tokio::test]
async fn a_failing_target_does_not_hold_back_the_others() {
    let w = World::new();
    write(&w.path("src/data.bin"), &[7u8; 5000]);
    write(&w.path("not-a-dir"), b"a file where a folder should be");
    let job = r#"
[[jobs]]
name = "data"
source = "$DIR/src"
targets = ["$DIR/good", "$DIR/not-a-dir/repo"]
every = "1h"
settle = "0s"
"#;
    let d = w.daemon(w.config(job), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(!report.ok);
    let runs: Vec<_> = report.runs.iter().filter(|r| r.state.is_final()).collect();
    assert_eq!(runs.len(), 2, "{runs:?}");
    let good = runs.iter().find(|r| r.target.ends_with("good")).unwrap();
    let bad = runs.iter().find(|r| r.target.ends_with("repo")).unwrap();
    assert_eq!(good.state, RunState::Succeeded);
    assert_eq!(bad.state, RunState::Failed);
    assert_eq!(bad.error_kind, Some(retry::FailureKind::Permanent));
    assert_eq!(bad.attempts, 1, "permanent errors are not retried");
    assert!(
        bad.error.as_deref().unwrap().contains("not-a-dir"),
        "{bad:?}"
    );
    let t = &report.jobs[0].targets;
    assert_eq!(
        (t[0].state.as_str(), t[1].state.as_str()),
        ("idle", "failed")
    );
    let text = render_status(&report.jobs, d.clock().now_ms());
    assert!(
        text.contains("failed") && text.contains("Permanent"),
        "{text}"
    );
}

#[tokio::test]
async fn watch_pushes_a_checkpoint_once_after_it_completes() {
    let w = World::new();
    let job = r#"
[[jobs]]
name = "ckpt"
source = "$DIR/src"
layout = "steps"
ref = "model"
targets = ["$DIR/repo"]
watch = true
settle = "400ms"
marker = "*.done"
"#;
    let d = w.daemon(w.config(job), Mode::Daemon).await;
    d.start();
    let step = w.path("src/step-100");
    for i in 0..4u8 {
        write(&step.join(format!("shard-{i}.bin")), &vec![i; 50_000]);
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(
        snapshots_of_opt(&w.path("repo"), "model").await.is_empty(),
        "pushed before its marker"
    );
    let status = d.job("ckpt").unwrap();
    assert_eq!(status.waiting[0].waiting_for, "marker", "{status:?}");
    write(&step.join("step-100.done"), b"");
    let pushed = wait_for(Duration::from_secs(10), || async {
        let s = snapshots_of_opt(&w.path("repo"), "model").await;
        (!s.is_empty()).then_some(s)
    })
    .await;
    assert_eq!(pushed, [format!("file://{}", step.display())]);
    // Touching the source again does not push the same checkpoint twice.
    d.trigger("ckpt").await.unwrap();
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(snapshots_of(&w.path("repo"), "model").await.len(), 1);
    let runs = d.runs(RunFilter::default()).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert_eq!(runs[0].trigger, "watch");
    // Idle: our own scans (directory opens and reads) must not wake the watcher again.
    let job = d.find("ckpt").unwrap();
    let before = job.with(|l| l.scans);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let idle = job.with(|l| l.scans) - before;
    assert!(idle <= 1, "{idle} scans of an idle folder in 1.5s");
    assert!(d.shutdown(Duration::from_secs(5)).await);
}

pub(super) async fn snapshots_of_opt(repo: &Path, name: &str) -> Vec<String> {
    if !repo.join("config").exists() {
        return Vec::new();
    }
    snapshots_of(repo, name).await
}

pub(super) async fn wait_for<T, F, Fut>(limit: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = std::time::Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(
            start.elapsed() < limit,
            "condition not met within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn schedules_fire_on_a_fast_clock_and_api_triggers_run_now() {
    let w = World::new();
    write(&w.path("src/a.txt"), b"hello");
    let job = r#"
[[jobs]]
name = "hourly"
source = "$DIR/src"
targets = ["$DIR/repo"]
every = "1h"
settle = "0s"

[[jobs]]
name = "nightly"
from = "$DIR/repo"
targets = ["$DIR/mirror"]
cron = "30 2 * * *"
"#;
    // 02:20:00 at 3600x: the hourly job fires after one real second, the nightly one at
    // 02:30 (a sixth of a second later: opening the daemon must not take it past 02:30, or
    // the next fire is a day away): replicating whatever the hourly push made.
    let clock = Clock::parse("2026-03-01T02:20:00Z@3600").unwrap();
    let d = Daemon::open(w.config(job), &w.path("index"), clock, Mode::Daemon)
        .await
        .unwrap();
    let next = d.job("hourly").unwrap().next_run_ms;
    assert!(next.is_none(), "not scheduled before start");
    d.start();
    let runs = wait_for(Duration::from_secs(20), || async {
        let runs = d
            .runs(RunFilter {
                state: Some(RunState::Succeeded),
                ..Default::default()
            })
            .await
            .unwrap();
        let jobs: std::collections::BTreeSet<_> = runs.iter().map(|r| r.job.clone()).collect();
        (jobs.len() == 2).then_some(runs)
    })
    .await;
    assert!(
        runs.iter()
            .any(|r| r.job == "hourly" && r.trigger == "every"),
        "{runs:?}"
    );
    assert!(
        runs.iter()
            .any(|r| r.job == "nightly" && r.trigger == "cron"),
        "{runs:?}"
    );

    let t = d.trigger("hourly").await.unwrap();
    assert_eq!(t.action, "queued");
    wait_for(Duration::from_secs(10), || async {
        let n = d
            .runs(RunFilter {
                job: Some("hourly".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        n.iter()
            .any(|r| r.trigger == "api" && r.state == RunState::Succeeded)
            .then_some(())
    })
    .await;
    let s = d
        .series(Duration::from_secs(3600 * 1000), 12)
        .await
        .unwrap();
    assert_eq!(s.points.len(), 12);
    assert!(
        s.points.iter().map(|p| p.bytes_sent).sum::<u64>() > 0,
        "{s:?}"
    );
    assert!(d.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn a_full_queue_skips_the_oldest_checkpoints_and_keeps_order() {
    let w = World::new();
    for step in ["step-1", "step-2", "step-10", "step-3"] {
        write(&w.path(&format!("src/{step}/w.bin")), step.as_bytes());
        write(&w.path(&format!("src/{step}/_SUCCESS")), b"");
    }
    age(&w.path("src"));
    let job = STEPS_JOB.replace("settle = \"1s\"", "settle = \"1s\"\nqueue = 2");
    let d = w.daemon(w.config(&job), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(report.ok, "{report:?}");
    let a = report.jobs[0].targets[0].target.clone();
    let runs: Vec<_> = report
        .runs
        .iter()
        .filter(|r| r.target == a && r.state.is_final())
        .map(|r| (r.item.as_str(), r.state))
        .collect();
    assert_eq!(
        runs,
        [
            ("step-1", RunState::Skipped),
            ("step-2", RunState::Skipped),
            ("step-3", RunState::Succeeded),
            ("step-10", RunState::Succeeded),
        ]
    );
    let sources = snapshots_of(&w.path("repo-a"), "model").await;
    let steps: Vec<_> = sources
        .iter()
        .map(|s| s.rsplit('/').next().unwrap())
        .collect();
    assert_eq!(
        steps,
        ["step-3", "step-10"],
        "the ref ends at the newest checkpoint"
    );
    assert_eq!(report.jobs[0].targets[0].skipped, 2);
}
