//! Pull jobs (`kind = "pull"`): a source repository's ref → versions in a local folder
//! (`ferry pull`), with the hooks run after each publish. The typed [`PullJob`] and its
//! validation; every problem names its key (`jobs[2].dest`, `jobs[2].hook_url`, …).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use super::jobs::{location, parse_url};
use super::raw::RawJob;
use super::validate::{duration, Env, Problems};
use super::{JobConfig, JobKind, Target};
use crate::ops::select::Selection;
use crate::store::StoreUrl;

const DEFAULT_KEEP: usize = 2;
const DEFAULT_POLL: Duration = Duration::from_secs(10);
const MIN_POLL: Duration = Duration::from_millis(100);
const DEFAULT_HOOK_TIMEOUT: Duration = Duration::from_secs(30);

/// A pull job: follows the newest snapshot of `reference` in `from`, publishing each new
/// one under `dest/versions/` and swapping `dest/current` to it.
#[derive(Debug, Clone)]
pub struct PullJob {
    /// The repository pulled from (a store name from `[stores]`, or its URL).
    pub from: Target,
    /// The ref followed (its newest snapshot).
    pub reference: String,
    /// The local folder holding `current` and `versions/`.
    pub dest: PathBuf,
    /// Complete versions kept, the live one among them (at least 1).
    pub keep: usize,
    /// `include` globs (as `--include`): only matching paths, checked when the config loads.
    pub include: Vec<String>,
    /// `exclude` globs (as `--exclude`): matching paths left out.
    pub exclude: Vec<String>,
    /// With `watch = true`: how often the ref is probed for a new entry (one small read).
    pub poll: Duration,
    /// What runs after each publish: a command and/or an HTTP POST.
    pub hooks: Hooks,
}

impl PullJob {
    /// The parsed globs (they parsed when the config was validated).
    pub fn selection(&self) -> Selection {
        Selection::new(&self.include, &self.exclude).unwrap_or_default()
    }
}

/// What runs after each publish. A failure is reported and never unpublishes.
#[derive(Debug, Clone, Default)]
pub struct Hooks {
    /// argv of a command (no shell); empty: none.
    pub command: Vec<String>,
    /// An http(s) URL that gets a POST of `{name, seq, snapshot, path}`.
    pub url: Option<url::Url>,
    /// How long each hook may take before it counts as failed (a command is then killed).
    pub timeout: Duration,
}

/// `kind = "pull"`: the job's kind and its one target, the destination folder.
pub(super) fn pull_kind(
    p: &mut Problems,
    key: &str,
    job: &RawJob,
    stores: &BTreeMap<String, Target>,
    price: f64,
    env: &Env,
) -> Option<(PullJob, Target)> {
    not_for_pull(p, key, job);
    let from = match &job.from {
        Some(from) => match location(from, stores, price, env) {
            Ok(t) => Some(t),
            Err(e) => {
                p.add(format!("{key}.from"), e);
                None
            }
        },
        None => {
            p.add(
                key,
                "no source repository: set from = \"store name or URL\" for a pull job",
            );
            None
        }
    };
    let reference = job.reference.clone().unwrap_or_else(|| job.name.clone());
    if crate::repo::check_ref_name(&reference).is_err() {
        p.add(
            format!("{key}.ref"),
            format!("{reference:?} is not a ref name: a pull job follows the ref's newest snapshot, so write the name alone (letters, digits, '.', '_', '-'; no @)"),
        );
    }
    let dest = dest(p, key, job, env);
    let keep = job.keep.unwrap_or(DEFAULT_KEEP);
    if !(1..=1000).contains(&keep) {
        p.add(
            format!("{key}.keep"),
            "must be between 1 and 1000 versions (the live one is always kept)",
        );
    }
    let include = job.include.clone().unwrap_or_default();
    let exclude = job.exclude.clone().unwrap_or_default();
    for (name, globs) in [("include", &include), ("exclude", &exclude)] {
        for (g, glob) in globs.iter().enumerate() {
            if let Err(e) = Selection::new(std::slice::from_ref(glob), &[]) {
                p.add(format!("{key}.{name}[{g}]"), e);
            }
        }
    }
    let poll = duration(p, &format!("{key}.poll"), job.poll.as_deref(), DEFAULT_POLL);
    if job.poll.is_some() && job.watch != Some(true) {
        p.add(
            format!("{key}.poll"),
            "applies to watch = true only (every and cron say when to look): remove it",
        );
    } else if poll < MIN_POLL {
        p.add(
            format!("{key}.poll"),
            "shorter than 100ms: use e.g. \"10s\"",
        );
    }
    let hooks = hooks(p, key, job);
    let (from, dest) = (from?, dest?);
    if let StoreUrl::Local(repo) = &from.url {
        if repo.starts_with(&dest) || dest.starts_with(repo) {
            p.add(
                format!("{key}.dest"),
                format!(
                    "{} overlaps the repository {}: pull into a folder outside it",
                    dest.display(),
                    from.url
                ),
            );
        }
    }
    let target = Target {
        label: job.dest.clone().unwrap_or_default(),
        url: StoreUrl::Local(dest.clone()),
        egress_usd_per_gb: from.egress_usd_per_gb,
        key_file: None,
    };
    let pull = PullJob {
        from,
        reference,
        dest,
        keep,
        include,
        exclude,
        poll,
        hooks,
    };
    Some((pull, target))
}

