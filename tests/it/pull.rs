//! `ferry pull`: versions published by swapping `DIR/current`, only the chunks new in a
//! version read from the store (bytes counted by a proxy in front of S3 and Azure), damaged
//! local copies fetched again, killed pulls resumed, `--include` / `--exclude`.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use serde_json::Value;

use crate::data;
use crate::deltas::{weights, write_step};
use crate::harness::{array, boolean, only_target, s, server_url, string, uint, Backend, Ctx};
use crate::proxy::Proxy;
use crate::run::Ferry;

per_backend!(
    pull_reads_only_what_is_new,
    damaged_local_copy_is_fetched_again,
    delta_step_reads_about_the_deltas,
    damaged_local_base_is_fetched_from_the_store,
);

const MIB: usize = 1 << 20;

/// The server a backend's objects live on, and the variable that points ferry at it.
fn upstream(backend: Backend) -> Option<(&'static str, String)> {
    match backend {
        Backend::File => None,
        Backend::S3 => Some(("AWS_ENDPOINT", server_url("FERRY_TEST_S3_ENDPOINT")?)),
        Backend::Azure => Some((
            "AZURITE_BLOB_STORAGE_URL",
            server_url("FERRY_TEST_AZURITE_URL")?,
        )),
        Backend::Gcs => Some(("GOOGLE_BASE_URL", server_url("FERRY_TEST_GCS_URL")?)),
    }
}

/// `ferry pull REPO SPEC DIR ARGS...`, through `proxy` when given.
fn pull(
    ferry: &Ferry,
    repo: &str,
    spec: &str,
    dir: &Path,
    extra: &[&str],
    proxy: Option<(&str, &Proxy)>,
) -> Value {
    let mut args = vec!["pull", repo, spec, s(dir)];
    args.extend_from_slice(extra);
    match proxy {
        Some((var, p)) => ferry.run_env(&args, &[(var, &p.url)]).json(),
        None => ferry.json(&args),
    }
}

/// The folder `DIR/current` points at.
fn current(dir: &Path) -> PathBuf {
    let target = fs::read_link(dir.join("current")).expect("current is a symlink");
    assert!(target.is_relative(), "current -> {}", target.display());
    dir.join(target)
}

fn versions(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join("versions"))
        .expect("versions")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// Step N+1 changes one region of one file and adds a small one: the pull reads about the
/// new chunks (not the whole checkpoint), reuses the rest from step N, and publishes a
/// version identical to the source. Pulling again reads nothing; `--keep 2` prunes.
pub fn pull_reads_only_what_is_new(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    let src = ctx.dir("src");
    let mut model = data::random_bytes(301, 6 * MIB);
    data::write_file(&src, "model.bin", &model);
    data::write_file(&src, "extra/optim.bin", &data::random_bytes(302, 2 * MIB));
    data::write_file(&src, "config.json", b"{\"step\": 1}");
    ferry.json(&["push", s(&src), &repo.url, "--name", "model"]);
    let dir = ctx.dir("serve");
    let first = pull(&ferry, &repo.url, "model", &dir, &[], None);
    assert!(boolean(&first, "published"), "{first}");
    assert_eq!(uint(&first, "bytes_reused"), 0, "{first}");
    data::assert_same_tree(&src, &current(&dir));

    // Step 2: 256 KiB in the middle of the model move; a small file appears.
    model[3 * MIB..3 * MIB + 256 * 1024].copy_from_slice(&data::random_bytes(303, 256 * 1024));
    data::write_file(&src, "model.bin", &model);
    data::write_file(&src, "config.json", b"{\"step\": 2}");
    let push = ferry.json(&["push", s(&src), &repo.url, "--name", "model"]);
    let uploaded = uint(only_target(&push), "bytes_uploaded");
    let proxy = upstream(backend).map(|(var, url)| (var, Proxy::start(&url, None)));
    let via = proxy.as_ref().map(|(v, p)| (*v, p));
    let second = pull(&ferry, &repo.url, "model", &dir, &[], via);
    assert!(boolean(&second, "published"), "{second}");
    data::assert_same_tree(&src, &current(&dir));
    let total = (8 * MIB) as u64;
    let from_store = uint(&second, "bytes_read_from_store");
    assert!(
        from_store > 0 && from_store <= uploaded,
        "read {from_store} of the store, the push uploaded {uploaded}: {second}"
    );
    // optim.bin whole and all of model.bin but the chunks around the change (chunks
    // average ~1 MiB).
    assert!(
        uint(&second, "bytes_reused") >= total - 3 * MIB as u64,
        "{second}"
    );
    if let Some((_, p)) = &proxy {
        // Requests and answers: the new frames plus the ref log, the snapshot and HTTP
        // headers; far less than the checkpoint.
        let received = p.received();
        assert!(
            received < from_store + 256 * 1024,
            "the proxy saw {received} bytes come back: {second}"
        );
        assert!(received < total / 2, "{received}");
        p.reset();
    }

    // Nothing new: nothing published, no pack read.
    let again = pull(&ferry, &repo.url, "model", &dir, &[], via);
    assert!(!boolean(&again, "published"), "{again}");
    assert_eq!(uint(&again, "bytes_read_from_store"), 0, "{again}");
    if let Some((_, p)) = &proxy {
        assert!(
            p.received() < 64 * 1024,
            "a pull with nothing to do read {} bytes",
            p.received()
        );
    }

    // Step 3, --keep 2: step 1's version goes, steps 2 and 3 stay, current is step 3.
    data::write_file(&src, "config.json", b"{\"step\": 3}");
    ferry.json(&["push", s(&src), &repo.url, "--name", "model"]);
    let third = pull(&ferry, &repo.url, "model", &dir, &["--keep", "2"], None);
    let removed = array(&third, "removed");
    assert_eq!(removed.len(), 1, "{third}");
    assert!(
        removed[0].as_str().expect("name").starts_with("1-"),
        "{third}"
    );
    assert_eq!(
        versions(&dir)
            .iter()
            .filter(|v| !v.starts_with('.'))
            .count(),
        2
    );
    assert_eq!(current(&dir), PathBuf::from(string(&third, "version")));
    data::assert_same_tree(&src, &current(&dir));
    // An earlier step by number: published from local chunks only.
    let back = pull(&ferry, &repo.url, "model@2", &dir, &[], None);
    assert!(boolean(&back, "published"), "{back}");
    assert_eq!(uint(&back, "bytes_read_from_store"), 0, "{back}");
    assert_eq!(
        fs::read(current(&dir).join("config.json")).expect("config"),
        b"{\"step\": 2}"
    );
}

