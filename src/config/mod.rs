//! Daemon and scheduled-sync configuration: parse (TOML, versioned, unknown keys refused) →
//! validate (every problem names its key and the fix) → typed [`Config`]. `ferry daemon`,
//! `ferry sync` and `ferry check-config` all load through [`Config::load`].

mod jobs;
mod pull;
mod raw;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::store::StoreUrl;

pub use pull::{Hooks, PullJob};
pub use validate::Env;

/// The embedded default configuration (`config/local.toml`): local folders and `file://`
/// repositories under `./ferry-local`, no cloud needed.
pub const LOCAL_TOML: &str = include_str!("../../config/local.toml");

/// Errors loading a config file. Each names the file, the key and the fix.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The config file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file's path.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The TOML does not parse, or a value has the wrong type.
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Parse {
        /// The file's path.
        path: String,
        /// Line of the error, from 1.
        line: usize,
        /// Column of the error, from 1.
        column: usize,
        /// The dotted key the error is at (empty at the top level).
        key: String,
        /// What is wrong and how to fix it.
        message: String,
    },
    /// The file parses, but values are invalid or inconsistent.
    #[error("{path}: {}", problems.join("; "))]
    Invalid {
        /// The file's path.
        path: String,
        /// Every problem found, each located at its key.
        problems: Vec<String>,
    },
}

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from (a path, or `<embedded config/local.toml>`), for messages.
    pub origin: String,
    /// `[server]`.
    pub server: ServerConfig,
    /// `[runner]`.
    pub runner: RunnerConfig,
    /// `[[jobs]]` in file order; names are unique.
    pub jobs: Vec<JobConfig>,
    /// Every store's `key_file`, with the store's URL, in config order: the daemon's keys,
    /// each bound to its store.
    pub store_keys: Vec<(StoreUrl, std::path::PathBuf)>,
    /// Things that load but are probably mistakes (`key: problem: fix`), e.g. a source
    /// folder that does not exist: `check-config` prints them, the daemon logs them.
    pub warnings: Vec<String>,
}

/// The HTTP server's settings.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Address the HTTP server listens on.
    pub bind: SocketAddr,
    /// Bearer token required by mutating endpoints; `None` leaves them open (loopback only).
    pub token: Option<Secret>,
    /// Default price of sending one GB to a target, for "egress cost avoided".
    pub egress_usd_per_gb: f64,
    /// Host names the server answers to besides IP addresses and `localhost` (lowercase, no
    /// port): a request naming any other host is refused (DNS rebinding).
    pub allowed_hosts: Vec<String>,
}

/// How runs are retried and stopped.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// Attempts after the first, for transient errors.
    pub retries: u32,
    /// Backoff before the first retry.
    pub retry_initial: Duration,
    /// Largest backoff between retries.
    pub retry_max: Duration,
    /// How long an in-flight run may take to finish after SIGTERM before it is interrupted.
    pub shutdown_grace: Duration,
    /// Finished runs kept in the local index.
    pub history: usize,
    /// `bwlimit`: the caps on the daemon's transfers, fixed or by time of day (UTC).
    pub bwlimit: Option<crate::store::bwlimit::Timetable>,
}

/// A string that never prints: `Debug` shows `***`, and it has no `Display` or `Serialize`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret read from the config or the environment.
    pub fn new(s: String) -> Self {
        Secret(s)
    }

    /// The secret itself, for the one place that must send it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("***")
    }
}

/// One configured job.
#[derive(Debug, Clone)]
pub struct JobConfig {
    /// Unique job name: the key of its state in the local index, the API and the metrics.
    pub name: String,
    /// What the job moves, from where.
    pub kind: JobKind,
    /// Where the job sends it; at least one.
    pub targets: Vec<Target>,
    /// What starts the job's runs.
    pub trigger: Trigger,
    /// Pending items a target may hold before the oldest are skipped.
    pub queue: usize,
    /// Bytes the job may send per UTC day, over all its targets (`max_egress_per_day`):
    /// once today's reach it, runs wait for the next day.
    pub max_egress_per_day: Option<u64>,
}

/// What a job moves.
#[derive(Debug, Clone)]
pub enum JobKind {
    /// Source (folder or object prefix) → target repositories, under `reference`.
    Push {
        /// The folder or object prefix to push.
        source: StoreUrl,
        /// The ref the job's snapshots go under.
        reference: String,
        /// Whether the source is one tree or a folder of checkpoint steps.
        layout: Layout,
        /// When a tree or step counts as complete.
        complete: Completion,
        /// Each push is laid over the ref's head (`PushMode::Merge`): writers pushing
        /// different files into one ref (one sidecar per rank) keep each other's files.
        merge: bool,
    },
    /// Source repository → target repositories; `refs` empty means every ref.
    Replicate {
        /// The source repository.
        from: Target,
        /// The refs to replicate; empty means every ref.
        refs: Vec<String>,
    },
    /// Source (folder or object prefix) → plain objects under each target prefix
    /// (`ferry mirror`), once the source tree is complete.
    Mirror {
        /// The folder or object prefix to mirror.
        source: StoreUrl,
        /// Whether destination objects missing from the source are deleted.
        delete: bool,
        /// When the source tree counts as complete.
        complete: Completion,
    },
    /// A source repository's ref → versions in a local folder (`ferry pull`); the job's one
    /// target is that folder.
    Pull(Box<PullJob>),
}

