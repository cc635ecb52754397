//! Native S3 delta writes (`ferry::store::s3`) against the S3 server, in-process:
//! multipart uploads from sent and server-side copied parts, read back by `rawstore.py`.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::Router;
use bytes::Bytes;
use ferry::store::delta::{
    DeltaStore, Limits, NativeError, Part, PartSource, WriteObserver, WriteRequest,
};
use ferry::store::s3::S3Delta;
use ferry::store::RetryPolicy;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use tokio::sync::{mpsc, Semaphore};

use crate::harness::{Backend, Ctx};
use crate::raw::{Location, RawStore};

const MIB: u64 = 1 << 20;

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn few_retries() -> RetryPolicy {
    RetryPolicy::retries(1)
}

fn builder(endpoint: &str, bucket: &str) -> AmazonS3Builder {
    AmazonS3Builder::new()
        .with_bucket_name(bucket)
        .with_endpoint(endpoint)
        .with_allow_http(true)
        .with_region("us-east-1")
        .with_access_key_id("test")
        .with_secret_access_key("test")
}

/// The native store for a test location, configured explicitly (the process env is shared
/// with the other tests' child processes, so it is not touched).
fn store(loc: &Location) -> S3Delta {
    let RawStore::Server {
        endpoint,
        bucket,
        prefix,
        ..
    } = &loc.raw
    else {
        panic!("an S3 location");
    };
    S3Delta::from_builder(builder(endpoint, bucket), prefix, &few_retries()).expect("open store")
}

fn data(seed: u64, len: u64) -> Vec<u8> {
    let mut rng = fastrand::Rng::with_seed(seed);
    (0..len).map(|_| rng.u8(..)).collect()
}

fn hash(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

fn send(new: Range<u64>) -> Part {
    Part::Send {
        block: [0; 32],
        new,
    }
}

fn keep(old: Range<u64>) -> Part {
    Part::Keep {
        block: [0; 32],
        old,
    }
}

/// The new file's bytes; counts what was read.
struct Source {
    bytes: Vec<u8>,
    read: AtomicU64,
}

impl Source {
    fn new(bytes: Vec<u8>) -> Self {
        Self {
            bytes,
            read: AtomicU64::new(0),
        }
    }
}

#[async_trait]
impl PartSource for Source {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        self.read
            .fetch_add(range.end - range.start, Ordering::Relaxed);
        Ok(Bytes::copy_from_slice(
            &self.bytes[range.start as usize..range.end as usize],
        ))
    }
}

#[derive(Default)]
struct Observer {
    sent: AtomicU64,
    started: Mutex<Vec<(String, String)>>,
}

impl WriteObserver for Observer {
    fn started(&self, key: &str, upload_id: &str) {
        self.started
            .lock()
            .unwrap()
            .push((key.to_string(), upload_id.to_string()));
    }

    fn sent(&self, n: u64) {
        self.sent.fetch_add(n, Ordering::Relaxed);
    }
}

fn request<'a>(
    key: &'a str,
    parts: &'a [Part],
    base: Option<&'a str>,
    blake3: &'a str,
) -> WriteRequest<'a> {
    WriteRequest {
        key,
        parts,
        size: parts.iter().map(Part::len).sum(),
        base_etag: base,
        blake3,
    }
}

/// Writes `bytes` whole, in two sent parts, and returns the etag.
async fn create(s3: &S3Delta, key: &str, bytes: &[u8]) -> String {
    let len = bytes.len() as u64;
    let parts = [send(0..6 * MIB), send(6 * MIB..len)];
    let blake3 = hash(bytes);
    let source = Source::new(bytes.to_vec());
    let observer = Observer::default();
    let etag = s3
        .write(&request(key, &parts, None, &blake3), &source, &observer)
        .await
        .expect("create the object");
    assert_eq!(observer.sent.load(Ordering::Relaxed), len);
    assert_eq!(
        observer.started.lock().unwrap().len(),
        1,
        "one multipart upload"
    );
    etag
}

