//! Bandwidth limits (`--bwlimit`, the daemon's `[runner] bwlimit`): one [`Bandwidth`] per
//! process — a token bucket for uploads and one for downloads — shared by every store it
//! opens, and [`Throttled`], the `ObjectStore` wrapper that makes each store's transfers
//! take from it. Uploads (put, multipart parts) are paid for before they are sent; reads pay
//! for each piece of a body as it is consumed, so a slow reader slows the server down.
//! Native delta writes take the bytes of the parts they send ([`ThrottledDelta`]); the
//! parts they copy server-side (S3 `UploadPartCopy`, Azure's re-committed blocks) move no
//! bytes through ferry and are not counted.

mod bucket;
mod delta;
mod rate;

pub use self::delta::ThrottledDelta;
pub use self::rate::{BwLimit, BwLimitError, Timetable};

use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use futures::stream::BoxStream;
use futures::StreamExt;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult, RenameOptions, Result,
    UploadPart,
};

use self::bucket::Bucket;

/// The process's bandwidth caps: cheap to clone, every clone shares the same buckets. Two
/// handles are equal when they share them.
#[derive(Clone)]
pub struct Bandwidth(Arc<Buckets>);

struct Buckets {
    up: Bucket,
    down: Bucket,
}

impl Bandwidth {
    /// Buckets at `limit`.
    pub fn new(limit: BwLimit) -> Self {
        Bandwidth(Arc::new(Buckets {
            up: Bucket::new(limit.up),
            down: Bucket::new(limit.down),
        }))
    }

    /// Switches to `limit` (the daemon's timetable); transfers waiting see it at once.
    pub fn set(&self, limit: BwLimit) {
        if self.limit() != limit {
            self.0.up.set_rate(limit.up);
            self.0.down.set_rate(limit.down);
        }
    }

    /// The limit in force.
    pub fn limit(&self) -> BwLimit {
        BwLimit {
            up: self.0.up.rate(),
            down: self.0.down.rate(),
        }
    }

    /// Waits until `n` more bytes may be sent.
    pub async fn upload(&self, n: u64) {
        self.0.up.take(n).await;
    }

    /// Waits until `n` more bytes may be received.
    pub async fn download(&self, n: u64) {
        self.0.down.take(n).await;
    }
}

impl PartialEq for Bandwidth {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }
}

impl fmt::Debug for Bandwidth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Bandwidth({})", self.limit())
    }
}

/// A store whose transfers take from the process's [`Bandwidth`].
#[derive(Debug)]
pub struct Throttled {
    inner: Arc<dyn ObjectStore>,
    bw: Bandwidth,
}

impl Throttled {
    /// Wraps `inner`, pacing its transfers by `bw`.
    pub fn new(inner: Arc<dyn ObjectStore>, bw: Bandwidth) -> Self {
        Self { inner, bw }
    }
}

impl fmt::Display for Throttled {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Throttled({})", self.inner)
    }
}

/// `result` with its body taking from the download bucket as it is read.
fn paced(result: GetResult, bw: Bandwidth) -> GetResult {
    let mut shell = GetResult {
        payload: GetResultPayload::Stream(futures::stream::empty().boxed()),
        meta: result.meta.clone(),
        range: result.range.clone(),
        attributes: result.attributes.clone(),
        extensions: result.extensions.clone(),
    };
    let body = result
        .into_stream()
        .then(move |piece| {
            let bw = bw.clone();
            async move {
                let piece = piece?;
                bw.download(piece.len() as u64).await;
                Ok(piece)
            }
        })
        .boxed();
    shell.payload = GetResultPayload::Stream(body);
    shell
}

#[async_trait]
impl ObjectStore for Throttled {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.bw.upload(payload.content_length() as u64).await;
        self.inner.put_opts(location, payload, opts).await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        let inner = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(ThrottledUpload {
            inner,
            bw: self.bw.clone(),
        }))
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let head = options.head;
        let result = self.inner.get_opts(location, options).await?;
        Ok(if head {
            result
        } else {
            paced(result, self.bw.clone())
        })
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        let got = self.inner.get_ranges(location, ranges).await?;
        self.bw
            .download(got.iter().map(|b| b.len() as u64).sum())
            .await;
        Ok(got)
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        self.inner.delete_stream(locations)
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list(prefix)
    }

    fn list_with_offset(
        &self,
        prefix: Option<&Path>,
        offset: &Path,
    ) -> BoxStream<'static, Result<ObjectMeta>> {
        self.inner.list_with_offset(prefix, offset)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        self.inner.list_with_delimiter(prefix).await
    }

    /// A server-side copy: no bytes through ferry, not counted.
    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.inner.copy_opts(from, to, options).await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.inner.rename_opts(from, to, options).await
    }
}

