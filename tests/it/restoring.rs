//! Restore's rules for what it finds and what it is given: symlinks come back as they were
//! recorded (absolute or leading outside; restore never writes through one), files already
//! in the destination are handled by `--overwrite` and reported, setuid/setgid bits are
//! dropped unless asked, and snapshots with duplicate or unsorted entries are refused.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use ferry::ids::SnapshotId;
use ferry::repo::snapshot::{Entry, Snapshot, SNAPSHOT_VERSION};
use serde_json::Value;

use crate::badinput::{plant_ref, read_snapshot};
use crate::data;
use crate::harness::{array, pushed_snapshot, s, string, uint, Backend, Ctx};

per_backend!(
    symlinks_come_back_as_recorded,
    restore_into_a_non_empty_folder,
    restore_onto_existing_objects,
    duplicate_and_unsorted_snapshots_are_refused
);

fn paths(v: &Value, key: &str) -> Vec<String> {
    array(v, key)
        .iter()
        .map(|p| p.as_str().expect("a path").to_string())
        .collect()
}

/// `latest -> /ckpt/step-N` (absolute) and a link leading out of the tree are pushed and
/// restored as they were; the files come back; nothing is written outside the destination.
pub fn symlinks_come_back_as_recorded(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let src = ctx.dir("src");
    data::write_file(&src, "step-2/model.bin", &data::random_bytes(81, 40_000));
    data::write_file(&src, "step-2/config.json", b"{}");
    let abs = src.join("step-2");
    std::os::unix::fs::symlink(&abs, src.join("latest")).expect("symlink");
    std::os::unix::fs::symlink("../../elsewhere/data", src.join("step-2/shared")).expect("link");
    std::os::unix::fs::symlink("step-2/model.bin", src.join("model.bin")).expect("link");
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);

    let world = ctx.dir("world");
    let dest = world.join("dest");
    ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    data::assert_same_tree(&src, &dest);
    assert_eq!(fs::read_link(dest.join("latest")).expect("link"), abs);
    assert_eq!(
        fs::read_link(dest.join("step-2/shared")).expect("link"),
        Path::new("../../elsewhere/data")
    );
    let beside: Vec<_> = fs::read_dir(&world).expect("list").collect();
    assert_eq!(beside.len(), 1, "restore wrote beside its destination");

    // A second restore finds every link already as recorded.
    let again = ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    assert_eq!(paths(&again, "replaced"), Vec::<String>::new(), "{again}");
    assert_eq!(uint(&again, "unchanged"), 5, "{again}");
}

/// Pushes three files and returns (repo location, source folder).
fn three_files(ctx: &Ctx, backend: Backend) -> (crate::raw::Location, PathBuf) {
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(82, 30_000));
    data::write_file(&src, "b.bin", &data::random_bytes(83, 30_000));
    data::write_file(&src, "sub/c.bin", &data::random_bytes(84, 30_000));
    let repo = ctx.location(backend);
    ctx.ferry()
        .json(&["push", s(&src), &repo.url, "--name", "ckpt"]);
    (repo, src)
}

/// `--overwrite changed` (the default) replaces only what differs and reports it; a file
/// already identical is not rewritten (same inode, same mtime); files the snapshot does not
/// have stay. `never` keeps what is there; `always` rewrites everything.
pub fn restore_into_a_non_empty_folder(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (repo, src) = three_files(&ctx, backend);
    let ferry = ctx.ferry();
    let dest = ctx.dir("dest");
    fs::copy(src.join("a.bin"), dest.join("a.bin")).expect("copy");
    data::write_file(&dest, "b.bin", b"someone else's b");
    data::write_file(&dest, "mine.txt", b"not in the snapshot");
    let old = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000);
    fs::File::options()
        .write(true)
        .open(dest.join("a.bin"))
        .and_then(|f| f.set_modified(old))
        .expect("set mtime");
    let before = fs::metadata(dest.join("a.bin")).expect("stat");

    let r = ferry.json(&["restore", &repo.url, "ckpt", s(&dest)]);
    assert_eq!(string(&r, "overwrite"), "changed", "{r}");
    assert_eq!(paths(&r, "replaced"), ["b.bin"], "{r}");
    assert_eq!(uint(&r, "unchanged"), 1, "{r}");
    let after = fs::metadata(dest.join("a.bin")).expect("stat");
    assert_eq!(
        (after.ino(), after.mtime()),
        (before.ino(), before.mtime()),
        "an identical file was rewritten"
    );
    for rel in ["a.bin", "b.bin", "sub/c.bin"] {
        assert_eq!(
            fs::read(dest.join(rel)).expect("read"),
            fs::read(src.join(rel)).expect("read"),
            "{rel}"
        );
    }
    assert_eq!(
        fs::read(dest.join("mine.txt")).expect("kept"),
        b"not in the snapshot"
    );

    data::write_file(&dest, "b.bin", b"edited again");
    let r = ferry.json(&[
        "restore",
        &repo.url,
        "ckpt",
        s(&dest),
        "--overwrite",
        "never",
    ]);
    assert_eq!(paths(&r, "kept"), ["a.bin", "b.bin", "sub/c.bin"], "{r}");
    assert_eq!(paths(&r, "replaced"), Vec::<String>::new(), "{r}");
    assert_eq!(fs::read(dest.join("b.bin")).expect("read"), b"edited again");

    let r = ferry.json(&[
        "restore",
        &repo.url,
        "ckpt",
        s(&dest),
        "--overwrite",
        "always",
    ]);
    assert_eq!(
        paths(&r, "replaced"),
        ["a.bin", "b.bin", "sub/c.bin"],
        "{r}"
    );
    assert_eq!(
        fs::read(dest.join("b.bin")).expect("read"),
        fs::read(src.join("b.bin")).expect("read")
    );
    let text = ferry.run(&[
        "restore",
        &repo.url,
        "ckpt",
        s(&dest),
        "--overwrite",
        "sometimes",
    ]);
    assert!(!text.status.success(), "{text}");
}

