//! The daemon's pull job end to end, once per backend: a watched ref's new snapshots are
//! each published once into `DIR/current`, the command hook and the HTTP hook (a small
//! server in the test) run after each publish, a failing hook is reported without
//! unpublishing or stopping the next publish, and the API and `/metrics` show the version
//! live, its lag and the bytes read vs reused. On `file://`, the watch is shown to read
//! nothing but the ref's next log entry while nothing is new.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use serde_json::Value;

use crate::daemon::{write_config, Daemon};
use crate::data::{self, MIB};
use crate::harness::{array, boolean, s, string, uint, Backend, Ctx};
use crate::http;
use crate::run::Ferry;

per_backend!(pull_job_publishes_each_snapshot_once_and_runs_its_hooks);

/// A tiny HTTP server on 127.0.0.1 that records the body of every POST and answers 200, or
/// 500 while `fail` exists.
struct HookServer {
    url: String,
    bodies: Arc<Mutex<Vec<Value>>>,
}

impl HookServer {
    fn start(fail: PathBuf) -> HookServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/reload", listener.local_addr().expect("addr"));
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let seen = bodies.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().expect("clone"));
                let mut len = 0usize;
                let mut line = String::new();
                while reader.read_line(&mut line).is_ok_and(|n| n > 0) {
                    if line == "\r\n" {
                        break;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap_or(0);
                    }
                    line.clear();
                }
                let mut body = vec![0u8; len];
                if reader.read_exact(&mut body).is_err() {
                    continue;
                }
                if let Ok(v) = serde_json::from_slice(&body) {
                    seen.lock().expect("lock").push(v);
                }
                let status = if fail.exists() { "500 Oops" } else { "200 OK" };
                let _ = write!(
                    stream,
                    "HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                );
            }
        });
        HookServer { url, bodies }
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().expect("lock").clone()
    }
}

/// The pull job's published runs, oldest first.
fn published(d: &Daemon, job: &str) -> Vec<Value> {
    let mut runs: Vec<Value> = d
        .runs(&format!("job={job}&state=succeeded"))
        .into_iter()
        .filter(|r| r["pull"]["published"].as_bool() == Some(true))
        .collect();
    runs.reverse();
    runs
}

/// Waits until the job has published `n` versions; returns the newest run.
fn wait_published(d: &Daemon, job: &str, n: usize) -> Value {
    d.wait_for(
        &format!("{job} published {n} versions"),
        Duration::from_secs(120),
        |d| {
            let runs = published(d, job);
            (runs.len() >= n).then(|| runs[n - 1].clone())
        },
    )
}

/// The folder `DIR/current` points at.
fn current(dir: &Path) -> PathBuf {
    dir.join(fs::read_link(dir.join("current")).expect("current is a symlink"))
}

/// A pull job config: `from` repository, ref `model`, into `dest`, with both hooks.
fn pull_config(ctx: &Ctx, from: &str, dest: &Path, log: &Path, flag: &Path, url: &str) -> PathBuf {
    let script = format!(
        "echo \"$FERRY_PULL_SEQ $FERRY_PULL_SNAPSHOT $FERRY_PULL_PATH $FERRY_PULL_NAME\" >> {}; test ! -e {}",
        s(log),
        s(flag)
    );
    write_config(
        ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"serve\"\nkind = \"pull\"\nfrom = \"{from}\"\nref = \"model\"\ndest = \"{}\"\nkeep = 2\nwatch = true\npoll = \"200ms\"\nhook_command = ['/bin/sh', '-c', '{script}']\nhook_url = \"{url}\"\nhook_timeout = \"10s\"\n",
            s(dest)
        ),
    )
}

/// Step `n` of a checkpoint: 256 KiB of the model move per step.
fn write_step(src: &Path, model: &mut [u8], n: u64) {
    let (at, len) = ((n as usize % 4) * MIB, MIB / 4);
    model[at..at + len].copy_from_slice(&data::random_bytes(900 + n, len));
    data::write_file(src, "model.bin", model);
    data::write_file(src, "config.json", format!("{{\"step\": {n}}}").as_bytes());
}

