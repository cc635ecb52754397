//! AWS credentials as the AWS CLI resolves them: `aws-config`'s default chain (profiles from
//! `AWS_PROFILE`, `AWS_CONFIG_FILE` and `AWS_SHARED_CREDENTIALS_FILE`, `role_arn` with
//! `source_profile` through STS, `credential_process`, SSO, web identity, ECS, IMDS) as
//! object_store's credential provider, which the native S3 client shares. Explicit
//! `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` bypass it (object_store's `from_env`, as before).
//!
//! The chain is built on first use; its credentials are cached until five minutes before
//! they expire (never, for long-term keys). A failure becomes one line naming the profile,
//! its files and the fix; the instance metadata service is asked briefly (1 s timeouts, two
//! attempts) and not at all under `AWS_EC2_METADATA_DISABLED=true`.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use aws_config::default_provider::credentials::DefaultCredentialsChain;
use aws_config::imds;
use aws_config::meta::region::ProvideRegion;
use aws_config::profile::parser as profile_parser;
use aws_config::profile::ProfileFileRegionProvider;
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{ProvideCredentials, SharedCredentialsProvider};
use aws_sdk_s3::config::Region;
use aws_types::os_shim_internal::{Env, Fs};
use object_store::aws::AwsCredential;
use object_store::CredentialProvider;

/// Credentials this close to their expiry are fetched again.
const REFRESH_BEFORE: Duration = Duration::from_secs(5 * 60);
/// The longest a credential lookup may take (STS, SSO and `credential_process` included).
const LOOKUP_TIMEOUT: Duration = Duration::from_secs(60);
/// The instance metadata service's connect and read timeouts: off EC2 it is not there.
const IMDS_TIMEOUT: Duration = Duration::from_secs(1);

/// What the credential chain reads from the environment, for choosing the route and for
/// messages (read once, at the edge).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub(crate) struct ChainEnv {
    /// `AWS_PROFILE`, when set.
    pub(crate) profile: Option<String>,
    /// The config file: `AWS_CONFIG_FILE` or `~/.aws/config`.
    pub(crate) config_file: Option<PathBuf>,
    /// The credentials file: `AWS_SHARED_CREDENTIALS_FILE` or `~/.aws/credentials`.
    pub(crate) credentials_file: Option<PathBuf>,
    /// object_store's `AWS_METADATA_ENDPOINT`, used for IMDS unless aws-config's
    /// `AWS_EC2_METADATA_SERVICE_ENDPOINT` is set.
    pub(crate) metadata_endpoint: Option<String>,
}

impl ChainEnv {
    /// From the process environment.
    pub(crate) fn from_env() -> Self {
        Self::from_lookup(|k| std::env::var(k).ok())
    }

    /// From any source of variables.
    pub(crate) fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Self {
        let get = |k: &str| get(k).filter(|v| !v.trim().is_empty());
        let home = get("HOME").map(PathBuf::from);
        let file = |var: &str, name: &str| match get(var) {
            Some(path) => match (path.strip_prefix("~/"), &home) {
                (Some(rest), Some(home)) => Some(home.join(rest)),
                _ => Some(PathBuf::from(path)),
            },
            None => home.as_ref().map(|h| h.join(".aws").join(name)),
        };
        Self {
            profile: get("AWS_PROFILE"),
            config_file: file("AWS_CONFIG_FILE", "config"),
            credentials_file: file("AWS_SHARED_CREDENTIALS_FILE", "credentials"),
            metadata_endpoint: get("AWS_EC2_METADATA_SERVICE_ENDPOINT")
                .is_none()
                .then(|| get("AWS_METADATA_ENDPOINT"))
                .flatten(),
        }
    }

    /// The selected profile's name.
    pub(crate) fn profile_name(&self) -> &str {
        self.profile.as_deref().unwrap_or("default")
    }

    /// True when a profile is named or a config or credentials file exists.
    pub(crate) fn has_profile(&self) -> bool {
        self.profile.is_some()
            || [&self.config_file, &self.credentials_file]
                .into_iter()
                .flatten()
                .any(|p| p.exists())
    }

    /// `config and credentials` files, for messages.
    fn files(&self) -> String {
        let shown = |p: &Option<PathBuf>| p.as_ref().map(|p| p.display().to_string());
        match (shown(&self.config_file), shown(&self.credentials_file)) {
            (Some(c), Some(k)) => format!("{c} and {k}"),
            (Some(one), None) | (None, Some(one)) => one,
            (None, None) => "no profile files (HOME is not set)".into(),
        }
    }

