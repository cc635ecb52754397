//! `--include` / `--exclude`: which paths of a snapshot a restore or a pull takes.
//!
//! Globs match a path relative to the snapshot's root, `/`-separated; `*` also crosses `/`,
//! so `*.safetensors` takes every safetensors file at any depth and `optimizer/**` or
//! `optimizer/*` a whole folder. A path is taken when it matches an include (or there are
//! none) and no exclude. A glob that matches no path of the snapshot is an error naming it:
//! a typo must not silently restore nothing, or everything.

use std::collections::HashSet;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::repo::snapshot::{Entry, Snapshot};

/// An invalid glob, or one that matches nothing.
#[derive(Debug, thiserror::Error)]
pub enum SelectError {
    /// A glob that does not parse.
    #[error("invalid glob {glob:?}: {reason}")]
    Invalid {
        /// The glob as given.
        glob: String,
        /// Why it does not parse.
        reason: String,
    },
    /// A glob no path of the snapshot matches (most likely a typo).
    #[error("{flag} {glob:?} matches no path of the snapshot (globs match paths from the snapshot's root, e.g. \"*.safetensors\" or \"optimizer/*\")")]
    MatchesNothing {
        /// `--include` or `--exclude`.
        flag: &'static str,
        /// The glob as given.
        glob: String,
    },
}

/// The parsed `--include` and `--exclude` globs.
#[derive(Debug, Clone, Default)]
pub struct Selection {
    include: Vec<String>,
    exclude: Vec<String>,
    include_set: Option<GlobSet>,
    exclude_set: Option<GlobSet>,
}

impl Selection {
    /// Parses the globs; no globs at all selects everything.
    pub fn new(include: &[String], exclude: &[String]) -> Result<Self, SelectError> {
        Ok(Selection {
            include: include.to_vec(),
            exclude: exclude.to_vec(),
            include_set: build(include)?,
            exclude_set: build(exclude)?,
        })
    }

    /// True when no glob was given.
    pub fn is_everything(&self) -> bool {
        self.include.is_empty() && self.exclude.is_empty()
    }

    fn takes(&self, path: &str) -> bool {
        let included = self.include_set.as_ref().is_none_or(|s| s.is_match(path));
        included && !self.exclude_set.as_ref().is_some_and(|s| s.is_match(path))
    }

    /// The snapshot with only the selected files and symlinks, and the folders above them
    /// (a folder that matches an include is taken whole). Errors name a glob that matched no
    /// path at all.
    pub fn apply(&self, snap: &Snapshot) -> Result<Snapshot, SelectError> {
        if self.is_everything() {
            return Ok(snap.clone());
        }
        self.check_each_matches(snap)?;
        let mut taken: Vec<bool> = snap
            .entries
            .iter()
            .map(|e| !matches!(e, Entry::Dir { .. }) && self.takes(e.path()))
            .collect();
        // Whole folders: an included folder takes what is below it (unless excluded).
        let folders: Vec<&str> = snap
            .entries
            .iter()
            .filter(|e| matches!(e, Entry::Dir { .. }) && self.takes(e.path()))
            .map(Entry::path)
            .collect();
        for (i, e) in snap.entries.iter().enumerate() {
            let below = folders
                .iter()
                .any(|f| e.path().starts_with(f) && e.path()[f.len()..].starts_with('/'));
            if below && !self.excluded(e.path()) {
                taken[i] = true;
            }
        }
        // The folders above anything taken.
        let mut parents: HashSet<&str> = HashSet::new();
        for (i, e) in snap.entries.iter().enumerate() {
            if taken[i] || folders.contains(&e.path()) {
                let mut p = e.path();
                while let Some((up, _)) = p.rsplit_once('/') {
                    parents.insert(up);
                    p = up;
                }
            }
        }
        let entries = snap
            .entries
            .iter()
            .zip(&taken)
            .filter(|(e, t)| {
                **t || (matches!(e, Entry::Dir { .. })
                    && (parents.contains(e.path()) || folders.contains(&e.path())))
            })
            .map(|(e, _)| e.clone())
            .collect();
        Ok(Snapshot {
            entries,
            ..snap.clone()
        })
    }

