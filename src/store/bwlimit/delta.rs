//! Native delta writes under a bandwidth limit: the bytes of each part a write sends are
//! paid for as the part is read from the source; parts kept server-side cost nothing.

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use super::Bandwidth;
use crate::store::delta::{
    DeltaStore, Limits, NativeError, PartSource, RemoteObject, WriteObserver, WriteRequest,
};

/// Wraps a native store so the parts it sends take from the upload bucket.
pub struct ThrottledDelta {
    inner: Arc<dyn DeltaStore>,
    bw: Bandwidth,
}

impl ThrottledDelta {
    /// Wraps `inner`, pacing the bytes it sends by `bw`.
    pub fn new(inner: Arc<dyn DeltaStore>, bw: Bandwidth) -> Self {
        Self { inner, bw }
    }
}

/// The source of a write, paying for each range as it is read (to be sent).
struct Paced<'a> {
    inner: &'a dyn PartSource,
    bw: &'a Bandwidth,
}

#[async_trait]
impl PartSource for Paced<'_> {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let bytes = self.inner.read(range).await?;
        self.bw.upload(bytes.len() as u64).await;
        Ok(bytes)
    }
}

#[async_trait]
impl DeltaStore for ThrottledDelta {
    fn limits(&self) -> Limits {
        self.inner.limits()
    }

    async fn probe(&self, key: &str) -> Result<Option<RemoteObject>, NativeError> {
        self.inner.probe(key).await
    }

    async fn write(
        &self,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        let paced = Paced {
            inner: source,
            bw: &self.bw,
        };
        self.inner.write(req, &paced, observer).await
    }

    async fn unfinished_uploads(
        &self,
        key: &str,
    ) -> Result<Vec<(String, std::time::SystemTime)>, NativeError> {
        self.inner.unfinished_uploads(key).await
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), NativeError> {
        self.inner.abort(key, upload_id).await
    }
}