/// A byte flipped in a file of the live version is caught by its chunk's hash when the next
/// pull would copy it: that chunk is read from the store instead, and the new version is
/// still identical to the source.
pub fn damaged_local_copy_is_fetched_again(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(311, 3 * MIB));
    data::write_file(&src, "b.bin", &data::random_bytes(312, MIB));
    ferry.json(&["push", s(&src), &repo.url, "--name", "m"]);
    let dir = ctx.dir("serve");
    pull(&ferry, &repo.url, "m", &dir, &[], None);
    let live = current(&dir).join("a.bin");
    let mut bytes = fs::read(&live).expect("read");
    bytes[MIB + 17] ^= 0x40;
    fs::write(&live, &bytes).expect("damage");

    data::write_file(&src, "b.bin", &data::random_bytes(313, MIB));
    ferry.json(&["push", s(&src), &repo.url, "--name", "m"]);
    let next = pull(&ferry, &repo.url, "m", &dir, &[], None);
    data::assert_same_tree(&src, &current(&dir));
    // b.bin is new and at least one chunk of a.bin had to come from the store again.
    assert!(uint(&next, "bytes_read_from_store") > MIB as u64, "{next}");
    assert!(uint(&next, "chunks_reused") >= 1, "{next}");
}

/// A delta repository (`init --deltas 4`) with step 1 pulled, and step 2 pushed (its changed
/// tensor chunks stored as deltas against step 1's): the source folder, the pull folder, and
/// the bytes step 1's and step 2's pushes uploaded.
fn delta_steps_with_first_pulled(ctx: &Ctx, url: &str) -> (PathBuf, PathBuf, u64, u64) {
    let ferry = ctx.ferry();
    ferry.json(&["init", url, "--deltas", "4"]);
    let src = ctx.dir("src");
    write_step(&src, 1);
    let first = ferry.json(&["push", s(&src), url, "--name", "ckpt"]);
    let dir = ctx.dir("serve");
    pull(&ferry, url, "ckpt", &dir, &[], None);
    write_step(&src, 2);
    let second = ferry.json(&["push", s(&src), url, "--name", "ckpt"]);
    assert!(uint(&second, "chunks_delta") >= 3, "{second}");
    let full = uint(only_target(&first), "bytes_uploaded");
    let delta = uint(only_target(&second), "bytes_uploaded");
    assert!(delta * 2 < full, "step 2 should be mostly deltas: {second}");
    (src, dir, full, delta)
}

