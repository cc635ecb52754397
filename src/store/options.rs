//! `StoreOptions`: what ferry itself decides about every store client — the one retry policy,
//! the timeouts it defaults, fault injection and slow-request reports — resolved once from
//! the environment at the edge (`StoreOptions::from_env`) and passed down to every backend.

use std::time::Duration;

use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

use super::bwlimit::Bandwidth;
use super::fault::{FaultConfig, FaultSpecError};

/// Options shared by every store a process opens.
#[derive(Debug, Clone, PartialEq)]
pub struct StoreOptions {
    /// The one retry policy: object_store's client, the S3 SDK and the Azure REST calls all
    /// take their numbers from it.
    pub retry: RetryPolicy,
    /// Client timeouts used where the backend's own variables (`AWS_TIMEOUT`,
    /// `AZURE_READ_TIMEOUT`, …) set none.
    pub timeouts: Timeouts,
    /// `FERRY_FAULTS`: fault injection, tests only.
    pub faults: Option<FaultConfig>,
    /// `FERRY_SLOW_SECS`: a request to S3 or Azure still waiting after this long is logged,
    /// and again at each further interval.
    pub slow_after: Duration,
    /// `--bwlimit` or the daemon's `[runner] bwlimit`: the caps every store of the process
    /// shares (`None`: no limit, no wrapper). Set by the caller, not from the environment.
    pub bandwidth: Option<Bandwidth>,
}

impl Default for StoreOptions {
    fn default() -> Self {
        Self {
            retry: RetryPolicy::default(),
            timeouts: Timeouts::default(),
            faults: None,
            slow_after: DEFAULT_SLOW_AFTER,
            bandwidth: None,
        }
    }
}

/// A store option in the environment that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum OptionsError {
    /// `FERRY_FAULTS` is invalid.
    #[error(transparent)]
    Faults(#[from] FaultSpecError),
}

/// `FERRY_SLOW_SECS` when unset.
const DEFAULT_SLOW_AFTER: Duration = Duration::from_secs(10);

impl StoreOptions {
    /// Reads `FERRY_RETRY_MAX` (default 10), `FERRY_RETRY_TIMEOUT_SECS` (default 180),
    /// `FERRY_FAULTS` and `FERRY_SLOW_SECS` (seconds, fractions allowed; default 10). A
    /// number that does not parse keeps the default, as it always did; a bad fault spec is
    /// an error.
    pub fn from_env() -> Result<Self, OptionsError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// As [`StoreOptions::from_env`], from any source of variables.
    pub fn from_lookup(get: impl Fn(&str) -> Option<String>) -> Result<Self, OptionsError> {
        let number = |name: &str| get(name).and_then(|v| v.trim().parse::<u64>().ok());
        let mut retry = RetryPolicy::default();
        if let Some(n) = number("FERRY_RETRY_MAX") {
            retry = RetryPolicy::retries(usize::try_from(n).unwrap_or(usize::MAX));
        }
        if let Some(s) = number("FERRY_RETRY_TIMEOUT_SECS") {
            retry.timeout = Duration::from_secs(s);
        }
        let faults = match get("FERRY_FAULTS").filter(|v| !v.is_empty()) {
            Some(spec) => Some(FaultConfig::parse(&spec)?),
            None => None,
        };
        let slow_after = get("FERRY_SLOW_SECS")
            .and_then(|v| v.trim().parse::<f64>().ok())
            .filter(|s| s.is_finite() && *s > 0.0)
            .map_or(DEFAULT_SLOW_AFTER, Duration::from_secs_f64);
        Ok(Self {
            retry,
            timeouts: Timeouts::default(),
            faults,
            slow_after,
            bandwidth: None,
        })
    }
}

/// How often and how patiently a failed request is repeated: at most `max_retries` more
/// times, within `timeout` of the first attempt, waiting `init_backoff` × `base`ⁿ (at most
/// `max_backoff`) in between. Which failures are repeated is each client's call (a lost
/// commit is not, for instance); how many times is this value's.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub max_retries: usize,
    /// Time after the first attempt past which no retry starts.
    pub timeout: Duration,
    /// Backoff before the first retry.
    pub init_backoff: Duration,
    /// Largest backoff.
    pub max_backoff: Duration,
    /// Factor the backoff grows by per retry.
    pub base: f64,
}

impl Default for RetryPolicy {
    /// object_store's defaults: 10 retries within 180 s, 100 ms doubling up to 15 s.
    fn default() -> Self {
        let cfg = RetryConfig::default();
        Self {
            max_retries: cfg.max_retries,
            timeout: cfg.retry_timeout,
            init_backoff: cfg.backoff.init_backoff,
            max_backoff: cfg.backoff.max_backoff,
            base: cfg.backoff.base,
        }
    }
}

impl RetryPolicy {
    /// The default policy with `n` retries; with at most one, the wait is short (tests lower
    /// the budget so a dead server fails fast).
    pub fn retries(n: usize) -> Self {
        let mut policy = Self {
            max_retries: n,
            ..Self::default()
        };
        if n <= 1 {
            policy.init_backoff = Duration::from_millis(20);
        }
        policy
    }

