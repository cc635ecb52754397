//! Pull jobs at run time: the watch (one GET of the ref's next log entry per `poll`), the run
//! (a cheap probe first, then `ferry pull` through [`crate::app::App`], then the hooks), the
//! job's live serving state (the version live, how far it lags the ref, bytes read vs
//! reused), and what the API shows of it.

use std::path::PathBuf;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::execute::{source_missing, Outcome};
use super::hook::{self, HookOutcome, Published};
use super::state::{Cause, Job, RunRecord, RunState};
use super::Shared;
use crate::app::{RefName, RefWatch};
use crate::config::{JobKind, PullJob};
use crate::ops::pull::{live_version, LiveVersion, PullOptions};
use crate::ops::OpError;
use crate::repo::RepoError;

/// The item of a pull job: the ref's newest snapshot.
pub const PULL_ITEM: &str = "latest";

/// What a pull run did (the run record's `pull`, `/api/v1/runs`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct PullRun {
    /// The ref log entry live afterwards.
    pub seq: u64,
    /// The version's folder (`DIR/versions/<seq>-<short id>`).
    pub version: String,
    /// False when the live version already was the ref's newest.
    pub published: bool,
    /// Bytes read from the store (frames as stored).
    pub bytes_read: u64,
    /// Bytes taken from earlier versions in the folder, each chunk verified.
    pub bytes_reused: u64,
    /// The hooks run after the publish, in order.
    #[serde(default)]
    pub hooks: Vec<HookOutcome>,
}

/// A pull job's serving state, live.
#[derive(Debug, Default)]
pub struct PullLive {
    /// What `DIR/current` points at.
    pub live: Option<LiveVersion>,
    /// The newest ref log entry seen (by a pull or a probe).
    pub head_seq: Option<u64>,
    /// A full pull ran in this process, so the live version is this config's: later runs
    /// look at the ref's next entry first and stop there when it is absent.
    pub checked: bool,
    pub bytes_read: u64,
    pub bytes_reused: u64,
    pub hook_failures: u64,
    /// The last hook failure, until a publish whose hooks all succeed.
    pub last_hook_error: Option<String>,
    /// The opened source repository, for probes.
    watch: Option<Arc<RefWatch>>,
}

impl PullLive {
    /// Counts a run of the kept history (newest first).
    pub fn count_history(&mut self, r: &RunRecord) {
        let Some(p) = r.pull.as_ref().filter(|_| r.state == RunState::Succeeded) else {
            return;
        };
        self.bytes_read += p.bytes_read;
        self.bytes_reused += p.bytes_reused;
        let failed: Vec<&HookOutcome> = p.hooks.iter().filter(|h| !h.ok).collect();
        self.hook_failures += failed.len() as u64;
        if self.head_seq.is_none() {
            self.head_seq = Some(p.seq);
            self.last_hook_error = failed.first().and_then(|h| h.error.clone());
        }
    }
}

/// `JobStatus::pull`: what a serving node serves.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PullStatus {
    /// The folder holding `current`.
    pub dest: String,
    /// The version live now, if any.
    pub live: Option<LiveStatus>,
    /// The newest ref log entry seen.
    pub head_seq: Option<u64>,
    /// Snapshots the ref is ahead of the live version (as far as the last look saw).
    pub lag_snapshots: Option<u64>,
    pub bytes_read: u64,
    pub bytes_reused: u64,
    /// The hooks configured: `command`, `http`.
    pub hooks: Vec<String>,
    pub hook_failures: u64,
    pub last_hook_error: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LiveStatus {
    pub seq: u64,
    /// The first 12 hex digits of the snapshot id.
    pub snapshot: String,
    pub path: String,
}

/// The status of a pull job's serving side.
pub(super) fn status(pull: &PullJob, live: &PullLive) -> PullStatus {
    let seq = live.live.as_ref().map(|l| l.seq);
    let mut hooks = Vec::new();
    if !pull.hooks.command.is_empty() {
        hooks.push("command".to_string());
    }
    if pull.hooks.url.is_some() {
        hooks.push("http".to_string());
    }
    PullStatus {
        dest: pull.dest.display().to_string(),
        live: live.live.as_ref().map(|l| LiveStatus {
            seq: l.seq,
            snapshot: l.short_id.clone(),
            path: l.path.display().to_string(),
        }),
        head_seq: live.head_seq.max(seq),
        lag_snapshots: live.head_seq.map(|h| h.saturating_sub(seq.unwrap_or(0))),
        bytes_read: live.bytes_read,
        bytes_reused: live.bytes_reused,
        hooks,
        hook_failures: live.hook_failures,
        last_hook_error: live.last_hook_error.clone(),
    }
}