/// Pulling a delta step over its predecessor reads the step's delta frames from the store and
/// takes their bases from the previous version's file (each checked against its id): at most
/// what step 2's push uploaded (its deltas, pack index and snapshot), not the full frames
/// (whose bases step 1 uploaded). Byte-identical.
pub fn delta_step_reads_about_the_deltas(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    let (src, dir, full, delta) = delta_steps_with_first_pulled(&ctx, &repo.url);
    let proxy = upstream(backend).map(|(var, url)| (var, Proxy::start(&url, None)));
    let via = proxy.as_ref().map(|(v, p)| (*v, p));
    let got = pull(&ferry, &repo.url, "ckpt", &dir, &[], via);
    assert!(boolean(&got, "published"), "{got}");
    assert!(
        fs::read(current(&dir).join("model.safetensors")).expect("pulled") == weights(2),
        "the pulled step 2 differs from the source"
    );
    data::assert_same_tree(&src, &current(&dir));
    let from_store = uint(&got, "bytes_read_from_store");
    assert!(
        from_store > 0 && from_store <= delta,
        "read {from_store} of the store; step 2 uploaded {delta} (step 1: {full}): {got}"
    );
    assert!(uint(&got, "delta_bases_reused") > 0, "{got}");
    if let Some((_, p)) = &proxy {
        // The delta frames plus the ref log, the snapshot, the pack index and HTTP headers.
        let received = p.received();
        assert!(
            received < delta + 128 * 1024,
            "the proxy saw {received} bytes come back; step 2 uploaded {delta}: {got}"
        );
    }
}

/// A byte flipped in the previous version's file, inside a tensor chunk step 2 stores as a
/// delta: the local base fails its check, that base is read from the store instead, and the
/// pulled step is still byte-identical.
pub fn damaged_local_base_is_fetched_from_the_store(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let ferry = ctx.ferry();
    let (src, dir, full, delta) = delta_steps_with_first_pulled(&ctx, &repo.url);
    let live = current(&dir).join("model.safetensors");
    let mut bytes = fs::read(&live).expect("read");
    // Inside the F32 tensor, which every step changes.
    bytes[1_000_003] ^= 0x40;
    fs::write(&live, &bytes).expect("damage");
    let proxy = upstream(backend).map(|(var, url)| (var, Proxy::start(&url, None)));
    let via = proxy.as_ref().map(|(v, p)| (*v, p));
    let got = pull(&ferry, &repo.url, "ckpt", &dir, &[], via);
    assert!(
        fs::read(current(&dir).join("model.safetensors")).expect("pulled") == weights(2),
        "the pulled step 2 differs from the source"
    );
    data::assert_same_tree(&src, &current(&dir));
    // The damaged base's full frame came from the store on top of the deltas.
    let from_store = uint(&got, "bytes_read_from_store");
    assert!(
        from_store > delta && from_store < delta + full,
        "read {from_store} of the store; step 2 uploaded {delta}, step 1 {full}: {got}"
    );
    assert!(uint(&got, "delta_bases_reused") > 0, "{got}");
    if let Some((_, p)) = &proxy {
        assert!(p.received() > from_store, "{}", p.received());
    }
}

/// `--include` / `--exclude` take exactly the matching paths; a glob that matches nothing
/// fails the pull, naming it, and `current` stays as it was.
#[test]
fn include_and_exclude_select_paths() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo = ctx.location(Backend::File);
    let ferry = ctx.ferry();
    let src = ctx.dir("src");
    data::write_file(
        &src,
        "model-00001.safetensors",
        &data::random_bytes(321, 50_000),
    );
    data::write_file(
        &src,
        "sub/model-00002.safetensors",
        &data::random_bytes(322, 50_000),
    );
    data::write_file(&src, "config.json", b"{}");
    data::write_file(&src, "optimizer/state.pt", &data::random_bytes(323, 80_000));
    ferry.json(&["push", s(&src), &repo.url, "--name", "m"]);
    let dir = ctx.dir("serve");
    let got = pull(
        &ferry,
        &repo.url,
        "m",
        &dir,
        &[
            "--include",
            "*.safetensors",
            "--include",
            "config.json",
            "--exclude",
            "sub/*",
        ],
        None,
    );
    assert_eq!(uint(&got, "files"), 2, "{got}");
    let live = current(&dir);
    let files = data::file_contents(&live);
    let names: Vec<&str> = files.keys().map(String::as_str).collect();
    assert_eq!(names, ["config.json", "model-00001.safetensors"]);

    let bad = ferry.run(&["pull", &repo.url, "m", s(&dir), "--include", "*.safetensor"]);
    assert!(!bad.status.success());
    assert!(
        bad.error_line().contains("*.safetensor"),
        "{}",
        bad.error_line()
    );
    assert_eq!(current(&dir), live, "a failed pull moved current");

    // The same selection on restore.
    let out = ctx.dir("restored");
    ferry.json(&[
        "restore",
        &repo.url,
        "m",
        s(&out),
        "--exclude",
        "optimizer/*",
    ]);
    let restored = data::file_contents(&out);
    assert!(
        !restored.keys().any(|k| k.starts_with("optimizer/")),
        "{:?}",
        restored.keys()
    );
    assert_eq!(restored.len(), 3);
}

