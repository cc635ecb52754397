//! One target of one job, live: its queue of pending items, the items it has, its open run,
//! retry and failure, and its totals. Fields are private; every change is a transition
//! method, and what the change means outside memory (an item queued, done or dropped) comes
//! back as [`TargetEvent`]s for the sink ([`super::sink`]) to write to the local index and
//! the run history.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use serde::Serialize;
use tokio::time::Instant;

use super::execute::Outcome;
use super::retry::FailureKind;
use super::scan::{natural_cmp, Fingerprint};
use super::settle::Plan;
use super::state::{Cause, RunRecord, RunState};
use crate::config::Layout;

/// Work waiting for one target.
#[derive(Debug, Clone)]
pub struct Pending {
    /// When the source change happened (clock ms).
    pub since_ms: i64,
    pub trigger: Cause,
    /// The checkpoint's fingerprint when it was found complete (local sources).
    pub fingerprint: Option<Fingerprint>,
    /// Enqueued again while it ran: push it once more afterwards.
    pub dirty: bool,
    /// Failed for good on its last attempt: queued behind the items that have not failed,
    /// so that it never holds them back (see [`TargetLive::ordered_pending`]).
    pub failed: bool,
    /// What to read and what to keep from the ref's head (per-file settling, tree jobs).
    pub plan: Option<std::sync::Arc<Plan>>,
}

impl Pending {
    /// A new item, found at `since_ms`.
    pub fn new(since_ms: i64, trigger: Cause) -> Self {
        Pending {
            since_ms,
            trigger,
            fingerprint: None,
            dirty: false,
            failed: false,
            plan: None,
        }
    }
}

/// A transient failure waiting for its next attempt.
#[derive(Debug, Clone)]
pub struct Retry {
    pub at: Instant,
    pub at_ms: i64,
    pub item: String,
}

/// The last failure of a target.
#[derive(Debug, Clone, Serialize)]
pub struct FailureInfo {
    pub message: String,
    pub kind: FailureKind,
    pub at_ms: i64,
    pub attempts: u32,
    pub item: String,
}

/// Sums over the kept run history and this process's runs.
#[derive(Debug, Clone, Copy, Default)]
pub struct Totals {
    pub bytes_logical: u64,
    pub bytes_sent: u64,
    pub bytes_new: u64,
    /// Push runs: chunks stored as element deltas.
    pub chunks_delta: u64,
    /// Push runs: bytes element deltas saved against full frames.
    pub bytes_saved_by_deltas: u64,
    pub runs_succeeded: u64,
    pub runs_failed: u64,
    pub skipped: u64,
}

/// The run record kept open while a target's attempts at one item go on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenRun {
    pub id: u64,
    pub started_ms: i64,
    /// Attempts so far.
    pub attempts: u32,
}

/// Why an item will never reach the target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DropReason {
    /// The target fell more than `queue` items behind; `by` is the newer item.
    Superseded { by: String, queue: usize },
    /// A failed step that the newer step `by` overtook (the ref must not move back).
    Overtaken { by: String },
    /// The step folder vanished from the source.
    Vanished,
}

/// What a transition means outside memory: the sink writes each to the local index (and a
/// dropped item to the run history).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetEvent {
    /// `item` joined the queue.
    Queued { item: String, since_ms: i64 },
    /// `item` reached the target; the change was first seen at `since_ms` (if known).
    Landed { item: String, since_ms: Option<i64> },
    /// `item` was pushed but its source changed meanwhile: not recorded as done; it is
    /// queued again once discovery finds it complete.
    Unsettled { item: String, since_ms: Option<i64> },
    /// `item` will never reach the target; its run record is the caller's (a run that found
    /// its step folder gone).
    Abandoned { item: String },
    /// `item` will never reach the target; `open` is the run record to close, if any.
    Dropped {
        item: String,
        reason: DropReason,
        open: Option<OpenRun>,
    },
}

/// The job-wide facts [`TargetLive::enqueue`] needs.
#[derive(Debug, Clone, Copy)]
pub struct QueueRules<'a> {
    /// `layout = "steps"`: each item is pushed once; a done one is never queued again.
    pub steps: bool,
    /// The job's `queue` limit.
    pub queue: usize,
    /// The item the job is running now, if any.
    pub running_item: Option<&'a str>,
}

