//! S3 native delta writes: a multipart upload whose parts are `UploadPartCopy` of byte ranges
//! of the current object (pinned by `x-amz-copy-source-if-match`) and `UploadPart` of new
//! bytes, made visible at once by `CompleteMultipartUpload`.
//!
//! The client is `aws-sdk-s3` without `aws-config`: endpoint, region, addressing style,
//! timeouts and the credential chain all come from an `object_store` [`AmazonS3Builder`], so
//! native writes and ferry's `object_store` data plane read exactly the same environment.

use std::ops::Range;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::future;
use aws_sdk_s3::config::retry::RetryConfig;
use aws_sdk_s3::config::timeout::TimeoutConfig;
use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, IdentityCache, ProvideCredentials, Region,
    RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use aws_sdk_s3::types::{CompletedMultipartUpload, CompletedPart, ServerSideEncryption};
use aws_sdk_s3::Client;
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};
use object_store::ClientConfigKey;

use super::{
    check_before_commit, normalize_etag, DeltaStore, Limits, NativeError, Part, PartSource,
    RemoteObject, WriteObserver, WriteRequest, S3_BLAKE3_METADATA,
};

/// Parts uploaded or copied at once: bounds memory to this many parts' bytes.
const PARTS_IN_FLIGHT: usize = 4;

/// Writes objects below `s3://bucket/prefix` from kept and sent parts.
#[derive(Debug, Clone)]
pub struct S3Delta {
    client: Client,
    bucket: String,
    /// Key prefix, without surrounding slashes; may be empty.
    prefix: String,
    sse: Encryption,
    /// `AWS_UNSIGNED_PAYLOAD`: skip SigV4's SHA-256 of part bodies (TLS still protects them).
    unsigned_payload: bool,
}

/// Server-side encryption requested through `AWS_SERVER_SIDE_ENCRYPTION` & co., applied to
/// every object this module creates, as `object_store` does.
#[derive(Debug, Clone, Default)]
struct Encryption {
    kind: Option<ServerSideEncryption>,
    kms_key_id: Option<String>,
    bucket_key_enabled: Option<bool>,
}

impl S3Delta {
    /// The store for `s3://bucket/prefix`, configured from the environment exactly like the
    /// `object_store` client of [`crate::store::Store::open`]. Makes no request.
    pub fn from_env(bucket: &str, prefix: &str) -> Result<Self, NativeError> {
        let url = format!("s3://{bucket}/{prefix}");
        crate::store::check_aws_credentials()
            .map_err(|e| NativeError::Config(format!("cannot open {url}: {e}")))?;
        let retry = crate::store::retry_config();
        let mut builder = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_retry(retry.clone());
        for (key, value) in crate::store::client_defaults("AWS_") {
            builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
        }
        Self::from_builder(builder, prefix, &retry)
    }

