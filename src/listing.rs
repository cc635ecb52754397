//! `ferry snapshots` and `ferry ls`: what a repository holds, for people and scripts. Names
//! and paths come from the repository, so the text rendering shows control characters
//! escaped; one damaged ref is reported and the others are still listed.

use serde::Serialize;

use crate::app::RefName;
use crate::ids::SnapshotId;
use crate::ops::OpError;
use crate::repo::snapshot::Entry;
use crate::repo::{Repository, Snapshot};

/// One entry of a ref's log, as `ferry snapshots` lists it.
#[derive(Debug, Serialize)]
pub struct SnapshotRow {
    /// The ref name.
    pub name: String,
    /// Position in the ref's log.
    pub seq: u64,
    /// The snapshot the entry points to.
    pub snapshot: SnapshotId,
    /// When the entry was written (RFC 3339).
    pub time: String,
    /// Files in the snapshot.
    pub files: usize,
    /// Sum of their sizes, in bytes.
    pub bytes: u64,
}

/// A ref (or one of its snapshots) that could not be read.
#[derive(Debug, Serialize)]
pub struct RefProblem {
    /// The ref name.
    pub name: String,
    /// What went wrong, in one line.
    pub error: String,
}

/// What `ferry snapshots` found in one repository.
#[derive(Debug, Serialize)]
pub struct SnapshotsReport {
    /// The repository's URL.
    pub repo: String,
    /// Every ref log entry that could be read.
    pub snapshots: Vec<SnapshotRow>,
    /// Refs that could not be listed (whole or in part); the command exits non-zero.
    pub problems: Vec<RefProblem>,
}

/// Lists every ref's snapshots (or one ref's). A ref that cannot be read is a problem in the
/// report, not an error that hides the others.
pub async fn snapshots(
    repo: &Repository,
    name: Option<&RefName>,
) -> Result<SnapshotsReport, OpError> {
    let names = match name {
        Some(n) => vec![n.to_string()],
        None => repo.ref_names().await?,
    };
    let mut rows = Vec::new();
    let mut problems = Vec::new();
    for n in names {
        let log = match repo.ref_log(&n).await {
            Ok(log) => log,
            // One ref named on the command line: its error is the command's.
            Err(e) if name.is_some() => return Err(e.into()),
            Err(e) => {
                problems.push(RefProblem {
                    name: n,
                    error: e.to_string(),
                });
                continue;
            }
        };
        for e in log {
            match repo.read_snapshot(&e.snapshot).await {
                Ok(snap) => rows.push(SnapshotRow {
                    name: n.clone(),
                    seq: e.seq,
                    snapshot: e.snapshot,
                    time: e.time,
                    files: snap.files(),
                    bytes: snap.bytes(),
                }),
                Err(err) => problems.push(RefProblem {
                    name: n.clone(),
                    error: format!("seq {}: {err}", e.seq),
                }),
            }
        }
    }
    Ok(SnapshotsReport {
        repo: repo.url(),
        snapshots: rows,
        problems,
    })
}

/// One entry of a snapshot, as `ferry ls` lists it.
#[derive(Debug, Serialize)]
pub struct LsRow {
    /// Relative path in the snapshot.
    pub path: String,
    /// `file`, `dir` or `symlink`.
    pub kind: &'static str,
    /// Size in bytes (0 for folders and symlinks).
    pub size: u64,
    /// Permission bits (files and folders).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// What a symlink points to.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
}

/// A snapshot's entries, as `ferry ls` lists them.
#[derive(Debug, Serialize)]
pub struct LsReport {
    /// The snapshot listed.
    pub snapshot: SnapshotId,
    /// Its entries, in path order.
    pub entries: Vec<LsRow>,
}

/// Lists the entries of the snapshot `spec` names (`NAME`, `NAME@SEQ` or `NAME@<snapshot id or unique prefix>`).
pub async fn ls(repo: &Repository, spec: &str) -> Result<LsReport, OpError> {
    let id = repo.resolve(spec).await?;
    let snap: Snapshot = repo.read_snapshot(&id).await?;
    Ok(LsReport {
        snapshot: id,
        entries: snap.entries.iter().map(row).collect(),
    })
}

fn row(e: &Entry) -> LsRow {
    let (mode, target) = match e {
        Entry::File { mode, .. } | Entry::Dir { mode, .. } => (Some(*mode), None),
        Entry::Symlink { target, .. } => (None, Some(target.clone())),
    };
    LsRow {
        path: e.path().to_string(),
        kind: e.kind(),
        size: e.size(),
        mode,
        target,
    }
}

