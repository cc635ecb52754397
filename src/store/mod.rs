//! Stores by URL: parses `file://`, `s3://`, `az://` and `memory://` URLs and opens them as
//! `Arc<dyn ObjectStore>`. Only this module knows which cloud a store is.
//!
//! Credentials and endpoints come from the standard environment variables read by
//! `object_store`'s `from_env` builders, so the same URL works against AWS, Azure and the
//! local emulators.

pub mod fault;
pub mod key;
mod url;
mod watch;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::local::LocalFileSystem;
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    ClientConfigKey, GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode,
    PutOptions, PutPayload, RetryConfig, WriteMultipart,
};

pub use self::url::{StoreUrl, UrlError};

/// Whether opening a local store may create its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading only: a missing folder is an error.
    Read,
    /// Writing: a missing local folder is created.
    Write,
}

/// Errors from opening or using a store. Messages name the object and, where known, the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(transparent)]
    Url(#[from] UrlError),
    #[error("cannot open {url}: {reason}")]
    Open { url: String, reason: String },
    #[error("{op} {object} failed: {summary}{hint}")]
    Op {
        op: &'static str,
        object: String,
        summary: String,
        hint: String,
        /// Kept for matching; its text is already in `summary`.
        cause: Box<object_store::Error>,
    },
}

impl StoreError {
    /// True when the object does not exist (and the bucket/container does).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::Op { cause, .. } if matches!(**cause, object_store::Error::NotFound { .. })
        ) && !self.is_missing_container()
    }

    /// Whether trying again may help.
    pub fn transience(&self) -> crate::error::Transience {
        use crate::error::Transience::{Permanent, Transient};
        use object_store::Error as E;
        match self {
            StoreError::Url(_) | StoreError::Open { .. } => Permanent,
            StoreError::Op { cause, summary, .. } => match **cause {
                E::NotFound { .. }
                | E::PermissionDenied { .. }
                | E::Unauthenticated { .. }
                | E::InvalidPath { .. }
                | E::NotSupported { .. }
                | E::NotImplemented { .. }
                | E::UnknownConfigurationKey { .. } => Permanent,
                _ if client_error(summary) => Permanent,
                _ => Transient,
            },
        }
    }

    fn is_missing_container(&self) -> bool {
        match self {
            StoreError::Op { summary, .. } => {
                summary.contains("NoSuchBucket") || summary.contains("ContainerNotFound")
            }
            _ => false,
        }
    }
}

/// An HTTP 4xx other than 408 (timeout) and 429 (throttled) will not go away by itself.
fn client_error(summary: &str) -> bool {
    summary
        .match_indices("HTTP ")
        .filter_map(|(i, _)| summary.get(i + 5..i + 8))
        .filter_map(|code| code.parse::<u16>().ok())
        .any(|code| (400..500).contains(&code) && code != 408 && code != 429)
}

