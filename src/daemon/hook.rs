//! What a pull job runs after each publish: a command (argv, no shell; the version in its
//! environment) and/or an HTTP POST of a JSON body to a URL (a model server's reload
//! endpoint). Each is bounded by the job's `hook_timeout`; a failure is an outcome to report
//! (run record, log, metric), never an error that unpublishes the version.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::Hooks;

/// What was published: the hooks' environment and the POSTed body.
#[derive(Debug, Clone, Serialize)]
pub struct Published {
    /// The ref's name.
    pub name: String,
    pub seq: u64,
    /// The snapshot id (64 hex digits).
    pub snapshot: String,
    /// The version's folder (`DIR/versions/<seq>-<short id>`).
    pub path: String,
}

/// How one hook went.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookOutcome {
    /// `command` or `http`.
    pub hook: String,
    pub ok: bool,
    /// Why it failed (exit status, HTTP status, timeout), without secrets.
    pub error: Option<String>,
    pub duration_secs: f64,
}

/// Why a hook failed.
#[derive(Debug, thiserror::Error)]
enum HookError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        source: std::io::Error,
    },
    #[error("{program} exited with {status}")]
    Exit {
        program: String,
        status: std::process::ExitStatus,
    },
    #[error("{program} did not finish within {timeout:?}: killed")]
    CommandTimeout { program: String, timeout: Duration },
    #[error("cannot wait for {program}: {source}")]
    Wait {
        program: String,
        source: std::io::Error,
    },
    #[error("POST {url}: {problem}")]
    Http { url: String, problem: String },
    #[error("internal task failed: {0}")]
    Join(String),
}

/// Runs the configured hooks for `published`, the command first; one outcome per hook.
pub(super) async fn run(hooks: &Hooks, dir: &str, published: &Published) -> Vec<HookOutcome> {
    let mut out = Vec::new();
    if !hooks.command.is_empty() {
        let started = Instant::now();
        let (argv, env, timeout) = (
            hooks.command.clone(),
            environment(dir, published),
            hooks.timeout,
        );
        let r = tokio::task::spawn_blocking(move || command(&argv, &env, timeout))
            .await
            .map_err(|e| HookError::Join(e.to_string()))
            .and_then(|r| r);
        out.push(outcome("command", started, r));
    }
    if let Some(url) = &hooks.url {
        let started = Instant::now();
        let r = post(url, hooks.timeout, published).await;
        out.push(outcome("http", started, r));
    }
    out
}

fn outcome(hook: &str, started: Instant, r: Result<(), HookError>) -> HookOutcome {
    HookOutcome {
        hook: hook.to_string(),
        ok: r.is_ok(),
        error: r.err().map(|e| e.to_string()),
        duration_secs: started.elapsed().as_secs_f64(),
    }
}

/// The command's environment on top of the daemon's: `FERRY_PULL_PATH`, `_SNAPSHOT`, `_SEQ`,
/// `_NAME` and `_DIR` (the folder holding `current`).
fn environment(dir: &str, p: &Published) -> Vec<(&'static str, String)> {
    vec![
        ("FERRY_PULL_PATH", p.path.clone()),
        ("FERRY_PULL_SNAPSHOT", p.snapshot.clone()),
        ("FERRY_PULL_SEQ", p.seq.to_string()),
        ("FERRY_PULL_NAME", p.name.clone()),
        ("FERRY_PULL_DIR", dir.to_string()),
    ]
}

/// Runs `argv` (stdin closed, output into the daemon's own) and waits at most `timeout`,
/// then kills it. On a blocking thread.
fn command(
    argv: &[String],
    env: &[(&'static str, String)],
    timeout: Duration,
) -> Result<(), HookError> {
    let program = argv.first().cloned().unwrap_or_default();
    let mut child = Command::new(&program)
        .args(&argv[1..])
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .stdin(Stdio::null())
        .spawn()
        .map_err(|source| HookError::Spawn {
            program: program.clone(),
            source,
        })?;
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Ok(()),
            Ok(Some(status)) => return Err(HookError::Exit { program, status }),
            Ok(None) if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(HookError::CommandTimeout { program, timeout });
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(source) => return Err(HookError::Wait { program, source }),
        }
    }
}

