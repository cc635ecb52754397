//! Azure Blob delta writes: `Put Block`, `Put Block List` and `Get Block List` as REST calls
//! over `reqwest`, signed by `object_store`'s own Azure authorizer with the credential its
//! `from_env` builder resolves (SharedKey, SAS or bearer token), so the data plane and these
//! calls read the same environment and never disagree about who they are.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures::StreamExt as _;
use object_store::azure::{
    AzureAuthorizer, AzureConfigKey, AzureCredentialProvider, MicrosoftAzureBuilder,
};
use object_store::client::{HttpRequest, HttpRequestBody};
use object_store::ClientConfigKey;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue, CONTENT_LENGTH, CONTENT_TYPE, ETAG};
use reqwest::{Method, StatusCode};
use url::Url;

use self::wire::{block_list_xml, meta_header, parse_block_list, validate, xml_field, BlockList};
pub use self::wire::{decode_block_id, encode_block_id};
use super::{
    check_before_commit, normalize_etag, DeltaStore, Limits, NativeError, Part, PartSource,
    RemoteObject, WriteObserver, WriteRequest,
};

/// Blocks staged at once: bounds memory to this many blocks' bytes.
const STAGE_CONCURRENCY: usize = 4;
const DEFAULT_RETRIES: u32 = 3;
/// The emulator's account and endpoint, as `object_store` defaults them.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_URL: &str = "http://127.0.0.1:10000";
/// Sent when requests go unsigned (`AZURE_SKIP_SIGNATURE`); the authorizer adds its own.
const API_VERSION: &str = "2023-11-03";
const AUTH_HINT: &str = "check AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY), or set AZURE_STORAGE_USE_EMULATOR=true for Azurite";

/// Native writes to one Azure container below a prefix.
pub struct AzureDelta {
    http: reqwest::Client,
    /// `None` when `AZURE_SKIP_SIGNATURE` is set (public containers).
    credentials: Option<AzureCredentialProvider>,
    account: String,
    container: String,
    /// `{endpoint}/{container}` (emulator: `{endpoint}/{account}/{container}`).
    container_url: Url,
    /// Key prefix inside the container, without surrounding slashes.
    prefix: String,
    /// Retries of one call after a transient failure (`FERRY_RETRY_MAX`, default 3; an
    /// interrupted write resumes anyway, so fewer than the data plane's 10).
    max_retries: u32,
}

impl std::fmt::Debug for AzureDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AzureDelta(az://{}/{})", self.container, self.prefix)
    }
}

impl AzureDelta {
    /// For `az://container/prefix`, with settings from the environment (as `Store::open`).
    pub fn open(container: &str, prefix: &str) -> Result<Self, NativeError> {
        let store = Self::from_builder(
            MicrosoftAzureBuilder::from_env().with_container_name(container),
            prefix,
        )?;
        let retries = std::env::var("FERRY_RETRY_MAX")
            .ok()
            .and_then(|v| v.parse().ok());
        Ok(store.with_max_retries(retries.unwrap_or(DEFAULT_RETRIES)))
    }

    /// Retries of one call after a transient failure (connection refused or reset, timeout,
    /// HTTP 408/429/500/502/503/504; the commit only when it was never sent).
    pub fn with_max_retries(mut self, retries: u32) -> Self {
        self.max_retries = retries;
        self
    }

