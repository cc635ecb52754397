//! Watching requests to S3 and Azure: an `ObjectStore` wrapper that, while a request has not
//! answered for `FERRY_SLOW_SECS` (default 10), logs a warning naming the operation, the
//! object and the endpoint, and again at each further interval until it answers or times out
//! (the client's timeouts and retries bound how long that is: see `store::options`).
//! It also turns an S3 request that failed for want of credentials (no keys in the
//! environment, and the instance metadata service refused) into `Unauthenticated` with a
//! message that says what to set, wherever the error ends up being printed.

use std::fmt;
use std::future::Future;
use std::ops::Range;
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

use super::StoreUrl;

/// Reports requests that take longer than `after`.
#[derive(Debug, Clone)]
pub struct Watched {
    inner: Arc<dyn ObjectStore>,
    /// Context for messages, shared with streams that outlive a call.
    ctx: Arc<Ctx>,
}

#[derive(Debug)]
struct Ctx {
    url: StoreUrl,
    endpoint: String,
    after: Duration,
}

/// No AWS credentials anywhere: what to set. Its source is the metadata service's answer.
#[derive(Debug, thiserror::Error)]
#[error(
    "{}: {}",
    super::s3::NO_AWS_CREDENTIALS,
    super::s3::AWS_CREDENTIALS_FIX
)]
struct NoAwsCredentials(#[source] object_store::Error);

/// `r`, with a failure to find AWS credentials explained.
fn explain<T>(ctx: &Ctx, object: &str, r: Result<T>) -> Result<T> {
    match r {
        Err(e)
            if matches!(ctx.url, StoreUrl::S3 { .. }) && super::s3::lacks_aws_credentials(&e) =>
        {
            Err(object_store::Error::Unauthenticated {
                path: ctx.url.join(object),
                source: Box::new(NoAwsCredentials(e)),
            })
        }
        other => other,
    }
}

impl Watched {
    /// Watches `inner`, the store rooted at `url`, whose requests go to `endpoint`.
    pub fn new(
        inner: Arc<dyn ObjectStore>,
        url: StoreUrl,
        endpoint: String,
        after: Duration,
    ) -> Self {
        Self {
            inner,
            ctx: Arc::new(Ctx {
                url,
                endpoint,
                after,
            }),
        }
    }

    async fn watched<T>(
        &self,
        op: &'static str,
        object: &Path,
        fut: impl Future<Output = Result<T>>,
    ) -> Result<T> {
        let r = watch(&self.ctx, op, object.as_ref(), fut).await;
        explain(&self.ctx, object.as_ref(), r)
    }
}

async fn watch<T>(ctx: &Ctx, op: &'static str, object: &str, fut: impl Future<Output = T>) -> T {
    let fut = std::pin::pin!(fut);
    let mut fut = fut;
    let mut waited = Duration::ZERO;
    loop {
        match tokio::time::timeout(ctx.after, fut.as_mut()).await {
            Ok(v) => return v,
            Err(_) => {
                waited += ctx.after;
                tracing::warn!(
                    op,
                    object = %ctx.url.join(object),
                    endpoint = %ctx.endpoint,
                    waited_secs = waited.as_secs(),
                    "still waiting for the store to answer (a slow or stalled server; the client's timeouts and retries are set by AWS_TIMEOUT, AWS_READ_TIMEOUT, AZURE_TIMEOUT, … see the README)"
                );
            }
        }
    }
}

/// Each item of `stream` watched as one request.
fn watch_stream<T: Send + 'static>(
    ctx: Arc<Ctx>,
    op: &'static str,
    object: String,
    stream: BoxStream<'static, Result<T>>,
) -> BoxStream<'static, Result<T>> {
    futures::stream::unfold(
        (stream, ctx, object),
        move |(mut stream, ctx, object)| async move {
            let next = watch(&ctx, op, &object, stream.next()).await;
            next.map(|item| (explain(&ctx, &object, item), (stream, ctx, object)))
        },
    )
    .boxed()
}

impl fmt::Display for Watched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Watched({})", self.inner)
    }
}

#[async_trait]
impl ObjectStore for Watched {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> Result<PutResult> {
        self.watched(
            "writing",
            location,
            self.inner.put_opts(location, payload, opts),
        )
        .await
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> Result<Box<dyn MultipartUpload>> {
        self.watched(
            "starting an upload of",
            location,
            self.inner.put_multipart_opts(location, opts),
        )
        .await
    }

    async fn get_opts(&self, location: &Path, options: GetOptions) -> Result<GetResult> {
        let mut result = self
            .watched("reading", location, self.inner.get_opts(location, options))
            .await?;
        if let GetResultPayload::Stream(body) = result.payload {
            result.payload = GetResultPayload::Stream(watch_stream(
                self.ctx.clone(),
                "reading",
                location.to_string(),
                body,
            ));
        }
        Ok(result)
    }

