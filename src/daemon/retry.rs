//! Which failures are worth retrying, and how long to wait: exponential backoff with jitter.

use std::time::Duration;

use crate::ops::OpError;

/// Whether trying again may help; the daemon's retry decision. Decided where the error is
/// seen ([`OpError::transience`], [`StoreError::transience`]).
pub use crate::error::Transience as FailureKind;

/// Classifies an operation's error.
pub fn classify(e: &OpError) -> FailureKind {
    e.transience()
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
    use crate::repo::RepoError;
    use crate::store::StoreError;

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
                // The status the response carried, as the summary tells it.
                status: summary
                    .split("HTTP ")
                    .nth(1)
                    .and_then(|s| s.get(..3)?.parse().ok()),
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
