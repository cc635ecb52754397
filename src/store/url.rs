//! `StoreUrl`: the parsed form of `file://`, plain paths, `s3://`, `az://`, `gs://` and
//! `memory://`.

use std::fmt;
use std::path::{Component, PathBuf};
use std::str::FromStr;

/// A location on some store: where a repository, a source or a restore destination lives.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum StoreUrl {
    /// A local folder (absolute, normalized).
    Local(PathBuf),
    /// An S3 bucket, or a prefix in it.
    S3 {
        /// The bucket name.
        bucket: String,
        /// Key prefix, without leading or trailing `/`; empty for the whole bucket.
        prefix: String,
    },
    /// An Azure Blob container, or a prefix in it.
    Azure {
        /// The container name.
        container: String,
        /// Key prefix, without leading or trailing `/`; empty for the whole container.
        prefix: String,
    },
    /// A Google Cloud Storage bucket, or a prefix in it.
    Gcs {
        /// The bucket name.
        bucket: String,
        /// Key prefix, without leading or trailing `/`; empty for the whole bucket.
        prefix: String,
    },
    /// Process-local in-memory store, for tests.
    Memory {
        /// The store's name: in one process, stores of the same name share their objects.
        name: String,
        /// Key prefix, without leading or trailing `/`.
        prefix: String,
    },
}

/// A URL ferry cannot use.
#[derive(Debug, thiserror::Error)]
#[error("invalid store URL {url:?}: {reason}")]
pub struct UrlError {
    url: String,
    reason: String,
}

impl StoreUrl {
    /// The URL of `path` below this location.
    pub fn join(&self, path: &str) -> String {
        let base = self.to_string();
        if path.is_empty() {
            base
        } else if base.ends_with('/') {
            format!("{base}{path}")
        } else {
            format!("{base}/{path}")
        }
    }

    /// True for local folders.
    pub fn is_local(&self) -> bool {
        matches!(self, StoreUrl::Local(_))
    }
}

impl FromStr for StoreUrl {
    type Err = UrlError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| UrlError {
            url: redact(s),
            reason: reason.to_string(),
        };
        let Some((scheme, rest)) = s.split_once("://") else {
            if s.is_empty() {
                return Err(err("empty"));
            }
            // A plain path is a file name: '?' and '#' are ordinary characters in it.
            return local(s).map_err(|e| err(&format!("cannot resolve a relative path: {e}")));
        };
        if rest.contains(['?', '#']) {
            // Whatever follows is no part of a key, and may be a secret (an Azure SAS, a
            // presigned S3 signature): refuse it rather than store under it or echo it.
            return Err(err(QUERY_REFUSED));
        }
        match scheme {
            "file" => {
                if !rest.starts_with('/') {
                    return Err(err("file URLs need an absolute path: file:///abs/path"));
                }
                local(rest).map_err(|e| err(&format!("cannot resolve a relative path: {e}")))
            }
            "s3" | "az" | "azure" | "gs" | "memory" => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                let prefix = prefix.trim_matches('/').to_string();
                if bucket.is_empty() {
                    return Err(err("the bucket or container name is missing"));
                }
                if prefix.split('/').any(|p| p == ".." || p == ".") {
                    return Err(err("the prefix may not contain '.' or '..'"));
                }
                if prefix.contains("//") {
                    return Err(err("the prefix may not contain empty segments"));
                }
                let bucket = bucket.to_string();
                Ok(match scheme {
                    "s3" => {
                        if !valid_bucket(&bucket) {
                            return Err(err("S3 bucket names use 3-63 lowercase letters, digits, '.' and '-'"));
                        }
                        StoreUrl::S3 { bucket, prefix }
                    }
                    "gs" => {
                        if !valid_gcs_bucket(&bucket) {
                            return Err(err(GCS_BUCKET_RULE));
                        }
                        StoreUrl::Gcs { bucket, prefix }
                    }
                    "memory" => StoreUrl::Memory { name: bucket, prefix },
                    _ => {
                        if !valid_bucket(&bucket) || bucket.contains('.') {
                            return Err(err("Azure container names use 3-63 lowercase letters, digits and '-'"));
                        }
                        StoreUrl::Azure {
                            container: bucket,
                            prefix,
                        }
                    }
                })
            }
            other => Err(err(&format!(
                "unsupported scheme {other:?}: use file:///path, s3://bucket/prefix, az://container/prefix or gs://bucket/prefix"
            ))),
        }
    }
}