    async fn get_ranges(&self, location: &Path, ranges: &[Range<u64>]) -> Result<Vec<Bytes>> {
        self.watched("reading", location, self.inner.get_ranges(location, ranges))
            .await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, Result<Path>>,
    ) -> BoxStream<'static, Result<Path>> {
        watch_stream(
            self.ctx.clone(),
            "deleting",
            String::new(),
            self.inner.delete_stream(locations),
        )
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
        watch_stream(
            self.ctx.clone(),
            "listing",
            prefix.map_or_else(String::new, |p| p.to_string()),
            self.inner.list(prefix),
        )
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> Result<ListResult> {
        let root = Path::default();
        self.watched(
            "listing",
            prefix.unwrap_or(&root),
            self.inner.list_with_delimiter(prefix),
        )
        .await
    }

    async fn copy_opts(&self, from: &Path, to: &Path, options: CopyOptions) -> Result<()> {
        self.watched("copying", from, self.inner.copy_opts(from, to, options))
            .await
    }

    async fn rename_opts(&self, from: &Path, to: &Path, options: RenameOptions) -> Result<()> {
        self.watched("renaming", from, self.inner.rename_opts(from, to, options))
            .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use object_store::memory::InMemory;
    use object_store::ObjectStoreExt;

    /// A store whose every call takes `delay`.
    #[derive(Debug)]
    struct Sluggish(InMemory, Duration);

    impl fmt::Display for Sluggish {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "Sluggish")
        }
    }

    #[async_trait]
    impl ObjectStore for Sluggish {
        async fn put_opts(&self, l: &Path, p: PutPayload, o: PutOptions) -> Result<PutResult> {
            tokio::time::sleep(self.1).await;
            self.0.put_opts(l, p, o).await
        }
        async fn put_multipart_opts(
            &self,
            l: &Path,
            o: PutMultipartOptions,
        ) -> Result<Box<dyn MultipartUpload>> {
            self.0.put_multipart_opts(l, o).await
        }
        async fn get_opts(&self, l: &Path, o: GetOptions) -> Result<GetResult> {
            tokio::time::sleep(self.1).await;
            self.0.get_opts(l, o).await
        }
        fn delete_stream(
            &self,
            l: BoxStream<'static, Result<Path>>,
        ) -> BoxStream<'static, Result<Path>> {
            self.0.delete_stream(l)
        }
        fn list(&self, p: Option<&Path>) -> BoxStream<'static, Result<ObjectMeta>> {
            let delay = self.1;
            let inner = self.0.list(p);
            futures::stream::once(tokio::time::sleep(delay))
                .flat_map(move |()| futures::stream::empty())
                .chain(inner)
                .boxed()
        }
        async fn list_with_delimiter(&self, p: Option<&Path>) -> Result<ListResult> {
            self.0.list_with_delimiter(p).await
        }
        async fn copy_opts(&self, f: &Path, t: &Path, o: CopyOptions) -> Result<()> {
            self.0.copy_opts(f, t, o).await
        }
    }

    /// Log lines captured from the current thread.
    #[derive(Clone, Default)]
    struct Captured(Arc<std::sync::Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Captured {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_slow_call_is_reported_and_still_answers() {
        let logs = Captured::default();
        let writer = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        let _guard = tracing::subscriber::set_default(subscriber);
        let url: StoreUrl = "s3://bucket/pre".parse().unwrap();
        let inner = Arc::new(Sluggish(InMemory::new(), Duration::from_secs(25)));
        let store = Watched::new(
            inner,
            url,
            "http://127.0.0.1:9".into(),
            Duration::from_secs(10),
        );
        let path = Path::from("packs/a");
        store
            .put(&path, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        let got = store.get(&path).await.unwrap().bytes().await.unwrap();
        assert_eq!(&got[..], b"x");
        let listed: Vec<_> = store.list(None).collect().await;
        assert_eq!(listed.len(), 1);
        let text = logs.text();
        // 25 s each: reported at 10 s and 20 s, for the write, the read and the listing.
        assert_eq!(text.matches("still waiting").count(), 6, "{text}");
        for needle in [
            "op=\"writing\" object=s3://bucket/pre/packs/a endpoint=http://127.0.0.1:9 waited_secs=10",
            "op=\"reading\" object=s3://bucket/pre/packs/a endpoint=http://127.0.0.1:9 waited_secs=20",
            "op=\"listing\" object=s3://bucket/pre endpoint=http://127.0.0.1:9",
        ] {
            assert!(text.contains(needle), "{needle} not in {text}");
        }
        logs.0.lock().unwrap().clear();
        // A quick call says nothing.
        let fast = Watched::new(
            Arc::new(InMemory::new()),
            "s3://bucket".parse().unwrap(),
            "e".into(),
            Duration::from_secs(10),
        );
        fast.put(&path, PutPayload::from_static(b"x"))
            .await
            .unwrap();
        assert_eq!(logs.text(), "");
    }
}
