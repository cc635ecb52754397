//! Who holds the local index: sled takes an exclusive `flock` on `<index>/db` for as long as a
//! process has it open. When another ferry holds it, [`Holder::find`] names that process (from
//! `/proc/locks` on Linux) so the error can say which one and what to do; commands that only
//! read fall back to a [`TemporaryIndex`].

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Index, IndexError};

/// A fresh index in a private temporary folder, removed on drop: for a command that only
/// reads while another process holds the local index (the index is a cache, so a command
/// works with an empty one; it rebuilds what it needs from the repositories).
pub struct TemporaryIndex {
    pub index: Index,
    dir: PathBuf,
}

impl TemporaryIndex {
    pub fn create() -> Result<Self, IndexError> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let dir = std::env::temp_dir().join(format!("ferry-index-{}-{nanos}", std::process::id()));
        let index = Index::open(&dir, Duration::ZERO)?;
        Ok(Self { index, dir })
    }
}

impl Drop for TemporaryIndex {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The process holding an index's lock, as far as it can be found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holder {
    /// Its process id, when the platform tells.
    pub pid: Option<u32>,
    /// Its command line (arguments joined by spaces), when readable.
    pub command: Option<String>,
}

impl Holder {
    /// Looks up who holds the lock on `<dir>/db`. Never fails: an unknown holder is
    /// "another process".
    pub fn find(dir: &Path) -> Holder {
        let pid = lock_owner(&dir.join("db"));
        let command = pid.and_then(command_line);
        Holder { pid, command }
    }

    /// True when the holder is a `ferry daemon`, which keeps the index for its lifetime: no
    /// use waiting for it.
    pub fn is_daemon(&self) -> bool {
        self.command
            .as_deref()
            .is_some_and(|c| c.split(' ').any(|a| a == "daemon"))
    }
}

impl fmt::Display for Holder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.pid, &self.command) {
            (Some(pid), Some(cmd)) => write!(f, "process {pid} ({cmd})"),
            (Some(pid), None) => write!(f, "process {pid}"),
            _ => write!(f, "another process"),
        }
    }
}

#[cfg(target_os = "linux")]
fn lock_owner(file: &Path) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(file).ok()?.ino();
    let locks = std::fs::read_to_string("/proc/locks").ok()?;
    owner_in_proc_locks(&locks, inode)
}

#[cfg(not(target_os = "linux"))]
fn lock_owner(_file: &Path) -> Option<u32> {
    None
}

/// The pid holding a lock on `inode` in the text of `/proc/locks`. Lines
/// look like `1: FLOCK  ADVISORY  WRITE 4242 08:01:1311 0 EOF` (a blocked waiter has `->`
/// after the number and is skipped).
fn owner_in_proc_locks(locks: &str, inode: u64) -> Option<u32> {
    locks.lines().find_map(|line| {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.get(1) == Some(&"->") {
            return None;
        }
        let pid: u32 = fields.get(4)?.parse().ok()?;
        let ino: u64 = fields.get(5)?.rsplit(':').next()?.parse().ok()?;
        (ino == inode).then_some(pid)
    })
}

fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let args: Vec<String> = raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let first = args.first()?;
    // The program's file name, not its full path: the line stays short.
    let program = Path::new(first)
        .file_name()
        .map_or_else(|| first.clone(), |n| n.to_string_lossy().into_owned());
    let line = std::iter::once(program)
        .chain(args.into_iter().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    let mut line: String = line.chars().filter(|c| !c.is_control()).collect();
    const MAX: usize = 200;
    if let Some((cut, _)) = line.char_indices().nth(MAX) {
        line.truncate(cut);
        line.push('…');
    }
    Some(line)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_owner_of_an_inode_in_proc_locks() {
        let locks = "1: POSIX  ADVISORY  WRITE 77 00:2a:99 0 EOF\n\
                     2: FLOCK  ADVISORY  WRITE 4242 08:01:1311 0 EOF\n\
                     2: -> FLOCK  ADVISORY  WRITE 5555 08:01:1311 0 EOF\n";
        assert_eq!(owner_in_proc_locks(locks, 1311), Some(4242));
        assert_eq!(owner_in_proc_locks(locks, 99), Some(77));
        assert_eq!(owner_in_proc_locks(locks, 5), None);
        assert_eq!(owner_in_proc_locks("garbage\n\n1: x", 5), None);
    }

    #[test]
    fn names_the_holder_and_knows_a_daemon() {
        let h = Holder {
            pid: Some(12),
            command: Some("ferry daemon --config x.toml".into()),
        };
        assert_eq!(h.to_string(), "process 12 (ferry daemon --config x.toml)");
        assert!(h.is_daemon());
        let push = Holder {
            pid: Some(12),
            command: Some("ferry push a b --name daemon-x".into()),
        };
        assert!(!push.is_daemon());
        let unknown = Holder {
            pid: None,
            command: None,
        };
        assert_eq!(unknown.to_string(), "another process");
    }

    /// A lock held by this very process through sled is found (Linux: `/proc/locks`).
    #[cfg(target_os = "linux")]
    #[test]
    fn a_held_index_names_its_holder() {
        let dir = tempfile::tempdir().unwrap();
        let _db = sled::open(dir.path()).unwrap();
        let file = dir.path().join("db");
        use std::os::unix::fs::MetadataExt;
        let inode = std::fs::metadata(&file).unwrap().ino();
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        assert_eq!(owner_in_proc_locks(&locks, inode), Some(std::process::id()));
    }
}
