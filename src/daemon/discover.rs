//! Finding work: the watch loop (filesystem events → scan → settle → enqueue), the schedule
//! loop (`every` / `cron` on the daemon's clock), and one-shot discovery for `ferry sync` and
//! API triggers.

use std::collections::HashSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use notify::Watcher;
use tokio::time::Instant;

use super::clock::next_fire;
use super::runner::whole_item;
use super::scan::{self, Settler, TREE_ITEM};
use super::state::{Cause, Job};
use super::Shared;
use crate::config::{JobKind, Layout, Trigger};
use crate::index::{ItemRecord, ItemState};
use crate::store::StoreUrl;

/// Rescan this often even without filesystem events (events can be lost, e.g. on NFS).
const SAFETY_RESCAN: Duration = Duration::from_secs(30);
/// Without a working watcher, poll this often.
const POLL: Duration = Duration::from_secs(2);
/// Let a burst of events settle into one scan.
const DEBOUNCE: Duration = Duration::from_millis(100);
/// While the source folder does not exist, look for it this often.
const MISSING: Duration = Duration::from_millis(250);

/// The source folder, push settings of a local push job.
fn local_push(job: &Job) -> Option<(PathBuf, Layout, &crate::config::Completion)> {
    match &job.config.kind {
        JobKind::Push {
            source: StoreUrl::Local(root),
            layout,
            complete,
            ..
        } => Some((root.clone(), *layout, complete)),
        JobKind::Mirror {
            source: StoreUrl::Local(root),
            complete,
            ..
        } => Some((root.clone(), Layout::Tree, complete)),
        _ => None,
    }
}

/// Step folders every target already has (or skipped): not scanned again.
fn settled_items(job: &Job) -> HashSet<String> {
    job.with(|live| {
        let mut it = live.targets.iter();
        let Some(first) = it.next() else {
            return HashSet::new();
        };
        let mut all = first.done().clone();
        for t in it {
            all.retain(|i| t.done().contains(i));
        }
        all
    })
}

fn count_scan(job: &Job) {
    job.with(|l| l.scans += 1);
    super::sink::count_scan(job);
}

/// Watches a local folder and enqueues each checkpoint once it is complete.
pub(super) async fn watch_loop(shared: Arc<Shared>, job: Arc<Job>) {
    let Some((root, layout, complete)) = local_push(&job) else {
        return;
    };
    let complete = complete.clone();
    if !source_appears(&shared, &job, &root).await {
        return;
    }
    seed_done(&shared, &job).await;
    let (tx, mut rx) = tokio::sync::mpsc::channel::<()>(1);
    let watch_root = root.clone();
    let watcher = tokio::task::spawn_blocking(move || {
        let mut w = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
            // Opens and reads (our own scans among them) change nothing: reacting to them
            // would make every scan trigger the next.
            let changed = res.is_ok_and(|e| !matches!(e.kind, notify::EventKind::Access(_)));
            if changed {
                // A full channel already holds a wake-up: dropping this one loses nothing.
                let _ = tx.try_send(());
            }
        })?;
        w.watch(&watch_root, notify::RecursiveMode::Recursive)?;
        Ok::<_, notify::Error>(w)
    })
    .await;
    let (_watcher, idle_rescan) = match watcher {
        Ok(Ok(w)) => (Some(w), SAFETY_RESCAN),
        Ok(Err(e)) => {
            tracing::warn!(job = %job.config.name, root = %root.display(), error = %e, "no filesystem events; polling instead");
            (None, POLL)
        }
        Err(e) => {
            tracing::warn!(job = %job.config.name, error = %e, "watcher setup failed; polling instead");
            (None, POLL)
        }
    };
    let mut settler = Settler::default();
    let files = super::tree::per_file(&job);
    loop {
        if let Some((root, complete)) = &files {
            let at = super::tree::look(&shared, &job, root, complete, Cause::Watch, false).await;
            let recheck = at.map_or(Instant::now() + idle_rescan, |at| {
                at.min(Instant::now() + idle_rescan)
            });
            if !next_look(&shared, &job, &mut rx, recheck).await {
                return;
            }
            continue;
        }
        let skip = settled_items(&job);
        let (r, c) = (root.clone(), complete.clone());
        let scanned = tokio::task::spawn_blocking(move || scan::scan(&r, layout, &c, &skip)).await;
        count_scan(&job);
        let mut recheck = Instant::now() + idle_rescan;
        match scanned {
            Ok(Ok(found)) => {
                let decision = settler.update(&found, &complete, Instant::now());
                job.with(|l| {
                    l.scan_error = None;
                    l.waiting = decision.waiting.clone();
                });
                for (item, fp) in decision.ready {
                    let age = found
                        .candidates
                        .iter()
                        .find(|c| c.item == item)
                        .map_or(Duration::ZERO, |c| scan::age(&c.fingerprint));
                    let since =
                        (shared.clock.now_ms() - age.as_millis() as i64).max(shared.started_ms);
                    shared
                        .enqueue(&job, &item, since, Cause::Watch, Some(fp), None)
                        .await;
                }
                if let Some(at) = decision.recheck_at {
                    recheck = recheck.min(at);
                }
            }
            Ok(Err(e)) => {
                job.with(|l| l.scan_error = Some(format!("cannot scan {}: {e}", root.display())));
            }
            Err(e) => tracing::warn!(job = %job.config.name, error = %e, "scan task failed"),
        }
        if !next_look(&shared, &job, &mut rx, recheck).await {
            return;
        }
    }
}

