//! A run's byte progress reaches the observer the runner passes down (what the dashboard's
//! live bytes and rate show), for push, replicate and mirror jobs alike.

use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use super::execute::execute;
use super::state::ProgressCounter;
use super::tests::{write, World, STEPS_JOB};
use super::*;
use crate::progress::Reporter;

const MORE_JOBS: &str = r#"
[[jobs]]
name = "copy"
from = "$DIR/repo-a"
targets = ["$DIR/repo-c"]
every = "1h"

[[jobs]]
name = "plain"
kind = "mirror"
source = "$DIR/src/step-1"
targets = ["$DIR/plain"]
every = "1h"
"#;

/// Runs `job`'s operation for `item` and `targets` as the runner does, with a fresh counter.
async fn run(d: &Daemon, job: &str, item: &str, targets: &[usize]) -> Arc<ProgressCounter> {
    let counter = Arc::new(ProgressCounter::default());
    let j = d.find(job).unwrap();
    let reporter = Reporter::observed(counter.clone());
    for (t, r) in execute(&d.shared, &j, item, targets, &reporter).await {
        r.unwrap_or_else(|e| panic!("{job} target {t}: {e}"));
    }
    counter
}

fn seen(c: &ProgressCounter) -> (String, u64, u64) {
    let phase = c.phase.lock().unwrap().clone();
    (phase, c.total.load(Relaxed), c.done.load(Relaxed))
}

#[tokio::test]
async fn runs_report_their_bytes_to_the_runners_observer() {
    let w = World::new();
    let data: Vec<u8> = (0..100_000u32).flat_map(|i| i.to_le_bytes()).collect();
    let size = data.len() as u64;
    write(&w.path("src/step-1/model.bin"), &data);
    write(&w.path("src/step-1/_SUCCESS"), b"");
    let config = w.config(&format!("{STEPS_JOB}{MORE_JOBS}"));
    let d = w.daemon(config, Mode::Once).await;

    let push = run(&d, "ckpt", "step-1", &[0, 1]).await;
    assert_eq!(seen(&push), ("push".to_string(), size, size));

    let copy = run(&d, "copy", "", &[0]).await;
    let (phase, total, done) = seen(&copy);
    assert_eq!(phase, "replicate");
    assert!(total > 0 && done == total, "{total} {done}");

    let plain = run(&d, "plain", "", &[0]).await;
    assert_eq!(seen(&plain), ("mirror".to_string(), size, size));
    assert_eq!(std::fs::read(w.path("plain/model.bin")).unwrap(), data);
}
