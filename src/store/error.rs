//! `StoreError`: what went wrong opening or using a store, with the HTTP status of the answer
//! (when there was one) and whether trying again may help, both read from the typed error
//! where the response was seen; and the one-line summaries and hints users read.

use object_store::client::HttpError;

use super::delta::NativeError;
use super::fault::Injected;
use super::options::OptionsError;
use super::url::UrlError;
use super::{azure, gcs, s3, StoreUrl};
use crate::error::{first_line, Transience};

/// Errors from opening or using a store. Messages name the object and, where known, the fix.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The store URL is invalid.
    #[error(transparent)]
    Url(#[from] UrlError),
    /// A store setting from the environment is invalid.
    #[error(transparent)]
    Options(#[from] OptionsError),
    /// A local folder opened for reading is not there.
    #[error("cannot open {url}: no such folder")]
    NoSuchFolder {
        /// The store URL.
        url: String,
    },
    /// The store could not be opened.
    #[error("cannot open {url}: {reason}")]
    Open {
        /// The store URL.
        url: String,
        /// Why, in one line.
        reason: String,
    },
    /// A store call failed.
    #[error("{op} {object} failed: {summary}{hint}")]
    Op {
        /// What was being done, as a verb (`reading`, `inspecting`, …).
        op: &'static str,
        /// The object's URL.
        object: String,
        /// One line: the store's answer or the transport error.
        summary: String,
        /// What to check or set, with a leading separator; empty when there is nothing to add.
        hint: String,
        /// The HTTP status of the answer, when the store answered (see `http_status`).
        status: Option<u16>,
        /// Kept for matching; its text is already in `summary`.
        cause: Box<object_store::Error>,
    },
    /// A native (delta) write or probe failed.
    #[error(transparent)]
    Native(#[from] NativeError),
}

impl StoreError {
    /// An error of `op` on `object` from object_store's `cause`.
    pub(crate) fn op(
        op: &'static str,
        object: String,
        summary: String,
        hint: String,
        cause: object_store::Error,
    ) -> Self {
        StoreError::Op {
            op,
            object,
            summary,
            hint,
            status: http_status(&cause),
            cause: Box::new(cause),
        }
    }

    /// True when the object does not exist (and the bucket/container does).
    pub fn is_not_found(&self) -> bool {
        matches!(
            self,
            StoreError::Op { cause, .. } if matches!(**cause, object_store::Error::NotFound { .. })
        ) && !self.is_missing_container()
    }

    /// The HTTP status of the answer that failed the request, if there was one.
    pub fn status(&self) -> Option<u16> {
        match self {
            StoreError::Op { status, .. } => *status,
            StoreError::Native(e) => e.status(),
            _ => None,
        }
    }

    /// Whether trying again may help: from the answer's status when there was one, else
    /// from object_store's error kind and the transport failure under it.
    pub fn transience(&self) -> Transience {
        match self {
            StoreError::Url(_)
            | StoreError::Options(_)
            | StoreError::NoSuchFolder { .. }
            | StoreError::Open { .. } => Transience::Permanent,
            StoreError::Native(e) => e.transience(),
            StoreError::Op { status, cause, .. } => match status {
                Some(status) => Transience::of_status(*status),
                None => transience_without_status(cause),
            },
        }
    }

    fn is_missing_container(&self) -> bool {
        match self {
            StoreError::Op { summary, .. } => {
                summary.contains("NoSuchBucket") || summary.contains("ContainerNotFound")
            }
            _ => false,
        }
    }
}

/// A failure without an answer: a request that cannot be right (a path, a setting, missing
/// credentials) stays; the network, a timeout or a cut body passes.
fn transience_without_status(cause: &object_store::Error) -> Transience {
    use object_store::Error as E;
    match cause {
        E::NotFound { .. }
        | E::PermissionDenied { .. }
        | E::Unauthenticated { .. }
        | E::InvalidPath { .. }
        | E::NotSupported { .. }
        | E::NotImplemented { .. }
        | E::UnknownConfigurationKey { .. } => Transience::Permanent,
        _ => Transience::Transient,
    }
}

/// The errors under `err`, itself first.
fn chain<'a>(
    err: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(err), |e| e.source())
}

/// What object_store's request error says when the server answered with a status
/// (`RequestError::Status`; its type is private to object_store, its message format is not).
const STATUS_PREFIX: &str = "Server returned non-2xx status code: ";

/// The HTTP status of the answer under an object_store error: the status object_store's
/// retry loop saw (the request error in its source chain, which object_store does not let us
/// name but renders as `Server returned non-2xx status code: 503 …`), or an injected fault's.
/// `None` when no answer came (a connection refused, a timeout) or the store is local.
pub(crate) fn http_status(err: &object_store::Error) -> Option<u16> {
    chain(err).find_map(|e| {
        if let Some(Injected(fault)) = e.downcast_ref::<Injected>() {
            return fault.status();
        }
        if e.downcast_ref::<HttpError>().is_some() {
            return None;
        }
        let text = e.to_string();
        let code = text.strip_prefix(STATUS_PREFIX)?.get(..3)?;
        code.parse().ok()
    })
}

