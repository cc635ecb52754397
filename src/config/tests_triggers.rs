//! Settings that load but would silently do nothing are refused or warned about, naming the
//! key: a zero interval, a cron schedule that never fires, a source folder that does not
//! exist; and `max_wait` defaults and checks.

use std::collections::HashMap;
use std::time::Duration;

use super::*;

fn env(cwd: &std::path::Path) -> Env {
    Env {
        cwd: cwd.to_path_buf(),
        vars: HashMap::new(),
    }
}

fn job(trigger: &str, extra: &str) -> String {
    format!(
        "version = 1\n[[jobs]]\nname = \"data\"\nsource = \"src\"\ntargets = [\"file:///repo\"]\n{trigger}\n{extra}\n"
    )
}

fn load(text: &str) -> Result<Config, ConfigError> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("src")).unwrap();
    Config::from_toml(text, "test.toml", &env(dir.path()))
}

fn error(text: &str) -> String {
    load(text).expect_err("expected an error").to_string()
}

#[test]
fn an_interval_shorter_than_a_second_is_refused() {
    for every in ["0s", "0ms", "500ms"] {
        let e = error(&job(&format!("every = \"{every}\""), ""));
        assert!(
            e.contains(&format!("jobs[0].every: \"{every}\" is shorter than 1s")),
            "{every}: {e}"
        );
    }
    let ok = load(&job("every = \"1s\"", "")).unwrap();
    assert_eq!(ok.jobs.len(), 1);
    // A text that is not a duration is reported once, as such.
    let e = error(&job("every = \"soon\"", ""));
    assert_eq!(e.matches("jobs[0].every").count(), 1, "{e}");
}

#[test]
fn a_cron_schedule_that_never_fires_is_refused() {
    for cron in ["0 0 31 2 *", "0 0 30 2 *"] {
        let e = error(&job(&format!("cron = \"{cron}\""), ""));
        assert!(
            e.contains(&format!("jobs[0].cron: \"{cron}\" never fires")),
            "{cron}: {e}"
        );
    }
    // February 29th fires (every four years).
    assert!(load(&job("cron = \"0 0 29 2 *\"", "")).is_ok());
}

#[test]
fn a_missing_source_folder_is_a_warning_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let c = Config::from_toml(&job("every = \"1m\"", ""), "test.toml", &env(dir.path())).unwrap();
    assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
    let w = &c.warnings[0];
    assert!(
        w.starts_with("jobs[0].source: ") && w.contains("does not exist"),
        "{w}"
    );
    std::fs::create_dir(dir.path().join("src")).unwrap();
    let c = Config::from_toml(&job("every = \"1m\"", ""), "test.toml", &env(dir.path())).unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
}

#[test]
fn max_wait_defaults_to_ten_settle_periods_and_at_least_a_minute() {
    let wait = |extra: &str| {
        let c = load(&job("every = \"1m\"", extra)).unwrap();
        match &c.jobs[0].kind {
            JobKind::Push { complete, .. } => complete.max_wait,
            other => panic!("{other:?}"),
        }
    };
    assert_eq!(wait("settle = \"2s\""), Duration::from_secs(60));
    assert_eq!(wait("settle = \"30s\""), Duration::from_secs(300));
    assert_eq!(wait("max_wait = \"90s\""), Duration::from_secs(90));
    let e = error(&job(
        "every = \"1m\"",
        "settle = \"30s\"\nmax_wait = \"10s\"",
    ));
    assert!(e.contains("jobs[0].max_wait: shorter than settle"), "{e}");
    let e = error(
        "version = 1\n[[jobs]]\nname = \"r\"\nfrom = \"file:///a\"\ntargets = [\"file:///b\"]\nevery = \"1m\"\nmax_wait = \"5m\"\n",
    );
    assert!(e.contains("jobs[0].max_wait: applies to push jobs"), "{e}");
}
