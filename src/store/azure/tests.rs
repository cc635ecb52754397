//! Pure logic of the Azure module: ids, XML, validation, and refusal before any request.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use async_trait::async_trait;
use bytes::Bytes;
use object_store::azure::MicrosoftAzureBuilder;
use reqwest::header::ETAG;
use reqwest::{Method, StatusCode};
use std::collections::HashMap;

use super::wire::{block_list_xml, parse_block_list, validate, xml_field, BlockList, META_HEADER};
use super::*;
use crate::error::first_line;
use crate::store::delta::{
    BlockId, DeltaStore, Limits, NativeError, Part, PartSource, WriteObserver, WriteRequest,
    AZURE_BLAKE3_METADATA,
};
use crate::store::options::RetryPolicy;

/// Azurite's well-known development key (public, documented by Microsoft).
const EMULATOR_KEY: &str =
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==";

fn id(n: u8) -> BlockId {
    *blake3::hash(&[n]).as_bytes()
}

fn send(n: u8, new: Range<u64>) -> Part {
    Part::Send { block: id(n), new }
}

fn keep(n: u8, old: Range<u64>) -> Part {
    Part::Keep { block: id(n), old }
}

fn request<'a>(parts: &'a [Part], base_etag: Option<&'a str>) -> WriteRequest<'a> {
    WriteRequest {
        key: "ckpt/model.bin",
        parts,
        size: parts.iter().map(Part::len).sum(),
        base_etag,
        blake3: "ab12",
    }
}

/// A store whose endpoint refuses connections: any request fails with a connect error.
fn unreachable_store() -> AzureDelta {
    let builder = MicrosoftAzureBuilder::new()
        .with_account(EMULATOR_ACCOUNT)
        .with_access_key(EMULATOR_KEY)
        .with_container_name("ferry-test")
        .with_endpoint(format!("http://127.0.0.1:9/{EMULATOR_ACCOUNT}"))
        .with_allow_http(true);
    AzureDelta::from_builder(builder, "/runs/a/", &RetryPolicy::retries(0))
        .expect("builder is complete")
}

/// Counts reads; a plan refused up front must not read anything.
#[derive(Default)]
struct CountingSource(AtomicUsize);

#[async_trait]
impl PartSource for CountingSource {
    async fn read(&self, range: Range<u64>) -> std::io::Result<Bytes> {
        self.0.fetch_add(1, Ordering::SeqCst);
        Ok(Bytes::from(vec![0; (range.end - range.start) as usize]))
    }
}

struct NoObserver;
impl WriteObserver for NoObserver {}

#[test]
fn block_ids_are_base64_of_32_bytes_and_round_trip() {
    let encoded = encode_block_id(&id(1));
    assert_eq!(encoded.len(), 44);
    assert_eq!(encoded, BASE64.encode(blake3::hash(&[1]).as_bytes()));
    assert_eq!(decode_block_id(&encoded), Some(id(1)));
    assert_eq!(
        encode_block_id(&[0; 32]),
        "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="
    );
    // Ids of other writers: valid base64 of another length, or not base64 at all.
    assert_eq!(decode_block_id(&BASE64.encode(b"block-000001")), None);
    assert_eq!(decode_block_id("not base64!"), None);
}

#[test]
fn block_list_xml_commits_kept_blocks_and_latest_sent_ones_in_order() {
    let parts = [keep(1, 0..4), send(2, 4..9), keep(3, 4..8)];
    let xml = block_list_xml(&parts);
    let (k1, s2, k3) = (
        encode_block_id(&id(1)),
        encode_block_id(&id(2)),
        encode_block_id(&id(3)),
    );
    assert_eq!(
        xml,
        format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList><Committed>{k1}</Committed>\
             <Latest>{s2}</Latest><Committed>{k3}</Committed></BlockList>"
        )
    );
    assert_eq!(
        block_list_xml(&[]),
        "<?xml version=\"1.0\" encoding=\"utf-8\"?><BlockList></BlockList>"
    );
}

