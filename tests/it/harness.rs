//! The harness: backends, a per-test context (temp dirs, repository locations, index dir),
//! running the `ferry` binary with a hermetic environment, reading its `--json` summaries, and
//! raw object access that bypasses ferry to inspect or damage a repository.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

/// Where a repository lives for one test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    File,
    S3,
    Azure,
}

/// The bucket (S3) and container (Azure) that `scripts/test-servers.sh` creates.
const BUCKET: &str = "ferry-test";
const S3_ENDPOINT_VAR: &str = "FERRY_TEST_S3_ENDPOINT";
const AZURITE_URL_VAR: &str = "FERRY_TEST_AZURITE_URL";
const REQUIRE_SERVERS_VAR: &str = "FERRY_REQUIRE_SERVERS";
/// No single ferry command in these tests should come near this; hitting it means a hang.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
const RAWSTORE_PY: &str = include_str!("rawstore.py");

fn server_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

impl Backend {
    fn server_var(self) -> Option<&'static str> {
        match self {
            Backend::File => None,
            Backend::S3 => Some(S3_ENDPOINT_VAR),
            Backend::Azure => Some(AZURITE_URL_VAR),
        }
    }
}

/// Unique across the whole test process, for names of dirs and object prefixes.
fn next_id() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    COUNTER.fetch_add(1, Ordering::Relaxed)
}

/// The path of a local path as a `&str` argument.
pub fn s(path: &Path) -> &str {
    path.to_str().expect("test paths are UTF-8")
}

/// One test's world: a temp dir holding sources, restores and file repositories, and the
/// default `--index-dir`.
pub struct Ctx {
    name: String,
    tmp: TempDir,
    index_dir: PathBuf,
}

impl Ctx {
    /// The context for the running test, or `None` (after saying so) when a server one of
    /// `backends` needs is not configured. With `FERRY_REQUIRE_SERVERS=1` a missing server
    /// is a failure instead.
    pub fn new(backends: &[Backend]) -> Option<Ctx> {
        let name = thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-")
            .replace(|c: char| !c.is_ascii_alphanumeric() && c != '-', "-");
        for var in backends.iter().filter_map(|b| b.server_var()) {
            if server_url(var).is_none() {
                if std::env::var(REQUIRE_SERVERS_VAR).as_deref() == Ok("1") {
                    panic!(
                        "{var} is not set but {REQUIRE_SERVERS_VAR}=1: run scripts/test.sh, \
                         which starts the test servers and sets it"
                    );
                }
                eprintln!("skipping {name}: {var} is not set (scripts/test.sh starts the servers)");
                return None;
            }
        }
        let tmp = tempfile::Builder::new()
            .prefix(&format!("ferry-it-{name}-"))
            .tempdir()
            .expect("create temp dir");
        let index_dir = tmp.path().join("index");
        Some(Ctx {
            name,
            tmp,
            index_dir,
        })
    }

    /// A fresh path under the test's temp dir that does not exist yet.
    pub fn path(&self, label: &str) -> PathBuf {
        self.tmp.path().join(format!("{label}-{}", next_id()))
    }

    /// A fresh, empty directory under the test's temp dir.
    pub fn dir(&self, label: &str) -> PathBuf {
        let dir = self.path(label);
        fs::create_dir_all(&dir).expect("create dir");
        dir
    }

    /// A new, empty repository location on `backend`.
    pub fn location(&self, backend: Backend) -> Location {
        let prefix = || {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .expect("clock after 1970")
                .subsec_nanos();
            format!("{}-{}-{}-{nanos}", self.name, std::process::id(), next_id())
        };
        match backend {
            Backend::File => {
                let dir = self.dir("repo");
                Location {
                    url: format!("file://{}", s(&dir)),
                    raw: RawStore::Dir(dir),
                }
            }
            Backend::S3 | Backend::Azure => {
                let var = backend.server_var().expect("server backend");
                let endpoint = server_url(var).expect("checked in Ctx::new");
                let prefix = prefix();
                let (scheme, kind) = if backend == Backend::S3 {
                    ("s3", "s3")
                } else {
                    ("az", "az")
                };
                Location {
                    url: format!("{scheme}://{BUCKET}/{prefix}"),
                    raw: RawStore::Server {
                        kind,
                        endpoint,
                        bucket: BUCKET.to_string(),
                        prefix,
                    },
                }
            }
        }
    }

    /// Runs ferry with the test's default index dir.
    pub fn ferry(&self) -> Ferry {
        self.ferry_with_index(&self.index_dir)
    }

    pub fn index_dir(&self) -> &Path {
        &self.index_dir
    }

    pub fn ferry_with_index(&self, index_dir: &Path) -> Ferry {
        Ferry {
            index_dir: index_dir.to_path_buf(),
            logs: self.tmp.path().join("logs"),
        }
    }
}