#[test]
fn create_then_rewrite_with_copied_parts() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let loc = ctx.location(Backend::S3);
    let s3 = store(&loc);
    let rt = runtime();
    let key = "ckpt/step 1/model.bin";
    let v1 = data(1, 12 * MIB);

    let etag1 = rt.block_on(create(&s3, key, &v1));
    assert!(!etag1.is_empty() && !etag1.contains('"'), "{etag1:?}");
    assert!(
        loc.raw.get(key) == v1,
        "the created object differs from its source"
    );
    let probed = rt
        .block_on(s3.probe(key))
        .expect("probe")
        .expect("object exists");
    assert_eq!(probed.size, 12 * MIB);
    assert_eq!(probed.etag, etag1);
    assert_eq!(probed.blake3.as_deref(), Some(hash(&v1).as_str()));
    assert!(probed.blocks.is_empty());

    // v2: v1's first 6 MiB, 5 MiB + 123 new bytes, then v1's last 2 MiB (from another offset).
    let middle = data(2, 5 * MIB + 123);
    let mut v2 = v1[..6 * MIB as usize].to_vec();
    v2.extend_from_slice(&middle);
    v2.extend_from_slice(&v1[10 * MIB as usize..]);
    let new_end = 6 * MIB + middle.len() as u64;
    let parts = [
        keep(0..6 * MIB),
        send(6 * MIB..new_end),
        keep(10 * MIB..12 * MIB),
    ];
    let blake3 = hash(&v2);
    let source = Source::new(v2.clone());
    let observer = Observer::default();
    let req = request(key, &parts, Some(&etag1), &blake3);
    assert_eq!(req.size, v2.len() as u64);
    let etag2 = rt
        .block_on(s3.write(&req, &source, &observer))
        .expect("rewrite with copied parts");

    assert_ne!(etag2, etag1);
    assert!(
        loc.raw.get(key) == v2,
        "the rewritten object differs from its source"
    );
    assert_eq!(
        observer.sent.load(Ordering::Relaxed),
        middle.len() as u64,
        "only sent parts count"
    );
    assert_eq!(
        source.read.load(Ordering::Relaxed),
        middle.len() as u64,
        "kept bytes are not read"
    );
    let started = observer.started.lock().unwrap().clone();
    assert_eq!(started.len(), 1);
    assert_eq!(started[0].0, key, "started names the key below the prefix");
    let probed = rt
        .block_on(s3.probe(key))
        .expect("probe")
        .expect("object exists");
    assert_eq!(probed.size, v2.len() as u64);
    assert_eq!(probed.etag, etag2);
    assert_eq!(probed.blake3.as_deref(), Some(blake3.as_str()));
}

#[test]
fn small_object_and_missing_object() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let loc = ctx.location(Backend::S3);
    let s3 = store(&loc);
    let rt = runtime();
    assert_eq!(rt.block_on(s3.probe("absent.bin")).expect("probe"), None);

    let bytes = data(3, 1000);
    let parts = [send(0..1000)];
    let blake3 = hash(&bytes);
    let observer = Observer::default();
    let etag = rt
        .block_on(s3.write(
            &request("small.bin", &parts, None, &blake3),
            &Source::new(bytes.clone()),
            &observer,
        ))
        .expect("put a small object");
    assert!(loc.raw.get("small.bin") == bytes);
    assert_eq!(observer.sent.load(Ordering::Relaxed), 1000);
    let probed = rt
        .block_on(s3.probe("small.bin"))
        .expect("probe")
        .expect("exists");
    assert_eq!((probed.etag, probed.size), (etag, 1000));
    assert_eq!(probed.blake3, Some(blake3));
}

#[test]
fn stale_base_etag_is_changed_and_keeps_the_object() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let loc = ctx.location(Backend::S3);
    let s3 = store(&loc);
    let rt = runtime();
    let key = "model.bin";
    let v1 = data(4, 12 * MIB);
    let etag1 = rt.block_on(create(&s3, key, &v1));

    // Someone else replaces the object after the plan was made against etag1.
    let other = data(5, 12 * MIB);
    loc.raw.put(key, &other);
    let now = rt.block_on(s3.probe(key)).expect("probe").expect("exists");
    assert_ne!(now.etag, etag1, "the overwrite changed the etag");

    let v2 = data(6, 12 * MIB);
    let parts = [keep(0..6 * MIB), send(6 * MIB..12 * MIB)];
    let blake3 = hash(&v2);
    let result = rt.block_on(s3.write(
        &request(key, &parts, Some(&etag1), &blake3),
        &Source::new(v2),
        &Observer::default(),
    ));
    match result {
        Err(NativeError::Changed { url, expected }) => {
            assert_eq!(expected, etag1);
            assert!(url.ends_with("/model.bin"), "{url}");
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    assert!(
        loc.raw.get(key) == other,
        "a failed write must leave the object as it was"
    );
    let after = rt.block_on(s3.probe(key)).expect("probe").expect("exists");
    assert_eq!(after.etag, now.etag);
}

/// A source whose reads wait until the test lets them go, announcing the upload first.
struct GatedSource {
    inner: Source,
    gate: Semaphore,
}

#[async_trait]
impl PartSource for GatedSource {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let _permit = self.gate.acquire().await.map_err(std::io::Error::other)?;
        self.inner.read(range).await
    }
}

