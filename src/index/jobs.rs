//! The daemon's state in the local index: each job target's work items (pending, done,
//! skipped) and the history of runs. Like the rest of the index it is a cache: the daemon
//! rebuilds what it needs from the target repositories' refs when it is gone.
//!
//! Trees (see FORMAT.md "Local index"):
//! - `jobs/items`: `job \0 target \0 item` → v1 record: u8 version, u8 state, i64 since ms,
//!   i64 at ms
//! - `jobs/runs`: u64 run id (big-endian) → the run record as the daemon encodes it (JSON)

use std::path::PathBuf;

use super::{Index, IndexError};

const ITEM_RECORD_VERSION: u8 = 1;

/// Where a work item stands for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemState {
    /// Seen complete at the source, not yet in the target.
    Pending,
    /// In the target.
    Done,
    /// Superseded by a newer item before it reached the target.
    Skipped,
}

/// One work item of one job target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemRecord {
    pub state: ItemState,
    /// When the source change was detected (Unix ms).
    pub since_ms: i64,
    /// When the state was last set (Unix ms).
    pub at_ms: i64,
}

/// The daemon's trees.
#[derive(Clone)]
pub struct JobLog {
    db: sled::Db,
    items: sled::Tree,
    runs: sled::Tree,
    path: PathBuf,
}

impl Index {
    /// The daemon's work items and run history.
    pub fn job_log(&self) -> Result<JobLog, IndexError> {
        Ok(JobLog {
            db: self.db.clone(),
            items: self.tree("jobs/items".into())?,
            runs: self.tree("jobs/runs".into())?,
            path: self.path.clone(),
        })
    }
}

fn item_key(job: &str, target: &str, item: &str) -> Vec<u8> {
    let mut k = prefix(job, target);
    k.extend_from_slice(item.as_bytes());
    k
}

fn prefix(job: &str, target: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(job.len() + target.len() + 2);
    k.extend_from_slice(job.as_bytes());
    k.push(0);
    k.extend_from_slice(target.as_bytes());
    k.push(0);
    k
}

fn encode_item(r: &ItemRecord) -> [u8; 18] {
    let mut v = [0u8; 18];
    v[0] = ITEM_RECORD_VERSION;
    v[1] = match r.state {
        ItemState::Pending => 0,
        ItemState::Done => 1,
        ItemState::Skipped => 2,
    };
    v[2..10].copy_from_slice(&r.since_ms.to_le_bytes());
    v[10..18].copy_from_slice(&r.at_ms.to_le_bytes());
    v
}

/// Anything malformed reads as "unknown", which the daemon treats as not yet seen.
fn decode_item(v: &[u8]) -> Option<ItemRecord> {
    if v.len() != 18 || v[0] != ITEM_RECORD_VERSION {
        return None;
    }
    let state = match v[1] {
        0 => ItemState::Pending,
        1 => ItemState::Done,
        2 => ItemState::Skipped,
        _ => return None,
    };
    Some(ItemRecord {
        state,
        since_ms: i64::from_le_bytes(v[2..10].try_into().ok()?),
        at_ms: i64::from_le_bytes(v[10..18].try_into().ok()?),
    })
}

impl JobLog {
    fn err(&self, source: sled::Error) -> IndexError {
        IndexError::Db {
            path: self.path.clone(),
            source,
        }
    }

    pub fn item(
        &self,
        job: &str,
        target: &str,
        item: &str,
    ) -> Result<Option<ItemRecord>, IndexError> {
        let v = self
            .items
            .get(item_key(job, target, item))
            .map_err(|e| self.err(e))?;
        Ok(v.and_then(|v| decode_item(&v)))
    }

