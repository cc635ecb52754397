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
    use crate::store::delta::NativeError;
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
        assert_eq!(
            classify(&OpError::Repo(RepoError::Store(StoreError::Op {
                op: "reading",
                object: "s3://b/x".into(),
                summary: "get failed: HTTP 503".into(),
                hint: String::new(),
                status: Some(503),
                cause: Box::new(object_store::Error::Generic {
                    store: "S3",
                    source: "HTTP 503".into(),
                }),
            }))),
            FailureKind::Transient,
            "a store failure inside a repository error keeps the store's verdict"
        );
    }

    /// Races are retried: the next attempt sees the world after the other writer.
    #[test]
    fn races_are_transient() {
        let transient = [
            OpError::Repo(RepoError::RefContention {
                name: "m".into(),
                url: "file:///r".into(),
            }),
            OpError::MirrorSourceChanged {
                path: "/src/a".into(),
                listed: 10,
                read: 12,
            },
            OpError::PackWithdrawn {
                pack: "p".into(),
                repo: "file:///r".into(),
                why: crate::ops::Withdrawn::Damaged,
            },
            OpError::Native(NativeError::Changed {
                url: "s3://b/x".into(),
                expected: "e1".into(),
            }),
            OpError::Native(NativeError::Source {
                url: "s3://b/x".into(),
                source: std::io::Error::from(std::io::ErrorKind::Interrupted),
            }),
            OpError::Cancelled,
        ];
        for e in &transient {
            assert_eq!(classify(e), FailureKind::Transient, "{e}");
        }
    }

    /// What the user must fix first is not retried: the text says what to do.
    #[test]
    fn what_the_user_must_fix_is_permanent() {
        let id = crate::ids::ChunkId::from(blake3::hash(b"x"));
        let permanent = [
            OpError::PackSizeOutOfRange { size: 1 },
            OpError::TargetCount { count: 65 },
            OpError::RepoInsideSource {
                source_url: "file:///a".into(),
                repo: "file:///a/r".into(),
            },
            OpError::MirrorInsideSource {
                source_url: "file:///a".into(),
                dest: "file:///a/m".into(),
            },
            OpError::DeleteEverything {
                source_url: "file:///a".into(),
                objects: 3,
                dest: "s3://b/m".into(),
            },
            OpError::KeepEveryWithoutKeep,
            OpError::KeepEveryZero,
            OpError::NoPartials {
                run: "r".into(),
                name: "m".into(),
                repo: "file:///r".into(),
            },
            OpError::MixedShardCounts {
                run: "r".into(),
                name: "m".into(),
                repo: "file:///r".into(),
            },
            OpError::ShardCountMismatch {
                run: "r".into(),
                repo: "file:///r".into(),
                planned: 2,
                given: 3,
            },
            OpError::RunFromOtherSource {
                run: "r".into(),
                repo: "file:///r".into(),
                from: "file:///s".into(),
            },
            OpError::ShardChunkMissing {
                chunk: id,
                repo: "file:///r".into(),
                run: "r".into(),
                owner: 1,
                count: 2,
            },
            OpError::SourcePath {
                path: "s3://b/a/../x".into(),
                why: "'.' or '..' in path",
            },
            OpError::NonUtf8Name {
                path: "/src/\u{fffd}".into(),
            },
            OpError::NonUtf8Target {
                path: "/src/l".into(),
            },
            OpError::RestoredMismatch {
                path: "a".into(),
                got: crate::ids::FileHash(id.0),
                want: crate::ids::FileHash(id.0),
            },
            OpError::Bug("a local source opened no file"),
            OpError::Native(NativeError::Config("no endpoint".into())),
            OpError::Native(NativeError::Source {
                url: "s3://b/x".into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            }),
        ];
        for e in &permanent {
            assert_eq!(classify(e), FailureKind::Permanent, "{e}");
        }
        // Each names the object it is about or the option to change.
        assert!(permanent[0].to_string().contains("--pack-size"));
        assert!(permanent[3].to_string().contains("file:///a/m"));
        assert!(permanent[11]
            .to_string()
            .contains("rerun shard 1/2 with --run r"));
    }

    /// A delta whose base cannot be read is retried when reading the base failed for a
    /// passing reason, not when the base itself is damaged; either way it is corruption
    /// news naming both chunks.
    #[test]
    fn an_unreadable_delta_base_follows_its_cause() {
        let (chunk, base) = (crate::ids::ChunkId([1; 32]), crate::ids::ChunkId([2; 32]));
        let unreadable = |source: OpError| OpError::DeltaBaseUnreadable {
            object: "s3://b/r/packs/ab/abcd".into(),
            chunk,
            offset: 7,
            base,
            source: Box::new(source),
        };
        let damaged = unreadable(OpError::Repo(RepoError::BadFrame {
            object: "s3://b/r/packs/cd/cdef".into(),
            chunk: base,
            offset: 0,
            problem: Box::new(crate::codec::FrameError::Empty),
        }));
        assert_eq!(classify(&damaged), FailureKind::Permanent, "{damaged}");
        assert!(damaged.is_corrupt());
        assert_eq!(
            damaged.to_string(),
            format!("s3://b/r/packs/ab/abcd: chunk {chunk} at offset 7 is stored as a delta against base chunk {base}, which cannot be read: s3://b/r/packs/cd/cdef: chunk {base} at offset 0: empty frame")
        );
        let slow = unreadable(OpError::io("/dest/f", std::io::ErrorKind::TimedOut.into()));
        assert_eq!(classify(&slow), FailureKind::Transient, "{slow}");
        assert!(slow.is_corrupt());
    }
}
