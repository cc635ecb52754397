//! The runner: one worker per job (so one run at a time per job) takes the first pending item,
//! pushes it to every target waiting for it in one fan-out push (the source is read once),
//! and on failure tries the targets one by one, so that one failing target never holds back
//! the others. Transient failures are retried with backoff; permanent ones are reported.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::dropped;
use super::execute::{execute, Outcome};
use super::retry::{backoff, classify, FailureKind};
use super::scan::{self, TREE_ITEM};
use super::settle::Plan;
use super::state::{Cause, Job, ProgressCounter, RunRecord, RunState, Running};
use super::target::{FailureInfo, OpenRun, TargetEvent};
use super::{Mode, Shared};
use crate::config::{JobKind, Layout};
use crate::ops::OpError;
use crate::progress::Reporter;

/// The item of a replicate job.
pub const REFS_ITEM: &str = "refs";

enum Next {
    Run { item: String, targets: Vec<usize> },
    Wait(Instant),
    Idle,
}

/// Works through the job's pending items until shutdown (daemon) or until nothing is left
/// that can run (once).
pub(super) async fn work(shared: Arc<Shared>, job: Arc<Job>) {
    loop {
        if shared.shutdown.is_cancelled() {
            return;
        }
        let next = job.with(|live| next_batch(live, Instant::now()));
        match next {
            Next::Run { .. }
                if super::budget::blocked_until(&job, shared.clock.now_ms()).is_some() =>
            {
                if shared.mode == Mode::Once || !wait_for_budget(&shared, &job).await {
                    return;
                }
            }
            Next::Run { item, targets } => run_batch(&shared, &job, item, targets).await,
            Next::Wait(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = job.wake.notified() => {}
                    _ = shared.shutdown.cancelled() => return,
                }
            }
            Next::Idle if shared.mode == Mode::Once => return,
            Next::Idle => {
                tokio::select! {
                    _ = job.wake.notified() => {}
                    _ = shared.shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// A job over its egress budget waits for the next UTC day (or a wake-up, to look again);
/// false on shutdown.
async fn wait_for_budget(shared: &Shared, job: &Job) -> bool {
    let Some(until) = super::budget::blocked_until(job, shared.clock.now_ms()) else {
        return true;
    };
    tracing::warn!(job = %job.config.name, "over its daily egress budget: runs wait for the next UTC day");
    let at = chrono::DateTime::from_timestamp_millis(until).unwrap_or_else(chrono::Utc::now);
    tokio::select! {
        _ = shared.clock.sleep_until(at) => true,
        _ = job.wake.notified() => true,
        _ = shared.shutdown.cancelled() => false,
    }
}

/// The first item (in step order) any ready target waits for, and every ready target whose
/// first item it is.
fn next_batch(live: &super::state::JobLive, now: Instant) -> Next {
    let mut best: Option<&String> = None;
    let mut wait: Option<Instant> = None;
    let mut ready = Vec::new();
    for (i, t) in live.targets.iter().enumerate() {
        if t.is_running() || t.pending_len() == 0 {
            continue;
        }
        match t.retry() {
            Some(r) if r.at > now => {
                wait = Some(wait.map_or(r.at, |w| w.min(r.at)));
                continue;
            }
            // Failed targets wait for an API trigger (or, in the daemon, a slow retry).
            None if t.failed().is_some() => continue,
            _ => {}
        }
        let Some((name, _)) = t.ordered_pending().into_iter().next() else {
            continue;
        };
        ready.push(i);
        if best.is_none_or(|b| scan::natural_cmp(name, b).is_lt()) {
            best = Some(name);
        }
    }
    match best {
        Some(item) => Next::Run {
            item: item.clone(),
            targets: ready
                .into_iter()
                .filter(|i| {
                    let t = &live.targets[*i];
                    t.ordered_pending().first().is_some_and(|(n, _)| *n == item)
                })
                .collect(),
        },
        None => wait.map_or(Next::Idle, Next::Wait),
    }
}

async fn run_batch(shared: &Arc<Shared>, job: &Arc<Job>, item: String, targets: Vec<usize>) {
    // A step folder removed since it was queued (checkpoint rotation) is dropped, not failed.
    if dropped::vanished(job, &item).await {
        dropped::drop_vanished(shared, job, &item, &targets).await;
        job.wake.notify_one();
        return;
    }
    let progress = Arc::new(ProgressCounter::default());
    let (trigger, runs, plan) = open_runs(shared, job, &item, &targets, &progress).await;
    tracing::info!(job = %job.config.name, item = %item, targets = targets.len(), "run started");

    let started = Instant::now();
    let reporter = Reporter::observed(progress.clone());
    let op = execute(shared, job, &item, &targets, &reporter);
    let results = drive(shared, job, op, &progress).await;
    let done = Finished {
        item: &item,
        trigger,
        finished_ms: shared.clock.now_ms(),
        duration: started.elapsed().as_secs_f64(),
    };
    job.with(|live| {
        live.running = None;
        for &t in &targets {
            live.targets[t].stop();
        }
    });
    let Some(results) = results else {
        for &(t, run) in &runs {
            job.with(|l| l.targets[t].interrupt());
            let mut r = done.record(job, t, run, RunState::Interrupted);
            r.error = Some("interrupted by shutdown; resumes on the next start".into());
            shared.put_run(r).await;
        }
        tracing::warn!(job = %job.config.name, item = %item, "run interrupted by shutdown");
        return;
    };
    // A failure because the step folder vanished during the run drops the item instead.
    let gone = results.iter().any(|(_, r)| r.is_err()) && dropped::vanished(job, &item).await;
    for (t, res) in results {
        let Some(&(_, run)) = runs.iter().find(|r| r.0 == t) else {
            continue;
        };
        let (record, events) = match res {
            Err(_) if gone => done.vanished(job, t, run),
            Ok(o) => {
                if let (Some(plan), false) = (&plan, o.changed) {
                    super::tree::pushed(job, plan);
                }
                done.succeeded(job, t, run, &o)
            }
            Err(e) => (done.failed(shared, job, t, run, &e), Vec::new()),
        };
        shared.put_run(record).await;
        shared
            .apply(job, t, trigger, done.finished_ms, events)
            .await;
    }
    shared.trim_runs().await;
    job.wake.notify_one();
}

/// Marks the job and `targets` running, and opens (or continues) one run record per target.
/// Returns the item's trigger, the runs, and the item's per-file plan (tree jobs).
async fn open_runs(
    shared: &Shared,
    job: &Job,
    item: &str,
    targets: &[usize],
    progress: &Arc<ProgressCounter>,
) -> (Cause, Vec<(usize, OpenRun)>, Option<Arc<Plan>>) {
    let now_ms = shared.clock.now_ms();
    let (trigger, open, plan) = job.with(|live| {
        let open: Vec<_> = targets.iter().map(|&t| live.targets[t].start()).collect();
        live.running = Some(Running {
            item: item.to_string(),
            targets: targets.to_vec(),
            started_ms: now_ms,
            progress: progress.clone(),
            rate: 0.0,
        });
        let first = live.targets[targets[0]].pending(item);
        (
            first.map_or(Cause::Api, |p| p.trigger),
            open,
            first.and_then(|p| p.plan.clone()),
        )
    });
    let mut runs = Vec::new();
    for (&t, open) in targets.iter().zip(open) {
        let run = match open {
            Some(o) => o,
            None => OpenRun {
                id: shared.next_run_id().await,
                started_ms: now_ms,
                attempts: 0,
            },
        };
        let mut r = super::views::bare_record(job, t, item, trigger, run.id, run.started_ms);
        r.attempts = run.attempts;
        shared.put_run(r).await;
        runs.push((t, run));
    }
    (trigger, runs, plan)
}

/// A run that came back: builds each target's record and applies its outcome to the live
/// state.
struct Finished<'a> {
    item: &'a str,
    trigger: Cause,
    finished_ms: i64,
    duration: f64,
}

impl Finished<'_> {
    /// The record of this attempt (`run.attempts + 1`) in `state`.
    fn record(&self, job: &Job, t: usize, run: OpenRun, state: RunState) -> RunRecord {
        let mut r =
            super::views::bare_record(job, t, self.item, self.trigger, run.id, run.started_ms);
        r.attempts = run.attempts + 1;
        r.duration_secs = self.duration;
        r.state = state;
        if state.is_final() {
            r.finished_ms = Some(self.finished_ms);
        }
        r
    }

    /// The step folder vanished during the push: the item is dropped, not failed.
    fn vanished(&self, job: &Job, t: usize, run: OpenRun) -> (RunRecord, Vec<TargetEvent>) {
        let event = job.with(|live| live.targets[t].abandon(self.item));
        let mut r = self.record(job, t, run, RunState::Skipped);
        r.error = Some(dropped::vanished_note(job, self.item));
        tracing::warn!(job = %job.config.name, target = %job.target(t).label, item = %self.item, "the checkpoint vanished from the source during the push; dropped");
        (r, vec![event])
    }

    fn succeeded(
        &self,
        job: &Job,
        t: usize,
        run: OpenRun,
        o: &Outcome,
    ) -> (RunRecord, Vec<TargetEvent>) {
        let layout = job_layout(job);
        let events =
            job.with(|live| live.targets[t].succeed(self.item, o, self.finished_ms, layout));
        let since = events.iter().find_map(|e| match e {
            TargetEvent::Landed { since_ms, .. } | TargetEvent::Unsettled { since_ms, .. } => {
                *since_ms
            }
            _ => None,
        });
        let mut r = self.record(job, t, run, RunState::Succeeded);
        r.snapshot = o.snapshot.clone();
        r.unchanged = o.unchanged;
        r.bytes_logical = o.bytes_logical;
        r.bytes_sent = o.bytes_sent;
        r.bytes_new = o.bytes_new;
        r.chunks_delta = o.chunks_delta;
        r.bytes_saved_by_deltas = o.bytes_saved_by_deltas;
        r.lag_secs = since.map(|s| (self.finished_ms - s).max(0) as f64 / 1000.0);
        if o.changed {
            r.error = Some(
                "the source changed while it was read: it is pushed again once complete".into(),
            );
        }
        super::pull::finish(job, &mut r, o);
        super::budget::record(job, t, o.bytes_sent, self.finished_ms);
        tracing::info!(job = %job.config.name, target = %job.target(t).label, item = %self.item, sent = o.bytes_sent, "run succeeded");
        (r, events)
    }

    fn failed(&self, shared: &Shared, job: &Job, t: usize, run: OpenRun, e: &OpError) -> RunRecord {
        let kind = classify(e);
        let message = e.to_string();
        let attempts = run.attempts + 1;
        let runner = &shared.config.runner;
        let retry_in = (kind == FailureKind::Transient && attempts <= runner.retries)
            .then(|| backoff(attempts, runner.retry_initial, runner.retry_max));
        let slow = (shared.mode == Mode::Daemon).then_some(runner.retry_max);
        let steps = job_layout(job) == Some(Layout::Steps);
        let info = FailureInfo {
            message: message.clone(),
            kind,
            at_ms: self.finished_ms,
            attempts,
            item: self.item.to_string(),
        };
        let run = OpenRun { attempts, ..run };
        let state = job.with(|live| live.targets[t].fail(info, run, retry_in, slow, steps));
        let mut r = self.record(job, t, run, state);
        r.attempts = attempts;
        r.error = Some(message.clone());
        r.error_kind = Some(kind);
        tracing::warn!(job = %job.config.name, target = %job.target(t).label, item = %self.item, attempts, kind = ?kind, error = %message, "run failed");
        r
    }
}

fn job_layout(job: &Job) -> Option<Layout> {
    match &job.config.kind {
        JobKind::Push { layout, .. } => Some(*layout),
        JobKind::Mirror { .. } => Some(Layout::Tree),
        JobKind::Replicate { .. } | JobKind::Pull(_) => None,
    }
}

/// Runs `op`, sampling its throughput every second. After shutdown is requested, waits up to
/// the grace period; then drops it (`None`): the repository stays valid at any point, and
/// the packs that landed are in the local index, so the next start does not send them again.
async fn drive<F: std::future::Future<Output = Vec<(usize, Result<Outcome, OpError>)>>>(
    shared: &Shared,
    job: &Job,
    op: F,
    progress: &ProgressCounter,
) -> Option<Vec<(usize, Result<Outcome, OpError>)>> {
    tokio::pin!(op);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut last = (Instant::now(), 0u64);
    let mut deadline: Option<Instant> = None;
    let far = Instant::now() + Duration::from_secs(86400 * 365);
    loop {
        tokio::select! {
            res = &mut op => return Some(res),
            _ = tick.tick() => {
                let done = progress.done.load(std::sync::atomic::Ordering::Relaxed);
                let dt = last.0.elapsed().as_secs_f64();
                if dt > 0.0 {
                    let rate = done.saturating_sub(last.1) as f64 / dt;
                    job.with(|l| if let Some(r) = &mut l.running { r.rate = rate });
                }
                last = (Instant::now(), done);
            }
            _ = shared.shutdown.cancelled(), if deadline.is_none() => {
                let grace = shared.config.runner.shutdown_grace;
                tracing::info!(job = %job.config.name, grace = ?grace, "shutdown: letting the running push finish");
                deadline = Some(Instant::now() + grace);
            }
            _ = tokio::time::sleep_until(deadline.unwrap_or(far)), if deadline.is_some() => return None,
        }
    }
}

/// The default item of a job without step folders.
pub fn whole_item(job: &Job) -> &'static str {
    match &job.config.kind {
        JobKind::Push { .. } | JobKind::Mirror { .. } => TREE_ITEM,
        JobKind::Replicate { .. } => REFS_ITEM,
        JobKind::Pull(_) => super::pull::PULL_ITEM,
    }
}
