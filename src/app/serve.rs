//! The serving side's looks at a ref for the daemon's pull jobs: a [`RefWatch`] opens the
//! repository once, then each look is one GET of the ref's next log entry.

use super::{App, RefName};
use crate::ops::OpError;
use crate::repo::{RefEntry, Repository};
use crate::store::StoreUrl;

/// An opened repository and the ref a pull job follows.
#[derive(Debug)]
pub struct RefWatch {
    repo: Repository,
    name: RefName,
}

impl App {
    /// Opens `repo` (reading its config) for repeated cheap looks at ref `name`.
    pub async fn watch_ref(&self, repo: &StoreUrl, name: &RefName) -> Result<RefWatch, OpError> {
        Ok(RefWatch {
            repo: self.open_repo(repo).await?,
            name: name.clone(),
        })
    }
}

impl RefWatch {
    /// The ref's log entry `seq`, if it exists: one small read, no listing, no snapshot.
    pub async fn entry(&self, seq: u64) -> Result<Option<RefEntry>, OpError> {
        Ok(self.repo.ref_entry(self.name.as_str(), seq).await?)
    }
}
