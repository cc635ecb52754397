//! Checkpoint completion: lists the checkpoints in a source folder (the folder itself, or each
//! step subfolder), fingerprints them, and decides when each is complete — its marker is
//! there (or the `latest` pointer names it or a later step) and its fingerprint has not
//! changed for the settle period. Fingerprints, not file times, decide "settled", so a copy
//! that preserves old modification times is still seen as in progress.

use std::cmp::Ordering;
use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tokio::time::Instant;

use crate::config::{Completion, Layout};

/// The one item of a `layout = "tree"` job.
pub const TREE_ITEM: &str = "tree";

/// A summary of a checkpoint's files: any write, rename or new file changes it.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Fingerprint {
    pub files: u64,
    pub bytes: u64,
    /// Newest modification time of any entry, Unix ns.
    pub newest_mtime_ns: i64,
    digest: [u8; 16],
}

impl Fingerprint {
    /// A fingerprint from its parts (per-file settling fingerprints its own selection).
    pub fn from_digest(files: u64, bytes: u64, newest_mtime_ns: i64, hash: blake3::Hash) -> Self {
        let mut digest = [0u8; 16];
        digest.copy_from_slice(&hash.as_bytes()[..16]);
        Fingerprint {
            files,
            bytes,
            newest_mtime_ns,
            digest,
        }
    }
}

/// One checkpoint found by a scan.
#[derive(Debug, Clone)]
pub struct Candidate {
    pub item: String,
    pub fingerprint: Fingerprint,
    /// A file matching the marker pattern is in the checkpoint's top folder.
    pub marker: bool,
}

/// What one scan of a source folder found.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub candidates: Vec<Candidate>,
    /// The step the `latest` pointer names, when configured and present.
    pub latest: Option<String>,
}

/// Why a checkpoint is not complete yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Waiting {
    Marker,
    Latest,
    Settle,
}

/// Lists and fingerprints the checkpoints under `root`, skipping step folders named in
/// `skip` (already handled for every target). Blocking: run it on a blocking thread.
pub fn scan(
    root: &Path,
    layout: Layout,
    complete: &Completion,
    skip: &HashSet<String>,
) -> std::io::Result<Scan> {
    let mut out = Scan::default();
    let candidate = |item: String, path: PathBuf| -> std::io::Result<Candidate> {
        let fp = fingerprint(&path)?;
        let marker = match &complete.marker {
            Some(p) => std::fs::read_dir(&path)?
                .filter_map(Result::ok)
                .any(|e| e.file_name().to_str().is_some_and(|n| p.matches(n))),
            None => true,
        };
        Ok(Candidate {
            item,
            fingerprint: fp,
            marker,
        })
    };
    match layout {
        Layout::Tree => out
            .candidates
            .push(candidate(TREE_ITEM.into(), root.into())?),
        Layout::Steps => {
            if let Some(name) = &complete.latest {
                out.latest = match std::fs::read_to_string(root.join(name)) {
                    Ok(text) => text
                        .trim()
                        .trim_end_matches('/')
                        .rsplit('/')
                        .next()
                        .filter(|s| !s.is_empty())
                        .map(String::from),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => return Err(e),
                };
            }
            let mut steps = Vec::new();
            for entry in std::fs::read_dir(root)? {
                let entry = entry?;
                let Ok(name) = entry.file_name().into_string() else {
                    continue;
                };
                if name.starts_with('.') || skip.contains(&name) || !entry.file_type()?.is_dir() {
                    continue;
                }
                steps.push(name);
            }
            steps.sort_by(|a, b| natural_cmp(a, b));
            for name in steps {
                match candidate(name.clone(), root.join(&name)) {
                    Ok(c) => out.candidates.push(c),
                    // Renamed or removed while we looked (a writer's temporary folder).
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(e),
                }
            }
        }
    }
    Ok(out)
}

/// The fingerprint of everything under `path`. Blocking.
pub fn fingerprint(path: &Path) -> std::io::Result<Fingerprint> {
    let mut h = blake3::Hasher::new();
    let mut fp = Fingerprint::default();
    walk(path, "", &mut fp, &mut h)?;
    fp.digest.copy_from_slice(&h.finalize().as_bytes()[..16]);
    Ok(fp)
}

fn walk(
    dir: &Path,
    rel: &str,
    fp: &mut Fingerprint,
    h: &mut blake3::Hasher,
) -> std::io::Result<()> {
    let mut names: Vec<_> = std::fs::read_dir(dir)?
        .filter_map(Result::ok)
        .map(|e| e.file_name())
        .collect();
    names.sort();
    for name in names {
        let path = dir.join(&name);
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        let name = name.to_string_lossy();
        let rel = if rel.is_empty() {
            name.to_string()
        } else {
            format!("{rel}/{name}")
        };
        let mtime = meta
            .mtime()
            .saturating_mul(1_000_000_000)
            .saturating_add(meta.mtime_nsec());
        fp.newest_mtime_ns = fp.newest_mtime_ns.max(mtime);
        h.update(rel.as_bytes());
        h.update(&[0]);
        h.update(&meta.len().to_le_bytes());
        h.update(&mtime.to_le_bytes());
        if meta.is_dir() {
            walk(&path, &rel, fp, h)?;
        } else {
            fp.files += 1;
            fp.bytes += meta.len();
        }
    }
    Ok(())
}

