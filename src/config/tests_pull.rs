//! Pull jobs (`kind = "pull"`): defaults, the one target being the destination folder, and
//! every mistake refused at its key.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use super::*;

fn load(jobs: &str) -> Result<Config, ConfigError> {
    let text = format!(
        "version = 1\n[stores.models]\nurl = \"s3://bucket/models\"\negress_usd_per_gb = 0.02\n{jobs}"
    );
    let env = Env {
        cwd: PathBuf::from("/work/here"),
        vars: HashMap::new(),
    };
    Config::from_toml(&text, "test.toml", &env)
}

fn pull(extra: &str) -> String {
    format!("[[jobs]]\nname = \"serve\"\nkind = \"pull\"\nfrom = \"models\"\nref = \"llama\"\ndest = \"serving/llama\"\n{extra}\n")
}

fn error(jobs: &str) -> String {
    load(jobs).expect_err("expected an error").to_string()
}

#[test]
fn a_pull_job_loads_with_defaults() {
    let c = load(&pull("watch = true")).unwrap();
    let j = c.job("serve").unwrap();
    assert!(matches!(j.trigger, Trigger::Watch));
    let JobKind::Pull(p) = &j.kind else {
        panic!("a pull job: {:?}", j.kind)
    };
    assert_eq!(p.from.url.to_string(), "s3://bucket/models");
    assert_eq!(p.reference, "llama");
    assert_eq!(p.dest, PathBuf::from("/work/here/serving/llama"));
    assert_eq!(p.keep, 2);
    assert_eq!(p.poll, Duration::from_secs(10));
    assert!(p.hooks.command.is_empty() && p.hooks.url.is_none());
    assert_eq!(p.hooks.timeout, Duration::from_secs(30));
    assert!(p.selection().is_everything());
    // The job's one target is the destination folder, priced as the source store.
    assert_eq!(j.targets.len(), 1);
    assert_eq!(j.targets[0].label, "serving/llama");
    assert_eq!(
        j.targets[0].url.to_string(),
        "file:///work/here/serving/llama"
    );
    assert_eq!(j.targets[0].egress_usd_per_gb, 0.02);
    assert_eq!(j.kind.name(), "pull");
}

#[test]
fn hooks_globs_and_schedules_load() {
    let c = load(&pull(
        "every = \"5m\"\nkeep = 3\ninclude = [\"*.safetensors\", \"config.json\"]\nexclude = [\"optimizer/*\"]\nhook_command = [\"/bin/reload\", \"--now\"]\nhook_url = \"http://127.0.0.1:8080/reload\"\nhook_timeout = \"5s\"",
    ))
    .unwrap();
    let JobKind::Pull(p) = &c.jobs[0].kind else {
        panic!()
    };
    assert!(matches!(c.jobs[0].trigger, Trigger::Every(_)));
    assert_eq!(p.keep, 3);
    assert!(!p.selection().is_everything());
    assert_eq!(p.hooks.command, ["/bin/reload", "--now"]);
    assert_eq!(
        p.hooks.url.as_ref().unwrap().as_str(),
        "http://127.0.0.1:8080/reload"
    );
    assert_eq!(p.hooks.timeout, Duration::from_secs(5));
}

