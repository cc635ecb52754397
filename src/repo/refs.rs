//! Refs: named, mutable pointers to snapshots, kept as a log of entries
//! `refs/<name>/<seq>` that only grows by conditional create (see FORMAT.md "Refs").

use bytes::Bytes;
use object_store::path::Path;
use object_store::ObjectMeta;
use serde::{Deserialize, Serialize};

use super::{RepoError, Repository};
use crate::ids::SnapshotId;

/// One entry in a ref's log: `refs/<name>/<seq>`, written once with If-None-Match.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefEntry {
    /// The ref this entry belongs to.
    pub name: String,
    /// Position in the ref's log, from 0; the highest is the ref's current value.
    pub seq: u64,
    /// The snapshot the ref points to from this entry on.
    pub snapshot: SnapshotId,
    /// When the entry was written (RFC 3339, the writer's clock).
    pub time: String,
}

impl RefEntry {
    /// Parses a ref log entry and checks its name.
    pub fn decode(bytes: &[u8]) -> Result<Self, RefEntryError> {
        let e: RefEntry = serde_json::from_slice(bytes).map_err(RefEntryError::Json)?;
        check_ref_name(&e.name).map_err(|_| RefEntryError::BadName {
            name: e.name.clone(),
        })?;
        Ok(e)
    }
}

/// Why bytes are not a ref log entry. The repository names the object.
#[derive(Debug, thiserror::Error)]
pub enum RefEntryError {
    /// The bytes are not the entry's JSON.
    #[error("invalid ref entry: {0}")]
    Json(#[source] serde_json::Error),
    /// The entry's name is no valid ref name.
    #[error(
        "invalid ref name {name:?}: use letters, digits, '.', '_' and '-' (not starting with '.')"
    )]
    BadName {
        /// The name as found in the entry.
        name: String,
    },
}

pub(super) fn ref_path(name: &str, seq: u64) -> Path {
    Path::from(format!("refs/{name}/{seq:020}"))
}

/// Checks a ref name: letters, digits, `.`, `_`, `-`; not starting with `.`; ≤ 128 bytes.
pub fn check_ref_name(name: &str) -> Result<(), RepoError> {
    let ok = !name.is_empty()
        && name.len() <= 128
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'));
    if ok {
        Ok(())
    } else {
        Err(RepoError::BadRefName { name: name.into() })
    }
}

impl Repository {
    /// Removes one entry from a ref's log (never the head: callers check).
    pub async fn delete_ref_entry(&self, name: &str, seq: u64) -> Result<(), RepoError> {
        check_ref_name(name)?;
        Ok(self.store.delete(&ref_path(name, seq)).await?)
    }

    /// The log of one ref, oldest first.
    pub async fn ref_log(&self, name: &str) -> Result<Vec<RefEntry>, RepoError> {
        let metas = self.ref_log_objects(name).await?;
        let mut out = Vec::with_capacity(metas.len());
        for m in metas {
            out.push(self.read_ref_entry(&m.location).await?.1);
        }
        Ok(out)
    }

    /// The objects of one ref's log as listed, oldest first, without reading them: their
    /// version tags let a caller reuse entries it read before (entries are written once).
    pub async fn ref_log_objects(&self, name: &str) -> Result<Vec<ObjectMeta>, RepoError> {
        check_ref_name(name)?;
        let prefix = Path::from(format!("refs/{name}"));
        let mut metas = self.store.list(Some(&prefix)).await?;
        metas.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(metas)
    }

    /// Reads one ref-log object: its bytes and the entry they hold.
    pub async fn read_ref_entry(&self, path: &Path) -> Result<(Bytes, RefEntry), RepoError> {
        let bytes = self.store.get(path).await?;
        let entry = self.decode_ref_entry(path, &bytes)?;
        Ok((bytes, entry))
    }

    /// `entry`, read from `path`, belongs elsewhere.
    pub(crate) fn not_at_home(&self, path: &Path, entry: RefEntry) -> RepoError {
        RepoError::RefEntryNotAtHome {
            object: self.store.object_url(path),
            home: self.store.object_url(&ref_path(&entry.name, entry.seq)),
            name: entry.name,
            seq: entry.seq,
        }
    }

