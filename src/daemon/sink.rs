//! The one place the daemon's state leaves memory: run records (with the metrics a finished
//! run counts), work items in the local index, and the [`TargetEvent`]s of the live state's
//! transitions. Every index write runs on a blocking thread; a failed write is logged, never
//! fatal (the index is a cache). Metric names live in [`metric`].

use super::state::{Cause, Job, RunRecord, RunState};
use super::target::{DropReason, TargetEvent};
use super::{blocking, Shared, TRIM_EVERY};
use crate::index::{ItemRecord, ItemState};
use std::sync::atomic::Ordering;

/// Every metric name the daemon records or `/metrics` sets; their types, labels and help
/// texts are in `server/metrics.rs`.
#[allow(missing_docs)]
pub mod metric {
    pub const RUNS_TOTAL: &str = "ferry_runs_total";
    pub const RUN_RETRIES_TOTAL: &str = "ferry_run_retries_total";
    pub const LOGICAL_BYTES_TOTAL: &str = "ferry_logical_bytes_total";
    pub const SENT_BYTES_TOTAL: &str = "ferry_sent_bytes_total";
    pub const DELTA_SAVED_BYTES_TOTAL: &str = "ferry_delta_saved_bytes_total";
    pub const RUN_DURATION_SECONDS: &str = "ferry_run_duration_seconds";
    pub const SOURCE_SCANS_TOTAL: &str = "ferry_source_scans_total";
    pub const LAST_SUCCESS_TIMESTAMP_SECONDS: &str = "ferry_last_success_timestamp_seconds";
    pub const REPLICATION_LAG_SECONDS: &str = "ferry_replication_lag_seconds";
    pub const PENDING_ITEMS: &str = "ferry_pending_items";
    pub const TARGET_FAILING: &str = "ferry_target_failing";
    pub const EGRESS_AVOIDED_DOLLARS: &str = "ferry_egress_avoided_dollars";
    pub const EGRESS_BYTES_TOTAL: &str = "ferry_egress_bytes_total";
    pub const EGRESS_TODAY_BYTES: &str = "ferry_egress_today_bytes";
    pub const JOB_OVER_BUDGET: &str = "ferry_job_over_budget";
    pub const JOB_RUNNING: &str = "ferry_job_running";
    pub const RUN_PROGRESS_BYTES: &str = "ferry_run_progress_bytes";
    pub const WAITING_FILES: &str = "ferry_waiting_files";
    pub const UNSETTLED_FILES: &str = "ferry_unsettled_files";
    pub const BUILD_INFO: &str = "ferry_build_info";
    pub const PULL_READ_BYTES_TOTAL: &str = "ferry_pull_read_bytes_total";
    pub const PULL_REUSED_BYTES_TOTAL: &str = "ferry_pull_reused_bytes_total";
    pub const PULL_PUBLISHED_TOTAL: &str = "ferry_pull_published_total";
    pub const PULL_HOOK_FAILURES_TOTAL: &str = "ferry_pull_hook_failures_total";
    pub const PULL_LIVE_SEQ: &str = "ferry_pull_live_seq";
    pub const PULL_LAG_SNAPSHOTS: &str = "ferry_pull_lag_snapshots";
    pub const PROCESS_RESIDENT_MEMORY_BYTES: &str = "process_resident_memory_bytes";
}

/// Counts a scan of `job`'s source.
pub(super) fn count_scan(job: &Job) {
    metrics::counter!(metric::SOURCE_SCANS_TOTAL, "job" => job.config.name.clone()).increment(1);
}

impl Shared {
    pub(super) async fn next_run_id(&self) -> u64 {
        let log = self.log.clone();
        match blocking(move || log.next_run_id()).await {
            Ok(Ok(id)) => id,
            _ => {
                tracing::warn!("cannot allocate a run id in the local index; using the clock");
                self.clock.now_ms() as u64
            }
        }
    }

    /// Writes a run record; a finished or retried run also counts in the metrics.
    pub(super) async fn put_run(&self, r: RunRecord) {
        count_run(&r);
        let Ok(bytes) = serde_json::to_vec(&r) else {
            return;
        };
        let log = self.log.clone();
        if let Ok(Err(e)) = blocking(move || log.put_run(r.id, &bytes)).await {
            tracing::warn!(error = %e, "cannot record a run in the local index");
        }
        self.runs_written.fetch_add(1, Ordering::Relaxed);
    }

