//! The dashboard as a person sees it, in real headless Chromium driven by chromedriver: the
//! job table renders, and after clicking "Run now" the job's row changes state without a
//! reload; a job card says what is waiting and why (a step without its marker, a file still
//! being written); a pull job's row shows the version live and its card the lag behind the
//! ref and the bytes read vs reused; a step pushed as deltas shows what they saved, in its
//! run row and its target's totals. Saves a screenshot to `$CARGO_TARGET_TMPDIR/dashboard.png`.
//!
//! Needs `chromium` and `chromium-driver` (Debian); `scripts/test.sh` installs them and sets
//! `FERRY_REQUIRE_BROWSER=1`, which turns a missing driver from a skip into a failure.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::daemon::{write_config, Daemon};
use crate::data;
use crate::harness::{s, Backend, Ctx};
use crate::http;

/// A chromedriver process on a free port, and one browser session.
struct Browser {
    driver: Child,
    addr: String,
    session: String,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium whose profile lives in `profile`.
    fn start(chromedriver: &str, profile: &std::path::Path) -> Browser {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let addr = format!("127.0.0.1:{port}");
        let started = Instant::now();
        let mut fail = |why: String| -> ! {
            let _ = driver.kill();
            let _ = driver.wait();
            panic!("{why}");
        };
        while http::request(&addr, "GET", "/status", &[], None).is_err() {
            if started.elapsed() > Duration::from_secs(30) {
                fail("chromedriver did not start within 30s".into());
            }
            thread::sleep(Duration::from_millis(50));
        }
        let caps = json!({"capabilities": {"alwaysMatch": {"goog:chromeOptions": {"args": [
            "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--no-first-run", "--window-size=1400,1100",
            format!("--user-data-dir={}", profile.display()),
        ]}}}});
        let r = http::post(&addr, "/session", &[], Some(&caps));
        let Some(session) = r.json()["value"]["sessionId"].as_str().map(String::from) else {
            fail(format!("no browser session: {}", r.body));
        };
        Browser {
            driver,
            addr,
            session,
        }
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Value {
        let path = format!("/session/{}{path}", self.session);
        let r = http::request(&self.addr, method, &path, &[], body).expect("webdriver request");
        let v = r.json();
        assert_eq!(r.status, 200, "{method} {path}: {v}");
        v["value"].clone()
    }

    fn script(&self, js: &str) -> Value {
        self.call(
            "POST",
            "/execute/sync",
            Some(&json!({"script": js, "args": []})),
        )
    }

    /// Clicks the first element matching `css` (retrying while the page re-renders it).
    fn click(&self, css: &str) {
        for _ in 0..50 {
            let path = format!("/session/{}/element", self.session);
            let found = http::post(
                &self.addr,
                &path,
                &[],
                Some(&json!({"using": "css selector", "value": css})),
            )
            .json();
            if let Some(id) = found["value"]
                .as_object()
                .and_then(|o| o.values().next())
                .and_then(Value::as_str)
            {
                let path = format!("/session/{}/element/{id}/click", self.session);
                if http::post(&self.addr, &path, &[], Some(&json!({}))).status == 200 {
                    return;
                }
            }
            thread::sleep(Duration::from_millis(100));
        }
        panic!("could not click {css}");
    }

    fn wait_script(&self, what: &str, js: &str, limit: Duration) -> Value {
        let start = Instant::now();
        loop {
            let v = self.script(js);
            if !v.is_null() && v != Value::Bool(false) {
                return v;
            }
            assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
            thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = http::request(
            &self.addr,
            "DELETE",
            &format!("/session/{}", self.session),
            &[],
            None,
        );
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

fn find_chromedriver() -> Option<String> {
    ["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .map(String::from)
}

fn base64_decode(text: &str) -> Vec<u8> {
    let val = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => (c - b'A') as u32,
            b'a'..=b'z' => (c - b'a' + 26) as u32,
            b'0'..=b'9' => (c - b'0' + 52) as u32,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {c}"),
        }
    };
    let bytes: Vec<u8> = text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
        .collect();
    let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
    for chunk in bytes.chunks(4) {
        let mut n = 0u32;
        for (i, c) in chunk.iter().enumerate() {
            n |= val(*c) << (18 - 6 * i);
        }
        let got = chunk.len() * 6 / 8;
        out.extend_from_slice(&n.to_be_bytes()[1..1 + got]);
    }
    out
}

/// The chromedriver to use; `None` (a skip) when there is none, unless
/// `FERRY_REQUIRE_BROWSER=1` makes that a failure.
fn chromedriver_or_skip() -> Option<String> {
    let found = find_chromedriver();
    if found.is_none() {
        assert!(
            std::env::var("FERRY_REQUIRE_BROWSER").as_deref() != Ok("1"),
            "chromedriver is missing but FERRY_REQUIRE_BROWSER=1: apt-get install chromium chromium-driver"
        );
        eprintln!(
            "skipping the browser test: no chromedriver (apt-get install chromium chromium-driver)"
        );
    }
    found
}

/// Two finished training steps (the second pushes as deltas into a `--deltas` repository)
/// and a half-written one in `watched`, and a dataset folder whose only file is still being
/// written; returns both folders.
fn write_sources(ctx: &Ctx) -> (PathBuf, PathBuf) {
    let watched = ctx.dir("watched");
    for (n, step) in [(1, "step-100"), (2, "step-200")] {
        crate::deltas::write_step(&watched.join(step), n);
        data::write_file(
            &watched.join(step),
            "config.json",
            format!("{{\"step\": \"{step}\"}}").as_bytes(),
        );
        data::write_file(&watched.join(step), "_SUCCESS", b"");
    }
    data::write_file(
        &watched.join("step-300"),
        "model.safetensors",
        b"half written",
    );
    // A dataset whose only file is still being written (it will not settle within the test).
    let dataset = ctx.dir("dataset");
    data::write_file(&dataset, "events.log", b"appended to all day\n");
    (watched, dataset)
}

/// Saves the page as `$CARGO_TARGET_TMPDIR/dashboard.png`.
fn save_screenshot(browser: &Browser) {
    let png = base64_decode(
        browser
            .call("GET", "/screenshot", None)
            .as_str()
            .expect("screenshot"),
    );
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("dashboard.png");
    std::fs::write(&path, &png).expect("save screenshot");
    eprintln!("dashboard screenshot: {}", path.display());
}

/// The second step went as deltas: its run row and the target's totals say what they saved.
fn assert_delta_savings_shown(browser: &Browser) {
    let saved = browser.script("return [...document.querySelectorAll('#runs tbody tr')].filter(r => r.textContent.includes('step-200')).map(r => r.querySelector('.deltas')?.textContent).find(t => t) || null");
    assert!(
        saved.as_str().unwrap_or("").starts_with("saved "),
        "{saved}"
    );
    let saved = browser.script(
        "return document.querySelector('tr[data-job=\"checkpoints\"] .deltas')?.textContent || null",
    );
    assert!(
        saved.as_str().unwrap_or("").ends_with("by deltas"),
        "{saved}"
    );
}

#[test]
fn dashboard_updates_live_in_chromium() {
    let Some(ctx) = Ctx::new(&[Backend::File]) else {
        return;
    };
    let Some(chromedriver) = chromedriver_or_skip() else {
        return;
    };
    let (repo, mirror) = (ctx.location(Backend::File), ctx.location(Backend::File));
    let (watched, dataset) = write_sources(&ctx);
    ctx.ferry().json(&["init", &repo.url, "--deltas", "2"]);
    let serving = ctx.path("serving");
    let config = write_config(
        &ctx,
        "",
        &format!(
            "[[jobs]]\nname = \"checkpoints\"\nsource = \"{}\"\nlayout = \"steps\"\nref = \"model\"\ntargets = [\"{}\"]\nwatch = true\nsettle = \"300ms\"\nmarker = \"_SUCCESS\"\n\n[[jobs]]\nname = \"nightly\"\nfrom = \"{}\"\ntargets = [\"{}\"]\ncron = \"0 3 * * *\"\n\n[[jobs]]\nname = \"dataset\"\nsource = \"{}\"\nref = \"dataset\"\ntargets = [\"{}\"]\nevery = \"1s\"\nsettle = \"1h\"\n\n[[jobs]]\nname = \"serving\"\nkind = \"pull\"\nfrom = \"{}\"\nref = \"model\"\ndest = \"{}\"\nwatch = true\npoll = \"200ms\"\n",
            s(&watched), repo.url, repo.url, mirror.url, s(&dataset), repo.url, repo.url, s(&serving)
        ),
    );
    let d = Daemon::start(&ctx.ferry(), &config, &[], &[]);
    d.wait_for(
        "the checkpoints were pushed",
        Duration::from_secs(60),
        |d| (d.runs("job=checkpoints&state=succeeded").len() == 2).then_some(()),
    );

    let browser = Browser::start(&chromedriver, &ctx.dir("chromium-profile"));
    browser.call(
        "POST",
        "/url",
        Some(&json!({"url": format!("http://{}/", d.addr)})),
    );
    let rows = browser.wait_script(
        "the job table rendered",
        "return document.querySelectorAll('tr[data-target]').length || null",
        Duration::from_secs(20),
    );
    assert_eq!(rows, json!(4), "one row per job target");
    let before = browser.script("window.__notReloaded = true; return document.querySelector('tr[data-job=\"nightly\"] td:nth-child(3)').textContent");
    assert_eq!(before, json!("never"), "the nightly job has not run yet");
    assert_eq!(
        browser.script("return document.querySelector('.job[data-job=\"nightly\"]').dataset.state"),
        json!("idle")
    );

    browser.click(".job[data-job=\"nightly\"] button");
    let after = browser.wait_script(
        "the nightly row shows its run",
        "const c = document.querySelector('tr[data-job=\"nightly\"] td:nth-child(3)'); return c && c.textContent !== 'never' ? c.textContent : null",
        Duration::from_secs(30),
    );
    assert!(after.as_str().unwrap_or("").ends_with("ago"), "{after}");
    assert_eq!(
        browser.script("return window.__notReloaded === true"),
        json!(true),
        "the page reloaded"
    );
    assert_delta_savings_shown(&browser);
    let run_row = browser.script("return [...document.querySelectorAll('#runs tbody tr')].map(r => r.textContent).find(t => t.includes('nightly')) || null");
    assert!(
        run_row.as_str().unwrap_or("").contains("succeeded"),
        "{run_row}"
    );
    let waiting = browser.script(
        "return document.querySelector('.job[data-job=\"checkpoints\"] .waitline').textContent",
    );
    assert!(
        waiting.as_str().unwrap_or("").contains("step-300"),
        "{waiting}"
    );
    let waiting = browser.wait_script(
        "the dataset card names the file still being written",
        "const w = document.querySelector('.job[data-job=\"dataset\"] .waitline'); return w && w.textContent.includes('events.log') ? w.textContent : null",
        Duration::from_secs(20),
    );
    assert!(
        waiting.as_str().unwrap_or("").contains("still changing"),
        "{waiting}"
    );
    assert_eq!(
        browser.script("return document.querySelector('.job[data-job=\"dataset\"]').dataset.state"),
        json!("waiting")
    );

    // The pull job's row: the version live (the newest step, seq 2) and the card's line.
    let live = browser.wait_script(
        "the pull job's row shows the newest version live",
        "const r = document.querySelector('tr[data-job=\"serving\"]'); return r && r.dataset.liveSeq === '2' ? r.textContent : null",
        Duration::from_secs(30),
    );
    assert!(live.as_str().unwrap_or("").contains("live #2"), "{live}");
    let line = browser.wait_script(
        "the pull job's card says it is up to date",
        "const l = document.querySelector('.job[data-job=\"serving\"] .pullline'); return l && l.textContent.includes('up to date') ? l.textContent : null",
        Duration::from_secs(20),
    );
    let line = line.as_str().unwrap_or("");
    assert!(
        line.contains("Serving model #2") && line.contains("from the store"),
        "{line}"
    );

    thread::sleep(Duration::from_millis(2500)); // one more refresh: the chart and ages settle
    save_screenshot(&browser);
    let (stopped, _) = d.stop();
    assert!(stopped.status.success(), "{stopped}");
}
