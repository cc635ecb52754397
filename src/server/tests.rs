//! Every endpoint through `tower::ServiceExt::oneshot`, including the token rules and the
//! promise that no secret appears in a response.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use tower::ServiceExt;

use super::*;
use crate::config::{Config, Env};
use crate::daemon::{Clock, Mode};

const TOKEN: &str = "s3cr3t-token-0123456789";

struct App {
    _dir: tempfile::TempDir,
    daemon: Daemon,
    router: Router,
}

async fn app(with_token: bool) -> App {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("src")).unwrap();
    std::fs::write(dir.path().join("src/a.txt"), b"hello").unwrap();
    let token = if with_token {
        "token_env = \"FERRY_TEST_TOKEN\"\n"
    } else {
        ""
    };
    let text = format!(
        "version = 1\n[server]\nbind = \"127.0.0.1:0\"\n{token}[[jobs]]\nname = \"data\"\nsource = \"$DIR/src\"\ntargets = [\"$DIR/repo\"]\nevery = \"1h\"\nsettle = \"0s\"\n"
    )
    .replace("$DIR", dir.path().to_str().unwrap());
    let env = Env {
        cwd: dir.path().into(),
        vars: HashMap::from([("FERRY_TEST_TOKEN".to_string(), TOKEN.to_string())]),
    };
    let config = Config::from_toml(&text, "test.toml", &env).unwrap();
    let daemon = Daemon::open(
        config,
        &dir.path().join("index"),
        Clock::real(),
        Mode::Daemon,
    )
    .await
    .unwrap();
    App {
        router: router(daemon.clone()),
        daemon,
        _dir: dir,
    }
}

async fn call(
    app: &App,
    method: &str,
    uri: &str,
    auth: Option<&str>,
) -> (StatusCode, String, axum::http::HeaderMap) {
    let headers: Vec<(&str, &str)> = auth.map(|a| ("authorization", a)).into_iter().collect();
    call_with(app, method, uri, &headers).await
}

async fn call_with(
    app: &App,
    method: &str,
    uri: &str,
    headers: &[(&str, &str)],
) -> (StatusCode, String, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = app
        .router
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = axum::body::to_bytes(res.into_body(), 1 << 24)
        .await
        .unwrap();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(!body.contains(TOKEN), "{uri} leaked the token: {body}");
    (status, body, headers)
}

