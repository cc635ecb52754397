//! The service commands as library calls: `check-config`, `sync`, `daemon` (server, signals,
//! bounded shutdown) and `status` (from the running daemon's API, else the local index).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Serialize;

use crate::config::{Config, ConfigError};
use crate::daemon::{render_status, Clock, Daemon, DaemonError, JobStatus, Mode, SyncReport};
use crate::server::ServerError;

/// Errors of the service commands.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The config file is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The daemon could not start or run.
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    /// The HTTP server could not bind or serve.
    #[error(transparent)]
    Server(#[from] ServerError),
    /// Signal handlers could not be installed.
    #[error("cannot listen for signals: {0}")]
    Signal(std::io::Error),
    /// The daemon's API answered something other than a status.
    #[error("the daemon at {url} answered {problem}")]
    Api {
        /// The API address asked.
        url: String,
        /// What came back instead.
        problem: String,
    },
}

/// What `ferry check-config` found: a summary without secrets.
#[derive(Debug, Serialize)]
pub struct CheckReport {
    /// The config's origin (its path, or the embedded default).
    pub config: String,
    /// The address the HTTP server would listen on.
    pub bind: String,
    /// Whether an API token is configured (never the token itself).
    pub token: bool,
    /// Every job, in file order.
    pub jobs: Vec<CheckedJob>,
    /// Probably mistakes, each naming its key (the config still loads).
    pub warnings: Vec<String>,
}

/// One job as `ferry check-config` summarises it.
#[derive(Debug, Serialize)]
pub struct CheckedJob {
    /// The job's name.
    pub name: String,
    /// `push`, `replicate` or `mirror`.
    pub kind: &'static str,
    /// The source's URL.
    pub source: String,
    /// The targets' store URLs.
    pub targets: Vec<String>,
    /// The trigger, as [`crate::config::Trigger::describe`] writes it.
    pub trigger: String,
}

/// Loads the config exactly as the daemon does, and summarizes it.
pub fn check_config(path: Option<&PathBuf>) -> Result<CheckReport, ServiceError> {
    let c = Config::load_or_default(path)?;
    Ok(CheckReport {
        config: c.origin.clone(),
        bind: c.server.bind.to_string(),
        token: c.server.token.is_some(),
        jobs: c
            .jobs
            .iter()
            .map(|j| CheckedJob {
                name: j.name.clone(),
                kind: j.kind.name(),
                source: j.kind.source_url().to_string(),
                targets: j.targets.iter().map(|t| t.url.to_string()).collect(),
                trigger: j.trigger.describe(),
            })
            .collect(),
        warnings: c.warnings.clone(),
    })
}

/// Logs the config's warnings (the daemon and `ferry sync` run despite them).
fn log_warnings(c: &Config) {
    for w in &c.warnings {
        tracing::warn!(config = %c.origin, warning = %w, "config warning");
    }
}

/// `ferry check-config`'s report as text for people.
pub fn render_check(r: &CheckReport) -> String {
    let mut s = format!(
        "{}: ok; dashboard on http://{} ({}), {} jobs",
        r.config,
        r.bind,
        if r.token {
            "token required for POST"
        } else {
            "no token"
        },
        r.jobs.len()
    );
    if !r.warnings.is_empty() {
        s.push_str(&format!(" ({} warnings)", r.warnings.len()));
    }
    for j in &r.jobs {
        s.push_str(&format!(
            "\n  {} ({}, {}): {} → {}",
            j.name,
            j.kind,
            j.trigger,
            j.source,
            j.targets.join(", ")
        ));
    }
    for w in &r.warnings {
        s.push_str(&format!("\nwarning: {w}"));
    }
    s
}

/// `ferry sync`: runs the jobs once.
pub async fn sync(
    config: Config,
    index_dir: &Path,
    job: Option<&str>,
) -> Result<SyncReport, ServiceError> {
    log_warnings(&config);
    let daemon = Daemon::open(config, index_dir, Clock::real(), Mode::Once).await?;
    Ok(daemon.sync(job).await?)
}

/// `ferry sync`'s report as text; `now_ms` (Unix milliseconds) dates the runs' ages.
pub fn render_sync(r: &SyncReport, now_ms: i64) -> String {
    let mut s = format!(
        "{}: {} runs{}",
        if r.ok { "sync ok" } else { "sync FAILED" },
        r.runs.iter().filter(|r| r.state.is_final()).count(),
        if r.nothing_ready {
            "; nothing was ready to push"
        } else {
            ""
        }
    );
    for line in &r.not_ready {
        s.push_str(&format!("\n  not ready: {line}"));
    }
    for run in r.runs.iter().filter(|r| r.state.is_final()) {
        s.push_str(&format!(
            "\n  {}/{} {}: {} ({} sent{}{})",
            run.job,
            run.target,
            run.item,
            run.state.as_str(),
            crate::cli::render::bytes(run.bytes_sent),
            match run.bytes_saved_by_deltas {
                0 => String::new(),
                n => format!(", {} saved by deltas", crate::cli::render::bytes(n)),
            },
            run.error
                .as_deref()
                .map(|e| format!("; {e}"))
                .unwrap_or_default()
        ));
    }
    s.push('\n');
    s.push_str(&render_status(&r.jobs, now_ms));
    s
}

