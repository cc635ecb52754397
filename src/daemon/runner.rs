//! The runner: one worker per job (so one run at a time per job) takes the first pending item,
//! pushes it to every target waiting for it in one fan-out push (the source is read once),
//! and on failure tries the targets one by one, so that one failing target never holds back
//! the others. Transient failures are retried with backoff; permanent ones are reported.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::Instant;

use super::retry::{backoff, classify, FailureKind};
use super::scan::{self, Fingerprint, TREE_ITEM};
use super::state::{FailureInfo, Job, ProgressCounter, Retry, RunState, Running};
use super::{Mode, Shared};
use crate::config::{JobKind, Layout};
use crate::index::{ItemRecord, ItemState};
use crate::ops::shard::PushMode;
use crate::ops::OpError;
use crate::repo::RepoError;
use crate::store::{StoreError, StoreUrl};

/// The item of a replicate job.
pub const REFS_ITEM: &str = "refs";

/// What one target got from a run.
#[derive(Debug, Clone, Default)]
struct Outcome {
    snapshot: Option<String>,
    unchanged: bool,
    bytes_logical: u64,
    bytes_sent: u64,
    bytes_new: u64,
    /// The source changed while it was read: push it again once it is complete.
    changed: bool,
}

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

/// The first item (in step order) any ready target waits for, and every ready target whose
/// first item it is.
fn next_batch(live: &super::state::JobLive, now: Instant) -> Next {
    let mut best: Option<&String> = None;
    let mut wait: Option<Instant> = None;
    let mut ready = Vec::new();
    for (i, t) in live.targets.iter().enumerate() {
        if t.running || t.pending.is_empty() {
            continue;
        }
        match &t.retry {
            Some(r) if r.at > now => {
                wait = Some(wait.map_or(r.at, |w| w.min(r.at)));
                continue;
            }
            // Failed targets wait for an API trigger (or, in the daemon, a slow retry).
            None if t.failed.is_some() => continue,
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
    let now_ms = shared.clock.now_ms();
    let progress = Arc::new(ProgressCounter::default());
    // Open (or continue) one run record per target.
    let mut runs = Vec::new();
    for &t in &targets {
        let open = job.with(|l| l.targets[t].open_run);
        let (id, started, attempts) = match open {
            Some(o) => o,
            None => (shared.next_run_id().await, now_ms, 0),
        };
        runs.push((t, id, started, attempts));
    }
    let trigger = job.with(|live| {
        for &t in &targets {
            live.targets[t].running = true;
        }
        live.running = Some(Running {
            item: item.clone(),
            targets: targets.clone(),
            started_ms: now_ms,
            progress: progress.clone(),
            rate: 0.0,
        });
        live.targets[targets[0]]
            .pending
            .get(&item)
            .map_or("api", |p| p.trigger.as_str())
    });
    for &(t, id, started, attempts) in &runs {
        let mut r = super::views::bare_record(job, t, &item, trigger, id, started);
        r.attempts = attempts;
        shared.put_run(r).await;
    }
    tracing::info!(job = %job.config.name, item = %item, targets = targets.len(), "run started");

    let started = Instant::now();
    let op = crate::progress::observe(progress.clone(), execute(shared, job, &item, &targets));
    let results = drive(shared, job, op, &progress).await;
    let duration = started.elapsed().as_secs_f64();
    let finished_ms = shared.clock.now_ms();

    let mut records = Vec::new();
    let mut items = Vec::new();
    job.with(|live| {
        live.running = None;
        for &t in &targets {
            live.targets[t].running = false;
        }
    });
    let Some(results) = results else {
        for &(t, id, started, attempts) in &runs {
            job.with(|l| l.targets[t].open_run = None);
            let mut r = super::views::bare_record(job, t, &item, trigger, id, started);
            r.state = RunState::Interrupted;
            r.attempts = attempts + 1;
            r.finished_ms = Some(finished_ms);
            r.duration_secs = duration;
            r.error = Some("interrupted by shutdown; resumes on the next start".into());
            records.push(r);
        }
        for r in records {
            shared.put_run(r).await;
        }
        tracing::warn!(job = %job.config.name, item = %item, "run interrupted by shutdown");
        return;
    };
    for (t, res) in results {
        let Some(&(_, id, started, attempts)) = runs.iter().find(|r| r.0 == t) else {
            continue;
        };
        let attempts = attempts + 1;
        let mut r = super::views::bare_record(job, t, &item, trigger, id, started);
        r.attempts = attempts;
        r.duration_secs = duration;
        let label = job.target(t).label.clone();
        let labels = [("job", job.config.name.clone()), ("target", label)];
        match res {
            Ok(o) => {
                let since = job.with(|live| finish_success(live, job, t, &item, &o, finished_ms));
                r.state = RunState::Succeeded;
                r.finished_ms = Some(finished_ms);
                r.snapshot = o.snapshot.clone();
                r.unchanged = o.unchanged;
                r.bytes_logical = o.bytes_logical;
                r.bytes_sent = o.bytes_sent;
                r.bytes_new = o.bytes_new;
                r.lag_secs = since.map(|s| (finished_ms - s).max(0) as f64 / 1000.0);
                if o.changed {
                    r.error = Some(
                        "the source changed while it was read: it is pushed again once complete"
                            .into(),
                    );
                    items.push((t, None, 0));
                } else {
                    items.push((t, Some(ItemState::Done), since.unwrap_or(finished_ms)));
                }
                metrics::counter!(
                    "ferry_runs_total",
                    &[
                        labels[0].clone(),
                        labels[1].clone(),
                        ("outcome", "succeeded".to_string())
                    ]
                )
                .increment(1);
                metrics::counter!("ferry_logical_bytes_total", &labels).increment(o.bytes_logical);
                metrics::counter!("ferry_sent_bytes_total", &labels).increment(o.bytes_sent);
                metrics::histogram!("ferry_run_duration_seconds", &labels).record(duration);
                metrics::gauge!("ferry_last_success_timestamp_seconds", &labels)
                    .set(finished_ms as f64 / 1000.0);
                tracing::info!(job = %job.config.name, target = %job.target(t).label, item = %item, sent = o.bytes_sent, "run succeeded");
            }
            Err(e) => {
                let kind = classify(&e);
                let message = e.to_string();
                let retries = shared.config.runner.retries;
                let retry_in = (kind == FailureKind::Transient && attempts <= retries).then(|| {
                    backoff(
                        attempts,
                        shared.config.runner.retry_initial,
                        shared.config.runner.retry_max,
                    )
                });
                let slow = (shared.mode == Mode::Daemon).then_some(shared.config.runner.retry_max);
                let state = job.with(|live| {
                    let tl = &mut live.targets[t];
                    let info = FailureInfo {
                        message: message.clone(),
                        kind,
                        at_ms: finished_ms,
                        attempts,
                        item: item.clone(),
                    };
                    tl.last_error = Some(info.clone());
                    let (wait, state) = match retry_in {
                        Some(d) => {
                            tl.open_run = Some((id, started, attempts));
                            (Some(d), RunState::Retrying)
                        }
                        None => {
                            tl.open_run = None;
                            tl.failed = Some(info);
                            tl.totals.runs_failed += 1;
                            (slow, RunState::Failed)
                        }
                    };
                    tl.retry = wait.map(|d| Retry {
                        at: Instant::now() + d,
                        at_ms: finished_ms + d.as_millis() as i64,
                        item: item.clone(),
                    });
                    state
                });
                r.state = state;
                r.error = Some(message.clone());
                r.error_kind = Some(kind);
                if state == RunState::Failed {
                    r.finished_ms = Some(finished_ms);
                    metrics::counter!(
                        "ferry_runs_total",
                        &[
                            labels[0].clone(),
                            labels[1].clone(),
                            ("outcome", "failed".to_string())
                        ]
                    )
                    .increment(1);
                } else {
                    metrics::counter!("ferry_run_retries_total", &labels).increment(1);
                }
                tracing::warn!(job = %job.config.name, target = %job.target(t).label, item = %item, attempts, kind = ?kind, error = %message, "run failed");
            }
        }
        records.push(r);
    }
    for r in records {
        shared.put_run(r).await;
    }
    for (t, state, since) in items {
        let target = job.target(t).url.to_string();
        let record = state.map(|state| ItemRecord {
            state,
            since_ms: since,
            at_ms: finished_ms,
        });
        shared
            .put_item(&job.config.name, &target, &item, record)
            .await;
    }
    shared.trim_runs().await;
    job.wake.notify_one();
}

fn job_layout(job: &Job) -> Option<Layout> {
    match &job.config.kind {
        JobKind::Push { layout, .. } => Some(*layout),
        JobKind::Mirror { .. } => Some(Layout::Tree),
        JobKind::Replicate { .. } => None,
    }
}

/// Records a target's success in the live state; returns when the change was first seen.
fn finish_success(
    live: &mut super::state::JobLive,
    job: &Job,
    t: usize,
    item: &str,
    o: &Outcome,
    now_ms: i64,
) -> Option<i64> {
    let layout = job_layout(job);
    let tl = &mut live.targets[t];
    tl.retry = None;
    tl.failed = None;
    tl.open_run = None;
    tl.last_error = None;
    tl.last_success_ms = Some(now_ms);
    if o.snapshot.is_some() {
        tl.last_snapshot = o.snapshot.clone();
    }
    tl.totals.runs_succeeded += 1;
    tl.totals.bytes_logical += o.bytes_logical;
    tl.totals.bytes_sent += o.bytes_sent;
    tl.totals.bytes_new += o.bytes_new;
    let pending = tl.pending.get(item).cloned();
    let since = pending.as_ref().map(|p| p.since_ms);
    match pending {
        Some(p) if p.dirty => {
            if let Some(q) = tl.pending.get_mut(item) {
                q.dirty = false;
            }
        }
        _ => {
            tl.pending.remove(item);
            if o.changed {
                return since;
            }
            match layout {
                Some(Layout::Steps) => {
                    tl.done.insert(item.to_string());
                }
                Some(Layout::Tree) => tl.pushed = pending.and_then(|p| p.fingerprint),
                None => {}
            }
        }
    }
    since
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

/// The operation for one item and some targets: one result per target.
async fn execute(
    shared: &Shared,
    job: &Job,
    item: &str,
    targets: &[usize],
) -> Vec<(usize, Result<Outcome, OpError>)> {
    match &job.config.kind {
        JobKind::Push {
            source,
            reference,
            layout,
            ..
        } => {
            let src = match (layout, source) {
                (Layout::Steps, StoreUrl::Local(root)) => StoreUrl::Local(root.join(item)),
                _ => source.clone(),
            };
            let before = job.with(|l| {
                targets
                    .first()
                    .and_then(|t| l.targets[*t].pending.get(item))
                    .and_then(|p| p.fingerprint.clone())
            });
            let res = push(shared, job, &src, reference, targets, before.as_ref()).await;
            match res {
                Err(e) if targets.len() > 1 => {
                    tracing::warn!(job = %job.config.name, item, error = %e, "fan-out push failed; trying each target alone");
                    let mut out = Vec::new();
                    for &t in targets {
                        let r = push(shared, job, &src, reference, &[t], before.as_ref()).await;
                        out.push((t, r.map(|mut v| v.remove(0).1)));
                    }
                    out
                }
                Err(e) => vec![(targets[0], Err(e))],
                Ok(v) => v.into_iter().map(|(t, o)| (t, Ok(o))).collect(),
            }
        }
        JobKind::Mirror { source, delete, .. } => {
            mirror_targets(shared, job, source, *delete, targets).await
        }
        JobKind::Replicate { from, refs } => {
            let mut out = Vec::new();
            for &t in targets {
                let to = job.target(t).url.to_string();
                let r =
                    crate::commands::replicate(&shared.ctx, &from.url.to_string(), &to, refs).await;
                let r = match r {
                    Ok(r) => Ok(Outcome {
                        snapshot: None,
                        unchanged: r.snapshots_copied == 0,
                        bytes_logical: r.upload.bytes_new_logical,
                        bytes_sent: r.upload.bytes_uploaded,
                        bytes_new: r.upload.bytes_new_logical,
                        changed: false,
                    }),
                    // Nothing to replicate yet: the source repository has not been created.
                    Err(e) if source_missing(&e, &from.url) => {
                        tracing::info!(job = %job.config.name, from = %from.url, "source repository does not exist yet; nothing to replicate");
                        Ok(Outcome {
                            unchanged: true,
                            ..Default::default()
                        })
                    }
                    Err(e) => Err(e),
                };
                out.push((t, r));
            }
            out
        }
    }
}

/// `ferry mirror` to each target in turn.
async fn mirror_targets(
    shared: &Shared,
    job: &Job,
    source: &StoreUrl,
    delete: bool,
    targets: &[usize],
) -> Vec<(usize, Result<Outcome, OpError>)> {
    let opts = crate::mirror::MirrorOptions {
        delete,
        dry_run: false,
        rehash: false,
    };
    let mut out = Vec::new();
    for &t in targets {
        let dest = job.target(t).url.to_string();
        let r = crate::commands::mirror(&shared.ctx, &source.to_string(), &dest, opts)
            .await
            .map(|r| Outcome {
                snapshot: None,
                unchanged: r.bytes_written == 0 && r.deleted == 0,
                bytes_logical: r.bytes_written,
                bytes_sent: r.bytes_sent,
                bytes_new: r.bytes_sent,
                changed: false,
            });
        out.push((t, r));
    }
    out
}

fn source_missing(e: &OpError, from: &StoreUrl) -> bool {
    let from = from.to_string();
    match e {
        OpError::Repo(RepoError::NotARepo { url }) => *url == from,
        OpError::Repo(RepoError::Store(StoreError::Open { url, reason }))
        | OpError::Store(StoreError::Open { url, reason }) => {
            *url == from && reason == "no such folder"
        }
        _ => false,
    }
}

async fn push(
    shared: &Shared,
    job: &Job,
    src: &StoreUrl,
    reference: &str,
    targets: &[usize],
    before: Option<&Fingerprint>,
) -> Result<Vec<(usize, Outcome)>, OpError> {
    let urls: Vec<String> = targets
        .iter()
        .map(|t| job.target(*t).url.to_string())
        .collect();
    let mode = match &job.config.kind {
        JobKind::Push { merge: true, .. } => PushMode::Merge,
        _ => PushMode::Replace,
    };
    let report =
        crate::commands::push_with(&shared.ctx, &src.to_string(), &urls, reference, &mode).await?;
    // A checkpoint that changed while it was read is pushed again once it settles.
    let changed = match (src, before) {
        (StoreUrl::Local(path), Some(before)) => {
            let path = path.clone();
            let after = tokio::task::spawn_blocking(move || scan::fingerprint(&path))
                .await
                .map_err(OpError::join)?
                .ok();
            after.as_ref() != Some(before)
        }
        _ => false,
    };
    if changed {
        tracing::warn!(job = %job.config.name, source = %src, "the source changed during the push");
    }
    Ok(targets
        .iter()
        .zip(report.targets)
        .map(|(t, r)| {
            let logical = if r.unchanged { 0 } else { report.bytes_total };
            (
                *t,
                Outcome {
                    snapshot: Some(r.snapshot.to_hex()),
                    unchanged: r.unchanged,
                    bytes_logical: logical,
                    bytes_sent: r.stats.bytes_uploaded,
                    bytes_new: r.stats.bytes_new_logical,
                    changed,
                },
            )
        })
        .collect())
}

/// The default item of a job without step folders.
pub fn whole_item(job: &Job) -> &'static str {
    match &job.config.kind {
        JobKind::Push { .. } | JobKind::Mirror { .. } => TREE_ITEM,
        JobKind::Replicate { .. } => REFS_ITEM,
    }
}
