//! The layout of sharded replications in the target repository: the run's plan
//! (`replicas/<run>/plan`, create-only), one pointer per finished shard
//! (`replicas/<run>/<I>-of-<N>`) and the run's `commit` marker (create-only); and moving a ref
//! to a snapshot exactly once however many processes try at the same time.

use bytes::Bytes;
use object_store::path::Path;
use serde::{Deserialize, Serialize};

use super::partial::check_run_id;
use super::{check_ref_name, RefEntry, RepoError, Repository};
use crate::ids::SnapshotId;

/// One ref's share of a replication: the source log's snapshots the target's log lacked when
/// the run was planned, oldest first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlannedRef {
    pub name: String,
    pub snapshots: Vec<SnapshotId>,
}

/// What every shard of a run copies: written once (If-None-Match) by the first shard to
/// start; every other shard adopts it, so all shards and the commit agree on the snapshots.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaPlan {
    pub run: String,
    /// The number of shards.
    pub of: u32,
    /// The source repository's id (its config's `id`).
    pub from: String,
    pub refs: Vec<PlannedRef>,
}

/// A finished shard: every chunk it owns is in the target (`replicas/<run>/<shard>-of-<of>`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaPointer {
    pub run: String,
    pub shard: u32,
    pub of: u32,
}

/// Written once per run with If-None-Match after the planned snapshots are in the target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplicaCommit {
    pub run: String,
}

fn plan_path(run: &str) -> Path {
    Path::from(format!("replicas/{run}/plan"))
}

fn pointer_path(run: &str, shard: u32, of: u32) -> Path {
    Path::from(format!("replicas/{run}/{shard}-of-{of}"))
}

pub(crate) fn replica_commit_path(run: &str) -> Path {
    Path::from(format!("replicas/{run}/commit"))
}

impl Repository {
    /// Writes the run's plan unless one exists; returns the plan that holds.
    pub async fn plan_replica_once(&self, plan: &ReplicaPlan) -> Result<ReplicaPlan, RepoError> {
        check_run_id(&plan.run)?;
        let body = self.encode_record("replica plan", plan);
        let path = plan_path(&plan.run);
        if self.store.put_new(&path, body).await? {
            return Ok(plan.clone());
        }
        self.read_replica_plan(&plan.run)
            .await?
            .ok_or_else(|| self.vanished(&path))
    }

    /// The run's plan, if a shard has started it.
    pub async fn read_replica_plan(&self, run: &str) -> Result<Option<ReplicaPlan>, RepoError> {
        check_run_id(run)?;
        let path = plan_path(run);
        let Some(bytes) = self.store.get_opt(&path).await? else {
            return Ok(None);
        };
        let plan: ReplicaPlan = self.decode_record(&path, "replica plan", &bytes)?;
        if plan.run != run {
            return Err(self.misplaced(&path, "plan", "run"));
        }
        for r in &plan.refs {
            check_ref_name(&r.name).map_err(|_| RepoError::BadRefNameIn {
                object: self.store.object_url(&path),
                name: r.name.clone(),
            })?;
        }
        Ok(Some(plan))
    }

    /// Records a finished shard (a plain put: only that shard writes this name).
    pub async fn write_replica_pointer(&self, p: &ReplicaPointer) -> Result<(), RepoError> {
        check_run_id(&p.run)?;
        let body = self.encode_record("replica pointer", p);
        Ok(self
            .store
            .put(&pointer_path(&p.run, p.shard, p.of), body)
            .await?)
    }

    /// The shards of a run that have finished, in shard order.
    pub async fn list_replica_pointers(&self, run: &str) -> Result<Vec<ReplicaPointer>, RepoError> {
        check_run_id(run)?;
        let mut out = Vec::new();
        let prefix = Path::from(format!("replicas/{run}"));
        for meta in self.store.list(Some(&prefix)).await? {
            if matches!(meta.location.filename(), Some("commit" | "plan")) {
                continue;
            }
            let bytes = self.store.get(&meta.location).await?;
            let p: ReplicaPointer =
                self.decode_record(&meta.location, "replica pointer", &bytes)?;
            if meta.location != pointer_path(run, p.shard, p.of) {
                return Err(self.misplaced(&meta.location, "pointer", "name"));
            }
            out.push(p);
        }
        out.sort_by_key(|p| (p.of, p.shard));
        Ok(out)
    }