struct Announcer(mpsc::UnboundedSender<(String, String)>);

impl WriteObserver for Announcer {
    fn started(&self, key: &str, upload_id: &str) {
        let _ = self.0.send((key.to_string(), upload_id.to_string()));
    }
}

#[test]
fn abort_a_started_upload() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let loc = ctx.location(Backend::S3);
    let s3 = Arc::new(store(&loc));
    let rt = runtime();
    rt.block_on(async {
        let (tx, mut rx) = mpsc::unbounded_channel();
        let source = Arc::new(GatedSource {
            inner: Source::new(data(7, 6 * MIB)),
            gate: Semaphore::new(0),
        });
        let write = {
            let (s3, source) = (s3.clone(), source.clone());
            tokio::spawn(async move {
                let parts = [send(0..5 * MIB), send(5 * MIB..6 * MIB)];
                let blake3 = hash(&source.inner.bytes);
                s3.write(
                    &request("aborted.bin", &parts, None, &blake3),
                    source.as_ref(),
                    &Announcer(tx),
                )
                .await
            })
        };
        let (key, upload_id) = rx.recv().await.expect("the upload started");
        assert_eq!(key, "aborted.bin");
        // A later run finds it without having recorded it.
        let listed = s3.unfinished_uploads(&key).await.expect("list uploads");
        assert_eq!(
            listed.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>(),
            vec![upload_id.as_str()]
        );
        // (moto reports a fixed `Initiated` time from 2010, so the start time is not checked.)
        assert!(s3
            .unfinished_uploads("other.bin")
            .await
            .expect("list")
            .is_empty());
        s3.abort(&key, &upload_id)
            .await
            .expect("abort the started upload");
        // The write goes on into an upload that no longer exists, and fails.
        source.gate.add_permits(2);
        let result = write.await.expect("write task");
        assert!(
            result.is_err(),
            "a write into an aborted upload succeeded: {result:?}"
        );
        assert_eq!(s3.probe("aborted.bin").await.expect("probe"), None);
        // Aborting what is gone is success.
        s3.abort(&key, &upload_id).await.expect("abort again");
        assert!(s3.unfinished_uploads(&key).await.expect("list").is_empty());
    });
}

#[test]
fn plans_over_the_limits_are_refused_before_any_request() {
    // Nothing listens on port 1: any request would fail with a connection error instead.
    let dead = S3Delta::from_builder(
        builder("http://127.0.0.1:1", "ferry-test"),
        "some/prefix",
        &few_retries(),
    )
    .expect("open store");
    let rt = runtime();
    let bytes = data(8, 7 * MIB);
    let blake3 = hash(&bytes);
    let cases: Vec<(Vec<Part>, Option<&str>, &str)> = vec![
        (vec![send(0..MIB), send(MIB..7 * MIB)], None, "part 1 of 2"),
        (
            vec![keep(0..6 * MIB), send(6 * MIB..7 * MIB)],
            None,
            "no base etag",
        ),
        #[allow(clippy::reversed_empty_ranges)]
        (vec![send(6 * MIB..0), send(0..MIB)], None, "reversed"),
    ];
    for (parts, base, expected) in cases {
        let source = Source::new(bytes.clone());
        let observer = Observer::default();
        let req = WriteRequest {
            key: "model.bin",
            parts: &parts,
            size: 7 * MIB,
            base_etag: base,
            blake3: &blake3,
        };
        match rt.block_on(dead.write(&req, &source, &observer)) {
            Err(NativeError::Request { url, message, .. }) => {
                assert_eq!(url, "s3://ferry-test/some/prefix/model.bin");
                assert!(message.contains(expected), "{message}");
            }
            other => panic!("expected a refused plan, got {other:?}"),
        }
        assert_eq!(source.read.load(Ordering::Relaxed), 0);
        assert!(observer.started.lock().unwrap().is_empty());
    }
    assert_eq!(dead.limits(), Limits::S3);
    // The same store does make requests for a valid call, and says which one failed.
    match rt.block_on(dead.probe("model.bin")) {
        Err(NativeError::Request { url, message, .. }) => {
            assert_eq!(url, "s3://ferry-test/some/prefix/model.bin");
            assert!(message.starts_with("HeadObject failed"), "{message}");
            assert!(!message.contains('\n'), "{message}");
        }
        other => panic!("expected a connection error, got {other:?}"),
    }
}

