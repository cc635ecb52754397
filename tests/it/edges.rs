//! What a hostile user pass found (issue 16): a server that accepts and never answers, an
//! index another process holds, secrets in a URL's query, no AWS credentials at all, and the
//! CLI's rough edges (`--json` errors, a closed pipe, `ls` of hostile names, a repository
//! inside its own source, deleting a ref, one damaged ref among good ones).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use crate::daemon::{write_config, Daemon};
use crate::data::{self, KIB};
use crate::harness::{array, pushed_snapshot, s, string, Backend, Ctx};
use crate::run::Ferry;

per_backend!(
    a_query_or_fragment_in_a_store_url_is_refused_unechoed,
    forget_can_delete_a_ref,
    one_malformed_ref_does_not_hide_the_others,
);

/// A TCP server on 127.0.0.1 that accepts connections, reads what it is sent and never
/// answers. Counts connections (a retry is a new one, or a new request on the same one).
struct Blackhole {
    url: String,
    connections: Arc<AtomicU64>,
}

impl Blackhole {
    fn start() -> Blackhole {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind blackhole");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let connections = Arc::new(AtomicU64::new(0));
        let count = connections.clone();
        thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                count.fetch_add(1, Ordering::Relaxed);
                // Keep reading (so the client's writes succeed) and never write.
                thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    while matches!(conn.read(&mut buf), Ok(n) if n > 0) {}
                });
            }
        });
        Blackhole { url, connections }
    }
}

/// Item 10: against a server that accepts and never answers, the command says what it is
/// waiting for (object and endpoint) while it waits, retries the stalled request, and then
/// fails with a hint naming the timeout variables, all bounded by the configured timeouts.
fn stalled_server_is_reported_retried_and_bounded(backend: Backend) {
    let Some(ctx) = Ctx::new(&[]) else { return };
    let hole = Blackhole::start();
    let (repo, mut env) = match backend {
        Backend::S3 => (
            "s3://ferry-test/stalled",
            vec![
                ("AWS_ENDPOINT", hole.url.as_str()),
                ("AWS_READ_TIMEOUT", "2s"),
            ],
        ),
        _ => (
            "az://ferry-test/stalled",
            vec![
                ("AZURITE_BLOB_STORAGE_URL", hole.url.as_str()),
                ("AZURE_READ_TIMEOUT", "2s"),
            ],
        ),
    };
    env.extend([
        ("FERRY_SLOW_SECS", "1"),
        ("FERRY_RETRY_MAX", "2"),
        ("FERRY_RETRY_TIMEOUT_SECS", "30"),
    ]);
    let started = Instant::now();
    let run = ctx.ferry().run_env(&["snapshots", repo], &env);
    let took = started.elapsed();
    assert!(!run.status.success(), "{run}");
    // Bounded by the timeouts given, not by the 300 s default (generous: a loaded machine).
    assert!(took < Duration::from_secs(50), "took {took:?}: {run}");
    let err = run.stderr.trim();
    assert!(
        err.contains("still waiting for the store") && err.contains(&hole.url),
        "no word about the stalled endpoint while waiting: {run}"
    );
    assert!(
        err.contains(&format!("{repo}/config")),
        "the message names no object: {run}"
    );
    let last = err.lines().last().unwrap_or_default();
    let var = if backend == Backend::S3 {
        "AWS_READ_TIMEOUT"
    } else {
        "AZURE_READ_TIMEOUT"
    };
    assert!(
        last.starts_with("error:") && last.contains("did not answer in time") && last.contains(var),
        "the error names no timeout to raise: {run}"
    );
    // The stalled request was tried again (each attempt is a new connection: the stalled
    // one is dropped on timeout).
    assert!(
        hole.connections.load(Ordering::Relaxed) >= 2,
        "not retried: {} connection(s): {run}",
        hole.connections.load(Ordering::Relaxed)
    );
    // With --json, the failure is an object on stdout too.
    assert_eq!(run.stdout_json()["ok"], false, "{run}");
}

#[test]
fn stalled_server_is_reported_retried_and_bounded_s3() {
    stalled_server_is_reported_retried_and_bounded(Backend::S3);
}

#[test]
fn stalled_server_is_reported_retried_and_bounded_azure() {
    stalled_server_is_reported_retried_and_bounded(Backend::Azure);
}

