//! Transitions of a target's live state and the events each returns.

use std::time::Duration;

use super::*;

fn rules(steps: bool, queue: usize) -> QueueRules<'static> {
    QueueRules {
        steps,
        queue,
        running_item: None,
    }
}

fn fp(n: u64) -> Fingerprint {
    Fingerprint::from_digest(n, n, 0, blake3::hash(&n.to_le_bytes()))
}

fn pending(since_ms: i64, fingerprint: Option<Fingerprint>) -> Pending {
    let mut p = Pending::new(since_ms, Cause::Watch);
    p.fingerprint = fingerprint;
    p
}

fn queued(item: &str, since_ms: i64) -> TargetEvent {
    TargetEvent::Queued {
        item: item.into(),
        since_ms,
    }
}

fn ok(snapshot: &str) -> Outcome {
    Outcome {
        snapshot: Some(snapshot.into()),
        bytes_logical: 100,
        bytes_sent: 10,
        bytes_new: 20,
        chunks_delta: 3,
        bytes_saved_by_deltas: 7,
        ..Default::default()
    }
}

fn failure(item: &str, kind: FailureKind) -> FailureInfo {
    FailureInfo {
        message: "boom".into(),
        kind,
        at_ms: 5_000,
        attempts: 1,
        item: item.into(),
    }
}

const RUN: OpenRun = OpenRun {
    id: 7,
    started_ms: 1_000,
    attempts: 1,
};

#[test]
fn enqueue_queues_once_and_drops_the_oldest_beyond_the_limit() {
    let mut t = TargetLive::default();
    assert_eq!(
        t.enqueue("step-10", pending(1, None), rules(true, 2)),
        vec![queued("step-10", 1)]
    );
    // Queued already: nothing new.
    assert!(t
        .enqueue("step-10", pending(2, None), rules(true, 2))
        .is_empty());
    assert_eq!(
        t.enqueue("step-9", pending(3, None), rules(true, 2)),
        vec![queued("step-9", 3)]
    );
    // A third item over a queue of 2 drops the oldest in step order (step-9 before step-10).
    let events = t.enqueue("step-11", pending(4, None), rules(true, 2));
    assert_eq!(
        events,
        vec![
            queued("step-11", 4),
            TargetEvent::Dropped {
                item: "step-9".into(),
                reason: DropReason::Superseded {
                    by: "step-11".into(),
                    queue: 2
                },
                open: None,
            }
        ]
    );
    assert_eq!(t.pending_len(), 2);
    assert_eq!(t.totals().skipped, 1);
    // A dropped step counts as handled: it is never queued again.
    assert!(t.done().contains("step-9"));
    assert!(t
        .enqueue("step-9", pending(5, None), rules(true, 2))
        .is_empty());
}

#[test]
fn an_unchanged_tree_is_queued_again_only_by_the_api() {
    let mut t = TargetLive::default();
    t.enqueue("tree", pending(1, Some(fp(1))), rules(false, 4));
    let events = t.succeed("tree", &ok("s1"), 10, Some(Layout::Tree));
    assert_eq!(
        events,
        vec![TargetEvent::Landed {
            item: "tree".into(),
            since_ms: Some(1)
        }]
    );
    assert!(t
        .enqueue("tree", pending(2, Some(fp(1))), rules(false, 4))
        .is_empty());
    let mut api = pending(3, Some(fp(1)));
    api.trigger = Cause::Api;
    assert_eq!(
        t.enqueue("tree", api, rules(false, 4)),
        vec![queued("tree", 3)]
    );
    assert_eq!(
        t.enqueue("tree", pending(4, Some(fp(2))), rules(false, 4)),
        Vec::new(),
        "already queued"
    );
}

#[test]
fn a_change_while_running_marks_the_item_to_run_again() {
    let mut t = TargetLive::default();
    t.enqueue("tree", pending(1, Some(fp(1))), rules(false, 4));
    assert_eq!(t.start(), None);
    let running = QueueRules {
        running_item: Some("tree"),
        ..rules(false, 4)
    };
    assert!(t
        .enqueue("tree", pending(2, Some(fp(2))), running)
        .is_empty());
    assert!(t.pending("tree").unwrap().dirty);
    // The push landed, but the item stays queued (once more), no longer dirty.
    let events = t.succeed("tree", &ok("s1"), 10, Some(Layout::Tree));
    assert!(matches!(&events[..], [TargetEvent::Landed { .. }]));
    assert!(!t.pending("tree").unwrap().dirty);
    assert!(!t.is_running());
}

