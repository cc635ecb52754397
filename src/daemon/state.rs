//! The daemon's live state per job and target (in memory, behind a short-held mutex), the run
//! record persisted in the local index, and the status views the API and `ferry status` show.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::retry::FailureKind;
use super::scan::Waiting;
use super::settle::FileSettler;
use crate::config::{JobConfig, JobKind, Target};

pub use super::target::{TargetLive, Totals};

/// Version of the persisted [`RunRecord`] encoding.
pub const RUN_RECORD_VERSION: u8 = 1;

/// Where a run stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunState {
    Running,
    /// Failed transiently; waiting to try again.
    Retrying,
    Succeeded,
    Failed,
    /// Stopped by a shutdown; the work stays pending and resumes on the next start.
    Interrupted,
    /// Superseded by a newer checkpoint before it reached the target.
    Skipped,
}

impl RunState {
    pub fn is_final(self) -> bool {
        !matches!(self, RunState::Running | RunState::Retrying)
    }
}

/// One work item's journey to one target: persisted in the local index (JSON, `v` = 1) and
/// served by `/api/v1/runs`. Times are Unix milliseconds.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct RunRecord {
    pub v: u8,
    pub id: u64,
    pub job: String,
    pub target: String,
    /// The checkpoint (step folder), `tree`, or `refs` for replication.
    pub item: String,
    /// What started it: `watch`, `every`, `cron`, `api`, `sync` or `startup`.
    pub trigger: Cause,
    pub state: RunState,
    pub started_ms: i64,
    pub finished_ms: Option<i64>,
    pub attempts: u32,
    pub error: Option<String>,
    pub error_kind: Option<FailureKind>,
    /// The snapshot the target's ref points to afterwards.
    pub snapshot: Option<String>,
    /// True when the target already had this tree: nothing was written.
    pub unchanged: bool,
    /// Size of the tree (push) or of the new chunks (replicate).
    pub bytes_logical: u64,
    /// Bytes uploaded to the target: packs and pack indexes.
    pub bytes_sent: u64,
    /// Raw size of chunks the target lacked.
    pub bytes_new: u64,
    /// Push runs: new chunks stored as element deltas (0 for other runs and for records
    /// written before deltas existed).
    #[serde(default)]
    pub chunks_delta: u64,
    /// Push runs: what the delta frames saved against full frames (what a push without
    /// deltas would have stored more).
    #[serde(default)]
    pub bytes_saved_by_deltas: u64,
    pub duration_secs: f64,
    /// From the source change to the end of this run.
    pub lag_secs: Option<f64>,
    /// Pull jobs: the version live afterwards, bytes read vs reused, the hooks' outcomes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<super::pull::PullRun>,
}

/// What started a piece of work (a run record's `trigger`, serialised lowercase).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Cause {
    Watch,
    Every,
    Cron,
    /// `POST /api/v1/jobs/{name}/run`: runs even when the source looks unchanged.
    Api,
    Sync,
    /// Left pending by a previous process.
    Startup,
}

/// `as_str` (the serialised name), `Display` and comparison with a `&str` for the enums the
/// API and the run history show as strings.
macro_rules! named {
    ($t:ident { $($v:ident => $s:literal),+ $(,)? }) => {
        impl $t {
            pub fn as_str(self) -> &'static str {
                match self {
                    $($t::$v => $s),+
                }
            }
        }

        impl std::fmt::Display for $t {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl PartialEq<&str> for $t {
            fn eq(&self, other: &&str) -> bool {
                self.as_str() == *other
            }
        }
    };
}

named!(RunState {
    Running => "running",
    Retrying => "retrying",
    Succeeded => "succeeded",
    Failed => "failed",
    Interrupted => "interrupted",
    Skipped => "skipped",
});

named!(Cause {
    Watch => "watch",
    Every => "every",
    Cron => "cron",
    Api => "api",
    Sync => "sync",
    Startup => "startup",
});

/// What a job does (`JobStatus::kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKindName {
    Push,
    Replicate,
    Mirror,
    Pull,
}

named!(JobKindName {
    Push => "push",
    Replicate => "replicate",
    Mirror => "mirror",
    Pull => "pull",
});

/// Where a job stands (`JobStatus::state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Idle,
    Waiting,
    Running,
    Retrying,
    Failed,
    /// Today's bytes reached `max_egress_per_day`: runs wait for the next UTC day.
    #[serde(rename = "over_budget")]
    OverBudget,
}