    /// From an `object_store` builder that names the container; builds it to resolve the
    /// credential, and reads the account, endpoint and client settings back from it.
    pub fn from_builder(builder: MicrosoftAzureBuilder, prefix: &str) -> Result<Self, NativeError> {
        let get = |key: AzureConfigKey| builder.get_config_value(&key);
        let flag = |key: AzureConfigKey| get(key).is_some_and(|v| is_truthy(&v));
        let container = get(AzureConfigKey::ContainerName)
            .ok_or_else(|| NativeError::Config("native Azure writes need a container".into()))?;
        let fail = |reason: String| {
            NativeError::Config(format!("az://{container}: {reason} ({AUTH_HINT})"))
        };
        let emulator = flag(AzureConfigKey::UseEmulator);
        let skip_signature = flag(AzureConfigKey::SkipSignature);
        let store = builder
            .clone()
            .build()
            .map_err(|e| fail(first_line(&e.to_string()).to_string()))?;
        let (account, service) = if emulator {
            let account = get(AzureConfigKey::AccountName).unwrap_or(EMULATOR_ACCOUNT.into());
            let service = std::env::var("AZURITE_BLOB_STORAGE_URL")
                .ok()
                .filter(|v| !v.is_empty())
                .unwrap_or(EMULATOR_URL.into());
            let mut url = parse_url(&service).map_err(&fail)?;
            push_segments(&mut url, [account.as_str()]);
            (account, url)
        } else {
            let account = get(AzureConfigKey::AccountName)
                .ok_or_else(|| fail("no storage account is set".into()))?;
            let endpoint = match get(AzureConfigKey::Endpoint) {
                Some(e) => e,
                None if flag(AzureConfigKey::UseFabricEndpoint) => {
                    format!("https://{account}.blob.fabric.microsoft.com")
                }
                None => format!("https://{account}.blob.core.windows.net"),
            };
            let url = parse_url(&endpoint).map_err(&fail)?;
            let allow_http = flag(AzureConfigKey::Client(ClientConfigKey::AllowHttp));
            if url.scheme() != "https" && !allow_http {
                return Err(fail(format!(
                    "endpoint {} is not https (set AZURE_ALLOW_HTTP=true to allow it)",
                    url.origin().ascii_serialization()
                )));
            }
            (account, url)
        };
        let mut container_url = service;
        push_segments(&mut container_url, [container.as_str()]);
        // The same knobs and defaults as the data plane (`store::client_defaults`).
        let timeout = |key, default: &str| {
            get(AzureConfigKey::Client(key))
                .or_else(|| Some(default.to_string()))
                .and_then(|v| humantime::parse_duration(&v).ok())
                .unwrap_or(Duration::from_secs(60))
        };
        let http = reqwest::Client::builder()
            .connect_timeout(timeout(
                ClientConfigKey::ConnectTimeout,
                crate::store::DEFAULT_CONNECT_TIMEOUT,
            ))
            .read_timeout(timeout(
                ClientConfigKey::ReadTimeout,
                crate::store::DEFAULT_READ_TIMEOUT,
            ))
            .timeout(timeout(
                ClientConfigKey::Timeout,
                crate::store::DEFAULT_TIMEOUT,
            ))
            .build()
            .map_err(|e| fail(first_line(&e.to_string()).to_string()))?;
        Ok(Self {
            http,
            credentials: (!skip_signature).then(|| store.credentials().clone()),
            account,
            container,
            container_url,
            prefix: prefix.trim_matches('/').to_string(),
            max_retries: DEFAULT_RETRIES,
        })
    }