#[test]
fn a_landed_step_is_done_and_overtakes_failed_older_steps() {
    let mut t = TargetLive::default();
    for (i, s) in ["step-1", "step-2"].iter().enumerate() {
        t.enqueue(s, pending(i as i64, None), rules(true, 8));
    }
    t.start();
    // step-1 fails for good while step-2 waits: it goes behind, the target is not parked.
    let state = t.fail(
        failure("step-1", FailureKind::Permanent),
        RUN,
        None,
        Some(Duration::from_secs(60)),
        true,
    );
    assert_eq!(state, RunState::Failed);
    assert!(t.failed().is_none());
    assert!(t.pending("step-1").unwrap().failed);
    assert_eq!(t.ordered_pending()[0].0, "step-2");
    t.start();
    let events = t.succeed("step-2", &ok("abc"), 50, Some(Layout::Steps));
    assert_eq!(
        events,
        vec![
            TargetEvent::Landed {
                item: "step-2".into(),
                since_ms: Some(1)
            },
            TargetEvent::Dropped {
                item: "step-1".into(),
                reason: DropReason::Overtaken {
                    by: "step-2".into()
                },
                open: None,
            }
        ]
    );
    assert_eq!(t.pending_len(), 0);
    assert!(t.done().contains("step-1") && t.done().contains("step-2"));
    assert_eq!(t.last_snapshot().map(String::as_str), Some("abc"));
    assert_eq!(t.last_success_ms(), Some(50));
    let totals = t.totals();
    assert_eq!(
        (totals.runs_succeeded, totals.runs_failed, totals.skipped),
        (1, 1, 1)
    );
    assert_eq!(
        (totals.bytes_logical, totals.bytes_sent, totals.bytes_new),
        (100, 10, 20)
    );
    assert_eq!((totals.chunks_delta, totals.bytes_saved_by_deltas), (3, 7));
}

#[test]
fn a_source_that_changed_during_the_push_is_not_done() {
    let mut t = TargetLive::default();
    t.enqueue("step-1", pending(3, None), rules(true, 8));
    let changed = Outcome {
        changed: true,
        ..ok("s")
    };
    let events = t.succeed("step-1", &changed, 10, Some(Layout::Steps));
    assert_eq!(
        events,
        vec![TargetEvent::Unsettled {
            item: "step-1".into(),
            since_ms: Some(3)
        }]
    );
    assert!(!t.done().contains("step-1"));
    assert_eq!(t.pending_len(), 0);
}

#[test]
fn a_transient_failure_keeps_the_run_open_until_it_succeeds() {
    let mut t = TargetLive::default();
    t.enqueue("tree", pending(1, None), rules(false, 4));
    t.start();
    let state = t.fail(
        failure("tree", FailureKind::Transient),
        RUN,
        Some(Duration::from_secs(2)),
        None,
        false,
    );
    assert_eq!(state, RunState::Retrying);
    assert_eq!(t.retry().map(|r| r.at_ms), Some(7_000));
    assert_eq!(t.last_error().map(|e| e.message.as_str()), Some("boom"));
    assert_eq!(t.totals().runs_failed, 0);
    // The next attempt continues the same run record.
    assert_eq!(t.start(), Some(RUN));
    t.succeed("tree", &ok("s"), 9_000, Some(Layout::Tree));
    assert!(t.retry().is_none() && t.last_error().is_none());
    assert_eq!(t.open_run(), None);
}

#[test]
fn a_lone_permanent_failure_parks_the_target_until_released() {
    let mut t = TargetLive::default();
    t.enqueue("tree", pending(1, None), rules(false, 4));
    t.start();
    let slow = Duration::from_secs(600);
    let state = t.fail(
        failure("tree", FailureKind::Permanent),
        RUN,
        None,
        Some(slow),
        false,
    );
    assert_eq!(state, RunState::Failed);
    assert_eq!(t.failed().map(|f| f.item.as_str()), Some("tree"));
    assert_eq!(t.retry().map(|r| r.at_ms), Some(605_000), "slow retry");
    assert_eq!(t.totals().runs_failed, 1);
    assert!(t.release());
    assert!(t.failed().is_none() && t.retry().is_none());
    assert!(!t.release(), "released once");
}

