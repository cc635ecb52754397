//! One ref log entry by its sequence number: the cheap look a pull job's watch makes at a
//! ref (one GET of `refs/<name>/<seq>`, no listing, no snapshot).

use super::{check_ref_name, ref_path, RefEntry, RepoError, Repository};

impl Repository {
    /// The entry `seq` of ref `name`, or `None` when the log has no such entry (yet). The
    /// entry must be the one its object name says, as in [`Repository::ref_log`].
    pub async fn ref_entry(&self, name: &str, seq: u64) -> Result<Option<RefEntry>, RepoError> {
        check_ref_name(name)?;
        let path = ref_path(name, seq);
        let Some(bytes) = self.store.get_opt(&path).await? else {
            return Ok(None);
        };
        let entry = RefEntry::decode(&bytes).map_err(|e| self.corrupt(&path, e.to_string()))?;
        if entry.name != name || entry.seq != seq {
            return Err(self.corrupt(
                &path,
                format!(
                    "entry for ref {:?} seq {} belongs at {}",
                    entry.name,
                    entry.seq,
                    self.store.object_url(&ref_path(&entry.name, entry.seq))
                ),
            ));
        }
        Ok(Some(entry))
    }
}