/// A one-line summary of an object_store error: the operation, the HTTP status and the
/// service's error code and message when there are any, else the innermost cause.
pub(crate) fn summarize(err: &object_store::Error) -> String {
    let mut full = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(s) = source {
        full.push_str(": ");
        full.push_str(&s.to_string());
        source = s.source();
    }
    let full = full.replace(['\n', '\r'], " ");
    let between = |open: &str, close: &str| -> Option<String> {
        let start = full.find(open)? + open.len();
        let end = start + full[start..].find(close)?;
        Some(full[start..end].trim().to_string())
    };
    let mut msg = match full.find(" - ") {
        Some(i) => full[..i].to_string(),
        None => first_line(&full).to_string(),
    };
    if let Some(status) = between("status code: ", ":") {
        msg = format!("{msg}: HTTP {status}");
    }
    match (
        between("<Code>", "</Code>"),
        between("<Message>", "</Message>"),
    ) {
        (Some(code), Some(m)) => {
            msg = format!(
                "{msg}: {code}: {}",
                m.split(" RequestId").next().unwrap_or(&m)
            )
        }
        (Some(code), None) => msg = format!("{msg}: {code}"),
        _ => {
            if let Some(inner) = full.rsplit(": ").next() {
                if !msg.contains(inner) {
                    msg = format!("{msg}: {inner}");
                }
            }
        }
    }
    const MAX: usize = 400;
    if msg.len() > MAX {
        let cut = (0..=MAX)
            .rev()
            .find(|i| msg.is_char_boundary(*i))
            .unwrap_or(0);
        msg.truncate(cut);
        msg.push('…');
    }
    msg
}

/// The hint for an error on `url`, from its backend: what is missing and what to set.
pub(crate) fn hint(
    url: &StoreUrl,
    endpoint: Option<&str>,
    err: &object_store::Error,
    summary: &str,
) -> String {
    let endpoint = endpoint.unwrap_or("the endpoint");
    let h = match url {
        StoreUrl::S3 { bucket, .. } => s3::hint(bucket, endpoint, err, summary),
        StoreUrl::Azure { container, .. } => azure::hint(container, endpoint, err, summary),
        StoreUrl::Gcs { bucket, .. } => gcs::hint(bucket, endpoint, err, summary),
        StoreUrl::Local(_) | StoreUrl::Memory { .. } => None,
    };
    h.map(|h| format!(" ({h})")).unwrap_or_default()
}

pub(crate) fn is_timeout(summary: &str) -> bool {
    let s = summary.to_ascii_lowercase();
    s.contains("timed out") || s.contains("timeout")
}

pub(crate) fn is_connect_error(summary: &str) -> bool {
    let s = summary.to_ascii_lowercase();
    s.contains("connection refused")
        || s.contains("error sending request")
        || s.contains("dns error")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use bytes::Bytes;
    use object_store::path::Path;

    use super::*;
    use crate::store::fault::FaultConfig;
    use crate::store::{Access, Store, StoreOptions};

    fn faulty(seed: u64) -> StoreOptions {
        StoreOptions {
            faults: Some(FaultConfig {
                rate: 1.0,
                seed,
                max_latency: Duration::ZERO,
                fail_first: 0,
            }),
            ..StoreOptions::default()
        }
    }

    /// Injected faults carry what a real one would: a 503 its status, a timeout, a reset or a
    /// cut body none; all of them may pass.
    #[tokio::test]
    async fn injected_faults_are_transient_and_a_503_says_so() {
        let url: StoreUrl = "memory://transience/p".parse().unwrap();
        let path = Path::from("x");
        let clean = Store::open_with(&url, Access::Write, &StoreOptions::default()).unwrap();
        clean
            .put(&path, Bytes::from_static(b"0123456789"))
            .await
            .unwrap();
        let mut statuses = Vec::new();
        for seed in 0..16 {
            let store = Store::open_with(&url, Access::Read, &faulty(seed)).unwrap();
            let err = store.get(&path).await.expect_err("every request faults");
            assert_eq!(err.transience(), Transience::Transient, "{err}");
            assert!(err.to_string().contains("injected fault"), "{err}");
            statuses.push(err.status());
        }
        assert!(statuses.contains(&Some(503)), "{statuses:?}");
        assert!(statuses.contains(&None), "{statuses:?}");
    }

    #[tokio::test]
    async fn a_missing_object_or_folder_is_permanent() {
        let url: StoreUrl = "memory://transience-missing".parse().unwrap();
        let store = Store::open_with(&url, Access::Read, &StoreOptions::default()).unwrap();
        let err = store.get(&Path::from("absent")).await.unwrap_err();
        assert!(err.is_not_found());
        assert_eq!(
            (err.status(), err.transience()),
            (None, Transience::Permanent)
        );

        let dir = tempfile::tempdir().unwrap();
        let url = StoreUrl::Local(dir.path().join("absent"));
        match Store::open_with(&url, Access::Read, &StoreOptions::default()) {
            Err(e @ StoreError::NoSuchFolder { .. }) => {
                assert_eq!(e.transience(), Transience::Permanent);
                assert!(e.to_string().ends_with("no such folder"), "{e}");
            }
            other => panic!("expected NoSuchFolder, got {other:?}"),
        }
    }

    /// The status comes from object_store's answer, wherever it sits in the error's sources.
    #[test]
    fn statuses_are_read_from_the_error_sources() {
        #[derive(Debug, thiserror::Error)]
        #[error("Server returned non-2xx status code: 429 Too Many Requests: slow down")]
        struct Answer;
        #[derive(Debug, thiserror::Error)]
        #[error("Error performing PUT in 1ms")]
        struct Retried(#[source] Answer);
        let err = object_store::Error::Generic {
            store: "S3",
            source: Box::new(Retried(Answer)),
        };
        assert_eq!(http_status(&err), Some(429));
        let err = StoreError::op(
            "writing",
            "s3://b/x".into(),
            String::new(),
            String::new(),
            err,
        );
        assert_eq!(err.transience(), Transience::Transient);
        let plain = object_store::Error::Generic {
            store: "S3",
            source: "HTTP 403 in the text only".into(),
        };
        assert_eq!(http_status(&plain), None);
    }
}
