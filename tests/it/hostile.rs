//! Hostile snapshots, planted straight into a repository: absolute paths, `..`, and paths
//! through symlinks (the snapshot's own or ones already in the destination). Restore refuses
//! each with one error line, writes nothing outside its destination (a sibling canary folder
//! stays as it was, and no symlink in the destination leads out of it) and, since it
//! validates a snapshot before writing, nothing inside it either. (Symlinks whose targets are
//! absolute or lead outside are restored as recorded: creating a link writes nothing
//! outside; see `restoring.rs`.)

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use ferry::ids::SnapshotId;
use ferry::repo::snapshot::{Entry, Snapshot, SNAPSHOT_VERSION};

use crate::badinput::{plant_ref, read_snapshot};
use crate::data::{self, KIB};
use crate::harness::{pushed_snapshot, s, Backend, Ctx};
use crate::raw::RawStore;

#[test]
fn hostile_snapshots_file() {
    hostile_snapshots(Backend::File);
}

#[test]
fn hostile_snapshots_s3() {
    hostile_snapshots(Backend::S3);
}

fn dir(path: &str) -> Entry {
    Entry::Dir {
        path: path.into(),
        mode: 0o755,
    }
}

fn link(path: &str, target: &str) -> Entry {
    Entry::Symlink {
        path: path.into(),
        target: target.into(),
    }
}

/// A hostile snapshot: what it tries, its entries, and symlinks to create in the destination
/// beforehand (relative path, target).
struct Case {
    what: &'static str,
    entries: Vec<Entry>,
    before: Vec<(&'static str, String)>,
}

fn cases(file: &dyn Fn(&str) -> Entry, world: &Path) -> Vec<Case> {
    let canary = format!("{}/canary", s(world));
    vec![
        Case {
            what: "absolute path",
            entries: vec![file(&format!("{canary}/evil.bin"))],
            before: vec![],
        },
        Case {
            what: "'..' at the start",
            entries: vec![file("../canary/evil.bin")],
            before: vec![],
        },
        Case {
            what: "'..' inside a path",
            entries: vec![dir("sub"), file("sub/../../canary/evil.bin")],
            before: vec![],
        },
        Case {
            what: "empty path component",
            entries: vec![file("sub//evil.bin")],
            before: vec![],
        },
        Case {
            what: "file through a symlink of the snapshot",
            entries: vec![link("esc", "sub"), file("esc/evil.bin"), dir("sub")],
            before: vec![],
        },
        Case {
            what: "file through a symlink already in the destination",
            entries: vec![dir("esc"), file("esc/evil.bin")],
            before: vec![("esc", canary.clone())],
        },
        Case {
            what: "folder onto a symlink already in the destination",
            entries: vec![Entry::Dir {
                path: "esc".into(),
                mode: 0o700,
            }],
            before: vec![("esc", "../canary".into())],
        },
        Case {
            what: "folder through a symlink already in the destination",
            entries: vec![dir("esc"), dir("esc/sub"), file("esc/sub/evil.bin")],
            before: vec![("esc", "../canary".into())],
        },
    ]
}

fn hostile_snapshots(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::write_file(&src, "weights.bin", &data::random_bytes(70, 200 * KIB));
    let ferry = ctx.ferry();
    let pushed = pushed_snapshot(&ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]));
    // Real chunks: without its checks, restore would write these files wherever told.
    let base = read_snapshot(&repo.raw, &pushed);
    let template = base
        .entries
        .iter()
        .find(|e| matches!(e, Entry::File { .. }))
        .expect("a file entry")
        .clone();
    let file = |path: &str| {
        let mut e = template.clone();
        if let Entry::File { path: p, .. } = &mut e {
            *p = path.to_string();
        }
        e
    };

    let world = ctx.dir("world");
    let canary = world.join("canary");
    data::write_file(&canary, "keep.txt", b"canary\n");
    let canary_before = data::tree(&canary);
    let canary_mode = || {
        fs::metadata(&canary)
            .expect("stat canary")
            .permissions()
            .mode()
    };
    let mode_before = canary_mode();
    let cases = cases(&file, &world);
    for (i, case) in cases.iter().enumerate() {
        let name = format!("evil-{i}");
        let id = plant_snapshot(&repo.raw, &name, &case.entries);

        let dest = world.join(format!("dest-{i}"));
        fs::create_dir_all(&dest).expect("create dest");
        for (rel, target) in &case.before {
            std::os::unix::fs::symlink(target, dest.join(rel)).expect("symlink");
        }
        let before = data::tree(&dest);
        let run = ferry.run(&["restore", &repo.url, &name, s(&dest)]);
        assert_eq!(
            run.status.code(),
            Some(1),
            "{}: restore must refuse: {run}",
            case.what
        );
        let line = run.error_line();
        assert!(
            line.contains("refusing to restore") || line.contains(&id),
            "{}: the error names neither the entry nor the snapshot: {run}",
            case.what
        );
        assert_eq!(
            data::tree(&canary),
            canary_before,
            "{}: restore wrote outside its destination",
            case.what
        );
        assert_eq!(
            canary_mode(),
            mode_before,
            "{}: restore changed the mode of a folder outside its destination",
            case.what
        );
        assert_nothing_beside(&world, case.what);
        let made: Vec<&str> = case.before.iter().map(|(rel, _)| *rel).collect();
        assert_no_escape(&dest, &made, case.what);
        assert_eq!(
            data::tree(&dest),
            before,
            "{}: restore wrote into its destination before refusing",
            case.what
        );
    }
    eprintln!(
        "hostile snapshots ({backend:?}): {} refused, nothing written outside",
        cases.len()
    );
}

/// Writes a snapshot of `entries` straight into the repository, and ref `name` pointing to
/// it; returns its id.
fn plant_snapshot(raw: &RawStore, name: &str, entries: &[Entry]) -> String {
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: "2026-11-26T13:00:00Z".into(),
        name: name.to_string(),
        source: "hostile".into(),
        parent: None,
        entries: entries.to_vec(),
    };
    let bytes = snapshot.encode();
    let id = SnapshotId::of(&bytes).to_hex();
    raw.put(&format!("snapshots/{id}"), &bytes);
    plant_ref(raw, name, 1, &id);
    id
}

/// `world` holds the canary and the destinations, and nothing else.
fn assert_nothing_beside(world: &Path, what: &str) {
    let beside: Vec<String> = fs::read_dir(world)
        .expect("list world")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with("dest-"))
        .collect();
    assert_eq!(
        beside,
        ["canary"],
        "{what}: restore wrote beside its destination"
    );
}

/// No symlink under `dest` but those the test `made` resolves outside it.
fn assert_no_escape(dest: &Path, made: &[&str], what: &str) {
    let root = dest.canonicalize().expect("canonical dest");
    for (rel, entry) in data::tree(dest) {
        if let data::Entry::Symlink(_) = entry {
            if let Ok(real) = dest.join(&rel).canonicalize() {
                assert!(
                    real.starts_with(&root) || made.contains(&rel.as_str()),
                    "{what}: {rel} leads outside the destination, to {}",
                    real.display()
                );
            }
        }
    }
}
