//! The service commands through the binary: `check-config` errors name the key, `sync`
//! exit codes, every API endpoint with the token rules on a real daemon, `ferry status` from
//! the daemon and from the index, and the refusal to listen off loopback without a token.

use std::fs;

use crate::daemon::{write_config, Daemon};
use crate::data::{self, MIB};
use crate::harness::{array, s, string, uint, Backend, Ctx};
use crate::http;

const TOKEN: &str = "it-token-7f3a9c1e5b2d4680";
/// Stands in for a cloud credential in the daemon's environment: it must never be served.
const SECRET: &str = "AccountKeyThatMustNeverLeak0000";

fn job(src: &str, repo: &str) -> String {
    format!("[[jobs]]\nname = \"data\"\nsource = \"{src}\"\ntargets = [\"{repo}\"]\nevery = \"1h\"\nsettle = \"0s\"\n")
}

#[test]
fn check_config_errors_name_the_key() {
    let Some(ctx) = Ctx::new(&[]) else { return };
    let ferry = ctx.ferry();
    let ok = ferry.json(&["check-config"]);
    assert_eq!(
        string(&ok, "config"),
        "<embedded config/local.toml>",
        "{ok}"
    );
    assert_eq!(array(&ok, "jobs").len(), 2);
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/config/aws-azure.toml");
    let run = ferry
        .spawn_env(
            &["check-config", "--config", shipped],
            &[("FERRY_API_TOKEN", TOKEN)],
        )
        .wait();
    let report = run.json();
    assert_eq!(report["token"], true);
    assert!(
        !run.stdout.contains(TOKEN),
        "check-config printed the token: {run}"
    );
    let run = ferry.run(&["check-config", "--config", shipped]);
    assert!(
        run.error_line()
            .contains("server.token_env: environment variable FERRY_API_TOKEN is not set"),
        "{run}"
    );

    for (body, needle) in [
        ("[[jobs]]\nname = \"a\"\nsource = \"/x\"\ntargets = [\"/y\"]\nevry = \"5m\"\n", ":7:1: jobs[0].evry: unknown field `evry`"),
        ("[server]\nbind = 7878\n", ":4:8: server.bind: invalid type"),
        ("[[jobs]]\nname = \"a\"\nsource = \"/x\"\ntargets = [\"aws\"]\ncron = \"every day\"\n", "jobs[0].targets[0]: no store named \"aws\""),
        ("[[jobs]]\nname = \"a\"\nsource = \"/x\"\ntargets = [\"/y\"]\ncron = \"every day\"\n", "jobs[0].cron: \"every day\" is not a cron schedule"),
        ("[runner]\nretry_initial = \"soon\"\n[[jobs]]\nname = \"a\"\nsource = \"/x\"\ntargets = [\"/y\"]\nwatch = true\n", "runner.retry_initial: \"soon\" is not a duration"),
    ] {
        let path = ctx.path("bad").with_extension("toml");
        fs::write(&path, format!("version = 1\n\n{body}")).unwrap();
        let run = ferry.run(&["check-config", "--config", s(&path)]);
        let line = run.error_line();
        assert!(line.contains(needle) && line.contains(s(&path)), "expected {needle:?}: {run}");
    }
    let missing = ctx.path("missing.toml");
    let run = ferry.run(&["check-config", "--config", s(&missing)]);
    assert!(
        run.error_line().contains("cannot read config file"),
        "{run}"
    );
}

#[test]
fn sync_exit_codes() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo = ctx.location(Backend::File);
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(1, MIB));
    let config = write_config(&ctx, "", &job(s(&src), &repo.url));
    let ferry = ctx.ferry();
    let ok = ferry.json(&["sync", "--config", s(&config)]);
    assert_eq!(ok["ok"], true, "{ok}");
    assert_eq!(string(&array(&ok, "runs")[0], "state"), "succeeded");
    // Each sync is a new process: it looks again, finds the tree unchanged and sends nothing.
    let again = ferry.json(&["sync", "--config", s(&config), "--job", "data"]);
    let run = &array(&again, "runs")[0];
    assert_eq!(run["unchanged"], true, "{again}");
    assert_eq!(uint(run, "bytes_sent"), 0, "{again}");
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
    assert!(
        text.status.success() && text.stdout.contains("sync ok"),
        "{text}"
    );
    let run = ferry.run(&["sync", "--config", s(&config), "--job", "nope"]);
    assert!(
        run.error_line().contains("no job named \"nope\"") && run.error_line().contains("data"),
        "{run}"
    );

    let bad = write_config(
        &ctx,
        "",
        &job(s(&src), &format!("file://{}/not-a-dir/repo", s(&src))),
    );
    data::write_file(&src, "not-a-dir", b"a file");
    let run = ferry.run(&["sync", "--config", s(&bad)]);
    assert_eq!(run.status.code(), Some(1), "{run}");
    let report = run.stdout_json();
    let failed = &array(&report, "runs")[0];
    assert_eq!(string(failed, "state"), "failed", "{report}");
    assert_eq!(string(failed, "error_kind"), "permanent", "{report}");
    assert_eq!(
        uint(failed, "attempts"),
        1,
        "permanent errors are not retried: {report}"
    );
}

