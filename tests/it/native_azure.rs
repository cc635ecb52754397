//! Native Azure delta writes (`ferry::store::azure`) against Azurite, used as a
//! library: create a blob from sent blocks, rewrite it keeping committed ones, probe it,
//! refuse a stale base, resume an interrupted write, refuse an impossible plan. Results are
//! read back by `rawstore.py`, a client independent of ferry.

use std::ops::Range;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use async_trait::async_trait;
use bytes::Bytes;
use ferry::store::azure::AzureDelta;
use ferry::store::delta::{
    BlockId, DeltaStore, NativeError, Part, PartSource, WriteObserver, WriteRequest,
};
use ferry::store::RetryPolicy;
use object_store::azure::MicrosoftAzureBuilder;

use crate::data::random_bytes;
use crate::harness::{server_url, Backend, Ctx, AZURITE_URL_VAR};
use crate::raw::{Location, RawStore};

const MIB: usize = 1 << 20;
const CONTAINER: &str = "ferry-test";
/// Azurite's well-known development account and key (public, documented by Microsoft).
const ACCOUNT: &str = "devstoreaccount1";
const KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

/// A fresh prefix on Azurite: the native store for it and raw access to it.
fn setup() -> Option<(Ctx, AzureDelta, Location)> {
    let ctx = Ctx::new(&[Backend::Azure])?;
    let location = ctx.location(Backend::Azure);
    let RawStore::Server { prefix, .. } = &location.raw else {
        panic!("an Azure location is on the server");
    };
    let endpoint = server_url(AZURITE_URL_VAR).expect("checked by Ctx::new");
    // An explicit builder: the test does not touch the process environment.
    let builder = MicrosoftAzureBuilder::new()
        .with_account(ACCOUNT)
        .with_access_key(KEY)
        .with_container_name(CONTAINER)
        .with_endpoint(format!("{}/{ACCOUNT}", endpoint.trim_end_matches('/')))
        .with_allow_http(true);
    let store = AzureDelta::from_builder(builder, prefix, &RetryPolicy::retries(3))
        .expect("native Azure store");
    Some((ctx, store, location))
}

fn block_id(bytes: &[u8]) -> BlockId {
    *blake3::hash(bytes).as_bytes()
}

fn hex_blake3(bytes: &[u8]) -> String {
    blake3::hash(bytes).to_hex().to_string()
}

/// Sends every `block`-sized piece of `data`.
fn send_all(data: &[u8], block: usize) -> Vec<Part> {
    (0..data.len())
        .step_by(block)
        .map(|start| {
            let end = (start + block).min(data.len());
            Part::Send {
                block: block_id(&data[start..end]),
                new: start as u64..end as u64,
            }
        })
        .collect()
}

fn send_bytes(parts: &[Part]) -> u64 {
    parts
        .iter()
        .filter(|p| matches!(p, Part::Send { .. }))
        .map(Part::len)
        .sum()
}

fn request<'a>(
    key: &'a str,
    parts: &'a [Part],
    base_etag: Option<&'a str>,
    blake3: &'a str,
) -> WriteRequest<'a> {
    WriteRequest {
        key,
        parts,
        size: parts.iter().map(Part::len).sum(),
        base_etag,
        blake3,
    }
}

/// The source file, in memory; optionally fails its `fail_at`-th read (1-based).
struct Source {
    data: Bytes,
    reads: AtomicUsize,
    fail_at: Option<usize>,
}

impl Source {
    fn new(data: &[u8]) -> Self {
        Self {
            data: Bytes::copy_from_slice(data),
            reads: AtomicUsize::new(0),
            fail_at: None,
        }
    }

    fn failing_at(data: &[u8], read: usize) -> Self {
        Self {
            fail_at: Some(read),
            ..Self::new(data)
        }
    }
}

#[async_trait]
impl PartSource for Source {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        let n = self.reads.fetch_add(1, Ordering::SeqCst) + 1;
        if self.fail_at == Some(n) {
            return Err(std::io::Error::other("simulated interruption"));
        }
        Ok(self.data.slice(range.start as usize..range.end as usize))
    }
}

