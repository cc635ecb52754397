//! Config parsing and validation: the shipped files load, and every error names its key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn env() -> Env {
    Env {
        cwd: PathBuf::from("/work/here"),
        vars: HashMap::from([("FERRY_API_TOKEN".into(), "0123456789abcdef0123".into())]),
    }
}

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_toml(text, "test.toml", &env())
}

fn error(text: &str) -> String {
    load(text).expect_err("expected an error").to_string()
}

const MINIMAL: &str = r#"
version = 1
[[jobs]]
name = "ckpt"
source = "data/ckpt"
targets = ["file:///repo"]
watch = true
"#;

#[test]
fn shipped_configs_load() {
    let local = load(LOCAL_TOML).unwrap();
    assert_eq!(local.server.bind.to_string(), "127.0.0.1:7878");
    assert!(local.server.token.is_none());
    let ckpt = local.job("checkpoints").unwrap();
    assert!(matches!(ckpt.trigger, Trigger::Watch));
    let JobKind::Push {
        source,
        layout,
        complete,
        reference,
        merge,
    } = &ckpt.kind
    else {
        panic!("checkpoints is a push job")
    };
    assert_eq!(
        source.to_string(),
        "file:///work/here/ferry-local/checkpoints"
    );
    assert_eq!(*layout, Layout::Steps);
    assert_eq!(reference, "demo-model");
    assert!(!merge, "the local demo replaces the ref's tree");
    assert_eq!(complete.settle, Duration::from_secs(3));
    assert_eq!(ckpt.targets[0].label, "local-a");
    assert!(matches!(
        local.job("mirror").unwrap().kind,
        JobKind::Replicate { .. }
    ));

    let text = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/config/aws-azure.toml"
    ))
    .unwrap();
    let aws = load(&text).unwrap();
    assert_eq!(aws.jobs.len(), 3);
    assert_eq!(
        aws.server.token.as_ref().unwrap().expose(),
        "0123456789abcdef0123"
    );
    assert!(matches!(
        aws.job("datasets").unwrap().trigger,
        Trigger::Cron(..)
    ));
    assert_eq!(
        aws.job("llama-checkpoints").unwrap().targets[0].egress_usd_per_gb,
        0.0
    );
}

#[test]
fn defaults_fill_in() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.runner.retries, 4);
    let j = &c.jobs[0];
    assert_eq!(j.queue, 16);
    let JobKind::Push {
        reference,
        layout,
        complete,
        ..
    } = &j.kind
    else {
        panic!()
    };
    assert_eq!(reference, "ckpt");
    assert_eq!(*layout, Layout::Tree);
    assert_eq!(complete.settle, Duration::from_secs(10));
    assert_eq!(j.targets[0].egress_usd_per_gb, 0.09);
}

#[test]
fn unknown_keys_are_refused_at_their_line() {
    let e = error(&MINIMAL.replace("watch = true", "watch = true\nsettel = \"5s\""));
    assert!(
        e.starts_with("test.toml:8:1: jobs[0].settel: unknown field `settel`"),
        "{e}"
    );
    let e = error("version = 1\n[server]\nport = 1\n");
    assert!(e.contains("server.port: unknown field `port`"), "{e}");
}

#[test]
fn wrong_types_name_the_key() {
    let e = error(&MINIMAL.replace("watch = true", "watch = \"yes\""));
    assert!(e.contains(":7:") && e.contains("jobs[0].watch:"), "{e}");
    let e = error("version = 1\n[[jobs]]\nsource = \"x\"\ntargets = []\n");
    assert!(e.contains("jobs[0]: missing field `name`"), "{e}");
}

#[test]
fn version_is_required_and_checked() {
    let e = error(&MINIMAL.replace("version = 1", ""));
    assert!(e.contains("version: missing: add `version = 1`"), "{e}");
    let e = error(&MINIMAL.replace("version = 1", "version = 2"));
    assert!(e.contains("version: 2 is not supported"), "{e}");
}