/// Waits for a filesystem event, the recheck time or an API rescan; false on shutdown.
async fn next_look(
    shared: &Shared,
    job: &Job,
    rx: &mut tokio::sync::mpsc::Receiver<()>,
    recheck: Instant,
) -> bool {
    tokio::select! {
        Some(()) = rx.recv() => {
            tokio::time::sleep(DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            true
        }
        _ = tokio::time::sleep_until(recheck) => true,
        _ = job.rescan.notified() => true,
        _ = shared.shutdown.cancelled() => false,
    }
}

/// Waits until the source folder exists. The daemon never creates it: a typo in the path
/// would go unnoticed. Until then the job shows why it does nothing. False on shutdown.
async fn source_appears(shared: &Shared, job: &Job, root: &std::path::Path) -> bool {
    loop {
        let problem = match tokio::fs::metadata(root).await {
            Ok(m) if m.is_dir() => {
                job.with(|l| l.scan_error = None);
                return true;
            }
            Ok(_) => format!(
                "the source {} is not a folder: fix the job's source",
                root.display()
            ),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => format!(
                "the source folder {} does not exist: create it, or fix the job's source in {}",
                root.display(),
                shared.config.origin
            ),
            Err(e) => format!("cannot read the source folder {}: {e}", root.display()),
        };
        job.with(|l| l.scan_error = Some(problem));
        tokio::select! {
            _ = tokio::time::sleep(MISSING) => {}
            _ = shared.shutdown.cancelled() => return false,
        }
    }
}

/// Fires `every` / `cron` triggers on the daemon's clock.
pub(super) async fn schedule_loop(shared: Arc<Shared>, job: Arc<Job>) {
    let (name, trigger) = match &job.config.trigger {
        Trigger::Every(_) => (Cause::Every, &job.config.trigger),
        Trigger::Cron(..) => (Cause::Cron, &job.config.trigger),
        Trigger::Watch => return,
    };
    seed_done(&shared, &job).await;
    loop {
        let Some(next) = next_fire(trigger, shared.clock.now()) else {
            job.with(|l| l.next_fire_ms = None);
            return;
        };
        job.with(|l| l.next_fire_ms = Some(next.timestamp_millis()));
        tokio::select! {
            _ = shared.clock.sleep_until(next) => {
                tracing::info!(job = %job.config.name, trigger = name.as_str(), "schedule fired");
                discover_once(&shared, &job, name).await;
            }
            _ = shared.shutdown.cancelled() => return,
        }
    }
}

/// Looks at the source once and enqueues what is complete: every complete step folder not yet
/// pushed, the whole tree, or the refs to replicate.
pub(super) async fn discover_once(shared: &Arc<Shared>, job: &Arc<Job>, trigger: Cause) {
    let now = shared.clock.now_ms();
    let Some((root, layout, complete)) = local_push(job) else {
        shared
            .enqueue(job, whole_item(job), now, trigger, None, None)
            .await;
        return;
    };
    let complete = complete.clone();
    if let Some((root, complete)) = super::tree::per_file(job) {
        super::tree::look(shared, job, &root, &complete, trigger, true).await;
        return;
    }
    let skip = settled_items(job);
    let (r, c) = (root.clone(), complete.clone());
    let scanned = tokio::task::spawn_blocking(move || scan::scan(&r, layout, &c, &skip)).await;
    count_scan(job);
    let found = match scanned {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            job.with(|l| l.scan_error = Some(format!("cannot scan {}: {e}", root.display())));
            return;
        }
        Err(e) => {
            tracing::warn!(job = %job.config.name, error = %e, "scan task failed");
            return;
        }
    };
    let (ready, waiting) = scan::complete_now(&found, &complete);
    job.with(|l| {
        l.scan_error = None;
        l.waiting = waiting;
    });
    for c in ready {
        let since = now - scan::age(&c.fingerprint).as_millis() as i64;
        let since = if c.item == TREE_ITEM { now } else { since };
        shared
            .enqueue(job, &c.item, since, trigger, Some(c.fingerprint), None)
            .await;
    }
}