    /// The entry in `bytes`, read from `path` now or earlier, checked to sit at its home.
    pub fn decode_ref_entry(&self, path: &Path, bytes: &[u8]) -> Result<RefEntry, RepoError> {
        let bytes = self.open_object(
            path,
            super::context::REF_ENTRY,
            Bytes::copy_from_slice(bytes),
        )?;
        let entry = RefEntry::decode(&bytes).map_err(|problem| RepoError::BadRefEntry {
            object: self.store.object_url(path),
            problem,
        })?;
        // The log's order comes from object names: an entry must sit where its name and
        // sequence number say, or the history would not be the one its entries claim.
        let home = ref_path(&entry.name, entry.seq);
        if *path != home {
            return Err(self.not_at_home(path, entry));
        }
        Ok(entry)
    }

    /// The newest entry of a ref, if it has any.
    pub async fn ref_head(&self, name: &str) -> Result<Option<RefEntry>, RepoError> {
        check_ref_name(name)?;
        let prefix = Path::from(format!("refs/{name}"));
        let newest = self
            .store
            .list(Some(&prefix))
            .await?
            .into_iter()
            .map(|m| m.location)
            .max();
        match newest {
            Some(path) => Ok(Some(self.read_ref_entry(&path).await?.1)),
            None => Ok(None),
        }
    }

    /// Names of all refs.
    pub async fn ref_names(&self) -> Result<Vec<String>, RepoError> {
        let prefix = Path::from("refs");
        let mut names: Vec<String> = self
            .store
            .list(Some(&prefix))
            .await?
            .into_iter()
            .filter_map(|m| m.location.parts().nth(1).map(|p| p.as_ref().to_string()))
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    /// Appends `snapshot` to the ref's log by conditional create; a concurrent writer that
    /// takes the same sequence number makes this one retry on top of it, so no snapshot is
    /// lost and the log stays linear. Does nothing if the ref already points there.
    pub async fn advance_ref(
        &self,
        name: &str,
        snapshot: SnapshotId,
    ) -> Result<RefEntry, RepoError> {
        check_ref_name(name)?;
        for _ in 0..64 {
            let head = self.ref_head(name).await?;
            if let Some(h) = &head {
                if h.snapshot == snapshot {
                    return Ok(h.clone());
                }
            }
            if let Some(entry) = self.append_ref(name, head.as_ref(), snapshot).await? {
                return Ok(entry);
            }
            tracing::debug!(name, "ref moved concurrently; retrying");
        }
        Err(RepoError::RefContention {
            name: name.into(),
            url: self.url(),
        })
    }

    /// Resolves `NAME`, `NAME@SEQ` or `NAME@<snapshot id or unique prefix>` to a snapshot id.
    pub async fn resolve(&self, spec: &str) -> Result<SnapshotId, RepoError> {
        Ok(self.resolve_entry(spec).await?.snapshot)
    }

    /// [`Repository::resolve`], with the ref log entry (name, sequence number, time).
    pub async fn resolve_entry(&self, spec: &str) -> Result<RefEntry, RepoError> {
        let missing = || RepoError::NoSuchSnapshot {
            spec: spec.into(),
            url: self.url(),
        };
        let (name, at) = match spec.split_once('@') {
            Some((n, a)) => (n, Some(a)),
            None => (spec, None),
        };
        let log = self.ref_log(name).await?;
        match at {
            None | Some("latest") => log.last().cloned().ok_or_else(missing),
            Some(at) => {
                if let Ok(seq) = at.parse::<u64>() {
                    if at.len() < 20 {
                        return log
                            .iter()
                            .find(|e| e.seq == seq)
                            .cloned()
                            .ok_or_else(missing);
                    }
                }
                let at = at.to_ascii_lowercase();
                let mut hits = log.iter().filter(|e| e.snapshot.to_hex().starts_with(&at));
                match (hits.next(), hits.next()) {
                    (Some(e), None) => Ok(e.clone()),
                    _ => Err(missing()),
                }
            }
        }
    }
}