/// `ferry snapshots` as text for people.
pub fn render_snapshots(r: &SnapshotsReport) -> String {
    let mut s = format!(
        "{:<24} {:>5} {:<12} {:<24} {:>8} {:>12}",
        "NAME", "SEQ", "SNAPSHOT", "TIME", "FILES", "SIZE"
    );
    for row in &r.snapshots {
        s.push_str(&format!(
            "\n{:<24} {:>5} {:<12} {:<24} {:>8} {:>12}",
            printable(&row.name),
            row.seq,
            &row.snapshot.to_hex()[..12],
            printable(&row.time),
            row.files,
            crate::cli::render::bytes(row.bytes)
        ));
    }
    for p in &r.problems {
        s.push_str(&format!(
            "\nproblem: ref {}: {}",
            printable(&p.name),
            printable(&p.error)
        ));
    }
    s
}

/// `ls -l` style: mode, size (files), path, and `-> target` for symlinks.
pub fn render_ls(r: &LsReport) -> String {
    r.entries
        .iter()
        .map(|e| {
            let size = if e.kind == "file" {
                crate::cli::render::bytes(e.size)
            } else {
                String::new()
            };
            let mut line = format!(
                "{} {size:>12}  {}",
                mode_string(e.kind, e.mode),
                printable(&e.path)
            );
            if let Some(t) = &e.target {
                line.push_str(&format!(" -> {}", printable(t)));
            }
            line
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `drwxr-xr-x`, `-rw-r--r--`, `lrwxrwxrwx` (setuid, setgid and sticky bits as `ls` shows
/// them).
pub fn mode_string(kind: &str, mode: Option<u32>) -> String {
    let (first, mode) = match kind {
        "dir" => ('d', mode.unwrap_or(0o755)),
        "symlink" => ('l', mode.unwrap_or(0o777)),
        _ => ('-', mode.unwrap_or(0o644)),
    };
    let mut s = String::with_capacity(10);
    s.push(first);
    for (shift, special, set_char) in [(6, 0o4000, 's'), (3, 0o2000, 's'), (0, 0o1000, 't')] {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let exec = bits & 1 != 0;
        s.push(match (mode & special != 0, exec) {
            (true, true) => set_char,
            (true, false) => set_char.to_ascii_uppercase(),
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// The text with control characters (newlines, escapes, DEL, C1) and backslashes escaped, so
/// a hostile name cannot forge lines or drive the terminal.
pub fn printable(text: &str) -> String {
    if !text.chars().any(|c| c.is_control() || c == '\\') {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn modes_read_like_ls() {
        assert_eq!(mode_string("file", Some(0o644)), "-rw-r--r--");
        assert_eq!(mode_string("file", Some(0o755)), "-rwxr-xr-x");
        assert_eq!(mode_string("dir", Some(0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string("file", Some(0o4754)), "-rwsr-xr--");
        assert_eq!(mode_string("file", Some(0o2640)), "-rw-r-S---");
        assert_eq!(mode_string("symlink", None), "lrwxrwxrwx");
    }

    #[test]
    fn ls_shows_modes_symlink_targets_and_escapes_names() {
        let r = LsReport {
            snapshot: SnapshotId::of(b"s"),
            entries: vec![
                row(&Entry::Dir {
                    path: "d".into(),
                    mode: 0o750,
                }),
                row(&Entry::Symlink {
                    path: "d/latest".into(),
                    target: "../step-10\u{1b}[2J".into(),
                }),
                LsRow {
                    path: "evil\nfile  1 B  /etc/passwd\u{7}".into(),
                    kind: "file",
                    size: 1,
                    mode: Some(0o600),
                    target: None,
                },
            ],
        };
        let text = render_ls(&r);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 3, "{text}");
        assert!(
            lines[0].starts_with("drwxr-x---") && lines[0].ends_with("  d"),
            "{text}"
        );
        assert!(
            lines[1].starts_with("lrwxrwxrwx")
                && lines[1].ends_with("d/latest -> ../step-10\\u{1b}[2J"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("-rw-------") && lines[2].contains("evil\\nfile"),
            "{text}"
        );
        assert!(
            !text.contains('\u{1b}') && !text.contains('\u{7}'),
            "{text}"
        );
    }

    #[test]
    fn counts_agree_with_their_nouns() {
        use crate::cli::render::count;
        assert_eq!(count(1, "pack"), "1 pack");
        assert_eq!(count(0, "pack"), "0 packs");
        assert_eq!(count(2, "entry"), "2 entries");
        assert_eq!(count(1, "entry"), "1 entry");
        assert_eq!(count(3, "day"), "3 days");
    }

    proptest! {
        /// Whatever a name holds, its rendering is one line without control characters.
        #[test]
        fn printable_has_no_control_characters(text in any::<String>()) {
            let p = printable(&text);
            prop_assert!(!p.chars().any(char::is_control), "{:?}", p);
            if !text.chars().any(|c| c.is_control() || c == '\\') {
                prop_assert_eq!(p, text);
            }
        }
    }
}
