//! [`TargetSet`]: which of a push's repositories lack a chunk, for any number of them (the
//! first 64 without allocating); and what a push's repositories must share.

use crate::chunker::ChunkerParams;
use crate::ids::Naming;
use crate::ops::OpError;
use crate::repo::Repository;

/// A set of target indexes (positions in a push's list of repositories).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TargetSet {
    /// Targets 0–63.
    first: u64,
    /// Targets 64 and up, 64 per word; empty for most pushes.
    rest: Vec<u64>,
}

impl TargetSet {
    /// The empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds target `t`.
    pub fn insert(&mut self, t: usize) {
        let (word, bit) = (t / 64, t % 64);
        if word == 0 {
            self.first |= 1 << bit;
            return;
        }
        if self.rest.len() < word {
            self.rest.resize(word, 0);
        }
        self.rest[word - 1] |= 1 << bit;
    }

    /// Whether target `t` is in the set.
    #[cfg(test)]
    pub fn contains(&self, t: usize) -> bool {
        let (word, bit) = (t / 64, t % 64);
        let w = match word {
            0 => self.first,
            n => self.rest.get(n - 1).copied().unwrap_or(0),
        };
        w & (1 << bit) != 0
    }

    /// No target at all.
    pub fn is_empty(&self) -> bool {
        self.first == 0 && self.rest.iter().all(|w| *w == 0)
    }

    /// The members, in increasing order.
    pub fn iter(&self) -> impl Iterator<Item = usize> + '_ {
        std::iter::once(self.first)
            .chain(self.rest.iter().copied())
            .enumerate()
            .flat_map(|(w, bits)| {
                (0..64)
                    .filter(move |b| bits & (1 << b) != 0)
                    .map(move |b| w * 64 + b)
            })
    }
}

impl FromIterator<usize> for TargetSet {
    fn from_iter<I: IntoIterator<Item = usize>>(iter: I) -> Self {
        let mut s = TargetSet::new();
        for t in iter {
            s.insert(t);
        }
        s
    }
}

/// The chunker parameters and zstd level of the first repository, which every other must
/// share, cutting and sealing alike (chunk ids would differ otherwise).
pub(crate) fn common_format(
    targets: &[(Repository, bool)],
) -> Result<(ChunkerParams, i32), OpError> {
    let Some((first, _)) = targets.first() else {
        return Err(OpError::TargetCount { count: 0 });
    };
    for (t, _) in &targets[1..] {
        check_alike(first, t)?;
    }
    Ok((first.config().chunker, first.config().zstd_level))
}

/// Whether chunks and frames carry over between `a` and `b` as they are: both cut alike
/// (chunker parameters) and sealed alike (both plain, or under one data key).
pub(crate) fn check_alike(a: &Repository, b: &Repository) -> Result<(), OpError> {
    if a.config().chunker != b.config().chunker {
        let (a, b) = (a.url(), b.url());
        return Err(OpError::ChunkerMismatch { a, b });
    }
    if !a.sealing().same_as(b.sealing()) {
        let (a, b) = (a.url(), b.url());
        return Err(OpError::KeyMismatch { a, b });
    }
    Ok(())
}

/// The local file cache's key for `source` pushed into repositories naming chunks by
/// `naming`: the source's key, and for keyed names the naming's public tag.
pub(crate) fn files_cache_key(source: &str, naming: &Naming) -> String {
    match naming.is_keyed() {
        false => source.to_string(),
        true => format!("{source}\nkeyed {}", naming.tag()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_any_number_of_targets() {
        let members = [0, 1, 63, 64, 65, 127, 128, 200, 1000];
        let s: TargetSet = members.iter().copied().collect();
        assert_eq!(s.iter().collect::<Vec<_>>(), members);
        for t in 0..1100 {
            assert_eq!(s.contains(t), members.contains(&t), "{t}");
        }
        assert!(!s.is_empty());
    }

    #[test]
    fn empty_and_small_sets_do_not_allocate() {
        let mut s = TargetSet::new();
        assert!(s.is_empty());
        assert!(!s.contains(70));
        s.insert(5);
        s.insert(63);
        assert_eq!(s.rest.capacity(), 0);
        assert_eq!(s.iter().collect::<Vec<_>>(), [5, 63]);
        // Inserting the same target twice changes nothing.
        s.insert(5);
        assert_eq!(s.iter().count(), 2);
    }
}