    /// The blob a trait key names: its full name in the container.
    fn blob_name(&self, key: &str) -> String {
        let key = key.trim_start_matches('/');
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// `az://container/blob`, for messages (never carries a SAS token).
    fn display(&self, key: &str) -> String {
        format!("az://{}/{}", self.container, self.blob_name(key))
    }

    fn blob_url(&self, key: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.container_url.clone();
        push_segments(&mut url, self.blob_name(key).split('/'));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }

    /// Signs and sends a request, again after transient failures as `retry` allows, with
    /// backoff. `op` names the operation in errors.
    async fn send(
        &self,
        op: Op<'_>,
        method: Method,
        url: Url,
        headers: HeaderMap,
        body: Bytes,
        retry: Retry,
    ) -> Result<reqwest::Response, NativeError> {
        let mut attempt = 0;
        loop {
            let result = self
                .send_once(
                    &op,
                    method.clone(),
                    url.clone(),
                    headers.clone(),
                    body.clone(),
                )
                .await;
            let transient = match &result {
                Ok(resp) => retry == Retry::Idempotent && is_transient_status(resp.status()),
                Err(Attempt::Transport(e)) => retry == Retry::Idempotent || e.is_connect(),
                Err(Attempt::Fatal(_)) => false,
            };
            if !transient || attempt >= self.max_retries {
                return result.map_err(|e| match e {
                    Attempt::Transport(e) => op.fail(transport_message(e)),
                    Attempt::Fatal(e) => e,
                });
            }
            attempt += 1;
            let wait = Duration::from_millis(100 << attempt.min(6));
            tracing::debug!(url = %op.url, op = op.name, attempt, ?wait, "retrying");
            tokio::time::sleep(wait).await;
        }
    }

    async fn send_once(
        &self,
        op: &Op<'_>,
        method: Method,
        url: Url,
        mut headers: HeaderMap,
        body: Bytes,
    ) -> Result<reqwest::Response, Attempt> {
        if method == Method::PUT {
            headers.insert(CONTENT_LENGTH, HeaderValue::from(body.len()));
        }
        let mut req = HttpRequest::new(HttpRequestBody::empty());
        *req.method_mut() = method;
        *req.uri_mut() = url
            .as_str()
            .parse()
            .map_err(|_| Attempt::Fatal(op.fail("the request URL is not valid".into())))?;
        *req.headers_mut() = headers;
        match &self.credentials {
            Some(provider) => {
                let credential = provider.get_credential().await.map_err(|e| {
                    Attempt::Fatal(op.fail(format!(
                        "cannot get Azure credentials: {} ({AUTH_HINT})",
                        first_line(&e.to_string())
                    )))
                })?;
                AzureAuthorizer::new(&credential, &self.account)
                    .try_authorize(&mut req)
                    .map_err(|e| {
                        Attempt::Fatal(op.fail(format!("signing: {}", first_line(&e.to_string()))))
                    })?;
            }
            None => {
                let h = req.headers_mut();
                h.insert("x-ms-version", HeaderValue::from_static(API_VERSION));
                let date = chrono::Utc::now()
                    .format("%a, %d %b %Y %H:%M:%S GMT")
                    .to_string();
                if let Ok(date) = HeaderValue::from_str(&date) {
                    h.insert("x-ms-date", date);
                }
            }
        }
        let (parts, _) = req.into_parts();
        // The URI may now carry a SAS token: it goes to reqwest, never into a message.
        self.http
            .request(parts.method, parts.uri.to_string())
            .headers(parts.headers)
            .body(body)
            .send()
            .await
            .map_err(Attempt::Transport)
    }

    /// Get Block List; a missing blob has no blocks.
    async fn block_list(&self, key: &str, list_type: &str) -> Result<BlockList, NativeError> {
        let op = Op::new("Get Block List", self.display(key));
        let url = self.blob_url(key, &[("comp", "blocklist"), ("blocklisttype", list_type)]);
        let resp = self
            .send(
                op.clone(),
                Method::GET,
                url,
                HeaderMap::new(),
                Bytes::new(),
                Retry::Idempotent,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(BlockList::default());
        }
        let resp = check(resp, &op).await?;
        let etag = header(&resp, ETAG).map(|e| normalize_etag(&e));
        let body = resp
            .text()
            .await
            .map_err(|e| op.fail(transport_message(e)))?;
        let mut list = parse_block_list(&body).map_err(|m| op.fail(m))?;
        list.etag = etag;
        list.exists = true;
        Ok(list)
    }

    /// Get Blob Properties: `(etag, size, blake3)`, or `None` if there is no blob.
    async fn properties(
        &self,
        key: &str,
    ) -> Result<Option<(String, u64, Option<String>)>, NativeError> {
        let op = Op::new("Get Blob Properties", self.display(key));
        let url = self.blob_url(key, &[]);
        let resp = self
            .send(
                op.clone(),
                Method::HEAD,
                url,
                HeaderMap::new(),
                Bytes::new(),
                Retry::Idempotent,
            )
            .await?;
        if resp.status() == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let resp = check(resp, &op).await?;
        let etag = header(&resp, ETAG)
            .map(|e| normalize_etag(&e))
            .ok_or_else(|| op.fail("the response has no ETag".into()))?;
        let size = header(&resp, CONTENT_LENGTH)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| op.fail("the response has no Content-Length".into()))?;
        let blake3 = header(&resp, meta_header());
        Ok(Some((etag, size, blake3)))
    }