#[test]
fn mistakes_are_named_at_their_key() {
    let cases: &[(&str, &str)] = &[
        ("watch = true\ndest = \"x\"", "duplicate key"),
        (
            "watch = true\nkeep = 0",
            "jobs[0].keep: must be between 1 and 1000",
        ),
        (
            "watch = true\nhook_url = \"ftp://host/x\"",
            "jobs[0].hook_url: scheme \"ftp\" is not allowed",
        ),
        (
            "watch = true\nhook_url = \"http://u:p@host/x\"",
            "jobs[0].hook_url: holds credentials",
        ),
        (
            "watch = true\nhook_command = []",
            "jobs[0].hook_command: needs a program",
        ),
        (
            "watch = true\ninclude = [\"a[\"]",
            "jobs[0].include[0]: invalid glob",
        ),
        (
            "every = \"1m\"\npoll = \"1s\"",
            "jobs[0].poll: applies to watch = true only",
        ),
        (
            "watch = true\npoll = \"10ms\"",
            "jobs[0].poll: shorter than 100ms",
        ),
        (
            "watch = true\ntargets = [\"file:///r\"]",
            "jobs[0].targets: a pull job writes into one folder",
        ),
        (
            "watch = true\nsource = \"/data\"",
            "jobs[0].source: a pull job reads from a repository",
        ),
        (
            "watch = true\nqueue = 3",
            "jobs[0].queue: does not apply to pull jobs",
        ),
        ("", "no triggers"),
    ];
    for (extra, want) in cases {
        let e = error(&pull(extra));
        assert!(e.contains(want), "{extra:?}: {e}");
    }
    let e = error("[[jobs]]\nname = \"serve\"\nkind = \"pull\"\nfrom = \"models\"\nref = \"llama@3\"\nwatch = true\n");
    assert!(
        e.contains("jobs[0].ref: \"llama@3\" is not a ref name"),
        "{e}"
    );
    assert!(e.contains("jobs[0]: no destination"), "{e}");
    let e = error(
        "[[jobs]]\nname = \"serve\"\nkind = \"pull\"\ndest = \"s3://bucket/p\"\nwatch = true\n",
    );
    assert!(e.contains("jobs[0]: no source repository"), "{e}");
    assert!(
        e.contains("jobs[0].dest: s3://bucket/p is not a local folder"),
        "{e}"
    );
    let e = error("[[jobs]]\nname = \"serve\"\nkind = \"pull\"\nfrom = \"/repo\"\ndest = \"/repo/serve\"\nwatch = true\n");
    assert!(
        e.contains("jobs[0].dest: /repo/serve overlaps the repository"),
        "{e}"
    );
    let twice = format!(
        "{}{}",
        pull("watch = true"),
        pull("every = \"1m\"").replace("\"serve\"", "\"serve-2\"")
    );
    let e = error(&twice);
    assert!(
        e.contains("jobs[1].dest: /work/here/serving/llama is also job \"serve\"'s dest"),
        "{e}"
    );
    // Pull-only keys on another kind.
    let e = error("[[jobs]]\nname = \"ckpt\"\nsource = \"/data\"\ntargets = [\"models\"]\nevery = \"1m\"\nkeep = 2\nhook_url = \"http://127.0.0.1/\"\n");
    assert!(e.contains("jobs[0].keep: applies to pull jobs"), "{e}");
    assert!(e.contains("jobs[0].hook_url: applies to pull jobs"), "{e}");
}

/// The TOML under `ferry.toml: |` of a ConfigMap manifest, unindented.
fn embedded_config(manifest: &str) -> String {
    let mut lines = manifest.lines().skip_while(|l| l.trim() != "ferry.toml: |");
    lines.next();
    lines
        .take_while(|l| l.is_empty() || l.starts_with("    "))
        .map(|l| l.get(4..).unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_serving_examples_load() {
    let env = Env {
        cwd: PathBuf::from("/work/here"),
        vars: HashMap::from([("FERRY_API_TOKEN".into(), "0123456789abcdef0123".into())]),
    };
    let root = env!("CARGO_MANIFEST_DIR");
    let text = std::fs::read_to_string(format!("{root}/config/serving.toml")).unwrap();
    let c = Config::from_toml(&text, "serving.toml", &env).unwrap();
    let JobKind::Pull(p) = &c.job("serve-llama").unwrap().kind else {
        panic!("serve-llama is a pull job")
    };
    assert_eq!(p.dest, PathBuf::from("/models/llama"));
    assert!(p.hooks.url.is_some() && !p.hooks.command.is_empty());
    for manifest in ["model-server-with-pull-sidecar.yaml", "sidecar-config.yaml"] {
        let text = std::fs::read_to_string(format!("{root}/docker/k8s/{manifest}")).unwrap();
        let toml = embedded_config(&text);
        assert!(toml.starts_with("version = 1"), "{manifest}: {toml}");
        let c =
            Config::from_toml(&toml, manifest, &env).unwrap_or_else(|e| panic!("{manifest}: {e}"));
        assert!(!c.jobs.is_empty());
    }
}
