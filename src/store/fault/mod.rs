//! Fault injection for tests: an `ObjectStore` wrapper that fails a seeded, deterministic
//! share of requests (HTTP 5xx, timeouts, connection resets, bodies cut short) and adds
//! latency. A faulted delete does delete, then answers NotFound, as the client's retry of a
//! delete whose response was lost does. Enabled in the binary by `FERRY_FAULTS=rate=0.1,seed=7,latency_ms=5`; never
//! enabled otherwise. `fail_first=N` fails the process's first N requests with HTTP 503,
//! counted across every store it opens (a retry opens new ones), so a test can make exactly
//! the first attempt of a daemon run fail. [`FaultDelta`] does the same to native delta
//! writes, from the same spec.

mod delta;

pub use self::delta::FaultDelta;

use std::fmt;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
};

/// What to inject.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FaultConfig {
    /// Share of requests that fail, 0.0–1.0.
    pub rate: f64,
    /// Seed of the draw, so a run fails the same requests again.
    pub seed: u64,
    /// Upper bound of the random latency added to every request.
    pub max_latency: Duration,
    /// The process's first this many requests (deletes aside) fail with HTTP 503, whatever
    /// the rate.
    pub fail_first: u64,
}

/// Requests counted against [`FaultConfig::fail_first`], across every store of the process.
static FIRST_REQUESTS: AtomicU64 = AtomicU64::new(0);

impl FaultConfig {
    /// Counts one request against `fail_first`; true when it is one of the process's first
    /// `fail_first` and must fail (HTTP 503). For every path that injects faults, so that
    /// "the first request" means the same whichever client makes it.
    pub fn fails_first(&self) -> bool {
        self.fail_first > 0 && FIRST_REQUESTS.fetch_add(1, Ordering::Relaxed) < self.fail_first
    }
}

/// A `FERRY_FAULTS` spec that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum FaultSpecError {
    /// A part of the spec has no `=`.
    #[error("FERRY_FAULTS: {part:?} is not key=value")]
    NotKeyValue {
        /// The part as written.
        part: String,
    },
    /// A value that does not parse or is out of range.
    #[error("FERRY_FAULTS: {key}={value}: {problem}")]
    BadValue {
        /// The key.
        key: String,
        /// The value as written.
        value: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A key the spec does not know.
    #[error("FERRY_FAULTS: unknown key {key:?} (use rate, seed, latency_ms, fail_first)")]
    UnknownKey {
        /// The key as written.
        key: String,
    },
}

impl FaultConfig {
    /// Parses `rate=0.1,seed=7,latency_ms=5` (every key optional; rate defaults to 0.1).
    pub fn parse(spec: &str) -> Result<Self, FaultSpecError> {
        let mut cfg = FaultConfig {
            rate: 0.1,
            seed: 0,
            max_latency: Duration::ZERO,
            fail_first: 0,
        };
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| FaultSpecError::NotKeyValue { part: part.into() })?;
            let bad = |e: &dyn fmt::Display| FaultSpecError::BadValue {
                key: k.into(),
                value: v.into(),
                problem: e.to_string(),
            };
            match k {
                "rate" => cfg.rate = v.parse::<f64>().map_err(|e| bad(&e))?.clamp(0.0, 1.0),
                "seed" => cfg.seed = v.parse().map_err(|e| bad(&e))?,
                "latency_ms" => {
                    cfg.max_latency = Duration::from_millis(v.parse().map_err(|e| bad(&e))?)
                }
                "fail_first" => cfg.fail_first = v.parse().map_err(|e| bad(&e))?,
                _ => return Err(FaultSpecError::UnknownKey { key: k.into() }),
            }
        }
        Ok(cfg)
    }
}

/// The kinds of failure injected, in rotation by the seeded draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// An HTTP 503 answer.
    ServerError,
    /// A request that timed out.
    Timeout,
    /// A connection reset by the peer.
    ConnectionReset,
    /// A response body cut short.
    TruncatedBody,
}

impl Fault {
    /// The HTTP status the fault stands for, if it is an answer.
    pub fn status(self) -> Option<u16> {
        match self {
            Fault::ServerError => Some(503),
            Fault::Timeout | Fault::ConnectionReset | Fault::TruncatedBody => None,
        }
    }
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Fault::ServerError => "injected fault: HTTP 503 Service Unavailable",
            Fault::Timeout => "injected fault: operation timed out",
            Fault::ConnectionReset => "injected fault: connection reset by peer",
            Fault::TruncatedBody => "injected fault: response body cut short",
        })
    }
}

/// The error an injected fault fails with (a source of object_store's error).
#[derive(Debug)]
pub struct Injected(pub Fault);

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for Injected {}

/// Wraps a store and injects faults.
pub struct FaultStore {
    inner: Arc<dyn ObjectStore>,
    cfg: FaultConfig,
    requests: Arc<AtomicU64>,
    injected: Arc<AtomicU64>,
}