#[test]
fn block_list_answers_parse_in_order() {
    let xml = r#"<?xml version="1.0" encoding="utf-8"?>
<BlockList>
  <CommittedBlocks>
    <Block><Name>QUFB</Name><Size>4</Size></Block>
    <Block><Name>QkJC</Name><Size>4194304</Size></Block>
  </CommittedBlocks>
  <UncommittedBlocks>
    <Block><Name>Q0ND</Name><Size>7</Size></Block>
  </UncommittedBlocks>
</BlockList>"#;
    let list = parse_block_list(xml).expect("parses");
    assert_eq!(
        list.committed,
        vec![("QUFB".to_string(), 4), ("QkJC".to_string(), 4194304)]
    );
    assert_eq!(list.uncommitted, vec![("Q0ND".to_string(), 7)]);

    let empty = r#"<?xml version="1.0" encoding="utf-8"?><BlockList><CommittedBlocks /><UncommittedBlocks /></BlockList>"#;
    assert_eq!(
        parse_block_list(empty).expect("parses"),
        BlockList::default()
    );
    let committed_only = "<BlockList><CommittedBlocks><Block><Name>QUFB</Name><Size>1</Size></Block></CommittedBlocks></BlockList>";
    let list = parse_block_list(committed_only).expect("parses");
    assert_eq!(list.committed.len(), 1);
    assert!(list.uncommitted.is_empty());
    let bad_size = "<BlockList><CommittedBlocks><Block><Name>QUFB</Name><Size>many</Size></Block></CommittedBlocks></BlockList>";
    assert!(parse_block_list(bad_size).is_err());
}

#[test]
fn metadata_header_is_the_shared_name() {
    assert_eq!(META_HEADER, format!("x-ms-meta-{AZURE_BLAKE3_METADATA}"));
}

#[test]
fn validation_accepts_a_plan_within_limits() {
    let parts = [keep(1, 0..10), send(2, 10..20), send(2, 20..30)];
    validate(&request(&parts, Some("e")), &Limits::AZURE, "az://c/k").expect("valid");
    validate(&request(&[], None), &Limits::AZURE, "az://c/k").expect("an empty blob is valid");
}

#[test]
fn validation_refuses_plans_azure_cannot_take() {
    let url = "az://ferry-test/runs/a/ckpt/model.bin";
    let refuse = |req: &WriteRequest<'_>| match validate(req, &Limits::AZURE, url) {
        Err(NativeError::Request {
            url: u, message, ..
        }) => {
            assert_eq!(u, url);
            assert!(!message.contains('\n'), "one line: {message}");
            message
        }
        other => panic!("expected a refusal, got {other:?}"),
    };

    let many: Vec<Part> = (0..50_001u64).map(|i| send(0, i..i + 1)).collect();
    assert!(
        refuse(&request(&many, None)).contains("50001 parts, but one object holds at most 50000")
    );
    let at_limit = &many[..50_000];
    validate(&request(at_limit, None), &Limits::AZURE, url).expect("50,000 blocks fit");

    let big = [send(1, 0..(4000 << 20) + 1)];
    assert!(refuse(&request(&big, None)).contains("part 1 of 1 is 4194304001 bytes"));
    let max = [send(1, 0..4000 << 20)];
    validate(&request(&max, None), &Limits::AZURE, url).expect("4000 MiB fits");

    let unpinned = [send(1, 0..5), keep(2, 0..5)];
    assert!(refuse(&request(&unpinned, None))
        .contains("part 2 of 2 keeps bytes of the current object, but the plan has no base etag"));

    let empty = [send(1, 5..5)];
    assert!(refuse(&request(&empty, None)).contains("part 1 of 1 has an empty or reversed range"));

    let parts = [send(1, 0..5)];
    let mut wrong_size = request(&parts, None);
    wrong_size.size = 6;
    assert!(refuse(&wrong_size).contains("add up to 5 bytes, but the object is 6 bytes"));

    let mut bad_hash = request(&parts, None);
    bad_hash.blake3 = "ab\ncd";
    assert!(refuse(&bad_hash).contains("BLAKE3"));
}