    /// The store for the builder's bucket (which must be set) below `prefix`, with the
    /// builder's endpoint, region, addressing style, timeouts, encryption and credential
    /// provider, and `AWS_UNSIGNED_PAYLOAD`; `retry` bounds the SDK's standard retries. Makes no
    /// request.
    pub fn from_builder(
        builder: AmazonS3Builder,
        prefix: &str,
        retry: &object_store::RetryConfig,
    ) -> Result<Self, NativeError> {
        let get = |key: AmazonS3ConfigKey| builder.get_config_value(&key);
        let flag = |key: AmazonS3ConfigKey| get(key).is_some_and(|v| parse_bool(&v));
        let bucket = get(AmazonS3ConfigKey::Bucket)
            .ok_or_else(|| NativeError::Config("native S3 writes need a bucket name".into()))?;
        let url = format!("s3://{bucket}/{prefix}");
        let fail = |reason: String| NativeError::Config(format!("cannot open {url}: {reason}"));

        if flag(AmazonS3ConfigKey::SkipSignature) {
            return Err(fail(
                "AWS_SKIP_SIGNATURE is set, but native S3 writes need credentials".into(),
            ));
        }
        if flag(AmazonS3ConfigKey::S3Express) {
            return Err(fail(
                "S3 Express One Zone buckets are not supported for native writes".into(),
            ));
        }
        let sse = encryption(&builder).map_err(fail)?;
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = flag(AmazonS3ConfigKey::VirtualHostedStyleRequest);
        let allow_http = flag(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp));
        let endpoint = get(AmazonS3ConfigKey::S3Endpoint).or(get(AmazonS3ConfigKey::Endpoint));
        let duration =
            |key: ClientConfigKey, default: Duration| match get(AmazonS3ConfigKey::Client(key)) {
                Some(v) => humantime::parse_duration(&v)
                    .map_err(|e| fail(format!("invalid {} {v:?}: {e}", key.as_ref()))),
                None => Ok(default),
            };
        // The same knobs and defaults as the data plane (`store::client_defaults`): a server
        // that accepts and never answers fails the attempt at the read timeout, and the
        // attempt is retried.
        let default =
            |text: &str| humantime::parse_duration(text).unwrap_or(Duration::from_secs(60));
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(duration(
                ClientConfigKey::ConnectTimeout,
                default(crate::store::DEFAULT_CONNECT_TIMEOUT),
            )?)
            .read_timeout(duration(
                ClientConfigKey::ReadTimeout,
                default(crate::store::DEFAULT_READ_TIMEOUT),
            )?)
            .operation_attempt_timeout(duration(
                ClientConfigKey::Timeout,
                default(crate::store::DEFAULT_TIMEOUT),
            )?)
            .build();