/// One target of one job, live.
#[derive(Debug, Default)]
pub struct TargetLive {
    pending: BTreeMap<String, Pending>,
    /// Items done or skipped (step layouts): never pushed again.
    done: HashSet<String>,
    /// The fingerprint last pushed (tree layouts).
    pushed: Option<Fingerprint>,
    running: bool,
    retry: Option<Retry>,
    /// The open run record while attempts go on.
    open_run: Option<OpenRun>,
    /// Failed and parked: not retried until the next trigger.
    failed: Option<FailureInfo>,
    last_error: Option<FailureInfo>,
    last_success_ms: Option<i64>,
    last_snapshot: Option<String>,
    totals: Totals,
}

impl TargetLive {
    /// The queued `item`, if it is queued.
    pub fn pending(&self, item: &str) -> Option<&Pending> {
        self.pending.get(item)
    }

    /// How many items are queued.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// When the oldest pending change happened (clock ms).
    pub fn oldest_pending_ms(&self) -> Option<i64> {
        self.pending.values().map(|p| p.since_ms).min()
    }

    /// Items done or skipped (step layouts).
    pub fn done(&self) -> &HashSet<String> {
        &self.done
    }

    /// A run for this target is in progress.
    pub fn is_running(&self) -> bool {
        self.running
    }

    /// The next attempt after a transient failure (or the slow retry of a parked target).
    pub fn retry(&self) -> Option<&Retry> {
        self.retry.as_ref()
    }

    /// Failed and parked until a trigger (or the slow retry).
    pub fn failed(&self) -> Option<&FailureInfo> {
        self.failed.as_ref()
    }

    /// The last failure, until a success clears it.
    pub fn last_error(&self) -> Option<&FailureInfo> {
        self.last_error.as_ref()
    }

    /// When the last run succeeded (clock ms).
    pub fn last_success_ms(&self) -> Option<i64> {
        self.last_success_ms
    }

    /// The snapshot the target's ref pointed to after the last push.
    pub fn last_snapshot(&self) -> Option<&String> {
        self.last_snapshot.as_ref()
    }

    /// Bytes and runs over the kept history and this process.
    pub fn totals(&self) -> &Totals {
        &self.totals
    }

    /// Pending items in the order they are pushed: step order (`step-9` before `step-10`),
    /// so that a target's ref ends at the newest checkpoint; items that failed for good come
    /// after the others, so that a failing item never blocks the ones behind it.
    pub fn ordered_pending(&self) -> Vec<(&String, &Pending)> {
        let mut v: Vec<_> = self.pending.iter().collect();
        v.sort_by(|a, b| {
            a.1.failed
                .cmp(&b.1.failed)
                .then_with(|| natural_cmp(a.0, b.0))
        });
        v
    }

    /// Adds `item` unless the target has it (steps) or it is already queued (then its
    /// fingerprint and plan are updated, and a running one is marked to run again). An
    /// unchanged tree is not queued again unless the API asked. A queue over its limit drops
    /// its oldest items (never the running one).
    pub fn enqueue(&mut self, item: &str, new: Pending, rules: QueueRules<'_>) -> Vec<TargetEvent> {
        if rules.steps && self.done.contains(item) {
            return Vec::new();
        }
        let running_this = self.running && rules.running_item == Some(item);
        if let Some(p) = self.pending.get_mut(item) {
            if running_this && p.fingerprint != new.fingerprint {
                p.dirty = true;
            }
            if new.fingerprint.is_some() {
                p.fingerprint = new.fingerprint;
            }
            if new.plan.is_some() {
                p.plan = new.plan;
            }
            return Vec::new();
        }
        if !rules.steps
            && new.trigger != Cause::Api
            && new.fingerprint.is_some()
            && self.pushed == new.fingerprint
        {
            return Vec::new();
        }
        let since_ms = new.since_ms;
        self.pending.insert(item.to_string(), new);
        let mut events = vec![TargetEvent::Queued {
            item: item.to_string(),
            since_ms,
        }];
        while self.pending.len() > rules.queue {
            let running = self.running;
            let Some(oldest) = self
                .ordered_pending()
                .into_iter()
                .map(|(n, _)| n.clone())
                .find(|n| !(running && rules.running_item == Some(n.as_str())))
            else {
                break;
            };
            self.pending.remove(&oldest);
            if rules.steps {
                self.done.insert(oldest.clone());
            }
            self.totals.skipped += 1;
            events.push(TargetEvent::Dropped {
                item: oldest,
                reason: DropReason::Superseded {
                    by: item.to_string(),
                    queue: rules.queue,
                },
                open: None,
            });
        }
        events
    }