#[tokio::test]
async fn a_plan_over_the_limits_is_refused_before_any_request() {
    // The endpoint is dead: a refusal that made a request would be a connect error instead.
    let store = unreachable_store();
    let source = CountingSource::default();
    let many: Vec<Part> = (0..50_001u64).map(|i| send(0, i..i + 1)).collect();
    let err = store
        .write(&request(&many, None), &source, &NoObserver)
        .await
        .expect_err("refused");
    let text = err.to_string();
    assert!(
        text.starts_with("az://ferry-test/runs/a/ckpt/model.bin: 50001 parts"),
        "{text}"
    );
    assert_eq!(source.0.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn request_errors_name_the_blob_the_operation_and_the_fix_without_secrets() {
    let store = unreachable_store();
    // Two blocks: staged, so the write starts with Get Block List.
    let parts = [send(1, 0..5), send(2, 5..10)];
    let err = store
        .write(
            &request(&parts, None),
            &CountingSource::default(),
            &NoObserver,
        )
        .await
        .expect_err("nothing listens on port 9");
    let text = err.to_string();
    assert!(
        text.starts_with("az://ferry-test/runs/a/ckpt/model.bin: Get Block List: "),
        "{text}"
    );
    // One small new block: a single Put Blob.
    let one = [send(1, 0..5)];
    let single = store
        .write(
            &request(&one, None),
            &CountingSource::default(),
            &NoObserver,
        )
        .await
        .expect_err("nothing listens on port 9")
        .to_string();
    assert!(
        single.starts_with("az://ferry-test/runs/a/ckpt/model.bin: Put Blob: "),
        "{single}"
    );
    assert!(text.contains("cannot reach the Azure endpoint"), "{text}");
    assert!(!text.contains('\n'), "{text}");
    assert!(!text.contains(&EMULATOR_KEY[..20]), "{text}");
    assert!(!text.contains("sig="), "{text}");

    let err = store.probe("x").await.expect_err("dead endpoint");
    assert!(
        err.to_string()
            .starts_with("az://ferry-test/runs/a/x: Get Blob Properties: "),
        "{err}"
    );
    store.abort("x", "").await.expect("abort has nothing to do");
}

#[test]
fn blob_urls_put_the_prefix_and_encode_the_block_id() {
    let store = unreachable_store();
    let url = store.blob_url(
        "d/e f.bin",
        &[("comp", "block"), ("blockid", &encode_block_id(&[255; 32]))],
    );
    assert_eq!(
        url.as_str(),
        "http://127.0.0.1:9/devstoreaccount1/ferry-test/runs/a/d/e%20f.bin?comp=block&blockid=%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F%2F8%3D"
    );
    assert_eq!(
        store.display("d/e f.bin"),
        "az://ferry-test/runs/a/d/e f.bin"
    );
}

#[test]
fn a_builder_without_account_is_a_config_error_naming_the_fix() {
    let builder = MicrosoftAzureBuilder::new().with_container_name("c");
    let err =
        AzureDelta::from_builder(builder, "", &RetryPolicy::default()).expect_err("no account");
    let text = err.to_string();
    assert!(text.contains("AZURE_STORAGE_ACCOUNT_NAME"), "{text}");
    assert!(text.contains("AZURE_STORAGE_USE_EMULATOR=true"), "{text}");
}

#[test]
fn the_emulator_path_puts_the_account_before_the_container() {
    let builder = MicrosoftAzureBuilder::new()
        .with_use_emulator(true)
        .with_container_name("ferry-test");
    let store = AzureDelta::from_builder(builder, "p", &RetryPolicy::default())
        .expect("the emulator needs no settings");
    // object_store reads the same variable for the emulator's address.
    let base = std::env::var("AZURITE_BLOB_STORAGE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(EMULATOR_URL.into());
    assert_eq!(
        store.blob_url("k", &[]).as_str(),
        format!(
            "{}/devstoreaccount1/ferry-test/p/k",
            base.trim_end_matches('/')
        )
    );
    assert_eq!(store.display("k"), "az://ferry-test/p/k");
}

/// A stand-in for the service on 127.0.0.1 that fails the first Get Block List and Put
/// Block with 503, and fails the first Put Block List with 503 too.
#[derive(Default)]
struct Flaky {
    lists: AtomicUsize,
    blocks: AtomicUsize,
    commits: AtomicUsize,
}

async fn flaky_service(
    axum::extract::State(flaky): axum::extract::State<std::sync::Arc<Flaky>>,
    method: Method,
    axum::extract::Query(query): axum::extract::Query<HashMap<String, String>>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let unavailable = StatusCode::SERVICE_UNAVAILABLE.into_response();
    match (method, query.get("comp").map(String::as_str)) {
        (Method::GET, Some("blocklist")) => match flaky.lists.fetch_add(1, Ordering::SeqCst) {
            0 => unavailable,
            _ => StatusCode::NOT_FOUND.into_response(),
        },
        (Method::PUT, Some("block")) => match flaky.blocks.fetch_add(1, Ordering::SeqCst) {
            0 => unavailable,
            _ => StatusCode::CREATED.into_response(),
        },
        (Method::PUT, Some("blocklist")) => match flaky.commits.fetch_add(1, Ordering::SeqCst) {
            0 => unavailable,
            _ => (StatusCode::CREATED, [(ETAG, "\"0x8D1\"")]).into_response(),
        },
        _ => StatusCode::BAD_REQUEST.into_response(),
    }
}

#[tokio::test]
async fn transient_failures_are_retried_but_an_answered_commit_is_not_repeated() {
    let flaky = std::sync::Arc::new(Flaky::default());
    let app = axum::Router::new()
        .fallback(flaky_service)
        .with_state(flaky.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    let port = listener.local_addr().expect("local address").port();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let builder = MicrosoftAzureBuilder::new()
        .with_account(EMULATOR_ACCOUNT)
        .with_access_key(EMULATOR_KEY)
        .with_container_name("ferry-test")
        .with_endpoint(format!("http://127.0.0.1:{port}/{EMULATOR_ACCOUNT}"))
        .with_allow_http(true);
    let store = AzureDelta::from_builder(builder, "p", &RetryPolicy::retries(2))
        .expect("builder is complete");
    // One block id twice: staged (not a single Put Blob), and staged once.
    let parts = [send(1, 0..5), send(1, 5..10)];
    let req = request(&parts, None);

    // The list and the block succeed on their second attempt; the commit was answered
    // (503), so it is not sent again: the write fails and says why.
    let err = store
        .write(&req, &CountingSource::default(), &NoObserver)
        .await
        .expect_err("the commit failed");
    assert!(
        err.to_string()
            .ends_with("ckpt/model.bin: Put Block List: HTTP 503"),
        "{err}"
    );
    assert_eq!(flaky.lists.load(Ordering::SeqCst), 2);
    assert_eq!(flaky.blocks.load(Ordering::SeqCst), 2);
    assert_eq!(flaky.commits.load(Ordering::SeqCst), 1);

    let etag = store
        .write(&req, &CountingSource::default(), &NoObserver)
        .await
        .expect("the second run commits");
    assert_eq!(etag, "0x8D1");
    assert_eq!(flaky.commits.load(Ordering::SeqCst), 2);
    server.abort();
}

#[test]
fn error_bodies_yield_their_code_and_message() {
    let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>InvalidBlockList</Code>\
                <Message>The specified block list is invalid.\nRequestId:1\nTime:2026</Message></Error>";
    assert_eq!(xml_field(body, "Code").as_deref(), Some("InvalidBlockList"));
    assert_eq!(
        xml_field(body, "Message").map(|m| first_line(&m).to_string()),
        Some("The specified block list is invalid.".to_string())
    );
    assert_eq!(xml_field("not xml", "Code"), None);
    assert_eq!(xml_field("<Code>unterminated", "Code"), None);
}