#[derive(Default)]
struct Sent(AtomicU64);

impl WriteObserver for Sent {
    fn sent(&self, n: u64) {
        self.0.fetch_add(n, Ordering::SeqCst);
    }
}

impl Sent {
    fn get(&self) -> u64 {
        self.0.load(Ordering::SeqCst)
    }
}

#[tokio::test]
async fn create_rewrite_and_probe() {
    let Some((_ctx, store, location)) = setup() else {
        return;
    };
    let raw = &location.raw;
    let key = "ckpt/model.bin";
    assert_eq!(store.probe(key).await.expect("probe"), None);

    // ~12 MiB in 1 MiB blocks; blocks 5 and 6 are identical (staged once).
    let mut v1 = random_bytes(1, 12 * MIB);
    v1.copy_within(5 * MIB..6 * MIB, 6 * MIB);
    let parts1 = send_all(&v1, MIB);
    assert_eq!(parts1.len(), 12);
    let sent = Sent::default();
    let etag1 = store
        .write(
            &request(key, &parts1, None, &hex_blake3(&v1)),
            &Source::new(&v1),
            &sent,
        )
        .await
        .expect("create");
    assert!(!etag1.contains('"'), "etag without quotes: {etag1}");
    assert_eq!(
        sent.get(),
        11 * MIB as u64,
        "the repeated block is staged once"
    );
    assert!(raw.get(key) == v1, "the blob holds v1 byte for byte");

    let probed = store
        .probe(key)
        .await
        .expect("probe")
        .expect("the blob exists");
    assert_eq!(probed.etag, etag1);
    assert_eq!(probed.size, v1.len() as u64);
    assert_eq!(probed.blake3.as_deref(), Some(hex_blake3(&v1).as_str()));
    let expected: Vec<(Option<BlockId>, u64)> = v1
        .chunks(MIB)
        .map(|c| (Some(block_id(c)), c.len() as u64))
        .collect();
    assert_eq!(probed.blocks, expected);

    // v2: blocks 3 and 7 change, 300 KiB are appended, the rest is kept.
    let mut v2 = v1.clone();
    v2[3 * MIB..4 * MIB].copy_from_slice(&random_bytes(2, MIB));
    v2[7 * MIB + 10..7 * MIB + 20].fill(0xAB);
    v2.extend_from_slice(&random_bytes(3, 300 << 10));
    let parts2: Vec<Part> = v2
        .chunks(MIB)
        .enumerate()
        .map(|(i, chunk)| {
            let range = (i * MIB) as u64..(i * MIB + chunk.len()) as u64;
            let block = block_id(chunk);
            if i < 12 && i != 3 && i != 7 {
                Part::Keep { block, old: range }
            } else {
                Part::Send { block, new: range }
            }
        })
        .collect();
    assert_eq!(send_bytes(&parts2), (2 * MIB + (300 << 10)) as u64);
    let sent = Sent::default();
    let etag2 = store
        .write(
            &request(key, &parts2, Some(&etag1), &hex_blake3(&v2)),
            &Source::new(&v2),
            &sent,
        )
        .await
        .expect("rewrite");
    assert_ne!(etag2, etag1);
    assert_eq!(sent.get(), send_bytes(&parts2), "only Send parts are sent");
    assert!(raw.get(key) == v2, "the blob holds v2 byte for byte");
    let probed = store.probe(key).await.expect("probe").expect("exists");
    assert_eq!(probed.etag, etag2);
    assert_eq!(probed.size, v2.len() as u64);
    assert_eq!(probed.blake3.as_deref(), Some(hex_blake3(&v2).as_str()));
    assert_eq!(probed.blocks.len(), 13);

    // A write planned against v1 is refused, and v2 stays as it was.
    let v3 = random_bytes(4, MIB);
    let parts3 = send_all(&v3, MIB);
    let err = store
        .write(
            &request(key, &parts3, Some(&etag1), &hex_blake3(&v3)),
            &Source::new(&v3),
            &Sent::default(),
        )
        .await
        .expect_err("stale base etag");
    match &err {
        NativeError::Changed { url, expected } => {
            assert!(url.ends_with("/ckpt/model.bin") && url.starts_with("az://ferry-test/"));
            assert_eq!(*expected, etag1);
        }
        other => panic!("expected Changed, got {other:?}"),
    }
    assert!(raw.get(key) == v2, "a refused write leaves the blob whole");
    assert_eq!(
        store.probe(key).await.expect("probe").expect("exists").etag,
        etag2
    );
}