impl FaultStore {
    /// Wraps `inner`, failing requests as `cfg` says.
    pub fn new(inner: Arc<dyn ObjectStore>, cfg: FaultConfig) -> Self {
        Self {
            inner,
            cfg,
            requests: Arc::new(AtomicU64::new(0)),
            injected: Arc::new(AtomicU64::new(0)),
        }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Seeded draw for the next request: the fault to inject, if any, and the latency. One
    /// of the process's first `fail_first` requests is a server error.
    fn draw(&self) -> (Option<Fault>, Duration) {
        let (fault, latency) = draw(&self.cfg, &self.requests);
        let first = self.cfg.fails_first();
        (
            if first {
                Some(Fault::ServerError)
            } else {
                fault
            },
            latency,
        )
    }

    /// Sleeps the drawn latency; returns the error to fail with, if any. A truncated body is
    /// only possible on reads, so elsewhere it becomes a reset.
    async fn before(
        &self,
        op: &'static str,
        location: &str,
        reading: bool,
    ) -> Result<Option<Fault>> {
        let (fault, latency) = self.draw();
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        match fault {
            None => Ok(None),
            Some(Fault::TruncatedBody) if reading => {
                self.note(Fault::TruncatedBody, op, location);
                Ok(Some(Fault::TruncatedBody))
            }
            Some(f) => {
                let f = if f == Fault::TruncatedBody {
                    Fault::ConnectionReset
                } else {
                    f
                };
                self.note(f, op, location);
                Err(error(f))
            }
        }
    }

    fn note(&self, fault: Fault, op: &str, location: &str) {
        self.injected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%fault, op, location, "fault injected");
    }
}

/// The seeded draw for request number `requests` (then counted).
pub(crate) fn draw(cfg: &FaultConfig, requests: &AtomicU64) -> (Option<Fault>, Duration) {
    let n = requests.fetch_add(1, Ordering::Relaxed);
    let r = splitmix(cfg.seed ^ n.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    let unit = (r >> 11) as f64 / (1u64 << 53) as f64;
    let latency = if cfg.max_latency.is_zero() {
        Duration::ZERO
    } else {
        cfg.max_latency
            .mul_f64(((splitmix(r) >> 11) as f64) / (1u64 << 53) as f64)
    };
    let fault = (unit < cfg.rate).then(|| match splitmix(r ^ 0xFA17) % 4 {
        0 => Fault::ServerError,
        1 => Fault::Timeout,
        2 => Fault::ConnectionReset,
        _ => Fault::TruncatedBody,
    });
    (fault, latency)
}

fn error(f: Fault) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultStore",
        source: Box::new(Injected(f)),
    }
}

fn splitmix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Passes on the first half of a body, then fails like a dropped connection.
fn truncate(result: GetResult) -> GetResult {
    let keep = ((result.range.end - result.range.start) / 2) as usize;
    let mut shell = GetResult {
        payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
        meta: result.meta.clone(),
        range: result.range.clone(),
        attributes: result.attributes.clone(),
        extensions: result.extensions.clone(),
    };
    let mut sent = 0usize;
    let cut = result
        .into_stream()
        .map(move |chunk| {
            let chunk = chunk?;
            if sent >= keep {
                return Err(error(Fault::TruncatedBody));
            }
            let n = chunk.len().min(keep - sent);
            sent += n;
            Ok(chunk.slice(..n))
        })
        .chain(futures::stream::once(async {
            Err(error(Fault::TruncatedBody))
        }))
        .boxed();
    shell.payload = GetResultPayload::Stream(cut);
    shell
}

impl fmt::Display for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({})", self.inner)
    }
}

impl fmt::Debug for FaultStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultStore({:?}, {:?})", self.inner, self.cfg)
    }
}

