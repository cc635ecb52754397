//! Tree push jobs on a local folder, settled per file: one look at the source feeds the job's
//! [`FileSettler`], updates what the job shows as waiting (files, lag, warnings), and queues a
//! push of what has settled — unless nothing at all has.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use tokio::time::Instant;

use super::scan::{Waiting, TREE_ITEM};
use super::settle::{self, FileSettler, Settled};
use super::state::{Cause, Held, Job};
use super::Shared;
use crate::config::{Completion, JobKind, Layout};
use crate::store::StoreUrl;

/// Wall-clock now, Unix ms (file times are wall-clock; the daemon's clock may be fake).
pub fn wall_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// The folder and completion rules of a job settled per file: a push job with
/// `layout = "tree"` on a local folder.
pub(super) fn per_file(job: &Job) -> Option<(PathBuf, Completion)> {
    match &job.config.kind {
        JobKind::Push {
            source: StoreUrl::Local(root),
            layout: Layout::Tree,
            complete,
            ..
        } => Some((root.clone(), complete.clone())),
        _ => None,
    }
}

/// Looks at the source once. `trust_mtime`: files seen for the first time date from their
/// modification time (scheduled and one-shot looks, which have no earlier scan). Returns when
/// to look again because a waiting file may have settled by then.
pub(super) async fn look(
    shared: &Arc<Shared>,
    job: &Arc<Job>,
    root: &Path,
    complete: &Completion,
    trigger: Cause,
    trust_mtime: bool,
) -> Option<Instant> {
    let (r, marker) = (root.to_path_buf(), complete.marker.clone());
    let listed = tokio::task::spawn_blocking(move || {
        let files = settle::list_files(&r)?;
        let marked = match &marker {
            // The marker sits in the top folder.
            Some(p) => files.keys().any(|f| !f.contains('/') && p.matches(f)),
            None => true,
        };
        Ok::<_, std::io::Error>((files, marked))
    })
    .await;
    job.with(|l| l.scans += 1);
    super::sink::count_scan(job);
    let (files, marked) = match listed {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            job.with(|l| l.scan_error = Some(format!("cannot scan {}: {e}", root.display())));
            return None;
        }
        Err(e) => {
            tracing::warn!(job = %job.config.name, error = %e, "scan task failed");
            return None;
        }
    };
    let now = wall_ms();
    let floor = now - (shared.clock.now_ms() - shared.started_ms);
    let settled = lock(job).update(
        files,
        now,
        complete.settle,
        complete.max_wait,
        trust_mtime,
        floor,
    );
    show(job, &settled, marked, complete.max_wait);
    if marked && settled.pushable() {
        // Pending times are on the daemon's clock.
        let since = settled
            .unsynced_since_ms
            .map_or(shared.clock.now_ms(), |s| {
                shared.clock.now_ms() - (now - s).max(0)
            });
        let fp = settled.plan.fingerprint.clone();
        let plan = Arc::new(settled.plan.clone());
        shared
            .enqueue(job, TREE_ITEM, since, trigger, Some(fp), Some(plan))
            .await;
    }
    settled
        .recheck_ms
        .map(|at| Instant::now() + Duration::from_millis((at - now).max(0) as u64))
}

fn lock(job: &Job) -> std::sync::MutexGuard<'_, FileSettler> {
    job.files.lock().unwrap_or_else(|e| e.into_inner())
}

/// Publishes a look's outcome: waiting reason and files, lag, the `max_wait` warning.
fn show(job: &Job, s: &Settled, marked: bool, max_wait: Duration) {
    let name = &job.config.name;
    let newly_overdue = job.with(|l| {
        let before = l.held.as_ref().map_or(0, |h| h.overdue_total);
        l.scan_error = None;
        l.unsynced_since_ms = s.unsynced_since_ms;
        l.waiting = if !marked {
            vec![(TREE_ITEM.to_string(), Waiting::Marker)]
        } else if !s.plan.held.is_empty() {
            vec![(TREE_ITEM.to_string(), Waiting::Settle)]
        } else {
            Vec::new()
        };
        l.held = (!s.plan.held.is_empty()).then(|| Held {
            files: s.waiting.clone(),
            total: s.waiting_total,
            overdue: s.overdue.clone(),
            overdue_total: s.overdue_total,
            max_wait,
        });
        before == 0 && s.overdue_total > 0
    });
    metrics::gauge!(super::metric::UNSETTLED_FILES, "job" => name.clone())
        .set(s.overdue_total as f64);
    if newly_overdue {
        tracing::warn!(job = %name, files = ?s.overdue, count = s.overdue_total, max_wait = ?max_wait, "files have not settled for max_wait; the repository keeps their previous version");
    }
}

/// After a successful push of `plan`: its files are synced. Updates the job's lag.
pub(super) fn pushed(job: &Job, plan: &settle::Plan) {
    let unsynced = lock(job).pushed(plan);
    job.with(|l| l.unsynced_since_ms = unsynced);
}