    /// Stages the `Send` parts the blob does not already hold uncommitted, at most
    /// [`STAGE_CONCURRENCY`] at a time. After a failure no new block starts, but those in
    /// flight finish (and are counted), so a rerun resends as little as possible.
    async fn stage(
        &self,
        req: &WriteRequest<'_>,
        staged: &HashMap<String, u64>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<(), NativeError> {
        let mut seen = HashSet::new();
        let todo: Vec<(String, std::ops::Range<u64>)> = req
            .parts
            .iter()
            .filter_map(|part| match part {
                Part::Send { block, new } => Some((encode_block_id(block), new.clone())),
                Part::Keep { .. } => None,
            })
            .filter(|(id, new)| staged.get(id) != Some(&(new.end - new.start)))
            .filter(|(id, _)| seen.insert(id.clone()))
            .collect();
        tracing::debug!(blob = %self.display(req.key), blocks = todo.len(), "staging blocks");
        let failed = AtomicBool::new(false);
        let first_error = Mutex::new(None);
        futures::stream::iter(todo)
            .map(|(id, range)| {
                let (failed, first_error) = (&failed, &first_error);
                async move {
                    if failed.load(Ordering::Acquire) {
                        return;
                    }
                    if let Err(e) = self.put_block(req.key, &id, range, source, observer).await {
                        failed.store(true, Ordering::Release);
                        let mut slot = first_error.lock().unwrap_or_else(|p| p.into_inner());
                        slot.get_or_insert(e);
                    }
                }
            })
            .buffer_unordered(STAGE_CONCURRENCY)
            .for_each(|()| async {})
            .await;
        match first_error.into_inner().unwrap_or_else(|p| p.into_inner()) {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    async fn put_block(
        &self,
        key: &str,
        id: &str,
        range: std::ops::Range<u64>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<(), NativeError> {
        let len = range.end - range.start;
        let data = self.read_part(key, range, source).await?;
        let op = Op::new("Put Block", self.display(key));
        let url = self.blob_url(key, &[("comp", "block"), ("blockid", id)]);
        let resp = self
            .send(
                op.clone(),
                Method::PUT,
                url,
                HeaderMap::new(),
                data,
                Retry::Idempotent,
            )
            .await?;
        check(resp, &op).await?;
        observer.sent(len);
        Ok(())
    }

    /// Bytes `range` of the source, all of them.
    async fn read_part(
        &self,
        key: &str,
        range: std::ops::Range<u64>,
        source: &dyn PartSource,
    ) -> Result<Bytes, NativeError> {
        let data = source
            .read(range.clone())
            .await
            .map_err(|source| NativeError::Source {
                url: self.display(key),
                source,
            })?;
        if data.len() as u64 != range.end - range.start {
            return Err(NativeError::Source {
                url: self.display(key),
                source: std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    format!(
                        "bytes {}..{}: read {} bytes, expected {}",
                        range.start,
                        range.end,
                        data.len(),
                        range.end - range.start
                    ),
                ),
            });
        }
        Ok(data)
    }

    /// Put Blob: the whole blob in one request, with its BLAKE3 metadata.
    async fn put_blob(
        &self,
        req: &WriteRequest<'_>,
        range: std::ops::Range<u64>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        let url_text = self.display(req.key);
        let len = range.end - range.start;
        let data = self.read_part(req.key, range, source).await?;
        check_before_commit(observer, &url_text)?;
        let op = Op::new("Put Blob", url_text);
        let mut headers = HeaderMap::new();
        headers.insert("x-ms-blob-type", HeaderValue::from_static("BlockBlob"));
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
        let blake3 = HeaderValue::from_str(req.blake3)
            .map_err(|_| op.fail("the BLAKE3 metadata is not a valid header value".into()))?;
        headers.insert(meta_header(), blake3);
        let url = self.blob_url(req.key, &[]);
        let resp = self
            .send(
                op.clone(),
                Method::PUT,
                url,
                headers,
                data,
                Retry::Idempotent,
            )
            .await?;
        let resp = check(resp, &op).await?;
        observer.sent(len);
        header(&resp, ETAG)
            .map(|e| normalize_etag(&e))
            .ok_or_else(|| op.fail("the response has no ETag".into()))
    }

    /// Put Block List: commits `parts` in order, conditional on `base_etag`.
    async fn commit(&self, req: &WriteRequest<'_>) -> Result<String, NativeError> {
        let url_text = self.display(req.key);
        let op = Op::new("Put Block List", url_text.clone());
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/xml"));
        let blake3 = HeaderValue::from_str(req.blake3)
            .map_err(|_| op.fail("the BLAKE3 metadata is not a valid header value".into()))?;
        headers.insert(meta_header(), blake3);
        if let Some(etag) = req.base_etag {
            let value = HeaderValue::from_str(&format!("\"{}\"", normalize_etag(etag)))
                .map_err(|_| op.fail("the base etag is not a valid header value".into()))?;
            headers.insert(reqwest::header::IF_MATCH, value);
        }
        let url = self.blob_url(req.key, &[("comp", "blocklist")]);
        let body = Bytes::from(block_list_xml(req.parts));
        let resp = self
            .send(op.clone(), Method::PUT, url, headers, body, Retry::Unsent)
            .await?;
        if resp.status() == StatusCode::PRECONDITION_FAILED {
            return Err(changed(url_text, req.base_etag.unwrap_or_default()));
        }
        let resp = check(resp, &op).await?;
        header(&resp, ETAG)
            .map(|e| normalize_etag(&e))
            .ok_or_else(|| op.fail("the response has no ETag".into()))
    }
}

/// Largest blob written with one Put Blob (a one-block new blob; larger ones are staged).
const SINGLE_PUT_MAX: u64 = 16 << 20;

#[async_trait]
impl DeltaStore for AzureDelta {
    fn limits(&self) -> Limits {
        Limits::AZURE
    }

    async fn probe(&self, key: &str) -> Result<Option<RemoteObject>, NativeError> {
        let mut last_etag = String::new();
        // The properties and the block list are two calls: they must describe one version.
        for _ in 0..2 {
            let Some((etag, size, blake3)) = self.properties(key).await? else {
                return Ok(None);
            };
            let list = self.block_list(key, "committed").await?;
            let same_version = match &list.etag {
                Some(list_etag) => *list_etag == etag,
                // A blob written whole (Put Blob) has no committed blocks and no list etag.
                None => list.committed.is_empty() && list.exists,
            };
            if same_version {
                let blocks = list
                    .committed
                    .iter()
                    .map(|(name, size)| (decode_block_id(name), *size))
                    .collect();
                return Ok(Some(RemoteObject {
                    etag,
                    size,
                    blake3,
                    blocks,
                }));
            }
            last_etag = etag;
        }
        Err(changed(self.display(key), &last_etag))
    }

    async fn write(
        &self,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        validate(req, &Limits::AZURE, &self.display(req.key))?;
        // A whole blob of one small block: Put Blob, one request instead of three (nothing
        // to keep, and too small for resuming to matter).
        if let (None, [Part::Send { new, .. }]) = (req.base_etag, req.parts) {
            if new.end - new.start <= SINGLE_PUT_MAX {
                return self.put_blob(req, new.clone(), source, observer).await;
            }
        }
        let list = self.block_list(req.key, "all").await?;
        if let Some(base) = req.base_etag {
            // A blob written whole (Put Blob) has no committed blocks, so no list etag.
            let current = match &list.etag {
                Some(etag) => Some(etag.clone()),
                None => self.properties(req.key).await?.map(|(etag, ..)| etag),
            };
            if current.as_deref() != Some(normalize_etag(base).as_str()) {
                return Err(changed(self.display(req.key), base));
            }
        }
        let committed: HashMap<&str, u64> = list
            .committed
            .iter()
            .map(|(n, s)| (n.as_str(), *s))
            .collect();
        for (i, part) in req.parts.iter().enumerate() {
            if let Part::Keep { block, .. } = part {
                let id = encode_block_id(block);
                if committed.get(id.as_str()) != Some(&part.len()) {
                    return Err(NativeError::Request {
                        url: self.display(req.key),
                        message: format!(
                            "part {i} keeps block {id} ({} bytes), which the blob's committed block list does not hold at that size",
                            part.len()
                        ),
                    });
                }
            }
        }
        let staged: HashMap<String, u64> = list.uncommitted.into_iter().collect();
        self.stage(req, &staged, source, observer).await?;
        check_before_commit(observer, &self.display(req.key))?;
        self.commit(req).await
    }

    async fn abort(&self, _key: &str, _upload_id: &str) -> Result<(), NativeError> {
        // Uncommitted blocks expire on their own (a week on Azure).
        Ok(())
    }
}

/// Which failures a call may be repeated after.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Retry {
    /// Reads, and Put Block (same id, same bytes): any transient failure.
    Idempotent,
    /// The commit: only when it never reached the server. After a lost answer a repeat
    /// would meet the commit's own etag change as a 412.
    Unsent,
}

/// How one attempt failed.
enum Attempt {
    Transport(reqwest::Error),
    Fatal(NativeError),
}

fn is_transient_status(status: StatusCode) -> bool {
    matches!(status.as_u16(), 408 | 429 | 500 | 502 | 503 | 504)
}

/// An operation on one blob, for error messages.
#[derive(Clone)]
struct Op<'a> {
    name: &'a str,
    url: String,
}

impl<'a> Op<'a> {
    fn new(name: &'a str, url: String) -> Self {
        Self { name, url }
    }

