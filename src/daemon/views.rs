//! What the daemon shows: state loaded back from the local index at start, run history
//! queries, the bytes-over-time series, `ferry sync`'s report and the terminal table.

use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::{Cause, Job, JobStatus, RunRecord, RunState};
use super::{blocking, Daemon, DaemonError, Shared};
use crate::config::{JobKind, Layout};
use crate::index::ItemState;

/// Filters for `/api/v1/runs`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RunFilter {
    pub job: Option<String>,
    pub target: Option<String>,
    pub state: Option<RunState>,
    /// Only runs with a smaller id (paging).
    pub before: Option<u64>,
    /// At most this many (default 50, at most 1000).
    pub limit: Option<usize>,
}

/// The answer to a "run now" request.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TriggerOutcome {
    pub job: String,
    /// `queued` (the source was looked at and its work queued) or `rescan` (a watched folder
    /// is scanned again; checkpoints still need to be complete).
    pub action: String,
    /// Items pending over all targets afterwards.
    pub pending: usize,
}

/// Bytes moved over time, for the dashboard's chart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Series {
    pub start_ms: i64,
    pub bucket_ms: i64,
    pub points: Vec<SeriesPoint>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SeriesPoint {
    pub t_ms: i64,
    pub bytes_sent: u64,
    pub bytes_logical: u64,
    pub runs: u64,
}

/// What `ferry sync` did.
#[derive(Debug, Serialize)]
pub struct SyncReport {
    /// False when any run failed: the exit status is then non-zero.
    pub ok: bool,
    /// True when nothing was pushed because nothing had settled (something changed within
    /// `settle`): `ferry sync` then exits with its own status.
    /// A step still waiting for its marker alone is not this: it is not complete yet.
    pub nothing_ready: bool,
    /// What was not ready, and why (one line per item).
    pub not_ready: Vec<String>,
    pub jobs: Vec<JobStatus>,
    pub runs: Vec<RunRecord>,
}

/// A fresh record for one item and target.
pub(super) fn bare_record(
    job: &Job,
    t: usize,
    item: &str,
    trigger: Cause,
    id: u64,
    started_ms: i64,
) -> RunRecord {
    RunRecord {
        v: super::state::RUN_RECORD_VERSION,
        id,
        job: job.config.name.clone(),
        target: job.target(t).label.clone(),
        item: item.to_string(),
        trigger,
        state: RunState::Running,
        started_ms,
        finished_ms: None,
        attempts: 0,
        error: None,
        error_kind: None,
        snapshot: None,
        unchanged: false,
        bytes_logical: 0,
        bytes_sent: 0,
        bytes_new: 0,
        chunks_delta: 0,
        bytes_saved_by_deltas: 0,
        duration_secs: 0.0,
        lag_secs: None,
        pull: None,
    }
}

/// Restores pending work, pushed checkpoints and totals from the local index. Runs a
/// previous process left open are closed as interrupted.
pub(super) async fn load(shared: &Arc<Shared>) -> Result<(), DaemonError> {
    let keys: Vec<(String, Vec<String>)> = shared
        .jobs
        .iter()
        .map(|j| {
            (
                j.config.name.clone(),
                j.config.targets.iter().map(|t| t.url.to_string()).collect(),
            )
        })
        .collect();
    let (log, history) = (shared.log.clone(), shared.config.runner.history);
    let (items, runs) = blocking(move || {
        let mut items = Vec::new();
        for (job, targets) in &keys {
            let mut per = Vec::new();
            for t in targets {
                per.push(log.items(job, t)?);
            }
            items.push(per);
        }
        Ok::<_, DaemonError>((items, log.runs(None, history)?))
    })
    .await??;
    for (job, per_target) in shared.jobs.iter().zip(items) {
        let steps = matches!(
            job.config.kind,
            JobKind::Push {
                layout: Layout::Steps,
                ..
            }
        );
        job.with(|live| {
            for (t, list) in live.targets.iter_mut().zip(per_target) {
                for (name, rec) in list {
                    match rec.state {
                        ItemState::Pending => t.restore_pending(name, rec.since_ms),
                        ItemState::Done | ItemState::Skipped if steps => t.restore_done(name),
                        _ => {}
                    }
                }
            }
        });
    }
    let now = shared.clock.now_ms();
    let mut rewrite = Vec::new();
    // Newest first: the first record seen for a target is its latest.
    for (_, bytes) in runs {
        let Ok(mut r) = serde_json::from_slice::<RunRecord>(&bytes) else {
            continue;
        };
        if !r.state.is_final() {
            r.state = RunState::Interrupted;
            r.finished_ms = Some(now);
            r.error =
                Some("interrupted: the daemon stopped during this run; its work resumes".into());
            rewrite.push(r.clone());
        }
        let Some(job) = shared.jobs.iter().find(|j| j.config.name == r.job) else {
            continue;
        };
        let Some(t) = job.config.targets.iter().position(|t| t.label == r.target) else {
            continue;
        };
        job.with(|live| {
            live.targets[t].count_history(&r);
            live.pull.count_history(&r);
        });
    }
    for r in rewrite {
        shared.put_run(r).await;
    }
    Ok(())
}

