//! `/metrics`: the `metrics` facade with its Prometheus exporter. Counters and the duration
//! histogram are recorded by the runner as runs finish; gauges that describe the present
//! (lag, pending items, failing targets, running jobs) are set from the daemon's status at
//! each scrape. The names are [`crate::daemon::metric`]'s.
//!
//! | metric | type | labels |
//! |---|---|---|
//! | `ferry_runs_total` | counter | job, target, outcome (`succeeded`, `failed`) |
//! | `ferry_run_retries_total` | counter | job, target |
//! | `ferry_logical_bytes_total` | counter | job, target |
//! | `ferry_sent_bytes_total` | counter | job, target |
//! | `ferry_delta_saved_bytes_total` | counter | job, target (push jobs: what element deltas saved against full frames) |
//! | `ferry_run_duration_seconds` | histogram | job, target |
//! | `ferry_source_scans_total` | counter | job |
//! | `ferry_last_success_timestamp_seconds` | gauge | job, target |
//! | `ferry_replication_lag_seconds` | gauge | job, target |
//! | `ferry_pending_items` | gauge | job, target |
//! | `ferry_target_failing` | gauge (0/1) | job, target |
//! | `ferry_egress_avoided_dollars` | gauge | job, target |
//! | `ferry_egress_bytes_total` | counter | job, source_cloud (`local`, `aws`, `azure`, `gcp`), target |
//! | `ferry_egress_today_bytes` | gauge | job (jobs with `max_egress_per_day`: bytes sent this UTC day) |
//! | `ferry_job_over_budget` | gauge (0/1) | job (jobs with `max_egress_per_day`) |
//! | `ferry_job_running` | gauge (0/1) | job |
//! | `ferry_run_progress_bytes` | gauge | job |
//! | `ferry_pull_read_bytes_total` | counter | job (pull jobs: bytes read from the store) |
//! | `ferry_pull_reused_bytes_total` | counter | job (pull jobs: bytes taken from earlier versions) |
//! | `ferry_pull_published_total` | counter | job |
//! | `ferry_pull_hook_failures_total` | counter | job, hook (`command`, `http`) |
//! | `ferry_pull_live_seq` | gauge | job (the ref log entry live; absent before the first publish) |
//! | `ferry_pull_lag_snapshots` | gauge | job (snapshots the ref is ahead of the live version) |
//! | `ferry_build_info` | gauge (1) | version |
//! | `process_resident_memory_bytes` | gauge | — (Linux: `VmRSS` of `/proc/self/status`) |

use std::sync::OnceLock;

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use metrics::{describe_counter, describe_gauge, describe_histogram, gauge, Unit};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::AppState;
use crate::daemon::metric;

/// The process-wide recorder's handle. The first call installs the recorder; if another
/// recorder was installed first (an embedding program), ours still renders its own metrics.
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(
                Matcher::Full(metric::RUN_DURATION_SECONDS.into()),
                &[
                    0.1, 0.5, 1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0, 14400.0,
                ],
            )
            .map(|b| b.build_recorder())
            .unwrap_or_else(|_| PrometheusBuilder::new().build_recorder());
        let handle = recorder.handle();
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!(
                "a metrics recorder was already installed; /metrics shows only ferry's own"
            );
        }
        describe();
        handle
    })
}

fn describe() {
    describe_counter!(
        metric::RUNS_TOTAL,
        "Finished runs (one item to one target), by outcome."
    );
    describe_counter!(
        metric::RUN_RETRIES_TOTAL,
        "Transient failures that were retried."
    );
    describe_counter!(
        metric::LOGICAL_BYTES_TOTAL,
        Unit::Bytes,
        "Size of the trees pushed (what a plain copy would send)."
    );
    describe_counter!(
        metric::SENT_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes uploaded to targets: packs and pack indexes."
    );
    describe_counter!(
        metric::DELTA_SAVED_BYTES_TOTAL,
        Unit::Bytes,
        "Push jobs: bytes element deltas saved (full frames' size minus the delta frames')."
    );
    describe_counter!(
        metric::SOURCE_SCANS_TOTAL,
        "Scans of a job's source folder for complete checkpoints."
    );
    describe_histogram!(
        metric::RUN_DURATION_SECONDS,
        Unit::Seconds,
        "Duration of successful runs."
    );
    describe_gauge!(
        metric::LAST_SUCCESS_TIMESTAMP_SECONDS,
        Unit::Seconds,
        "Unix time of the last successful run."
    );
    describe_gauge!(
        metric::REPLICATION_LAG_SECONDS,
        Unit::Seconds,
        "Age of the oldest source change the target does not have yet; 0 when up to date."
    );
    describe_gauge!(
        metric::PENDING_ITEMS,
        "Checkpoints or trees waiting for the target."
    );
    describe_gauge!(
        metric::TARGET_FAILING,
        "1 when the target's last run failed for good (after retries)."
    );
    describe_gauge!(
        metric::EGRESS_AVOIDED_DOLLARS,
        "Estimated egress cost avoided: (logical - sent) bytes at the configured $/GB."
    );
    describe_counter!(
        metric::EGRESS_BYTES_TOTAL,
        Unit::Bytes,
        "Bytes sent (packs and pack indexes) by job, the cloud they left and target."
    );
    describe_gauge!(
        metric::EGRESS_TODAY_BYTES,
        Unit::Bytes,
        "Bytes the job sent this UTC day, against its max_egress_per_day."
    );
    describe_gauge!(
        metric::JOB_OVER_BUDGET,
        "1 while the job is over its daily egress budget: runs wait for the next UTC day."
    );
    describe_gauge!(
        metric::JOB_RUNNING,
        "1 while the job has a run in progress."
    );
    describe_gauge!(
        metric::RUN_PROGRESS_BYTES,
        Unit::Bytes,
        "Bytes processed by the running run."
    );
    describe_gauge!(
        metric::WAITING_FILES,
        "Files of a tree job still changing: not pushed yet; the repository keeps their previous version."
    );
    describe_gauge!(
        metric::UNSETTLED_FILES,
        "Files of a tree job that have kept changing for longer than max_wait."
    );
    describe_pull();
    describe_gauge!(
        metric::PROCESS_RESIDENT_MEMORY_BYTES,
        Unit::Bytes,
        "Resident memory of the ferry process."
    );
    describe_gauge!(
        metric::BUILD_INFO,
        "Always 1; the version label says which ferry runs."
    );
}