fn push(ferry: &Ferry, src: &Path, repo: &str) -> String {
    let push = ferry.json(&["push", s(src), repo, "--name", "model"]);
    crate::harness::pushed_snapshot(&push)
}

/// Each pushed snapshot is published once, in order; both hooks see each publish; a failing
/// hook is noted on its run, the version stays live and the next one still publishes.
pub fn pull_job_publishes_each_snapshot_once_and_runs_its_hooks(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    // The daemon holds the default index; the trainer side pushes with its own.
    let pusher = ctx.ferry_with_index(&ctx.path("push-index"));
    let src = ctx.dir("src");
    let mut model = data::random_bytes(800, 6 * MIB);
    write_step(&src, &mut model, 1);
    let first = push(&pusher, &src, &repo.url);
    let (dest, log, flag) = (ctx.path("serve"), ctx.path("hook.log"), ctx.path("fail"));
    let server = HookServer::start(flag.clone());
    let config = pull_config(&ctx, &repo.url, &dest, &log, &flag, &server.url);
    let d = Daemon::start(&ctx.ferry(), &config, &[], &[]);

    let run = wait_published(&d, "serve", 1);
    assert_eq!(string(&run, "snapshot"), first, "{run}");
    assert_eq!(uint(&run["pull"], "seq"), 1, "{run}");
    data::assert_same_tree(&src, &current(&dest));
    let mut snapshots = vec![first];
    for n in 2..=4u64 {
        if n == 3 {
            fs::write(&flag, b"").expect("flag");
        }
        write_step(&src, &mut model, n);
        snapshots.push(push(&pusher, &src, &repo.url));
        let run = wait_published(&d, "serve", n as usize);
        assert_eq!(uint(&run["pull"], "seq"), n, "{run}");
        assert_eq!(string(&run, "snapshot"), snapshots[n as usize - 1]);
        data::assert_same_tree(&src, &current(&dest));
        let hooks = array(&run["pull"], "hooks");
        assert_eq!(hooks.len(), 2, "{run}");
        if n == 3 {
            assert!(hooks.iter().all(|h| !boolean(h, "ok")), "{run}");
            let note = string(&run, "error");
            assert!(
                note.contains("command hook failed") && note.contains("http hook failed"),
                "{run}"
            );
            fs::remove_file(&flag).expect("unflag");
        } else {
            assert!(hooks.iter().all(|h| boolean(h, "ok")), "{run}");
            // Steps after the first reuse what did not move from the live version.
            assert!(
                uint(&run["pull"], "bytes_reused") >= 2 * MIB as u64,
                "{run}"
            );
        }
    }

    // Each snapshot once: four publishes, four command hooks, four POSTs, in order.
    let runs = published(&d, "serve");
    assert_eq!(runs.len(), 4, "{runs:?}");
    let lines: Vec<String> = fs::read_to_string(&log)
        .expect("hook log")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    let bodies = server.bodies();
    assert_eq!(bodies.len(), 4, "{bodies:?}");
    for (i, (line, body)) in lines.iter().zip(&bodies).enumerate() {
        let seq = i as u64 + 1;
        let path = string(&runs[i]["pull"], "version");
        assert_eq!(
            *line,
            format!("{seq} {} {path} model", snapshots[i]),
            "the command's environment"
        );
        assert_eq!(uint(body, "seq"), seq, "{body}");
        assert_eq!(string(body, "name"), "model");
        assert_eq!(string(body, "snapshot"), snapshots[i]);
        assert_eq!(string(body, "path"), path);
    }

    check_status_and_metrics(&d, &runs, &snapshots);
    let (stopped, _) = d.stop();
    assert!(stopped.status.success(), "{stopped}");
    // --keep 2: the live version and the one before.
    let versions = fs::read_dir(dest.join("versions"))
        .expect("versions")
        .count();
    assert_eq!(versions, 2);
}

