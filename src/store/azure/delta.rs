//! The Azure Blob `DeltaStore`: `Put Block`, `Put Block List` and `Get Block List` as REST
//! calls over `reqwest` (`http.rs`, `write.rs`), signed by `object_store`'s own Azure
//! authorizer with the credential of the backend's `object_store` client (SharedKey, SAS or
//! bearer token), so the data plane and these calls read the same environment and never
//! disagree about who they are. Retries follow the store's [`RetryPolicy`].

use std::collections::HashMap;

use async_trait::async_trait;
use object_store::azure::{AzureConfigKey, AzureCredentialProvider, MicrosoftAzureBuilder};
use object_store::ClientConfigKey;
use url::Url;

use super::http::changed;
use super::wire::{decode_block_id, encode_block_id, validate};
use super::{emulator_url, AzureSettings, AUTH_HINT, EMULATOR_ACCOUNT};
use crate::store::delta::{
    check_before_commit, normalize_etag, DeltaStore, Limits, NativeError, Part, PartSource,
    RemoteObject, WriteObserver, WriteRequest,
};
use crate::store::options::{RetryPolicy, StoreOptions, Timeouts};

/// Native writes to one Azure container below a prefix.
pub struct AzureDelta {
    pub(super) http: reqwest::Client,
    /// `None` when `AZURE_SKIP_SIGNATURE` is set (public containers).
    pub(super) credentials: Option<AzureCredentialProvider>,
    pub(super) account: String,
    pub(super) container: String,
    /// `{endpoint}/{container}` (emulator: `{endpoint}/{account}/{container}`).
    pub(super) container_url: Url,
    /// Key prefix inside the container, without surrounding slashes.
    pub(super) prefix: String,
    /// The store's retry policy: how many times and how patiently a call is repeated after
    /// a transient failure (connection refused or reset, timeout, HTTP 408/429/5xx; the
    /// commit only when it was never sent).
    pub(super) retry: RetryPolicy,
}

impl std::fmt::Debug for AzureDelta {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "AzureDelta(az://{}/{})", self.container, self.prefix)
    }
}

/// Azure settings the native client cannot work with.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    /// The store URL names no container.
    #[error("native Azure writes need a container")]
    NoContainer,
    /// Neither the URL nor the environment names a storage account.
    #[error("no storage account is set")]
    NoAccount,
    /// The endpoint is no valid URL.
    #[error("endpoint {endpoint:?} is not a URL: {problem}")]
    Endpoint {
        /// The endpoint as set.
        endpoint: String,
        /// Why it does not parse.
        problem: String,
    },
    /// A plain-HTTP endpoint without `AZURE_ALLOW_HTTP=true`.
    #[error("endpoint {origin} is not https (set AZURE_ALLOW_HTTP=true to allow it)")]
    NotHttps {
        /// The endpoint's origin.
        origin: String,
    },
    /// The HTTP client could not be built.
    #[error("{reason}")]
    Client {
        /// Why, in one line.
        reason: String,
    },
}

impl AzureDelta {
    /// The native client for the settings' container and prefix, signing with `credentials`
    /// (the `object_store` client's). Makes no request.
    pub fn new(
        settings: &AzureSettings,
        credentials: AzureCredentialProvider,
    ) -> Result<Self, NativeError> {
        let container = settings
            .get(AzureConfigKey::ContainerName)
            .unwrap_or_default();
        Self::configure(settings, credentials)
            .map_err(|e| NativeError::Config(format!("az://{container}: {e} ({AUTH_HINT})")))
    }

    /// From an `object_store` builder that names the container (tests: an explicit
    /// configuration); builds it to resolve the credential, and reads the account, endpoint
    /// and client settings back from it.
    pub fn from_builder(
        builder: MicrosoftAzureBuilder,
        prefix: &str,
        retry: &RetryPolicy,
    ) -> Result<Self, NativeError> {
        let options = StoreOptions {
            retry: *retry,
            ..StoreOptions::default()
        };
        let settings = AzureSettings::from_builder(builder, prefix, &options);
        let container = settings
            .get(AzureConfigKey::ContainerName)
            .unwrap_or_default();
        let (_, credentials) = settings.client().map_err(|e| {
            NativeError::Config(format!(
                "az://{container}: {} ({AUTH_HINT})",
                crate::error::first_line(&e.to_string())
            ))
        })?;
        Self::new(&settings, credentials)
    }