#[test]
fn open_returns_the_s3_store() {
    let url = "s3://ferry-test/native-open".parse().expect("URL");
    let options = ferry::store::StoreOptions::from_env().expect("store options");
    let opened = ferry::store::Store::open_with(&url, ferry::store::Access::Read, &options);
    match opened.and_then(|store| store.delta()) {
        Ok(Some(store)) => assert_eq!(store.limits(), Limits::S3),
        // This process's environment may lack credentials (with IMDS off) or allow-http for
        // its endpoint; then the store is refused with the fix, but it exists.
        Err(e) => {
            let message = e.to_string();
            assert!(message.contains("AWS_"), "{message}");
            assert!(!message.contains("not built"), "{message}");
        }
        Ok(None) => panic!("no native store for S3"),
    }
}

const FAKE_SECRET: &str = "fake-secret-never-printed";

/// What the fake S3 server saw of one request.
#[derive(Debug, Clone)]
struct Seen {
    method: Method,
    uri: String,
    headers: HeaderMap,
}

/// A fake S3 endpoint that enforces what moto ignores: it answers 412 to the part copy or to
/// the complete (per `fail`), the way AWS does when a pinned etag no longer matches.
#[derive(Clone)]
struct FakeS3 {
    fail: &'static str,
    seen: Arc<Mutex<Vec<Seen>>>,
}

async fn fake_s3(
    State(fake): State<FakeS3>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    _body: axum::body::Bytes,
) -> Response {
    let query = uri.query().unwrap_or_default().to_string();
    let is_copy = headers.contains_key("x-amz-copy-source");
    fake.seen.lock().unwrap().push(Seen {
        method: method.clone(),
        uri: uri.to_string(),
        headers,
    });
    let xml = |status: StatusCode, body: &str| {
        (
            status,
            [("content-type", "application/xml")],
            body.to_string(),
        )
            .into_response()
    };
    let precondition_failed = || {
        xml(
            StatusCode::PRECONDITION_FAILED,
            "<Error><Code>PreconditionFailed</Code><Message>At least one of the pre-conditions you specified did not hold</Message></Error>",
        )
    };
    match method {
        _ if fake.fail == "forbidden" => xml(
            StatusCode::FORBIDDEN,
            "<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message></Error>",
        ),
        Method::HEAD => (StatusCode::OK, [("etag", "\"e1\"")]).into_response(),
        Method::POST if query.contains("uploads") => xml(
            StatusCode::OK,
            "<InitiateMultipartUploadResult><Bucket>ferry-test</Bucket><Key>p/model.bin</Key><UploadId>u1</UploadId></InitiateMultipartUploadResult>",
        ),
        Method::POST if fake.fail == "complete" => precondition_failed(),
        Method::POST => xml(
            StatusCode::OK,
            "<CompleteMultipartUploadResult><Bucket>ferry-test</Bucket><Key>p/model.bin</Key><ETag>\"e2-2\"</ETag></CompleteMultipartUploadResult>",
        ),
        Method::PUT if is_copy && fake.fail == "copy" => precondition_failed(),
        Method::PUT if is_copy => xml(
            StatusCode::OK,
            "<CopyPartResult><ETag>\"c1\"</ETag><LastModified>2026-01-01T00:00:00.000Z</LastModified></CopyPartResult>",
        ),
        Method::PUT => (StatusCode::OK, [("etag", "\"p2\"")]).into_response(),
        Method::DELETE => StatusCode::NO_CONTENT.into_response(),
        _ => StatusCode::NOT_IMPLEMENTED.into_response(),
    }
}