/// An opened store: its URL and the object store rooted at the URL's prefix.
#[derive(Clone)]
pub struct Store {
    url: StoreUrl,
    inner: Arc<dyn ObjectStore>,
    /// Where requests go (remote stores), for messages.
    endpoint: Option<String>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

impl Store {
    /// Opens the store a URL names. Makes no request.
    pub fn open(url: &StoreUrl, access: Access) -> Result<Self, StoreError> {
        let fail = |reason: String| StoreError::Open {
            url: url.to_string(),
            reason,
        };
        let mut endpoint = None;
        let inner: Arc<dyn ObjectStore> = match url {
            StoreUrl::Local(path) => {
                if access == Access::Write {
                    std::fs::create_dir_all(path)
                        .map_err(|e| fail(format!("cannot create the folder: {e}")))?;
                } else if !path.is_dir() {
                    return Err(fail("no such folder".into()));
                }
                // fsync: a pack must be on disk before the snapshot that needs it is written.
                Arc::new(
                    LocalFileSystem::new_with_prefix(path)
                        .map_err(|e| fail(first_line(&e.to_string())))?
                        .with_fsync(true),
                )
            }
            StoreUrl::S3 { bucket, prefix } => {
                check_aws_credentials().map_err(fail)?;
                let mut b = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config());
                for (key, value) in client_defaults("AWS_") {
                    b = b.with_config(AmazonS3ConfigKey::Client(key), value);
                }
                endpoint = Some(s3_endpoint(&b));
                let s3 = b.build().map_err(|e| fail(first_line(&e.to_string())))?;
                prefixed(s3, prefix)
            }
            StoreUrl::Azure { container, prefix } => {
                let mut b = MicrosoftAzureBuilder::from_env()
                    .with_container_name(container)
                    .with_retry(retry_config());
                for (key, value) in client_defaults("AZURE_") {
                    b = b.with_config(AzureConfigKey::Client(key), value);
                }
                endpoint = Some(azure_endpoint(&b));
                let az = b.build()
                    .map_err(|e| {
                        fail(format!(
                            "{} (set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_USE_EMULATOR=true for Azurite)",
                            first_line(&e.to_string())
                        ))
                    })?;
                prefixed(az, prefix)
            }
            StoreUrl::Memory { name, prefix } => {
                static STORES: OnceLock<Mutex<HashMap<String, Arc<InMemory>>>> = OnceLock::new();
                let mut stores = STORES
                    .get_or_init(Default::default)
                    .lock()
                    .unwrap_or_else(|e| e.into_inner());
                let mem = stores.entry(name.clone()).or_default().clone();
                prefixed_arc(mem, prefix)
            }
        };
        let inner = match std::env::var("FERRY_FAULTS") {
            Ok(spec) if !spec.is_empty() => {
                let cfg = fault::FaultConfig::parse(&spec).map_err(fail)?;
                tracing::warn!(?cfg, store = %url, "fault injection enabled (FERRY_FAULTS): for tests only");
                Arc::new(fault::FaultStore::new(inner, cfg))
            }
            _ => inner,
        };
        let inner: Arc<dyn ObjectStore> = match &endpoint {
            Some(e) => Arc::new(watch::Watched::new(
                inner,
                url.clone(),
                e.clone(),
                watch::slow_after(),
            )),
            None => inner,
        };
        Ok(Self {
            url: url.clone(),
            inner,
            endpoint,
        })
    }