named!(JobState {
    Idle => "idle",
    Waiting => "waiting",
    Running => "running",
    Retrying => "retrying",
    Failed => "failed",
    OverBudget => "over_budget",
});

/// Where a target stands (`TargetStatus::state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetState {
    Idle,
    Pending,
    Running,
    Retrying,
    Failed,
}

named!(TargetState {
    Idle => "idle",
    Pending => "pending",
    Running => "running",
    Retrying => "retrying",
    Failed => "failed",
});

/// Byte progress of the running run, fed by [`crate::progress::Observer`].
#[derive(Debug, Default)]
pub struct ProgressCounter {
    pub done: AtomicU64,
    pub total: AtomicU64,
    pub phase: Mutex<String>,
}

impl crate::progress::Observer for ProgressCounter {
    fn start(&self, label: &str, total: u64) {
        self.total.fetch_add(total, Ordering::Relaxed);
        if let Ok(mut p) = self.phase.lock() {
            *p = label.to_string();
        }
    }

    fn inc(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }
}

/// The run in progress.
#[derive(Debug)]
pub struct Running {
    pub item: String,
    pub targets: Vec<usize>,
    pub started_ms: i64,
    pub progress: std::sync::Arc<ProgressCounter>,
    /// Bytes per second over the last sampling window.
    pub rate: f64,
}

/// A job, live.
#[derive(Debug, Default)]
pub struct JobLive {
    pub targets: Vec<TargetLive>,
    pub running: Option<Running>,
    /// Checkpoints seen but not complete yet, from the last scan.
    pub waiting: Vec<(String, Waiting)>,
    pub next_fire_ms: Option<i64>,
    pub scan_error: Option<String>,
    /// Scans of the source so far (an idle watched folder is scanned twice a minute).
    pub scans: u64,
    /// Files of a tree job still changing, from the last scan (per-file settling).
    pub held: Option<Held>,
    /// The oldest source change seen and not pushed yet (wall ms): the lag counts from it.
    pub unsynced_since_ms: Option<i64>,
    /// Pull jobs: the version live, the ref's head as last seen, bytes read vs reused.
    pub pull: super::pull::PullLive,
    /// Bytes sent today, against `max_egress_per_day`.
    pub egress: super::budget::Egress,
}

/// Files of a tree job that have not settled: not pushed; the ref keeps their previous version.
#[derive(Debug, Clone, Default)]
pub struct Held {
    /// The first few by name, and how many there are.
    pub files: Vec<String>,
    pub total: usize,
    /// Those waiting longer than `max_wait` (first few, and the count).
    pub overdue: Vec<String>,
    pub overdue_total: usize,
    pub max_wait: std::time::Duration,
}

/// A job's config and live state.
pub struct Job {
    pub config: JobConfig,
    pub live: Mutex<JobLive>,
    /// Something became runnable: the worker looks again.
    pub wake: tokio::sync::Notify,
    /// Look at the source again now (API trigger).
    pub rescan: tokio::sync::Notify,
    /// Per-file settle state (tree jobs on a local folder); locked only around updates.
    pub files: Mutex<FileSettler>,
}

impl Job {
    pub fn new(config: JobConfig) -> Self {
        let live = JobLive {
            targets: config
                .targets
                .iter()
                .map(|_| TargetLive::default())
                .collect(),
            ..Default::default()
        };
        Job {
            config,
            live: Mutex::new(live),
            wake: tokio::sync::Notify::new(),
            rescan: tokio::sync::Notify::new(),
            files: Mutex::new(FileSettler::default()),
        }
    }

    /// Runs `f` on the live state. A poisoned lock (a panic elsewhere) still yields the data:
    /// every update leaves it consistent.
    pub fn with<R>(&self, f: impl FnOnce(&mut JobLive) -> R) -> R {
        let mut g = self.live.lock().unwrap_or_else(|e| e.into_inner());
        f(&mut g)
    }

    pub fn target(&self, i: usize) -> &Target {
        &self.config.targets[i]
    }
}