/// Neither the token nor the cloud secret appears in `body`.
fn assert_no_secret(body: &str, what: &str) {
    assert!(
        !body.contains(TOKEN) && !body.contains(SECRET),
        "{what} leaked a secret: {body}"
    );
}

/// Every read endpoint answers without a token, and serves no secret.
fn assert_reads_need_no_token(d: &Daemon) {
    for path in [
        "/",
        "/healthz",
        "/readyz",
        "/metrics",
        "/api/v1/jobs",
        "/api/v1/jobs/data",
        "/api/v1/runs",
        "/api/v1/series",
        "/api/v1/openapi.yaml",
    ] {
        let r = http::get(&d.addr, path);
        assert_eq!(r.status, 200, "GET {path}: {}", r.body);
        assert_no_secret(&r.body, path);
    }
    assert_eq!(http::get(&d.addr, "/api/v1/jobs/nope").status, 404);
    assert_eq!(http::get(&d.addr, "/api/v1/runs?state=bogus").status, 400);
}

/// Triggering a run needs the right bearer token; with it, the run is queued.
fn assert_run_needs_the_token(d: &Daemon) {
    let r = http::post(&d.addr, "/api/v1/jobs/data/run", &[], None);
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let r = http::post(
        &d.addr,
        "/api/v1/jobs/data/run",
        &[("Authorization", "Bearer wrong-token-000000")],
        None,
    );
    assert_eq!(r.status, 401);
    let auth = format!("Bearer {TOKEN}");
    let r = http::post(
        &d.addr,
        "/api/v1/jobs/data/run",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 202, "{}", r.body);
    assert_eq!(string(&r.json(), "action"), "queued");
    let r = http::post(
        &d.addr,
        "/api/v1/jobs/nope/run",
        &[("Authorization", &auth)],
        None,
    );
    assert_eq!(r.status, 404);
}

#[test]
fn api_endpoints_tokens_and_status() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let repo = ctx.location(Backend::File);
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(2, MIB));
    // The config's own address is a port nothing listens on (the daemon below binds port 0),
    // so the offline `ferry status` at the end cannot reach some other test's daemon.
    let idle = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port");
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[server]\nbind = \"{idle}\"\ntoken_env = \"FERRY_API_TOKEN\"\n\n{}",
            job(s(&src), &repo.url)
        ),
    );
    let ferry = ctx.ferry();
    let envs = [
        ("FERRY_API_TOKEN", TOKEN),
        ("AZURE_STORAGE_ACCOUNT_KEY", SECRET),
    ];
    let d = Daemon::start(&ferry, &config, &[], &envs);

    assert_reads_need_no_token(&d);
    assert_run_needs_the_token(&d);
    d.wait_for(
        "the triggered run succeeded",
        std::time::Duration::from_secs(60),
        |d| (!d.runs("job=data&state=succeeded").is_empty()).then_some(()),
    );
    let metrics = http::get(&d.addr, "/metrics").body;
    assert!(
        metrics.contains("ferry_runs_total{job=\"data\""),
        "{metrics}"
    );
    assert!(
        metrics.contains("ferry_sent_bytes_total{job=\"data\""),
        "{metrics}"
    );

    // `ferry status` asks the daemon at its address...
    let url = format!("http://{}", d.addr);
    let live = ferry
        .spawn_env(&["status", "--config", s(&config), "--url", &url], &envs)
        .wait()
        .json();
    assert_eq!(string(&live, "from"), "daemon", "{live}");
    let target = &array(&array(&live, "jobs")[0], "targets")[0];
    assert_eq!(uint(target, "runs_succeeded"), 1, "{live}");
    assert_no_secret(&live.to_string(), "status");
    let (stopped, _) = d.stop();
    assert!(stopped.status.success(), "{stopped}");
    assert_no_secret(&stopped.stderr, "the daemon's log");
    // ...and, with no daemon answering, reads the local index.
    let offline = ferry
        .spawn_env(&["status", "--config", s(&config)], &envs)
        .wait()
        .json();
    assert_eq!(string(&offline, "from"), "index", "{offline}");
    let target = &array(&array(&offline, "jobs")[0], "targets")[0];
    assert_eq!(uint(target, "runs_succeeded"), 1, "{offline}");
    assert!(target["last_success_ms"].is_i64(), "{offline}");
}

#[test]
fn refuses_to_listen_off_loopback_without_a_token() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let src = ctx.dir("src");
    let config = write_config(&ctx, "", &job(s(&src), &ctx.location(Backend::File).url));
    let run = ctx
        .ferry()
        .run(&["daemon", "--config", s(&config), "--bind", "0.0.0.0:0"]);
    let line = run.error_line();
    assert!(
        line.contains("--bind 0.0.0.0:0") && line.contains("token"),
        "{run}"
    );
}