    /// Wraps an existing object store (tests, decorators).
    pub fn from_parts(url: StoreUrl, inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            url,
            inner,
            endpoint: None,
        }
    }

    pub fn url(&self) -> &StoreUrl {
        &self.url
    }

    /// The object store rooted at this store's prefix.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// The full URL of an object, for messages.
    pub fn object_url(&self, path: &Path) -> String {
        self.url.join(path.as_ref())
    }

    fn op_error(&self, op: &'static str, path: &Path, source: object_store::Error) -> StoreError {
        let mut summary = summarize(&source);
        if summary.contains(NO_AWS_CREDENTIALS) {
            // Explained by `watch`: the hint says what to set.
            summary = NO_AWS_CREDENTIALS.into();
        }
        let hint = hint(&self.url, self.endpoint.as_deref(), &source, &summary);
        StoreError::Op {
            op,
            object: self.object_url(path),
            summary,
            hint,
            cause: Box::new(source),
        }
    }

    pub async fn get(&self, path: &Path) -> Result<Bytes, StoreError> {
        async { self.inner.get(path).await?.bytes().await }
            .await
            .map_err(|e| self.op_error("reading", path, e))
    }

    /// Reads an object, or `None` when it does not exist.
    pub async fn get_opt(&self, path: &Path) -> Result<Option<Bytes>, StoreError> {
        match self.get(path).await {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.is_not_found() => Ok(None),
            Err(e) => Err(e),
        }
    }

    pub async fn get_range(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
    ) -> Result<Bytes, StoreError> {
        self.inner
            .get_range(path, range)
            .await
            .map_err(|e| self.op_error("reading", path, e))
    }

    pub async fn head(&self, path: &Path) -> Result<ObjectMeta, StoreError> {
        self.inner
            .head(path)
            .await
            .map_err(|e| self.op_error("inspecting", path, e))
    }

    /// Writes an object, replacing any previous one.
    pub async fn put(&self, path: &Path, data: Bytes) -> Result<(), StoreError> {
        self.inner
            .put(path, PutPayload::from(data))
            .await
            .map(|_| ())
            .map_err(|e| self.op_error("writing", path, e))
    }

    /// Writes an object only if none exists (If-None-Match: *). Returns false if one existed.
    pub async fn put_new(&self, path: &Path, data: Bytes) -> Result<bool, StoreError> {
        let opts = PutOptions {
            mode: PutMode::Create,
            ..Default::default()
        };
        match self
            .inner
            .put_opts(path, PutPayload::from(data), opts)
            .await
        {
            Ok(_) => Ok(true),
            Err(object_store::Error::AlreadyExists { .. })
            | Err(object_store::Error::Precondition { .. }) => Ok(false),
            Err(e) => Err(self.op_error("creating", path, e)),
        }
    }

    /// Deletes an object. An object that is already gone counts as deleted, on every
    /// backend (S3 says so itself; a folder and Azure answer NotFound): a delete repeated
    /// after a lost response, a killed run or a concurrent gc must not fail.
    pub async fn delete(&self, path: &Path) -> Result<(), StoreError> {
        match self.inner.delete(path).await {
            Ok(()) => Ok(()),
            Err(e) => {
                let err = self.op_error("deleting", path, e);
                if err.is_not_found() {
                    Ok(())
                } else {
                    Err(err)
                }
            }
        }
    }

    /// Lists every object under `prefix` (all of the store when `None`).
    pub async fn list(&self, prefix: Option<&Path>) -> Result<Vec<ObjectMeta>, StoreError> {
        let root = Path::default();
        self.inner
            .list(prefix)
            .try_collect()
            .await
            .map_err(|e| self.op_error("listing", prefix.unwrap_or(&root), e))
    }

    /// Reads a whole object as a stream of pieces.
    pub async fn get_stream(
        &self,
        path: &Path,
    ) -> Result<BoxStream<'static, Result<Bytes, StoreError>>, StoreError> {
        let got = self
            .inner
            .get(path)
            .await
            .map_err(|e| self.op_error("reading", path, e))?;
        let (me, p) = (self.clone(), path.clone());
        Ok(got
            .into_stream()
            .map_err(move |e| me.op_error("reading", &p, e))
            .boxed())
    }

    /// Reads `range` of an object, only while its etag is `etag` (any version when `None`):
    /// a changed object is a precondition failure, never a mix of two versions.
    pub async fn get_range_if_match(
        &self,
        path: &Path,
        range: std::ops::Range<u64>,
        etag: Option<String>,
    ) -> Result<Bytes, StoreError> {
        let opts = GetOptions {
            range: Some(GetRange::Bounded(range)),
            if_match: etag,
            ..Default::default()
        };
        async {
            let parts: Vec<Bytes> = self
                .inner
                .get_opts(path, opts)
                .await?
                .into_stream()
                .try_collect()
                .await?;
            Ok(parts.concat().into())
        }
        .await
        .map_err(|e| self.op_error("reading", path, e))
    }

    /// Starts a streamed write of one object (a multipart upload on S3 and Azure) in parts
    /// of `part_size` bytes.
    pub async fn upload(&self, path: &Path, part_size: usize) -> Result<Upload, StoreError> {
        let up = self
            .inner
            .put_multipart(path)
            .await
            .map_err(|e| self.op_error("writing", path, e))?;
        Ok(Upload {
            store: self.clone(),
            path: path.clone(),
            inner: WriteMultipart::new_with_chunk_size(up, part_size),
        })
    }

    /// True when nothing is stored under this store's prefix. Also proves the bucket or
    /// container exists and the credentials work.
    pub async fn is_empty(&self) -> Result<bool, StoreError> {
        let first = self.inner.list(None).try_next().await;
        first
            .map(|o| o.is_none())
            .map_err(|e| self.op_error("listing", &Path::default(), e))
    }
}