        // The credential chain (env keys, session token, web identity, ECS/EKS, IMDS) is
        // object_store's, built from the same builder; it caches and refreshes on its own.
        let credentials = builder
            .clone()
            .build()
            .map_err(|e| fail(first_line(&e.to_string())))?
            .credentials()
            .clone();

        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            .credentials_provider(ObjectStoreCredentials(credentials))
            .identity_cache(IdentityCache::no_cache())
            .force_path_style(!virtual_hosted)
            .retry_config(
                RetryConfig::standard()
                    .with_max_attempts(u32::try_from(retry.max_retries + 1).unwrap_or(u32::MAX))
                    .with_initial_backoff(retry.backoff.init_backoff)
                    .with_max_backoff(retry.backoff.max_backoff),
            )
            .timeout_config(timeouts)
            // SigV4 hashes the payload (unless AWS_UNSIGNED_PAYLOAD) and the whole file
            // carries its BLAKE3; no CRC trailers, which some S3 servers do not take.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = endpoint {
            let endpoint = sdk_endpoint(&endpoint, &bucket, virtual_hosted).map_err(fail)?;
            if endpoint.starts_with("http://") && !allow_http {
                return Err(fail(format!(
                    "the endpoint {endpoint} is plain HTTP: set AWS_ALLOW_HTTP=true to allow it"
                )));
            }
            config = config.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket,
            prefix: prefix.trim_matches('/').to_string(),
            sse,
            unsigned_payload: flag(AmazonS3ConfigKey::UnsignedPayload),
        })
    }

    fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// HeadObject of a full key; `None` when there is no object.
    async fn head(&self, key: &str) -> Result<Option<RemoteObject>, NativeError> {
        let out = match self
            .client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
        {
            Ok(out) => out,
            Err(e) if status(&e) == Some(404) => return Ok(None),
            Err(e) => return Err(request_error("HeadObject", &self.url(key), &e)),
        };
        Ok(Some(RemoteObject {
            etag: normalize_etag(out.e_tag().unwrap_or_default()),
            size: out
                .content_length()
                .and_then(|n| u64::try_from(n).ok())
                .unwrap_or(0),
            blake3: out
                .metadata()
                .and_then(|m| m.get(S3_BLAKE3_METADATA))
                .cloned(),
            blocks: Vec::new(),
        }))
    }

    fn url(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.bucket)
    }

    async fn put(
        &self,
        key: &str,
        req: &WriteRequest<'_>,
        body: Bytes,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        let n = body.len() as u64;
        let put = self
            .client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .metadata(S3_BLAKE3_METADATA, req.blake3)
            .set_server_side_encryption(self.sse.kind.clone())
            .set_ssekms_key_id(self.sse.kms_key_id.clone())
            .set_bucket_key_enabled(self.sse.bucket_key_enabled)
            .body(ByteStream::from(body));
        let sent = if self.unsigned_payload {
            put.customize().disable_payload_signing().send().await
        } else {
            put.send().await
        };
        let out = sent.map_err(|e| request_error("PutObject", &self.url(key), &e))?;
        observer.sent(n);
        Ok(normalize_etag(out.e_tag().unwrap_or_default()))
    }

    /// Uploads and copies every part, then completes; the caller aborts on error.
    async fn upload_parts(
        &self,
        key: &str,
        upload_id: &str,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        // By index: a closure taking `&Part` trips async_trait's higher-ranked lifetimes.
        let parts: Vec<CompletedPart> = futures::stream::iter(0..req.parts.len())
            .map(|i| {
                let number = i32::try_from(i + 1).unwrap_or(i32::MAX);
                self.upload_part(key, upload_id, number, &req.parts[i], req, source, observer)
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        check_before_commit(observer, &self.url(key))?;
        if let Some(base) = req.base_etag {
            // Again right before the complete: servers that ignore the copy and complete
            // conditions (moto) would otherwise mix two versions of a changed object.
            let current = self.head(key).await?;
            if current.as_ref().map(|o| o.etag.as_str()) != Some(base) {
                return Err(NativeError::Changed {
                    url: self.url(key),
                    expected: base.to_string(),
                });
            }
        }
        let mut complete = self
            .client
            .complete_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            );
        if let Some(base) = req.base_etag {
            // Where the server supports it, a write that lost a race fails rather than
            // replacing the newer object.
            complete = complete.if_match(quoted(base));
        }
        let out = complete
            .send()
            .await
            .map_err(|e| self.changed_or("CompleteMultipartUpload", key, req, &e))?;
        Ok(normalize_etag(out.e_tag().unwrap_or_default()))
    }

    #[allow(clippy::too_many_arguments)]
    async fn upload_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        part: &Part,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<CompletedPart, NativeError> {
        let etag = match part {
            Part::Keep { old, .. } => {
                // Validation guarantees a base etag for every Keep part.
                let base = req.base_etag.unwrap_or_default();
                let out = self
                    .client
                    .upload_part_copy()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .copy_source(copy_source(&self.bucket, key))
                    .copy_source_range(format!("bytes={}-{}", old.start, old.end - 1))
                    .copy_source_if_match(quoted(base))
                    .send()
                    .await
                    .map_err(|e| self.changed_or("UploadPartCopy", key, req, &e))?;
                out.copy_part_result()
                    .and_then(|r| r.e_tag())
                    .unwrap_or_default()
                    .to_string()
            }
            Part::Send { new, .. } => {
                let body = self.read(source, key, new.clone()).await?;
                let n = body.len() as u64;
                let upload = self
                    .client
                    .upload_part()
                    .bucket(&self.bucket)
                    .key(key)
                    .upload_id(upload_id)
                    .part_number(number)
                    .body(ByteStream::from(body));
                let sent = if self.unsigned_payload {
                    upload.customize().disable_payload_signing().send().await
                } else {
                    upload.send().await
                };
                let out = sent.map_err(|e| request_error("UploadPart", &self.url(key), &e))?;
                observer.sent(n);
                out.e_tag().unwrap_or_default().to_string()
            }
        };
        tracing::debug!(key, part = number, kind = part_kind(part), "part stored");
        Ok(CompletedPart::builder()
            .part_number(number)
            .e_tag(etag)
            .build())
    }

    /// Reads a range of the source, insisting on all of it.
    async fn read(
        &self,
        source: &dyn PartSource,
        key: &str,
        range: Range<u64>,
    ) -> Result<Bytes, NativeError> {
        let want = range.end - range.start;
        let source_error = |source| NativeError::Source {
            url: self.url(key),
            source,
        };
        let bytes = source.read(range.clone()).await.map_err(source_error)?;
        if bytes.len() as u64 != want {
            return Err(source_error(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "bytes {}..{}: got {} bytes, expected {want}",
                    range.start,
                    range.end,
                    bytes.len()
                ),
            )));
        }
        Ok(bytes)
    }

    /// `Changed` when the object is no longer the planned version (412 on a pinned copy or
    /// a conditional complete, or the copy source is gone); else a request error.
    fn changed_or<E: ProvideErrorMetadata + std::error::Error + 'static>(
        &self,
        op: &str,
        key: &str,
        req: &WriteRequest<'_>,
        err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> NativeError {
        if let Some(expected) = req.base_etag {
            let status = status(err);
            let gone = err.code() == Some("NoSuchKey")
                || (op == "UploadPartCopy"
                    && status == Some(404)
                    && err.code() != Some("NoSuchUpload"));
            if status == Some(412) || gone {
                tracing::info!(key, op, ?status, "object changed since planning");
                return NativeError::Changed {
                    url: self.url(key),
                    expected: expected.to_string(),
                };
            }
        }
        request_error(op, &self.url(key), err)
    }

    async fn abort_upload(&self, key: &str, upload_id: &str) -> Result<(), NativeError> {
        match self
            .client
            .abort_multipart_upload()
            .bucket(&self.bucket)
            .key(key)
            .upload_id(upload_id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("NoSuchUpload") || status(&e) == Some(404) => Ok(()),
            Err(e) => Err(request_error("AbortMultipartUpload", &self.url(key), &e)),
        }
    }
}

