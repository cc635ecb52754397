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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::time::Instant;

    use super::*;
    use crate::store::bwlimit::BwLimit;
    use crate::store::delta::Part;

    const MIB: u64 = 1 << 20;

    /// Reads the parts it sends from the source, as the S3 and Azure clients do; keeps the
    /// others server-side.
    struct Sending;

    #[async_trait]
    impl DeltaStore for Sending {
        fn limits(&self) -> Limits {
            Limits::AZURE
        }
        async fn probe(&self, _key: &str) -> Result<Option<RemoteObject>, NativeError> {
            Ok(None)
        }
        async fn write(
            &self,
            req: &WriteRequest<'_>,
            source: &dyn PartSource,
            _observer: &dyn WriteObserver,
        ) -> Result<String, NativeError> {
            for part in req.parts {
                if let Part::Send { new, .. } = part {
                    source.read(new.clone()).await.expect("read");
                }
            }
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

    /// 2 MiB sent and 8 MiB kept at 1 MiB/s up: two seconds, the kept bytes cost nothing.
    #[tokio::test(start_paused = true)]
    async fn sent_parts_are_paced_kept_parts_are_free() {
        let bw = Bandwidth::new(BwLimit {
            up: Some(MIB),
            down: None,
        });
        let store = ThrottledDelta::new(Arc::new(Sending), bw);
        let parts = [
            Part::Keep {
                block: [1; 32],
                old: 0..8 * MIB,
            },
            Part::Send {
                block: [2; 32],
                new: 8 * MIB..9 * MIB,
            },
            Part::Send {
                block: [3; 32],
                new: 9 * MIB..10 * MIB,
            },
        ];
        let req = WriteRequest {
            key: "model.bin",
            parts: &parts,
            size: 10 * MIB,
            base_etag: Some("old"),
            blake3: "ab",
        };
        let start = Instant::now();
        assert_eq!(store.write(&req, &Zeros, &Quiet).await.unwrap(), "etag");
        let took = start.elapsed();
        assert!(
            took > Duration::from_millis(1990) && took < Duration::from_millis(2010),
            "{took:?}"
        );
    }
}