/// A streamed write of one object: [`Store::upload`]. Dropped without [`Upload::finish`], the
/// object is not written (call [`Upload::abort`] to free the parts at once).
pub struct Upload {
    store: Store,
    path: Path,
    inner: WriteMultipart,
}

impl Upload {
    /// Appends bytes (buffered into parts).
    pub fn write(&mut self, data: &[u8]) {
        self.inner.write(data)
    }

    /// Appends a piece without copying it.
    pub fn put(&mut self, data: Bytes) {
        self.inner.put(data)
    }

    /// Waits until at most `max` parts are in flight.
    pub async fn wait_for_capacity(&mut self, max: usize) -> Result<(), StoreError> {
        let Upload { store, path, inner } = self;
        inner
            .wait_for_capacity(max)
            .await
            .map_err(|e| store.op_error("writing", path, e))
    }

    /// Sends what is left and commits the object; returns its etag, if the store gave one.
    pub async fn finish(self) -> Result<Option<String>, StoreError> {
        let Upload { store, path, inner } = self;
        match inner.finish().await {
            Ok(put) => Ok(put.e_tag),
            Err(e) => Err(store.op_error("writing", &path, e)),
        }
    }

    /// Gives the upload up; the object is not written.
    pub async fn abort(self) -> Result<(), StoreError> {
        let Upload { store, path, inner } = self;
        inner
            .abort()
            .await
            .map_err(|e| store.op_error("aborting the upload of", &path, e))
    }
}

fn prefixed<T: ObjectStore>(store: T, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        Arc::new(store)
    } else {
        Arc::new(PrefixStore::new(store, prefix_path(prefix)))
    }
}

fn prefixed_arc(store: Arc<InMemory>, prefix: &str) -> Arc<dyn ObjectStore> {
    if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix_path(prefix)))
    }
}

/// A URL's prefix as the key prefix it names, byte for byte (`Path::from` would
/// percent-encode `ü` or `~`); only a prefix no key can hold is encoded.
fn prefix_path(prefix: &str) -> Path {
    key::object_key(prefix).unwrap_or_else(|_| Path::from(prefix))
}

/// Retry budget: object_store's backoff with `FERRY_RETRY_MAX` retries (default 10) within
/// `FERRY_RETRY_TIMEOUT_SECS` (default 180). Tests lower both so a dead server fails fast.
pub(crate) fn retry_config() -> RetryConfig {
    let env = |key: &str| std::env::var(key).ok().and_then(|v| v.parse::<u64>().ok());
    let mut cfg = RetryConfig::default();
    if let Some(n) = env("FERRY_RETRY_MAX") {
        cfg.max_retries = n as usize;
    }
    if let Some(s) = env("FERRY_RETRY_TIMEOUT_SECS") {
        cfg.retry_timeout = Duration::from_secs(s);
    }
    if cfg.max_retries <= 1 {
        cfg.backoff.init_backoff = Duration::from_millis(20);
    }
    cfg
}

/// Client settings ferry changes from object_store's defaults, unless the environment sets
/// them (`AWS_TIMEOUT`, `AZURE_CONNECT_TIMEOUT`, …, see the README): packs are tens of MiB,
/// so allow slow links, but notice a dead endpoint quickly. `READ_TIMEOUT` bounds the wait
/// for the answer's head (which includes sending the body: a 32 MiB pack needs ~0.3 MB/s)
/// and then for each piece of its body, so a server that accepts and never answers fails
/// the attempt at 120 s, well inside the retry budget (`FERRY_RETRY_TIMEOUT_SECS`, 180 s),
/// and the request is retried instead of failing once at `TIMEOUT`.
pub(crate) fn client_defaults(env_prefix: &str) -> Vec<(ClientConfigKey, &'static str)> {
    [
        (ClientConfigKey::Timeout, "TIMEOUT", DEFAULT_TIMEOUT),
        (
            ClientConfigKey::ConnectTimeout,
            "CONNECT_TIMEOUT",
            DEFAULT_CONNECT_TIMEOUT,
        ),
        (
            ClientConfigKey::ReadTimeout,
            "READ_TIMEOUT",
            DEFAULT_READ_TIMEOUT,
        ),
    ]
    .into_iter()
    .filter(|(_, name, _)| std::env::var_os(format!("{env_prefix}{name}")).is_none())
    .map(|(key, _, value)| (key, value))
    .collect()
}

