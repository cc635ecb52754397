//! The layout of sharded pushes: partial snapshot pointers under
//! `partials/<name>/<run>/<I>-of-<N>`, the run's `commit` marker, and appending to a ref's
//! log only on top of an expected head.

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::{check_ref_name, ref_path, RefEntry, RepoError, Repository};
use crate::ids::SnapshotId;

/// One shard's finished share of a run: `partials/<name>/<run>/<shard>-of-<of>`.
/// Overwritten by a rerun of the same shard; never read once the run is committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PartialEntry {
    pub name: String,
    pub run: String,
    pub shard: u32,
    pub of: u32,
    /// A snapshot holding only this shard's entries.
    pub snapshot: SnapshotId,
}

/// Written once per run with If-None-Match: the combined snapshot the ref moves to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitMarker {
    pub name: String,
    pub run: String,
    pub snapshot: SnapshotId,
}

/// A committed sharded run's objects: pointers (and a replication's plan), and the marker.
#[derive(Debug, Clone)]
pub struct CommittedRun {
    pub marker: Path,
    /// When the run's commit marker was written.
    pub committed: std::time::SystemTime,
    /// Everything else under the run's folder.
    pub objects: Vec<Path>,
}

/// Checks a run id: the same alphabet as ref names.
pub fn check_run_id(run: &str) -> Result<(), RepoError> {
    check_ref_name(run).map_err(|_| RepoError::BadRunId { run: run.into() })
}

fn run_prefix(name: &str, run: &str) -> Path {
    Path::from(format!("partials/{name}/{run}"))
}

fn partial_path(name: &str, run: &str, shard: u32, of: u32) -> Path {
    Path::from(format!("partials/{name}/{run}/{shard}-of-{of}"))
}

fn commit_path(name: &str, run: &str) -> Path {
    Path::from(format!("partials/{name}/{run}/commit"))
}

impl Repository {
    /// Records one shard's partial snapshot (a plain put: only that shard writes this name).
    pub async fn write_partial(&self, p: &PartialEntry) -> Result<(), RepoError> {
        check_ref_name(&p.name)?;
        check_run_id(&p.run)?;
        let body = self.encode_record("partial", p);
        Ok(self
            .store
            .put(&partial_path(&p.name, &p.run, p.shard, p.of), body)
            .await?)
    }

    /// Every partial snapshot recorded for a run, in shard order.
    pub async fn list_partials(
        &self,
        name: &str,
        run: &str,
    ) -> Result<Vec<PartialEntry>, RepoError> {
        check_ref_name(name)?;
        check_run_id(run)?;
        let mut out = Vec::new();
        for meta in self.store.list(Some(&run_prefix(name, run))).await? {
            if meta.location.filename() == Some("commit") {
                continue;
            }
            let bytes = self.store.get(&meta.location).await?;
            let p: PartialEntry = self.decode_record(&meta.location, "partial", &bytes)?;
            if meta.location != partial_path(name, run, p.shard, p.of) || p.name != name {
                return Err(self.misplaced(&meta.location, "partial", "name"));
            }
            out.push(p);
        }
        out.sort_by_key(|p| (p.of, p.shard));
        Ok(out)
    }

    /// Snapshots of the partials of every run not yet committed: gc keeps them, however old,
    /// so a slow or rerun shard can still complete its run.
    pub async fn pending_partial_snapshots(&self) -> Result<Vec<SnapshotId>, RepoError> {
        let metas = self.store.list(Some(&Path::from("partials"))).await?;
        let committed: std::collections::HashSet<Path> = metas
            .iter()
            .filter(|m| m.location.filename() == Some("commit"))
            .map(|m| m.location.clone())
            .collect();
        let mut out = Vec::new();
        for m in &metas {
            let parts: Vec<_> = m.location.parts().collect();
            let [_, name, run, file] = parts.as_slice() else {
                continue;
            };
            if file.as_ref() == "commit"
                || committed.contains(&commit_path(name.as_ref(), run.as_ref()))
            {
                continue;
            }
            let bytes = self.store.get(&m.location).await?;
            let p: PartialEntry = self.decode_record(&m.location, "partial", &bytes)?;
            out.push(p.snapshot);
        }
        Ok(out)
    }

    /// Every committed sharded run (sharded pushes under `partials/`, sharded replications
    /// under `replicas/`): its commit marker's time and the run's other objects.
    pub async fn committed_runs(&self) -> Result<Vec<CommittedRun>, RepoError> {
        let mut runs: std::collections::BTreeMap<Vec<String>, CommittedRun> = Default::default();
        let mut others: Vec<(Vec<String>, Path)> = Vec::new();
        for (prefix, depth) in [("partials", 4), ("replicas", 3)] {
            for m in self.store.list(Some(&Path::from(prefix))).await? {
                let parts: Vec<String> =
                    m.location.parts().map(|p| p.as_ref().to_string()).collect();
                if parts.len() != depth {
                    continue; // not ours: left alone
                }
                let dir = parts[..depth - 1].to_vec();
                if parts[depth - 1] == "commit" {
                    runs.insert(
                        dir,
                        CommittedRun {
                            marker: m.location,
                            committed: m.last_modified.into(),
                            objects: Vec::new(),
                        },
                    );
                } else {
                    others.push((dir, m.location));
                }
            }
        }
        for (dir, path) in others {
            if let Some(run) = runs.get_mut(&dir) {
                run.objects.push(path);
            }
        }
        Ok(runs.into_values().collect())
    }

    /// Deletes a committed run's objects, its commit marker last.
    pub async fn delete_run(&self, run: &CommittedRun) -> Result<(), RepoError> {
        for path in run.objects.iter().chain([&run.marker]) {
            self.store.delete(path).await?;
        }
        Ok(())
    }

    /// The run's commit marker, if some shard committed it.
    pub async fn read_commit(
        &self,
        name: &str,
        run: &str,
    ) -> Result<Option<CommitMarker>, RepoError> {
        let path = commit_path(name, run);
        let Some(bytes) = self.store.get_opt(&path).await? else {
            return Ok(None);
        };
        let m: CommitMarker = self.decode_record(&path, "commit marker", &bytes)?;
        Ok(Some(m))
    }

    /// Writes the run's commit marker unless one exists; returns the marker that holds.
    pub async fn commit_once(&self, marker: &CommitMarker) -> Result<CommitMarker, RepoError> {
        check_ref_name(&marker.name)?;
        check_run_id(&marker.run)?;
        let body = self.encode_record("commit marker", marker);
        let path = commit_path(&marker.name, &marker.run);
        if self.store.put_new(&path, body).await? {
            return Ok(marker.clone());
        }
        self.read_commit(&marker.name, &marker.run)
            .await?
            .ok_or_else(|| self.vanished(&path))
    }

    /// Appends `snapshot` to the ref's log only if `expected` is still its head (conditional
    /// create of the next sequence number). `None` when another writer got there first.
    pub async fn append_ref(
        &self,
        name: &str,
        expected: Option<&RefEntry>,
        snapshot: SnapshotId,
    ) -> Result<Option<RefEntry>, RepoError> {
        check_ref_name(name)?;
        let entry = RefEntry {
            name: name.to_string(),
            seq: expected.map_or(1, |h| h.seq + 1),
            snapshot,
            time: humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string(),
        };
        let body = serde_json::to_vec(&entry).expect("ref entry serializes");
        let body = self.sealing.seal(super::context::REF_ENTRY, body);
        if self
            .store
            .put_new(&ref_path(name, entry.seq), Bytes::from(body))
            .await?
        {
            Ok(Some(entry))
        } else {
            Ok(None)
        }
    }
}