/// Step jobs remember which checkpoints each target has. When the local index lost that
/// (it is only a cache), read it back from the target's ref log: each snapshot records the
/// folder it was pushed from.
pub(super) async fn seed_done(shared: &Arc<Shared>, job: &Arc<Job>) {
    let JobKind::Push {
        source: StoreUrl::Local(root),
        layout: Layout::Steps,
        reference,
        ..
    } = &job.config.kind
    else {
        return;
    };
    let prefix = format!("{}/", StoreUrl::Local(root.clone()));
    for (t, target) in job.config.targets.iter().enumerate() {
        if job.with(|l| !l.targets[t].done().is_empty() || l.targets[t].pending_len() > 0) {
            continue;
        }
        let found = async {
            let repo = shared.app.open_repo(&target.url).await?;
            let mut items = Vec::new();
            for entry in repo.ref_log(reference).await? {
                let snap = repo.read_snapshot(&entry.snapshot).await?;
                if let Some(step) = snap.source.strip_prefix(&prefix) {
                    if !step.is_empty() && !step.contains('/') {
                        items.push(step.to_string());
                    }
                }
            }
            Ok::<_, crate::ops::OpError>(items)
        }
        .await;
        let items = match found {
            Ok(items) => items,
            // No repository yet, or unreachable: nothing to learn; the runs will tell.
            Err(e) => {
                tracing::debug!(job = %job.config.name, target = %target.label, error = %e, "cannot read the target's ref log");
                continue;
            }
        };
        if items.is_empty() {
            continue;
        }
        tracing::info!(job = %job.config.name, target = %target.label, steps = items.len(), "relearned pushed checkpoints from the target's ref log");
        let now = shared.clock.now_ms();
        for item in items {
            job.with(|l| l.targets[t].restore_done(item.clone()));
            let rec = ItemRecord {
                state: ItemState::Done,
                since_ms: now,
                at_ms: now,
            };
            shared
                .put_item(&job.config.name, &target.url.to_string(), &item, Some(rec))
                .await;
        }
    }
}
