//! From TOML text to a typed [`Config`]: version check, strict parse with errors located at
//! the offending key, then validation that collects every problem with its key and fix.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::raw::{RawConfig, RawServer, RawStore, VERSION};
use super::{Config, ConfigError, RunnerConfig, Secret, ServerConfig, Target};

const DEFAULT_BIND: &str = "127.0.0.1:7878";
const DEFAULT_EGRESS_USD_PER_GB: f64 = 0.09;
const MIN_TOKEN_LEN: usize = 16;

/// What validation may read from outside the file: environment variables (the API token)
/// and the folder relative paths resolve against.
#[derive(Debug, Clone)]
pub struct Env {
    /// The folder relative paths in the config resolve against.
    pub cwd: PathBuf,
    /// Environment variables validation may read.
    pub vars: HashMap<String, String>,
}

impl Env {
    /// The process's working folder and environment.
    pub fn from_process() -> Self {
        Env {
            cwd: std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/")),
            vars: std::env::vars().collect(),
        }
    }
}

/// Checks the version, then parses strictly into the raw types.
pub(super) fn parse(text: &str, origin: &str) -> Result<RawConfig, ConfigError> {
    let table: toml::Table = text.parse().map_err(|e| parse_error(text, origin, &e))?;
    let invalid = |problem: String| ConfigError::Invalid {
        path: origin.to_string(),
        problems: vec![problem],
    };
    match table.get("version") {
        None => {
            return Err(invalid(format!(
                "version: missing: add `version = {VERSION}` at the top of the file"
            )))
        }
        Some(toml::Value::Integer(v)) if *v == VERSION => {}
        Some(v) => {
            return Err(invalid(format!(
                "version: {v} is not supported (this ferry reads version {VERSION}): upgrade ferry, or rewrite the file in format {VERSION}"
            )))
        }
    }
    toml::from_str(text).map_err(|e| parse_error(text, origin, &e))
}

fn parse_error(text: &str, origin: &str, e: &toml::de::Error) -> ConfigError {
    let offset = e.span().map_or(0, |s| s.start).min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    ConfigError::Parse {
        path: origin.to_string(),
        line,
        column,
        key: key_at(text, offset),
        message: e.message().trim().replace('\n', " "),
    }
}

/// The dotted key at `offset`: the enclosing `[table]` / `[[array]]` (with its index) and
/// the key written on that line, e.g. `jobs[1].every`.
pub(super) fn key_at(text: &str, offset: usize) -> String {
    let mut table = String::new();
    let mut counts: HashMap<String, usize> = HashMap::new();
    let mut line_start = 0;
    for line in text.split_inclusive('\n') {
        let end = line_start + line.len();
        let t = line.trim();
        let is_header = t.starts_with('[');
        if is_header {
            let array = t.starts_with("[[");
            let name = t
                .trim_start_matches('[')
                .split(']')
                .next()
                .unwrap_or("")
                .trim()
                .to_string();
            table = if array {
                let n = counts.entry(name.clone()).or_insert(0);
                *n += 1;
                format!("{name}[{}]", *n - 1)
            } else {
                name
            };
        }
        if offset < end || end == text.len() {
            let key = if is_header {
                None
            } else {
                t.split_once('=')
                    .map(|(k, _)| k.trim().trim_matches('"').to_string())
            };
            return match (table.is_empty(), key) {
                (true, Some(k)) => k,
                (false, Some(k)) => format!("{table}.{k}"),
                (true, None) => "(top level)".into(),
                (false, None) => table,
            };
        }
        line_start = end;
    }
    "(top level)".into()
}

/// Collects problems (each `key: problem: fix`) and warnings (the same form; the config
/// still loads).
pub(super) struct Problems(pub(super) Vec<String>, pub(super) Vec<String>);

impl Problems {
    pub(super) fn add(&mut self, key: impl std::fmt::Display, problem: impl std::fmt::Display) {
        self.0.push(format!("{key}: {problem}"));
    }

    pub(super) fn warn(&mut self, key: impl std::fmt::Display, problem: impl std::fmt::Display) {
        self.1.push(format!("{key}: {problem}"));
    }

    /// One problem at `<key>.<name>` for each named key that is set.
    pub(super) fn refuse_set(&mut self, key: &str, keys: &[(&str, bool)], problem: &str) {
        for (name, set) in keys {
            if *set {
                self.add(format!("{key}.{name}"), problem);
            }
        }
    }
}

pub(super) fn duration(
    p: &mut Problems,
    key: &str,
    text: Option<&str>,
    default: Duration,
) -> Duration {
    let Some(text) = text else { return default };
    match humantime::parse_duration(text) {
        Ok(d) => d,
        Err(e) => {
            p.add(
                key,
                format!("{text:?} is not a duration ({e}): write e.g. \"30s\", \"5m\" or \"1h\""),
            );
            default
        }
    }
}

