//! The daemon's memory over many runs (issue 19): the run history the API, the chart and the
//! local index hold stays within `runner.history` (plus one trim interval), and a job's live
//! state does not grow with the number of runs.

use std::time::Duration;

use super::*;
use crate::config::Env;

/// A replicate job from a repository that does not exist yet: each run is quick and
/// succeeds as "nothing to replicate", so many runs take little time.
fn config(dir: &std::path::Path, history: usize) -> Config {
    let text = format!(
        "version = 1\n[runner]\nhistory = {history}\n[[jobs]]\nname = \"copy\"\nfrom = \"$DIR/none\"\ntargets = [\"$DIR/b\"]\nevery = \"1h\"\n"
    )
    .replace("$DIR", dir.to_str().unwrap());
    Config::from_toml(&text, "test.toml", &Env::from_process()).unwrap()
}

#[tokio::test]
async fn run_history_stays_within_its_cap_after_many_runs() {
    let dir = tempfile::tempdir().unwrap();
    let history = 10;
    let d = Daemon::open(
        config(dir.path(), history),
        &dir.path().join("index"),
        Clock::real(),
        Mode::Once,
    )
    .await
    .unwrap();
    let runs = 3 * TRIM_EVERY as usize;
    for _ in 0..runs {
        let r = d.sync(None).await.unwrap();
        assert!(r.ok, "{r:?}");
    }
    let kept = d
        .runs(RunFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        !kept.is_empty() && kept.len() <= history + TRIM_EVERY as usize,
        "{} runs kept after {runs} runs with history = {history}",
        kept.len()
    );
    let all = d.shared.log.runs(None, usize::MAX).unwrap();
    assert!(
        all.len() <= history + TRIM_EVERY as usize,
        "the local index holds {} runs",
        all.len()
    );
    // The newest runs are the ones kept.
    assert!(kept.windows(2).all(|w| w[0].id > w[1].id));
    // Live state is per target, not per run: one target, nothing pending, totals counted.
    let job = d.job("copy").unwrap();
    assert_eq!(job.targets.len(), 1);
    assert_eq!(job.targets[0].pending, 0);
    assert_eq!(job.targets[0].runs_succeeded, runs as u64);
    let series = d.series(Duration::from_secs(3600), 500).await.unwrap();
    assert_eq!(
        series.points.len(),
        500,
        "the chart has at most its buckets"
    );
    assert!(series.points.iter().map(|p| p.runs).sum::<u64>() <= kept.len() as u64);
}
