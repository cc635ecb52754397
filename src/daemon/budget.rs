//! Daily egress budgets (`max_egress_per_day`) and the egress counter of `/metrics`.
//!
//! Every successful run adds the bytes it sent (packs and pack indexes, as its run record
//! says) to its job's count for the current UTC day of the daemon's clock, and to
//! `ferry_egress_bytes_total{job,source_cloud,target}`. Before a run, a job whose count for
//! today has reached its budget does not run: it shows `over_budget` with the reason, its
//! pending items stay queued, and it resumes when the UTC day rolls over. The check is on
//! bytes already sent (no forecast before each run, which would read the source twice): one
//! run may overshoot the budget by its own size, never more. On start, today's count is
//! taken from the run records kept in the local index.

use serde::{Deserialize, Serialize};

use super::state::{Job, RunRecord, RunState};
use super::{blocking, metric, Shared};
use crate::config::JobKind;

/// Milliseconds in a UTC day.
const DAY_MS: i64 = 86_400_000;

/// Bytes a job sent on one UTC day.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Egress {
    /// Days since the Unix epoch (UTC).
    day: i64,
    sent: u64,
}

impl Egress {
    /// Adds `bytes` sent at `now_ms`; a new day starts from zero.
    pub fn add(&mut self, now_ms: i64, bytes: u64) {
        let day = now_ms.div_euclid(DAY_MS);
        if day != self.day {
            *self = Egress { day, sent: 0 };
        }
        self.sent = self.sent.saturating_add(bytes);
    }

    /// Bytes sent on the UTC day of `now_ms`.
    pub fn today(&self, now_ms: i64) -> u64 {
        if now_ms.div_euclid(DAY_MS) == self.day {
            self.sent
        } else {
            0
        }
    }
}

/// A job's budget as `/api/v1/jobs` shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BudgetStatus {
    /// `max_egress_per_day`, in bytes.
    pub max_per_day: u64,
    /// Bytes sent today (UTC, the daemon's clock).
    pub sent_today: u64,
    /// True when today's bytes reached the budget: runs wait for the next UTC day.
    pub over_budget: bool,
    /// Why the job is not running, when over budget.
    pub reason: Option<String>,
    /// When runs resume (the next UTC midnight, Unix ms), when over budget.
    pub resumes_ms: Option<i64>,
}

/// The budget of a job with `limit` that sent `egress`, at `now_ms`.
pub fn status(limit: Option<u64>, egress: &Egress, now_ms: i64) -> Option<BudgetStatus> {
    let max_per_day = limit?;
    let sent_today = egress.today(now_ms);
    let over_budget = sent_today >= max_per_day;
    let resumes_ms = (now_ms.div_euclid(DAY_MS) + 1) * DAY_MS;
    Some(BudgetStatus {
        max_per_day,
        sent_today,
        over_budget,
        reason: over_budget.then(|| {
            format!(
                "over its daily egress budget: sent {} of max_egress_per_day = {} today (UTC); runs resume at 00:00 UTC",
                bytesize::ByteSize(sent_today),
                bytesize::ByteSize(max_per_day)
            )
        }),
        resumes_ms: over_budget.then_some(resumes_ms),
    })
}

/// When `job` may run again, if it is over its budget at `now_ms` (Unix ms).
pub fn blocked_until(job: &Job, now_ms: i64) -> Option<i64> {
    let s = job.with(|l| status(job.config.max_egress_per_day, &l.egress, now_ms))?;
    s.resumes_ms.filter(|_| s.over_budget)
}

/// The URL the job's bytes leave from, for the `source_cloud` label.
fn source_url(job: &Job) -> String {
    match &job.config.kind {
        JobKind::Push { source, .. } | JobKind::Mirror { source, .. } => source.to_string(),
        JobKind::Replicate { from, .. } => from.url.to_string(),
        JobKind::Pull(p) => p.from.url.to_string(),
    }
}

/// Counts `bytes` sent by a run of `job` to target `t` at `now_ms`.
pub fn record(job: &Job, t: usize, bytes: u64, now_ms: i64) {
    job.with(|l| l.egress.add(now_ms, bytes));
    let labels = [
        ("job", job.config.name.clone()),
        (
            "source_cloud",
            crate::ops::egress::cloud_of(&source_url(job)).to_string(),
        ),
        ("target", job.target(t).label.clone()),
    ];
    metrics::counter!(metric::EGRESS_BYTES_TOTAL, &labels).increment(bytes);
}

/// Runs kept in the local index that are read to seed today's counts on start.
const SEED_RUNS: usize = 100_000;

/// Today's bytes per job from the run records the local index keeps (a restart does not
/// reset a budget).
pub async fn seed(shared: &Shared) {
    let log = shared.log.clone();
    let runs = match blocking(move || log.runs(None, SEED_RUNS)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => return tracing::warn!(error = %e, "egress budgets: cannot read past runs"),
        Err(e) => return tracing::warn!(error = %e, "egress budgets: cannot read past runs"),
    };
    let now_ms = shared.clock.now_ms();
    for (_, bytes) in runs {
        let Ok(r) = serde_json::from_slice::<RunRecord>(&bytes) else {
            continue;
        };
        let finished = r.finished_ms.unwrap_or(r.started_ms);
        if r.state != RunState::Succeeded
            || finished.div_euclid(DAY_MS) != now_ms.div_euclid(DAY_MS)
        {
            continue;
        }
        if let Some(job) = shared.jobs.iter().find(|j| j.config.name == r.job) {
            job.with(|l| l.egress.add(finished, r.bytes_sent));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIDNIGHT: i64 = 1_796_169_600_000; // 2026-12-02T00:00:00Z

    #[test]
    fn a_day_counts_from_zero_at_utc_midnight() {
        let mut e = Egress::default();
        e.add(MIDNIGHT + 1_000, 100);
        e.add(MIDNIGHT + DAY_MS - 1, 50);
        assert_eq!(e.today(MIDNIGHT + DAY_MS - 1), 150);
        assert_eq!(e.today(MIDNIGHT + DAY_MS), 0, "the next day starts at zero");
        e.add(MIDNIGHT + DAY_MS + 5, 7);
        assert_eq!(e.today(MIDNIGHT + DAY_MS + 6), 7);
    }

    #[test]
    fn over_budget_says_why_and_until_when() {
        let mut e = Egress::default();
        assert_eq!(status(None, &e, MIDNIGHT), None);
        e.add(MIDNIGHT + 10, 99);
        let under = status(Some(100), &e, MIDNIGHT + 20).unwrap();
        assert!(!under.over_budget && under.reason.is_none() && under.resumes_ms.is_none());
        e.add(MIDNIGHT + 30, 1);
        let over = status(Some(100), &e, MIDNIGHT + 40).unwrap();
        assert!(over.over_budget, "{over:?}");
        assert_eq!(over.sent_today, 100);
        assert_eq!(over.resumes_ms, Some(MIDNIGHT + DAY_MS));
        assert!(over.reason.unwrap().contains("max_egress_per_day"));
        // The next UTC day: under budget again.
        let next = status(Some(100), &e, MIDNIGHT + DAY_MS).unwrap();
        assert!(!next.over_budget && next.sent_today == 0, "{next:?}");
    }
}
