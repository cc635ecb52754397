//! Items that cannot be pushed never block the ones behind them: a queued step folder that
//! vanishes (checkpoint rotation) is dropped with a note, also after a restart; a step that
//! fails for good goes behind the newer ones and is dropped once a newer one lands.

use std::fs;
use std::time::Duration;

use super::tests::{age, snapshots_of, write, World};
use super::*;

const STEPS: &str = r#"
[[jobs]]
name = "ckpt"
source = "$DIR/src"
layout = "steps"
ref = "model"
targets = ["$DIR/repo-a"]
every = "1h"
settle = "1s"
marker = "_SUCCESS"
"#;

fn step(w: &World, name: &str) {
    write(&w.path(&format!("src/{name}/w.bin")), name.as_bytes());
    write(&w.path(&format!("src/{name}/_SUCCESS")), b"");
}

fn pushed_steps(sources: &[String]) -> Vec<&str> {
    sources
        .iter()
        .map(|s| s.rsplit('/').next().unwrap_or(""))
        .collect()
}

#[tokio::test]
async fn a_queued_step_that_vanishes_is_dropped_and_later_steps_land() {
    let w = World::new();
    step(&w, "step-4");
    step(&w, "step-5");
    age(&w.path("src"));
    // One process queues step-4 and step-5 and stops before pushing them.
    let d = w.daemon(w.config(STEPS), Mode::Once).await;
    let job = d.find("ckpt").unwrap();
    discover::discover_once(&d.shared, &job, Cause::Sync).await;
    assert_eq!(job.with(|l| l.targets[0].pending_len()), 2);
    drop((job, d));

    // Rotation removes step-5; step-6 completes; the next process runs.
    fs::remove_dir_all(w.path("src/step-5")).unwrap();
    step(&w, "step-6");
    age(&w.path("src"));
    let d = w.daemon(w.config(STEPS), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    let runs: Vec<_> = report
        .runs
        .iter()
        .filter(|r| r.state.is_final())
        .map(|r| (r.item.as_str(), r.state))
        .collect();
    assert_eq!(
        runs,
        [
            ("step-4", RunState::Succeeded),
            ("step-5", RunState::Skipped),
            ("step-6", RunState::Succeeded),
        ],
        "{report:?}"
    );
    assert!(
        report.ok,
        "a vanished checkpoint is not a failure: {report:?}"
    );
    let note = report.runs.iter().find(|r| r.item == "step-5").unwrap();
    let note = note.error.as_deref().unwrap_or("");
    assert!(
        note.contains("vanished") && note.contains("step-5"),
        "{note}"
    );
    assert_eq!(
        pushed_steps(&snapshots_of(&w.path("repo-a"), "model").await),
        ["step-4", "step-6"]
    );
    let t = &report.jobs[0].targets[0];
    assert_eq!((t.state.as_str(), t.pending), ("idle", 0), "{t:?}");
    drop(d);

    // Nothing of step-5 is left to retry after another restart.
    let d = w.daemon(w.config(STEPS), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(report.ok && report.runs.is_empty(), "{report:?}");
}

#[tokio::test]
async fn a_step_that_fails_for_good_does_not_block_newer_steps() {
    use std::os::unix::ffi::OsStrExt;
    let w = World::new();
    step(&w, "step-4");
    step(&w, "step-5");
    step(&w, "step-6");
    // A file name ferry cannot store: pushing step-5 fails permanently.
    let bad = w
        .path("src/step-5")
        .join(std::ffi::OsStr::from_bytes(b"bad-\xff.bin"));
    fs::write(bad, b"x").unwrap();
    age(&w.path("src"));
    let d = w.daemon(w.config(STEPS), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    let runs: Vec<_> = report
        .runs
        .iter()
        .filter(|r| r.state.is_final())
        .map(|r| (r.item.as_str(), r.state))
        .collect();
    assert_eq!(
        runs,
        [
            ("step-4", RunState::Succeeded),
            ("step-5", RunState::Failed),
            ("step-6", RunState::Succeeded),
            ("step-5", RunState::Skipped),
        ],
        "{report:?}"
    );
    assert!(!report.ok, "the failure is reported");
    assert_eq!(
        pushed_steps(&snapshots_of(&w.path("repo-a"), "model").await),
        ["step-4", "step-6"],
        "the ref ends at the newest checkpoint"
    );
    assert_eq!(report.jobs[0].targets[0].pending, 0);
}

#[tokio::test]
async fn a_running_daemon_drops_a_vanished_step_and_pushes_the_next() {
    let w = World::new();
    step(&w, "step-4");
    step(&w, "step-5");
    age(&w.path("src"));
    let job = STEPS.replace("every = \"1h\"", "watch = true");
    let d = w.daemon(w.config(&job), Mode::Daemon).await;
    let j = d.find("ckpt").unwrap();
    // Both steps are queued; rotation removes step-5 before its turn; step-6 completes.
    discover::discover_once(&d.shared, &j, Cause::Watch).await;
    fs::remove_dir_all(w.path("src/step-5")).unwrap();
    step(&w, "step-6");
    d.start();
    let steps = super::tests::wait_for(Duration::from_secs(20), || async {
        let s = super::tests::snapshots_of_opt(&w.path("repo-a"), "model").await;
        (s.len() == 2).then_some(s)
    })
    .await;
    assert_eq!(pushed_steps(&steps), ["step-4", "step-6"]);
    let runs = d.runs(RunFilter::default()).await.unwrap();
    let five: Vec<_> = runs.iter().filter(|r| r.item == "step-5").collect();
    assert_eq!(five.len(), 1, "{runs:?}");
    assert_eq!(five[0].state, RunState::Skipped, "{runs:?}");
    let t = &d.job("ckpt").unwrap().targets[0];
    assert!(t.last_error.is_none() && t.pending == 0, "{t:?}");
    assert!(d.shutdown(Duration::from_secs(5)).await);
}