    /// Back from the local index at start: an item left pending by a previous process.
    pub fn restore_pending(&mut self, item: String, since_ms: i64) {
        self.pending
            .insert(item, Pending::new(since_ms, Cause::Startup));
    }

    /// Back from the local index at start, or relearned from the ref log: the target has
    /// `item` (step layouts).
    pub fn restore_done(&mut self, item: String) {
        self.done.insert(item);
    }

    /// Counts a run of the kept history (newest first) into the totals and last outcomes.
    pub fn count_history(&mut self, r: &RunRecord) {
        let first = self.last_success_ms.is_none() && self.last_error.is_none();
        match r.state {
            RunState::Succeeded => {
                self.totals.runs_succeeded += 1;
                self.totals.bytes_logical += r.bytes_logical;
                self.totals.bytes_sent += r.bytes_sent;
                self.totals.bytes_new += r.bytes_new;
                self.totals.chunks_delta += r.chunks_delta;
                self.totals.bytes_saved_by_deltas += r.bytes_saved_by_deltas;
                if self.last_success_ms.is_none() {
                    self.last_success_ms = r.finished_ms;
                }
                if self.last_snapshot.is_none() {
                    self.last_snapshot = r.snapshot.clone();
                }
            }
            RunState::Failed => {
                self.totals.runs_failed += 1;
                if first {
                    self.last_error = Some(FailureInfo {
                        message: r.error.clone().unwrap_or_default(),
                        kind: r.error_kind.unwrap_or(FailureKind::Permanent),
                        at_ms: r.finished_ms.unwrap_or(r.started_ms),
                        attempts: r.attempts,
                        item: r.item.clone(),
                    });
                }
            }
            RunState::Skipped => self.totals.skipped += 1,
            _ => {}
        }
    }

    /// A run starts on this target: returns the run record still open from earlier attempts.
    pub fn start(&mut self) -> Option<OpenRun> {
        self.running = true;
        self.open_run
    }

    /// The run record still open from earlier attempts.
    #[cfg(test)]
    pub fn open_run(&self) -> Option<OpenRun> {
        self.open_run
    }

    /// The run ended (whatever its outcome).
    pub fn stop(&mut self) {
        self.running = false;
    }

    /// A shutdown dropped the run: its record is closed; the item stays pending.
    pub fn interrupt(&mut self) {
        self.running = false;
        self.open_run = None;
    }

    /// An API trigger: a parked target is retried now. Returns whether it was parked.
    pub fn release(&mut self) -> bool {
        if self.failed.take().is_some() {
            self.retry = None;
            self.open_run = None;
            return true;
        }
        false
    }