/// Runs a keep + send write against the fake server failing at `fail`; returns the result
/// and the requests it saw.
fn write_against_fake(fail: &'static str) -> (Result<String, NativeError>, Vec<Seen>) {
    write_against_fake_with(fail, |b| b)
}

fn write_against_fake_with(
    fail: &'static str,
    configure: impl FnOnce(AmazonS3Builder) -> AmazonS3Builder,
) -> (Result<String, NativeError>, Vec<Seen>) {
    let rt = runtime();
    let fake = FakeS3 {
        fail,
        seen: Arc::default(),
    };
    let seen = fake.seen.clone();
    let result = rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake S3 server");
        let endpoint = format!("http://{}", listener.local_addr().expect("address"));
        let app = Router::new().fallback(fake_s3).with_state(fake);
        tokio::spawn(async move { axum::serve(listener, app).await });
        let s3 = S3Delta::from_builder(
            configure(builder(&endpoint, "ferry-test").with_secret_access_key(FAKE_SECRET)),
            "p",
            &few_retries(),
        )
        .expect("open store");
        let bytes = data(9, 7 * MIB);
        let parts = [keep(0..6 * MIB), send(6 * MIB..7 * MIB)];
        let blake3 = hash(&bytes);
        s3.write(
            &request("model.bin", &parts, Some("e1"), &blake3),
            &Source::new(bytes),
            &Observer::default(),
        )
        .await
    });
    let seen = seen.lock().unwrap().clone();
    (result, seen)
}

fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