#[async_trait]
impl DeltaStore for S3Delta {
    fn limits(&self) -> Limits {
        Limits::S3
    }

    async fn probe(&self, key: &str) -> Result<Option<RemoteObject>, NativeError> {
        self.head(&self.full_key(key)).await
    }

    async fn write(
        &self,
        req: &WriteRequest<'_>,
        source: &dyn PartSource,
        observer: &dyn WriteObserver,
    ) -> Result<String, NativeError> {
        let key = self.full_key(req.key);
        req.check(&Limits::S3)
            .map_err(|problem| NativeError::Request {
                url: self.url(&key),
                message: format!("refusing the write plan: {problem}"),
            })?;
        let before_commit = || check_before_commit(observer, &self.url(&key));
        match req.parts {
            [] => {
                before_commit()?;
                return self.put(&key, req, Bytes::new(), observer).await;
            }
            [Part::Send { new, .. }] => {
                let body = self.read(source, &key, new.clone()).await?;
                before_commit()?;
                return self.put(&key, req, body, observer).await;
            }
            _ => {}
        }
        if let Some(base) = req.base_etag {
            // The copies and the complete are pinned to `base` server-side (on AWS); this
            // check also catches a change on servers that ignore those conditions (moto),
            // and before an upload is created.
            let current = self.probe(req.key).await?;
            if current.as_ref().map(|o| o.etag.as_str()) != Some(base) {
                tracing::info!(key, "object changed since planning");
                return Err(NativeError::Changed {
                    url: self.url(&key),
                    expected: base.to_string(),
                });
            }
        }

        let created = self
            .client
            .create_multipart_upload()
            .bucket(&self.bucket)
            .key(&key)
            .metadata(S3_BLAKE3_METADATA, req.blake3)
            .set_server_side_encryption(self.sse.kind.clone())
            .set_ssekms_key_id(self.sse.kms_key_id.clone())
            .set_bucket_key_enabled(self.sse.bucket_key_enabled)
            .send()
            .await
            .map_err(|e| request_error("CreateMultipartUpload", &self.url(&key), &e))?;
        let Some(upload_id) = created.upload_id().map(str::to_string) else {
            return Err(NativeError::Request {
                url: self.url(&key),
                message: "CreateMultipartUpload returned no upload id".into(),
            });
        };
        observer.started(req.key, &upload_id);
        tracing::debug!(
            key,
            upload_id,
            parts = req.parts.len(),
            "multipart upload started"
        );

        let result = self
            .upload_parts(&key, &upload_id, req, source, observer)
            .await;
        if result.is_err() {
            if let Err(e) = self.abort_upload(&key, &upload_id).await {
                tracing::warn!(key, upload_id, error = %e, "could not abort the multipart upload");
            }
        }
        result
    }

