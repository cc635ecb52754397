//! The sidecar daemon and `ferry sync`: jobs from the config, each with a discovery task
//! (watch or schedule) feeding per-target pending queues and one worker that runs them.
//! State lives in memory for the API and in the local index for restarts.
//!
//! Shutdown: cancelling the token stops discovery and the workers take no new work; a
//! running push gets `runner.shutdown_grace` to finish, then is dropped at whatever await
//! point it reached (the repository is valid at every point, and landed packs are in the
//! local index). Its item stays pending in the index and runs again on the next start.

mod budget;
mod bwlimit;
mod clock;
mod discover;
mod dropped;
mod execute;
mod hook;
pub(crate) mod pull;
pub(crate) mod retry;
mod runner;
pub(crate) mod scan;
pub(crate) mod settle;
mod sink;
pub(crate) mod state;
pub(crate) mod target;
mod tree;
mod views;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use clock::{Clock, ClockError};
pub(crate) use sink::metric;
#[cfg(test)]
use state::RunState;
pub(crate) use state::{JobStatus, RunRecord};
pub(crate) use views::{render_status, RunFilter, SyncReport, TriggerOutcome};

use crate::app::App;
use crate::config::{Config, JobKind, Layout, Trigger};
use crate::index::{IndexError, JobLog};
use scan::Fingerprint;
use state::{Cause, Job};
use target::{Pending, QueueRules};

/// Errors starting or asking the daemon.
#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    /// The local index failed.
    #[error(transparent)]
    Index(#[from] IndexError),
    /// An operation failed (the error names the object and the fix).
    #[error(transparent)]
    Op(#[from] crate::ops::OpError),
    /// `ferry sync JOB` of a job the config does not have.
    #[error("no job named {name:?} in {origin}: the jobs are {known}")]
    NoSuchJob {
        /// The name asked for.
        name: String,
        /// The config's origin.
        origin: String,
        /// The configured job names, comma-separated.
        known: String,
    },
    /// A blocking task of the daemon failed to complete; the join error, as text.
    #[error("internal task failed: {0}")]
    Join(String),
}

/// The run history is trimmed to `runner.history` once per this many run records written: it
/// holds at most `history + TRIM_EVERY` runs.
const TRIM_EVERY: u64 = 50;

/// Whether the process runs until stopped or drains its work once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `ferry daemon`: watch and schedule until SIGTERM; failed targets retry slowly.
    Daemon,
    /// `ferry sync`: discover once, run everything, return.
    Once,
}

pub(crate) struct Shared {
    config: Config,
    /// The operations, on the daemon's local index (held for its lifetime).
    app: App,
    log: JobLog,
    clock: Clock,
    jobs: Vec<Arc<Job>>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    mode: Mode,
    ready: AtomicBool,
    started_ms: i64,
    runs_written: AtomicU64,
    runs_trimmed: AtomicU64,
}

/// A running (or once-running) set of jobs. Cheap to clone.
#[derive(Clone)]
pub struct Daemon {
    shared: Arc<Shared>,
}

async fn blocking<R: Send + 'static>(
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R, DaemonError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| DaemonError::Join(e.to_string()))
}