#[tokio::test]
async fn a_rerun_after_an_interruption_sends_only_unstaged_blocks() {
    let Some((_ctx, store, location)) = setup() else {
        return;
    };
    let raw = &location.raw;
    let key = "resume.bin";
    let old = random_bytes(10, 2 * MIB);
    let etag0 = store
        .write(
            &request(key, &send_all(&old, MIB), None, &hex_blake3(&old)),
            &Source::new(&old),
            &Sent::default(),
        )
        .await
        .expect("first version");

    let new = random_bytes(11, 10 * MIB);
    let parts = send_all(&new, MIB);
    let total = send_bytes(&parts);
    let hash = hex_blake3(&new);
    let req = request(key, &parts, Some(&etag0), &hash);

    // The sixth read fails: blocks staged before it stay staged, nothing is committed.
    let sent1 = Sent::default();
    let err = store
        .write(&req, &Source::failing_at(&new, 6), &sent1)
        .await
        .expect_err("interrupted");
    assert!(matches!(err, NativeError::Source { .. }), "{err:?}");
    assert!(err.to_string().contains("simulated interruption"), "{err}");
    assert!(
        sent1.get() >= 5 * MIB as u64 && sent1.get() < total,
        "{}",
        sent1.get()
    );
    assert!(
        raw.get(key) == old,
        "readers still see the previous version whole"
    );
    assert_eq!(
        store.probe(key).await.expect("probe").expect("exists").etag,
        etag0
    );

    let sent2 = Sent::default();
    let source = Source::new(&new);
    store.write(&req, &source, &sent2).await.expect("rerun");
    assert_eq!(
        sent2.get(),
        total - sent1.get(),
        "the rerun sends exactly the blocks not staged before"
    );
    assert_eq!(
        source.reads.load(Ordering::SeqCst) as u64,
        (total - sent1.get()) / MIB as u64,
        "staged blocks are not even read again"
    );
    assert!(raw.get(key) == new);
}

#[tokio::test]
async fn a_new_blob_interrupted_before_its_first_commit_resumes_and_stays_invisible() {
    let Some((_ctx, store, location)) = setup() else {
        return;
    };
    let raw = &location.raw;
    let data = random_bytes(30, 6 * MIB);
    let parts = send_all(&data, MIB);
    let hash = hex_blake3(&data);
    let req = request("fresh.bin", &parts, None, &hash);
    let sent1 = Sent::default();
    store
        .write(&req, &Source::failing_at(&data, 3), &sent1)
        .await
        .expect_err("interrupted");
    assert!(sent1.get() > 0);
    assert_eq!(
        store.probe("fresh.bin").await.expect("probe"),
        None,
        "staged blocks are not a blob"
    );
    assert!(raw.list("").is_empty(), "readers see no blob");
    let sent2 = Sent::default();
    store
        .write(&req, &Source::new(&data), &sent2)
        .await
        .expect("rerun");
    assert_eq!(sent1.get() + sent2.get(), data.len() as u64);
    assert!(raw.get("fresh.bin") == data);
}