#[test]
fn dropping_an_item_closes_its_open_run() {
    let mut t = TargetLive::default();
    t.enqueue("step-3", pending(1, None), rules(true, 4));
    t.start();
    t.fail(
        failure("step-3", FailureKind::Transient),
        RUN,
        Some(Duration::from_secs(1)),
        None,
        true,
    );
    assert_eq!(
        t.drop_item("step-3", DropReason::Vanished),
        TargetEvent::Dropped {
            item: "step-3".into(),
            reason: DropReason::Vanished,
            open: Some(RUN),
        }
    );
    assert!(t.retry().is_none() && t.open_run().is_none());
    assert!(t.done().contains("step-3"));
    t.enqueue("step-4", pending(2, None), rules(true, 4));
    t.start();
    assert_eq!(
        t.abandon("step-4"),
        TargetEvent::Abandoned {
            item: "step-4".into()
        }
    );
    assert!(!t.is_running() && t.pending_len() == 0);
    assert_eq!(t.totals().skipped, 2);
}

#[test]
fn history_fills_totals_and_the_latest_outcomes() {
    let record = |state: RunState, finished: i64, snapshot: Option<&str>| RunRecord {
        v: 1,
        id: 1,
        job: "j".into(),
        target: "t".into(),
        item: "tree".into(),
        trigger: Cause::Watch,
        state,
        started_ms: 0,
        finished_ms: Some(finished),
        attempts: 1,
        error: Some("e".into()),
        error_kind: None,
        snapshot: snapshot.map(String::from),
        unchanged: false,
        bytes_logical: 8,
        bytes_sent: 2,
        bytes_new: 4,
        chunks_delta: 2,
        bytes_saved_by_deltas: 5,
        duration_secs: 1.0,
        lag_secs: None,
        pull: None,
    };
    let mut t = TargetLive::default();
    // Newest first.
    t.count_history(&record(RunState::Succeeded, 30, Some("new")));
    t.count_history(&record(RunState::Failed, 20, None));
    t.count_history(&record(RunState::Succeeded, 10, Some("old")));
    t.count_history(&record(RunState::Skipped, 5, None));
    assert_eq!(t.last_success_ms(), Some(30));
    assert_eq!(t.last_snapshot().map(String::as_str), Some("new"));
    assert!(t.last_error().is_none(), "a later success hides it");
    let totals = t.totals();
    assert_eq!(
        (
            totals.runs_succeeded,
            totals.runs_failed,
            totals.skipped,
            totals.bytes_sent
        ),
        (2, 1, 1, 4)
    );
    // Only the successes' delta savings count, like their bytes.
    assert_eq!((totals.chunks_delta, totals.bytes_saved_by_deltas), (4, 10));
}

/// A run record written before deltas existed (no `chunks_delta`, no
/// `bytes_saved_by_deltas`) still decodes from the local index, with zero savings.
#[test]
fn a_run_record_from_before_deltas_decodes() {
    let old = r#"{"v":1,"id":7,"job":"j","target":"t","item":"step-1","trigger":"watch",
        "state":"succeeded","started_ms":1,"finished_ms":2,"attempts":1,"error":null,
        "error_kind":null,"snapshot":"ab","unchanged":false,"bytes_logical":8,
        "bytes_sent":2,"bytes_new":4,"duration_secs":1.0,"lag_secs":null}"#;
    let r: RunRecord = serde_json::from_str(old).unwrap();
    assert_eq!((r.id, r.bytes_sent), (7, 2));
    assert_eq!((r.chunks_delta, r.bytes_saved_by_deltas), (0, 0));
    let mut t = TargetLive::default();
    t.count_history(&r);
    assert_eq!(t.totals().bytes_saved_by_deltas, 0);
    let back = serde_json::to_value(&r).unwrap();
    assert_eq!(back["bytes_saved_by_deltas"], 0, "{back}");
}
