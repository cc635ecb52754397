//! The Google Cloud Storage backend: its settings (`GoogleCloudStorageBuilder::from_env()`
//! plus ferry's retry policy and timeouts) and the `object_store` client made from them.
//! GCS has no native delta client: its compose joins whole objects only, so no part of an
//! object can be kept while the rest is replaced, and `mirror` writes changed files whole.
//!
//! Create-only writes (refs) are `ifGenerationMatch=0` preconditions
//! (`x-goog-if-generation-match: 0`), which GCS decides atomically.

#[cfg(test)]
mod tests;

use std::sync::Arc;

use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::ObjectStore;

use super::error::{is_connect_error, is_timeout};
use super::options::{StoreOptions, DEFAULT_TIMEOUTS};
use super::{Backend, Store, StoreError, StoreUrl};
use crate::error::first_line;

/// The endpoint when neither the settings nor the service-account file name another.
const DEFAULT_ENDPOINT: &str = "https://storage.googleapis.com";

/// How to give ferry Google credentials.
pub(crate) const GCS_CREDENTIALS_FIX: &str = "set GOOGLE_APPLICATION_CREDENTIALS (or GOOGLE_SERVICE_ACCOUNT) to a service-account JSON file, or GOOGLE_SERVICE_ACCOUNT_KEY to its contents; on GCE or GKE the metadata server's account is used (GCE_METADATA_HOST names another metadata server)";

/// The variables that name a source of Google credentials, as object_store reads them.
const CREDENTIAL_VARS: [&str; 8] = [
    "GOOGLE_APPLICATION_CREDENTIALS",
    "GOOGLE_SERVICE_ACCOUNT",
    "GOOGLE_SERVICE_ACCOUNT_PATH",
    "GOOGLE_SERVICE_ACCOUNT_KEY",
    "SERVICE_ACCOUNT",
    "GOOGLE_BEARER_TOKEN",
    "GOOGLE_SKIP_SIGNATURE",
    "GCE_METADATA_HOST",
];

/// Everything the GCS client is made from: one `GoogleCloudStorageBuilder` read from the
/// environment (credentials, endpoint in the service-account file, timeouts), with the
/// bucket, ferry's retry policy and default timeouts applied.
#[derive(Debug, Clone)]
pub struct GcsSettings {
    builder: GoogleCloudStorageBuilder,
    prefix: String,
    options: StoreOptions,
}

/// Why GCS settings cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum GcsError {
    /// No credentials anywhere object_store looks, and not on Google Cloud.
    #[error("no Google credentials found: {GCS_CREDENTIALS_FIX}")]
    NoCredentials,
    /// object_store's GCS client could not be built (an unreadable credentials file, …).
    #[error("{reason} ({GCS_CREDENTIALS_FIX})")]
    Build {
        /// Why, in one line.
        reason: String,
    },
}

impl GcsSettings {
    /// The settings for `gs://bucket/prefix` from the `GOOGLE_*` variables. Makes no request;
    /// refuses at once when no credentials are named and this is not a Google Cloud machine
    /// (whose metadata server object_store would otherwise retry for minutes).
    pub fn from_env(bucket: &str, prefix: &str, options: &StoreOptions) -> Result<Self, GcsError> {
        if !has_credential_source() && !on_google_cloud() {
            return Err(GcsError::NoCredentials);
        }
        let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
        for (key, value) in options.timeouts.unset_in_env("GOOGLE_") {
            builder = builder.with_config(GoogleConfigKey::Client(key), value);
        }
        Ok(Self::from_builder(builder, prefix, options))
    }

    /// From a builder that names the bucket (tests: an explicit configuration), with
    /// `options`' retry policy.
    pub fn from_builder(
        builder: GoogleCloudStorageBuilder,
        prefix: &str,
        options: &StoreOptions,
    ) -> Self {
        Self {
            builder: builder.with_retry(options.retry.object_store()),
            prefix: prefix.trim_matches('/').to_string(),
            options: options.clone(),
        }
    }

    /// Where requests go: the configured base URL, else the service account's
    /// `gcs_base_url` (emulators), else Google's endpoint.
    pub fn endpoint(&self) -> String {
        let get = |key| self.builder.get_config_value(&key);
        let from_account = || {
            let json = match get(GoogleConfigKey::ServiceAccount) {
                Some(path) => std::fs::read_to_string(path).ok()?,
                None => get(GoogleConfigKey::ServiceAccountKey)?,
            };
            let value: serde_json::Value = serde_json::from_str(&json).ok()?;
            value.get("gcs_base_url")?.as_str().map(str::to_string)
        };
        get(GoogleConfigKey::BaseUrl)
            .or_else(from_account)
            .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
    }