    /// The selected profile's `region`, read from its files (no request is made).
    pub(crate) fn profile_region(&self) -> Option<String> {
        // The profile loader is async (tokio's file I/O); opening a store is not, and may run
        // inside or outside a runtime: a thread of its own with a runtime of its own.
        std::thread::scope(|s| {
            s.spawn(|| {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .ok()?;
                rt.block_on(async {
                    let mut provider = ProfileFileRegionProvider::builder();
                    if let Some(p) = &self.profile {
                        provider = provider.profile_name(p);
                    }
                    provider.build().region().await
                })
                .map(|r| r.to_string())
            })
            .join()
            .ok()
            .flatten()
        })
    }
}

/// Why no credentials could be had from the chain: one line with the fix.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub(crate) struct CredentialsUnavailable {
    message: String,
}

/// `aws-config`'s default credential chain as object_store's credential provider.
#[derive(Debug)]
pub(crate) struct AwsChain {
    region: String,
    env: ChainEnv,
    chain: tokio::sync::OnceCell<SharedCredentialsProvider>,
    cached: tokio::sync::Mutex<Option<Cached>>,
}

#[derive(Debug)]
struct Cached {
    credential: Arc<AwsCredential>,
    expiry: Option<SystemTime>,
}

impl Cached {
    fn fresh(&self, now: SystemTime) -> bool {
        self.expiry.is_none_or(|e| {
            e.duration_since(now)
                .is_ok_and(|left| left > REFRESH_BEFORE)
        })
    }
}

