//! The S3 backend: its settings (`AmazonS3Builder::from_env()` plus ferry's retry policy and
//! timeouts, built once), the `object_store` client made from them, and the native
//! [`S3Delta`] made from the same settings and the same credential provider: explicit keys
//! from the environment, or else the AWS CLI's credential chain ([`credentials`]).

mod credentials;
mod delta;
#[cfg(test)]
mod tests;
mod write;

use std::sync::Arc;

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};
use object_store::ObjectStore;

pub(crate) use self::credentials::chain_failure;
use self::credentials::{AwsChain, ChainEnv};
pub use self::delta::{S3Delta, SettingsError};
use super::delta::{DeltaStore, NativeError};
use super::error::{is_connect_error, is_timeout, summarize};
use super::options::{StoreOptions, DEFAULT_TIMEOUTS};
use super::{Backend, OpenDelta, Store, StoreError, StoreUrl};
use crate::error::first_line;

/// Everything both S3 clients are made from: one `AmazonS3Builder` read from the environment
/// (endpoint, region, addressing style, allow-http, timeouts, SSE, credentials), with the
/// bucket, ferry's retry policy and default timeouts applied.
#[derive(Debug, Clone)]
pub struct S3Settings {
    builder: AmazonS3Builder,
    prefix: String,
    options: StoreOptions,
}

impl S3Settings {
    /// The settings for `s3://bucket/prefix` from the `AWS_*` variables: with
    /// `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY` (or `AWS_SKIP_SIGNATURE`) as
    /// object_store reads them, otherwise with the AWS CLI's credential chain, the region
    /// falling back to the profile's. Makes no request.
    pub fn from_env(bucket: &str, prefix: &str, options: &StoreOptions) -> Result<Self, S3Error> {
        let chain_env = ChainEnv::from_env();
        check_aws_credentials(&chain_env)?;
        let mut builder = AmazonS3Builder::from_env().with_bucket_name(bucket);
        for (key, value) in options.timeouts.unset_in_env("AWS_") {
            builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
        }
        if !has_explicit_credentials() {
            if builder
                .get_config_value(&AmazonS3ConfigKey::Region)
                .is_none()
            {
                if let Some(region) = chain_env.profile_region() {
                    builder = builder.with_region(region);
                }
            }
            let region = builder
                .get_config_value(&AmazonS3ConfigKey::Region)
                .unwrap_or_else(|| "us-east-1".into());
            builder = builder.with_credentials(AwsChain::shared(region, chain_env));
        }
        Ok(Self::from_builder(builder, prefix, options))
    }

    /// From a builder that names the bucket (tests: an explicit configuration), with
    /// `options`' retry policy.
    pub fn from_builder(builder: AmazonS3Builder, prefix: &str, options: &StoreOptions) -> Self {
        Self {
            builder: builder.with_retry(options.retry.object_store()),
            prefix: prefix.trim_matches('/').to_string(),
            options: options.clone(),
        }
    }

    pub(crate) fn get(&self, key: AmazonS3ConfigKey) -> Option<String> {
        self.builder.get_config_value(&key)
    }

    /// Where requests go.
    pub fn endpoint(&self) -> String {
        self.get(AmazonS3ConfigKey::Endpoint).unwrap_or_else(|| {
            let region = self
                .get(AmazonS3ConfigKey::Region)
                .unwrap_or_else(|| "us-east-1".into());
            format!("https://s3.{region}.amazonaws.com")
        })
    }

    /// The `object_store` client and its credential provider (which the native client
    /// shares).
    pub fn client(&self) -> Result<(object_store::aws::AmazonS3, AwsCredentialProvider), S3Error> {
        let s3 = self.builder.clone().build().map_err(|e| S3Error::Build {
            reason: first_line(&e.to_string()).to_string(),
        })?;
        let credentials = s3.credentials().clone();
        Ok((s3, credentials))
    }
}

/// Why S3 settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// Only one of the key id and the secret is set.
    #[error("AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY must be set together")]
    HalfAKey,
    /// No credentials were found anywhere the credential chain looks.
    #[error("{NO_AWS_CREDENTIALS}: {AWS_CREDENTIALS_FIX}")]
    NoCredentials,
    /// object_store's S3 client could not be built.
    #[error("{reason}")]
    Build {
        /// Why, in one line.
        reason: String,
    },
}

/// What `Store::open_with` keeps to make the native client when it is asked for.
struct S3Native {
    settings: S3Settings,
    credentials: AwsCredentialProvider,
}

impl OpenDelta for S3Native {
    fn open_delta(&self) -> Result<Arc<dyn DeltaStore>, NativeError> {
        Ok(Arc::new(S3Delta::new(
            &self.settings,
            self.credentials.clone(),
        )?))
    }
}

/// Opens `s3://bucket/prefix`.
pub(crate) fn open(
    url: &StoreUrl,
    bucket: &str,
    prefix: &str,
    options: &StoreOptions,
) -> Result<Backend, StoreError> {
    let settings = S3Settings::from_env(bucket, prefix, options).map_err(|e| open_error(url, e))?;
    backend(url, settings)
}