#[tokio::test]
async fn probe_reads_a_blob_written_whole() {
    let Some((_ctx, store, location)) = setup() else {
        return;
    };
    let raw = &location.raw;
    // Put Blob (not a block list): no committed blocks, no ferry metadata.
    raw.put("whole.bin", b"hello, azure");
    let probed = store
        .probe("whole.bin")
        .await
        .expect("probe")
        .expect("exists");
    assert_eq!(probed.size, 12);
    assert_eq!(probed.blake3, None);
    assert!(probed.blocks.is_empty());

    // Replacing it with a block list, pinned to that etag, works; a stale pin does not.
    let data = b"new bytes".to_vec();
    let parts = send_all(&data, MIB);
    let etag = store
        .write(
            &request("whole.bin", &parts, Some(&probed.etag), &hex_blake3(&data)),
            &Source::new(&data),
            &Sent::default(),
        )
        .await
        .expect("replace");
    assert_eq!(raw.get("whole.bin"), data);
    let err = store
        .write(
            &request("whole.bin", &parts, Some(&probed.etag), &hex_blake3(&data)),
            &Source::new(&data),
            &Sent::default(),
        )
        .await
        .expect_err("stale");
    assert!(matches!(err, NativeError::Changed { .. }), "{err:?}");
    assert_eq!(store.probe("whole.bin").await.unwrap().unwrap().etag, etag);
}

#[tokio::test]
async fn an_impossible_plan_is_refused_before_any_request() {
    let Some((_ctx, store, location)) = setup() else {
        return;
    };
    let raw = &location.raw;
    let data = vec![7u8; 50_001];
    let parts: Vec<Part> = (0..50_001u64)
        .map(|i| Part::Send {
            block: block_id(&[7]),
            new: i..i + 1,
        })
        .collect();
    let source = Source::new(&data);
    let err = store
        .write(
            &request("big.bin", &parts, None, &hex_blake3(&data)),
            &source,
            &Sent::default(),
        )
        .await
        .expect_err("too many blocks");
    let text = err.to_string();
    assert!(
        text.contains("/big.bin: 50001 parts, but one object holds at most 50000"),
        "{text}"
    );
    assert_eq!(source.reads.load(Ordering::SeqCst), 0);
    assert!(raw.list("").is_empty(), "nothing was written");
    assert_eq!(store.probe("big.bin").await.expect("probe"), None);

    // Keeping a block without a base etag to pin it is refused too.
    let keep = [Part::Keep {
        block: block_id(b"x"),
        old: 0..1,
    }];
    let err = store
        .write(
            &request("big.bin", &keep, None, "00"),
            &source,
            &Sent::default(),
        )
        .await
        .expect_err("unpinned keep");
    assert!(err.to_string().contains("no base etag"), "{err}");
}

/// A source that, on its first read, has another writer replace the blob: the write's
/// pre-check has passed by then, so only the conditional commit can notice.
struct Meddling<'a> {
    inner: Source,
    raw: &'a RawStore,
    key: &'a str,
    other: &'a [u8],
    done: std::sync::Once,
}

#[async_trait]
impl PartSource for Meddling<'_> {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        self.done.call_once(|| self.raw.put(self.key, self.other));
        self.inner.read(range).await
    }
}

#[tokio::test]
async fn a_blob_replaced_during_the_write_fails_the_commit_and_keeps_the_other_version() {
    let Some((_ctx, store, location)) = setup() else {
        return;
    };
    let raw = &location.raw;
    let key = "raced.bin";
    let v1 = random_bytes(20, 3 * MIB);
    let etag1 = store
        .write(
            &request(key, &send_all(&v1, MIB), None, &hex_blake3(&v1)),
            &Source::new(&v1),
            &Sent::default(),
        )
        .await
        .expect("v1");
    let mut v2 = v1.clone();
    v2[MIB..MIB + 5].fill(1);
    let parts: Vec<Part> = send_all(&v2, MIB)
        .into_iter()
        .enumerate()
        .map(|(i, part)| match part {
            Part::Send { block, new } if i != 1 => Part::Keep { block, old: new },
            other => other,
        })
        .collect();
    let other = b"someone else's bytes".to_vec();
    let source = Meddling {
        inner: Source::new(&v2),
        raw,
        key,
        other: &other,
        done: std::sync::Once::new(),
    };
    let err = store
        .write(
            &request(key, &parts, Some(&etag1), &hex_blake3(&v2)),
            &source,
            &Sent::default(),
        )
        .await
        .expect_err("the commit is conditional");
    assert!(
        matches!(&err, NativeError::Changed { expected, .. } if *expected == etag1),
        "{err:?}"
    );
    assert_eq!(
        raw.get(key),
        other,
        "the other writer's version stands whole"
    );
}