/// Why a URL with a query string or fragment is refused, and what to do instead.
const QUERY_REFUSED: &str = "a store URL takes no query string or fragment ('?…', '#…'): pass credentials in the environment (AZURE_STORAGE_SAS_TOKEN for an Azure SAS, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for S3), never in the URL";

/// The URL with any `user:password@` part and any query string or fragment replaced, so an
/// error never echoes a secret.
fn redact(url: &str) -> String {
    match url.split_once("://") {
        Some((scheme, rest)) => {
            let rest = match rest.find(['?', '#']) {
                Some(i) => format!("{}{}***", &rest[..i], &rest[i..i + 1]),
                None => rest.to_string(),
            };
            let host_end = rest.find('/').unwrap_or(rest.len());
            match rest[..host_end].rfind('@') {
                Some(at) => format!("{scheme}://***@{}", &rest[at + 1..]),
                None => format!("{scheme}://{rest}"),
            }
        }
        None => url.to_string(),
    }
}

/// What a GCS bucket name may be, for the error that refuses one.
const GCS_BUCKET_RULE: &str = "GCS bucket names use 3-63 lowercase letters, digits, '-', '_' and '.' (up to 222 with dots, 63 between them), start and end with a letter or digit, and do not start with \"goog\"";

/// Google's bucket naming rules (what a bucket can be created with).
fn valid_gcs_bucket(b: &str) -> bool {
    let max = if b.contains('.') { 222 } else { 63 };
    let edge = |c: Option<u8>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
    (3..=max).contains(&b.len())
        && b.bytes().all(|c| {
            c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, b'-' | b'_' | b'.')
        })
        && edge(b.bytes().next())
        && edge(b.bytes().last())
        && b.split('.')
            .all(|part| !part.is_empty() && part.len() <= 63)
        && !b.starts_with("goog")
}

fn valid_bucket(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'-' || c == b'.')
        && b.as_bytes()[0].is_ascii_alphanumeric()
}

