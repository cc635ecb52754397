//! Items a target will never get: a step folder that vanished from the source before it was
//! pushed (normal checkpoint rotation), and a failed step that a newer checkpoint overtook.
//! Each is dropped from the target's queue ([`super::target::TargetLive::drop_item`]) with a
//! note in the run history, so that no item ever blocks the ones behind it.

use std::path::PathBuf;
use std::sync::Arc;

use super::state::{Cause, Job};
use super::target::DropReason;
use super::Shared;
use crate::config::{JobKind, Layout};
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

/// Drops a vanished step from `targets` before it runs.
pub(super) async fn drop_vanished(
    shared: &Arc<Shared>,
    job: &Arc<Job>,
    item: &str,
    targets: &[usize],
) {
    let (trigger, events) = job.with(|live| {
        let trigger = targets
            .first()
            .and_then(|t| live.targets[*t].pending(item))
            .map_or(Cause::Api, |p| p.trigger);
        let events: Vec<_> = targets
            .iter()
            .map(|&t| live.targets[t].drop_item(item, DropReason::Vanished))
            .collect();
        (trigger, events)
    });
    tracing::warn!(job = %job.config.name, item, "the checkpoint vanished from the source before it was pushed; dropped");
    let now = shared.clock.now_ms();
    for (&t, event) in targets.iter().zip(events) {
        shared.apply(job, t, trigger, now, vec![event]).await;
    }
}