/// Whole request (`AWS_TIMEOUT`, `AZURE_TIMEOUT`).
pub(crate) const DEFAULT_TIMEOUT: &str = "300s";
/// Connecting (`AWS_CONNECT_TIMEOUT`, `AZURE_CONNECT_TIMEOUT`).
pub(crate) const DEFAULT_CONNECT_TIMEOUT: &str = "10s";
/// Silence from the server (`AWS_READ_TIMEOUT`, `AZURE_READ_TIMEOUT`).
pub(crate) const DEFAULT_READ_TIMEOUT: &str = "120s";

/// Where an S3 builder's requests go.
fn s3_endpoint(b: &AmazonS3Builder) -> String {
    let get = |k| b.get_config_value(&k);
    get(AmazonS3ConfigKey::Endpoint).unwrap_or_else(|| {
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        format!("https://s3.{region}.amazonaws.com")
    })
}

/// Where an Azure builder's requests go.
fn azure_endpoint(b: &MicrosoftAzureBuilder) -> String {
    let get = |k| b.get_config_value(&k);
    let emulator = get(AzureConfigKey::UseEmulator)
        .is_some_and(|v| matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"));
    if emulator {
        return std::env::var("AZURITE_BLOB_STORAGE_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "http://127.0.0.1:10000".into());
    }
    get(AzureConfigKey::Endpoint).unwrap_or_else(|| {
        let account = get(AzureConfigKey::AccountName).unwrap_or_else(|| "ACCOUNT".into());
        format!("https://{account}.blob.core.windows.net")
    })
}

/// True when the environment names a source of AWS credentials other than the instance
/// metadata service.
fn has_aws_credential_source() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY"))
        || set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || set("AWS_SKIP_SIGNATURE")
}

/// True when `e` is a failure to fetch credentials while the environment names none.
fn lacks_aws_credentials(e: &object_store::Error) -> bool {
    !has_aws_credential_source() && is_credential_error(&summarize(e))
}

/// What to set when no AWS credentials were found.
const NO_AWS_CREDENTIALS: &str = "no AWS credentials found";
/// How to give ferry AWS credentials.
const AWS_CREDENTIALS_FIX: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN; ferry reads no ~/.aws profiles (AWS_PROFILE): export a profile's keys with `eval \"$(aws configure export-credentials --format env)\"`; set AWS_ENDPOINT for a non-AWS server";

/// Refuses to go on without credentials when the instance metadata service is switched off,
/// rather than failing later with an opaque signing error.
pub(crate) fn check_aws_credentials() -> Result<(), String> {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let has_source = has_aws_credential_source();
    let imds_off =
        std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if set("AWS_ACCESS_KEY_ID") != set("AWS_SECRET_ACCESS_KEY") {
        return Err("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together".into());
    }
    if !has_source && imds_off {
        return Err(format!("{NO_AWS_CREDENTIALS}: {AWS_CREDENTIALS_FIX}"));
    }
    Ok(())
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// A one-line summary of an object_store error: the operation, the HTTP status and the
/// service's error code and message when there are any, else the innermost cause.
fn summarize(err: &object_store::Error) -> String {
    let mut full = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        full.push_str(": ");
        full.push_str(&s.to_string());
        source = s.source();
    }
    let full = full.replace(['\n', '\r'], " ");
    let between = |open: &str, close: &str| -> Option<String> {
        let start = full.find(open)? + open.len();
        let end = start + full[start..].find(close)?;
        Some(full[start..end].trim().to_string())
    };
    let mut msg = match full.find(" - ") {
        Some(i) => full[..i].to_string(),
        None => first_line(&full),
    };
    if let Some(status) = between("status code: ", ":") {
        msg = format!("{msg}: HTTP {status}");
    }
    match (
        between("<Code>", "</Code>"),
        between("<Message>", "</Message>"),
    ) {
        (Some(code), Some(m)) => {
            msg = format!(
                "{msg}: {code}: {}",
                m.split(" RequestId").next().unwrap_or(&m)
            )
        }
        (Some(code), None) => msg = format!("{msg}: {code}"),
        _ => {
            if let Some(inner) = full.rsplit(": ").next() {
                if !msg.contains(inner) {
                    msg = format!("{msg}: {inner}");
                }
            }
        }
    }
    const MAX: usize = 400;
    if msg.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|i| msg.is_char_boundary(*i))
            .unwrap_or(0);
        msg.truncate(cut);
        msg.push('…');
    }
    msg
}