/// One line for `ferry status`: the version live, the lag, bytes read vs reused, hooks.
pub(super) fn describe(j: &super::state::JobStatus, p: &PullStatus) -> String {
    let b = crate::cli::render::bytes;
    let live = match &p.live {
        Some(l) => format!(
            "serving {} #{} ({}) from {}",
            j.refs.first().map_or("", String::as_str),
            l.seq,
            l.snapshot,
            l.path
        ),
        None => format!("nothing published yet in {}", p.dest),
    };
    let lag = match p.lag_snapshots {
        None => "lag unknown".to_string(),
        Some(0) => "up to date with the ref".to_string(),
        Some(n) => format!("{n} snapshot(s) behind the ref"),
    };
    let hooks = match &p.last_hook_error {
        Some(e) => format!("; last hook failure (the version stays live): {e}"),
        None => String::new(),
    };
    format!(
        "{live}; {lag}; read {} from the store, reused {} locally{hooks}",
        b(p.bytes_read),
        b(p.bytes_reused)
    )
}

fn pull_job(job: &Job) -> Option<&PullJob> {
    match &job.config.kind {
        JobKind::Pull(p) => Some(p),
        _ => None,
    }
}

async fn read_live(dir: PathBuf) -> Result<Option<LiveVersion>, OpError> {
    tokio::task::spawn_blocking(move || live_version(&dir))
        .await
        .map_err(OpError::join)?
}

/// At start: each pull job's live version, from its folder.
pub(super) async fn load(shared: &Shared) {
    for job in &shared.jobs {
        let Some(pull) = pull_job(job) else { continue };
        match read_live(pull.dest.clone()).await {
            Ok(live) => job.with(|l| l.pull.live = live),
            Err(e) => job.with(|l| l.scan_error = Some(e.to_string())),
        }
    }
}

/// The source repository opened for probes (kept while it answers).
async fn ref_watch(shared: &Shared, job: &Job, pull: &PullJob) -> Result<Arc<RefWatch>, OpError> {
    if let Some(w) = job.with(|l| l.pull.watch.clone()) {
        return Ok(w);
    }
    let name = RefName::parse(&pull.reference)?;
    let w = Arc::new(shared.app.watch_ref(&pull.from.url, &name).await?);
    job.with(|l| l.pull.watch = Some(w.clone()));
    Ok(w)
}

/// The entry after the newest one known (seen in the ref, or live).
fn next_seq(job: &Job) -> u64 {
    job.with(|l| l.pull.head_seq.max(l.pull.live.as_ref().map(|v| v.seq)))
        .unwrap_or(0)
        + 1
}

/// Looks at the ref's log entry `next`: one GET. `Some(seq)` when it exists.
async fn probe(
    shared: &Shared,
    job: &Job,
    pull: &PullJob,
    next: u64,
) -> Result<Option<u64>, OpError> {
    let watch = ref_watch(shared, job, pull).await;
    let found = match watch {
        Ok(w) => w.entry(next).await,
        Err(e) => Err(e),
    };
    match found {
        Ok(Some(e)) => {
            job.with(|l| l.pull.head_seq = Some(e.seq));
            Ok(Some(e.seq))
        }
        Ok(None) => Ok(None),
        Err(e) => {
            // Open the repository again next time: it may have been replaced or unreachable.
            job.with(|l| l.pull.watch = None);
            Err(e)
        }
    }
}

/// `watch = true`: a full pull at start (it checks the live version against this config),
/// then one probe of the ref's next log entry every `poll`; a new entry queues a pull (and
/// releases a pull that failed for good). No probe while a pull is queued or running: it will
/// take the newest.
pub(super) async fn watch_loop(shared: Arc<Shared>, job: Arc<Job>) {
    let Some(pull) = pull_job(&job).cloned() else {
        return;
    };
    let start = shared.clock.now_ms();
    shared
        .enqueue(&job, PULL_ITEM, start, Cause::Watch, None, None)
        .await;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(pull.poll) => {}
            _ = job.rescan.notified() => {}
            _ = shared.shutdown.cancelled() => return,
        }
        // A queued pull takes the newest anyway; a parked one (failed for good) is not
        // queued work: keep looking, so the lag stays true and a new snapshot retries it.
        let busy = job.with(|l| {
            let t = &l.targets[0];
            l.running.is_some() || (t.pending_len() > 0 && t.failed().is_none())
        });
        if busy {
            continue;
        }
        super::sink::count_scan(&job);
        job.with(|l| l.scans += 1);
        match probe(&shared, &job, &pull, next_seq(&job)).await {
            Ok(Some(seq)) => {
                job.with(|l| l.scan_error = None);
                tracing::info!(job = %job.config.name, seq, "the ref has a new snapshot");
                // What failed for good (say, a glob the last snapshot lacked) may work now.
                job.with(|l| l.targets[0].release());
                let now = shared.clock.now_ms();
                shared
                    .enqueue(&job, PULL_ITEM, now, Cause::Watch, None, None)
                    .await;
            }
            Ok(None) => job.with(|l| l.scan_error = None),
            Err(e) => {
                let problem = format!(
                    "cannot look at ref {:?} in {}: {e}",
                    pull.reference, pull.from.url
                );
                job.with(|l| l.scan_error = Some(problem));
            }
        }
    }
}

