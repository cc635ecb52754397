//! Object keys for the names of a tree: a relative `/`-separated path is its object key byte
//! for byte, both ways. `object_store`'s `Path::from` percent-encodes (`ü` → `%C3%BC`, `~` →
//! `%7E`), which writes objects under other names and double-encodes keys read from a listing;
//! every key made from a file name goes through [`object_key`] instead.

use object_store::path::Path;

use crate::store::StoreUrl;

/// Why a name cannot be an object key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("{name:?} cannot be an object key: {why}; rename it")]
    Unholdable { name: String, why: &'static str },
}

/// Source names a destination cannot hold, each with why. The command fails listing them
/// all; everything else was done.
#[derive(Debug, thiserror::Error)]
#[error("{dest} cannot hold {} name(s) of the source; rename them (everything else was written): {}", .names.len(), list(.names))]
pub struct UnholdableNames {
    pub dest: String,
    pub names: Vec<KeyError>,
}

fn list(names: &[KeyError]) -> String {
    names
        .iter()
        .map(|n| match n {
            KeyError::Unholdable { name, why } => format!("{name:?} ({why})"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// The object key of a relative name, exactly the name: no percent-encoding. Names
/// `object_store` cannot hold as they are (empty segments, `.` or `..` segments, control
/// characters) are an error naming them.
pub fn object_key(name: &str) -> Result<Path, KeyError> {
    let unholdable = |why| KeyError::Unholdable {
        name: name.to_string(),
        why,
    };
    if name.is_empty() || name.starts_with('/') || name.ends_with('/') {
        return Err(unholdable("object keys have no empty path segments"));
    }
    let path = Path::parse(name).map_err(|e| {
        unholdable(match e {
            object_store::path::Error::EmptySegment { .. } => {
                "object keys have no empty path segments"
            }
            _ => "object keys hold no control characters and no '.' or '..' segments",
        })
    })?;
    debug_assert_eq!(path.as_ref(), name);
    Ok(path)
}

/// The key of `name` at the store `url` names, or why that store cannot hold it: besides
/// [`object_key`]'s rule, `object_store`'s local file store hides files named like its own
/// staging files (`name#123`), and Azure Blob storage turns `\` into `/`.
pub fn key_at(url: &StoreUrl, name: &str) -> Result<Path, KeyError> {
    let path = object_key(name)?;
    let unholdable = |why| KeyError::Unholdable {
        name: name.to_string(),
        why,
    };
    match url {
        StoreUrl::Local(_) => {
            let last = name.rsplit('/').next().unwrap_or(name);
            if let Some((_, digits)) = last.rsplit_once('#') {
                if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
                    return Err(unholdable(
                        "a local object store keeps names ending in '#' and digits for its temporary files",
                    ));
                }
            }
        }
        StoreUrl::Azure { .. } if name.contains('\\') => {
            return Err(unholdable("Azure Blob storage turns '\\' into '/'"));
        }
        _ => {}
    }
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn keys_are_the_names() {
        for name in [
            "ünï-日本.txt",
            "a~b/c#1.txt",
            "x%41y",
            "we ird/[a]{b}^`|\\\"<>*?.bin",
            "dot./..x/...",
        ] {
            assert_eq!(object_key(name).unwrap().as_ref(), name);
        }
    }

    #[test]
    fn unholdable_names_are_named() {
        for name in [
            "",
            "a//b",
            "a/./b",
            "..",
            "a/..",
            "tab\there",
            "/abs",
            "dir/",
        ] {
            let err = object_key(name).unwrap_err();
            assert!(err.to_string().contains("rename it"), "{name:?}: {err}");
        }
        let local = StoreUrl::Local("/tmp/x".into());
        assert!(key_at(&local, "a/notes#12").is_err());
        assert!(key_at(&local, "a/notes#1.txt").is_ok());
        assert!(key_at(&local, "a/notes#").is_ok());
        let azure = StoreUrl::Azure {
            container: "c".into(),
            prefix: "p".into(),
        };
        assert!(key_at(&azure, "a\\b").is_err());
        assert!(key_at(&azure, "a#12").is_ok());
    }

    proptest! {
        #[test]
        fn any_name_without_control_characters_is_its_own_key(
            parts in prop::collection::vec("[^/\\x00-\\x1f\\x7f]{1,40}", 1..4)
        ) {
            prop_assume!(parts.iter().all(|p| p != "." && p != ".."));
            let name = parts.join("/");
            let key = object_key(&name).unwrap();
            prop_assert_eq!(key.as_ref(), name.as_str());
        }
    }
}
