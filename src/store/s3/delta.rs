//! The S3 `DeltaStore`: a multipart upload whose parts are `UploadPartCopy` of byte ranges
//! of the current object (pinned by `x-amz-copy-source-if-match`) and `UploadPart` of new
//! bytes, made visible at once by `CompleteMultipartUpload` (the calls: `write.rs`).
//!
//! The client is `aws-sdk-s3` configured by hand, made from the backend's [`S3Settings`]:
//! endpoint, region, addressing style, timeouts and the credential provider (explicit keys or
//! the AWS CLI's chain, `super::credentials`) are those of the `object_store` client, and its retries are the store's [`RetryPolicy`], so native writes
//! and ferry's data plane read exactly the same environment.

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
use aws_sdk_s3::types::ServerSideEncryption;
use aws_sdk_s3::Client;
use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};
use object_store::ClientConfigKey;

use super::write::request_error;
use super::S3Settings;
use crate::store::delta::{
    check_before_commit, DeltaStore, Limits, NativeError, Part, PartSource, RemoteObject,
    WriteObserver, WriteRequest, S3_BLAKE3_METADATA,
};
use crate::store::options::{RetryPolicy, StoreOptions, Timeouts};

/// Writes objects below `s3://bucket/prefix` from kept and sent parts.
#[derive(Debug, Clone)]
pub struct S3Delta {
    pub(super) client: Client,
    pub(super) bucket: String,
    /// Key prefix, without surrounding slashes; may be empty.
    pub(super) prefix: String,
    pub(super) sse: Encryption,
    /// `AWS_UNSIGNED_PAYLOAD`: skip SigV4's SHA-256 of part bodies (TLS still protects them).
    pub(super) unsigned_payload: bool,
}

/// Server-side encryption requested through `AWS_SERVER_SIDE_ENCRYPTION` & co., applied to
/// every object this module creates, as `object_store` does.
#[derive(Debug, Clone, Default)]
pub(super) struct Encryption {
    pub(super) kind: Option<ServerSideEncryption>,
    pub(super) kms_key_id: Option<String>,
    pub(super) bucket_key_enabled: Option<bool>,
}

/// S3 settings the native client cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The store URL names no bucket.
    #[error("native S3 writes need a bucket name")]
    NoBucket,
    /// `AWS_SKIP_SIGNATURE` is set.
    #[error("AWS_SKIP_SIGNATURE is set, but native S3 writes need credentials")]
    SkipSignature,
    /// The bucket is an S3 Express One Zone bucket.
    #[error("S3 Express One Zone buckets are not supported for native writes")]
    Express,
    /// An `AWS_SERVER_SIDE_ENCRYPTION` kind the native client cannot send.
    #[error("server-side encryption {kind:?} is not supported for native writes (AES256, aws:kms and aws:kms:dsse are)")]
    Encryption {
        /// The kind as set.
        kind: String,
    },
    /// The endpoint is no valid URL.
    #[error("invalid endpoint {endpoint:?}: {problem}")]
    Endpoint {
        /// The endpoint as set.
        endpoint: String,
        /// Why it does not parse.
        problem: String,
    },
    /// A duration setting that does not parse.
    #[error("invalid {key} {value:?}: {problem}")]
    Duration {
        /// The variable.
        key: String,
        /// Its value.
        value: String,
        /// Why it does not parse.
        problem: String,
    },
    /// A plain-HTTP endpoint without `AWS_ALLOW_HTTP=true`.
    #[error("the endpoint {endpoint} is plain HTTP: set AWS_ALLOW_HTTP=true to allow it")]
    PlainHttp {
        /// The endpoint as set.
        endpoint: String,
    },
}

impl S3Delta {
    /// The native client for the settings' bucket and prefix, signing with `credentials`
    /// (the `object_store` client's provider). Makes no request.
    pub fn new(
        settings: &S3Settings,
        credentials: AwsCredentialProvider,
    ) -> Result<Self, NativeError> {
        let bucket = settings.get(AmazonS3ConfigKey::Bucket).unwrap_or_default();
        Self::configure(settings, credentials).map_err(|e| {
            NativeError::Config(format!(
                "cannot open s3://{bucket}/{}: {e}",
                settings.prefix
            ))
        })
    }

    /// The store for the builder's bucket (which must be set) below `prefix`, with the
    /// builder's endpoint, region, addressing style, timeouts, encryption and credential
    /// provider, and `AWS_UNSIGNED_PAYLOAD`; `retry` bounds the SDK's retries. Makes no
    /// request.
    pub fn from_builder(
        builder: AmazonS3Builder,
        prefix: &str,
        retry: &RetryPolicy,
    ) -> Result<Self, NativeError> {
        let options = StoreOptions {
            retry: *retry,
            ..StoreOptions::default()
        };
        let settings = S3Settings::from_builder(builder, prefix, &options);
        let (_, credentials) = settings
            .client()
            .map_err(|e| NativeError::Config(e.to_string()))?;
        Self::new(&settings, credentials)
    }