    /// `item` reached the target at `now_ms`. Returns [`TargetEvent::Landed`] (or
    /// [`TargetEvent::Unsettled`] when the source changed during the push), and the failed
    /// steps this one overtook, dropped.
    pub(super) fn succeed(
        &mut self,
        item: &str,
        o: &Outcome,
        now_ms: i64,
        layout: Option<Layout>,
    ) -> Vec<TargetEvent> {
        self.running = false;
        self.retry = None;
        self.failed = None;
        self.open_run = None;
        self.last_error = None;
        self.last_success_ms = Some(now_ms);
        if o.snapshot.is_some() {
            self.last_snapshot = o.snapshot.clone();
        }
        self.totals.runs_succeeded += 1;
        self.totals.bytes_logical += o.bytes_logical;
        self.totals.bytes_sent += o.bytes_sent;
        self.totals.bytes_new += o.bytes_new;
        self.totals.chunks_delta += o.chunks_delta;
        self.totals.bytes_saved_by_deltas += o.bytes_saved_by_deltas;
        let pending = self.pending.get(item).cloned();
        let since_ms = pending.as_ref().map(|p| p.since_ms);
        let mut events = vec![if o.changed {
            TargetEvent::Unsettled {
                item: item.to_string(),
                since_ms,
            }
        } else {
            TargetEvent::Landed {
                item: item.to_string(),
                since_ms,
            }
        }];
        match pending {
            Some(p) if p.dirty => {
                if let Some(q) = self.pending.get_mut(item) {
                    q.dirty = false;
                }
            }
            _ => {
                self.pending.remove(item);
                if o.changed {
                    return events;
                }
                match layout {
                    Some(Layout::Steps) => {
                        self.done.insert(item.to_string());
                        events.extend(self.overtaken(item));
                    }
                    Some(Layout::Tree) => self.pushed = pending.and_then(|p| p.fingerprint),
                    None => {}
                }
            }
        }
        events
    }

    /// Attempt `run.attempts` at `item` failed with `info`. Transient failures with
    /// attempts left wait `retry_in` (the run stays open, `retrying`); otherwise the run
    /// fails: a failed step goes behind the others (steps), and the target is parked only
    /// when nothing else is left, with a slow retry after `slow` (daemon mode).
    pub fn fail(
        &mut self,
        info: FailureInfo,
        run: OpenRun,
        retry_in: Option<Duration>,
        slow: Option<Duration>,
        steps: bool,
    ) -> RunState {
        self.running = false;
        self.last_error = Some(info.clone());
        let item = info.item.clone();
        let at_ms = info.at_ms;
        let (wait, state) = match retry_in {
            Some(d) => {
                self.open_run = Some(run);
                (Some(d), RunState::Retrying)
            }
            None => {
                self.open_run = None;
                self.totals.runs_failed += 1;
                let others = steps && {
                    if let Some(p) = self.pending.get_mut(&item) {
                        p.failed = true;
                    }
                    self.pending.iter().any(|(n, p)| *n != item && !p.failed)
                };
                if others {
                    (None, RunState::Failed)
                } else {
                    self.failed = Some(info);
                    (slow, RunState::Failed)
                }
            }
        };
        self.retry = wait.map(|d| Retry {
            at: Instant::now() + d,
            at_ms: at_ms + d.as_millis() as i64,
            item,
        });
        state
    }

    /// Takes `item` off the queue for good (a step layout remembers it as handled).
    pub fn drop_item(&mut self, item: &str, reason: DropReason) -> TargetEvent {
        let open = self.forget(item);
        TargetEvent::Dropped {
            item: item.to_string(),
            reason,
            open,
        }
    }

    /// [`Self::drop_item`] for the running item, whose run record the runner closes itself.
    pub fn abandon(&mut self, item: &str) -> TargetEvent {
        self.running = false;
        self.forget(item);
        TargetEvent::Abandoned {
            item: item.to_string(),
        }
    }

    fn forget(&mut self, item: &str) -> Option<OpenRun> {
        self.pending.remove(item);
        self.done.insert(item.to_string());
        self.totals.skipped += 1;
        if self.failed.as_ref().is_some_and(|f| f.item == item) {
            self.failed = None;
        }
        if self.retry.as_ref().is_some_and(|r| r.item == item) {
            self.retry = None;
        }
        self.open_run.take()
    }

    /// Failed steps queued before `item` (which just landed): the ref has moved past them,
    /// so pushing them now would move it back. Dropped.
    fn overtaken(&mut self, item: &str) -> Vec<TargetEvent> {
        let old: Vec<String> = self
            .pending
            .iter()
            .filter(|(n, p)| p.failed && natural_cmp(n, item).is_lt())
            .map(|(n, _)| n.clone())
            .collect();
        // `item`'s run record is closed already, so the drops carry no open run.
        old.iter()
            .map(|n| {
                let by = item.to_string();
                self.drop_item(n, DropReason::Overtaken { by })
            })
            .collect()
    }
}

#[cfg(test)]
#[path = "target_tests.rs"]
mod tests;