    async fn unfinished_uploads(
        &self,
        key: &str,
    ) -> Result<Vec<(String, std::time::SystemTime)>, NativeError> {
        let key = self.full_key(key);
        let mut found = Vec::new();
        let (mut key_marker, mut id_marker) = (None::<String>, None::<String>);
        // Pages of 1,000; a bounded number of them (a key with more unfinished uploads than
        // that has a bigger problem than this cleanup).
        for _ in 0..100 {
            let page = self
                .client
                .list_multipart_uploads()
                .bucket(&self.bucket)
                .prefix(&key)
                .set_key_marker(key_marker.take())
                .set_upload_id_marker(id_marker.take())
                .send()
                .await
                .map_err(|e| request_error("ListMultipartUploads", &self.url(&key), &e))?;
            found.extend(
                page.uploads()
                    .iter()
                    .filter(|u| u.key() == Some(key.as_str()))
                    .filter_map(|u| {
                        let id = u.upload_id()?.to_string();
                        // No start time: treat it as just started (never stale).
                        let started = match u.initiated() {
                            Some(t) => {
                                std::time::UNIX_EPOCH
                                    + std::time::Duration::from_secs(t.secs().max(0) as u64)
                            }
                            None => std::time::SystemTime::now(),
                        };
                        Some((id, started))
                    }),
            );
            if page.is_truncated() != Some(true) {
                break;
            }
            key_marker = page.next_key_marker().map(str::to_string);
            id_marker = page.next_upload_id_marker().map(str::to_string);
            if key_marker.is_none() && id_marker.is_none() {
                break;
            }
        }
        Ok(found)
    }

    async fn abort(&self, key: &str, upload_id: &str) -> Result<(), NativeError> {
        self.abort_upload(&self.full_key(key), upload_id).await
    }
}

/// object_store's credential provider, as the SDK's. object_store caches and refreshes the
/// credentials, so the SDK's own identity cache is switched off.
#[derive(Debug)]
struct ObjectStoreCredentials(AwsCredentialProvider);

impl ProvideCredentials for ObjectStoreCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let c = self
                .0
                .get_credential()
                .await
                .map_err(CredentialsError::provider_error)?;
            Ok(Credentials::new(
                c.key_id.clone(),
                c.secret_key.clone(),
                c.token.clone(),
                None,
                "object_store",
            ))
        })
    }
}