impl Daemon {
    /// Runs, newest first, matching `f`.
    pub async fn runs(&self, f: RunFilter) -> Result<Vec<RunRecord>, DaemonError> {
        let limit = f.limit.unwrap_or(50).clamp(1, 1000);
        let (log, history) = (self.shared.log.clone(), self.shared.config.runner.history);
        blocking(move || {
            let mut out = Vec::new();
            let mut before = f.before;
            let mut scanned = 0;
            while out.len() < limit && scanned < history {
                let page = log.runs(before, 256)?;
                if page.is_empty() {
                    break;
                }
                scanned += page.len();
                before = page.last().map(|p| p.0);
                for (_, bytes) in page {
                    let Ok(r) = serde_json::from_slice::<RunRecord>(&bytes) else {
                        continue;
                    };
                    let keep = f.job.as_ref().is_none_or(|j| *j == r.job)
                        && f.target.as_ref().is_none_or(|t| *t == r.target)
                        && f.state.is_none_or(|s| s == r.state);
                    if keep && out.len() < limit {
                        out.push(r);
                    }
                }
            }
            Ok(out)
        })
        .await?
    }

    /// Bytes sent and logical bytes of finished runs over the last `window`, in `buckets`.
    pub async fn series(&self, window: Duration, buckets: usize) -> Result<Series, DaemonError> {
        let buckets = buckets.clamp(1, 500);
        let now = self.shared.clock.now_ms();
        let bucket_ms = (window.as_millis() as i64 / buckets as i64).max(1000);
        let start_ms = now - bucket_ms * buckets as i64;
        let runs = self
            .runs(RunFilter {
                state: Some(RunState::Succeeded),
                limit: Some(1000),
                ..Default::default()
            })
            .await?;
        let mut points: Vec<SeriesPoint> = (0..buckets as i64)
            .map(|i| SeriesPoint {
                t_ms: start_ms + i * bucket_ms,
                bytes_sent: 0,
                bytes_logical: 0,
                runs: 0,
            })
            .collect();
        for r in runs {
            let Some(at) = r.finished_ms else { continue };
            if at < start_ms {
                continue;
            }
            let i = (((at - start_ms) / bucket_ms) as usize).min(buckets - 1);
            points[i].bytes_sent += r.bytes_sent;
            points[i].bytes_logical += r.bytes_logical;
            points[i].runs += 1;
        }
        Ok(Series {
            start_ms,
            bucket_ms,
            points,
        })
    }
}

pub(super) async fn sync_report(
    daemon: &Daemon,
    jobs: &[Arc<Job>],
    first_run: u64,
) -> Result<SyncReport, DaemonError> {
    let names: Vec<&str> = jobs.iter().map(|j| j.config.name.as_str()).collect();
    let mut runs = daemon
        .runs(RunFilter {
            limit: Some(1000),
            ..Default::default()
        })
        .await?;
    runs.retain(|r| r.id >= first_run && names.contains(&r.job.as_str()));
    runs.reverse();
    let statuses: Vec<JobStatus> = daemon
        .jobs()
        .into_iter()
        .filter(|j| names.contains(&j.name.as_str()))
        .collect();
    let ok = !runs.iter().any(|r| r.state == RunState::Failed)
        && !statuses
            .iter()
            .flat_map(|j| &j.targets)
            .any(|t| t.state == "failed");
    let not_ready: Vec<String> = jobs
        .iter()
        .zip(&statuses)
        .flat_map(|(job, s)| not_ready(job, s))
        .collect();
    let settling = statuses
        .iter()
        .any(|j| j.waiting.iter().any(|w| w.waiting_for == "settle"));
    let nothing_ready = ok && settling && runs.iter().all(|r| !r.state.is_final());
    Ok(SyncReport {
        ok,
        nothing_ready,
        not_ready,
        jobs: statuses,
        runs,
    })
}

