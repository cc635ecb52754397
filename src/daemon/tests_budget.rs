//! Daily egress budgets: a job over `max_egress_per_day` stops sending, says why (job state,
//! reason, `/metrics`), keeps its pending work, keeps being over budget after a restart the
//! same UTC day, and sends again the next day (a fake clock moves the day).

use super::tests::{age, write, World};
use super::*;

const BUDGET_JOB: &str = r#"
[[jobs]]
name = "budgeted"
source = "$DIR/src"
layout = "steps"
ref = "model"
targets = ["$DIR/repo"]
every = "1h"
settle = "1s"
marker = "_SUCCESS"
max_egress_per_day = "4KiB"
"#;

/// Bytes no compressor shrinks much.
fn noise(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn sync_at(w: &World, at: &str) -> (SyncReport, Daemon) {
    let clock = Clock::parse(at).unwrap();
    let d = Daemon::open(w.config(BUDGET_JOB), &w.path("index"), clock, Mode::Once)
        .await
        .unwrap();
    let report = d.sync(None).await.unwrap();
    (report, d)
}

#[tokio::test]
async fn a_job_over_its_daily_budget_waits_for_the_next_utc_day() {
    let metrics = crate::server::metrics::handle();
    let w = World::new();
    for step in 1..=2 {
        write(
            &w.path(&format!("src/step-{step}/model.bin")),
            &noise(step, 10_000),
        );
        write(&w.path(&format!("src/step-{step}/_SUCCESS")), b"");
    }
    age(&w.path("src"));

    // Step 1 is sent (nothing sent today yet) and takes the job over its 4 KiB budget.
    let (report, d) = sync_at(&w, "2026-12-01T22:00:00Z").await;
    let sent: Vec<_> = report
        .runs
        .iter()
        .map(|r| (r.item.as_str(), r.state))
        .collect();
    assert_eq!(sent, [("step-1", RunState::Succeeded)], "{report:?}");
    assert!(report.runs[0].bytes_sent > 4096, "{report:?}");
    let job = &report.jobs[0];
    assert_eq!(job.state, state::JobState::OverBudget, "{job:?}");
    assert_eq!(job.targets[0].pending, 1, "step 2 stays queued: {job:?}");
    let budget = job.budget.as_ref().expect("a budget status");
    assert!(budget.over_budget && budget.sent_today == report.runs[0].bytes_sent);
    let reason = budget.reason.as_deref().unwrap();
    assert!(reason.contains("max_egress_per_day = 4.0 KiB"), "{reason}");
    let text = render_status(&report.jobs, d.clock().now_ms());
    assert!(text.contains(reason), "{text}");
    let json = serde_json::to_value(job).unwrap();
    assert_eq!(json["state"], "over_budget", "{json}");
    let rendered = metrics.render();
    let line = rendered
        .lines()
        .find(|l| l.starts_with("ferry_egress_bytes_total{") && l.contains("job=\"budgeted\""))
        .unwrap_or_else(|| panic!("no ferry_egress_bytes_total for the job:\n{rendered}"));
    assert!(line.contains("source_cloud=\"local\""), "{line}");
    assert!(
        line.ends_with(&format!(" {}", report.runs[0].bytes_sent)),
        "{line}"
    );
    drop(d);

    // Later the same UTC day, after a restart: still over budget, nothing sent.
    let (report, d) = sync_at(&w, "2026-12-01T23:59:00Z").await;
    assert!(report.runs.is_empty(), "{report:?}");
    assert_eq!(report.jobs[0].state, state::JobState::OverBudget);
    drop(d);

    // The next UTC day: step 2 goes.
    let (report, _d) = sync_at(&w, "2026-12-02T00:00:01Z").await;
    let sent: Vec<_> = report
        .runs
        .iter()
        .map(|r| (r.item.as_str(), r.state))
        .collect();
    assert_eq!(sent, [("step-2", RunState::Succeeded)], "{report:?}");
}