    /// The same policy as object_store's retry configuration.
    pub fn object_store(&self) -> RetryConfig {
        RetryConfig {
            backoff: BackoffConfig {
                init_backoff: self.init_backoff,
                max_backoff: self.max_backoff,
                base: self.base,
            },
            max_retries: self.max_retries,
            retry_timeout: self.timeout,
        }
    }

    /// The wait before retry number `retry` (1-based), without jitter.
    pub fn backoff(&self, retry: u32) -> Duration {
        let factor = self
            .base
            .max(1.0)
            .powi(retry.saturating_sub(1).min(30) as i32);
        self.init_backoff.mul_f64(factor).min(self.max_backoff)
    }
}

/// Client timeouts (see `README`: `AWS_TIMEOUT`, `AZURE_CONNECT_TIMEOUT`, …): packs are tens of
/// MiB, so slow links are allowed, but a dead endpoint is noticed quickly. `read` bounds the
/// wait for the answer's head (which includes sending the body: a 32 MiB pack needs ~0.3 MB/s)
/// and then for each piece of its body, so a server that accepts and never answers fails the
/// attempt at 120 s, well inside the retry budget (180 s), and the request is retried instead
/// of failing once at `request`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    /// Time allowed to open a connection.
    pub connect: Duration,
    /// Time allowed between pieces of an answer (its head, then each part of its body).
    pub read: Duration,
    /// The whole request.
    pub request: Duration,
}

/// The timeouts ferry sets where the environment sets none.
pub(crate) const DEFAULT_TIMEOUTS: Timeouts = Timeouts {
    connect: Duration::from_secs(10),
    read: Duration::from_secs(120),
    request: Duration::from_secs(300),
};

impl Default for Timeouts {
    fn default() -> Self {
        DEFAULT_TIMEOUTS
    }
}

impl Timeouts {
    /// As object_store client settings, for those the environment does not set under
    /// `env_prefix` (`AWS_`: `AWS_TIMEOUT`, `AWS_CONNECT_TIMEOUT`, `AWS_READ_TIMEOUT`).
    pub(crate) fn unset_in_env(&self, env_prefix: &str) -> Vec<(ClientConfigKey, String)> {
        let text = |d: Duration| humantime::format_duration(d).to_string();
        [
            (ClientConfigKey::Timeout, "TIMEOUT", text(self.request)),
            (
                ClientConfigKey::ConnectTimeout,
                "CONNECT_TIMEOUT",
                text(self.connect),
            ),
            (
                ClientConfigKey::ReadTimeout,
                "READ_TIMEOUT",
                text(self.read),
            ),
        ]
        .into_iter()
        .filter(|(_, name, _)| std::env::var_os(format!("{env_prefix}{name}")).is_none())
        .map(|(key, _, value)| (key, value))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lookup(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let pairs: Vec<(String, String)> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.clone())
        }
    }

    #[test]
    fn defaults_are_ten_retries_for_every_client() {
        let opts = StoreOptions::from_lookup(lookup(&[])).unwrap();
        assert_eq!(opts.retry.max_retries, 10);
        assert_eq!(opts.retry.object_store().max_retries, 10);
        assert_eq!(opts.faults, None);
        assert_eq!(opts.slow_after, Duration::from_secs(10));
    }

    #[test]
    fn reads_the_variables() {
        let opts = StoreOptions::from_lookup(lookup(&[
            ("FERRY_RETRY_MAX", "1"),
            ("FERRY_RETRY_TIMEOUT_SECS", "7"),
            ("FERRY_FAULTS", "rate=0.5,seed=3"),
            ("FERRY_SLOW_SECS", "0.5"),
        ]))
        .unwrap();
        assert_eq!(opts.retry.max_retries, 1);
        assert_eq!(opts.retry.timeout, Duration::from_secs(7));
        assert_eq!(opts.retry.init_backoff, Duration::from_millis(20));
        assert_eq!(opts.faults.map(|f| (f.rate, f.seed)), Some((0.5, 3)));
        assert_eq!(opts.slow_after, Duration::from_millis(500));
    }

    #[test]
    fn refuses_what_it_cannot_use() {
        let lenient = StoreOptions::from_lookup(lookup(&[("FERRY_RETRY_MAX", "ten")])).unwrap();
        assert_eq!(lenient.retry, RetryPolicy::default());
        let err = StoreOptions::from_lookup(lookup(&[("FERRY_FAULTS", "bogus=1")])).unwrap_err();
        assert!(err.to_string().contains("unknown key"), "{err}");
    }

    #[test]
    fn backoff_doubles_up_to_the_cap() {
        let p = RetryPolicy::default();
        assert_eq!(p.backoff(1), Duration::from_millis(100));
        assert_eq!(p.backoff(2), Duration::from_millis(200));
        assert_eq!(p.backoff(30), p.max_backoff);
    }
}