    fn excluded(&self, path: &str) -> bool {
        self.exclude_set.as_ref().is_some_and(|s| s.is_match(path))
    }

    fn check_each_matches(&self, snap: &Snapshot) -> Result<(), SelectError> {
        for (flag, globs) in [("--include", &self.include), ("--exclude", &self.exclude)] {
            for glob in globs {
                let one = build(std::slice::from_ref(glob))?.expect("one glob");
                if !snap.entries.iter().any(|e| one.is_match(e.path())) {
                    return Err(SelectError::MatchesNothing {
                        flag,
                        glob: glob.clone(),
                    });
                }
            }
        }
        Ok(())
    }
}

fn build(globs: &[String]) -> Result<Option<GlobSet>, SelectError> {
    if globs.is_empty() {
        return Ok(None);
    }
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|e| SelectError::Invalid {
            glob: g.clone(),
            reason: e.kind().to_string(),
        })?);
    }
    b.build().map(Some).map_err(|e| SelectError::Invalid {
        glob: globs.join(" "),
        reason: e.kind().to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::FileHash;

    fn file(path: &str) -> Entry {
        Entry::File {
            path: path.into(),
            size: 0,
            mode: 0o644,
            mtime_ns: 0,
            blake3: FileHash::of(b""),
            layout: Default::default(),
            chunks: vec![],
        }
    }

    fn dir(path: &str) -> Entry {
        Entry::Dir {
            path: path.into(),
            mode: 0o755,
        }
    }

    fn snap() -> Snapshot {
        Snapshot {
            version: 1,
            time: String::new(),
            name: "m".into(),
            source: String::new(),
            parent: None,
            entries: vec![
                file("config.json"),
                dir("model"),
                file("model/a.safetensors"),
                file("model/b.safetensors"),
                dir("optimizer"),
                file("optimizer/state.bin"),
                dir("optimizer/deep"),
                file("optimizer/deep/x.bin"),
            ],
        }
    }

    fn paths(s: &Snapshot) -> Vec<&str> {
        s.entries.iter().map(Entry::path).collect()
    }

    fn sel(inc: &[&str], exc: &[&str]) -> Selection {
        let v = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Selection::new(&v(inc), &v(exc)).unwrap()
    }

    #[test]
    fn includes_take_matching_files_and_their_folders() {
        let s = sel(&["*.safetensors", "config.json"], &[])
            .apply(&snap())
            .unwrap();
        assert_eq!(
            paths(&s),
            [
                "config.json",
                "model",
                "model/a.safetensors",
                "model/b.safetensors"
            ]
        );
    }

    #[test]
    fn excludes_drop_matching_paths_and_a_folder_glob_takes_its_contents() {
        let s = sel(&[], &["optimizer/*"]).apply(&snap()).unwrap();
        assert_eq!(
            paths(&s),
            [
                "config.json",
                "model",
                "model/a.safetensors",
                "model/b.safetensors",
                "optimizer"
            ]
        );
        let s = sel(&["optimizer"], &["*.bin"]).apply(&snap()).unwrap();
        assert_eq!(paths(&s), ["optimizer", "optimizer/deep"]);
    }

    #[test]
    fn no_globs_take_everything() {
        assert_eq!(sel(&[], &[]).apply(&snap()).unwrap(), snap());
    }

    #[test]
    fn a_glob_that_matches_nothing_is_named() {
        let e = sel(&["*.safetensor"], &[]).apply(&snap()).unwrap_err();
        assert!(e.to_string().contains("--include \"*.safetensor\""), "{e}");
        let e = sel(&[], &["*.pt"]).apply(&snap()).unwrap_err();
        assert!(e.to_string().contains("--exclude \"*.pt\""), "{e}");
        assert!(Selection::new(&["a[".into()], &[]).is_err());
    }
}
