//! The harness: backends, a per-test context (temp dirs, repository locations, index dir) and
//! readers for ferry's `--json` summaries.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::Value;
use tempfile::TempDir;

use crate::raw::{Location, RawStore};
use crate::run::Ferry;

/// Where a repository lives for one test run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    File,
    S3,
    Azure,
    Gcs,
}

/// The bucket (S3, GCS) and container (Azure) that `scripts/test-servers.sh` creates.
const BUCKET: &str = "ferry-test";
pub const S3_ENDPOINT_VAR: &str = "FERRY_TEST_S3_ENDPOINT";
pub const AZURITE_URL_VAR: &str = "FERRY_TEST_AZURITE_URL";
/// fake-gcs-server behind `scripts/gcs_server.py`.
pub const GCS_URL_VAR: &str = "FERRY_TEST_GCS_URL";
const REQUIRE_SERVERS_VAR: &str = "FERRY_REQUIRE_SERVERS";

pub fn server_url(var: &str) -> Option<String> {
    std::env::var(var).ok().filter(|v| !v.trim().is_empty())
}

impl Backend {
    fn server_var(self) -> Option<&'static str> {
        match self {
            Backend::File => None,
            Backend::S3 => Some(S3_ENDPOINT_VAR),
            Backend::Azure => Some(AZURITE_URL_VAR),
            Backend::Gcs => Some(GCS_URL_VAR),
        }
    }
}

/// The service account object_store's GCS client reads for an emulator at `url`: no OAuth,
/// requests to `url` (`GOOGLE_SERVICE_ACCOUNT_KEY`).
pub fn gcs_account_key(url: &str) -> String {
    serde_json::json!({
        "private_key": "",
        "private_key_id": "",
        "client_email": "",
        "disable_oauth": true,
        "gcs_base_url": url,
    })
    .to_string()
}

/// Unique across the whole test process, for names of dirs and object prefixes.
pub fn next_id() -> u64 {
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
            Backend::S3 | Backend::Azure | Backend::Gcs => {
                let var = backend.server_var().expect("server backend");
                let endpoint = server_url(var).expect("checked in Ctx::new");
                let prefix = prefix();
                let (scheme, kind) = match backend {
                    Backend::S3 => ("s3", "s3"),
                    Backend::Gcs => ("gs", "gs"),
                    _ => ("az", "az"),
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
        Ferry::new(index_dir, &self.tmp.path().join("logs"))
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

/// A required unsigned integer field of a JSON summary.
pub fn uint(v: &Value, key: &str) -> u64 {
    v.get(key)
        .and_then(Value::as_u64)
        .unwrap_or_else(|| panic!("field {key:?} missing or not an unsigned integer in {v}"))
}

/// A required numeric field (integer or float) of a JSON summary.
pub fn number(v: &Value, key: &str) -> f64 {
    v.get(key)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("field {key:?} missing or not a number in {v}"))
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
