//! A source that never settles as a whole still gets pushed: per-file settling on a tree job
//! pushes the quiet files and names the busy one as waiting (API, `ferry status`), the lag
//! grows while a change stays unsynced, and the busy file lands once its writer stops.
//! `ferry sync` says what was not ready and why, with its own exit status.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{write_config, Daemon};
use crate::data;
use crate::harness::{array, number, s, string, Backend, Ctx};

per_backend!(a_source_that_never_settles_still_gets_pushed);

const QUIET: usize = 19;

/// Rewrites `path` every 500 ms until `stop`.
fn busy_writer(path: &Path, stop: Arc<AtomicBool>) -> thread::JoinHandle<()> {
    let path = path.to_path_buf();
    thread::spawn(move || {
        let mut n = 0u64;
        while !stop.load(Ordering::Relaxed) {
            n += 1;
            fs::write(&path, format!("line {n}\n").repeat(100 + n as usize)).expect("write");
            thread::sleep(Duration::from_millis(500));
        }
    })
}

/// Restores the ref `data` from `repo` into a fresh folder (with its own index: the daemon
/// holds the test's) and reads it back.
fn restored(ctx: &Ctx, repo: &str) -> (PathBuf, BTreeMap<String, Vec<u8>>) {
    let ferry = ctx.ferry_with_index(&ctx.dir("restore-index"));
    let dest = ctx.path("restore");
    ferry.json(&["restore", repo, "data", s(&dest)]);
    let files = data::file_contents(&dest);
    (dest, files)
}

fn waiting_files(job: &Value) -> Vec<String> {
    array(job, "waiting")
        .iter()
        .flat_map(|w| w["files"].as_array().cloned().unwrap_or_default())
        .filter_map(|f| f.as_str().map(String::from))
        .collect()
}

pub fn a_source_that_never_settles_still_gets_pushed(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    for i in 0..QUIET {
        data::write_file(
            &src,
            &format!("part-{i:02}.bin"),
            &data::random_bytes(i as u64, 64 * 1024),
        );
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = busy_writer(&src.join("busy.log"), stop.clone());
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"data\"\nsource = \"{}\"\nref = \"data\"\ntargets = [\"{}\"]\nevery = \"1s\"\nsettle = \"2s\"\n",
            s(&src),
            repo.url
        ),
    );
    let ferry = ctx.ferry();
    let d = Daemon::start(&ferry, &config, &[], &[]);

    // Within 20 s the ref holds the 19 quiet files at their current contents.
    d.wait_for(
        "a snapshot of the quiet files",
        Duration::from_secs(20),
        |d| {
            d.runs("job=data&state=succeeded")
                .iter()
                .any(|r| r["snapshot"].is_string())
                .then_some(())
        },
    );
    let (_, got) = restored(&ctx, &repo.url);
    let source = data::file_contents(&src);
    assert_eq!(got.len(), QUIET, "{:?}", got.keys().collect::<Vec<_>>());
    for (name, bytes) in &got {
        assert_eq!(Some(bytes), source.get(name), "{name}");
    }
    assert!(
        !got.contains_key("busy.log"),
        "a file still changing was pushed"
    );

    // The busy file is named as waiting, in the API and in `ferry status`; the lag grows.
    let job = d.job("data");
    assert_eq!(string(&job, "state"), "waiting", "{job}");
    assert_eq!(waiting_files(&job), ["busy.log"], "{job}");
    let lag = |job: &Value| number(&array(job, "targets")[0], "lag_secs");
    let first = lag(&job);
    thread::sleep(Duration::from_millis(1500));
    let job = d.job("data");
    let second = lag(&job);
    assert!(
        first > 0.0 && second > first,
        "lag {first} then {second}: {job}"
    );
    let status = ferry.run_bare(&["status", "--url", &format!("http://{}", d.addr)], &[]);
    assert!(
        status.status.success()
            && status.stdout.contains("busy.log")
            && status.stdout.contains("waiting"),
        "{status}"
    );

    // The writer stops: the next run includes the busy file.
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let last = fs::read(src.join("busy.log")).expect("busy.log");
    let pushed_before = d.runs("job=data&state=succeeded").len();
    let job = d.wait_for(
        "a run after the writer stopped, nothing waiting",
        Duration::from_secs(30),
        |d| {
            let job = d.job("data");
            let runs = d.runs("job=data&state=succeeded").len();
            (string(&job, "state") == "idle" && runs > pushed_before).then_some(job)
        },
    );
    assert!(waiting_files(&job).is_empty(), "{job}");
    let (dest, got) = restored(&ctx, &repo.url);
    assert_eq!(
        got.get("busy.log"),
        Some(&last),
        "the busy file's last version"
    );
    data::assert_same_tree(&src, &dest);
    let (stopped, _) = d.stop();
    assert!(stopped.status.success(), "{stopped}");
}

/// `ferry sync` on a tree written within `settle`: nothing is pushed, the report names the
/// files and the reason, and the exit status (3) differs from success and failure. A missing
/// source folder is a `check-config` warning naming the key.
#[test]
fn sync_says_what_was_not_ready_and_why() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo = ctx.location(Backend::File);
    let src = ctx.dir("src");
    data::write_file(&src, "fresh.bin", b"just written");
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"data\"\nsource = \"{}\"\ntargets = [\"{}\"]\nevery = \"1h\"\nsettle = \"1h\"\n",
            s(&src),
            repo.url
        ),
    );
    let ferry = ctx.ferry();
    let run = ferry.run(&["sync", "--config", s(&config)]);
    assert_eq!(run.status.code(), Some(3), "{run}");
    let report = run.stdout_json();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["nothing_ready"], true, "{report}");
    let why = array(&report, "not_ready");
    let line = why[0].as_str().unwrap_or("");
    assert!(
        line.contains("fresh.bin") && line.contains("settle (1h)"),
        "{report}"
    );
    let text = ferry.run_bare(
        &[
            "--index-dir",
            s(ctx.index_dir()),
            "sync",
            "--config",
            s(&config),
        ],
        &[],
    );
    assert_eq!(text.status.code(), Some(3), "{text}");
    assert!(
        text.stdout.contains("nothing was ready")
            && text
                .stdout
                .contains("not ready: data: tree: 1 file(s) changed within settle (1h): fresh.bin"),
        "{text}"
    );

    let missing = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"data\"\nsource = \"{}/typo\"\ntargets = [\"{}\"]\nevery = \"1h\"\n",
            s(&src),
            repo.url
        ),
    );
    let check = ferry.json(&["check-config", "--config", s(&missing)]);
    let warnings = array(&check, "warnings");
    assert!(
        warnings.len() == 1
            && warnings[0]
                .as_str()
                .is_some_and(|w| w.starts_with("jobs[0].source: ") && w.contains("typo")),
        "{check}"
    );
}