impl AwsChain {
    /// The chain for requests to `region` (STS calls go there too, or to
    /// `AWS_ENDPOINT_URL_STS`/`AWS_ENDPOINT_URL`), shared by every store of the process
    /// opened with the same profile and region, so a role is assumed once, not per store.
    /// Makes no request.
    pub(crate) fn shared(region: String, env: ChainEnv) -> Arc<Self> {
        type Chains = std::sync::Mutex<HashMap<(String, ChainEnv), Arc<AwsChain>>>;
        static CHAINS: OnceLock<Chains> = OnceLock::new();
        let mut chains = CHAINS
            .get_or_init(Default::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        chains
            .entry((region.clone(), env.clone()))
            .or_insert_with(|| Arc::new(Self::new(region, env)))
            .clone()
    }

    fn new(region: String, env: ChainEnv) -> Self {
        Self {
            region,
            env,
            chain: tokio::sync::OnceCell::new(),
            cached: tokio::sync::Mutex::new(None),
        }
    }

    async fn build(&self) -> SharedCredentialsProvider {
        let mut imds = imds::Client::builder()
            .connect_timeout(IMDS_TIMEOUT)
            .read_timeout(IMDS_TIMEOUT)
            .max_attempts(2);
        if let Some(endpoint) = &self.env.metadata_endpoint {
            match imds.clone().endpoint(endpoint) {
                Ok(with) => imds = with,
                Err(e) => tracing::warn!(endpoint, error = %e, "AWS_METADATA_ENDPOINT ignored"),
            }
        }
        let mut chain = DefaultCredentialsChain::builder()
            .region(Region::new(self.region.clone()))
            .imds_client(imds.build());
        if let Some(p) = &self.env.profile {
            chain = chain.profile_name(p);
        }
        SharedCredentialsProvider::new(chain.build().await)
    }

    async fn fetch(&self) -> Result<Cached, CredentialsUnavailable> {
        let chain = self.chain.get_or_init(|| self.build()).await;
        let got = tokio::time::timeout(LOOKUP_TIMEOUT, chain.provide_credentials()).await;
        let creds = match got {
            Ok(Ok(c)) => c,
            Ok(Err(e)) => return Err(self.explain(&e).await),
            Err(_) => {
                return Err(CredentialsUnavailable {
                    message: format!(
                    "{}: no answer within {LOOKUP_TIMEOUT:?} (STS, SSO or credential_process): {}",
                    self.whose(),
                    CHAIN_FIX
                ),
                })
            }
        };
        tracing::debug!(expiry = ?creds.expiry(), "AWS credentials from the credential chain");
        Ok(Cached {
            credential: Arc::new(AwsCredential {
                key_id: creds.access_key_id().to_string(),
                secret_key: creds.secret_access_key().to_string(),
                token: creds.session_token().map(str::to_string),
            }),
            expiry: creds.expiry(),
        })
    }

    fn whose(&self) -> String {
        format!(
            "cannot get AWS credentials for profile {:?} ({})",
            self.env.profile_name(),
            self.env.files()
        )
    }

    async fn explain(&self, e: &CredentialsError) -> CredentialsUnavailable {
        // The chain says only that none of its sources gave credentials, or how the last one
        // it tried failed; whether the profile was that source is read from its files.
        let failure = match e {
            CredentialsError::CredentialsNotLoaded(_) => None,
            _ => Some(one_line(e)),
        };
        let unusable = match self.env.has_profile() {
            true => self.unusable_profile().await,
            false => None,
        };
        let message = match (unusable, failure) {
            (None, Some(failure)) if self.env.has_profile() => {
                format!("{}: {failure}: {CHAIN_FIX}", self.whose())
            }
            (Some(why), failure) => format!(
                "{} for profile {:?} ({}): {why}{}: {PROFILE_FIX}",
                super::NO_AWS_CREDENTIALS,
                self.env.profile_name(),
                self.env.files(),
                failure.map(|f| format!("; then {f}")).unwrap_or_default(),
            ),
            (None, Some(failure)) => format!(
                "{} ({failure}): {}",
                super::NO_AWS_CREDENTIALS,
                super::AWS_CREDENTIALS_FIX
            ),
            (None, None) => format!(
                "{}: {}",
                super::NO_AWS_CREDENTIALS,
                super::AWS_CREDENTIALS_FIX
            ),
        };
        CredentialsUnavailable { message }
    }

    /// Why the selected profile cannot give credentials, read from its files as the chain
    /// reads them, or `None` when it has credential settings (whose failure the chain's
    /// error then describes).
    async fn unusable_profile(&self) -> Option<String> {
        // The chain skips a file it cannot read (with a log line): say so.
        for path in [&self.env.config_file, &self.env.credentials_file]
            .into_iter()
            .flatten()
        {
            match tokio::fs::read(path).await {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Some(format!("{} cannot be read: {e}", path.display()));
                }
                _ => {}
            }
        }
        let (fs, env) = (Fs::real(), Env::real());
        let set = match profile_parser::load(&fs, &env, &Default::default(), None).await {
            Ok(set) => set,
            Err(e) => return Some(format!("its files cannot be read: {}", one_line(&e))),
        };
        let Some(profile) = set.get_profile(self.env.profile_name()) else {
            return Some("no such profile is defined there".into());
        };
        if let Some(source) = profile.get("source_profile") {
            if set.get_profile(source).is_none() {
                return Some(format!("its source_profile {source:?} is not defined"));
            }
        }
        let routes = CREDENTIAL_SETTINGS.iter().any(|k| profile.get(k).is_some());
        (!routes).then(|| "it holds no credential settings".into())
    }
}

/// Profile settings that make the chain use a profile for credentials.
const CREDENTIAL_SETTINGS: &[&str] = &[
    "aws_access_key_id",
    "role_arn",
    "credential_process",
    "credential_source",
    "sso_session",
    "sso_start_url",
    "web_identity_token_file",
    "login_session",
];

/// How to mend a profile that gives no credentials.
const PROFILE_FIX: &str = "give it keys, role_arn with source_profile, sso_* settings or credential_process, choose another with AWS_PROFILE, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";

/// How to mend a profile the chain cannot use.
const CHAIN_FIX: &str = "fix the profile, choose another with AWS_PROFILE, or set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY";