impl JobKind {
    /// The kind's name in configs, the API and the dashboard.
    pub fn name(&self) -> &'static str {
        match self {
            JobKind::Push { .. } => "push",
            JobKind::Replicate { .. } => "replicate",
            JobKind::Mirror { .. } => "mirror",
            JobKind::Pull(_) => "pull",
        }
    }

    /// Where the job reads from.
    pub fn source_url(&self) -> &StoreUrl {
        match self {
            JobKind::Push { source, .. } | JobKind::Mirror { source, .. } => source,
            JobKind::Replicate { from, .. } => &from.url,
            JobKind::Pull(p) => &p.from.url,
        }
    }
}

/// How a push job's source splits into checkpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// The whole source is one tree.
    Tree,
    /// Every subfolder of the source is a checkpoint, pushed once when complete.
    Steps,
}

/// When a checkpoint counts as complete.
#[derive(Debug, Clone, Default)]
pub struct Completion {
    /// No change for this long (per file in a tree job, per step folder in a steps job).
    pub settle: Duration,
    /// A file still changing after this long is reported as a warning (tree jobs: the
    /// repository keeps its previous version meanwhile).
    pub max_wait: Duration,
    /// A file whose name matches this pattern exists in the checkpoint's folder.
    pub marker: Option<Pattern>,
    /// A file in the source folder naming the newest complete step folder.
    pub latest: Option<String>,
}

/// A file-name pattern: `*` matches any run of characters, `?` any one character.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern(String);

impl Pattern {
    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Whether `name` (one file name, no `/`) matches the whole pattern.
    pub fn matches(&self, name: &str) -> bool {
        glob(self.0.as_bytes(), name.as_bytes())
    }
}

fn glob(p: &[u8], s: &[u8]) -> bool {
    match (p.first(), s.first()) {
        (None, None) => true,
        (Some(b'*'), _) => glob(&p[1..], s) || (!s.is_empty() && glob(p, &s[1..])),
        (Some(b'?'), Some(_)) => glob(&p[1..], &s[1..]),
        (Some(a), Some(b)) if a == b => glob(&p[1..], &s[1..]),
        _ => false,
    }
}

/// A repository a job writes to (or replicates from).
#[derive(Debug, Clone)]
pub struct Target {
    /// The store name from `[stores]`, or the URL as written.
    pub label: String,
    /// The target's store URL.
    pub url: StoreUrl,
    /// Price of sending one GB to this target, for "egress cost avoided".
    pub egress_usd_per_gb: f64,
    /// `key_file` of its `[stores]` entry: the key an encrypted repository there opens with
    /// (and a repository the daemon creates there is encrypted under).
    pub key_file: Option<std::path::PathBuf>,
}

/// What starts a job's runs.
#[derive(Debug, Clone)]
pub enum Trigger {
    /// Filesystem events on the source folder (pull jobs: a probe of the ref every `poll`).
    Watch,
    /// At a fixed interval.
    Every(Duration),
    /// A cron schedule, evaluated in UTC; the text as written.
    Cron(Box<croner::Cron>, String),
}

impl Trigger {
    /// `watch`, `every 5m` or `cron 0 */6 * * *`.
    pub fn describe(&self) -> String {
        match self {
            Trigger::Watch => "watch".into(),
            Trigger::Every(d) => format!("every {}", humantime::format_duration(*d)),
            Trigger::Cron(_, text) => format!("cron {text}"),
        }
    }
}

impl Config {
    /// Reads and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: origin.clone(),
            source,
        })?;
        Self::from_toml(&text, &origin, &Env::from_process())
    }

    /// Loads `path`, or the embedded `config/local.toml` when `None`.
    pub fn load_or_default(path: Option<&PathBuf>) -> Result<Config, ConfigError> {
        match path {
            Some(p) => Self::load(p),
            None => Self::from_toml(
                LOCAL_TOML,
                "<embedded config/local.toml>",
                &Env::from_process(),
            ),
        }
    }

    /// Parses and validates TOML text; `origin` names it in errors, `env` supplies the
    /// environment (token variables, the working directory for relative paths).
    pub fn from_toml(text: &str, origin: &str, env: &Env) -> Result<Config, ConfigError> {
        let raw = validate::parse(text, origin)?;
        validate::validate(raw, origin, env)
    }

    /// The same config listening on `bind` instead (`ferry daemon --bind`), under the same
    /// rule: off loopback only with a token.
    pub fn with_bind(mut self, bind: SocketAddr) -> Result<Config, ConfigError> {
        if !bind.ip().is_loopback() && self.server.token.is_none() {
            return Err(ConfigError::Invalid {
                path: self.origin.clone(),
                problems: vec![format!(
                    "--bind {bind}: not a loopback address and no API token is configured: set server.token_env (or token_file), or bind 127.0.0.1"
                )],
            });
        }
        self.server.bind = bind;
        Ok(self)
    }

    /// The job named `name`, if configured.
    pub fn job(&self, name: &str) -> Option<&JobConfig> {
        self.jobs.iter().find(|j| j.name == name)
    }
}

#[cfg(test)]
mod tests;
#[cfg(test)]
mod tests_pull;
#[cfg(test)]
mod tests_triggers;