impl Drop for Ctx {
    /// With `FERRY_TEST_KEEP=1`, a failing test leaves its temp dir behind for a post-mortem.
    fn drop(&mut self) {
        if thread::panicking() && std::env::var("FERRY_TEST_KEEP").as_deref() == Ok("1") {
            let kept = std::mem::replace(&mut self.tmp, TempDir::new().expect("temp dir")).keep();
            eprintln!("{}: kept {}", self.name, kept.display());
        }
    }
}

/// A repository location: its store URL for ferry and direct access for the test.
pub struct Location {
    pub url: String,
    pub raw: RawStore,
}

impl Drop for Location {
    /// A passing test removes its objects from the servers; a failing one leaves them to look at.
    fn drop(&mut self) {
        if !thread::panicking() {
            self.raw.clear();
        }
    }
}

/// One object under a location, keyed relative to the location's prefix.
#[derive(Clone, Debug)]
pub struct Object {
    pub key: String,
    pub size: u64,
}

impl Object {
    /// The last `/`-separated segment of the key.
    pub fn file_name(&self) -> &str {
        self.key.rsplit('/').next().unwrap_or(&self.key)
    }
}

/// Direct access to a location's objects, not through ferry.
pub enum RawStore {
    Dir(PathBuf),
    /// S3 (moto) or Azure Blob (Azurite), reached through `rawstore.py`.
    Server {
        kind: &'static str,
        endpoint: String,
        bucket: String,
        prefix: String,
    },
}

impl RawStore {
    /// The objects whose key (relative to the location) starts with `sub`, sorted by key.
    pub fn list(&self, sub: &str) -> Vec<Object> {
        let mut out = match self {
            RawStore::Dir(root) => {
                let mut out = Vec::new();
                list_dir(root, root, &mut out);
                out.retain(|o| o.key.starts_with(sub));
                out
            }
            RawStore::Server { prefix, .. } => {
                let listing = self.python(&["list", &format!("{prefix}/{sub}")], None);
                String::from_utf8(listing)
                    .expect("listing is UTF-8")
                    .lines()
                    .map(|line| {
                        let (size, key) = line.split_once(' ').expect("SIZE KEY line");
                        Object {
                            key: key
                                .strip_prefix(&format!("{prefix}/"))
                                .expect("key under the prefix")
                                .to_string(),
                            size: size.parse().expect("numeric size"),
                        }
                    })
                    .collect()
            }
        };
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    pub fn get(&self, key: &str) -> Vec<u8> {
        match self {
            RawStore::Dir(root) => fs::read(root.join(key)).expect("read object file"),
            RawStore::Server { prefix, .. } => {
                self.python(&["get", &format!("{prefix}/{key}")], None)
            }
        }
    }

    pub fn put(&self, key: &str, data: &[u8]) {
        match self {
            RawStore::Dir(root) => {
                let path = root.join(key);
                fs::create_dir_all(path.parent().expect("key has a parent")).expect("mkdir");
                fs::write(path, data).expect("write object file");
            }
            RawStore::Server { prefix, .. } => {
                let file = tempfile::NamedTempFile::new().expect("temp file");
                fs::write(file.path(), data).expect("write temp file");
                self.python(&["put", &format!("{prefix}/{key}")], Some(file.path()));
            }
        }
    }

    /// Starts watching for the first object under `sub`; start it before the writer, so
    /// that its setup does not delay the first look.
    pub fn watch(&self, sub: &str) -> Watch<'_> {
        let watcher = match self {
            RawStore::Dir(_) => None,
            RawStore::Server { prefix, .. } => Some(
                self.python_command(&["await", &format!("{prefix}/{sub}")])
                    .stdout(Stdio::null())
                    .spawn()
                    .expect("run python3"),
            ),
        };
        Watch {
            store: self,
            sub: sub.to_string(),
            watcher,
        }
    }

    /// Deletes everything under a server location (moto and Azurite keep it all in RAM).
    fn clear(&self) {
        if let RawStore::Server { prefix, .. } = self {
            self.python(&["clear", &format!("{prefix}/")], None);
        }
    }