/// Makes a local path absolute and lexically normal (no `.`/`..`), without touching the disk.
/// Fails only when a relative path meets a working directory that cannot be read.
fn local(path: &str) -> Result<StoreUrl, std::io::Error> {
    let p = PathBuf::from(path);
    let abs = if p.is_absolute() {
        p
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut out = PathBuf::new();
    for c in abs.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    Ok(StoreUrl::Local(out))
}

impl fmt::Display for StoreUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (scheme, bucket, prefix) = match self {
            StoreUrl::Local(p) => return write!(f, "file://{}", p.display()),
            StoreUrl::S3 { bucket, prefix } => ("s3", bucket, prefix),
            StoreUrl::Azure { container, prefix } => ("az", container, prefix),
            StoreUrl::Gcs { bucket, prefix } => ("gs", bucket, prefix),
            StoreUrl::Memory { name, prefix } => ("memory", name, prefix),
        };
        if prefix.is_empty() {
            write!(f, "{scheme}://{bucket}")
        } else {
            write!(f, "{scheme}://{bucket}/{prefix}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_each_scheme() {
        assert_eq!(
            "s3://models/llama/7b/".parse::<StoreUrl>().unwrap(),
            StoreUrl::S3 {
                bucket: "models".into(),
                prefix: "llama/7b".into()
            }
        );
        assert_eq!(
            "az://ckpt".parse::<StoreUrl>().unwrap(),
            StoreUrl::Azure {
                container: "ckpt".into(),
                prefix: "".into()
            }
        );
        assert_eq!(
            "gs://ckpt_runs/llama/".parse::<StoreUrl>().unwrap(),
            StoreUrl::Gcs {
                bucket: "ckpt_runs".into(),
                prefix: "llama".into()
            }
        );
        assert_eq!(
            "gs://a.b-c/x/y".parse::<StoreUrl>().unwrap().to_string(),
            "gs://a.b-c/x/y"
        );
        assert_eq!(
            "file:///tmp/a/../b".parse::<StoreUrl>().unwrap(),
            StoreUrl::Local("/tmp/b".into())
        );
        assert_eq!(
            "/tmp/x/./y".parse::<StoreUrl>().unwrap(),
            StoreUrl::Local("/tmp/x/y".into())
        );
        assert_eq!(
            "s3://models/a/b".parse::<StoreUrl>().unwrap().to_string(),
            "s3://models/a/b"
        );
    }

    #[test]
    fn credentials_in_a_url_are_never_echoed() {
        let e = "s3://AKIAXX:s3cr3t@bucket/x"
            .parse::<StoreUrl>()
            .unwrap_err()
            .to_string();
        assert!(!e.contains("s3cr3t") && !e.contains("AKIAXX"), "{e}");
        assert!(e.contains("***@bucket/x"), "{e}");
    }

    #[test]
    fn a_query_or_fragment_is_refused_and_never_echoed() {
        for url in [
            "az://ckpt/run?sv=2024-01-01&sig=SECRETSIG",
            "az://ckpt?sig=SECRETSIG",
            "s3://bucket/p/x?X-Amz-Signature=SECRETSIG",
            "s3://bucket#SECRETSIG",
            "memory://m/p#SECRETSIG",
            "file:///tmp/x?SECRETSIG",
            "s3://AKIAXX:SECRETSIG@bucket/x?SECRETSIG",
        ] {
            let e = url.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(!e.contains("SECRETSIG"), "{url}: {e}");
            assert!(e.contains("no query string"), "{url}: {e}");
            assert!(e.contains("AZURE_STORAGE_SAS_TOKEN"), "{url}: {e}");
        }
        // In a plain path, '?' and '#' are ordinary file-name characters.
        assert_eq!(
            "/tmp/what?#".parse::<StoreUrl>().unwrap(),
            StoreUrl::Local("/tmp/what?#".into())
        );
    }

    proptest::proptest! {
        /// Whatever the scheme and wherever the query or fragment starts, the secret after it
        /// is refused and never echoed.
        #[test]
        fn no_secret_after_a_query_or_fragment_is_echoed(
            scheme in proptest::sample::select(vec!["s3", "az", "azure", "gs", "memory", "file"]),
            path in "[a-z0-9/._-]{0,20}",
            mark in proptest::sample::select(vec!['?', '#']),
            secret in "[A-Za-z0-9%=&+/]{8,40}",
        ) {
            let url = format!("{scheme}://bucket/{path}{mark}SECRET{secret}");
            let e = url.parse::<StoreUrl>().unwrap_err().to_string();
            proptest::prop_assert!(!e.contains(&format!("SECRET{secret}")), "{}", e);
            proptest::prop_assert!(e.contains("no query string"), "{}", e);
        }
    }

    #[test]
    fn rejects_bad_urls_with_reasons() {
        for (url, needle) in [
            ("ftp://host/x", "unsupported scheme"),
            ("s3:///x", "missing"),
            ("s3://Bad_Bucket/x", "bucket names"),
            ("az://c.with.dots/x", "container names"),
            ("gs://Bad/x", "GCS bucket names"),
            ("gs://-dash/x", "GCS bucket names"),
            ("gs://google-x/x", "GCS bucket names"),
            ("gs://ab/x", "GCS bucket names"),
            ("gs://a..b/x", "GCS bucket names"),
            ("s3://bucket/a/../b", "'..'"),
            ("file://relative", "absolute"),
        ] {
            let e = url.parse::<StoreUrl>().unwrap_err().to_string();
            assert!(e.contains(needle), "{url}: {e}");
            assert!(e.contains(url), "{url}: {e}");
        }
    }
}
