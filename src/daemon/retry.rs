//! Which failures are worth retrying, and how long to wait: exponential backoff with jitter.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ops::OpError;
use crate::repo::RepoError;
use crate::store::StoreError;

/// Whether trying again may help.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FailureKind {
    /// The network, a busy server, a race: retried with backoff.
    Transient,
    /// Configuration, credentials, a missing bucket, corrupt data: reported at once; the next
    /// trigger tries again.
    Permanent,
}

/// Classifies an operation's error.
pub fn classify(e: &OpError) -> FailureKind {
    use FailureKind::{Permanent, Transient};
    match e {
        OpError::Store(s) | OpError::Repo(RepoError::Store(s)) => classify_store(s),
        OpError::Repo(RepoError::RefContention { .. }) => Transient,
        OpError::Repo(_) => Permanent,
        OpError::Index(_)
        | OpError::Join(_)
        | OpError::Cancelled
        | OpError::SourceChanged { .. }
        | OpError::PackWithdrawn { .. } => Transient,
        OpError::Io { source, .. } => match source.kind() {
            std::io::ErrorKind::NotFound | std::io::ErrorKind::PermissionDenied => Permanent,
            _ => Transient,
        },
        OpError::Chunker(_)
        | OpError::Source { .. }
        | OpError::Unsafe { .. }
        | OpError::ChunkerMismatch { .. }
        | OpError::Key(_)
        | OpError::Names(_)
        | OpError::Invalid(_) => Permanent,
    }
}

fn classify_store(e: &StoreError) -> FailureKind {
    use object_store::Error as E;
    use FailureKind::{Permanent, Transient};
    match e {
        StoreError::Url(_) | StoreError::Open { .. } => Permanent,
        StoreError::Op { cause, summary, .. } => match **cause {
            E::NotFound { .. }
            | E::PermissionDenied { .. }
            | E::Unauthenticated { .. }
            | E::InvalidPath { .. }
            | E::NotSupported { .. }
            | E::NotImplemented { .. }
            | E::UnknownConfigurationKey { .. } => Permanent,
            _ if client_error(summary) => Permanent,
            _ => Transient,
        },
    }
}

/// An HTTP 4xx other than 408 (timeout) and 429 (throttled) will not go away by itself.
fn client_error(summary: &str) -> bool {
    summary
        .match_indices("HTTP ")
        .filter_map(|(i, _)| summary.get(i + 5..i + 8))
        .filter_map(|code| code.parse::<u16>().ok())
        .any(|code| (400..500).contains(&code) && code != 408 && code != 429)
}

/// The wait before retry number `attempt` (1-based): `initial × 2^(attempt-1)`, capped at
/// `max`, then scaled by a random factor in [0.5, 1) so that failing targets do not retry in
/// lockstep.
pub fn backoff(attempt: u32, initial: Duration, max: Duration) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(max).mul_f64(0.5 + fastrand::f64() / 2.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_jitters_and_caps() {
        let (i, m) = (Duration::from_secs(1), Duration::from_secs(10));
        for attempt in 1..=8 {
            let full = Duration::from_secs(1 << (attempt - 1)).min(m);
            let d = backoff(attempt, i, m);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        assert!(backoff(60, i, m) <= m);
    }

    #[test]
    fn classification() {
        let io = |kind| OpError::io("/x", std::io::Error::from(kind));
        assert_eq!(
            classify(&io(std::io::ErrorKind::NotFound)),
            FailureKind::Permanent
        );
        assert_eq!(
            classify(&io(std::io::ErrorKind::TimedOut)),
            FailureKind::Transient
        );
        assert_eq!(
            classify(&OpError::Repo(RepoError::NotARepo { url: "x".into() })),
            FailureKind::Permanent
        );
        // A file still being written is read again on the next attempt.
        assert_eq!(
            classify(&OpError::SourceChanged {
                path: "/x".into(),
                what: "mtime".into()
            }),
            FailureKind::Transient
        );
        assert_eq!(
            classify(&OpError::PackWithdrawn {
                pack: "p".into(),
                repo: "file:///r".into(),
                why: crate::ops::Withdrawn::GcMark
            }),
            FailureKind::Transient
        );
        let store = |summary: &str| {
            OpError::Store(StoreError::Op {
                op: "writing",
                object: "s3://b/x".into(),
                summary: summary.into(),
                hint: String::new(),
                cause: Box::new(object_store::Error::Generic {
                    store: "S3",
                    source: summary.to_string().into(),
                }),
            })
        };
        assert_eq!(
            classify(&store("error sending request: connection refused")),
            FailureKind::Transient
        );
        assert_eq!(
            classify(&store("put failed: HTTP 503")),
            FailureKind::Transient
        );
        assert_eq!(
            classify(&store("put failed: HTTP 429")),
            FailureKind::Transient
        );
        assert_eq!(
            classify(&store("put failed: HTTP 403: AccessDenied")),
            FailureKind::Permanent
        );
    }
}