/// A reader that resolves `current` and reads a version's files never sees two versions at
/// once while pulls publish new ones: every version carries a manifest naming its step, and
/// every file of it must say the same step.
#[test]
fn readers_never_see_two_versions_at_once() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo = ctx.location(Backend::File);
    let ferry = ctx.ferry();
    let src = ctx.dir("src");
    let dir = ctx.dir("serve");
    let step = |n: u32| {
        for f in 0..4 {
            let mut body = format!("step {n}\n").into_bytes();
            body.extend_from_slice(&data::random_bytes(u64::from(n * 10 + f), 200_000));
            data::write_file(&src, &format!("shard-{f}.bin"), &body);
        }
        data::write_file(&src, "manifest.txt", format!("step {n}\n").as_bytes());
        ferry.json(&["push", s(&src), &repo.url, "--name", "m"]);
    };
    step(1);
    pull(&ferry, &repo.url, "m", &dir, &["--keep", "3"], None);
    let stop = Arc::new(AtomicBool::new(false));
    let reader = {
        let (stop, dir) = (stop.clone(), dir.clone());
        std::thread::spawn(move || {
            let mut checked = 0u32;
            while !stop.load(Ordering::Relaxed) {
                let Ok(version) = fs::canonicalize(dir.join("current")) else {
                    continue;
                };
                let Ok(manifest) = fs::read_to_string(version.join("manifest.txt")) else {
                    continue; // pruned while being read: not a mix
                };
                for f in 0..4 {
                    let Ok(body) = fs::read(version.join(format!("shard-{f}.bin"))) else {
                        continue;
                    };
                    assert!(
                        body.starts_with(manifest.as_bytes()),
                        "{}: shard-{f}.bin is not from {manifest:?}",
                        version.display()
                    );
                }
                checked += 1;
            }
            checked
        })
    };
    for n in 2..=6 {
        step(n);
        pull(&ferry, &repo.url, "m", &dir, &["--keep", "3"], None);
    }
    stop.store(true, Ordering::Relaxed);
    let checked = reader.join().expect("reader");
    assert!(checked > 0, "the reader never read a version");
    data::assert_same_tree(&src, &current(&dir));
}

/// Pulls killed at several moments leave `current` on a complete version (the previous
/// one); the rerun finishes, and the result is identical.
#[test]
fn killed_pulls_leave_current_complete_and_resume() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo = ctx.location(Backend::File);
    let ferry = ctx.ferry();
    let src = ctx.dir("src");
    let v1 = ctx.dir("v1");
    data::random_tree(&v1, 331, 6, 2 * MIB);
    data::random_tree(&src, 332, 24, 2 * MIB);
    ferry.json(&["push", s(&v1), &repo.url, "--name", "m"]);
    ferry.json(&["push", s(&src), &repo.url, "--name", "m"]);
    let dir = ctx.dir("serve");
    pull(&ferry, &repo.url, "m@1", &dir, &[], None);
    let mut killed_mid_way = false;
    for delay_ms in [5u64, 30, 80, 150, 300] {
        let running = ferry.spawn(&["pull", &repo.url, "m", s(&dir)]);
        std::thread::sleep(std::time::Duration::from_millis(delay_ms));
        let killed = running.kill();
        let live = current(&dir);
        let name = live
            .file_name()
            .expect("name")
            .to_string_lossy()
            .into_owned();
        if name.starts_with("1-") {
            data::assert_same_tree(&v1, &live);
            killed_mid_way |= !killed.status.success();
        } else {
            data::assert_same_tree(&src, &live);
        }
    }
    assert!(
        killed_mid_way,
        "no kill landed before the publish: the test proved nothing"
    );
    let last = pull(&ferry, &repo.url, "m", &dir, &[], None);
    data::assert_same_tree(&src, &current(&dir));
    assert_eq!(string(&last, "name"), "m");
    assert!(
        !versions(&dir).iter().any(|v| v.starts_with(".partial-")),
        "{:?}",
        versions(&dir)
    );
}
