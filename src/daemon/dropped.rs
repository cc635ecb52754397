//! Items a target will never get: a step folder that vanished from the source before it was
//! pushed (normal checkpoint rotation), and a failed step that a newer checkpoint overtook.
//! Each is dropped from the target's queue with a note in the run history, so that no item
//! ever blocks the ones behind it.

use std::path::PathBuf;
use std::sync::Arc;

use super::state::{Job, RunState, TargetLive};
use super::Shared;
use crate::config::{JobKind, Layout};
use crate::index::{ItemRecord, ItemState};
use crate::store::StoreUrl;

/// The folder of step `item`, for a `layout = "steps"` job on a local folder.
pub(super) fn step_folder(job: &Job, item: &str) -> Option<PathBuf> {
    match &job.config.kind {
        JobKind::Push {
            source: StoreUrl::Local(root),
            layout: Layout::Steps,
            ..
        } => Some(root.join(item)),
        _ => None,
    }
}

/// True when `item` is a step folder that no longer exists.
pub(super) async fn vanished(job: &Job, item: &str) -> bool {
    let Some(path) = step_folder(job, item) else {
        return false;
    };
    matches!(
        tokio::fs::symlink_metadata(&path).await,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound
    )
}

/// The run-history note of a vanished step.
pub(super) fn vanished_note(job: &Job, item: &str) -> String {
    let path = step_folder(job, item).unwrap_or_else(|| PathBuf::from(item));
    format!(
        "{item} vanished from the source ({} was removed) before it reached this target: dropped",
        path.display()
    )
}

/// Takes `item` off the target's queue for good (a step layout remembers it as handled).
pub(super) fn forget(tl: &mut TargetLive, item: &str) {
    tl.pending.remove(item);
    tl.done.insert(item.to_string());
    tl.totals.skipped += 1;
    tl.open_run = None;
    if tl.failed.as_ref().is_some_and(|f| f.item == item) {
        tl.failed = None;
    }
    if tl.retry.as_ref().is_some_and(|r| r.item == item) {
        tl.retry = None;
    }
}

/// Failed steps queued before `item` (which just landed): the ref has moved past them, so
/// pushing them now would move it back. Removed from the queue and returned.
pub(super) fn overtaken(tl: &mut TargetLive, item: &str) -> Vec<String> {
    let old: Vec<String> = tl
        .pending
        .iter()
        .filter(|(n, p)| p.failed && super::scan::natural_cmp(n, item).is_lt())
        .map(|(n, _)| n.clone())
        .collect();
    for n in &old {
        forget(tl, n);
    }
    old
}

/// Records `item` as skipped for target `t`: a finished run with `note` (closing the target's
/// open run record, if any), and the item's state in the local index (so that a restart does
/// not queue it again).
pub(super) async fn record(
    shared: &Arc<Shared>,
    job: &Job,
    t: usize,
    item: &str,
    trigger: &str,
    note: String,
    open: Option<(u64, i64, u32)>,
) {
    let now = shared.clock.now_ms();
    let (id, started, attempts) = match open {
        Some(o) => o,
        None => (shared.next_run_id().await, now, 0),
    };
    let mut r = super::views::bare_record(job, t, item, trigger, id, started);
    r.attempts = attempts;
    r.state = RunState::Skipped;
    r.finished_ms = Some(now);
    r.error = Some(note);
    shared.put_run(r).await;
    let rec = ItemRecord {
        state: ItemState::Skipped,
        since_ms: now,
        at_ms: now,
    };
    shared
        .put_item(
            &job.config.name,
            &job.target(t).url.to_string(),
            item,
            Some(rec),
        )
        .await;
}

/// Drops a vanished step from `targets` before it runs.
pub(super) async fn drop_vanished(
    shared: &Arc<Shared>,
    job: &Arc<Job>,
    item: &str,
    targets: &[usize],
) {
    let (trigger, open) = job.with(|live| {
        let trigger = targets
            .first()
            .and_then(|t| live.targets[*t].pending.get(item))
            .map_or("api", |p| p.trigger.as_str());
        let mut open = Vec::new();
        for &t in targets {
            open.push(live.targets[t].open_run);
            forget(&mut live.targets[t], item);
        }
        (trigger, open)
    });
    tracing::warn!(job = %job.config.name, item, "the checkpoint vanished from the source before it was pushed; dropped");
    for (&t, open) in targets.iter().zip(open) {
        let note = vanished_note(job, item);
        record(shared, job, t, item, trigger, note, open).await;
    }
}