#[test]
fn validation_names_key_and_fix() {
    for (from, to, needle) in [
        (
            "watch = true",
            "every = \"5 parsecs\"",
            "jobs[0].every: \"5 parsecs\" is not a duration",
        ),
        (
            "watch = true",
            "cron = \"61 * * * *\"",
            "jobs[0].cron: \"61 * * * *\" is not a cron schedule",
        ),
        (
            "watch = true",
            "",
            "jobs[0]: no triggers: set exactly one of watch",
        ),
        (
            "watch = true",
            "watch = true\nevery = \"1m\"",
            "several triggers",
        ),
        (
            "[\"file:///repo\"]",
            "[\"aws\"]",
            "jobs[0].targets[0]: no store named \"aws\": define [stores.aws]",
        ),
        (
            "[\"file:///repo\"]",
            "[\"file:///repo\", \"/repo\"]",
            "jobs[0].targets[1]: file:///repo is listed twice",
        ),
        (
            "[\"file:///repo\"]",
            "[\"data/ckpt\"]",
            "jobs[0].targets[0]: is the job's own source",
        ),
        (
            "name = \"ckpt\"",
            "name = \"a b\"",
            "jobs[0].name: \"a b\" is not a valid job name",
        ),
        (
            "source = \"data/ckpt\"",
            "source = \"s3://bucket/x\"",
            "jobs[0].watch: watch needs a local folder source",
        ),
        (
            "watch = true",
            "watch = true\nlatest = \"latest\"",
            "jobs[0].latest: a latest pointer names a step folder: set layout = \"steps\"",
        ),
        (
            "watch = true",
            "watch = true\nmarker = \"a/b\"",
            "jobs[0].marker: \"a/b\" is not a file-name pattern",
        ),
        (
            "watch = true",
            "watch = true\nrefs = [\"x\"]",
            "jobs[0].refs: applies to replicate jobs",
        ),
        (
            "watch = true",
            "watch = true\nref = \".bad\"",
            "jobs[0].ref: invalid ref name",
        ),
        (
            "watch = true",
            "watch = true\nlayout = \"flat\"",
            "jobs[0].layout: \"flat\" is not a layout",
        ),
    ] {
        let text = MINIMAL.replace(from, to);
        let e = error(&text);
        assert!(e.starts_with("test.toml: "), "{e}");
        assert!(e.contains(needle), "{to:?}: expected {needle:?} in {e}");
    }
}

#[test]
fn server_rules() {
    let with = |server: &str| format!("version = 1\n[server]\n{server}\n{}", &MINIMAL[12..]);
    let e = error(&with("bind = \"0.0.0.0:7878\""));
    assert!(
        e.contains("server.bind: 0.0.0.0:7878 is not a loopback address and no API token"),
        "{e}"
    );
    let c = load(&with(
        "bind = \"0.0.0.0:7878\"\ntoken_env = \"FERRY_API_TOKEN\"",
    ))
    .unwrap();
    assert_eq!(format!("{:?}", c.server.token), "Some(***)");
    assert!(!format!("{c:?}").contains("0123456789abcdef"));
    let e = error(&with("token_env = \"NOPE\""));
    assert!(
        e.contains("server.token_env: environment variable NOPE is not set"),
        "{e}"
    );
    let e = error(&with("bind = \"localhost:80\""));
    assert!(
        e.contains("server.bind: \"localhost:80\" is not an address"),
        "{e}"
    );
    let c = load(&with("allowed_hosts = [\"Ferry.Internal.\", \"gpu-7\"]")).unwrap();
    assert_eq!(c.server.allowed_hosts, ["ferry.internal", "gpu-7"]);
    for bad in ["http://x", "x:7878", "", "a..b"] {
        let e = error(&with(&format!("allowed_hosts = [{bad:?}]")));
        assert!(
            e.contains("server.allowed_hosts:") && e.contains("not a host name"),
            "{bad}: {e}"
        );
    }
}