fn open_error(url: &StoreUrl, e: S3Error) -> StoreError {
    StoreError::Open {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

fn backend(url: &StoreUrl, settings: S3Settings) -> Result<Backend, StoreError> {
    let (s3, credentials) = settings.client().map_err(|e| open_error(url, e))?;
    let inner: Arc<dyn ObjectStore> = Arc::new(s3);
    Ok(Backend {
        inner: super::prefixed(inner, &settings.prefix),
        endpoint: Some(settings.endpoint()),
        delta: Some(Arc::new(S3Native {
            settings,
            credentials,
        })),
    })
}

impl S3Settings {
    /// The store on these settings: for an explicit configuration (tests) instead of the
    /// environment's. Makes no request.
    pub fn into_store(self) -> Result<Store, StoreError> {
        let url = StoreUrl::S3 {
            bucket: self.get(AmazonS3ConfigKey::Bucket).unwrap_or_default(),
            prefix: self.prefix.clone(),
        };
        let options = self.options.clone();
        Ok(Store::assemble(&url, backend(&url, self)?, &options))
    }
}

/// True when the keys (or `AWS_SKIP_SIGNATURE`) are in the environment: object_store's own
/// `from_env` path, which wins over the credential chain.
fn has_explicit_credentials() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    (set("AWS_ACCESS_KEY_ID") && set("AWS_SECRET_ACCESS_KEY")) || set("AWS_SKIP_SIGNATURE")
}

/// True when the environment names a source of AWS credentials other than the instance
/// metadata service.
fn has_aws_credential_source(chain: &ChainEnv) -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    has_explicit_credentials()
        || set("AWS_WEB_IDENTITY_TOKEN_FILE")
        || set("AWS_CONTAINER_CREDENTIALS_RELATIVE_URI")
        || set("AWS_CONTAINER_CREDENTIALS_FULL_URI")
        || chain.has_profile()
}

/// True when `e` is a failure to fetch credentials while the environment names none (the
/// credential chain's own failures already say so).
pub(crate) fn lacks_aws_credentials(e: &object_store::Error) -> bool {
    chain_failure(e).is_none()
        && !has_aws_credential_source(&ChainEnv::from_env())
        && is_credential_error(&summarize(e))
}

/// What to set when no AWS credentials were found.
pub(crate) const NO_AWS_CREDENTIALS: &str = "no AWS credentials found";
/// How to give ferry AWS credentials.
pub(crate) const AWS_CREDENTIALS_FIX: &str = "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (and AWS_SESSION_TOKEN for temporary keys), or name a profile of ~/.aws/config with AWS_PROFILE (AWS_CONFIG_FILE and AWS_SHARED_CREDENTIALS_FILE move the files; `aws sso login` first for SSO), or AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN; set AWS_ENDPOINT for a non-AWS server";

/// Refuses to go on without credentials when the instance metadata service is switched off
/// and nothing else could provide them, rather than failing later with an opaque signing
/// error.
fn check_aws_credentials(chain: &ChainEnv) -> Result<(), S3Error> {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    let imds_off =
        std::env::var("AWS_EC2_METADATA_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if set("AWS_ACCESS_KEY_ID") != set("AWS_SECRET_ACCESS_KEY") {
        return Err(S3Error::HalfAKey);
    }
    if !has_aws_credential_source(chain) && imds_off {
        return Err(S3Error::NoCredentials);
    }
    Ok(())
}

/// An error from fetching credentials (the instance metadata service or a token endpoint).
fn is_credential_error(summary: &str) -> bool {
    let metadata = std::env::var("AWS_METADATA_ENDPOINT")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| "169.254.169.254".into());
    let s = summary.to_ascii_lowercase();
    summary.contains(metadata.trim_start_matches("http://"))
        || s.contains("latest/api/token")
        || s.contains("credential")
}

/// What to do about an error on `bucket` whose requests go to `endpoint`.
pub(crate) fn hint(
    bucket: &str,
    endpoint: &str,
    err: &object_store::Error,
    summary: &str,
) -> Option<String> {
    use object_store::Error as E;
    let h = match err {
        // The credential chain's message already says what to do.
        _ if chain_failure(err).is_some() => return None,
        // Without credentials in the environment, the instance metadata service is asked;
        // off EC2 that fails with an answer that names no variable.
        _ if summary == NO_AWS_CREDENTIALS => AWS_CREDENTIALS_FIX.into(),
        _ if !has_aws_credential_source(&ChainEnv::from_env()) && is_credential_error(summary) => {
            format!("{NO_AWS_CREDENTIALS}: {AWS_CREDENTIALS_FIX}")
        }
        _ if summary.contains("NoSuchBucket") => {
            format!("bucket {bucket:?} does not exist: create it or fix the URL")
        }
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => {
            "access denied: check AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_REGION".into()
        }
        _ if is_timeout(summary) => format!(
            "{endpoint} did not answer in time, retries included: check that it is up and reachable, or raise AWS_READ_TIMEOUT (default {:?}), AWS_TIMEOUT ({:?}) or FERRY_RETRY_TIMEOUT_SECS",
            DEFAULT_TIMEOUTS.read, DEFAULT_TIMEOUTS.request
        ),
        _ if is_connect_error(summary) => {
            "cannot reach the S3 endpoint: check AWS_ENDPOINT and that the server runs".into()
        }
        _ => return None,
    };
    Some(h)
}
