//! Per-file settling for tree jobs (`layout = "tree"` push jobs on a local folder): a file
//! unchanged for `settle` is pushed; a file still changing keeps the version the ref's head
//! has (or is left out while new), and is named as waiting. So a source that never settles
//! as a whole (a growing log, a dataset appended to) still makes progress on every trigger,
//! and a file that never settles is reported once it has waited `max_wait`.
//!
//! A file's state is its size, modification time and inode. The time a state began is the
//! scan that first saw it; when the caller trusts file times (scheduled and one-shot looks,
//! which may be an hour apart), its modification time instead — on first sight, or, for a
//! change, bounded below by the previous look (a copy that keeps old times still changed
//! after it).

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::Duration;

use super::scan::Fingerprint;

/// How many waiting files a status names (the total is given as well).
pub const NAMED_FILES: usize = 5;

/// A regular file's state: any write, truncation or replacement changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileState {
    pub size: u64,
    pub mtime_ns: i64,
    pub ino: u64,
}

/// Every regular file under `root` by its path relative to `root` (`/`-separated), as the
/// push lists them. Names that are not UTF-8 are left out (the push reports them). Blocking.
pub fn list_files(root: &Path) -> std::io::Result<BTreeMap<String, FileState>> {
    let mut out = BTreeMap::new();
    walk(root, "", &mut out)?;
    Ok(out)
}

fn walk(dir: &Path, rel: &str, out: &mut BTreeMap<String, FileState>) -> std::io::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let rel = if rel.is_empty() {
            name
        } else {
            format!("{rel}/{name}")
        };
        let meta = match std::fs::symlink_metadata(entry.path()) {
            Ok(m) => m,
            // Removed while we looked.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        if meta.is_dir() {
            match walk(&entry.path(), &rel, out) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                r => r?,
            }
        } else if meta.is_file() {
            let mtime_ns = meta
                .mtime()
                .saturating_mul(1_000_000_000)
                .saturating_add(meta.mtime_nsec());
            out.insert(
                rel,
                FileState {
                    size: meta.len(),
                    mtime_ns,
                    ino: meta.ino(),
                },
            );
        }
    }
    Ok(())
}

/// What one file looks like to the settler.
#[derive(Debug, Clone)]
struct Seen {
    state: FileState,
    /// When its current state began (wall ms).
    since_ms: i64,
    /// Waiting (not settled) continuously since (wall ms).
    waiting_since_ms: Option<i64>,
}

/// Per-file settle tracking of one job, kept across scans.
#[derive(Debug, Default)]
pub struct FileSettler {
    seen: BTreeMap<String, Seen>,
    /// Each file's state at the last successful push, and since when a newer change of it
    /// (or its removal) has been waiting to be pushed.
    pushed: BTreeMap<String, FileState>,
    unsynced: BTreeMap<String, i64>,
    /// When the previous listing was taken (wall ms).
    last_look_ms: Option<i64>,
}

/// What to push now.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Plan {
    /// Settled files and their states: read and pushed.
    pub ready: BTreeMap<String, FileState>,
    /// Files still changing: not read; the ref's head keeps its version of each.
    pub held: BTreeSet<String>,
    /// Of the pushable part (ready files' states, held names): an unchanged plan is not
    /// pushed again.
    pub fingerprint: Fingerprint,
}

/// The settler's view after a scan.
#[derive(Debug, Clone, Default)]
pub struct Settled {
    pub plan: Plan,
    /// The waiting files, first few by name, and how many there are.
    pub waiting: Vec<String>,
    pub waiting_total: usize,
    /// Files that have waited longer than `max_wait`, first few by name, and their count.
    pub overdue: Vec<String>,
    pub overdue_total: usize,
    /// The oldest change seen and not pushed yet (wall ms).
    pub unsynced_since_ms: Option<i64>,
    /// When the next waiting file may settle if it stops changing (wall ms).
    pub recheck_ms: Option<i64>,
}

impl Settled {
    /// True when something can be pushed: nothing waits, or at least one file settled.
    pub fn pushable(&self) -> bool {
        self.plan.held.is_empty() || !self.plan.ready.is_empty()
    }
}