/// Two pull jobs publishing into one folder would take turns failing on its lock.
pub(super) fn check_dest_unique(
    p: &mut Problems,
    key: &str,
    job: &JobConfig,
    before: &[JobConfig],
) {
    let JobKind::Pull(new) = &job.kind else {
        return;
    };
    let other = before.iter().find_map(|j| match &j.kind {
        JobKind::Pull(old) if old.dest == new.dest => Some(&j.name),
        _ => None,
    });
    if let Some(other) = other {
        p.add(
            format!("{key}.dest"),
            format!(
                "{} is also job {other:?}'s dest: give each pull job its own folder",
                new.dest.display()
            ),
        );
    }
}

/// Keys of the other job kinds, refused on a pull job.
fn not_for_pull(p: &mut Problems, key: &str, job: &RawJob) {
    for (name, set) in [
        ("source", job.source.is_some()),
        ("targets", !job.targets.is_empty()),
        ("refs", job.refs.is_some()),
        ("merge", job.merge.is_some()),
        ("layout", job.layout.is_some()),
        ("settle", job.settle.is_some()),
        ("max_wait", job.max_wait.is_some()),
        ("marker", job.marker.is_some()),
        ("latest", job.latest.is_some()),
        ("delete", job.delete.is_some()),
    ] {
        if set {
            let fix = match name {
                "source" => "a pull job reads from a repository: use from = \"store or URL\"",
                "targets" => "a pull job writes into one folder: use dest = \"/path\"",
                "refs" => "a pull job follows one ref: use ref = \"name\"",
                _ => "does not apply to pull jobs: remove it",
            };
            p.add(format!("{key}.{name}"), fix);
        }
    }
}

/// Keys only pull jobs take, refused on the other kinds.
pub(super) fn only_for_pull(p: &mut Problems, key: &str, job: &RawJob) {
    p.refuse_set(
        key,
        &[
            ("dest", job.dest.is_some()),
            ("keep", job.keep.is_some()),
            ("include", job.include.is_some()),
            ("exclude", job.exclude.is_some()),
            ("poll", job.poll.is_some()),
            ("hook_command", job.hook_command.is_some()),
            ("hook_url", job.hook_url.is_some()),
            ("hook_timeout", job.hook_timeout.is_some()),
        ],
        "applies to pull jobs (kind = \"pull\") only: remove it, or set kind = \"pull\"",
    );
}

/// `dest`: a local folder (a path, or a `file://` URL).
fn dest(p: &mut Problems, key: &str, job: &RawJob, env: &Env) -> Option<PathBuf> {
    let k = format!("{key}.dest");
    let Some(text) = job.dest.as_deref() else {
        p.add(
            key,
            "no destination: set dest = \"/path/to/folder\" (versions are published as DIR/current)",
        );
        return None;
    };
    match parse_url(text, env) {
        Ok(StoreUrl::Local(path)) => Some(path),
        Ok(other) => {
            p.add(
                k,
                format!("{other} is not a local folder: a pull job publishes into a folder readers open (write a path)"),
            );
            None
        }
        Err(e) => {
            p.add(k, e);
            None
        }
    }
}

fn hooks(p: &mut Problems, key: &str, job: &RawJob) -> Hooks {
    let command = job.hook_command.clone().unwrap_or_default();
    if job.hook_command.is_some() && command.first().is_none_or(|c| c.trim().is_empty()) {
        p.add(
            format!("{key}.hook_command"),
            "needs a program: write an argv array, e.g. [\"/usr/local/bin/reload\", \"--model\", \"llama\"]",
        );
    }
    let url = job.hook_url.as_deref().and_then(|text| {
        let k = format!("{key}.hook_url");
        match url::Url::parse(text) {
            Ok(u) if !matches!(u.scheme(), "http" | "https") => {
                p.add(
                    k,
                    format!(
                        "scheme {:?} is not allowed: use an http:// or https:// URL",
                        u.scheme()
                    ),
                );
                None
            }
            Ok(u) if !u.username().is_empty() || u.password().is_some() => {
                p.add(k, "holds credentials: remove user:password@ from the URL (it would show in logs and the API)");
                None
            }
            Ok(u) if u.host_str().is_none_or(str::is_empty) => {
                p.add(k, "has no host: write e.g. \"http://127.0.0.1:8080/reload\"");
                None
            }
            Ok(u) => Some(u),
            Err(e) => {
                p.add(
                    k,
                    format!("not a URL ({e}): write e.g. \"http://127.0.0.1:8080/reload\""),
                );
                None
            }
        }
    });
    let timeout = duration(
        p,
        &format!("{key}.hook_timeout"),
        job.hook_timeout.as_deref(),
        DEFAULT_HOOK_TIMEOUT,
    );
    if timeout < Duration::from_millis(100) {
        p.add(
            format!("{key}.hook_timeout"),
            "shorter than 100ms: use e.g. \"30s\"",
        );
    }
    Hooks {
        command,
        url,
        timeout,
    }
}