fn price(p: &mut Problems, key: &str, v: Option<f64>, default: f64) -> f64 {
    match v {
        Some(v) if v.is_finite() && v >= 0.0 => v,
        Some(v) => {
            p.add(
                key,
                format!("{v} is not a price: use dollars per GB, e.g. 0.09"),
            );
            default
        }
        None => default,
    }
}

/// Names of jobs and stores: they appear in URLs, metrics labels and index keys.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.as_bytes()[0].is_ascii_alphanumeric()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

const NAME_RULE: &str =
    "use 1-64 letters, digits, '.', '_' and '-', starting with a letter or digit";

pub(super) fn validate(raw: RawConfig, origin: &str, env: &Env) -> Result<Config, ConfigError> {
    let mut p = Problems(Vec::new(), Vec::new());
    let server = server(&mut p, &raw, env);
    let runner = runner(&mut p, &raw);
    let stores = stores(&mut p, &raw, &server, env);

    if raw.jobs.is_empty() {
        p.add(
            "jobs",
            "no jobs: add a [[jobs]] table (config/local.toml shows one)",
        );
    }
    let mut names = HashSet::new();
    let mut jobs = Vec::new();
    for (i, job) in raw.jobs.iter().enumerate() {
        let key = format!("jobs[{i}]");
        if !valid_name(&job.name) {
            p.add(
                format!("{key}.name"),
                format!("{:?} is not a valid job name: {NAME_RULE}", job.name),
            );
        } else if !names.insert(job.name.clone()) {
            p.add(
                format!("{key}.name"),
                format!(
                    "job {:?} is defined twice: give each job its own name",
                    job.name
                ),
            );
        }
        if let Some(j) = super::jobs::job(&mut p, &key, job, &stores, &server, env) {
            super::pull::check_dest_unique(&mut p, &key, &j, &jobs);
            jobs.push(j);
        }
    }

    let store_keys = stores
        .values()
        .filter_map(|t| Some((t.url.clone(), t.key_file.clone()?)))
        .collect();
    if p.0.is_empty() {
        Ok(Config {
            origin: origin.to_string(),
            server,
            runner,
            jobs,
            store_keys,
            warnings: p.1,
        })
    } else {
        Err(ConfigError::Invalid {
            path: origin.to_string(),
            problems: p.0,
        })
    }
}

/// `[runner]`: retries, their backoff, the shutdown grace and the run history.
fn runner(p: &mut Problems, raw: &RawConfig) -> RunnerConfig {
    let r = &raw.runner;
    let retry_initial = duration(
        p,
        "runner.retry_initial",
        r.retry_initial.as_deref(),
        Duration::from_secs(2),
    );
    let runner = RunnerConfig {
        retries: r.retries.unwrap_or(4),
        retry_initial,
        retry_max: duration(
            p,
            "runner.retry_max",
            r.retry_max.as_deref(),
            Duration::from_secs(300),
        ),
        shutdown_grace: duration(
            p,
            "runner.shutdown_grace",
            r.shutdown_grace.as_deref(),
            Duration::from_secs(30),
        ),
        history: r.history.unwrap_or(1000),
        bwlimit: r
            .bwlimit
            .as_deref()
            .and_then(|text| text.parse().map_err(|e| p.add("runner.bwlimit", e)).ok()),
    };
    if runner.retries > 100 {
        p.add(
            "runner.retries",
            "more than 100: use at most 100 (with retry_max to space them out)",
        );
    }
    if runner.retry_initial < Duration::from_millis(10) {
        p.add("runner.retry_initial", "shorter than 10ms: use e.g. \"2s\"");
    }
    if runner.retry_max < runner.retry_initial {
        p.add(
            "runner.retry_max",
            "shorter than runner.retry_initial: make it longer",
        );
    }
    if !(1..=1_000_000).contains(&runner.history) {
        p.add("runner.history", "must be between 1 and 1000000 runs");
    }
    runner
}

