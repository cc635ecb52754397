//! Tree jobs settle per file: a file still changing keeps the version the ref's head has while
//! the settled files land (with or without `merge`), a removed file leaves the snapshot, and
//! a file changing for longer than `max_wait` becomes a warning on the job.

use std::collections::BTreeMap;
use std::fs;

use super::tests::{age, write, World};
use super::*;
use crate::repo::snapshot::Entry;
use crate::repo::Repository;
use crate::store::{Access, Store, StoreUrl};

fn tree_job(extra: &str) -> String {
    format!(
        r#"
[[jobs]]
name = "data"
source = "$DIR/src"
ref = "data"
targets = ["$DIR/repo"]
every = "1h"
settle = "1h"
{extra}
"#
    )
}

/// The head snapshot of `data`: each file's whole-file BLAKE3 by path.
async fn head_files(w: &World) -> BTreeMap<String, String> {
    let store = Store::open_with(
        &StoreUrl::Local(w.path("repo")),
        Access::Read,
        &Default::default(),
    )
    .unwrap();
    let repo = Repository::open(store, &Default::default()).await.unwrap();
    let head = repo.ref_head("data").await.unwrap().expect("a head");
    let snap = repo.read_snapshot(&head.snapshot).await.unwrap();
    snap.entries
        .iter()
        .filter_map(|e| match e {
            Entry::File { path, blake3, .. } => Some((path.clone(), format!("{blake3:?}"))),
            _ => None,
        })
        .collect()
}

async fn held_file_keeps_the_heads_version(extra: &str) {
    let w = World::new();
    for name in ["a.bin", "b.log", "c.bin"] {
        write(&w.path(&format!("src/{name}")), name.as_bytes());
    }
    age(&w.path("src"));
    let d = w.daemon(w.config(&tree_job(extra)), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(report.ok && !report.nothing_ready, "{report:?}");
    let first = head_files(&w).await;
    assert_eq!(first.len(), 3, "{first:?}");

    // `a` changes and settles, `b` is being rewritten (within settle), `c` is removed.
    write(&w.path("src/a.bin"), b"a, second version");
    age(&w.path("src"));
    write(&w.path("src/b.log"), b"b, half written");
    fs::remove_file(w.path("src/c.bin")).unwrap();
    // The next `ferry sync` is a new process: it dates what it sees by file times.
    drop(d);
    let d = w.daemon(w.config(&tree_job(extra)), Mode::Once).await;
    let report = d.sync(None).await.unwrap();
    assert!(report.ok, "{report:?}");
    let second = head_files(&w).await;
    assert_ne!(second["a.bin"], first["a.bin"], "the settled change landed");
    assert_eq!(
        second["b.log"], first["b.log"],
        "the busy file keeps the head's version"
    );
    if extra.contains("merge") {
        assert!(second.contains_key("c.bin"), "a merge never removes a path");
    } else {
        assert!(
            !second.contains_key("c.bin"),
            "a removed file leaves the tree"
        );
    }
    let waiting = &report.jobs[0].waiting;
    assert_eq!(waiting.len(), 1, "{waiting:?}");
    assert_eq!(
        (waiting[0].waiting_for.as_str(), waiting[0].files.clone()),
        ("settle", vec!["b.log".to_string()])
    );
    assert!(
        report.not_ready[0].contains("b.log"),
        "{:?}",
        report.not_ready
    );
}

#[tokio::test]
async fn a_file_still_changing_keeps_the_heads_version() {
    held_file_keeps_the_heads_version("").await;
}

#[tokio::test]
async fn a_merging_tree_job_keeps_the_heads_version_too() {
    held_file_keeps_the_heads_version("merge = true").await;
}

#[tokio::test]
async fn a_file_that_never_settles_is_a_warning_after_max_wait() {
    let w = World::new();
    write(&w.path("src/quiet.bin"), b"quiet");
    age(&w.path("src"));
    let job = tree_job("max_wait = \"1s\"").replace("settle = \"1h\"", "settle = \"1s\"");
    let d = w.daemon(w.config(&job), Mode::Once).await;
    let j = d.find("data").unwrap();
    let (root, complete) = tree::per_file(&j).unwrap();
    for i in 0..4 {
        write(&w.path("src/busy.log"), format!("version {i}").as_bytes());
        tree::look(&d.shared, &j, &root, &complete, Cause::Sync, true).await;
        tokio::time::sleep(std::time::Duration::from_millis(400)).await;
    }
    let status = d.job("data").unwrap();
    assert_eq!(status.state, "waiting", "{status:?}");
    assert_eq!(status.warnings.len(), 1, "{status:?}");
    let warning = &status.warnings[0];
    assert!(
        warning.contains("busy.log") && warning.contains("max_wait (1s)"),
        "{warning}"
    );
    let text = render_status(&[status], d.clock().now_ms());
    assert!(
        text.contains("warning:") && text.contains("busy.log"),
        "{text}"
    );
}
