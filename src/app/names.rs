//! Names checked once, where they enter the program (the command line, the config, the API):
//! [`RefName`] and [`RunId`]. Whoever holds one knows it is valid; nothing checks it again.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::repo::{check_ref_name, RepoError};

/// A ref's name: letters, digits, `.`, `_`, `-`; not starting with `.`; at most 128 bytes
/// (the rule of [`crate::repo::check_ref_name`]).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RefName(String);

impl RefName {
    /// Checks `name`; the error names it ([`RepoError::BadRefName`]).
    pub fn parse(name: &str) -> Result<Self, RepoError> {
        check_ref_name(name)?;
        Ok(RefName(name.to_string()))
    }

    /// The name as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The id every shard of one sharded push or replication shares (e.g. a Kubernetes Job's
/// uid): the same characters as a ref name (`repo::partial::check_run_id`).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RunId(String);

impl RunId {
    /// Checks `run`; the error names it ([`RepoError::BadRunId`]).
    pub fn parse(run: &str) -> Result<Self, RepoError> {
        crate::repo::partial::check_run_id(run)?;
        Ok(RunId(run.to_string()))
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

macro_rules! name_impls {
    ($t:ident) => {
        impl FromStr for $t {
            type Err = RepoError;
            fn from_str(s: &str) -> Result<Self, RepoError> {
                $t::parse(s)
            }
        }

        impl TryFrom<String> for $t {
            type Error = RepoError;
            fn try_from(s: String) -> Result<Self, RepoError> {
                $t::parse(&s)
            }
        }

        impl From<$t> for String {
            fn from(n: $t) -> String {
                n.0
            }
        }

        impl From<&$t> for String {
            fn from(n: &$t) -> String {
                n.0.clone()
            }
        }

        /// The checked text, for code that only reads it.
        impl std::ops::Deref for $t {
            type Target = str;
            fn deref(&self) -> &str {
                &self.0
            }
        }

        impl AsRef<str> for $t {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $t {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

name_impls!(RefName);
name_impls!(RunId);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ref_names_are_checked_once_at_parse() {
        for ok in ["llama-7b", "a", "v1.2_rc-3", &"x".repeat(128)] {
            let n = RefName::parse(ok).unwrap();
            assert_eq!(n.as_str(), ok);
            assert_eq!(n.to_string(), ok);
            assert_eq!(ok.parse::<RefName>().unwrap(), n);
        }
        for bad in ["", ".hidden", "a/b", "a b", "ä", "../x", &"x".repeat(129)] {
            let e = RefName::parse(bad).unwrap_err();
            assert!(
                matches!(&e, RepoError::BadRefName { name } if name == bad),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn run_ids_are_checked_once_at_parse() {
        assert_eq!(RunId::parse("job-42.a_b").unwrap().as_str(), "job-42.a_b");
        for bad in ["", ".x", "a/b", "a:b"] {
            let e = RunId::parse(bad).unwrap_err();
            assert!(
                matches!(&e, RepoError::BadRunId { run } if run == bad),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn names_round_trip_through_json_and_refuse_bad_ones() {
        let n = RefName::parse("model").unwrap();
        let json = serde_json::to_string(&n).unwrap();
        assert_eq!(json, "\"model\"");
        assert_eq!(serde_json::from_str::<RefName>(&json).unwrap(), n);
        assert!(serde_json::from_str::<RefName>("\"a/b\"").is_err());
        assert!(serde_json::from_str::<RunId>("\"\"").is_err());
    }
}