impl Daemon {
    /// Opens the local index (waiting up to a minute for another ferry to release it) and
    /// loads each job's pending work and recent runs.
    pub async fn open(
        config: Config,
        index_dir: &Path,
        clock: Clock,
        mode: Mode,
    ) -> Result<Daemon, DaemonError> {
        // The daemon's edge: the environment's store and mirror settings, read once.
        let mut settings = crate::app::Settings::from_env().map_err(crate::ops::OpError::from)?;
        settings.store.bandwidth = bwlimit::bandwidth(&config, &clock);
        let mut sources = crate::app::Settings::key_sources(Vec::new());
        sources.bound = config
            .store_keys
            .iter()
            .map(|(url, file)| (url.to_string(), file.clone()))
            .collect();
        settings.keys = crate::crypto::Keyring::read(sources)
            .map_err(|e| crate::ops::OpError::Repo(e.into()))?;
        let bandwidth = settings.store.bandwidth.clone();
        let app = App::new(index_dir.to_path_buf(), settings);
        let index = app.index().await?.clone();
        let log = blocking(move || index.job_log()).await??;
        let jobs: Vec<Arc<Job>> = config
            .jobs
            .iter()
            .cloned()
            .map(|j| Arc::new(Job::new(j)))
            .collect();
        let started_ms = clock.now_ms();
        let shared = Arc::new(Shared {
            config,
            app,
            log,
            clock,
            jobs,
            shutdown: CancellationToken::new(),
            tracker: TaskTracker::new(),
            mode,
            ready: AtomicBool::new(false),
            started_ms,
            runs_written: AtomicU64::new(0),
            runs_trimmed: AtomicU64::new(0),
        });
        if let (Some(table), Some(bw)) = (shared.config.runner.bwlimit.clone(), bandwidth) {
            let (clock, stop) = (shared.clock.clone(), shared.shutdown.clone());
            shared
                .tracker
                .spawn(bwlimit::follow(table, bw, clock, stop));
        }
        views::load(&shared).await?;
        pull::load(&shared).await;
        budget::seed(&shared).await;
        Ok(Daemon { shared })
    }

    /// Starts every job's discovery and worker (daemon mode).
    pub fn start(&self) {
        let s = &self.shared;
        for job in &s.jobs {
            let next = clock::next_fire(&job.config.trigger, s.clock.now());
            job.with(|l| l.next_fire_ms = next.map(|t| t.timestamp_millis()));
            let (sh, j) = (s.clone(), job.clone());
            let pull = matches!(job.config.kind, JobKind::Pull(_));
            match job.config.trigger {
                Trigger::Watch if pull => s.tracker.spawn(pull::watch_loop(sh, j)),
                _ if pull => s.tracker.spawn(pull::schedule_loop(sh, j)),
                Trigger::Watch => s.tracker.spawn(discover::watch_loop(sh, j)),
                _ => s.tracker.spawn(discover::schedule_loop(sh, j)),
            };
            s.tracker.spawn(runner::work(s.clone(), job.clone()));
            // Work left pending by a previous run starts right away.
            job.wake.notify_one();
        }
        s.ready.store(true, Ordering::Release);
    }

