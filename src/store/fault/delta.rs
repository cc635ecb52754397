//! Fault injection for native delta writes: a [`DeltaStore`] wrapper driven by the same
//! `FERRY_FAULTS` spec as [`super::FaultStore`]. A faulted call fails before it reaches the
//! inner store (a write leaves the object as it was), with the error a real failure of its
//! kind would give: HTTP 503 (transient, with its status), a timeout or a reset connection
//! (transient, no status).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;

use super::{draw, Fault, FaultConfig};
use crate::error::Transience;
use crate::store::delta::{
    DeltaStore, Limits, NativeError, PartSource, RemoteObject, WriteObserver, WriteRequest,
};

/// Wraps a native store and injects faults.
pub struct FaultDelta {
    inner: Arc<dyn DeltaStore>,
    cfg: FaultConfig,
    requests: AtomicU64,
    injected: AtomicU64,
}

impl FaultDelta {
    /// Wraps `inner`, failing native calls as `cfg` says (the same spec as [`super::FaultStore`]).
    pub fn new(inner: Arc<dyn DeltaStore>, cfg: FaultConfig) -> Self {
        Self {
            inner,
            cfg,
            requests: AtomicU64::new(0),
            injected: AtomicU64::new(0),
        }
    }

    /// How many faults were injected so far.
    pub fn injected(&self) -> u64 {
        self.injected.load(Ordering::Relaxed)
    }

    /// Sleeps the drawn latency; fails the call `op` on `key` if a fault is drawn.
    async fn before(&self, op: &'static str, key: &str) -> Result<(), NativeError> {
        let (mut fault, latency) = draw(&self.cfg, &self.requests);
        if !latency.is_zero() {
            tokio::time::sleep(latency).await;
        }
        if self.cfg.fails_first() {
            fault = Some(Fault::ServerError);
        }
        let Some(fault) = fault else {
            return Ok(());
        };
        // Nothing is read back from a native call's body: a cut body is a reset here.
        let fault = match fault {
            Fault::TruncatedBody => Fault::ConnectionReset,
            f => f,
        };
        self.injected.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(%fault, op, key, "fault injected");
        Err(NativeError::Request {
            url: key.to_string(),
            message: format!("{op}: {fault}"),
            status: fault.status(),
            transience: Transience::Transient,
        })
    }
}

#[async_trait]
impl DeltaStore for FaultDelta {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    async fn probe(&self, key: &str) -> Result<Option<RemoteObject>, NativeError> {
        self.before("probe", key).await?;
        self.inner.probe(key).await
    }

    async fn write(
        &self,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        self.before("native write", req.key).await?;
        self.inner.write(req, source, observer).await
    }

    async fn unfinished_uploads(
        &self,
        key: &str,
    ) -> Result<Vec<(String, std::time::SystemTime)>, NativeError> {
        self.before("listing unfinished uploads", key).await?;
        self.inner.unfinished_uploads(key).await
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), NativeError> {
        self.before("abort", key).await?;
        self.inner.abort(key, upload_id).await
    }
}

#[cfg(test)]
mod tests {
    use std::ops::Range;
    use std::sync::atomic::AtomicUsize;
    use std::time::Duration;

    use bytes::Bytes;

    use super::*;
    use crate::store::delta::Part;

    /// Counts the calls that reach it; every write succeeds.
    #[derive(Default)]
    struct Counting(AtomicUsize);

    #[async_trait]
    impl DeltaStore for Counting {
        fn limits(&self) -> Limits {
            Limits::AZURE
        }
        async fn probe(&self, _key: &str) -> Result<Option<RemoteObject>, NativeError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok(None)
        }
        async fn write(
            &self,
            _req: &WriteRequest<'_>,
            _source: &dyn PartSource,
            _observer: &dyn WriteObserver,
        ) -> Result<String, NativeError> {
            self.0.fetch_add(1, Ordering::SeqCst);
            Ok("etag".into())
        }
        async fn abort(&self, _key: &str, _upload_id: &str) -> Result<(), NativeError> {
            Ok(())
        }
    }

    struct Zeros;

    #[async_trait]
    impl PartSource for Zeros {
        async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
            Ok(Bytes::from(vec![0; (range.end - range.start) as usize]))
        }
    }

    struct Quiet;
    impl WriteObserver for Quiet {}

    #[tokio::test]
    async fn native_writes_see_injected_faults_as_transient_failures() {
        let inner = Arc::new(Counting::default());
        let faulty = FaultDelta::new(
            inner.clone(),
            FaultConfig {
                rate: 0.3,
                seed: 5,
                max_latency: Duration::ZERO,
                fail_first: 0,
            },
        );
        let parts = [Part::Send {
            block: [1; 32],
            new: 0..4,
        }];
        let req = WriteRequest {
            key: "model.bin",
            parts: &parts,
            size: 4,
            base_etag: None,
            blake3: "ab",
        };
        let (mut failed, mut with_503) = (0, 0);
        for _ in 0..200 {
            match faulty.write(&req, &Zeros, &Quiet).await {
                Ok(etag) => assert_eq!(etag, "etag"),
                Err(e) => {
                    failed += 1;
                    assert_eq!(e.transience(), Transience::Transient, "{e}");
                    assert!(e.to_string().contains("injected fault"), "{e}");
                    if e.status() == Some(503) {
                        with_503 += 1;
                    }
                }
            }
        }
        // 200 writes at 30 %: ~60 fail (sd ~6.5); a faulted write never reached the store.
        assert!((30..=90).contains(&failed), "{failed}");
        assert!(with_503 > 0, "no 503 among {failed} faults");
        assert_eq!(faulty.injected(), failed as u64);
        assert_eq!(inner.0.load(Ordering::SeqCst), 200 - failed);
    }
}