#[tokio::test]
async fn a_wrong_key_is_an_error_naming_the_fix_not_the_key() {
    let Some((_ctx, _store, location)) = setup() else {
        return;
    };
    let RawStore::Server { prefix, .. } = &location.raw else {
        panic!("an Azure location is on the server");
    };
    let endpoint = server_url(AZURITE_URL_VAR).expect("checked by Ctx::new");
    let wrong_key = "d3Jvbmcta2V5LXdyb25nLWtleS13cm9uZy1rZXktd3Jvbmcta2V5LXdyb25nLWtleQ==";
    let builder = MicrosoftAzureBuilder::new()
        .with_account(ACCOUNT)
        .with_access_key(wrong_key)
        .with_container_name(CONTAINER)
        .with_endpoint(format!("{}/{ACCOUNT}", endpoint.trim_end_matches('/')))
        .with_allow_http(true);
    let store = AzureDelta::from_builder(builder, prefix, &RetryPolicy::retries(3))
        .expect("native Azure store");
    let err = store
        .probe("x.bin")
        .await
        .expect_err("Azurite checks signatures");
    let text = err.to_string();
    assert!(
        text.starts_with(&format!(
            "az://ferry-test/{prefix}/x.bin: Get Blob Properties: HTTP 403"
        )),
        "{text}"
    );
    assert!(text.contains("AZURE_STORAGE_ACCOUNT_KEY"), "{text}");
    assert!(!text.contains(wrong_key) && !text.contains(KEY), "{text}");
    assert!(!text.contains('\n'), "{text}");
}

/// Transience is read from the answer: a missing container on Azurite is a 404, permanent,
/// through the data plane (object_store) and the native client alike.
#[tokio::test]
async fn a_missing_container_is_permanent_with_its_status() {
    use ferry::error::Transience;
    use ferry::store::azure::AzureSettings;
    use ferry::store::StoreOptions;
    use object_store::path::Path;

    let Some(_ctx) = Ctx::new(&[Backend::Azure]) else {
        return;
    };
    let endpoint = server_url(AZURITE_URL_VAR).expect("checked by Ctx::new");
    let builder = MicrosoftAzureBuilder::new()
        .with_account(ACCOUNT)
        .with_access_key(KEY)
        .with_container_name("no-such-container-ferry")
        .with_endpoint(format!("{}/{ACCOUNT}", endpoint.trim_end_matches('/')))
        .with_allow_http(true);
    let options = StoreOptions {
        retry: RetryPolicy::retries(1),
        ..StoreOptions::default()
    };
    let store = AzureSettings::from_builder(builder, "p", &options)
        .into_store()
        .expect("open the store");
    let err = store
        .get(&Path::from("x.bin"))
        .await
        .expect_err("no container");
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(err.transience(), Transience::Permanent, "{err}");

    let native = store
        .delta()
        .expect("native client")
        .expect("Azure has one");
    let data = random_bytes(5, 100);
    let parts = send_all(&data, 100);
    let err = native
        .write(
            &request("x.bin", &parts, None, &hex_blake3(&data)),
            &Source::new(&data),
            &Sent::default(),
        )
        .await
        .expect_err("no container");
    assert_eq!(err.status(), Some(404), "{err}");
    assert_eq!(err.transience(), Transience::Permanent, "{err}");
    assert!(err.to_string().contains("ContainerNotFound"), "{err}");
}