fn json(body: &str) -> serde_json::Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn dashboard_health_and_readiness() {
    let app = app(false).await;
    let (s, body, h) = call(&app, "GET", "/", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(h["content-security-policy"]
        .to_str()
        .unwrap()
        .contains("default-src 'none'"));
    assert!(body.contains("id=\"runs\"") && body.contains("/api/v1/jobs"));
    assert!(
        !body.contains("<script src") && !body.contains("<link"),
        "the dashboard loads nothing from elsewhere"
    );
    assert_eq!(call(&app, "GET", "/healthz", None).await.0, StatusCode::OK);
    assert_eq!(
        call(&app, "GET", "/readyz", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
    app.daemon.start();
    assert_eq!(call(&app, "GET", "/readyz", None).await.0, StatusCode::OK);
    let (s, body, _) = call(&app, "GET", "/api/v1/openapi.yaml", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("/api/v1/jobs/{name}/run"));
    let (s, body, _) = call(&app, "GET", "/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"].as_str().unwrap().contains("openapi"));
    assert!(app.daemon.shutdown(Duration::from_secs(5)).await);
    assert_eq!(
        call(&app, "GET", "/readyz", None).await.0,
        StatusCode::SERVICE_UNAVAILABLE
    );
}

#[tokio::test]
async fn jobs_runs_series_and_run_now() {
    let app = app(false).await;
    app.daemon.start();
    let (s, body, h) = call(&app, "GET", "/api/v1/jobs", None).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(h["cache-control"], "no-store");
    let v = json(&body);
    assert_eq!(v["jobs"][0]["name"], "data");
    assert_eq!(v["jobs"][0]["state"], "idle");
    assert_eq!(v["jobs"][0]["trigger"], "every 1h");
    assert!(v["jobs"][0]["next_run_ms"].as_i64().unwrap() > v["now_ms"].as_i64().unwrap());
    assert_eq!(v["jobs"][0]["targets"][0]["state"], "idle");

    let (s, body, _) = call(&app, "GET", "/api/v1/jobs/nope", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);
    assert!(json(&body)["error"].as_str().unwrap().contains("\"nope\""));
    let (s, _, _) = call(&app, "POST", "/api/v1/jobs/nope/run", None).await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let (s, body, _) = call(&app, "POST", "/api/v1/jobs/data/run", None).await;
    assert_eq!(s, StatusCode::ACCEPTED, "{body}");
    assert_eq!(json(&body)["action"], "queued");
    let mut runs = serde_json::Value::Null;
    for _ in 0..200 {
        let (_, body, _) = call(&app, "GET", "/api/v1/runs?job=data&state=succeeded", None).await;
        runs = json(&body);
        if !runs["runs"].as_array().unwrap().is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let run = &runs["runs"][0];
    assert_eq!(run["trigger"], "api");
    assert!(run["bytes_sent"].as_u64().unwrap() > 0, "{run}");
    // A repository without deltas: the fields are there, and zero.
    assert_eq!(run["chunks_delta"], 0, "{run}");
    assert_eq!(run["bytes_saved_by_deltas"], 0, "{run}");
    let (_, body, _) = call(&app, "GET", "/api/v1/jobs/data", None).await;
    let job = json(&body);
    assert!(job["targets"][0]["last_success_ms"].is_i64(), "{job}");
    assert_eq!(job["targets"][0]["bytes_saved_by_deltas"], 0, "{job}");
    assert_eq!(job["targets"][0]["runs_succeeded"], 1);

    let (s, body, _) = call(&app, "GET", "/api/v1/runs?job=other", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(json(&body)["runs"].as_array().unwrap().is_empty());
    for bad in [
        "/api/v1/runs?state=exploded",
        "/api/v1/runs?limit=x",
        "/api/v1/runs?colour=red",
        "/api/v1/series?buckets=-1",
    ] {
        let (s, body, _) = call(&app, "GET", bad, None).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{bad}: {body}");
        assert!(json(&body)["error"].is_string());
    }
    let (s, body, _) = call(
        &app,
        "GET",
        "/api/v1/series?window_secs=600&buckets=10",
        None,
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let series = json(&body);
    assert_eq!(series["points"].as_array().unwrap().len(), 10);
    let sent: u64 = series["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["bytes_sent"].as_u64().unwrap())
        .sum();
    assert_eq!(sent, run["bytes_sent"].as_u64().unwrap());

    let (s, body, h) = call(&app, "GET", "/metrics", None).await;
    assert_eq!(s, StatusCode::OK);
    assert!(h["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain"));
    for needle in [
        "ferry_build_info{version=",
        "ferry_runs_total{job=\"data\"",
        "ferry_sent_bytes_total{job=\"data\"",
        "ferry_run_duration_seconds_bucket{job=\"data\"",
        "ferry_replication_lag_seconds{job=\"data\"",
        "ferry_pending_items{job=\"data\"",
        "# HELP ferry_sent_bytes_total",
        "ferry_delta_saved_bytes_total{job=\"data\"",
        "# HELP ferry_delta_saved_bytes_total",
    ] {
        assert!(
            body.contains(needle),
            "{needle} missing from /metrics:\n{body}"
        );
    }
    assert!(app.daemon.shutdown(Duration::from_secs(5)).await);
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn metrics_and_jobs_report_resident_memory() {
    let app = app(false).await;
    let (_, body, _) = call(&app, "GET", "/metrics", None).await;
    let line = body
        .lines()
        .find(|l| l.starts_with("process_resident_memory_bytes "))
        .unwrap_or_else(|| panic!("no process_resident_memory_bytes in /metrics:\n{body}"));
    let rss: f64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(rss > f64::from(1 << 20), "{line}");
    assert!(body.contains("# TYPE process_resident_memory_bytes gauge"));
    let (_, body, _) = call(&app, "GET", "/api/v1/jobs", None).await;
    let rss = json(&body)["resident_memory_bytes"].as_u64().unwrap();
    assert!(rss > 1 << 20, "{body}");
    let (_, body, _) = call(&app, "GET", "/", None).await;
    assert!(
        body.contains("resident_memory_bytes"),
        "the dashboard shows it"
    );
}

#[tokio::test]
async fn token_guards_mutating_endpoints_only() {
    let app = app(true).await;
    app.daemon.start();
    let (s, body, h) = call(&app, "POST", "/api/v1/jobs/data/run", None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    assert_eq!(h["www-authenticate"], "Bearer");
    assert!(json(&body)["error"]
        .as_str()
        .unwrap()
        .contains("Authorization: Bearer"));
    for wrong in [
        "Bearer nope",
        "Bearer s3cr3t-token-012345678",
        "Basic s3cr3t-token-0123456789",
        TOKEN,
    ] {
        let (s, _, _) = call(&app, "POST", "/api/v1/jobs/data/run", Some(wrong)).await;
        assert_eq!(s, StatusCode::UNAUTHORIZED, "{wrong}");
    }
    let good = format!("Bearer {TOKEN}");
    let (s, _, _) = call(&app, "POST", "/api/v1/jobs/data/run", Some(&good)).await;
    assert_eq!(s, StatusCode::ACCEPTED);
    // Reads stay open, and no response ever shows the token (checked in `call`).
    for uri in [
        "/",
        "/api/v1/jobs",
        "/api/v1/jobs/data",
        "/api/v1/runs",
        "/metrics",
        "/api/v1/series",
    ] {
        assert_eq!(
            call(&app, "GET", uri, None).await.0,
            StatusCode::OK,
            "{uri}"
        );
    }
    assert!(app.daemon.shutdown(Duration::from_secs(5)).await);
}

#[tokio::test]
async fn cross_origin_posts_and_foreign_hosts_are_refused() {
    for with_token in [false, true] {
        let app = app(with_token).await;
        app.daemon.start();
        let good = format!("bearer {TOKEN}");
        let auth: Vec<(&str, &str)> = if with_token {
            vec![("authorization", good.as_str())]
        } else {
            vec![]
        };
        let host = ("host", "127.0.0.1:7878");
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut h = auth.clone();
            h.extend_from_slice(extra);
            h
        };
        let run = "/api/v1/jobs/data/run";
        // A page elsewhere cannot trigger a run, whatever the Host it reaches us under.
        for attack in [
            with(&[host, ("origin", "http://evil.example")]),
            with(&[host, ("origin", "null")]),
            with(&[host, ("sec-fetch-site", "cross-site")]),
        ] {
            let (s, body, _) = call_with(&app, "POST", run, &attack).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{attack:?}: {body}");
            assert!(json(&body)["error"]
                .as_str()
                .unwrap()
                .contains("cross-origin"));
        }
        // DNS rebinding: a name that is not ours cannot read the API.
        for uri in ["/api/v1/jobs", "/", "/metrics"] {
            let (s, body, _) = call_with(&app, "GET", uri, &[("host", "evil.example:7878")]).await;
            assert_eq!(s, StatusCode::FORBIDDEN, "{uri}: {body}");
        }
        let (s, _, _) = call_with(
            &app,
            "POST",
            run,
            &with(&[
                ("host", "rebound.example:7878"),
                ("origin", "http://rebound.example:7878"),
            ]),
        )
        .await;
        assert_eq!(s, StatusCode::FORBIDDEN);
        // The dashboard's own page, and curl, still may (the scheme's case does not matter).
        let (s, body, _) = call_with(
            &app,
            "POST",
            run,
            &with(&[host, ("origin", "http://127.0.0.1:7878")]),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        let (s, body, _) = call_with(&app, "POST", run, &with(&[("host", "localhost:7878")])).await;
        assert_eq!(s, StatusCode::ACCEPTED, "{body}");
        let (s, _, _) = call_with(&app, "GET", "/api/v1/jobs", &[("host", "localhost:7878")]).await;
        assert_eq!(s, StatusCode::OK);
        assert!(app.daemon.shutdown(Duration::from_secs(5)).await);
    }
}

#[test]
fn constant_time_comparison() {
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(!constant_time_eq(b"", b"a"));
    assert!(constant_time_eq(b"", b""));
}

/// `[runner] bwlimit`: `/api/v1/jobs` (and so the dashboard) shows the limit in force; no
/// field without one.
#[tokio::test]
async fn jobs_show_the_bandwidth_limit_in_force() {
    let plain = app(false).await;
    let (_, body, _) = call(&plain, "GET", "/api/v1/jobs", None).await;
    assert!(json(&body).get("bwlimit").is_none(), "{body}");
    let dir = tempfile::tempdir().unwrap();
    let text = format!(
        "version = 1\n[runner]\nbwlimit = \"4MiB/s:off\"\n[[jobs]]\nname = \"data\"\nsource = \"{0}/src\"\ntargets = [\"{0}/repo\"]\nevery = \"1h\"\n",
        dir.path().display()
    );
    let env = Env {
        cwd: dir.path().into(),
        vars: HashMap::new(),
    };
    let config = Config::from_toml(&text, "test.toml", &env).unwrap();
    let index = dir.path().join("index");
    let daemon = Daemon::open(config, &index, Clock::real(), Mode::Daemon)
        .await
        .unwrap();
    let limited = App {
        router: router(daemon.clone()),
        daemon,
        _dir: dir,
    };
    let (_, body, _) = call(&limited, "GET", "/api/v1/jobs", None).await;
    assert_eq!(json(&body)["bwlimit"], "4MiB/s:off", "{body}");
    let (_, page, _) = call(&limited, "GET", "/", None).await;
    assert!(page.contains("jobs.bwlimit"), "the dashboard shows it");
}