    /// The `object_store` client.
    pub fn client(&self) -> Result<object_store::gcp::GoogleCloudStorage, GcsError> {
        self.builder.clone().build().map_err(|e| GcsError::Build {
            reason: first_line(&e.to_string()).to_string(),
        })
    }

    /// The store on these settings: for an explicit configuration (tests) instead of the
    /// environment's. Makes no request.
    pub fn into_store(self) -> Result<Store, StoreError> {
        let url = StoreUrl::Gcs {
            bucket: self
                .builder
                .get_config_value(&GoogleConfigKey::Bucket)
                .unwrap_or_default(),
            prefix: self.prefix.clone(),
        };
        let options = self.options.clone();
        Ok(Store::assemble(&url, backend(&url, self)?, &options))
    }
}

/// True when the environment names a source of Google credentials, or gcloud's application
/// default credentials file exists (object_store reads it too).
fn has_credential_source() -> bool {
    let set = |k: &str| std::env::var_os(k).is_some_and(|v| !v.is_empty());
    CREDENTIAL_VARS.iter().any(|k| set(k))
        || std::env::var_os("HOME").is_some_and(|home| {
            std::path::Path::new(&home)
                .join(".config/gcloud/application_default_credentials.json")
                .is_file()
        })
}

/// True on a Google Cloud VM (GCE, GKE nodes), as Google's own client libraries tell: the
/// machine's product name says Google.
fn on_google_cloud() -> bool {
    std::fs::read_to_string("/sys/class/dmi/id/product_name")
        .is_ok_and(|name| name.trim_start().starts_with("Google"))
}

/// Opens `gs://bucket/prefix`.
pub(crate) fn open(
    url: &StoreUrl,
    bucket: &str,
    prefix: &str,
    options: &StoreOptions,
) -> Result<Backend, StoreError> {
    let settings =
        GcsSettings::from_env(bucket, prefix, options).map_err(|e| open_error(url, e))?;
    backend(url, settings)
}

fn open_error(url: &StoreUrl, e: GcsError) -> StoreError {
    StoreError::Open {
        url: url.to_string(),
        reason: e.to_string(),
    }
}

fn backend(url: &StoreUrl, settings: GcsSettings) -> Result<Backend, StoreError> {
    let gcs = settings.client().map_err(|e| open_error(url, e))?;
    let endpoint = settings.endpoint();
    let inner: Arc<dyn ObjectStore> = Arc::new(gcs);
    Ok(Backend {
        inner: super::prefixed(inner, &settings.prefix),
        endpoint: Some(endpoint),
        // No native delta: GCS compose joins whole objects only (see the module doc).
        delta: None,
    })
}

/// What to do about an error on `bucket` whose requests go to `endpoint`.
pub(crate) fn hint(
    bucket: &str,
    endpoint: &str,
    err: &object_store::Error,
    summary: &str,
) -> Option<String> {
    use object_store::Error as E;
    let lower = summary.to_ascii_lowercase();
    let h = match err {
        _ if lower.contains("metadata.google.internal")
            || lower.contains("169.254.169.254")
            || lower.contains("oauth2") =>
        {
            format!("cannot get Google credentials: {GCS_CREDENTIALS_FIX}")
        }
        _ if summary.contains("NoSuchBucket") || lower.contains("bucket does not exist") => {
            format!("bucket {bucket:?} does not exist: create it or fix the URL")
        }
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => format!(
            "access denied: check the account's roles on bucket {bucket:?} (storage.objectAdmin to write) and {GCS_CREDENTIALS_FIX}"
        ),
        _ if is_timeout(summary) => format!(
            "{endpoint} did not answer in time, retries included: check that it is up and reachable, or raise GOOGLE_READ_TIMEOUT (default {:?}), GOOGLE_TIMEOUT ({:?}) or FERRY_RETRY_TIMEOUT_SECS",
            DEFAULT_TIMEOUTS.read, DEFAULT_TIMEOUTS.request
        ),
        _ if is_connect_error(summary) => format!(
            "cannot reach {endpoint}: check the network, or the service-account file's gcs_base_url for an emulator, and that the server runs"
        ),
        _ => return None,
    };
    Some(h)
}