/// Item 14: S3 without any credentials names the variables to set instead of the metadata
/// service's 403 (the metadata endpoint is a local server answering 403, as off EC2).
#[test]
fn s3_without_credentials_says_what_to_set() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let metadata = format!("http://{}", listener.local_addr().expect("address"));
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut buf = [0u8; 4096];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(
                b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            );
        }
    });
    let loc = ctx.location(Backend::S3);
    // A repository to restore from: a local one, pushed with the usual environment.
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", b"a");
    let repo = format!("file://{}", s(&ctx.dir("repo")));
    ctx.ferry().json(&["push", s(&src), &repo, "--name", "x"]);
    // Reading a repository (the store's own errors) and writing restored objects (errors
    // that pass through the restore) both say what to set.
    let dest = format!("{}/restored", loc.url);
    for args in [
        vec!["snapshots", loc.url.as_str()],
        vec!["restore", &repo, "x", &dest],
    ] {
        let mut cmd = ctx.ferry().command(&args);
        cmd.env_remove("AWS_ACCESS_KEY_ID")
            .env_remove("AWS_SECRET_ACCESS_KEY")
            .env("AWS_METADATA_ENDPOINT", &metadata)
            .env("AWS_PROFILE", "dev");
        let out = cmd.output().expect("run ferry");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?}: {err}");
        let last = err.trim().lines().last().unwrap_or_default();
        for needle in [
            "no AWS credentials found",
            "AWS_ACCESS_KEY_ID",
            "AWS_SECRET_ACCESS_KEY",
            "AWS_PROFILE",
        ] {
            assert!(
                last.contains(needle),
                "{args:?}: {needle} missing from: {err}"
            );
        }
        assert_eq!(
            last.matches("no AWS credentials found").count(),
            1,
            "said twice: {last}"
        );
    }
}

/// Item 12: `?…` and `#…` are refused before anything is opened, and the secret after them
/// appears nowhere in the output.
fn a_query_or_fragment_in_a_store_url_is_refused_unechoed(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(1, 4 * KIB));
    let loc = ctx.location(backend);
    for tail in ["?sv=2024-01-01&sig=SECRETSIG", "#SECRETSIG"] {
        let url = format!("{}{tail}", loc.url);
        for args in [
            vec!["push", s(&src), &url, "--name", "x"],
            vec!["snapshots", &url],
            vec!["mirror", s(&src), &url],
        ] {
            let run = ctx.ferry().run(&args);
            let line = run.error_line();
            assert!(line.contains("no query string or fragment"), "{run}");
            assert!(
                !run.stdout.contains("SECRETSIG") && !run.stderr.contains("SECRETSIG"),
                "{run}"
            );
        }
    }
    // Nothing was written anywhere, not even under the URL without its query.
    assert!(loc.raw.list("").is_empty(), "something was written");
}

/// Item 12, config files: a target URL with a SAS in its query is refused at its key, and
/// the secret is not echoed.
#[test]
fn a_query_in_a_config_url_is_refused_unechoed() {
    let Some(ctx) = Ctx::new(&[]) else { return };
    let src = ctx.dir("src");
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"a\"\nsource = \"{}\"\ntargets = [\"az://ckpt/p?sv=1&sig=SECRETSIG\"]\nevery = \"1h\"\n",
            s(&src)
        ),
    );
    let run = ctx.ferry().run(&["check-config", "--config", s(&config)]);
    let line = run.error_line();
    assert!(
        line.contains("jobs[0].targets[0]") && line.contains("no query string"),
        "{run}"
    );
    assert!(
        !run.stdout.contains("SECRETSIG") && !run.stderr.contains("SECRETSIG"),
        "{run}"
    );
}