    pub fn set_item(
        &self,
        job: &str,
        target: &str,
        item: &str,
        record: ItemRecord,
    ) -> Result<(), IndexError> {
        self.items
            .insert(item_key(job, target, item), &encode_item(&record))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    pub fn remove_item(&self, job: &str, target: &str, item: &str) -> Result<(), IndexError> {
        self.items
            .remove(item_key(job, target, item))
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Every item of one job target, in key order.
    pub fn items(&self, job: &str, target: &str) -> Result<Vec<(String, ItemRecord)>, IndexError> {
        let p = prefix(job, target);
        let mut out = Vec::new();
        for kv in self.items.scan_prefix(&p) {
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let name = String::from_utf8_lossy(&k[p.len()..]).into_owned();
            if let Some(r) = decode_item(&v) {
                out.push((name, r));
            }
        }
        Ok(out)
    }

    /// A new run id, larger than any handed out before (also across restarts).
    pub fn next_run_id(&self) -> Result<u64, IndexError> {
        // sled's ids are monotonic but may jump after a crash; that is fine for ordering.
        self.db
            .generate_id()
            .map(|i| i + 1)
            .map_err(|e| self.err(e))
    }

    pub fn put_run(&self, id: u64, record: &[u8]) -> Result<(), IndexError> {
        self.runs
            .insert(id.to_be_bytes(), record)
            .map(|_| ())
            .map_err(|e| self.err(e))
    }

    /// Up to `limit` runs, newest first, with ids below `before` when given.
    pub fn runs(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<Vec<(u64, Vec<u8>)>, IndexError> {
        let iter = match before {
            Some(b) => self.runs.range(..b.to_be_bytes()),
            None => self.runs.iter(),
        };
        let mut out = Vec::new();
        for kv in iter.rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = kv.map_err(|e| self.err(e))?;
            let id = u64::from_be_bytes(k.as_ref().try_into().unwrap_or([0; 8]));
            out.push((id, v.to_vec()));
        }
        Ok(out)
    }

    /// Deletes the oldest runs so that at most `keep` remain.
    pub fn trim_runs(&self, keep: usize) -> Result<usize, IndexError> {
        let extra = self.runs.len().saturating_sub(keep);
        let mut removed = 0;
        for k in self.runs.iter().keys().take(extra) {
            let k = k.map_err(|e| self.err(e))?;
            self.runs.remove(k).map_err(|e| self.err(e))?;
            removed += 1;
        }
        Ok(removed)
    }

    pub fn flush(&self) -> Result<(), IndexError> {
        self.db.flush().map(|_| ()).map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn items_and_runs_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let rec = |state, since_ms| ItemRecord {
            state,
            since_ms,
            at_ms: since_ms + 1,
        };
        {
            let log = Index::open(dir.path(), Duration::ZERO)
                .unwrap()
                .job_log()
                .unwrap();
            log.set_item("j", "t", "step-2", rec(ItemState::Pending, 20))
                .unwrap();
            log.set_item("j", "t", "step-1", rec(ItemState::Done, 10))
                .unwrap();
            log.set_item("j", "t2", "step-1", rec(ItemState::Skipped, 10))
                .unwrap();
            log.set_item("j2", "t", "x", rec(ItemState::Pending, 1))
                .unwrap();
            for i in 0..5u8 {
                let id = log.next_run_id().unwrap();
                log.put_run(id, &[i]).unwrap();
            }
            log.flush().unwrap();
        }
        let log = Index::open(dir.path(), Duration::ZERO)
            .unwrap()
            .job_log()
            .unwrap();
        assert_eq!(
            log.items("j", "t").unwrap(),
            vec![
                ("step-1".to_string(), rec(ItemState::Done, 10)),
                ("step-2".to_string(), rec(ItemState::Pending, 20)),
            ]
        );
        assert_eq!(
            log.item("j", "t2", "step-1").unwrap(),
            Some(rec(ItemState::Skipped, 10))
        );
        assert_eq!(log.item("j", "t", "nope").unwrap(), None);
        let runs = log.runs(None, 3).unwrap();
        assert_eq!(
            runs.iter().map(|r| r.1[0]).collect::<Vec<_>>(),
            vec![4, 3, 2]
        );
        let older = log.runs(Some(runs[2].0), 10).unwrap();
        assert_eq!(older.iter().map(|r| r.1[0]).collect::<Vec<_>>(), vec![1, 0]);
        let next = log.next_run_id().unwrap();
        assert!(next > runs[0].0, "run ids keep growing across restarts");
        assert_eq!(log.trim_runs(2).unwrap(), 3);
        assert_eq!(log.runs(None, 10).unwrap().len(), 2);
    }

    #[test]
    fn malformed_item_records_read_as_unknown() {
        assert_eq!(decode_item(b""), None);
        let mut v = encode_item(&ItemRecord {
            state: ItemState::Done,
            since_ms: 1,
            at_ms: 2,
        });
        v[1] = 9;
        assert_eq!(decode_item(&v), None);
    }
}
