//! The version a pull destination serves now, read from `DIR/current` alone (no lock, no
//! store): what the daemon shows as a pull job's live version, and where its watch starts.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::ops::OpError;

use super::{version_seq, PullError};

/// The version `DIR/current` points at.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LiveVersion {
    /// The folder's name under `versions/`: `<seq>-<short id>[-<selection digest>]`.
    pub name: String,
    /// The ref log entry it was pulled from.
    pub seq: u64,
    /// The first 12 hex digits of its snapshot id.
    pub short_id: String,
    /// `DIR/versions/<name>`.
    pub path: PathBuf,
}

/// The live version of `dir`, or `None` when nothing was published there yet (or `dir`
/// does not exist). A `current` that ferry did not make is an error naming it.
pub fn live_version(dir: &Path) -> Result<Option<LiveVersion>, OpError> {
    let link = dir.join("current");
    let foreign = || PullError::ForeignCurrent {
        path: link.display().to_string(),
    };
    let target = match std::fs::read_link(&link) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == std::io::ErrorKind::InvalidInput => return Err(foreign().into()),
        Err(e) => return Err(OpError::io(link.display(), e)),
    };
    let name = target
        .strip_prefix("versions")
        .ok()
        .and_then(|t| t.to_str())
        .filter(|t| !t.is_empty() && !t.contains('/'))
        .ok_or_else(foreign)?;
    let seq = version_seq(name).ok_or_else(foreign)?;
    let short_id = name.split('-').nth(1).unwrap_or_default().to_string();
    Ok(Some(LiveVersion {
        name: name.to_string(),
        seq,
        short_id,
        path: dir.join("versions").join(name),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_version_current_points_at() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(live_version(dir.path()).unwrap(), None);
        assert_eq!(live_version(&dir.path().join("absent")).unwrap(), None);
        std::os::unix::fs::symlink("versions/7-0123456789ab", dir.path().join("current")).unwrap();
        let live = live_version(dir.path()).unwrap().unwrap();
        assert_eq!(live.seq, 7);
        assert_eq!(live.short_id, "0123456789ab");
        assert_eq!(live.path, dir.path().join("versions/7-0123456789ab"));
        std::fs::remove_file(dir.path().join("current")).unwrap();
        std::os::unix::fs::symlink("/etc", dir.path().join("current")).unwrap();
        assert!(
            live_version(dir.path()).is_err(),
            "a foreign current is refused"
        );
    }
}