impl FileSettler {
    /// Feeds one listing of the source. `trust_mtime`: a file seen for the first time dates
    /// from its modification time (else from now, so a copy that keeps old times still
    /// waits). `floor_ms` bounds how old an unsynced change can look (the daemon's start).
    pub fn update(
        &mut self,
        files: BTreeMap<String, FileState>,
        now_ms: i64,
        settle: Duration,
        max_wait: Duration,
        trust_mtime: bool,
        floor_ms: i64,
    ) -> Settled {
        let settle_ms = settle.as_millis() as i64;
        let max_wait_ms = max_wait.as_millis() as i64;
        // A change seen now happened after the previous look; trusted file times say when.
        let prev_look = self.last_look_ms.replace(now_ms).unwrap_or(now_ms);
        let changed_at = |s: &FileState| {
            if trust_mtime {
                (s.mtime_ns / 1_000_000).max(prev_look).min(now_ms)
            } else {
                now_ms
            }
        };
        self.seen.retain(|k, _| files.contains_key(k));
        let mut out = Settled::default();
        let mut overdue = Vec::new();
        for (rel, state) in files {
            let seen = match self.seen.get_mut(&rel) {
                Some(s) if s.state == state => s,
                Some(s) => {
                    s.state = state;
                    s.since_ms = changed_at(&state);
                    s
                }
                None => {
                    let since_ms = if trust_mtime {
                        (state.mtime_ns / 1_000_000).min(now_ms)
                    } else {
                        now_ms
                    };
                    self.seen.entry(rel.clone()).or_insert(Seen {
                        state,
                        since_ms,
                        waiting_since_ms: None,
                    })
                }
            };
            if self.pushed.get(&rel) != Some(&state) {
                let first = seen.since_ms.clamp(floor_ms, now_ms);
                self.unsynced.entry(rel.clone()).or_insert(first);
            } else {
                self.unsynced.remove(&rel);
            }
            if now_ms - seen.since_ms >= settle_ms {
                seen.waiting_since_ms = None;
                out.plan.ready.insert(rel, state);
            } else {
                let waiting = *seen.waiting_since_ms.get_or_insert(now_ms);
                let at = seen.since_ms + settle_ms;
                out.recheck_ms = Some(out.recheck_ms.map_or(at, |r| r.min(at)));
                if now_ms - waiting >= max_wait_ms {
                    overdue.push(rel.clone());
                }
                out.plan.held.insert(rel);
            }
        }
        // A removed file is a change too, until a push records the removal.
        for rel in self.pushed.keys() {
            if !self.seen.contains_key(rel) {
                self.unsynced.entry(rel.clone()).or_insert(now_ms);
            }
        }
        self.unsynced
            .retain(|k, _| self.seen.contains_key(k) || self.pushed.contains_key(k));
        out.unsynced_since_ms = self.unsynced.values().min().copied();
        out.waiting_total = out.plan.held.len();
        out.waiting = out.plan.held.iter().take(NAMED_FILES).cloned().collect();
        out.overdue_total = overdue.len();
        overdue.truncate(NAMED_FILES);
        out.overdue = overdue;
        out.plan.fingerprint = fingerprint(&out.plan);
        out
    }

    /// Records a successful push of `plan`: its ready files are in the repository as listed,
    /// and files gone from the source are gone from it. Returns the oldest change still
    /// unsynced.
    pub fn pushed(&mut self, plan: &Plan) -> Option<i64> {
        self.pushed
            .retain(|k, _| plan.held.contains(k) || plan.ready.contains_key(k));
        for (rel, state) in &plan.ready {
            self.pushed.insert(rel.clone(), *state);
            match self.seen.get(rel) {
                Some(s) if s.state == *state => {
                    self.unsynced.remove(rel);
                }
                // Changed again since it was planned: unsynced from that change.
                Some(s) => {
                    self.unsynced.insert(rel.clone(), s.since_ms);
                }
                None => {}
            }
        }
        self.unsynced
            .retain(|k, _| self.seen.contains_key(k) || self.pushed.contains_key(k));
        self.unsynced.values().min().copied()
    }
}

/// The fingerprint of a plan: ready files with their states, held files by name.
pub fn fingerprint(plan: &Plan) -> Fingerprint {
    let mut h = blake3::Hasher::new();
    let (mut bytes, mut newest) = (0u64, 0i64);
    for (rel, s) in &plan.ready {
        h.update(rel.as_bytes());
        h.update(&[0]);
        h.update(&s.size.to_le_bytes());
        h.update(&s.mtime_ns.to_le_bytes());
        h.update(&s.ino.to_le_bytes());
        bytes += s.size;
        newest = newest.max(s.mtime_ns);
    }
    h.update(&[1]);
    for rel in &plan.held {
        h.update(rel.as_bytes());
        h.update(&[0]);
    }
    Fingerprint::from_digest(plan.ready.len() as u64, bytes, newest, h.finalize())
}

/// True when every ready file of `plan` still has the state it was planned with (checked
/// after a push: a file that changed while it was read is pushed again). Blocking.
pub fn unchanged_since(plan: &Plan, root: &Path) -> std::io::Result<bool> {
    let now = list_files(root)?;
    Ok(plan.ready.iter().all(|(rel, s)| now.get(rel) == Some(s)))
}

#[cfg(test)]
mod tests;