#[test]
fn all_problems_are_reported_together() {
    let e = error(&MINIMAL.replace("watch = true", "every = \"soon\"\nqueue = 0"));
    assert!(
        e.contains("jobs[0].every") && e.contains("jobs[0].queue"),
        "{e}"
    );
}

#[test]
fn patterns_match_file_names() {
    let p = |s: &str| Pattern(s.into());
    assert!(p("_SUCCESS").matches("_SUCCESS"));
    assert!(!p("_SUCCESS").matches("_SUCCESS.tmp"));
    assert!(p("*.done").matches("step-10.done"));
    assert!(!p("*.done").matches("step-10.done.tmp"));
    assert!(p("commit_?").matches("commit_1"));
}

#[test]
fn key_at_finds_tables_and_array_indexes() {
    let text = "version = 1\n[server]\nbind = 1\n[[jobs]]\nname = \"a\"\n[[jobs]]\nevery = 3\n";
    assert_eq!(
        validate::key_at(text, text.find("bind").unwrap()),
        "server.bind"
    );
    assert_eq!(
        validate::key_at(text, text.find("every").unwrap()),
        "jobs[1].every"
    );
    assert_eq!(validate::key_at(text, 0), "version");
}

#[test]
fn mirror_jobs_parse_and_refuse_push_only_keys() {
    let text = MINIMAL.replace(
        "targets = [\"file:///repo\"]",
        "kind = \"mirror\"\ntargets = [\"s3://serving/llama\", \"az://serving/llama\"]\ndelete = true\nsettle = \"2s\"\nmarker = \"_SUCCESS\"",
    );
    let c = load(&text).unwrap();
    let job = c.job("ckpt").unwrap();
    let JobKind::Mirror {
        source,
        delete,
        complete,
    } = &job.kind
    else {
        panic!("expected a mirror job, got {:?}", job.kind)
    };
    assert_eq!(source.to_string(), "file:///work/here/data/ckpt");
    assert!(*delete);
    assert_eq!(complete.settle, Duration::from_secs(2));
    assert!(complete.marker.is_some());
    assert_eq!(job.kind.name(), "mirror");
    assert!(matches!(job.trigger, Trigger::Watch));

    for (extra, needle) in [
        ("ref = \"x\"", "jobs[0].ref: does not apply to mirror jobs"),
        (
            "merge = true",
            "jobs[0].merge: does not apply to mirror jobs",
        ),
        (
            "layout = \"steps\"",
            "jobs[0].layout: mirror jobs mirror the whole source tree",
        ),
        (
            "refs = [\"a\"]",
            "jobs[0].refs: does not apply to mirror jobs",
        ),
    ] {
        let e = error(&text.replace("delete = true", extra));
        assert!(e.contains(needle), "{extra}: {e}");
    }
    let e = error(&MINIMAL.replace("watch = true", "watch = true\ndelete = true"));
    assert!(e.contains("jobs[0].delete: applies to mirror jobs"), "{e}");
    let e = error(&MINIMAL.replace("watch = true", "watch = true\nkind = \"copy\""));
    assert!(
        e.contains("jobs[0].kind: \"copy\" is not a job kind"),
        "{e}"
    );
}

#[test]
fn merge_is_a_push_job_option() {
    let merging = |text: &str| match &load(text).unwrap().jobs[0].kind {
        JobKind::Push { merge, .. } => *merge,
        other => panic!("not a push job: {other:?}"),
    };
    assert!(!merging(MINIMAL));
    assert!(merging(
        &MINIMAL.replace("watch = true", "watch = true\nmerge = true")
    ));
    assert!(!merging(
        &MINIMAL.replace("watch = true", "watch = true\nmerge = false")
    ));
    // A misspelling is refused at its line, not silently ignored (which would replace trees).
    let e = error(&MINIMAL.replace("watch = true", "watch = true\nmerged = true"));
    assert!(
        e.starts_with("test.toml:8:1: jobs[0].merged: unknown field `merged`"),
        "{e}"
    );
    let e = error(&MINIMAL.replace("watch = true", "watch = true\nmerge = \"yes\""));
    assert!(
        e.starts_with(
            "test.toml:8:9: jobs[0].merge: invalid type: string \"yes\", expected a boolean"
        ),
        "{e}"
    );
    let replicate = r#"
version = 1
[[jobs]]
name = "copy"
from = "file:///a"
targets = ["file:///b"]
every = "5m"
merge = true
"#;
    let e = error(replicate);
    assert!(
        e.contains("jobs[0].merge: applies to push jobs (with source = …) only: remove it"),
        "{e}"
    );
}