/// The same rules when restoring to an object prefix.
pub fn restore_onto_existing_objects(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let (repo, src) = three_files(&ctx, backend);
    let ferry = ctx.ferry();
    let prefix = ctx.location(backend);
    prefix
        .raw
        .put("a.bin", &fs::read(src.join("a.bin")).expect("read"));
    prefix.raw.put("b.bin", b"someone else's b");
    let r = ferry.json(&["restore", &repo.url, "ckpt", &prefix.url]);
    assert_eq!(paths(&r, "replaced"), ["b.bin"], "{r}");
    assert_eq!(uint(&r, "unchanged"), 1, "{r}");
    assert_eq!(
        prefix.raw.get("b.bin"),
        fs::read(src.join("b.bin")).expect("read")
    );
    prefix.raw.put("b.bin", b"edited again");
    let r = ferry.json(&[
        "restore",
        &repo.url,
        "ckpt",
        &prefix.url,
        "--overwrite",
        "never",
    ]);
    assert_eq!(paths(&r, "kept"), ["a.bin", "b.bin", "sub/c.bin"], "{r}");
    assert_eq!(prefix.raw.get("b.bin"), b"edited again");
}

/// Setuid/setgid bits recorded in a snapshot (mode 6777) are dropped unless
/// `--preserve-special-modes` asks for them.
#[test]
fn special_modes_are_dropped_unless_asked() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let src = ctx.dir("src");
    data::write_file(&src, "tool", b"#!/bin/sh\n");
    fs::set_permissions(src.join("tool"), fs::Permissions::from_mode(0o6777)).expect("chmod");
    let recorded = fs::metadata(src.join("tool")).expect("stat").mode() & 0o7777;
    assert_eq!(recorded, 0o6777, "this file system keeps setuid bits");
    let repo = ctx.location(Backend::File);
    let ferry = ctx.ferry();
    ferry.json(&["push", s(&src), &repo.url, "--name", "t"]);
    let mode = |dest: &Path| fs::metadata(dest.join("tool")).expect("stat").mode() & 0o7777;

    let plain = ctx.path("plain");
    ferry.json(&["restore", &repo.url, "t", s(&plain)]);
    assert_eq!(mode(&plain), 0o777);
    let kept = ctx.path("kept");
    ferry.json(&[
        "restore",
        &repo.url,
        "t",
        s(&kept),
        "--preserve-special-modes",
    ]);
    assert_eq!(mode(&kept), 0o6777);
}

/// FORMAT.md: readers refuse a snapshot with a path twice or entries out of order. Restore
/// and verify both refuse, naming the snapshot; restore writes nothing.
pub fn duplicate_and_unsorted_snapshots_are_refused(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let src = ctx.dir("src");
    data::write_file(&src, "w.bin", &data::random_bytes(85, 20_000));
    let ferry = ctx.ferry();
    let push = |repo: &crate::raw::Location| {
        pushed_snapshot(&ferry.json(&["push", s(&src), &repo.url, "--name", "ok"]))
    };
    let first = ctx.location(backend);
    let file = read_snapshot(&first.raw, &push(&first))
        .entries
        .into_iter()
        .find(|e| matches!(e, Entry::File { .. }))
        .expect("a file");
    let named = |path: &str| {
        let mut e = file.clone();
        if let Entry::File { path: p, .. } = &mut e {
            *p = path.into();
        }
        e
    };
    let link = Entry::Symlink {
        path: "a.bin".into(),
        target: "/etc/passwd".into(),
    };
    let cases = [
        ("a path twice", vec![named("a.bin"), named("a.bin")]),
        ("a file then a symlink", vec![named("a.bin"), link]),
        ("unsorted", vec![named("b.bin"), named("a.bin")]),
    ];
    for (i, (what, entries)) in cases.into_iter().enumerate() {
        // A repository per case, so verify meets only this case's snapshot.
        let repo = ctx.location(backend);
        push(&repo);
        let name = format!("bad-{i}");
        let snap = Snapshot {
            version: SNAPSHOT_VERSION,
            time: "2026-11-26T13:00:00Z".into(),
            name: name.clone(),
            source: "hostile".into(),
            parent: None,
            entries,
        };
        let bytes = snap.encode();
        let id = SnapshotId::of(&bytes).to_hex();
        repo.raw.put(&format!("snapshots/{id}"), &bytes);
        plant_ref(&repo.raw, &name, 1, &id);
        let dest = ctx.dir("dest");
        let run = ferry.run(&["restore", &repo.url, &name, s(&dest)]);
        let line = run.error_line();
        assert!(
            line.contains(&id) && (line.contains("twice") || line.contains("not sorted")),
            "{what}: {run}"
        );
        assert!(
            data::tree(&dest).is_empty(),
            "{what}: restore wrote before refusing"
        );
        let verify = ferry.run(&["verify", &repo.url]);
        assert!(!verify.status.success(), "{what}: verify accepted it");
        assert!(
            verify.stdout.contains(&id) || verify.stderr.contains(&id),
            "{what}: {verify}"
        );
    }
}