/// After four publishes (the third with both hooks failing): the job's `pull` status and the
/// `/metrics` lines of a pull job.
fn check_status_and_metrics(d: &Daemon, runs: &[Value], snapshots: &[String]) {
    let job = d.job("serve");
    assert_eq!(string(&job, "kind"), "pull", "{job}");
    let pull = &job["pull"];
    assert_eq!(uint(&pull["live"], "seq"), 4, "{job}");
    assert_eq!(
        string(&pull["live"], "snapshot"),
        &snapshots[3][..12],
        "{job}"
    );
    assert_eq!(uint(pull, "lag_snapshots"), 0, "{job}");
    assert_eq!(uint(pull, "hook_failures"), 2, "{job}");
    assert!(
        pull["last_hook_error"].is_null(),
        "cleared by a good publish: {job}"
    );
    // The job's totals are its runs' sums.
    let sum = |key: &str| runs.iter().map(|r| uint(&r["pull"], key)).sum::<u64>();
    assert_eq!(uint(pull, "bytes_read"), sum("bytes_read"), "{job}");
    assert_eq!(uint(pull, "bytes_reused"), sum("bytes_reused"), "{job}");
    let metrics = http::get(&d.addr, "/metrics").body;
    for line in [
        "ferry_pull_live_seq{job=\"serve\"} 4",
        "ferry_pull_lag_snapshots{job=\"serve\"} 0",
        "ferry_pull_published_total{job=\"serve\"} 4",
    ] {
        assert!(metrics.contains(line), "no {line} in /metrics:\n{metrics}");
    }
    let hook_failures = metrics
        .lines()
        .filter(|l| l.starts_with("ferry_pull_hook_failures_total{") && l.ends_with(" 1"))
        .count();
    assert_eq!(hook_failures, 2, "one failure of each hook:\n{metrics}");
}

/// While nothing is new, a watching pull job reads only the ref's next log entry: with every
/// other object of the repository moved away (config, snapshots, packs, indexes and the
/// ref's existing entry), polls go on without an error and without a run.
#[test]
fn watch_reads_only_the_next_ref_entry() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo_dir = ctx.dir("repo");
    let url = format!("file://{}", s(&repo_dir));
    let pusher = ctx.ferry_with_index(&ctx.path("push-index"));
    let src = ctx.dir("src");
    let mut model = data::random_bytes(810, 4 * MIB);
    write_step(&src, &mut model, 1);
    push(&pusher, &src, &url);
    let (dest, log, flag) = (ctx.path("serve"), ctx.path("hook.log"), ctx.path("fail"));
    let server = HookServer::start(flag.clone());
    let config = pull_config(&ctx, &url, &dest, &log, &flag, &server.url);
    let d = Daemon::start(&ctx.ferry(), &config, &[], &[]);
    wait_published(&d, "serve", 1);
    let scans = |d: &Daemon| -> u64 {
        http::get(&d.addr, "/metrics")
            .body
            .lines()
            .find_map(|l| l.strip_prefix("ferry_source_scans_total{job=\"serve\"} "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    // The first probe opens the repository (reads its config); later ones only probe.
    d.wait_for("a first probe", Duration::from_secs(60), |d| {
        (scans(d) >= 1).then_some(())
    });

    let aside = ctx.dir("aside");
    let moved: Vec<String> = fs::read_dir(&repo_dir)
        .expect("repo")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n != "refs")
        .collect();
    for name in &moved {
        fs::rename(repo_dir.join(name), aside.join(name)).expect("move aside");
    }
    let entry = format!("refs/model/{:020}", 1);
    fs::rename(repo_dir.join(&entry), aside.join("entry")).expect("move the entry");
    let before = scans(&d);
    d.wait_for("ten more probes", Duration::from_secs(60), |d| {
        (scans(d) >= before + 10).then_some(())
    });
    let job = d.job("serve");
    assert!(job["scan_error"].is_null(), "a probe failed: {job}");
    assert_eq!(d.runs("job=serve").len(), 1, "a run started: {job}");

    // Back in place, a new snapshot is noticed and published.
    fs::rename(aside.join("entry"), repo_dir.join(&entry)).expect("entry back");
    for name in &moved {
        fs::rename(aside.join(name), repo_dir.join(name)).expect("back");
    }
    write_step(&src, &mut model, 2);
    push(&pusher, &src, &url);
    let run = wait_published(&d, "serve", 2);
    assert_eq!(uint(&run["pull"], "seq"), 2, "{run}");
    data::assert_same_tree(&src, &current(&dest));
    assert_eq!(uint(&d.job("serve")["pull"], "lag_snapshots"), 0);
}