fn hint(
    url: &StoreUrl,
    endpoint: Option<&str>,
    err: &object_store::Error,
    summary: &str,
) -> String {
    use object_store::Error as E;
    let endpoint = endpoint.unwrap_or("the endpoint");
    let h = match (url, err) {
        // Without credentials in the environment, object_store asks the instance metadata
        // service; off EC2 that fails with an answer that names no variable.
        (StoreUrl::S3 { .. }, _) if summary == NO_AWS_CREDENTIALS => AWS_CREDENTIALS_FIX.into(),
        (StoreUrl::S3 { .. }, _)
            if !has_aws_credential_source() && is_credential_error(summary) =>
        {
            format!("{NO_AWS_CREDENTIALS}: {AWS_CREDENTIALS_FIX}")
        }
        (StoreUrl::S3 { bucket, .. }, _) if summary.contains("NoSuchBucket") => {
            format!("bucket {bucket:?} does not exist: create it or fix the URL")
        }
        (StoreUrl::Azure { container, .. }, _) if summary.contains("ContainerNotFound") => {
            format!("container {container:?} does not exist: create it or fix the URL")
        }
        (StoreUrl::S3 { .. }, E::Unauthenticated { .. } | E::PermissionDenied { .. }) => {
            "access denied: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION".into()
        }
        (StoreUrl::Azure { .. }, E::Unauthenticated { .. } | E::PermissionDenied { .. }) => {
            "access denied: check AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY".into()
        }
        (StoreUrl::S3 { .. }, _) if is_timeout(summary) => format!(
            "{endpoint} did not answer in time, retries included: check that it is up and reachable, or raise AWS_READ_TIMEOUT (default {DEFAULT_READ_TIMEOUT}), AWS_TIMEOUT ({DEFAULT_TIMEOUT}) or FERRY_RETRY_TIMEOUT_SECS"
        ),
        (StoreUrl::Azure { .. }, _) if is_timeout(summary) => format!(
            "{endpoint} did not answer in time, retries included: check that it is up and reachable, or raise AZURE_READ_TIMEOUT (default {DEFAULT_READ_TIMEOUT}), AZURE_TIMEOUT ({DEFAULT_TIMEOUT}) or FERRY_RETRY_TIMEOUT_SECS"
        ),
        (StoreUrl::S3 { .. }, _) if is_connect_error(summary) => {
            "cannot reach the S3 endpoint: check AWS_ENDPOINT and that the server runs".into()
        }
        (StoreUrl::Azure { .. }, _) if is_connect_error(summary) => {
            "cannot reach the Azure endpoint: check the account settings (AZURITE_BLOB_STORAGE_URL for the emulator) and that the server runs".into()
        }
        _ => return String::new(),
    };
    format!(" ({h})")
}

fn is_timeout(summary: &str) -> bool {
    let s = summary.to_ascii_lowercase();
    s.contains("timed out") || s.contains("timeout")
}

/// An error from fetching credentials (the instance metadata service or a token endpoint).
fn is_credential_error(summary: &str) -> bool {
    let metadata = std::env::var("AWS_METADATA_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "169.254.169.254".into());
    let s = summary.to_ascii_lowercase();
    summary.contains(metadata.trim_start_matches("http://"))
        || s.contains("latest/api/token")
        || s.contains("credential")
}

fn is_connect_error(summary: &str) -> bool {
    let s = summary.to_ascii_lowercase();
    s.contains("connection refused")
        || s.contains("error sending request")
        || s.contains("dns error")
}