/// `/api/v1/jobs` entries and `ferry status` rows.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct JobStatus {
    pub name: String,
    /// `push`, `replicate`, `mirror` or `pull`.
    pub kind: JobKindName,
    pub source: String,
    /// The ref pushed to (push jobs) or the refs replicated (empty: all).
    pub refs: Vec<String>,
    pub trigger: String,
    /// `idle`, `waiting`, `running`, `retrying` or `failed`.
    pub state: JobState,
    pub next_run_ms: Option<i64>,
    pub waiting: Vec<WaitingStatus>,
    pub running: Option<RunningStatus>,
    pub scan_error: Option<String>,
    /// Problems that do not stop the job, e.g. files that never settle.
    #[serde(default)]
    pub warnings: Vec<String>,
    pub targets: Vec<TargetStatus>,
    /// Pull jobs: the version live, its lag behind the ref, bytes read vs reused, hooks.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pull: Option<super::pull::PullStatus>,
    /// Jobs with `max_egress_per_day`: today's bytes against it, and why runs wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<super::budget::BudgetStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WaitingStatus {
    pub item: String,
    /// `marker`, `latest` or `settle`.
    pub waiting_for: String,
    /// Tree jobs: the files still changing (first few), and how many there are.
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub files_total: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunningStatus {
    pub item: String,
    pub targets: Vec<String>,
    pub started_ms: i64,
    pub phase: String,
    pub bytes_done: u64,
    pub bytes_total: u64,
    pub bytes_per_sec: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TargetStatus {
    pub target: String,
    pub url: String,
    /// `idle`, `pending`, `running`, `retrying` or `failed`.
    pub state: TargetState,
    pub pending: usize,
    pub lag_secs: f64,
    pub last_success_ms: Option<i64>,
    pub last_snapshot: Option<String>,
    pub next_retry_ms: Option<i64>,
    pub last_error: Option<ErrorStatus>,
    pub bytes_logical: u64,
    pub bytes_sent: u64,
    /// Push jobs: chunks stored as element deltas, over the kept history and this process.
    #[serde(default)]
    pub chunks_delta: u64,
    /// Push jobs: bytes element deltas saved against full frames, summed like `bytes_sent`.
    #[serde(default)]
    pub bytes_saved_by_deltas: u64,
    pub dedup_ratio: f64,
    pub compression_ratio: f64,
    pub egress_usd_per_gb: f64,
    pub egress_avoided_usd: f64,
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    pub skipped: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ErrorStatus {
    pub message: String,
    pub kind: FailureKind,
    pub at_ms: i64,
    pub attempts: u32,
    pub item: String,
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Bytes a plain copy would have sent but ferry did not, priced per GB (10^9 bytes).
pub fn egress_avoided_usd(t: &Totals, usd_per_gb: f64) -> f64 {
    t.bytes_logical.saturating_sub(t.bytes_sent) as f64 / 1e9 * usd_per_gb
}

impl Job {
    /// The job's status at clock time `now_ms`.
    pub fn status(&self, now_ms: i64) -> JobStatus {
        let c = &self.config;
        let (kind, source, refs) = match &c.kind {
            JobKind::Push {
                source, reference, ..
            } => (
                JobKindName::Push,
                source.to_string(),
                vec![reference.clone()],
            ),
            JobKind::Replicate { from, refs } => {
                (JobKindName::Replicate, from.url.to_string(), refs.clone())
            }
            JobKind::Mirror { source, .. } => (JobKindName::Mirror, source.to_string(), Vec::new()),
            JobKind::Pull(p) => (
                JobKindName::Pull,
                p.from.url.to_string(),
                vec![p.reference.clone()],
            ),
        };
        self.with(|live| {
            let targets: Vec<TargetStatus> = live
                .targets
                .iter()
                .enumerate()
                .map(|(i, t)| {
                    let mut s =
                        target_status(c.targets.get(i), t, live.running.as_ref(), i, now_ms);
                    // Lag counts from the oldest change not pushed yet, not from the last run.
                    // (Source changes are on the wall clock, which the daemon's may not be.)
                    if let Some(since) = live.unsynced_since_ms {
                        let wall = super::tree::wall_ms();
                        s.lag_secs = s.lag_secs.max((wall - since).max(0) as f64 / 1000.0);
                    }
                    s
                })
                .collect();
            let budget = super::budget::status(c.max_egress_per_day, &live.egress, now_ms);
            let state = if live.running.is_some() {
                JobState::Running
            } else if targets.iter().any(|t| t.state == TargetState::Failed) {
                JobState::Failed
            } else if budget.as_ref().is_some_and(|b| b.over_budget) {
                JobState::OverBudget
            } else if targets.iter().any(|t| t.state == TargetState::Retrying) {
                JobState::Retrying
            } else if !live.waiting.is_empty() || targets.iter().any(|t| t.pending > 0) {
                JobState::Waiting
            } else {
                JobState::Idle
            };
            JobStatus {
                name: c.name.clone(),
                kind,
                source,
                refs,
                trigger: c.trigger.describe(),
                state,
                next_run_ms: live.next_fire_ms,
                waiting: live
                    .waiting
                    .iter()
                    .map(|(item, w)| {
                        let held = live.held.as_ref().filter(|_| *w == Waiting::Settle);
                        WaitingStatus {
                            item: item.clone(),
                            waiting_for: format!("{w:?}").to_lowercase(),
                            files: held.map(|h| h.files.clone()).unwrap_or_default(),
                            files_total: held.map_or(0, |h| h.total),
                        }
                    })
                    .collect(),
                running: live.running.as_ref().map(|r| RunningStatus {
                    item: r.item.clone(),
                    targets: r
                        .targets
                        .iter()
                        .filter_map(|i| c.targets.get(*i))
                        .map(|t| t.label.clone())
                        .collect(),
                    started_ms: r.started_ms,
                    phase: r
                        .progress
                        .phase
                        .lock()
                        .map(|p| p.clone())
                        .unwrap_or_default(),
                    bytes_done: r.progress.done.load(Ordering::Relaxed),
                    bytes_total: r.progress.total.load(Ordering::Relaxed),
                    bytes_per_sec: r.rate,
                }),
                scan_error: live.scan_error.clone(),
                warnings: live.held.iter().filter_map(overdue_warning).collect(),
                targets,
                pull: match &c.kind {
                    JobKind::Pull(p) => Some(super::pull::status(p, &live.pull)),
                    _ => None,
                },
                budget,
            }
        })
    }
}

/// The warning for files that have waited longer than `max_wait`.
fn overdue_warning(h: &Held) -> Option<String> {
    if h.overdue_total == 0 {
        return None;
    }
    let more = h.overdue_total.saturating_sub(h.overdue.len());
    Some(format!(
        "{} file(s) have not settled for max_wait ({}): {}{}: the repository keeps their previous version; stop rewriting them, or move them out of the source",
        h.overdue_total,
        humantime::format_duration(h.max_wait),
        h.overdue.join(", "),
        if more > 0 { format!(" and {more} more") } else { String::new() }
    ))
}

fn target_status(
    cfg: Option<&Target>,
    t: &TargetLive,
    running: Option<&Running>,
    i: usize,
    now_ms: i64,
) -> TargetStatus {
    let is_running = running.is_some_and(|r| r.targets.contains(&i));
    let state = if is_running {
        TargetState::Running
    } else if t.failed().is_some() {
        TargetState::Failed
    } else if t.retry().is_some() {
        TargetState::Retrying
    } else if t.pending_len() > 0 {
        TargetState::Pending
    } else {
        TargetState::Idle
    };
    let oldest = t.oldest_pending_ms();
    let price = cfg.map_or(0.0, |c| c.egress_usd_per_gb);
    let err = t.failed().or(t.last_error());
    let totals = *t.totals();
    TargetStatus {
        target: cfg.map(|c| c.label.clone()).unwrap_or_default(),
        url: cfg.map(|c| c.url.to_string()).unwrap_or_default(),
        state,
        pending: t.pending_len(),
        lag_secs: oldest.map_or(0.0, |o| (now_ms - o).max(0) as f64 / 1000.0),
        last_success_ms: t.last_success_ms(),
        last_snapshot: t.last_snapshot().cloned(),
        next_retry_ms: t.retry().map(|r| r.at_ms),
        last_error: err.map(|e| ErrorStatus {
            message: e.message.clone(),
            kind: e.kind,
            at_ms: e.at_ms,
            attempts: e.attempts,
            item: e.item.clone(),
        }),
        bytes_logical: totals.bytes_logical,
        bytes_sent: totals.bytes_sent,
        chunks_delta: totals.chunks_delta,
        bytes_saved_by_deltas: totals.bytes_saved_by_deltas,
        dedup_ratio: ratio(totals.bytes_logical, totals.bytes_new),
        compression_ratio: ratio(totals.bytes_new, totals.bytes_sent),
        egress_usd_per_gb: price,
        egress_avoided_usd: egress_avoided_usd(&totals, price),
        runs_succeeded: totals.runs_succeeded,
        runs_failed: totals.runs_failed,
        skipped: totals.skipped,
    }
}