#[async_trait]
impl ObjectStore for FaultStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.before("put", location.as_ref(), false).await?;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.before("put_multipart", location.as_ref(), false)
            .await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let fault = self.before("get", location.as_ref(), true).await?;
        let result = self.inner.get_opts(location, options).await?;
        Ok(match fault {
            Some(Fault::TruncatedBody) => truncate(result),
            _ => result,
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.before("get_ranges", location.as_ref(), false).await?;
        self.inner.get_ranges(location, ranges).await
    }

    /// Deletes; a faulted delete is carried out and then reported as NotFound (a lost
    /// response, retried by the client against an object that is gone now).
    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        let (cfg, requests, injected) = (self.cfg, self.requests.clone(), self.injected.clone());
        self.inner
            .delete_stream(locations)
            .map(move |deleted| {
                let (fault, _) = draw(&cfg, &requests);
                match (deleted, fault) {
                    (Ok(path), Some(f)) => {
                        injected.fetch_add(1, Ordering::Relaxed);
                        tracing::warn!(fault = %f, op = "delete", location = %path, "fault injected: deleted, answered NotFound");
                        Err(object_store::Error::NotFound {
                            path: path.to_string(),
                            source: Box::new(Injected(f)),
                        })
                    }
                    (other, _) => other,
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        let (fault, _) = self.draw();
        match fault {
            Some(f) => {
                self.note(f, "list", prefix.map_or("", |p| p.as_ref()));
                futures::stream::once(async move { Err(error(f)) }).boxed()
            }
            None => self.inner.list(prefix),
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.before("list", prefix.map_or("", |p| p.as_ref()), false)
            .await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.before("copy", from.as_ref(), false).await?;
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.before("rename", from.as_ref(), false).await?;
        self.inner.rename_opts(from, to, options).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    #[test]
    fn parses_specs() {
        let c = FaultConfig::parse("rate=0.25,seed=9,latency_ms=3").unwrap();
        assert_eq!(
            (c.rate, c.seed, c.max_latency),
            (0.25, 9, Duration::from_millis(3))
        );
        assert!(matches!(
            FaultConfig::parse("bogus=1"),
            Err(FaultSpecError::UnknownKey { .. })
        ));
        assert!(FaultConfig::parse("rate=x").is_err());
        assert_eq!(
            FaultConfig::parse("rate=0,fail_first=2")
                .unwrap()
                .fail_first,
            2
        );
        assert_eq!(FaultConfig::parse("").unwrap().fail_first, 0);
    }

    #[tokio::test]
    async fn injects_the_configured_share_deterministically() {
        let run = || async {
            let store = FaultStore::new(
                Arc::new(InMemory::new()),
                FaultConfig {
                    rate: 0.2,
                    seed: 42,
                    max_latency: Duration::ZERO,
                    fail_first: 0,
                },
            );
            let mut outcomes = Vec::new();
            for i in 0..500 {
                let path = Path::from(format!("o{i}"));
                let put = store
                    .put(&path, PutPayload::from_static(b"0123456789"))
                    .await;
                let get = match store.get(&path).await {
                    Ok(r) => r.bytes().await.map(|b| b.len()),
                    Err(e) => Err(e),
                };
                outcomes.push((put.is_ok(), get.ok()));
            }
            (outcomes, store.injected())
        };
        let (a, injected) = run().await;
        let (b, _) = run().await;
        assert_eq!(a, b, "same seed, same faults");
        // 1000 requests at 20 %: expect ~200 (binomial sd ~13).
        assert!((140..=260).contains(&injected), "{injected}");
        // A truncated body never yields the whole object.
        assert!(a
            .iter()
            .all(|(_, got)| got.is_none_or(|n| n == 10 || n == 0)));
        assert!(a.iter().any(|(ok, _)| !ok));
    }

    /// The first `fail_first` requests of the process fail, counted across stores (a retry
    /// opens new ones), then nothing does. The only test here that sets `fail_first`.
    #[tokio::test]
    async fn fail_first_counts_across_the_process() {
        let cfg = FaultConfig {
            rate: 0.0,
            seed: 0,
            max_latency: Duration::ZERO,
            fail_first: 2,
        };
        async fn put(store: &FaultStore) -> Result<PutResult> {
            store
                .put(&Path::from("x"), PutPayload::from_static(b"1"))
                .await
        }
        let a = FaultStore::new(Arc::new(InMemory::new()), cfg);
        let err = put(&a).await.unwrap_err();
        assert!(err.to_string().contains("HTTP 503"), "{err}");
        let b = FaultStore::new(Arc::new(InMemory::new()), cfg);
        assert!(put(&b).await.is_err(), "the second request of the process");
        assert!(put(&b).await.is_ok());
        assert!(put(&a).await.is_ok());
        assert_eq!((a.injected(), b.injected()), (1, 1));
    }

    /// A delete whose response is lost looks like NotFound to the caller; through `Store`
    /// that is success, and the object is gone either way.
    #[tokio::test]
    async fn a_faulted_delete_deletes_and_store_calls_it_success() {
        let faulty = Arc::new(FaultStore::new(
            Arc::new(InMemory::new()),
            FaultConfig {
                rate: 1.0,
                seed: 1,
                max_latency: Duration::ZERO,
                fail_first: 0,
            },
        ));
        let inner: Arc<dyn ObjectStore> = faulty.clone();
        let path = Path::from("x");
        // Every request faults: write underneath the wrapper.
        let raw = Arc::new(InMemory::new());
        raw.put(&path, PutPayload::from_static(b"1")).await.unwrap();
        let faulty_raw = FaultStore::new(raw.clone(), faulty.cfg);
        let err = faulty_raw.delete(&path).await.unwrap_err();
        assert!(matches!(err, object_store::Error::NotFound { .. }), "{err}");
        assert!(
            raw.head(&path).await.is_err(),
            "the faulted delete did not delete"
        );
        // Through Store: an object already gone, or a lost response, is a deleted object.
        let store = crate::store::Store::from_parts("memory://faults".parse().unwrap(), inner);
        store
            .delete(&path)
            .await
            .expect("a gone object counts as deleted");
        assert!(faulty.injected() >= 1);
    }
}
