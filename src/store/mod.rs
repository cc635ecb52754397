//! Stores by URL: parses `file://`, `s3://`, `az://`, `gs://` and `memory://` URLs and opens
//! them as a [`Store`]: an `Arc<dyn ObjectStore>` for the data plane and, for clouds with one,
//! a native [`DeltaStore`] for delta writes (S3, Azure; not GCS, whose compose joins whole
//! objects only). Only this module knows which cloud a store is:
//! one module per backend (`local`, [`s3`], [`azure`], [`gcs`]) owns its settings, its clients and
//! its error hints; [`StoreOptions`] (retries, timeouts, faults) is resolved once by the
//! caller and passed to all of them.
//!
//! Credentials and endpoints come from the standard environment variables read by
//! `object_store`'s `from_env` builders, so the same URL works against AWS, Azure and the
//! local emulators.

pub mod azure;
pub mod bwlimit;
pub mod delta;
mod error;
pub mod fault;
pub mod gcs;
pub(crate) mod key;
mod local;
pub mod options;
pub mod s3;
mod upload;
mod url;
mod watch;

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::BoxStream;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{
    GetOptions, GetRange, ObjectMeta, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
    WriteMultipart,
};

use self::bwlimit::Bandwidth;
use self::delta::{DeltaStore, NativeError};
use self::error::summarize;
pub use self::error::StoreError;
use self::fault::FaultConfig;
pub use self::options::{OptionsError, RetryPolicy, StoreOptions, Timeouts};
pub use self::upload::Upload;
pub use self::url::{StoreUrl, UrlError};

/// Whether opening a local store may create its folder.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Reading only: a missing folder is an error.
    Read,
    /// Writing: a missing local folder is created.
    Write,
}

/// What a backend's `open` hands to [`Store::open_with`].
pub(crate) struct Backend {
    /// The object store rooted at the URL's prefix.
    pub(crate) inner: Arc<dyn ObjectStore>,
    /// Where requests go (remote stores), for messages and slow-request reports.
    pub(crate) endpoint: Option<String>,
    /// Makes the native delta client, for clouds that have one.
    pub(crate) delta: Option<Arc<dyn OpenDelta>>,
}

/// Makes a backend's native [`DeltaStore`] on demand (from the settings and credentials its
/// `object_store` client was made from), so a store that never writes deltas never builds
/// one, and a native setting it cannot use fails only the delta write.
pub(crate) trait OpenDelta: Send + Sync {
    fn open_delta(&self) -> Result<Arc<dyn DeltaStore>, NativeError>;
}

/// An opened store: its URL and the object store rooted at the URL's prefix.
#[derive(Clone)]
pub struct Store {
    url: StoreUrl,
    inner: Arc<dyn ObjectStore>,
    /// Where requests go (remote stores), for messages.
    endpoint: Option<String>,
    delta: Option<Arc<dyn OpenDelta>>,
    /// `FERRY_FAULTS`, applied to native writes too.
    faults: Option<FaultConfig>,
    /// The process's bandwidth limit, applied to native writes too.
    bandwidth: Option<Bandwidth>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({})", self.url)
    }
}

impl Store {
    /// Opens the store a URL names. Makes no request.
    pub fn open_with(
        url: &StoreUrl,
        access: Access,
        options: &StoreOptions,
    ) -> Result<Self, StoreError> {
        let backend = match url {
            StoreUrl::Local(path) => local::open_folder(url, path, access)?,
            StoreUrl::Memory { name, prefix } => local::open_memory(name, prefix),
            StoreUrl::S3 { bucket, prefix } => s3::open(url, bucket, prefix, options)?,
            StoreUrl::Azure { container, prefix } => azure::open(url, container, prefix, options)?,
            StoreUrl::Gcs { bucket, prefix } => gcs::open(url, bucket, prefix, options)?,
        };
        Ok(Self::assemble(url, backend, options))
    }

    /// The store on an opened backend, with the wrappers `options` ask for.
    fn assemble(url: &StoreUrl, backend: Backend, options: &StoreOptions) -> Self {
        let Backend {
            inner,
            endpoint,
            delta,
        } = backend;
        let inner = match options.faults {
            Some(cfg) => {
                tracing::warn!(?cfg, store = %url, "fault injection enabled (FERRY_FAULTS): for tests only");
                Arc::new(fault::FaultStore::new(inner, cfg))
            }
            None => inner,
        };
        let inner: Arc<dyn ObjectStore> = match &endpoint {
            Some(e) => Arc::new(watch::Watched::new(
                inner,
                url.clone(),
                e.clone(),
                options.slow_after,
            )),
            None => inner,
        };
        let inner: Arc<dyn ObjectStore> = match &options.bandwidth {
            Some(bw) => Arc::new(bwlimit::Throttled::new(inner, bw.clone())),
            None => inner,
        };
        Self {
            url: url.clone(),
            inner,
            endpoint,
            delta,
            faults: options.faults,
            bandwidth: options.bandwidth.clone(),
        }
    }

    /// The native client for delta writes ([`DeltaStore`]), or `None` for stores without one
    /// (local folders, memory, GCS), which are written whole. Under `FERRY_FAULTS` its calls see
    /// injected faults too.
    pub fn delta(&self) -> Result<Option<Arc<dyn DeltaStore>>, StoreError> {
        let Some(open) = &self.delta else {
            return Ok(None);
        };
        let native = open.open_delta()?;
        let native: Arc<dyn DeltaStore> = match self.faults {
            Some(cfg) => Arc::new(fault::FaultDelta::new(native, cfg)),
            None => native,
        };
        Ok(Some(match &self.bandwidth {
            Some(bw) => Arc::new(bwlimit::ThrottledDelta::new(native, bw.clone())),
            None => native,
        }))
    }

    /// Wraps an existing object store (tests, decorators).
    pub fn from_parts(url: StoreUrl, inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            url,
            inner,
            endpoint: None,
            delta: None,
            faults: None,
            bandwidth: None,
        }
    }

    /// The store's URL.
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
        if let Some(message) = s3::chain_failure(&source) {
            // The AWS credential chain's one line names the profile, its files and the fix.
            summary = message;
        } else if summary.contains(s3::NO_AWS_CREDENTIALS) {
            // Explained by `watch`: the hint says what to set.
            summary = s3::NO_AWS_CREDENTIALS.into();
        }
        let hint = error::hint(&self.url, self.endpoint.as_deref(), &source, &summary);
        StoreError::op(op, self.object_url(path), summary, hint, source)
    }

    /// Reads a whole object.
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

    /// Reads `range` of an object (bytes from the start).
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

    /// An object's metadata (size, etag, last-modified).
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

    /// Whether everything at the store's root is under `prefix/` (one level listed: the
    /// root's objects and folders, not all of them). False for an empty store.
    pub async fn only_under(&self, prefix: &str) -> Result<bool, StoreError> {
        let root = Path::default();
        let top = self
            .inner
            .list_with_delimiter(None)
            .await
            .map_err(|e| self.op_error("listing", &root, e))?;
        Ok(top.objects.is_empty()
            && !top.common_prefixes.is_empty()
            && top.common_prefixes.iter().all(|p| p.as_ref() == prefix))
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

/// `store` rooted at the URL's `prefix`.
pub(crate) fn prefixed(store: Arc<dyn ObjectStore>, prefix: &str) -> Arc<dyn ObjectStore> {
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