/// An error and its sources on one line, repeated messages said once.
fn one_line(e: &(dyn std::error::Error + 'static)) -> String {
    let flat = |s: &dyn std::error::Error| {
        let text = s
            .to_string()
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        // credential_process failures end in "Stderr:" and what it printed, maybe nothing.
        let text = text.strip_suffix("Stderr:").unwrap_or(&text).trim_end();
        text.trim_end_matches(['.', ':']).to_string()
    };
    // The credential errors' own lines ("an error occurred while loading credentials") say
    // less than their sources; they are kept only when there is nothing else.
    let generic = |t: &str| {
        [
            "the credential provider was not enabled",
            "the credentials provider was not properly configured",
            "an error occurred while loading credentials",
            "unexpected credentials error",
        ]
        .contains(&t)
    };
    let mut parts: Vec<String> = Vec::new();
    let mut next: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = next {
        let text = flat(s);
        if !text.is_empty() && !generic(&text) && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = s.source();
    }
    if parts.is_empty() {
        parts.push(flat(e));
    }
    parts.join(": ")
}

#[async_trait]
impl CredentialProvider for AwsChain {
    type Credential = AwsCredential;

    async fn get_credential(&self) -> object_store::Result<Arc<AwsCredential>> {
        let mut cached = self.cached.lock().await;
        if let Some(c) = cached.as_ref().filter(|c| c.fresh(SystemTime::now())) {
            return Ok(c.credential.clone());
        }
        let fresh = self
            .fetch()
            .await
            .map_err(|e| object_store::Error::Generic {
                store: "S3",
                source: Box::new(e),
            })?;
        let credential = fresh.credential.clone();
        *cached = Some(fresh);
        Ok(credential)
    }
}

/// The chain's one-line message, when `e` is a failure to get credentials from it.
pub(crate) fn chain_failure(e: &object_store::Error) -> Option<String> {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(s) = source {
        if let Some(c) = s.downcast_ref::<CredentialsUnavailable>() {
            return Some(c.message.clone());
        }
        source = s.source();
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> ChainEnv {
        ChainEnv::from_lookup(|k| {
            pairs
                .iter()
                .find(|(name, _)| *name == k)
                .map(|(_, v)| v.to_string())
        })
    }

    #[test]
    fn finds_the_files_as_the_cli_does() {
        let e = env(&[("HOME", "/home/u")]);
        assert_eq!(e.config_file, Some(PathBuf::from("/home/u/.aws/config")));
        assert_eq!(
            e.credentials_file,
            Some(PathBuf::from("/home/u/.aws/credentials"))
        );
        assert_eq!(e.profile_name(), "default");
        let e = env(&[
            ("HOME", "/home/u"),
            ("AWS_CONFIG_FILE", "~/cfg"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/etc/creds"),
            ("AWS_PROFILE", "dev"),
        ]);
        assert_eq!(e.config_file, Some(PathBuf::from("/home/u/cfg")));
        assert_eq!(e.credentials_file, Some(PathBuf::from("/etc/creds")));
        assert_eq!(e.profile_name(), "dev");
        assert!(e.has_profile());
        assert_eq!(e.files(), "/home/u/cfg and /etc/creds");
    }

    #[test]
    fn the_cli_metadata_endpoint_wins_over_object_stores() {
        let e = env(&[("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9")]);
        assert_eq!(e.metadata_endpoint.as_deref(), Some("http://127.0.0.1:9"));
        let e = env(&[
            ("AWS_METADATA_ENDPOINT", "http://127.0.0.1:9"),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", "http://127.0.0.1:8"),
        ]);
        assert_eq!(e.metadata_endpoint, None);
    }

    #[test]
    fn cached_credentials_are_renewed_before_they_expire() {
        let now = SystemTime::now();
        let cached = |expiry| Cached {
            credential: Arc::new(AwsCredential {
                key_id: "k".into(),
                secret_key: "s".into(),
                token: None,
            }),
            expiry,
        };
        assert!(cached(None).fresh(now));
        assert!(cached(Some(now + Duration::from_secs(3600))).fresh(now));
        assert!(!cached(Some(now + Duration::from_secs(60))).fresh(now));
        assert!(!cached(Some(now - Duration::from_secs(60))).fresh(now));
    }

    #[test]
    fn a_nested_error_is_one_line_without_repeats() {
        #[derive(Debug, thiserror::Error)]
        #[error("outer")]
        struct Outer(#[source] Inner);
        #[derive(Debug, thiserror::Error)]
        #[error("profile `x` was\nnot defined")]
        struct Inner;
        assert_eq!(
            one_line(&Outer(Inner)),
            "outer: profile `x` was not defined"
        );
        let chain = CredentialsError::provider_error(Inner);
        assert_eq!(one_line(&chain), "profile `x` was not defined");
        let nothing = CredentialsError::not_loaded("none");
        assert_eq!(one_line(&nothing), "none");
        assert_eq!(one_line(&Inner), "profile `x` was not defined");
    }
}
