//! Per-file settling: which files are pushed, which wait, lag and `max_wait`, over any
//! sequence of scans.

use std::collections::BTreeMap;
use std::time::Duration;

use proptest::prelude::*;

use super::*;

const SETTLE: Duration = Duration::from_secs(2);
const MAX_WAIT: Duration = Duration::from_secs(60);

fn st(size: u64, mtime_s: i64) -> FileState {
    FileState {
        size,
        mtime_ns: mtime_s * 1_000_000_000,
        ino: 1,
    }
}

fn files(list: &[(&str, FileState)]) -> BTreeMap<String, FileState> {
    list.iter().map(|(n, s)| (n.to_string(), *s)).collect()
}

#[test]
fn a_busy_file_waits_while_quiet_ones_are_pushed() {
    let mut s = FileSettler::default();
    let quiet = st(10, 100);
    // First sight at t=1000 s, trusting file times: the quiet file dates from t=100 s.
    let now = 1_000_000;
    let out = s.update(
        files(&[("a", quiet), ("busy", st(1, 999))]),
        now,
        SETTLE,
        MAX_WAIT,
        true,
        0,
    );
    assert!(out.pushable());
    assert_eq!(out.plan.ready.keys().collect::<Vec<_>>(), ["a"]);
    assert_eq!(out.waiting, ["busy"]);
    assert_eq!(out.recheck_ms, Some(999_000 + 2000));
    // The busy file changes on every scan: it keeps waiting; the plan stays the same.
    let mut plan = out.plan.clone();
    for i in 1..=5 {
        let out = s.update(
            files(&[("a", quiet), ("busy", st(1 + i, 1000 + i as i64))]),
            now + i as i64 * 1000,
            SETTLE,
            MAX_WAIT,
            true,
            0,
        );
        assert_eq!(out.plan, plan, "scan {i}");
        plan = out.plan;
    }
    // It stops changing: two seconds later it is ready too, and the plan changes.
    let last = st(6, 1005);
    let later = s.update(
        files(&[("a", quiet), ("busy", last)]),
        now + 7000,
        SETTLE,
        MAX_WAIT,
        true,
        0,
    );
    assert!(later.plan.held.is_empty(), "{later:?}");
    assert_ne!(later.plan.fingerprint, plan.fingerprint);
}

#[test]
fn without_trusted_file_times_a_new_file_waits_for_settle() {
    let mut s = FileSettler::default();
    let f = files(&[("copied", st(5, 1))]);
    let out = s.update(f.clone(), 10_000, SETTLE, MAX_WAIT, false, 0);
    assert!(!out.pushable(), "nothing has settled: nothing to push");
    assert_eq!(out.waiting_total, 1);
    let out = s.update(f, 12_000, SETTLE, MAX_WAIT, false, 0);
    assert!(out.plan.held.is_empty() && out.pushable());
}

#[test]
fn lag_counts_from_the_oldest_unsynced_change_and_max_wait_warns() {
    let mut s = FileSettler::default();
    let out = s.update(files(&[("a", st(1, 1))]), 5_000, SETTLE, MAX_WAIT, true, 0);
    assert_eq!(
        out.unsynced_since_ms,
        Some(1_000),
        "never pushed: since it was written"
    );
    assert_eq!(s.pushed(&out.plan), None, "everything pushed");
    // `a` starts changing at t=10 s and never stops.
    let mut out = Settled::default();
    for i in 0..=70 {
        let now = 10_000 + i * 1000;
        out = s.update(
            files(&[("a", st(2 + i as u64, now / 1000))]),
            now,
            SETTLE,
            MAX_WAIT,
            true,
            0,
        );
        assert_eq!(out.unsynced_since_ms, Some(10_000), "scan {i}");
        assert_eq!(out.overdue_total, usize::from(i >= 60), "scan {i}");
    }
    assert_eq!(out.overdue, ["a"]);
    // Removed unpushed: still unsynced (since its first unpushed change) until a push
    // records the removal.
    let gone = s.update(BTreeMap::new(), 100_000, SETTLE, MAX_WAIT, true, 0);
    assert_eq!(gone.unsynced_since_ms, Some(10_000));
    assert_eq!(s.pushed(&gone.plan), None);
}

