//! The Azure Blob backend: its settings (`MicrosoftAzureBuilder::from_env()` plus ferry's
//! retry policy and timeouts, built once), the `object_store` client made from them, and the
//! native [`AzureDelta`] made from the same settings and the same credential.

mod delta;
mod http;
#[cfg(test)]
mod tests;
mod wire;
mod write;

use std::sync::Arc;

use object_store::azure::{AzureConfigKey, AzureCredentialProvider, MicrosoftAzureBuilder};
use object_store::ObjectStore;

pub use self::delta::{AzureDelta, SettingsError};
pub use self::wire::{decode_block_id, encode_block_id};
use super::delta::{DeltaStore, NativeError};
use super::error::{is_connect_error, is_timeout};
use super::options::{StoreOptions, DEFAULT_TIMEOUTS};
use super::{Backend, OpenDelta, Store, StoreError, StoreUrl};
use crate::error::first_line;

/// The emulator's account and endpoint, as `object_store` defaults them.
const EMULATOR_ACCOUNT: &str = "devstoreaccount1";
const EMULATOR_URL: &str = "http://127.0.0.1:10000";
/// What to set when Azure refuses or lacks credentials.
const AUTH_HINT: &str = "check AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY (or AZURE_STORAGE_SAS_KEY), or set AZURE_STORAGE_USE_EMULATOR=true for Azurite";

/// Everything both Azure clients are made from: one `MicrosoftAzureBuilder` read from the
/// environment (account, key or SAS or token, endpoint, emulator, timeouts), with the
/// container, ferry's retry policy and default timeouts applied.
#[derive(Debug, Clone)]
pub struct AzureSettings {
    builder: MicrosoftAzureBuilder,
    prefix: String,
    options: StoreOptions,
}

impl AzureSettings {
    /// The settings for `az://container/prefix` from the `AZURE_*` variables.
    pub fn from_env(container: &str, prefix: &str, options: &StoreOptions) -> Self {
        let mut builder = MicrosoftAzureBuilder::from_env().with_container_name(container);
        for (key, value) in options.timeouts.unset_in_env("AZURE_") {
            builder = builder.with_config(AzureConfigKey::Client(key), value);
        }
        Self::from_builder(builder, prefix, options)
    }

    /// From a builder that names the container (tests: an explicit configuration), with
    /// `options`' retry policy.
    pub fn from_builder(
        builder: MicrosoftAzureBuilder,
        prefix: &str,
        options: &StoreOptions,
    ) -> Self {
        Self {
            builder: builder.with_retry(options.retry.object_store()),
            prefix: prefix.trim_matches('/').to_string(),
            options: options.clone(),
        }
    }

    pub(crate) fn get(&self, key: AzureConfigKey) -> Option<String> {
        self.builder.get_config_value(&key)
    }

    fn flag(&self, key: AzureConfigKey) -> bool {
        self.get(key).is_some_and(|v| is_truthy(&v))
    }

    /// Where requests go.
    pub fn endpoint(&self) -> String {
        if self.flag(AzureConfigKey::UseEmulator) {
            return emulator_url();
        }
        self.get(AzureConfigKey::Endpoint).unwrap_or_else(|| {
            let account = self
                .get(AzureConfigKey::AccountName)
                .unwrap_or_else(|| "ACCOUNT".into());
            format!("https://{account}.blob.core.windows.net")
        })
    }

    /// The `object_store` client and its credential provider (which the native client
    /// shares).
    pub fn client(
        &self,
    ) -> Result<(object_store::azure::MicrosoftAzure, AzureCredentialProvider), object_store::Error>
    {
        let az = self.builder.clone().build()?;
        let credentials = az.credentials().clone();
        Ok((az, credentials))
    }
}

/// `AZURITE_BLOB_STORAGE_URL`, which object_store reads too, or the emulator's default.
fn emulator_url() -> String {
    std::env::var("AZURITE_BLOB_STORAGE_URL")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| EMULATOR_URL.into())
}

fn is_truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "y" | "on"
    )
}

/// What `Store::open_with` keeps to make the native client when it is asked for.
struct AzureNative {
    settings: AzureSettings,
    credentials: AzureCredentialProvider,
}

impl OpenDelta for AzureNative {
    fn open_delta(&self) -> Result<Arc<dyn DeltaStore>, NativeError> {
        Ok(Arc::new(AzureDelta::new(
            &self.settings,
            self.credentials.clone(),
        )?))
    }
}

/// Opens `az://container/prefix`.
pub(crate) fn open(
    url: &StoreUrl,
    container: &str,
    prefix: &str,
    options: &StoreOptions,
) -> Result<Backend, StoreError> {
    backend(url, AzureSettings::from_env(container, prefix, options))
}

fn backend(url: &StoreUrl, settings: AzureSettings) -> Result<Backend, StoreError> {
    let (az, credentials) = settings.client().map_err(|e| StoreError::Open {
        url: url.to_string(),
        reason: format!("{} (set AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY, or AZURE_STORAGE_USE_EMULATOR=true for Azurite)", first_line(&e.to_string())),
    })?;
    let inner: Arc<dyn ObjectStore> = Arc::new(az);
    Ok(Backend {
        inner: super::prefixed(inner, &settings.prefix),
        endpoint: Some(settings.endpoint()),
        delta: Some(Arc::new(AzureNative {
            settings,
            credentials,
        })),
    })
}

impl AzureSettings {
    /// The store on these settings: for an explicit configuration (tests) instead of the
    /// environment's. Makes no request.
    pub fn into_store(self) -> Result<Store, StoreError> {
        let url = StoreUrl::Azure {
            container: self.get(AzureConfigKey::ContainerName).unwrap_or_default(),
            prefix: self.prefix.clone(),
        };
        let options = self.options.clone();
        Ok(Store::assemble(&url, backend(&url, self)?, &options))
    }
}

/// What to do about an error on `container` whose requests go to `endpoint`.
pub(crate) fn hint(
    container: &str,
    endpoint: &str,
    err: &object_store::Error,
    summary: &str,
) -> Option<String> {
    use object_store::Error as E;
    let h = match err {
        _ if summary.contains("ContainerNotFound") => {
            format!("container {container:?} does not exist: create it or fix the URL")
        }
        E::Unauthenticated { .. } | E::PermissionDenied { .. } => {
            "access denied: check AZURE_STORAGE_ACCOUNT_NAME and AZURE_STORAGE_ACCOUNT_KEY".into()
        }
        _ if is_timeout(summary) => format!(
            "{endpoint} did not answer in time, retries included: check that it is up and reachable, or raise AZURE_READ_TIMEOUT (default {:?}), AZURE_TIMEOUT ({:?}) or FERRY_RETRY_TIMEOUT_SECS",
            DEFAULT_TIMEOUTS.read, DEFAULT_TIMEOUTS.request
        ),
        _ if is_connect_error(summary) => {
            "cannot reach the Azure endpoint: check the account settings (AZURITE_BLOB_STORAGE_URL for the emulator) and that the server runs".into()
        }
        _ => return None,
    };
    Some(h)
}