    fn configure(
        settings: &S3Settings,
        credentials: AwsCredentialProvider,
    ) -> Result<Self, SettingsError> {
        let get = |key: AmazonS3ConfigKey| settings.get(key);
        let flag = |key: AmazonS3ConfigKey| get(key).is_some_and(|v| parse_bool(&v));
        let bucket = get(AmazonS3ConfigKey::Bucket).ok_or(SettingsError::NoBucket)?;
        if flag(AmazonS3ConfigKey::SkipSignature) {
            return Err(SettingsError::SkipSignature);
        }
        if flag(AmazonS3ConfigKey::S3Express) {
            return Err(SettingsError::Express);
        }
        let sse = encryption(&settings.builder)?;
        let region = get(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".into());
        let virtual_hosted = flag(AmazonS3ConfigKey::VirtualHostedStyleRequest);
        let allow_http = flag(AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp));
        let endpoint = get(AmazonS3ConfigKey::S3Endpoint).or(get(AmazonS3ConfigKey::Endpoint));
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region))
            // The object_store client's provider (explicit keys, or the AWS CLI's chain); it
            // caches and refreshes on its own.
            .credentials_provider(ObjectStoreCredentials(credentials))
            .identity_cache(IdentityCache::no_cache())
            .force_path_style(!virtual_hosted)
            .retry_config(sdk_retry(&settings.options.retry))
            .timeout_config(timeouts(settings)?)
            // SigV4 hashes the payload (unless AWS_UNSIGNED_PAYLOAD) and the whole file
            // carries its BLAKE3; no CRC trailers, which some S3 servers do not take.
            .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
            .response_checksum_validation(ResponseChecksumValidation::WhenRequired);
        if let Some(endpoint) = endpoint {
            let endpoint = sdk_endpoint(&endpoint, &bucket, virtual_hosted)?;
            if endpoint.starts_with("http://") && !allow_http {
                return Err(SettingsError::PlainHttp { endpoint });
            }
            config = config.endpoint_url(endpoint);
        }
        Ok(Self {
            client: Client::from_conf(config.build()),
            bucket,
            prefix: settings.prefix.clone(),
            sse,
            unsigned_payload: flag(AmazonS3ConfigKey::UnsignedPayload),
        })
    }

    pub(super) fn full_key(&self, key: &str) -> String {
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    pub(super) fn url(&self, full_key: &str) -> String {
        format!("s3://{}/{full_key}", self.bucket)
    }
}

/// The SDK's standard retries with the store's numbers: attempts = retries + 1, the same
/// initial and largest backoff.
fn sdk_retry(retry: &RetryPolicy) -> RetryConfig {
    RetryConfig::standard()
        .with_max_attempts(u32::try_from(retry.max_retries + 1).unwrap_or(u32::MAX))
        .with_initial_backoff(retry.init_backoff)
        .with_max_backoff(retry.max_backoff)
}

/// The same knobs and defaults as the data plane: a server that accepts and never answers
/// fails the attempt at the read timeout, and the attempt is retried.
fn timeouts(settings: &S3Settings) -> Result<TimeoutConfig, SettingsError> {
    let duration = |key: ClientConfigKey, default: Duration| match settings
        .get(AmazonS3ConfigKey::Client(key))
    {
        Some(v) => humantime::parse_duration(&v).map_err(|e| SettingsError::Duration {
            key: key.as_ref().to_string(),
            value: v.clone(),
            problem: e.to_string(),
        }),
        None => Ok(default),
    };
    let d = Timeouts::default();
    Ok(TimeoutConfig::builder()
        .connect_timeout(duration(ClientConfigKey::ConnectTimeout, d.connect)?)
        .read_timeout(duration(ClientConfigKey::ReadTimeout, d.read)?)
        .operation_attempt_timeout(duration(ClientConfigKey::Timeout, d.request)?)
        .build())
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
            .map_err(|problem| NativeError::refused(self.url(&key), &problem))?;
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
                status: None,
                transience: crate::error::Transience::Permanent,
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
pub(super) fn sdk_endpoint(
    endpoint: &str,
    bucket: &str,
    virtual_hosted: bool,
) -> Result<String, SettingsError> {
    let invalid = |e: url::ParseError| SettingsError::Endpoint {
        endpoint: endpoint.to_string(),
        problem: e.to_string(),
    };
    let mut url = url::Url::parse(endpoint).map_err(invalid)?;
    if virtual_hosted {
        if let Some(host) = url
            .host_str()
            .and_then(|h| h.strip_prefix(&format!("{bucket}.")))
            .map(str::to_string)
        {
            url.set_host(Some(&host)).map_err(invalid)?;
        }
    }
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn encryption(builder: &AmazonS3Builder) -> Result<Encryption, SettingsError> {
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
            return Err(SettingsError::Encryption {
                kind: other.to_string(),
            })
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
