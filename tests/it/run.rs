//! Running the `ferry` binary with a hermetic environment, in the foreground or background,
//! and reading what it printed.

use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::harness::{
    gcs_account_key, next_id, server_url, AZURITE_URL_VAR, GCS_URL_VAR, S3_ENDPOINT_VAR,
};

/// No single ferry command in these tests should come near this; hitting it means a hang.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);

/// Runs the `ferry` binary: `ferry --index-dir DIR --json ARGS...` with a hermetic
/// environment that reaches both test servers.
pub struct Ferry {
    index_dir: PathBuf,
    logs: PathBuf,
}

impl Ferry {
    /// Runs with `--index-dir index_dir`; keeps stdout and stderr of each run under `logs`.
    pub fn new(index_dir: &Path, logs: &Path) -> Ferry {
        Ferry {
            index_dir: index_dir.to_path_buf(),
            logs: logs.to_path_buf(),
        }
    }

    /// `ferry --index-dir DIR --json ARGS...`
    pub fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Self::bare_command(&[]);
        cmd.arg("--index-dir")
            .arg(&self.index_dir)
            .arg("--json")
            .args(args);
        cmd
    }

    /// `ferry ARGS...`: no global flags added.
    pub fn bare_command(args: &[&str]) -> Command {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ferry"));
        cmd.args(args);
        cmd.env_clear();
        for var in ["PATH", "HOME", "TMPDIR"] {
            if let Some(value) = std::env::var_os(var) {
                cmd.env(var, value);
            }
        }
        cmd.env("FERRY_RETRY_MAX", "1")
            .env("AWS_ACCESS_KEY_ID", "test")
            .env("AWS_SECRET_ACCESS_KEY", "test")
            .env("AWS_REGION", "us-east-1")
            .env("AWS_ALLOW_HTTP", "true")
            .env("AZURE_STORAGE_USE_EMULATOR", "true");
        if let Some(url) = server_url(S3_ENDPOINT_VAR) {
            cmd.env("AWS_ENDPOINT", url);
        }
        if let Some(url) = server_url(AZURITE_URL_VAR) {
            cmd.env("AZURITE_BLOB_STORAGE_URL", url);
        }
        if let Some(url) = server_url(GCS_URL_VAR) {
            cmd.env("GOOGLE_SERVICE_ACCOUNT_KEY", gcs_account_key(&url));
        }
        cmd
    }

    /// Starts ferry in the background; stdout and stderr go to files.
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_command(self.command(args))
    }

    /// Like [`Ferry::spawn`], with extra (or overriding) environment variables.
    pub fn spawn_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Running {
        let mut cmd = self.command(args);
        cmd.envs(envs.iter().copied());
        self.spawn_command(cmd)
    }

    /// Like [`Ferry::run`], with extra environment variables.
    pub fn run_env(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        self.spawn_env(args, envs).wait()
    }

    /// Runs `ferry ARGS...` (with extra environment `envs`) to completion without adding
    /// `--index-dir` or `--json`.
    pub fn run_bare(&self, args: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut cmd = Self::bare_command(args);
        cmd.envs(envs.iter().copied());
        self.spawn_command(cmd).wait()
    }

    /// Runs `ferry --index-dir DIR --json ARGS...` with the variables `remove` taken out of
    /// its environment and `envs` added.
    pub fn run_without(&self, args: &[&str], remove: &[&str], envs: &[(&str, &str)]) -> Run {
        let mut cmd = self.command(args);
        for var in remove {
            cmd.env_remove(var);
        }
        cmd.envs(envs.iter().copied());
        self.spawn_command(cmd).wait()
    }

    fn spawn_command(&self, mut cmd: Command) -> Running {
        let cmdline = std::iter::once("ferry".into())
            .chain(cmd.get_args().map(|a| a.to_string_lossy()))
            .collect::<Vec<_>>()
            .join(" ");
        fs::create_dir_all(&self.logs).expect("create log dir");
        let n = next_id();
        let stdout_path = self.logs.join(format!("{n}.stdout"));
        let stderr_path = self.logs.join(format!("{n}.stderr"));
        cmd.stdin(Stdio::null())
            .stdout(fs::File::create(&stdout_path).expect("create stdout file"))
            .stderr(fs::File::create(&stderr_path).expect("create stderr file"));
        let child = cmd.spawn().expect("spawn ferry");
        Running {
            child,
            cmdline,
            stdout_path,
            stderr_path,
            started: Instant::now(),
        }
    }

    /// Runs ferry to completion, whatever its exit status.
    pub fn run(&self, args: &[&str]) -> Run {
        self.spawn(args).wait()
    }

    /// Runs ferry, asserts it succeeded, and returns its JSON summary.
    pub fn json(&self, args: &[&str]) -> Value {
        self.run(args).json()
    }
}