/// `[stores.<name>]`: named repositories that jobs refer to.
fn stores(
    p: &mut Problems,
    raw: &RawConfig,
    server: &ServerConfig,
    env: &Env,
) -> BTreeMap<String, Target> {
    let mut stores = BTreeMap::new();
    for (name, store) in &raw.stores {
        let key = format!("stores.{name}");
        if !valid_name(name) {
            p.add(&key, format!("invalid store name: {NAME_RULE}"));
        }
        let RawStore {
            url,
            egress_usd_per_gb,
            key_file,
        } = store;
        let key_file = key_file.as_ref().and_then(|f| {
            let path = std::path::PathBuf::from(f);
            match std::fs::metadata(&path) {
                Ok(m) if m.is_file() => Some(path),
                _ => {
                    p.add(
                        format!("{key}.key_file"),
                        format!("{f}: no such key file (make one with `ferry key generate {f}`)"),
                    );
                    None
                }
            }
        });
        let price = price(
            p,
            &format!("{key}.egress_usd_per_gb"),
            *egress_usd_per_gb,
            server.egress_usd_per_gb,
        );
        match super::jobs::parse_url(url, env) {
            Ok(u) => {
                stores.insert(
                    name.clone(),
                    Target {
                        label: name.clone(),
                        url: u,
                        egress_usd_per_gb: price,
                        key_file,
                    },
                );
            }
            Err(e) => p.add(format!("{key}.url"), e),
        }
    }
    stores
}

fn server(p: &mut Problems, raw: &RawConfig, env: &Env) -> ServerConfig {
    let s = &raw.server;
    let bind_text = s.bind.as_deref().unwrap_or(DEFAULT_BIND);
    let bind = match bind_text.parse::<SocketAddr>() {
        Ok(a) => a,
        Err(_) => {
            p.add(
                "server.bind",
                format!("{bind_text:?} is not an address: write an IP address and port, e.g. \"127.0.0.1:7878\""),
            );
            DEFAULT_BIND
                .parse()
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 7878)))
        }
    };
    let token = token(p, s, env);
    if let Some((key, t)) = &token {
        if t.len() < MIN_TOKEN_LEN {
            p.add(key, format!("the token is shorter than {MIN_TOKEN_LEN} characters: use a long random one (e.g. `openssl rand -hex 32`)"));
        }
    }
    let token_configured = s.token_env.is_some() || s.token_file.is_some();
    if !token_configured && !bind.ip().is_loopback() {
        p.add(
            "server.bind",
            format!("{bind} is not a loopback address and no API token is configured: set server.token_env (or token_file), or bind 127.0.0.1"),
        );
    }
    let allowed_hosts = allowed_hosts(p, s);
    ServerConfig {
        bind,
        allowed_hosts,
        token: token.map(|(_, t)| Secret::new(t)),
        egress_usd_per_gb: price(
            p,
            "server.egress_usd_per_gb",
            s.egress_usd_per_gb,
            DEFAULT_EGRESS_USD_PER_GB,
        ),
    }
}

/// The API token from `token_env` or `token_file`, with the key it came from.
fn token(p: &mut Problems, s: &RawServer, env: &Env) -> Option<(&'static str, String)> {
    match (&s.token_env, &s.token_file) {
        (Some(_), Some(_)) => {
            p.add(
                "server.token_file",
                "set either token_env or token_file, not both",
            );
            None
        }
        (Some(var), None) => match env.vars.get(var).map(|v| v.trim()) {
            Some(t) if !t.is_empty() => Some(("server.token_env", t.to_string())),
            _ => {
                p.add(
                    "server.token_env",
                    format!(
                        "environment variable {var} is not set: export it, or remove token_env"
                    ),
                );
                None
            }
        },
        (None, Some(file)) => {
            let path = env.cwd.join(file);
            match std::fs::read_to_string(&path) {
                Ok(text) if !text.trim().is_empty() => Some((
                    "server.token_file",
                    text.lines().next().unwrap_or("").trim().to_string(),
                )),
                Ok(_) => {
                    p.add(
                        "server.token_file",
                        format!(
                            "{} is empty: write the token on its first line",
                            path.display()
                        ),
                    );
                    None
                }
                Err(e) => {
                    p.add(
                        "server.token_file",
                        format!("cannot read {}: {e}", path.display()),
                    );
                    None
                }
            }
        }
        (None, None) => None,
    }
}

/// `server.allowed_hosts`: bare host names, lowercased, without a trailing dot.
fn allowed_hosts(p: &mut Problems, s: &RawServer) -> Vec<String> {
    let mut allowed_hosts = Vec::new();
    for h in s.allowed_hosts.iter().flatten() {
        let h = h.trim().trim_end_matches('.').to_ascii_lowercase();
        let ok = !h.is_empty()
            && h.split('.').all(|l| {
                !l.is_empty() && l.bytes().all(|c| c.is_ascii_alphanumeric() || c == b'-')
            });
        if ok {
            allowed_hosts.push(h);
        } else {
            p.add(
                "server.allowed_hosts",
                format!("{h:?} is not a host name: write names like \"ferry.example.internal\", without a port or scheme"),
            );
        }
    }
    allowed_hosts
}