fn describe_pull() {
    describe_counter!(
        metric::PULL_READ_BYTES_TOTAL,
        Unit::Bytes,
        "Pull jobs: bytes read from the store (frames as stored)."
    );
    describe_counter!(
        metric::PULL_REUSED_BYTES_TOTAL,
        Unit::Bytes,
        "Pull jobs: bytes taken from earlier versions in the folder, each chunk verified."
    );
    describe_counter!(
        metric::PULL_PUBLISHED_TOTAL,
        "Pull jobs: versions published (current swapped)."
    );
    describe_counter!(
        metric::PULL_HOOK_FAILURES_TOTAL,
        "Pull jobs: hooks that failed after a publish (the version stays published)."
    );
    describe_gauge!(
        metric::PULL_LIVE_SEQ,
        "Pull jobs: the ref log entry (seq) of the version live."
    );
    describe_gauge!(
        metric::PULL_LAG_SNAPSHOTS,
        "Pull jobs: snapshots the ref is ahead of the version live, as last seen."
    );
}

pub(super) async fn scrape(State(s): State<AppState>) -> impl IntoResponse {
    let h = handle();
    gauge!(metric::BUILD_INFO, "version" => env!("CARGO_PKG_VERSION")).set(1.0);
    if let Some(rss) = crate::memory::resident_memory_bytes() {
        gauge!(metric::PROCESS_RESIDENT_MEMORY_BYTES).set(rss as f64);
    }
    for j in s.daemon.jobs() {
        gauge!(metric::JOB_RUNNING, "job" => j.name.clone())
            .set(f64::from(u8::from(j.running.is_some())));
        gauge!(metric::RUN_PROGRESS_BYTES, "job" => j.name.clone())
            .set(j.running.as_ref().map_or(0.0, |r| r.bytes_done as f64));
        let waiting: usize = j.waiting.iter().map(|w| w.files_total).sum();
        gauge!(metric::WAITING_FILES, "job" => j.name.clone()).set(waiting as f64);
        if let Some(p) = &j.pull {
            if let Some(live) = &p.live {
                gauge!(metric::PULL_LIVE_SEQ, "job" => j.name.clone()).set(live.seq as f64);
            }
            gauge!(metric::PULL_LAG_SNAPSHOTS, "job" => j.name.clone())
                .set(p.lag_snapshots.unwrap_or(0) as f64);
        }
        if let Some(b) = &j.budget {
            gauge!(metric::EGRESS_TODAY_BYTES, "job" => j.name.clone()).set(b.sent_today as f64);
            gauge!(metric::JOB_OVER_BUDGET, "job" => j.name.clone())
                .set(f64::from(u8::from(b.over_budget)));
        }
        for t in &j.targets {
            let labels = [("job", j.name.clone()), ("target", t.target.clone())];
            gauge!(metric::REPLICATION_LAG_SECONDS, &labels).set(t.lag_secs);
            gauge!(metric::PENDING_ITEMS, &labels).set(t.pending as f64);
            gauge!(metric::TARGET_FAILING, &labels).set(f64::from(u8::from(t.state == "failed")));
            gauge!(metric::EGRESS_AVOIDED_DOLLARS, &labels).set(t.egress_avoided_usd);
        }
    }
    h.run_upkeep();
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        h.render(),
    )
}