/// The SDK endpoint for object_store's: with virtual-hosted requests object_store expects the
/// bucket in the endpoint's host, while the SDK adds it itself.
fn sdk_endpoint(endpoint: &str, bucket: &str, virtual_hosted: bool) -> Result<String, String> {
    let mut url =
        url::Url::parse(endpoint).map_err(|e| format!("invalid endpoint {endpoint:?}: {e}"))?;
    if virtual_hosted {
        if let Some(host) = url
            .host_str()
            .and_then(|h| h.strip_prefix(&format!("{bucket}.")))
            .map(str::to_string)
        {
            url.set_host(Some(&host))
                .map_err(|e| format!("invalid endpoint {endpoint:?}: {e}"))?;
        }
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn encryption(builder: &AmazonS3Builder) -> Result<Encryption, String> {
    // object_store does not export its encryption key type; its config names reach it.
    let get = |name: &str| {
        name.parse::<AmazonS3ConfigKey>()
            .ok()
            .and_then(|key| builder.get_config_value(&key))
    };
    let kind = match get("aws_server_side_encryption").as_deref() {
        None => None,
        Some(kind @ ("AES256" | "aws:kms" | "aws:kms:dsse")) => {
            Some(ServerSideEncryption::from(kind))
        }
        Some(other) => {
            return Err(format!(
                "server-side encryption {other:?} is not supported for native writes (AES256, aws:kms and aws:kms:dsse are)"
            ))
        }
    };
    Ok(Encryption {
        kind,
        kms_key_id: get("aws_sse_kms_key_id"),
        bucket_key_enabled: get("aws_sse_bucket_key_enabled").map(|v| parse_bool(&v)),
    })
}

fn parse_bool(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "on"
    )
}

/// `x-amz-copy-source`: the bucket and the URL-encoded key.
fn copy_source(bucket: &str, key: &str) -> String {
    const KEY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'/')
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    format!(
        "{bucket}/{}",
        percent_encoding::utf8_percent_encode(key, KEY)
    )
}

fn quoted(etag: &str) -> String {
    format!("\"{etag}\"")
}

fn part_kind(part: &Part) -> &'static str {
    match part {
        Part::Keep { .. } => "copy",
        Part::Send { .. } => "upload",
    }
}

fn status<E>(err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>) -> Option<u16> {
    err.raw_response().map(|r| r.status().as_u16())
}

/// A one-line error naming the operation, the HTTP status and the service's code and
/// message, and for credential problems the fix. Credentials never appear in SDK errors.
fn request_error<E: ProvideErrorMetadata + std::error::Error + 'static>(
    op: &str,
    url: &str,
    err: &SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
) -> NativeError {
    let mut message = match (status(err), err.code()) {
        (Some(status), code) => {
            let mut m = format!("{op} failed: HTTP {status}");
            if let Some(code) = code {
                m.push_str(&format!(" {code}"));
            }
            if let Some(text) = err.message() {
                m.push_str(&format!(": {text}"));
            }
            m
        }
        (None, _) => format!("{op} failed: {}", error_chain(err)),
    };
    message = message.replace(['\n', '\r'], " ");
    let credentials = status(err) == Some(403)
        || matches!(
            err.code(),
            Some("InvalidAccessKeyId" | "SignatureDoesNotMatch" | "ExpiredToken" | "InvalidToken")
        )
        || message.contains("credentials");
    if credentials {
        message.push_str(
            " (check the credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, plus AWS_SESSION_TOKEN for temporary keys, or give the role s3:PutObject and s3:GetObject on the bucket)",
        );
    } else if matches!(
        err,
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_)
    ) {
        message.push_str(" (is the endpoint reachable? AWS_ENDPOINT sets it for a non-AWS server)");
    }
    NativeError::Request {
        url: url.to_string(),
        message,
    }
}

