//! The config file as written (format version 1): serde types that mirror the TOML, reject
//! unknown keys, and hold strings where the typed config holds durations, URLs and schedules.

use std::collections::BTreeMap;

use serde::Deserialize;

/// The only format version this ferry reads.
pub const VERSION: i64 = 1;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawConfig {
    /// Checked against [`VERSION`] before this struct is parsed; kept so the key is known.
    #[allow(dead_code)]
    pub version: i64,
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub runner: RawRunner,
    #[serde(default)]
    pub stores: BTreeMap<String, RawStore>,
    #[serde(default)]
    pub jobs: Vec<RawJob>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawServer {
    pub bind: Option<String>,
    /// Name of the environment variable that holds the API token.
    pub token_env: Option<String>,
    /// A file whose first line is the API token.
    pub token_file: Option<String>,
    pub egress_usd_per_gb: Option<f64>,
    /// Host names (besides IP addresses and `localhost`) the server answers to.
    pub allowed_hosts: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRunner {
    pub retries: Option<u32>,
    pub retry_initial: Option<String>,
    pub retry_max: Option<String>,
    pub shutdown_grace: Option<String>,
    pub history: Option<usize>,
    pub bwlimit: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawStore {
    pub url: String,
    pub egress_usd_per_gb: Option<f64>,
    /// The key file of an encrypted repository at `url`.
    pub key_file: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawJob {
    pub name: String,
    /// A local folder or an object prefix (push jobs).
    pub source: Option<String>,
    /// A source repository (replicate jobs).
    pub from: Option<String>,
    /// Push, replicate and mirror jobs (pull jobs write into `dest` instead).
    #[serde(default)]
    pub targets: Vec<String>,
    #[serde(rename = "ref")]
    pub reference: Option<String>,
    /// Push jobs: lay each push over the ref's head instead of replacing its tree.
    pub merge: Option<bool>,
    /// Refs to replicate (replicate jobs; all when absent).
    pub refs: Option<Vec<String>>,
    pub layout: Option<String>,
    pub watch: Option<bool>,
    pub every: Option<String>,
    pub cron: Option<String>,
    pub settle: Option<String>,
    /// Tree jobs: how long a file may keep changing before the job warns about it.
    pub max_wait: Option<String>,
    pub marker: Option<String>,
    pub latest: Option<String>,
    pub queue: Option<usize>,
    /// "push", "replicate", "mirror" or "pull"; push / replicate inferred from source / from
    /// when absent.
    pub kind: Option<String>,
    /// Mirror jobs: remove destination objects the source no longer has.
    pub delete: Option<bool>,
    /// Pull jobs: the local folder versions are published in (`DIR/current`).
    pub dest: Option<String>,
    /// Pull jobs: complete versions kept (the live one among them).
    pub keep: Option<usize>,
    /// Pull jobs: only these paths of each snapshot (globs, as `ferry pull --include`).
    pub include: Option<Vec<String>>,
    /// Pull jobs: not these paths (globs, as `ferry pull --exclude`).
    pub exclude: Option<Vec<String>>,
    /// Pull jobs with `watch = true`: how often the ref's log is probed.
    pub poll: Option<String>,
    /// Pull jobs: a command run after each publish (argv, no shell).
    pub hook_command: Option<Vec<String>>,
    /// Pull jobs: an http(s) URL POSTed a JSON body after each publish.
    pub hook_url: Option<String>,
    /// Pull jobs: how long each hook may take.
    pub hook_timeout: Option<String>,
    /// Push, replicate and mirror jobs: bytes the job may send per UTC day (`"200GiB"`).
    pub max_egress_per_day: Option<String>,
}