    /// Trims the run history every [`TRIM_EVERY`] records written (counting runs is a scan).
    pub(super) async fn trim_runs(&self) {
        let written = self.runs_written.load(Ordering::Relaxed);
        let last = self.runs_trimmed.load(Ordering::Relaxed);
        if written < last + TRIM_EVERY
            || self
                .runs_trimmed
                .compare_exchange(last, written, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let (log, keep) = (self.log.clone(), self.config.runner.history);
        let _ = blocking(move || log.trim_runs(keep)).await;
    }

    pub(super) async fn put_item(
        &self,
        job: &str,
        target: &str,
        item: &str,
        record: Option<ItemRecord>,
    ) {
        let (log, job, target, item) = (
            self.log.clone(),
            job.to_string(),
            target.to_string(),
            item.to_string(),
        );
        let r = blocking(move || match record {
            Some(r) => log.set_item(&job, &target, &item, r),
            None => log.remove_item(&job, &target, &item),
        })
        .await;
        if let Ok(Err(e)) = r {
            tracing::warn!(error = %e, "cannot record work in the local index");
        }
    }

    /// Writes what target `t`'s transitions meant at `now_ms`: items queued, landed or
    /// dropped (a dropped item also gets a `skipped` run with its reason, under `trigger`).
    pub(super) async fn apply(
        &self,
        job: &Job,
        t: usize,
        trigger: Cause,
        now_ms: i64,
        events: Vec<TargetEvent>,
    ) {
        let target = job.target(t).url.to_string();
        let name = &job.config.name;
        for e in events {
            let (item, record) = match e {
                TargetEvent::Queued { item, since_ms } => (
                    item,
                    Some(item_record(ItemState::Pending, since_ms, now_ms)),
                ),
                TargetEvent::Landed { item, since_ms } => {
                    let since = since_ms.unwrap_or(now_ms);
                    (item, Some(item_record(ItemState::Done, since, now_ms)))
                }
                TargetEvent::Unsettled { item, .. } => (item, None),
                TargetEvent::Abandoned { item } => {
                    (item, Some(item_record(ItemState::Skipped, now_ms, now_ms)))
                }
                TargetEvent::Dropped { item, reason, open } => {
                    if let DropReason::Superseded { .. } = reason {
                        tracing::warn!(job = %name, target = %job.target(t).label, item = %item, "target is behind; skipping a superseded checkpoint");
                    }
                    let (id, started, attempts) = match open {
                        Some(o) => (o.id, o.started_ms, o.attempts),
                        None => (self.next_run_id().await, now_ms, 0),
                    };
                    let mut r = super::views::bare_record(job, t, &item, trigger, id, started);
                    r.attempts = attempts;
                    r.state = RunState::Skipped;
                    r.finished_ms = Some(now_ms);
                    r.error = Some(drop_note(job, &item, &reason));
                    self.put_run(r).await;
                    (item, Some(item_record(ItemState::Skipped, now_ms, now_ms)))
                }
            };
            self.put_item(name, &target, &item, record).await;
        }
    }
}

fn item_record(state: ItemState, since_ms: i64, at_ms: i64) -> ItemRecord {
    ItemRecord {
        state,
        since_ms,
        at_ms,
    }
}

/// The run-history note of a dropped item.
fn drop_note(job: &Job, item: &str, reason: &DropReason) -> String {
    match reason {
        DropReason::Superseded { by, queue } => {
            format!("superseded by {by}: the target was more than {queue} items behind")
        }
        DropReason::Overtaken { by } => format!(
            "failed earlier, then {by} reached this target: dropped so that the ref does not move back to an older checkpoint"
        ),
        DropReason::Vanished => super::dropped::vanished_note(job, item),
    }
}

/// The metrics of one run record: a success counts its bytes, duration and time; a failure
/// for good counts as failed; a retried attempt as a retry. Other states count nothing.
fn count_run(r: &RunRecord) {
    let labels = [("job", r.job.clone()), ("target", r.target.clone())];
    let outcome = |o: &str| {
        [
            labels[0].clone(),
            labels[1].clone(),
            ("outcome", o.to_string()),
        ]
    };
    match r.state {
        RunState::Succeeded => {
            metrics::counter!(metric::RUNS_TOTAL, &outcome("succeeded")).increment(1);
            metrics::counter!(metric::LOGICAL_BYTES_TOTAL, &labels).increment(r.bytes_logical);
            metrics::counter!(metric::SENT_BYTES_TOTAL, &labels).increment(r.bytes_sent);
            metrics::counter!(metric::DELTA_SAVED_BYTES_TOTAL, &labels)
                .increment(r.bytes_saved_by_deltas);
            metrics::histogram!(metric::RUN_DURATION_SECONDS, &labels).record(r.duration_secs);
            let finished = r.finished_ms.unwrap_or(r.started_ms);
            metrics::gauge!(metric::LAST_SUCCESS_TIMESTAMP_SECONDS, &labels)
                .set(finished as f64 / 1000.0);
            if let Some(p) = &r.pull {
                count_pull(&r.job, p);
            }
        }
        RunState::Failed => {
            metrics::counter!(metric::RUNS_TOTAL, &outcome("failed")).increment(1);
        }
        RunState::Retrying => {
            metrics::counter!(metric::RUN_RETRIES_TOTAL, &labels).increment(1);
        }
        RunState::Running | RunState::Interrupted | RunState::Skipped => {}
    }
}

/// A pull run's bytes read vs reused, its publish and its failed hooks (by `hook`).
fn count_pull(job: &str, p: &super::pull::PullRun) {
    let job = job.to_string();
    metrics::counter!(metric::PULL_READ_BYTES_TOTAL, "job" => job.clone()).increment(p.bytes_read);
    metrics::counter!(metric::PULL_REUSED_BYTES_TOTAL, "job" => job.clone())
        .increment(p.bytes_reused);
    if p.published {
        metrics::counter!(metric::PULL_PUBLISHED_TOTAL, "job" => job.clone()).increment(1);
    }
    for h in p.hooks.iter().filter(|h| !h.ok) {
        metrics::counter!(metric::PULL_HOOK_FAILURES_TOTAL, "job" => job.clone(), "hook" => h.hook.clone())
            .increment(1);
    }
}