    fn configure(
        settings: &AzureSettings,
        credentials: AzureCredentialProvider,
    ) -> Result<Self, SettingsError> {
        let container = settings
            .get(AzureConfigKey::ContainerName)
            .ok_or(SettingsError::NoContainer)?;
        let (account, mut container_url) = service_url(settings)?;
        push_segments(&mut container_url, [container.as_str()]);
        Ok(Self {
            http: http_client(settings)?,
            credentials: (!settings.flag(AzureConfigKey::SkipSignature)).then_some(credentials),
            account,
            container,
            container_url,
            prefix: settings.prefix.clone(),
            retry: settings.options.retry,
        })
    }

    /// The blob a trait key names: its full name in the container.
    pub(super) fn blob_name(&self, key: &str) -> String {
        let key = key.trim_start_matches('/');
        if self.prefix.is_empty() {
            key.to_string()
        } else {
            format!("{}/{key}", self.prefix)
        }
    }

    /// `az://container/blob`, for messages (never carries a SAS token).
    pub(super) fn display(&self, key: &str) -> String {
        format!("az://{}/{}", self.container, self.blob_name(key))
    }

    pub(super) fn blob_url(&self, key: &str, query: &[(&str, &str)]) -> Url {
        let mut url = self.container_url.clone();
        push_segments(&mut url, self.blob_name(key).split('/'));
        if !query.is_empty() {
            url.query_pairs_mut().extend_pairs(query);
        }
        url
    }
}

/// The account and the service URL requests go to.
fn service_url(settings: &AzureSettings) -> Result<(String, Url), SettingsError> {
    let get = |key| settings.get(key);
    if settings.flag(AzureConfigKey::UseEmulator) {
        let account = get(AzureConfigKey::AccountName).unwrap_or(EMULATOR_ACCOUNT.into());
        let mut url = parse_url(&emulator_url())?;
        push_segments(&mut url, [account.as_str()]);
        return Ok((account, url));
    }
    let account = get(AzureConfigKey::AccountName).ok_or(SettingsError::NoAccount)?;
    let endpoint = match get(AzureConfigKey::Endpoint) {
        Some(e) => e,
        None if settings.flag(AzureConfigKey::UseFabricEndpoint) => {
            format!("https://{account}.blob.fabric.microsoft.com")
        }
        None => format!("https://{account}.blob.core.windows.net"),
    };
    let url = parse_url(&endpoint)?;
    let allow_http = settings.flag(AzureConfigKey::Client(ClientConfigKey::AllowHttp));
    if url.scheme() != "https" && !allow_http {
        return Err(SettingsError::NotHttps {
            origin: url.origin().ascii_serialization(),
        });
    }
    Ok((account, url))
}

/// The HTTP client, with the same timeout knobs and defaults as the data plane.
fn http_client(settings: &AzureSettings) -> Result<reqwest::Client, SettingsError> {
    let defaults = Timeouts::default();
    let timeout = |key, default| {
        settings
            .get(AzureConfigKey::Client(key))
            .and_then(|v| humantime::parse_duration(&v).ok())
            .unwrap_or(default)
    };
    reqwest::Client::builder()
        .connect_timeout(timeout(ClientConfigKey::ConnectTimeout, defaults.connect))
        .read_timeout(timeout(ClientConfigKey::ReadTimeout, defaults.read))
        .timeout(timeout(ClientConfigKey::Timeout, defaults.request))
        .build()
        .map_err(|e| SettingsError::Client {
            reason: crate::error::first_line(&e.to_string()).to_string(),
        })
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
                    // The blob moved since the plan was made: a new plan will match it.
                    return Err(NativeError::Request {
                        url: self.display(req.key),
                        message: format!(
                            "part {i} keeps block {id} ({} bytes), which the blob's committed block list does not hold at that size",
                            part.len()
                        ),
                        status: None,
                        transience: crate::error::Transience::Transient,
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

fn parse_url(s: &str) -> Result<Url, SettingsError> {
    let url = Url::parse(s).map_err(|e| SettingsError::Endpoint {
        endpoint: s.to_string(),
        problem: e.to_string(),
    })?;
    if url.cannot_be_a_base() {
        return Err(SettingsError::Endpoint {
            endpoint: s.to_string(),
            problem: "not a base URL".into(),
        });
    }
    Ok(url)
}

pub(super) fn push_segments<'a>(url: &mut Url, segments: impl IntoIterator<Item = &'a str>) {
    if let Ok(mut path) = url.path_segments_mut() {
        path.pop_if_empty().extend(segments);
    }
}