fn assert_changed_and_aborted(result: &Result<String, NativeError>, seen: &[Seen]) {
    match result {
        Err(NativeError::Changed { url, expected }) => {
            assert_eq!(url, "s3://ferry-test/p/model.bin");
            assert_eq!(expected, "e1");
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    assert!(
        seen.iter()
            .any(|s| s.method == Method::DELETE && s.uri.contains("uploadId=u1")),
        "the upload was not aborted: {seen:?}"
    );
}

#[test]
fn copy_pinned_to_base_etag_412_is_changed() {
    let (result, seen) = write_against_fake("copy");
    assert_changed_and_aborted(&result, &seen);
    let copy = seen
        .iter()
        .find(|s| s.method == Method::PUT && s.headers.contains_key("x-amz-copy-source"))
        .expect("a part copy was sent");
    assert_eq!(
        header(copy, "x-amz-copy-source"),
        Some("ferry-test/p/model.bin")
    );
    assert_eq!(
        header(copy, "x-amz-copy-source-range"),
        Some("bytes=0-6291455")
    );
    assert_eq!(header(copy, "x-amz-copy-source-if-match"), Some("\"e1\""));
    assert!(copy.uri.contains("partNumber=1") && copy.uri.contains("uploadId=u1"));
    let create = seen
        .iter()
        .find(|s| s.method == Method::POST && s.uri.contains("uploads"))
        .expect("an upload was created");
    assert_eq!(
        header(create, "x-amz-meta-ferry-blake3").map(str::len),
        Some(64)
    );
    assert!(
        !seen
            .iter()
            .any(|s| s.method == Method::POST && s.uri.contains("uploadId")),
        "completed despite a failed copy"
    );
}

#[test]
fn conditional_complete_412_is_changed() {
    let (result, seen) = write_against_fake("complete");
    assert_changed_and_aborted(&result, &seen);
    let complete = seen
        .iter()
        .find(|s| s.method == Method::POST && s.uri.contains("uploadId=u1"))
        .expect("the upload was completed");
    assert_eq!(header(complete, "if-match"), Some("\"e1\""));
}

#[test]
fn fake_server_write_succeeds_when_nothing_changed() {
    let (result, seen) = write_against_fake("nothing");
    assert_eq!(result.expect("write"), "e2-2");
    assert!(
        !seen.iter().any(|s| s.method == Method::DELETE),
        "aborted a good upload"
    );
    let upload = |seen: &[Seen]| {
        let part = seen
            .iter()
            .find(|s| s.method == Method::PUT && !s.headers.contains_key("x-amz-copy-source"))
            .expect("a part upload");
        header(part, "x-amz-content-sha256").map(str::to_string)
    };
    let signed = upload(&seen).expect("a payload hash header");
    assert!(
        signed.len() == 64 && signed.bytes().all(|b| b.is_ascii_hexdigit()),
        "{signed}"
    );
    // AWS_UNSIGNED_PAYLOAD, as object_store reads it.
    let (result, seen) = write_against_fake_with("nothing", |b| {
        b.with_config(AmazonS3ConfigKey::UnsignedPayload, "true")
    });
    result.expect("unsigned write");
    assert_eq!(upload(&seen).as_deref(), Some("UNSIGNED-PAYLOAD"));
}

#[test]
fn forbidden_names_the_operation_and_the_fix_without_secrets() {
    let (result, _) = write_against_fake("forbidden");
    let err = result.expect_err("a 403 must fail the write");
    let (shown, debug) = (err.to_string(), format!("{err:?}"));
    assert!(matches!(err, NativeError::Request { .. }), "{debug}");
    assert!(
        shown.starts_with("s3://ferry-test/p/model.bin: HeadObject failed: HTTP 403"),
        "{shown}"
    );
    assert!(shown.contains("AWS_ACCESS_KEY_ID"), "{shown}");
    assert!(!shown.contains('\n'), "{shown}");
    assert!(
        !shown.contains(FAKE_SECRET) && !debug.contains(FAKE_SECRET),
        "{debug}"
    );
}

/// Transience is read from the answer, not from text: a missing bucket on the S3 server is a
/// 404, permanent, through both the data plane (object_store) and the native client (the
/// SDK); an injected 503 on the same server is transient.
#[test]
fn a_missing_bucket_is_permanent_with_its_status() {
    use ferry::error::Transience;
    use ferry::store::fault::FaultConfig;
    use ferry::store::s3::S3Settings;
    use ferry::store::StoreOptions;
    use object_store::path::Path;

    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let loc = ctx.location(Backend::S3);
    let RawStore::Server { endpoint, .. } = &loc.raw else {
        panic!("an S3 location");
    };
    let options = StoreOptions {
        retry: few_retries(),
        ..StoreOptions::default()
    };
    let missing = builder(endpoint, "no-such-bucket-ferry");
    let rt = runtime();

    let store = S3Settings::from_builder(missing.clone(), "p", &options)
        .into_store()
        .expect("open the store");
    let err = rt
        .block_on(store.get(&Path::from("x.bin")))
        .expect_err("no bucket");
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(err.transience(), Transience::Permanent, "{err}");
    assert!(err.to_string().contains("does not exist"), "{err}");

    let native = store.delta().expect("native client").expect("S3 has one");
    let bytes = data(4, 100);
    let parts = [send(0..100)];
    let blake3 = hash(&bytes);
    let err = rt
        .block_on(native.write(
            &request("x.bin", &parts, None, &blake3),
            &Source::new(bytes),
            &Observer::default(),
        ))
        .expect_err("no bucket");
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(err.transience(), Transience::Permanent, "{err}");
    let err: ferry::store::StoreError = err.into();
    assert_eq!(
        (err.status(), err.transience()),
        (Some(404), Transience::Permanent)
    );

    // The bucket that exists, under injected faults: every request fails, transiently.
    let RawStore::Server { bucket, prefix, .. } = &loc.raw else {
        unreachable!()
    };
    let faulty = StoreOptions {
        faults: Some(FaultConfig {
            rate: 1.0,
            seed: 11,
            max_latency: std::time::Duration::ZERO,
            fail_first: 0,
        }),
        ..options
    };
    let store = S3Settings::from_builder(builder(endpoint, bucket), prefix, &faulty)
        .into_store()
        .expect("open the store");
    let mut statuses = Vec::new();
    for i in 0..12 {
        let err = rt
            .block_on(store.put(&Path::from(format!("f{i}")), Bytes::from_static(b"x")))
            .expect_err("every request faults");
        assert_eq!(err.transience(), Transience::Transient, "{err}");
        statuses.push(err.status());
    }
    assert!(statuses.contains(&Some(503)), "{statuses:?}");
    assert!(statuses.contains(&None), "{statuses:?}");
    let native = store.delta().expect("native client").expect("S3 has one");
    let err = rt
        .block_on(native.probe("x.bin"))
        .expect_err("native calls see the faults too");
    assert_eq!(err.transience(), Transience::Transient, "{err}");
}