#[test]
fn gcs_urls_are_accepted_where_any_store_url_is() {
    let text = MINIMAL
        .replace(
            "source = \"data/ckpt\"",
            "source = \"gs://train-runs/ckpt\"",
        )
        .replace(
            "targets = [\"file:///repo\"]",
            "targets = [\"gs://models_eu/llama\", \"s3://models/llama\"]",
        )
        .replace("watch = true", "every = \"1h\"");
    let c = load(&text).unwrap();
    let job = c.job("ckpt").unwrap();
    assert_eq!(job.kind.source_url().to_string(), "gs://train-runs/ckpt");
    assert_eq!(job.targets[0].url.to_string(), "gs://models_eu/llama");

    let bad = MINIMAL.replace("file:///repo", "gs://Not_A_Bucket/x");
    let e = error(&bad);
    assert!(
        e.contains("jobs[0].targets[0]") && e.contains("GCS bucket names"),
        "{e}"
    );
}

#[test]
fn max_egress_per_day_is_a_size_for_sending_jobs() {
    let budget = |line: &str| {
        load(&MINIMAL.replace("watch = true", &format!("watch = true\n{line}")))
            .unwrap()
            .jobs[0]
            .max_egress_per_day
    };
    assert_eq!(load(MINIMAL).unwrap().jobs[0].max_egress_per_day, None);
    assert_eq!(budget("max_egress_per_day = \"200GiB\""), Some(200 << 30));
    assert_eq!(budget("max_egress_per_day = \"500MB\""), Some(500_000_000));
    for bad in ["\"lots\"", "\"0B\""] {
        let e = error(&MINIMAL.replace(
            "watch = true",
            &format!("watch = true\nmax_egress_per_day = {bad}"),
        ));
        assert!(
            e.contains("jobs[0].max_egress_per_day:") && e.contains("is not a size above zero"),
            "{e}"
        );
    }
}

/// `[stores.NAME] key_file`: the daemon's keys, each bound to its store; a missing file is a
/// problem at that key, naming the command that makes one.
#[test]
fn store_key_files_are_the_daemons_keys() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("models.key");
    std::fs::write(&key, "not read here").unwrap();
    let stores = format!(
        "version = 1\n[stores.a]\nurl = \"file:///ra\"\nkey_file = {key:?}\n\
         [stores.b]\nurl = \"file:///rb\"\nkey_file = {key:?}\n\
         [stores.c]\nurl = \"file:///rc\"\n"
    );
    let text = format!(
        "{stores}[[jobs]]\nname = \"ckpt\"\nsource = \"data/ckpt\"\ntargets = [\"a\", \"b\", \"c\"]\nwatch = true\n"
    );
    let c = load(&text).unwrap();
    let bound: Vec<(String, PathBuf)> = c
        .store_keys
        .iter()
        .map(|(u, f)| (u.to_string(), f.clone()))
        .collect();
    assert_eq!(
        bound,
        vec![
            ("file:///ra".to_string(), key.clone()),
            ("file:///rb".to_string(), key.clone())
        ]
    );
    let job = c.job("ckpt").unwrap();
    assert_eq!(job.targets[0].key_file.as_ref(), Some(&key));
    assert_eq!(job.targets[2].key_file, None);

    let missing = text.replace(&format!("{key:?}"), "\"/no/such.key\"");
    let e = error(&missing);
    assert!(
        e.contains("stores.a.key_file") && e.contains("ferry key generate"),
        "{e}"
    );
}