/// An error and its causes, `: `-separated (the SDK's own rendering adds a `Debug` dump).
fn error_chain(err: &(dyn std::error::Error + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let text = cause.to_string();
        if !out.ends_with(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = cause.source();
    }
    out
}

fn first_line(s: &str) -> String {
    s.lines().next().unwrap_or_default().trim().to_string()
}

/// The native store for `s3://bucket/prefix`, for [`super::open`].
pub(super) fn open(bucket: &str, prefix: &str) -> Result<Arc<dyn DeltaStore>, NativeError> {
    Ok(Arc::new(S3Delta::from_env(bucket, prefix)?))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const HASH: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

    fn send(r: Range<u64>) -> Part {
        Part::Send {
            block: [0; 32],
            new: r,
        }
    }

    fn keep(r: Range<u64>) -> Part {
        Part::Keep {
            block: [0; 32],
            old: r,
        }
    }

    fn check(parts: &[Part], base: Option<&str>) -> Result<(), String> {
        let size = parts
            .iter()
            .map(|p| match p {
                Part::Keep { old: r, .. } | Part::Send { new: r, .. } => {
                    r.end.saturating_sub(r.start)
                }
            })
            .fold(0u64, u64::saturating_add);
        let req = WriteRequest {
            key: "ckpt/model.bin",
            parts,
            size,
            base_etag: base,
            blake3: HASH,
        };
        req.check(&Limits::S3)
    }

    #[test]
    fn accepts_a_valid_plan() {
        let parts = [
            keep(0..6 * MIB),
            send(6 * MIB..11 * MIB),
            keep(11 * MIB..12 * MIB),
        ];
        assert_eq!(check(&parts, Some("abc")), Ok(()));
        assert_eq!(check(&[send(0..3)], None), Ok(()));
        assert_eq!(check(&[], None), Ok(()));
    }

    #[test]
    fn refuses_small_parts_but_the_last() {
        let err = check(&[send(0..MIB), send(MIB..7 * MIB)], None).unwrap_err();
        assert!(err.contains("part 1 of 2"), "{err}");
        assert!(err.contains("at least 5242880"), "{err}");
    }

    #[test]
    fn refuses_parts_over_5_gib() {
        let err = check(&[send(0..(5 << 30) + 1)], None).unwrap_err();
        assert!(err.contains("more than"), "{err}");
    }

    #[test]
    fn refuses_too_many_parts() {
        let parts: Vec<Part> = (0..10_001u64)
            .map(|i| send(i * 5 * MIB..(i + 1) * 5 * MIB))
            .collect();
        let err = check(&parts, None).unwrap_err();
        assert!(err.contains("10001 parts"), "{err}");
    }

    #[test]
    fn refuses_keep_without_base_etag() {
        let err = check(&[keep(0..6 * MIB), send(0..1)], None).unwrap_err();
        assert!(err.contains("no base etag"), "{err}");
    }

    #[test]
    fn refuses_bad_ranges_without_panicking() {
        #[allow(clippy::reversed_empty_ranges)]
        let reversed = send(10..5);
        assert!(check(&[reversed], None).unwrap_err().contains("reversed"));
        assert!(check(&[send(5..5)], None).unwrap_err().contains("empty"));
        let huge = [send(0..u64::MAX), send(0..u64::MAX)];
        assert!(check(&huge, None).is_err());
    }

    #[test]
    fn refuses_a_size_that_does_not_match() {
        let parts = [send(0..10)];
        let req = WriteRequest {
            key: "k",
            parts: &parts,
            size: 11,
            base_etag: None,
            blake3: HASH,
        };
        let err = req.check(&Limits::S3).unwrap_err();
        assert!(err.contains("add up to 10 bytes"), "{err}");
    }

    #[test]
    fn refuses_header_unsafe_values() {
        let parts = [send(0..10)];
        let mut req = WriteRequest {
            key: "k",
            parts: &parts,
            size: 10,
            base_etag: None,
            blake3: "not hex\n",
        };
        assert!(req.check(&Limits::S3).is_err());
        req.blake3 = HASH;
        req.base_etag = Some("\"quoted\"");
        assert!(req.check(&Limits::S3).is_err());
    }

    #[test]
    fn copy_source_encodes_the_key() {
        assert_eq!(copy_source("b", "a/b c+d.bin"), "b/a/b%20c%2Bd.bin");
    }

    #[test]
    fn virtual_hosted_endpoint_loses_the_bucket() {
        assert_eq!(
            sdk_endpoint("https://bkt.s3.example.com", "bkt", true).unwrap(),
            "https://s3.example.com"
        );
        assert_eq!(
            sdk_endpoint("http://127.0.0.1:5000/", "bkt", false).unwrap(),
            "http://127.0.0.1:5000"
        );
        assert!(sdk_endpoint("not a url", "bkt", false).is_err());
    }
}