/// Orders step names as people do: `step-9` before `step-10`.
pub fn natural_cmp(a: &str, b: &str) -> Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return Ordering::Equal,
            (None, _) => return Ordering::Less,
            (_, None) => return Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let da = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let db = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let na = trim_zeros(&a[..da]);
                let nb = trim_zeros(&b[..db]);
                let o = na.len().cmp(&nb.len()).then_with(|| na.cmp(nb));
                if o != Ordering::Equal {
                    return o;
                }
                a = &a[da..];
                b = &b[db..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_zeros(d: &[u8]) -> &[u8] {
    let n = d.iter().take_while(|c| **c == b'0').count();
    &d[n.min(d.len().saturating_sub(1))..]
}

/// Whether the `latest` pointer (if configured) allows `item`.
fn allowed_by_latest(item: &str, complete: &Completion, latest: Option<&str>) -> bool {
    match (&complete.latest, latest) {
        (None, _) => true,
        (Some(_), None) => false,
        (Some(_), Some(l)) => natural_cmp(item, l) != Ordering::Greater,
    }
}

/// Tracks how long each checkpoint's fingerprint has been stable, across scans.
#[derive(Debug, Default)]
pub struct Settler {
    seen: HashMap<String, (Fingerprint, Instant)>,
}

/// What [`Settler::update`] decided.
#[derive(Debug, Default)]
pub struct Decision {
    /// Complete now: `(item, fingerprint)`.
    pub ready: Vec<(String, Fingerprint)>,
    pub waiting: Vec<(String, Waiting)>,
    /// When a waiting checkpoint may settle, if nothing changes before.
    pub recheck_at: Option<Instant>,
}

impl Settler {
    /// Feeds one scan; returns the checkpoints that are complete now. A candidate whose
    /// fingerprint changed starts its settle period again.
    pub fn update(&mut self, scan: &Scan, complete: &Completion, now: Instant) -> Decision {
        let mut d = Decision::default();
        let present: HashSet<&str> = scan.candidates.iter().map(|c| c.item.as_str()).collect();
        self.seen.retain(|k, _| present.contains(k.as_str()));
        for c in &scan.candidates {
            let since = match self.seen.get(&c.item) {
                Some((fp, since)) if *fp == c.fingerprint => *since,
                _ => {
                    self.seen
                        .insert(c.item.clone(), (c.fingerprint.clone(), now));
                    now
                }
            };
            if !c.marker {
                d.waiting.push((c.item.clone(), Waiting::Marker));
            } else if !allowed_by_latest(&c.item, complete, scan.latest.as_deref()) {
                d.waiting.push((c.item.clone(), Waiting::Latest));
            } else if now.duration_since(since) >= complete.settle {
                d.ready.push((c.item.clone(), c.fingerprint.clone()));
            } else {
                let at = since + complete.settle;
                d.recheck_at = Some(d.recheck_at.map_or(at, |r| r.min(at)));
                d.waiting.push((c.item.clone(), Waiting::Settle));
            }
        }
        d
    }
}

/// One-shot completion (`ferry sync`): the marker rule, and no write for `settle` judged by
/// file times, since there is no earlier scan to compare with.
pub fn complete_now(
    scan: &Scan,
    complete: &Completion,
) -> (Vec<Candidate>, Vec<(String, Waiting)>) {
    let now_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let settle_ns = complete.settle.as_nanos() as i64;
    let (mut ready, mut waiting) = (Vec::new(), Vec::new());
    for c in &scan.candidates {
        if !c.marker {
            waiting.push((c.item.clone(), Waiting::Marker));
        } else if !allowed_by_latest(&c.item, complete, scan.latest.as_deref()) {
            waiting.push((c.item.clone(), Waiting::Latest));
        } else if now_ns - c.fingerprint.newest_mtime_ns < settle_ns {
            waiting.push((c.item.clone(), Waiting::Settle));
        } else {
            ready.push(c.clone());
        }
    }
    (ready, waiting)
}

/// How long ago a checkpoint was last written, for lag accounting.
pub fn age(fp: &Fingerprint) -> Duration {
    let now_ns = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    Duration::from_nanos(now_ns.saturating_sub(fp.newest_mtime_ns).max(0) as u64)
}

#[cfg(test)]
mod tests;