/// Item 11: while a daemon holds the local index, a writing command says at once which
/// process holds it and what to do; a restore (which only reads) goes on with a temporary
/// index and says so.
#[test]
fn a_held_index_names_its_holder_and_readers_go_on() {
    let Some(ctx) = Ctx::new(&[]) else { return };
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(2, 64 * KIB));
    let repo = ctx.dir("repo");
    let repo_url = format!("file://{}", s(&repo));
    let push = ctx
        .ferry()
        .json(&["push", s(&src), &repo_url, "--name", "ckpt"]);
    let snapshot = pushed_snapshot(&push);
    let idle = ctx.dir("idle");
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"idle\"\nsource = \"{}\"\ntargets = [\"{}\"]\nevery = \"24h\"\n",
            s(&idle),
            s(&ctx.dir("idle-repo"))
        ),
    );
    let daemon = Daemon::start(&ctx.ferry(), &config, &[], &[]);

    let started = Instant::now();
    let run = ctx
        .ferry()
        .run(&["push", s(&src), &repo_url, "--name", "other"]);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "waited for a daemon that keeps the index: {run}"
    );
    let line = run.error_line();
    assert!(
        line.contains("in use by process") && line.contains(" daemon --config"),
        "{run}"
    );
    assert!(line.contains("--index-dir"), "{run}");
    assert!(
        !line.contains("WouldBlock") && !line.contains("Os {"),
        "{run}"
    );

    let dest = ctx.path("restore");
    let run = ctx.ferry().run(&["restore", &repo_url, "ckpt", s(&dest)]);
    let v = run.json();
    assert_eq!(string(&v, "snapshot"), snapshot);
    assert!(run.stderr.contains("temporary index"), "{run}");
    assert_eq!(
        fs::read(dest.join("a.bin")).expect("restored"),
        data::random_bytes(2, 64 * KIB)
    );
    drop(daemon);
}

/// Item 17: `--json` errors are a JSON object on stdout (and one line on stderr).
#[test]
fn json_errors_are_json_objects() {
    let Some(ctx) = Ctx::new(&[]) else { return };
    let missing = ctx.path("missing");
    let run = ctx.ferry().run(&["snapshots", s(&missing)]);
    let line = run.error_line().to_string();
    let v = run.stdout_json();
    assert_eq!(v["ok"], false, "{run}");
    assert_eq!(format!("error: {}", string(&v, "error")), line, "{run}");
}

/// Item 17: a reader that closes the pipe early (`| head -1`) does not make ferry panic.
#[test]
fn a_closed_stdout_is_no_panic() {
    let Some(ctx) = Ctx::new(&[]) else { return };
    let src = ctx.dir("src");
    for i in 0..50 {
        data::write_file(&src, &format!("f{i:03}.bin"), &data::random_bytes(i, KIB));
    }
    let repo = format!("file://{}", s(&ctx.dir("repo")));
    for args in [
        vec!["push", s(&src), &repo, "--name", "ckpt"],
        vec!["ls", &repo, "ckpt"],
    ] {
        let mut cmd = Ferry::bare_command(&[]);
        cmd.arg("--index-dir").arg(ctx.index_dir()).args(&args);
        cmd.stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = cmd.spawn().expect("spawn ferry");
        // Close the read end before ferry writes its report.
        drop(child.stdout.take());
        let out = child.wait_with_output().expect("wait");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!err.contains("panicked"), "{args:?}: {err}");
        assert!(out.status.success(), "{args:?}: {:?} {err}", out.status);
    }
}

/// Item 17: `ls` shows modes and symlink targets, and escapes control characters.
#[test]
fn ls_shows_modes_targets_and_escapes_names() {
    use std::os::unix::fs::PermissionsExt;
    let Some(ctx) = Ctx::new(&[]) else { return };
    let src = ctx.dir("src");
    data::write_file(&src, "run.sh", b"#!/bin/sh\n");
    fs::set_permissions(src.join("run.sh"), fs::Permissions::from_mode(0o750)).unwrap();
    data::write_file(&src, "evil\nname\u{1b}[2J", b"x");
    std::os::unix::fs::symlink("run.sh", src.join("latest")).unwrap();
    let repo = format!("file://{}", s(&ctx.dir("repo")));
    ctx.ferry()
        .json(&["push", s(&src), &repo, "--name", "ckpt"]);
    let run = ctx.ferry().run_bare(
        &["--index-dir", s(ctx.index_dir()), "ls", &repo, "ckpt"],
        &[],
    );
    assert!(run.status.success(), "{run}");
    let out = &run.stdout;
    assert!(!out.contains('\u{1b}'), "{run}");
    assert!(out.contains("evil\\nname\\u{1b}[2J"), "{run}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("lrwxrwxrwx") && l.ends_with("latest -> run.sh")),
        "{run}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("-rwxr-x---") && l.ends_with("run.sh")),
        "{run}"
    );
    assert_eq!(out.trim().lines().count(), 3, "{run}");
}

/// Item 17: push refuses a repository inside its own source, as mirror does.
#[test]
fn push_refuses_a_repository_inside_its_source() {
    let Some(ctx) = Ctx::new(&[]) else { return };
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", b"a");
    for repo in [src.join("repo"), src.clone()] {
        let run = ctx.ferry().run(&["push", s(&src), s(&repo), "--name", "x"]);
        assert!(
            run.error_line().contains("one is inside the other"),
            "{run}"
        );
    }
    assert!(!src.join("repo").exists(), "the repository was created");
}