/// `every` / `cron`: a pull at start (a serving node does not wait for its schedule to
/// serve), then the schedule's runs, each a probe of the ref first.
pub(super) async fn schedule_loop(shared: Arc<Shared>, job: Arc<Job>) {
    let cause = match job.config.trigger {
        crate::config::Trigger::Cron(..) => Cause::Cron,
        _ => Cause::Every,
    };
    let now = shared.clock.now_ms();
    shared
        .enqueue(&job, PULL_ITEM, now, cause, None, None)
        .await;
    super::discover::schedule_loop(shared, job).await;
}

/// One pull run: a probe first when this process already checked the live version (an API
/// trigger always pulls), then the pull, then the hooks when a version was published.
pub(super) async fn execute(
    shared: &Shared,
    job: &Job,
    pull: &PullJob,
    item: &str,
    progress: &crate::progress::Reporter,
) -> Result<Outcome, OpError> {
    let live = read_live(pull.dest.clone()).await?;
    let (cause, checked, head) = job.with(|l| {
        l.pull.live = live.clone();
        let cause = l.targets[0].pending(item).map(|p| p.trigger);
        (cause, l.pull.checked, l.pull.head_seq)
    });
    if let (true, Some(current)) = (checked && cause != Some(Cause::Api), &live) {
        let behind = head.is_some_and(|h| h > current.seq);
        if !behind && probe(shared, job, pull, current.seq + 1).await?.is_none() {
            return Ok(unchanged(current));
        }
    }
    let opts = PullOptions {
        keep: pull.keep,
        selection: pull.selection(),
        special_modes: Default::default(),
    };
    let report = match shared
        .app
        .pull(&pull.from.url, &pull.reference, &pull.dest, &opts, progress)
        .await
    {
        Ok(r) => r,
        // Nothing to serve yet: the repository or the ref has not been written.
        Err(e) if nothing_yet(&e, pull) => {
            tracing::info!(job = %job.config.name, from = %pull.from.url, error = %e, "nothing to pull yet");
            return Ok(Outcome {
                unchanged: true,
                ..Default::default()
            });
        }
        Err(e) => return Err(e),
    };
    let live = read_live(pull.dest.clone()).await?;
    job.with(|l| {
        l.pull.live = live;
        l.pull.checked = true;
        l.pull.head_seq = l.pull.head_seq.max(Some(report.seq));
    });
    let snapshot = report.snapshot.to_hex();
    let hooks = if report.published {
        let published = Published {
            name: report.name.clone(),
            seq: report.seq,
            snapshot: snapshot.clone(),
            path: report.version.clone(),
        };
        tracing::info!(job = %job.config.name, seq = report.seq, version = %report.version, "published");
        hook::run(&pull.hooks, &pull.dest.display().to_string(), &published).await
    } else {
        Vec::new()
    };
    let published = report.published;
    Ok(Outcome {
        snapshot: Some(snapshot),
        unchanged: !published,
        bytes_logical: if published { report.bytes } else { 0 },
        bytes_sent: report.bytes_read_from_store,
        bytes_new: if published {
            report.bytes.saturating_sub(report.bytes_reused)
        } else {
            0
        },
        pull: Some(PullRun {
            seq: report.seq,
            version: report.version,
            published,
            bytes_read: report.bytes_read_from_store,
            bytes_reused: report.bytes_reused,
            hooks,
        }),
        ..Default::default()
    })
}

/// The outcome of a run whose probe found nothing new.
fn unchanged(live: &LiveVersion) -> Outcome {
    Outcome {
        unchanged: true,
        pull: Some(PullRun {
            seq: live.seq,
            version: live.path.display().to_string(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn nothing_yet(e: &OpError, pull: &PullJob) -> bool {
    source_missing(e, &pull.from.url)
        || matches!(e, OpError::Repo(RepoError::NoSuchSnapshot { spec, .. }) if *spec == pull.reference)
}

/// A successful pull run's record and live state: its `pull` facts, the hooks that failed
/// (noted in `error`, logged, counted; the version stays published).
pub(super) fn finish(job: &Job, r: &mut RunRecord, o: &Outcome) {
    let Some(p) = &o.pull else { return };
    r.pull = Some(p.clone());
    let failed: Vec<&HookOutcome> = p.hooks.iter().filter(|h| !h.ok).collect();
    for h in &failed {
        tracing::warn!(job = %job.config.name, hook = %h.hook, error = h.error.as_deref().unwrap_or(""), "hook failed; the version stays published");
    }
    let note = failed
        .iter()
        .map(|h| {
            format!(
                "{} hook failed: {}",
                h.hook,
                h.error.as_deref().unwrap_or("")
            )
        })
        .collect::<Vec<_>>();
    if !note.is_empty() {
        r.error = Some(format!("published; {}", note.join("; ")));
    }
    job.with(|l| {
        l.pull.bytes_read += p.bytes_read;
        l.pull.bytes_reused += p.bytes_reused;
        l.pull.hook_failures += failed.len() as u64;
        if p.published {
            l.pull.last_hook_error = failed.first().and_then(|h| h.error.clone());
        }
    });
}
