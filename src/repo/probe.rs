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
        let bytes = self.open_object(&path, super::context::REF_ENTRY, bytes)?;
        let entry = RefEntry::decode(&bytes).map_err(|problem| RepoError::BadRefEntry {
            object: self.store.object_url(&path),
            problem,
        })?;
        if entry.name != name || entry.seq != seq {
            return Err(self.not_at_home(&path, entry));
        }
        Ok(Some(entry))
    }
}