/// POSTs `published` as JSON to `url`; any 2xx answer is success. Sent directly (no proxy
/// from the environment): a reload endpoint lives beside the server it reloads.
async fn post(url: &url::Url, timeout: Duration, published: &Published) -> Result<(), HookError> {
    // Never the query string: it may carry a token.
    let shown = format!(
        "{}://{}{}",
        url.scheme(),
        url.host_str().unwrap_or(""),
        url.port().map(|p| format!(":{p}")).unwrap_or_default()
    ) + url.path();
    let fail = |problem: String| HookError::Http {
        url: shown.clone(),
        problem,
    };
    let body = serde_json::to_vec(published).map_err(|e| fail(e.to_string()))?;
    let client = reqwest::Client::builder()
        .timeout(timeout)
        .connect_timeout(timeout.min(Duration::from_secs(10)))
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(|e| fail(e.to_string()))?;
    let res = client
        .post(url.clone())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            fail(if e.is_timeout() {
                format!("no answer within {timeout:?}")
            } else if e.is_connect() {
                "cannot connect: is the server running?".into()
            } else {
                "the request failed".into()
            })
        })?;
    if res.status().is_success() {
        Ok(())
    } else {
        Err(fail(format!("HTTP {}", res.status())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn published() -> Published {
        Published {
            name: "m".into(),
            seq: 3,
            snapshot: "ab".repeat(32),
            path: "/srv/m/versions/3-abababababab".into(),
        }
    }

    fn hooks(command: &[&str]) -> Hooks {
        Hooks {
            command: command.iter().map(|s| s.to_string()).collect(),
            url: None,
            timeout: Duration::from_secs(5),
        }
    }

    #[tokio::test]
    async fn the_command_sees_the_version_in_its_environment() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("env");
        let script = format!(
            "echo \"$FERRY_PULL_NAME $FERRY_PULL_SEQ $FERRY_PULL_PATH $FERRY_PULL_DIR\" > {}",
            out.display()
        );
        let r = run(&hooks(&["/bin/sh", "-c", &script]), "/srv/m", &published()).await;
        assert_eq!(r.len(), 1);
        assert!(r[0].ok, "{r:?}");
        assert_eq!(
            std::fs::read_to_string(&out).unwrap().trim(),
            "m 3 /srv/m/versions/3-abababababab /srv/m"
        );
    }

    #[tokio::test]
    async fn failures_and_timeouts_are_outcomes() {
        let r = run(&hooks(&["/bin/sh", "-c", "exit 3"]), "/d", &published()).await;
        assert!(!r[0].ok);
        assert!(
            r[0].error.as_deref().unwrap().contains("exit status: 3"),
            "{r:?}"
        );
        let r = run(&hooks(&["/nonexistent/reload"]), "/d", &published()).await;
        assert!(
            r[0].error.as_deref().unwrap().contains("cannot start"),
            "{r:?}"
        );
        let mut slow = hooks(&["/bin/sleep", "30"]);
        slow.timeout = Duration::from_millis(200);
        let started = Instant::now();
        let r = run(&slow, "/d", &published()).await;
        assert!(r[0].error.as_deref().unwrap().contains("killed"), "{r:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
        let mut refused = hooks(&[]);
        refused.url = Some("http://127.0.0.1:9/reload?token=secret".parse().unwrap());
        let r = run(&refused, "/d", &published()).await;
        let e = r[0].error.as_deref().unwrap();
        assert!(
            e.contains("http://127.0.0.1:9/reload") && !e.contains("secret"),
            "{e}"
        );
    }
}