/// Why each waiting item of `job` was not pushed.
fn not_ready(job: &Job, status: &JobStatus) -> Vec<String> {
    let complete = match &job.config.kind {
        JobKind::Push { complete, .. } | JobKind::Mirror { complete, .. } => complete,
        JobKind::Replicate { .. } | JobKind::Pull(_) => return Vec::new(),
    };
    let d = |d: Duration| humantime::format_duration(d).to_string();
    status
        .waiting
        .iter()
        .map(|w| {
            let why = match w.waiting_for.as_str() {
                "marker" => format!(
                    "not complete: no file matching the marker {:?} yet",
                    complete.marker.as_ref().map_or("", |m| m.as_str())
                ),
                "latest" => format!(
                    "newer than the step the latest pointer ({}) names",
                    complete.latest.as_deref().unwrap_or("latest")
                ),
                _ if w.files_total > 0 => format!(
                    "{} file(s) changed within settle ({}): {}{}; the others are pushed, these once unchanged for {}",
                    w.files_total,
                    d(complete.settle),
                    w.files.join(", "),
                    if w.files_total > w.files.len() { ", …" } else { "" },
                    d(complete.settle)
                ),
                _ => format!(
                    "changed within settle ({}): pushed once unchanged that long",
                    d(complete.settle)
                ),
            };
            format!("{}: {}: {why}", status.name, w.item)
        })
        .collect()
}

fn when(ms: Option<i64>, now_ms: i64) -> String {
    let Some(ms) = ms else {
        return "never".into();
    };
    let ago = Duration::from_secs(((now_ms - ms).max(0) / 1000) as u64);
    format!(
        "{} ago",
        humantime::format_duration(ago)
            .to_string()
            .split(' ')
            .next()
            .unwrap_or("0s")
    )
}

/// The per-job, per-target table of `ferry status` and `ferry sync`.
pub fn render_status(jobs: &[JobStatus], now_ms: i64) -> String {
    let b = crate::cli::render::bytes;
    let mut s = format!(
        "{:<20} {:<16} {:<9} {:>12} {:>8} {:>7} {:>11} {:>11} {:>6} {:>6} {:>9}",
        "JOB",
        "TARGET",
        "STATE",
        "LAST OK",
        "LAG",
        "PENDING",
        "LOGICAL",
        "SENT",
        "DEDUP",
        "COMPR",
        "SAVED"
    );
    let mut errors = Vec::new();
    for j in jobs {
        for t in &j.targets {
            s.push_str(&format!(
                "\n{:<20} {:<16} {:<9} {:>12} {:>8} {:>7} {:>11} {:>11} {:>5.1}x {:>5.2}x {:>9}",
                j.name,
                t.target,
                if j.state == "running" && t.state == "running" {
                    "running"
                } else {
                    t.state.as_str()
                },
                when(t.last_success_ms, now_ms),
                humantime::format_duration(Duration::from_secs(t.lag_secs as u64))
                    .to_string()
                    .split(' ')
                    .next()
                    .unwrap_or("0s"),
                t.pending,
                b(t.bytes_logical),
                b(t.bytes_sent),
                t.dedup_ratio,
                t.compression_ratio,
                format!("${:.2}", t.egress_avoided_usd)
            ));
            if t.bytes_saved_by_deltas > 0 {
                errors.push(format!(
                    "  {}/{}: deltas saved {}",
                    j.name,
                    t.target,
                    b(t.bytes_saved_by_deltas)
                ));
            }
            if let Some(e) = &t.last_error {
                errors.push(format!(
                    "  {}/{}: {} ({:?}, {} attempts): {}",
                    j.name, t.target, e.item, e.kind, e.attempts, e.message
                ));
            }
        }
        for w in &j.waiting {
            let files = match w.files_total {
                0 => String::new(),
                n => format!(
                    " ({n} file(s) still changing: {}{})",
                    w.files.join(", "),
                    if n > w.files.len() { ", …" } else { "" }
                ),
            };
            errors.push(format!(
                "  {}: {} is waiting for its {}{files}",
                j.name, w.item, w.waiting_for
            ));
        }
        if let Some(p) = &j.pull {
            errors.push(format!("  {}: {}", j.name, super::pull::describe(j, p)));
        }
        for warning in &j.warnings {
            errors.push(format!("  {}: warning: {warning}", j.name));
        }
        if let Some(e) = &j.scan_error {
            errors.push(format!("  {}: {e}", j.name));
        }
        if let Some(reason) = j.budget.as_ref().and_then(|b| b.reason.as_ref()) {
            errors.push(format!("  {}: {reason}", j.name));
        }
    }
    if !errors.is_empty() {
        s.push('\n');
        s.push_str(&errors.join("\n"));
    }
    s
}