    fn python(&self, args: &[&str], file: Option<&Path>) -> Vec<u8> {
        let mut cmd = self.python_command(args);
        if let Some(file) = file {
            cmd.arg(file);
        }
        let out = cmd
            .output()
            .expect("run python3 (it is needed for raw access to the test servers)");
        assert!(
            out.status.success(),
            "rawstore.py {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    fn python_command(&self, args: &[&str]) -> Command {
        let RawStore::Server {
            kind,
            endpoint,
            bucket,
            ..
        } = self
        else {
            unreachable!("only server stores use rawstore.py")
        };
        let mut cmd = Command::new("python3");
        cmd.arg("-c")
            .arg(RAWSTORE_PY)
            .args([*kind, endpoint, bucket])
            .args(args);
        cmd
    }
}

fn list_dir(root: &Path, dir: &Path, out: &mut Vec<Object>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries {
        let entry = entry.expect("read dir entry");
        let path = entry.path();
        let meta = entry.metadata().expect("stat");
        if meta.is_dir() {
            list_dir(root, &path, out);
        } else {
            let rel = path.strip_prefix(root).expect("under root");
            out.push(Object {
                key: s(rel).replace('\\', "/"),
                size: meta.len(),
            });
        }
    }
}

/// A watch for the first object under a prefix: see [`RawStore::watch`].
pub struct Watch<'a> {
    store: &'a RawStore,
    sub: String,
    /// For the servers, `rawstore.py await`, which polls in one process.
    watcher: Option<Child>,
}

impl Watch<'_> {
    /// Returns `true` as soon as an object exists, or `false` once `give_up()` says so.
    pub fn wait(mut self, mut give_up: impl FnMut() -> bool) -> bool {
        loop {
            let found = match &mut self.watcher {
                None => !self.store.list(&self.sub).is_empty(),
                Some(child) => match child.try_wait().expect("poll python3") {
                    Some(status) => {
                        assert!(status.success(), "rawstore.py await {} failed", self.sub);
                        true
                    }
                    None => false,
                },
            };
            if found {
                return true;
            }
            if give_up() {
                return false;
            }
            thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Watch<'_> {
    fn drop(&mut self) {
        if let Some(child) = &mut self.watcher {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Pack objects under a location: `packs/<2 hex>/<64 hex>`.
pub fn pack_objects(raw: &RawStore) -> Vec<Object> {
    raw.list("packs/")
        .into_iter()
        .filter(|o| is_object_id(o.file_name()))
        .collect()
}

/// The pack ids that have a pack index object `index/<pack id>`.
pub fn indexed_pack_ids(raw: &RawStore) -> BTreeSet<String> {
    raw.list("index/")
        .into_iter()
        .map(|o| o.file_name().to_string())
        .filter(|name| is_object_id(name))
        .collect()
}

pub fn is_object_id(name: &str) -> bool {
    name.len() == 64 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Runs the `ferry` binary: `ferry --index-dir DIR --json ARGS...` with a hermetic
/// environment that reaches both test servers.
pub struct Ferry {
    index_dir: PathBuf,
    logs: PathBuf,
}

impl Ferry {
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
        cmd
    }

    /// Starts ferry in the background; stdout and stderr go to files.
    pub fn spawn(&self, args: &[&str]) -> Running {
        self.spawn_command(self.command(args))
    }

    /// Runs `ferry ARGS...` to completion without adding `--index-dir` or `--json`.
    pub fn run_bare(&self, args: &[&str]) -> Run {
        self.spawn_command(Self::bare_command(args)).wait()
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

/// A required unsigned integer field of a JSON summary.
pub fn uint(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {key:?} missing or not an unsigned integer in {v}"))
}

pub fn string<'a>(v: &'a Value, key: &str) -> &'a str {
    v.get(key)
        .and_then(Value::as_str)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a string in {v}"))
}

pub fn boolean(v: &Value, key: &str) -> bool {
    v.get(key)
        .and_then(Value::as_bool)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a bool in {v}"))
}

pub fn array<'a>(v: &'a Value, key: &str) -> &'a Vec<Value> {
    v.get(key)
        .and_then(Value::as_array)
        .unwrap_or_else(|| panic!("field {key:?} missing or not an array in {v}"))
}

/// The only target of a single-repo push.
pub fn only_target(push: &Value) -> &Value {
    let targets = array(push, "targets");
    assert_eq!(targets.len(), 1, "expected one target in {push}");
    &targets[0]
}

/// The snapshot id a single-repo push wrote.
pub fn pushed_snapshot(push: &Value) -> String {
    string(only_target(push), "snapshot").to_string()
}

/// A size field that may be a number of bytes or a string like `64KiB` / `64 KiB`.
pub fn size_field(v: &Value, key: &str) -> u64 {
    match v.get(key) {
        Some(Value::Number(n)) => n.as_u64().expect("unsigned size"),
        Some(Value::String(text)) => parse_size(text)
            .unwrap_or_else(|| panic!("field {key:?} is not a size ({text:?}) in {v}")),
        _ => panic!("field {key:?} missing or not a size in {v}"),
    }
}

fn parse_size(text: &str) -> Option<u64> {
    let text: String = text.chars().filter(|c| !c.is_whitespace()).collect();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number.parse().ok()?;
    let factor = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        _ => return None,
    };
    Some(number * factor)
}