/// A multipart upload whose parts take from the upload bucket before they are sent.
#[derive(Debug)]
struct ThrottledUpload {
    inner: Box<dyn MultipartUpload>,
    bw: Bandwidth,
}

#[async_trait]
impl MultipartUpload for ThrottledUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        let n = data.content_length() as u64;
        // Called now, so parts keep their order; sent once the bytes are paid for.
        let part = self.inner.put_part(data);
        let bw = self.bw.clone();
        Box::pin(async move {
            bw.upload(n).await;
            part.await
        })
    }

    async fn complete(&mut self) -> Result<PutResult> {
        self.inner.complete().await
    }

    async fn abort(&mut self) -> Result<()> {
        self.inner.abort().await
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, WriteMultipart};
    use tokio::time::Instant;

    use super::*;

    const MIB: u64 = 1 << 20;

    fn limited(up: Option<u64>, down: Option<u64>) -> (Arc<InMemory>, Throttled) {
        let raw = Arc::new(InMemory::new());
        let bw = Bandwidth::new(BwLimit { up, down });
        (raw.clone(), Throttled::new(raw, bw))
    }

    fn secs(start: Instant) -> f64 {
        start.elapsed().as_secs_f64()
    }

    #[tokio::test(start_paused = true)]
    async fn puts_and_parts_are_paced_reads_are_not_when_only_up_is_limited() {
        let (raw, store) = limited(Some(MIB), None);
        let start = Instant::now();
        for i in 0..4 {
            let body = PutPayload::from(vec![7u8; MIB as usize]);
            store.put(&Path::from(format!("p{i}")), body).await.unwrap();
        }
        // Four 1 MiB puts at 1 MiB/s, each sent once paid for.
        assert!((3.99..4.01).contains(&secs(start)), "{}", secs(start));
        let start = Instant::now();
        let up = store.put_multipart(&Path::from("big")).await.unwrap();
        let mut w = WriteMultipart::new_with_chunk_size(up, (MIB / 2) as usize);
        w.write(&vec![1u8; 2 * MIB as usize]);
        w.finish().await.unwrap();
        // Four half-MiB parts.
        assert!((1.99..2.01).contains(&secs(start)), "{}", secs(start));
        assert_eq!(raw.head(&Path::from("big")).await.unwrap().size, 2 * MIB);
        let start = Instant::now();
        let got = store.get(&Path::from("big")).await.unwrap().bytes().await;
        assert_eq!(got.unwrap().len() as u64, 2 * MIB);
        assert!(secs(start) < 0.01, "downloads are not limited");
    }

    #[tokio::test(start_paused = true)]
    async fn reads_are_paced_as_they_are_consumed() {
        let (raw, store) = limited(None, Some(MIB));
        raw.put(&Path::from("x"), vec![3u8; 3 * MIB as usize].into())
            .await
            .unwrap();
        let start = Instant::now();
        let got = store.get_range(&Path::from("x"), 0..MIB).await.unwrap();
        assert_eq!(got.len() as u64, MIB);
        let got = store
            .get_ranges(&Path::from("x"), &[0..MIB, MIB..2 * MIB])
            .await
            .unwrap();
        assert_eq!(got.len(), 2);
        let meta = store.head(&Path::from("x")).await.unwrap();
        assert_eq!(meta.size, 3 * MIB);
        store
            .get(&Path::from("x"))
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        // 1 + 2 + 3 MiB at 1 MiB/s.
        assert!((5.99..6.01).contains(&secs(start)), "{}", secs(start));
        let start = Instant::now();
        store
            .put(&Path::from("y"), vec![0u8; 4 << 20].into())
            .await
            .unwrap();
        assert!(
            secs(start) < 0.01,
            "the read debt is not the write's: {}",
            secs(start)
        );
    }
}