/// A ferry process running in the background.
pub struct Running {
    child: Child,
    cmdline: String,
    stdout_path: PathBuf,
    stderr_path: PathBuf,
    started: Instant,
}

impl Running {
    pub fn has_exited(&mut self) -> bool {
        self.child.try_wait().expect("poll child").is_some()
    }

    /// Sends SIGTERM (through `kill`, the tests have no libc binding).
    pub fn terminate(&self) {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -TERM {} failed", self.child.id());
    }

    /// What it printed on stderr so far.
    pub fn stderr_so_far(&self) -> String {
        fs::read_to_string(&self.stderr_path).unwrap_or_default()
    }

    /// SIGKILL, then reap.
    pub fn kill(mut self) -> Run {
        self.child.kill().expect("kill ferry");
        self.wait()
    }

    /// Waits for the exit (killing it after [`COMMAND_TIMEOUT`]) and collects its output.
    pub fn wait(mut self) -> Run {
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll child") {
                break status;
            }
            if self.started.elapsed() > COMMAND_TIMEOUT {
                let _ = self.child.kill();
                let _ = self.child.wait();
                panic!(
                    "`{}` did not finish within {COMMAND_TIMEOUT:?}; stderr:\n{}",
                    self.cmdline,
                    fs::read_to_string(&self.stderr_path).unwrap_or_default()
                );
            }
            thread::sleep(Duration::from_millis(20));
        };
        Run {
            cmdline: self.cmdline,
            status,
            stdout: fs::read_to_string(&self.stdout_path).expect("read stdout"),
            stderr: fs::read_to_string(&self.stderr_path).expect("read stderr"),
        }
    }
}

/// A finished ferry run.
pub struct Run {
    pub cmdline: String,
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl fmt::Display for Run {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const MAX: usize = 4000;
        let cut = |text: &str| -> String {
            if text.len() <= MAX {
                return text.to_string();
            }
            let mut end = MAX;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}... ({} bytes in all)", &text[..end], text.len())
        };
        write!(
            f,
            "`{}` exited with {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.cmdline,
            self.status,
            cut(&self.stdout),
            cut(&self.stderr)
        )
    }
}

impl Run {
    /// Asserts success and parses stdout as exactly one JSON object.
    pub fn json(&self) -> Value {
        assert!(self.status.success(), "expected success: {self}");
        self.stdout_json()
    }

    /// Parses stdout as exactly one JSON object, whatever the exit status.
    pub fn stdout_json(&self) -> Value {
        let value: Value = serde_json::from_str(self.stdout.trim())
            .unwrap_or_else(|e| panic!("stdout is not one JSON object ({e}): {self}"));
        assert!(
            value.is_object(),
            "stdout is JSON but not an object: {self}"
        );
        value
    }

    /// Asserts ferry failed with an exit code (not a crash by signal) and returns its error,
    /// which must be exactly one non-empty line on stderr.
    pub fn error_line(&self) -> &str {
        assert!(
            !self.status.success(),
            "expected a non-zero exit status: {self}"
        );
        assert!(
            self.status.code().is_some(),
            "expected an exit code, not death by signal: {self}"
        );
        let text = self.stderr.trim();
        assert!(
            !text.is_empty() && text.lines().count() == 1,
            "expected exactly one line on stderr: {self}"
        );
        text
    }
}