proptest! {
    /// Whatever the scans see, every file is either pushed or held, a pushed file has been
    /// unchanged for `settle`, and the plan names exactly the current files.
    #[test]
    fn every_file_is_ready_or_held(
        scans in prop::collection::vec(
            prop::collection::btree_map("[a-e]", (0u64..3, 0i64..3), 0..5),
            1..12,
        ),
        step_ms in 100i64..3000,
        trust in any::<bool>(),
    ) {
        let mut s = FileSettler::default();
        let mut last_change: BTreeMap<String, (FileState, i64)> = BTreeMap::new();
        let mut prev = None;
        for (i, scan) in scans.iter().enumerate() {
            let now = 1_000_000 + i as i64 * step_ms;
            let prev_look: i64 = prev.replace(now).unwrap_or(now);
            let list: BTreeMap<String, FileState> = scan
                .iter()
                .map(|(n, (size, t))| (n.clone(), st(*size, 990 + t)))
                .collect();
            last_change.retain(|k, _| list.contains_key(k));
            for (n, f) in &list {
                let first = if trust { (f.mtime_ns / 1_000_000).min(now) } else { now };
                match last_change.get(n) {
                    Some((old, _)) if old == f => {}
                    Some(_) => {
                        let at = if trust { (f.mtime_ns / 1_000_000).max(prev_look).min(now) } else { now };
                        last_change.insert(n.clone(), (*f, at));
                    }
                    None => { last_change.insert(n.clone(), (*f, first)); }
                }
            }
            let out = s.update(list.clone(), now, SETTLE, MAX_WAIT, trust, 0);
            let mut all: Vec<&String> = out.plan.ready.keys().chain(&out.plan.held).collect();
            all.sort();
            prop_assert_eq!(all, list.keys().collect::<Vec<_>>());
            for (n, f) in &out.plan.ready {
                prop_assert_eq!(Some(f), list.get(n));
                prop_assert!(now - last_change[n].1 >= 2000, "{} pushed too early", n);
            }
            for n in &out.plan.held {
                prop_assert!(now - last_change[n].1 < 2000, "{} held too long", n);
            }
            prop_assert_eq!(out.pushable(), out.plan.held.is_empty() || !out.plan.ready.is_empty());
            if i % 3 == 2 {
                s.pushed(&out.plan);
            }
        }
    }
}

#[test]
fn with_trusted_file_times_a_change_between_looks_dates_from_its_mtime() {
    // Hourly looks: a file changed 50 minutes before the second look is ready at once.
    let mut s = FileSettler::default();
    let hour = 3_600_000;
    s.update(files(&[("a", st(1, 0))]), hour, SETTLE, MAX_WAIT, true, 0);
    let out = s.update(
        files(&[("a", st(2, 4200))]),
        2 * hour,
        SETTLE,
        MAX_WAIT,
        true,
        0,
    );
    assert!(out.plan.held.is_empty(), "{out:?}");
    // A copy that keeps an old time changed after the previous look, not before.
    let out = s.update(
        files(&[("a", st(3, 0))]),
        2 * hour + 1000,
        SETTLE,
        MAX_WAIT,
        true,
        0,
    );
    assert_eq!(out.waiting, ["a"], "{out:?}");
    // Without trusted times, a change waits for settle from when it was seen.
    let mut s = FileSettler::default();
    s.update(files(&[("a", st(1, 0))]), hour, SETTLE, MAX_WAIT, false, 0);
    let out = s.update(
        files(&[("a", st(2, 4200))]),
        2 * hour,
        SETTLE,
        MAX_WAIT,
        false,
        0,
    );
    assert_eq!(out.waiting, ["a"]);
}