    /// Runs the selected jobs (all when `only` is `None`) once: discover, run, retry, report.
    pub async fn sync(&self, only: Option<&str>) -> Result<SyncReport, DaemonError> {
        let s = &self.shared;
        let jobs: Vec<Arc<Job>> = match only {
            Some(name) => vec![self.find(name)?],
            None => s.jobs.clone(),
        };
        let log = s.log.clone();
        let first_run = blocking(move || log.next_run_id()).await??;
        let mut tasks = tokio::task::JoinSet::new();
        for job in &jobs {
            let (sh, j) = (s.clone(), job.clone());
            tasks.spawn(async move {
                discover::seed_done(&sh, &j).await;
                discover::discover_once(&sh, &j, Cause::Sync).await;
                runner::work(sh, j).await;
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.map_err(|e| DaemonError::Join(e.to_string()))?;
        }
        self.flush().await;
        views::sync_report(self, &jobs, first_run).await
    }

    fn find(&self, name: &str) -> Result<Arc<Job>, DaemonError> {
        self.shared
            .jobs
            .iter()
            .find(|j| j.config.name == name)
            .cloned()
            .ok_or_else(|| DaemonError::NoSuchJob {
                name: name.into(),
                origin: self.shared.config.origin.clone(),
                known: self
                    .shared
                    .jobs
                    .iter()
                    .map(|j| j.config.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// The config the daemon runs.
    pub fn config(&self) -> &Config {
        &self.shared.config
    }

    /// The bandwidth limit in force (`[runner] bwlimit`, its timetable applied), if any.
    pub fn bwlimit(&self) -> Option<crate::store::bwlimit::BwLimit> {
        let store = &self.shared.app.settings().store;
        store.bandwidth.as_ref().map(|bw| bw.limit())
    }

    /// The clock schedules are evaluated on.
    pub fn clock(&self) -> &Clock {
        &self.shared.clock
    }

    /// Cancelled when the daemon shuts down (the HTTP server stops with it).
    pub fn shutdown_token(&self) -> CancellationToken {
        self.shared.shutdown.clone()
    }

    /// True once jobs are started and until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.shared.ready.load(Ordering::Acquire) && !self.shared.shutdown.is_cancelled()
    }

    /// Stops taking work, lets the running push finish within the grace period, and waits at
    /// most `bound` for every task. Returns false if some task was still running.
    pub async fn shutdown(&self, bound: Duration) -> bool {
        let s = &self.shared;
        s.ready.store(false, Ordering::Release);
        s.shutdown.cancel();
        s.tracker.close();
        let done = tokio::time::timeout(bound, s.tracker.wait()).await.is_ok();
        self.flush().await;
        done
    }

    /// Spawns a task that stops with the daemon (the HTTP server).
    pub fn spawn<F>(&self, f: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        self.shared.tracker.spawn(f);
    }

    async fn flush(&self) {
        let log = self.shared.log.clone();
        if let Ok(Err(e)) = blocking(move || log.flush()).await {
            tracing::warn!(error = %e, "cannot flush the local index");
        }
    }

    /// Starts a run of `name` now: failed targets are retried, scheduled jobs look at their
    /// source, watched ones rescan (a checkpoint still has to be complete to be pushed).
    pub async fn trigger(&self, name: &str) -> Result<TriggerOutcome, DaemonError> {
        let job = self.find(name)?;
        let s = &self.shared;
        job.with(|l| {
            for t in &mut l.targets {
                t.release();
            }
        });
        // A watched pull job pulls now (its watch only probes the ref).
        let pull = matches!(job.config.kind, JobKind::Pull(_));
        let action = if matches!(job.config.trigger, Trigger::Watch) && !pull {
            job.rescan.notify_one();
            "rescan"
        } else {
            discover::discover_once(s, &job, Cause::Api).await;
            "queued"
        };
        job.wake.notify_one();
        Ok(TriggerOutcome {
            job: name.to_string(),
            action: action.to_string(),
            pending: job.with(|l| l.targets.iter().map(|t| t.pending_len()).sum()),
        })
    }

    /// Every job's status now, in config order.
    pub fn jobs(&self) -> Vec<JobStatus> {
        let now = self.shared.clock.now_ms();
        self.shared.jobs.iter().map(|j| j.status(now)).collect()
    }

    /// The status of the job named `name`, if configured.
    pub fn job(&self, name: &str) -> Option<JobStatus> {
        let now = self.shared.clock.now_ms();
        self.find(name).ok().map(|j| j.status(now))
    }
}

impl Shared {
    /// Adds `item` to every target that lacks it. A target over its queue limit skips its
    /// oldest pending items (a newer checkpoint supersedes them). A failed target stays
    /// parked until its slow retry or an API trigger, so that it does not drag every new
    /// checkpoint through a fan-out push that is bound to fail.
    async fn enqueue(
        &self,
        job: &Arc<Job>,
        item: &str,
        since_ms: i64,
        trigger: Cause,
        fp: Option<Fingerprint>,
        plan: Option<Arc<settle::Plan>>,
    ) {
        let steps = matches!(
            job.config.kind,
            JobKind::Push {
                layout: Layout::Steps,
                ..
            }
        );
        let events: Vec<_> = job.with(|live| {
            let running_item = live.running.as_ref().map(|r| r.item.clone());
            let rules = QueueRules {
                steps,
                queue: job.config.queue,
                running_item: running_item.as_deref(),
            };
            live.targets
                .iter_mut()
                .map(|t| {
                    let mut p = Pending::new(since_ms, trigger);
                    p.fingerprint = fp.clone();
                    p.plan = plan.clone();
                    t.enqueue(item, p, rules)
                })
                .collect()
        });
        let now = self.clock.now_ms();
        for (t, events) in events.into_iter().enumerate() {
            self.apply(job, t, trigger, now, events).await;
        }
        job.wake.notify_one();
    }
}

#[cfg(test)]
mod history_tests;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_budget;
#[cfg(test)]
mod tests_items;
#[cfg(test)]
mod tests_progress;
#[cfg(test)]
mod tests_pull;
#[cfg(test)]
mod tests_tree;
