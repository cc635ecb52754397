//! Secrets stay out of everything ferry prints: with distinctive values in
//! `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN` and `AZURE_STORAGE_ACCOUNT_KEY`, failing and
//! succeeding commands at `-vv` (and at `RUST_LOG=trace`) never show them on stdout, stderr
//! or in `--json` summaries.

use crate::data::{self, KIB};
use crate::harness::{s, Backend, Ctx};
use crate::run::{Ferry, Run};

const S3_SECRET: &str = "ferry-canary-s3-secret-7f3a9c2e51";
const S3_TOKEN: &str = "ferry-canary-session-token-0b9d4e";
/// Base64 of `AZURE_CANARY`: a well-formed but wrong key, so Azurite answers 403.
const AZURE_KEY: &str = "ZmVycnktY2FuYXJ5LWF6dXJlLWtleS0wMTIzNDU2Nzg5YWJjZGVm";
const AZURE_CANARY: &str = "ferry-canary-azure-key-0123456789abcdef";
/// Not base64 at all: the error building the client must not echo it either.
const AZURE_BAD_KEY: &str = "ferry-canary-not-base64-key!!";

/// Every printed byte of `run`, checked for every form of every secret.
fn assert_clean(run: &Run, what: &str) {
    for secret in [S3_SECRET, S3_TOKEN, AZURE_KEY, AZURE_CANARY, AZURE_BAD_KEY] {
        for (stream, text) in [("stdout", &run.stdout), ("stderr", &run.stderr)] {
            assert!(
                !text.contains(secret),
                "{what}: a secret appears on {stream}: {run}"
            );
        }
    }
}

/// Runs `args` with `env`: it succeeds or fails as expected, a failure ends with one error
/// line, and nothing printed holds a secret.
fn assert_case(ferry: &Ferry, what: &str, args: &[&str], env: &[(&str, &str)], succeeds: bool) {
    let run = ferry.run_env(args, env);
    assert_eq!(
        run.status.success(),
        succeeds,
        "{what}: unexpected outcome: {run}"
    );
    if !succeeds && run.status.code() == Some(1) {
        run.stderr
            .lines()
            .last()
            .filter(|l| l.starts_with("error: "))
            .unwrap_or_else(|| panic!("{what}: no error line: {run}"));
    }
    assert_clean(&run, what);
}

#[test]
fn secrets_stay_out_of_output() {
    let Some(ctx) = Ctx::new(&[Backend::S3, Backend::Azure]) else {
        return;
    };
    let s3 = ctx.location(Backend::S3);
    let az = ctx.location(Backend::Azure);
    let src = ctx.dir("src");
    data::write_file(&src, "a.bin", &data::random_bytes(80, 300 * KIB));
    let ferry = ctx.ferry();
    let aws = [
        ("AWS_SECRET_ACCESS_KEY", S3_SECRET),
        ("AWS_SESSION_TOKEN", S3_TOKEN),
    ];
    let trace = ("RUST_LOG", "trace");
    let dest = ctx.path("restore");
    let push_s3 = ["-vv", "push", s(&src), s3.url.as_str(), "--name", "ckpt"];
    let push_az = ["-vv", "push", s(&src), az.url.as_str(), "--name", "ckpt"];

    // Each case: what, args, extra environment, whether it must succeed.
    type Case<'a> = (&'a str, Vec<&'a str>, Vec<(&'a str, &'a str)>, bool);
    let cases: Vec<Case> = vec![
        (
            "S3 push (moto ignores signatures)",
            push_s3.to_vec(),
            aws.to_vec(),
            true,
        ),
        (
            "S3 push at RUST_LOG=trace",
            push_s3.to_vec(),
            [aws.as_slice(), &[trace]].concat(),
            true,
        ),
        (
            "S3 restore",
            vec!["-vv", "restore", &s3.url, "ckpt", s(&dest)],
            aws.to_vec(),
            true,
        ),
        (
            "S3 missing bucket",
            vec!["-vv", "snapshots", "s3://no-such-bucket-canary/p"],
            aws.to_vec(),
            false,
        ),
        (
            "S3 endpoint down",
            vec!["-vv", "verify", &s3.url],
            [aws.as_slice(), &[("AWS_ENDPOINT", "http://127.0.0.1:9")]].concat(),
            false,
        ),
        (
            "S3 under injected faults",
            push_s3.to_vec(),
            [aws.as_slice(), &[("FERRY_FAULTS", "rate=0.5,seed=3")]].concat(),
            false,
        ),
        (
            "S3 key id without secret",
            vec!["-vv", "snapshots", &s3.url],
            vec![
                ("AWS_SECRET_ACCESS_KEY", ""),
                ("AWS_SESSION_TOKEN", S3_TOKEN),
            ],
            false,
        ),
        (
            "Azure push with a wrong key (403)",
            push_az.to_vec(),
            vec![("AZURE_STORAGE_ACCOUNT_KEY", AZURE_KEY)],
            false,
        ),
        (
            "Azure snapshots with a wrong key at RUST_LOG=trace",
            vec!["-vv", "snapshots", &az.url],
            vec![("AZURE_STORAGE_ACCOUNT_KEY", AZURE_KEY), trace],
            false,
        ),
        (
            "Azure replicate into it with a wrong key",
            vec!["-vv", "replicate", &s3.url, &az.url],
            [aws.as_slice(), &[("AZURE_STORAGE_ACCOUNT_KEY", AZURE_KEY)]].concat(),
            false,
        ),
        (
            "Azure with a key that is not base64",
            push_az.to_vec(),
            vec![("AZURE_STORAGE_ACCOUNT_KEY", AZURE_BAD_KEY)],
            false,
        ),
    ];
    for (what, args, env, succeeds) in &cases {
        assert_case(&ferry, what, args, env, *succeeds);
    }
    eprintln!("secrets: {} runs, no secret printed", cases.len());
}
