//! Validation of `[[jobs]]` entries: sources, targets, completion rules and triggers.

use std::collections::BTreeMap;
use std::time::Duration;

use super::raw::RawJob;
use super::validate::{duration, Env, Problems};
use super::{Completion, JobConfig, JobKind, Layout, Pattern, ServerConfig, Target, Trigger};
use crate::store::StoreUrl;
use crate::store::UrlError;

const DEFAULT_SETTLE: Duration = Duration::from_secs(10);
const MIN_MAX_WAIT: Duration = Duration::from_secs(60);

/// A store URL or a plain path; relative paths resolve against `env.cwd`.
pub(super) fn parse_url(text: &str, env: &Env) -> Result<StoreUrl, UrlError> {
    let text = text.trim();
    let resolved = if !text.contains("://") && !text.starts_with('/') && !text.is_empty() {
        env.cwd.join(text).display().to_string()
    } else {
        text.to_string()
    };
    resolved.parse::<StoreUrl>()
}

/// Why a job's source or target names no location.
#[derive(Debug, thiserror::Error)]
pub(super) enum LocationError {
    #[error("no store named {name:?}: define [stores.{name}] with a url, or write a URL such as s3://bucket/prefix or ./folder")]
    UnknownStore { name: String },
    #[error(transparent)]
    Url(#[from] UrlError),
}

/// A store name from `[stores]`, or a URL / path.
pub(super) fn location(
    text: &str,
    stores: &BTreeMap<String, Target>,
    default_price: f64,
    env: &Env,
) -> Result<Target, LocationError> {
    if let Some(t) = stores.get(text) {
        return Ok(t.clone());
    }
    let looks_like_path =
        text.contains("://") || text.starts_with(['/', '.']) || text.contains('/');
    if !looks_like_path {
        return Err(LocationError::UnknownStore { name: text.into() });
    }
    Ok(Target {
        label: text.to_string(),
        url: parse_url(text, env)?,
        egress_usd_per_gb: default_price,
        key_file: None,
    })
}

pub(super) fn job(
    p: &mut Problems,
    key: &str,
    job: &RawJob,
    stores: &BTreeMap<String, Target>,
    server: &ServerConfig,
    env: &Env,
) -> Option<JobConfig> {
    let before = p.0.len();
    let price = server.egress_usd_per_gb;
    if job.kind.as_deref() == Some("pull") {
        return pull_job(p, key, job, stores, price, env);
    }
    super::pull::only_for_pull(p, key, job);
    let targets = targets(p, key, job, stores, price, env);
    let mirror = match job.kind.as_deref() {
        None | Some("push") | Some("replicate") => false,
        Some("mirror") => true,
        Some(other) => {
            p.add(
                format!("{key}.kind"),
                format!("{other:?} is not a job kind: use \"push\", \"replicate\", \"mirror\" or \"pull\" (or leave it out)"),
            );
            false
        }
    };
    if job.delete.is_some() && !mirror {
        p.add(
            format!("{key}.delete"),
            "applies to mirror jobs (kind = \"mirror\") only: remove it",
        );
    }
    let kind = match (&job.source, &job.from) {
        _ if mirror => mirror_kind(p, key, job, env),
        (Some(_), Some(_)) => {
            p.add(
                format!("{key}.from"),
                "set either source (push) or from (replicate), not both",
            );
            None
        }
        (None, None) => {
            p.add(
                key,
                "no source: set source = \"./folder\" or \"s3://bucket/prefix\" (push), or from = \"store or URL\" (replicate)",
            );
            None
        }
        (Some(src), None) => push_kind(p, key, job, src, env),
        (None, Some(from)) => replicate_kind(p, key, job, from, stores, price, env),
    };
    let source_url = kind.as_ref().map(|k| k.source_url().clone());
    for (t, target) in targets.iter().enumerate() {
        if Some(&target.url) == source_url.as_ref() {
            p.add(
                format!("{key}.targets[{t}]"),
                "is the job's own source: choose another repository",
            );
        }
    }
    let trigger = trigger(p, key, job, kind.as_ref());
    let queue = job.queue.unwrap_or(16);
    if !(1..=10_000).contains(&queue) {
        p.add(
            format!("{key}.queue"),
            "must be between 1 and 10000 pending items per target",
        );
    }
    let max_egress_per_day = egress_budget(p, key, job);
    if p.0.len() != before {
        return None;
    }
    Some(JobConfig {
        name: job.name.clone(),
        kind: kind?,
        targets,
        trigger: trigger?,
        queue,
        max_egress_per_day,
    })
}

/// `max_egress_per_day = "200GiB"`: a size above zero.
fn egress_budget(p: &mut Problems, key: &str, job: &RawJob) -> Option<u64> {
    let text = job.max_egress_per_day.as_deref()?;
    match text.trim().parse::<bytesize::ByteSize>() {
        Ok(b) if b.as_u64() > 0 => Some(b.as_u64()),
        _ => {
            p.add(
                format!("{key}.max_egress_per_day"),
                format!("{text:?} is not a size above zero: write e.g. \"200GiB\" or \"500MB\""),
            );
            None
        }
    }
}

/// `kind = "pull"`: one destination folder (the job's one target), its trigger and queue.
fn pull_job(
    p: &mut Problems,
    key: &str,
    job: &RawJob,
    stores: &BTreeMap<String, Target>,
    price: f64,
    env: &Env,
) -> Option<JobConfig> {
    let before = p.0.len();
    let pulled = super::pull::pull_kind(p, key, job, stores, price, env);
    let kind = pulled
        .as_ref()
        .map(|(pull, _)| JobKind::Pull(Box::new(pull.clone())));
    let trigger = trigger(p, key, job, kind.as_ref());
    let queue = job.queue.unwrap_or(16);
    if job.queue.is_some() {
        p.add(
            format!("{key}.queue"),
            "does not apply to pull jobs (they always take the ref's newest snapshot): remove it",
        );
    }
    if job.max_egress_per_day.is_some() {
        p.add(
            format!("{key}.max_egress_per_day"),
            "applies to push, replicate and mirror jobs (a pull job only reads): remove it",
        );
    }
    if p.0.len() != before {
        return None;
    }
    let (_, target) = pulled?;
    Some(JobConfig {
        name: job.name.clone(),
        kind: kind?,
        targets: vec![target],
        trigger: trigger?,
        queue,
        max_egress_per_day: None,
    })
}

/// The job's `targets`: 1 to 64 store names or URLs, none listed twice.
fn targets(
    p: &mut Problems,
    key: &str,
    job: &RawJob,
    stores: &BTreeMap<String, Target>,
    price: f64,
    env: &Env,
) -> Vec<Target> {
    let mut targets: Vec<Target> = Vec::new();
    if job.targets.is_empty() || job.targets.len() > 64 {
        p.add(
            format!("{key}.targets"),
            "list 1 to 64 target repositories (store names or URLs)",
        );
    }
    for (t, text) in job.targets.iter().enumerate() {
        match location(text, stores, price, env) {
            Ok(target) if targets.iter().any(|x| x.url == target.url) => p.add(
                format!("{key}.targets[{t}]"),
                format!("{} is listed twice: remove one", target.url),
            ),
            Ok(target) => targets.push(target),
            Err(e) => p.add(format!("{key}.targets[{t}]"), e),
        }
    }
    targets
}

/// `from = …`: a replicate job, which takes none of a push job's keys.
fn replicate_kind(
    p: &mut Problems,
    key: &str,
    job: &RawJob,
    from: &str,
    stores: &BTreeMap<String, Target>,
    price: f64,
    env: &Env,
) -> Option<JobKind> {
    let only_push = |p: &mut Problems, name: &str, set: bool| {
        if set {
            p.add(
                format!("{key}.{name}"),
                "applies to push jobs (with source = …) only: remove it",
            );
        }
    };
    only_push(p, "ref", job.reference.is_some());
    only_push(p, "merge", job.merge.is_some());
    only_push(p, "layout", job.layout.is_some());
    only_push(p, "settle", job.settle.is_some());
    only_push(p, "max_wait", job.max_wait.is_some());
    only_push(p, "marker", job.marker.is_some());
    only_push(p, "latest", job.latest.is_some());
    for (r, name) in job.refs.iter().flatten().enumerate() {
        if let Err(e) = crate::repo::check_ref_name(name) {
            p.add(format!("{key}.refs[{r}]"), e);
        }
    }
    match location(from, stores, price, env) {
        Ok(from) => Some(JobKind::Replicate {
            from,
            refs: job.refs.clone().unwrap_or_default(),
        }),
        Err(e) => {
            p.add(format!("{key}.from"), e);
            None
        }
    }
}

/// `kind = "mirror"`: a source like a push job's, plain-object destinations, no refs.
fn mirror_kind(p: &mut Problems, key: &str, job: &RawJob, env: &Env) -> Option<JobKind> {
    let not_here = |p: &mut Problems, name: &str, set: bool| {
        if set {
            p.add(
                format!("{key}.{name}"),
                "does not apply to mirror jobs (they write plain objects, not snapshots): remove it",
            );
        }
    };
    not_here(p, "from", job.from.is_some());
    not_here(p, "ref", job.reference.is_some());
    not_here(p, "refs", job.refs.is_some());
    not_here(p, "merge", job.merge.is_some());
    if job.layout.as_deref().is_some_and(|l| l != "tree") {
        p.add(
            format!("{key}.layout"),
            "mirror jobs mirror the whole source tree: remove layout",
        );
    }
    let Some(src) = &job.source else {
        p.add(
            key,
            "no source: set source = \"./folder\" or \"s3://bucket/prefix\" for a mirror job",
        );
        return None;
    };
    // Sources and completion rules are a push job's.
    let plain = RawJob {
        layout: None,
        reference: None,
        refs: None,
        merge: None,
        ..job.clone()
    };
    match push_kind(p, key, &plain, src, env)? {
        JobKind::Push {
            source, complete, ..
        } => Some(JobKind::Mirror {
            source,
            delete: job.delete.unwrap_or(false),
            complete,
        }),
        _ => None,
    }
}

fn push_kind(p: &mut Problems, key: &str, job: &RawJob, src: &str, env: &Env) -> Option<JobKind> {
    if job.refs.is_some() {
        p.add(
            format!("{key}.refs"),
            "applies to replicate jobs (with from = …) only: use ref = \"name\" for a push job",
        );
    }
    let source = match parse_url(src, env) {
        Ok(u) => u,
        Err(e) => {
            p.add(format!("{key}.source"), e);
            return None;
        }
    };
    let reference = job.reference.clone().unwrap_or_else(|| job.name.clone());
    if let Err(e) = crate::repo::check_ref_name(&reference) {
        p.add(format!("{key}.ref"), e);
    }
    let layout = match job.layout.as_deref() {
        None | Some("tree") => Layout::Tree,
        Some("steps") => Layout::Steps,
        Some(other) => {
            p.add(
                format!("{key}.layout"),
                format!("{other:?} is not a layout: use \"tree\" (the source is one tree) or \"steps\" (each subfolder is a checkpoint)"),
            );
            Layout::Tree
        }
    };
    let local = source.is_local();
    if let StoreUrl::Local(path) = &source {
        if !path.exists() {
            p.warn(
                format!("{key}.source"),
                format!("{} does not exist: create it, or fix the path (the daemon waits for it to appear and does not create it)", path.display()),
            );
        }
    }
    if !local {
        p.refuse_set(
            key,
            &[
                ("settle", job.settle.is_some()),
                ("max_wait", job.max_wait.is_some()),
                ("marker", job.marker.is_some()),
                ("latest", job.latest.is_some()),
            ],
            "checkpoint completion applies to local folder sources only: remove it",
        );
        if layout == Layout::Steps {
            p.add(
                format!("{key}.layout"),
                "\"steps\" needs a local folder source: use layout = \"tree\" for object prefixes",
            );
        }
    }
    Some(JobKind::Push {
        source,
        reference,
        layout,
        complete: completion(p, key, job, layout, local),
        merge: job.merge.unwrap_or(false),
    })
}

/// A push job's completion rules: settle, max_wait, marker and latest.
fn completion(
    p: &mut Problems,
    key: &str,
    job: &RawJob,
    layout: Layout,
    local: bool,
) -> Completion {
    let settle = duration(
        p,
        &format!("{key}.settle"),
        job.settle.as_deref(),
        if local {
            DEFAULT_SETTLE
        } else {
            Duration::ZERO
        },
    );
    // Default: ten settle periods, at least a minute.
    let max_wait = duration(
        p,
        &format!("{key}.max_wait"),
        job.max_wait.as_deref(),
        settle.saturating_mul(10).max(MIN_MAX_WAIT),
    );
    if job.max_wait.is_some() && max_wait < settle {
        p.add(
            format!("{key}.max_wait"),
            "shorter than settle: a file cannot settle sooner than settle; make it at least as long",
        );
    }
    let marker = job.marker.as_ref().and_then(|m| {
        if m.is_empty() || m.contains('/') || m == "*" {
            p.add(
                format!("{key}.marker"),
                format!("{m:?} is not a file-name pattern: write a name like \"_SUCCESS\" or \"*.done\" (no '/')"),
            );
            None
        } else {
            Some(Pattern(m.clone()))
        }
    });
    let latest = job.latest.as_ref().and_then(|l| {
        if layout != Layout::Steps {
            p.add(
                format!("{key}.latest"),
                "a latest pointer names a step folder: set layout = \"steps\"",
            );
            None
        } else if l.is_empty() || l.contains('/') {
            p.add(
                format!("{key}.latest"),
                format!("{l:?} is not a file name: write e.g. \"latest\""),
            );
            None
        } else {
            Some(l.clone())
        }
    });
    Completion {
        settle,
        max_wait,
        marker,
        latest,
    }
}

fn trigger(p: &mut Problems, key: &str, job: &RawJob, kind: Option<&JobKind>) -> Option<Trigger> {
    let watch = job.watch == Some(true);
    let set =
        usize::from(watch) + usize::from(job.every.is_some()) + usize::from(job.cron.is_some());
    if set != 1 {
        p.add(
            key,
            format!("{} triggers: set exactly one of watch = true, every = \"5m\" or cron = \"0 */6 * * *\"", if set == 0 { "no" } else { "several" }),
        );
        return None;
    }
    if watch {
        match kind {
            Some(JobKind::Push { source, .. } | JobKind::Mirror { source, .. })
                if source.is_local() => {}
            // Pull jobs watch the ref: a probe of its next log entry every `poll`.
            Some(JobKind::Pull(_)) => {}
            Some(_) => {
                p.add(format!("{key}.watch"), "watch needs a local folder source: use every = \"5m\" or cron = \"…\" for object prefixes and repositories");
                return None;
            }
            None => return None,
        }
        return Some(Trigger::Watch);
    }
    if let Some(every) = &job.every {
        let k = format!("{key}.every");
        let before = p.0.len();
        let d = duration(p, &k, Some(every), Duration::ZERO);
        if d < Duration::from_secs(1) {
            // A text that is not a duration was reported above; a short one is reported here
            // (a zero interval would never fire: the job would silently do nothing).
            if p.0.len() == before {
                p.add(
                    &k,
                    format!("{every:?} is shorter than 1s: use at least \"1s\""),
                );
            }
            return None;
        }
        return Some(Trigger::Every(d));
    }
    let text = job.cron.as_deref().unwrap_or("");
    let parser = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build();
    match parser.parse(text) {
        // A valid schedule may still name no real time (`0 0 31 2 *`: February 31st).
        Ok(c) if c.find_next_occurrence(&chrono::Utc::now(), false).is_err() => {
            p.add(
                format!("{key}.cron"),
                format!("{text:?} never fires (no such date): check the day and month fields"),
            );
            None
        }
        Ok(c) => Some(Trigger::Cron(Box::new(c), text.to_string())),
        Err(e) => {
            p.add(
                format!("{key}.cron"),
                format!("{text:?} is not a cron schedule ({e}): write five fields (minute hour day month weekday), e.g. \"0 */6 * * *\", or six with seconds first"),
            );
            None
        }
    }
}