    /// True once some process committed the run.
    pub async fn replica_committed(&self, run: &str) -> Result<bool, RepoError> {
        check_run_id(run)?;
        Ok(self
            .store
            .get_opt(&replica_commit_path(run))
            .await?
            .is_some())
    }

    /// Creates the run's commit marker unless one exists.
    pub async fn commit_replica_once(&self, run: &str) -> Result<(), RepoError> {
        check_run_id(run)?;
        let body = serde_json::to_vec(&ReplicaCommit { run: run.into() })
            .expect("replica commit serializes");
        self.store
            .put_new(&replica_commit_path(run), Bytes::from(body))
            .await?;
        Ok(())
    }

    /// Appends `snapshot` to the ref's log unless the log already names it. Appends only on top
    /// of the head just read, and re-reads the log after losing a race, so any number of
    /// processes moving the ref to the same snapshot at once add exactly one entry. `None` when
    /// the log already held it.
    pub async fn advance_ref_once(
        &self,
        name: &str,
        snapshot: SnapshotId,
    ) -> Result<Option<RefEntry>, RepoError> {
        check_ref_name(name)?;
        for _ in 0..64 {
            let log = self.ref_log(name).await?;
            if log.iter().any(|e| e.snapshot == snapshot) {
                return Ok(None);
            }
            if let Some(entry) = self.append_ref(name, log.last(), snapshot).await? {
                return Ok(Some(entry));
            }
            tracing::debug!(name, "ref moved concurrently; reading its log again");
        }
        Err(RepoError::RefContention {
            name: name.into(),
            url: self.url(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::tests::memory_repo;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_committers_append_each_snapshot_once() {
        let repo = memory_repo("replicas-race").await;
        let a = SnapshotId::of(b"a");
        let b = SnapshotId::of(b"b");
        let mut tasks = tokio::task::JoinSet::new();
        for _ in 0..8 {
            let repo = repo.clone();
            tasks.spawn(async move {
                let mut appended = 0;
                for s in [a, b] {
                    if repo.advance_ref_once("ckpt", s).await.unwrap().is_some() {
                        appended += 1;
                    }
                }
                appended
            });
        }
        let mut appended = 0;
        while let Some(n) = tasks.join_next().await {
            appended += n.unwrap();
        }
        assert_eq!(appended, 2);
        let log: Vec<SnapshotId> = repo
            .ref_log("ckpt")
            .await
            .unwrap()
            .into_iter()
            .map(|e| e.snapshot)
            .collect();
        assert_eq!(log, [a, b]);
    }

    #[tokio::test]
    async fn the_first_plan_holds() {
        let repo = memory_repo("replicas-plan").await;
        let plan = |of| ReplicaPlan {
            run: "r1".into(),
            of,
            from: "src".into(),
            refs: vec![PlannedRef {
                name: "ckpt".into(),
                snapshots: vec![SnapshotId::of(b"a")],
            }],
        };
        assert_eq!(repo.read_replica_plan("r1").await.unwrap(), None);
        assert_eq!(repo.plan_replica_once(&plan(4)).await.unwrap(), plan(4));
        assert_eq!(repo.plan_replica_once(&plan(3)).await.unwrap(), plan(4));
        assert!(!repo.replica_committed("r1").await.unwrap());
        repo.commit_replica_once("r1").await.unwrap();
        repo.commit_replica_once("r1").await.unwrap();
        assert!(repo.replica_committed("r1").await.unwrap());
        assert!(repo.plan_replica_once(&plan(4)).await.is_ok());
        assert!(repo.read_replica_plan("../x").await.is_err());
    }
}