/// Item 17: `forget --delete-ref` deletes a ref; the others stay.
fn forget_can_delete_a_ref(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(3, 8 * KIB));
    let loc = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["push", s(&src), &loc.url, "--name", "gone"]);
    data::write_file(&src, "b.bin", b"b");
    ferry.json(&["push", s(&src), &loc.url, "--name", "gone"]);
    ferry.json(&["push", s(&src), &loc.url, "--name", "kept"]);
    let v = ferry.json(&["forget", &loc.url, "gone", "--delete-ref"]);
    assert_eq!(array(&v, "kept").len(), 0, "{v}");
    assert_eq!(array(&v, "forgotten").len(), 2, "{v}");
    let snaps = ferry.json(&["snapshots", &loc.url]);
    let names: Vec<&str> = array(&snaps, "snapshots")
        .iter()
        .map(|r| string(r, "name"))
        .collect();
    assert_eq!(names, ["kept"], "{snaps}");
    // The ref can be pushed again from scratch.
    ferry.json(&["push", s(&src), &loc.url, "--name", "gone"]);
}

/// Item 17: one ref with a malformed entry is reported; the other refs are still listed.
fn one_malformed_ref_does_not_hide_the_others(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(4, 8 * KIB));
    let loc = ctx.location(backend);
    let ferry = ctx.ferry();
    ferry.json(&["push", s(&src), &loc.url, "--name", "good"]);
    loc.raw.put(&format!("refs/bad/{:020}", 1), b"{ not json");
    let run = ferry.run(&["snapshots", &loc.url]);
    // The command fails with one line naming the damaged ref.
    assert!(run.error_line().contains("ref \"bad\""), "{run}");
    let v = run.stdout_json();
    let names: Vec<&str> = array(&v, "snapshots")
        .iter()
        .map(|r| string(r, "name"))
        .collect();
    assert_eq!(names, ["good"], "{run}");
    let problems = array(&v, "problems");
    assert_eq!(problems.len(), 1, "{run}");
    assert_eq!(string(&problems[0], "name"), "bad");
}

/// Item 10, native clients: the S3 (aws-sdk-s3) and Azure (reqwest) clients of `ferry mirror`
/// take the same read timeout as the data plane, so a stalled server fails the call (after
/// retrying it) instead of hanging for the whole-request timeout.
#[test]
fn native_clients_time_out_on_a_stalled_server() {
    use ferry::store::azure::AzureDelta;
    use ferry::store::delta::DeltaStore;
    use ferry::store::s3::S3Delta;
    use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
    use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
    use object_store::ClientConfigKey;

    let hole = Blackhole::start();
    let retry = ferry::store::RetryPolicy::retries(1);
    let s3 = S3Delta::from_builder(
        AmazonS3Builder::new()
            .with_bucket_name("ferry-test")
            .with_endpoint(&hole.url)
            .with_allow_http(true)
            .with_region("us-east-1")
            .with_access_key_id("test")
            .with_secret_access_key("test")
            .with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::ReadTimeout),
                "1s",
            ),
        "stalled",
        &retry,
    )
    .expect("native S3 store");
    let azure = AzureDelta::from_builder(
        MicrosoftAzureBuilder::new()
            .with_account("devstoreaccount1")
            .with_access_key("a2V5")
            .with_container_name("ferry-test")
            .with_endpoint(format!("{}/devstoreaccount1", hole.url))
            .with_allow_http(true)
            .with_config(AzureConfigKey::Client(ClientConfigKey::ReadTimeout), "1s"),
        "stalled",
        &retry,
    )
    .expect("native Azure store");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    for (name, store) in [
        ("s3", &s3 as &dyn DeltaStore),
        ("azure", &azure as &dyn DeltaStore),
    ] {
        let before = hole.connections.load(Ordering::Relaxed);
        let probed = rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(40), store.probe("x.bin")).await
        });
        let result = probed.unwrap_or_else(|_| panic!("{name}: still waiting after 40 s"));
        let err = result.expect_err("a stalled server answers nothing");
        assert!(
            hole.connections.load(Ordering::Relaxed) - before >= 2,
            "{name}: the stalled call was not retried: {err}"
        );
    }
}