/// `ferry daemon`: serves and runs the jobs until SIGTERM or SIGINT, then stops within the
/// shutdown grace period (plus a few seconds). `on_listen` hears the bound address.
pub async fn daemon(
    config: Config,
    index_dir: &Path,
    clock: Clock,
    on_listen: impl FnOnce(SocketAddr, &Config),
) -> Result<(), ServiceError> {
    let (listener, addr) = crate::server::bind(config.server.bind).await?;
    let grace = config.runner.shutdown_grace;
    log_warnings(&config);
    let daemon = Daemon::open(config, index_dir, clock, Mode::Daemon).await?;
    // Runs count in the metrics as they finish: the recorder exists before the first starts
    // (the server task below may be scheduled after it).
    crate::server::metrics::handle();
    let server = {
        let d = daemon.clone();
        tokio::spawn(async move { crate::server::serve(d, listener).await })
    };
    daemon.start();
    on_listen(addr, daemon.config());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .map_err(ServiceError::Signal)?;
    let signal = tokio::select! {
        _ = term.recv() => "SIGTERM",
        r = tokio::signal::ctrl_c() => { r.map_err(ServiceError::Signal)?; "SIGINT" }
        r = server => {
            // The server stopped by itself: that is an error worth exiting for.
            daemon.shutdown(grace + Duration::from_secs(5)).await;
            return match r {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(e.into()),
                Err(e) => Err(DaemonError::Join(e.to_string()).into()),
            };
        }
    };
    tracing::warn!(signal, grace = ?grace, "shutting down: no new work; the running push may finish");
    let clean = daemon.shutdown(grace + Duration::from_secs(5)).await;
    if !clean {
        tracing::warn!("some tasks did not stop in time; exiting anyway");
    }
    Ok(())
}

/// Where `ferry status` got its answer.
#[derive(Debug, Serialize)]
pub struct StatusReport {
    /// `daemon` (its API) or `index` (the local index; no daemon answered).
    pub from: String,
    /// When the status was taken, in Unix milliseconds.
    pub now_ms: i64,
    /// Every job's status.
    pub jobs: Vec<JobStatus>,
}

/// Asks the daemon at `url` (default: the config's bind address); when none answers, reads
/// the same state from the local index.
pub async fn status(
    config: Config,
    index_dir: &Path,
    url: Option<&str>,
) -> Result<StatusReport, ServiceError> {
    let bind = config.server.bind;
    let host = if bind.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], bind.port()))
    } else {
        bind
    };
    let base = url.map_or_else(
        || format!("http://{host}"),
        |u| u.trim_end_matches('/').to_string(),
    );
    match fetch_jobs(&base).await {
        Ok(r) => Ok(StatusReport {
            from: "daemon".into(),
            now_ms: r.now_ms,
            jobs: r.jobs,
        }),
        Err(FetchError::Unreachable) if url.is_none() => {
            let clock = Clock::real();
            let daemon = Daemon::open(config, index_dir, clock.clone(), Mode::Once).await?;
            Ok(StatusReport {
                from: "index".into(),
                now_ms: clock.now_ms(),
                jobs: daemon.jobs(),
            })
        }
        Err(FetchError::Unreachable) => Err(ServiceError::Api {
            url: base,
            problem: "nothing: is the daemon running there?".into(),
        }),
        Err(FetchError::Bad(problem)) => Err(ServiceError::Api { url: base, problem }),
    }
}

enum FetchError {
    Unreachable,
    Bad(String),
}

async fn fetch_jobs(base: &str) -> Result<crate::server::JobsResponse, FetchError> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(1))
        .build()
        .map_err(|e| FetchError::Bad(e.to_string()))?;
    let res = client
        .get(format!("{base}/api/v1/jobs"))
        .send()
        .await
        .map_err(|e| {
            if e.is_connect() {
                FetchError::Unreachable
            } else {
                FetchError::Bad(e.to_string())
            }
        })?;
    if !res.status().is_success() {
        return Err(FetchError::Bad(format!("HTTP {}", res.status())));
    }
    let body = res
        .bytes()
        .await
        .map_err(|e| FetchError::Bad(e.to_string()))?;
    serde_json::from_slice(&body)
        .map_err(|e| FetchError::Bad(format!("a body that is not ferry's jobs JSON ({e})")))
}

/// `ferry status`'s report as text for people.
pub fn render_statuses(r: &StatusReport) -> String {
    let note = if r.from == "index" {
        "\n(no daemon answered: state from the local index)"
    } else {
        ""
    };
    format!("{}{note}", render_status(&r.jobs, r.now_ms))
}