    fn fail(&self, message: String) -> NativeError {
        NativeError::Request {
            url: self.url.clone(),
            message: format!("{}: {message}", self.name),
        }
    }
}

fn changed(url: String, expected: &str) -> NativeError {
    NativeError::Changed {
        url,
        expected: normalize_etag(expected),
    }
}

/// Passes a success through; turns any other status into a one-line error naming Azure's
/// error code and, for the usual causes, the fix.
async fn check(resp: reqwest::Response, op: &Op<'_>) -> Result<reqwest::Response, NativeError> {
    let status = resp.status();
    if status.is_success() {
        return Ok(resp);
    }
    let code = header(&resp, HeaderName::from_static("x-ms-error-code"));
    let body = resp.text().await.unwrap_or_default();
    let code = code
        .or_else(|| xml_field(&body, "Code"))
        .unwrap_or_default();
    let detail = xml_field(&body, "Message")
        .map(|m| first_line(&m).to_string())
        .unwrap_or_default();
    let mut message = format!("HTTP {}", status.as_u16());
    for part in [code.as_str(), detail.as_str()] {
        if !part.is_empty() {
            message.push_str(": ");
            message.push_str(part);
        }
    }
    if matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN) {
        message.push_str(&format!(" ({AUTH_HINT})"));
    } else if code == "ContainerNotFound" {
        message.push_str(" (create the container first)");
    }
    Err(op.fail(message))
}

fn header(resp: &reqwest::Response, name: impl reqwest::header::AsHeaderName) -> Option<String> {
    resp.headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

fn transport_message(e: reqwest::Error) -> String {
    let (connect, timeout) = (e.is_connect(), e.is_timeout());
    // `without_url`: a SAS token rides in the query string.
    let text = first_line(&error_chain(&e.without_url())).to_string();
    if connect {
        format!("{text} (cannot reach the Azure endpoint: check the account settings, AZURITE_BLOB_STORAGE_URL for the emulator, and that the server runs)")
    } else if timeout {
        format!("{text} (timed out; AZURE_TIMEOUT raises the limit)")
    } else {
        text
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn first_line(s: &str) -> &str {
    s.lines().next().unwrap_or("").trim()
}

fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "y" | "on"
    )
}

fn parse_url(s: &str) -> Result<Url, String> {
    let url = Url::parse(s).map_err(|e| format!("endpoint {s:?} is not a URL: {e}"))?;
    if url.cannot_be_a_base() {
        return Err(format!("endpoint {s:?} is not a base URL"));
    }
    Ok(url)
}

fn push_segments<'a>(url: &mut Url, segments: impl IntoIterator<Item = &'a str>) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}

#[cfg(test)]
mod tests;
mod wire;
