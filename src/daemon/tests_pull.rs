//! Pull jobs in process on `file://`: `ferry sync` publishes; a second look in the same process
//! only probes the ref (no pull: the run names no snapshot); the next snapshot publishes with a
//! failing hook noted on a succeeded run; a restarted daemon shows the live version, the ref's
//! head and the totals again, from the folder and the run history.

use std::time::Duration;

use super::tests::{write, World};
use super::*;
use crate::app::RefName;
use crate::ops::push::PushOptions;
use crate::ops::shard::PushMode;
use crate::store::StoreUrl;

const PULL_JOB: &str = r#"
[[jobs]]
name = "serve"
kind = "pull"
from = "$DIR/repo"
ref = "model"
dest = "$DIR/serve"
every = "1h"
hook_command = ["/bin/sh", "-c", "exit 3"]
"#;

/// Pushes `$DIR/src` to `$DIR/repo` as `model`, with an index of its own (the daemon holds
/// its own), like a trainer elsewhere would.
async fn push(w: &World) {
    let app = crate::app::App::new(w.path("push-index"), crate::app::Settings::default());
    let src = StoreUrl::Local(w.path("src"));
    let repo = StoreUrl::Local(w.path("repo"));
    let name = RefName::parse("model").unwrap();
    let silent = crate::progress::Reporter::silent();
    app.push(
        &src,
        &[repo],
        &name,
        &PushMode::Replace,
        PushOptions::default(),
        &silent,
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn sync_publishes_then_only_probes_until_the_ref_moves() {
    let w = World::new();
    write(&w.path("src/model.bin"), &vec![1u8; 300_000]);
    write(&w.path("src/config.json"), b"{\"step\": 1}");
    push(&w).await;
    let d = w.daemon(w.config(PULL_JOB), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(report.ok, "{report:?}");
    let first = &report.runs[0];
    let p = first.pull.as_ref().unwrap();
    assert!(p.published && p.seq == 1, "{first:?}");
    assert!(first.snapshot.is_some());
    let current = w.path("serve/current");
    assert_eq!(
        std::fs::read(current.join("config.json")).unwrap(),
        b"{\"step\": 1}"
    );
    // The hook failed: noted, counted, and the version stays live.
    assert_eq!(first.state, RunState::Succeeded);
    let note = first.error.as_deref().unwrap();
    assert!(
        note.contains("command hook failed") && note.contains("exit status: 3"),
        "{note}"
    );

    // Nothing new: the look is a probe of entry 2, no pull (no snapshot named, nothing read).
    let report = d.sync(None).await.unwrap();
    let again = &report.runs[0];
    assert!(again.unchanged && again.snapshot.is_none(), "{again:?}");
    let p = again.pull.as_ref().unwrap();
    assert!(
        !p.published && p.seq == 1 && p.bytes_read == 0 && p.hooks.is_empty(),
        "{again:?}"
    );

    // The ref moves: the probe finds entry 2, the pull publishes it.
    write(&w.path("src/config.json"), b"{\"step\": 2}");
    push(&w).await;
    let report = d.sync(None).await.unwrap();
    let second = report.runs[0].pull.as_ref().unwrap();
    assert!(second.published && second.seq == 2, "{report:?}");
    assert!(
        second.bytes_reused >= 300_000,
        "the model came from version 1: {second:?}"
    );
    assert_eq!(
        std::fs::read(current.join("config.json")).unwrap(),
        b"{\"step\": 2}"
    );
    let status = d.job("serve").unwrap().pull.unwrap();
    assert_eq!(status.live.as_ref().unwrap().seq, 2);
    assert_eq!((status.head_seq, status.lag_snapshots), (Some(2), Some(0)));
    assert_eq!(status.hook_failures, 2);
    drop(d);

    // Restarted: the live version from the folder, the totals from the run history.
    let d = w.daemon(w.config(PULL_JOB), Mode::Once).await;
    let again = d.job("serve").unwrap().pull.unwrap();
    assert_eq!(again.live.as_ref().unwrap().seq, 2);
    assert_eq!(again.head_seq, Some(2));
    assert_eq!(
        (again.bytes_read, again.bytes_reused, again.hook_failures),
        (status.bytes_read, status.bytes_reused, 2)
    );
    assert!(again.last_hook_error.unwrap().contains("exit status: 3"));
    assert_eq!(again.hooks, ["command"]);
    let text = render_status(&d.jobs(), d.clock().now_ms());
    assert!(
        text.contains("serve: serving model #2 (") && text.contains("up to date with the ref"),
        "{text}"
    );
}

#[tokio::test]
async fn a_ref_not_written_yet_is_nothing_to_pull() {
    let w = World::new();
    std::fs::create_dir_all(w.path("repo")).unwrap();
    let d = w.daemon(w.config(PULL_JOB), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(report.ok, "{report:?}");
    assert!(report.runs[0].unchanged, "{report:?}");
    assert!(!w.path("serve/current").exists());
    let status = d.job("serve").unwrap().pull.unwrap();
    assert!(
        status.live.is_none() && status.lag_snapshots.is_none(),
        "{status:?}"
    );
}

/// Waits (polling the status, at most 60 s) until `f` holds for the pull job's status.
async fn until(d: &Daemon, what: &str, f: impl Fn(&JobStatus) -> bool) -> JobStatus {
    let start = std::time::Instant::now();
    loop {
        let s = d.job("serve").unwrap();
        if f(&s) {
            return s;
        }
        assert!(start.elapsed() < Duration::from_secs(60), "{what}: {s:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_pull_that_failed_for_good_is_retried_when_the_ref_moves() {
    let w = World::new();
    write(&w.path("src/optimizer.bin"), &[7u8; 1000]);
    push(&w).await;
    let job = PULL_JOB
        .replace(
            "every = \"1h\"",
            "watch = true\npoll = \"100ms\"\ninclude = [\"*.safetensors\"]",
        )
        .replace("hook_command = [\"/bin/sh\", \"-c\", \"exit 3\"]", "");
    // A slow retry an hour away: only the new snapshot can bring the pull back.
    let config = w.config(&job);
    let config = Config {
        runner: crate::config::RunnerConfig {
            retry_max: Duration::from_secs(3600),
            ..config.runner
        },
        ..config
    };
    let d = w.daemon(config, Mode::Daemon).await;
    d.start();
    // Snapshot 1 has no safetensors file: the glob matches nothing, a permanent failure.
    let s = until(&d, "the first pull failed", |s| s.state == "failed").await;
    let e = s.targets[0].last_error.as_ref().unwrap();
    assert!(e.message.contains("*.safetensors"), "{e:?}");
    write(
        &w.path("src/model.safetensors"),
        b"not really, but a file by that name",
    );
    push(&w).await;
    let s = until(&d, "snapshot 2 published", |s| {
        s.pull
            .as_ref()
            .and_then(|p| p.live.as_ref())
            .is_some_and(|l| l.seq == 2)
    })
    .await;
    assert_eq!(s.pull.unwrap().lag_snapshots, Some(0));
    assert!(w.path("serve/current/model.safetensors").is_file());
    assert!(!w.path("serve/current/optimizer.bin").exists());
    assert!(d.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_pull_job_pulls_at_start() {
    let w = World::new();
    write(&w.path("src/model.bin"), &[5u8; 1000]);
    push(&w).await;
    // every = "1h": without the pull at start, nothing would be served for an hour.
    let d = w.daemon(w.config(PULL_JOB), Mode::Daemon).await;
    d.start();
    until(&d, "published at start", |s| {
        s.pull
            .as_ref()
            .and_then(|p| p.live.as_ref())
            .is_some_and(|l| l.seq == 1)
    })
    .await;
    assert!(w.path("serve/current/model.bin").is_file());
    assert!(d.shutdown(Duration::from_secs(5)).await);
}
