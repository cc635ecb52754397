//! Issue 14, part 2: AWS credentials as the AWS CLI resolves them, through the real binary
//! against moto, without `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`/`AWS_REGION` in the
//! environment: a profile file alone, `role_arn` + `source_profile` (STS AssumeRole on
//! moto), `credential_process`, and broken profiles (one line naming the profile and file).
//! A recording proxy in front of moto shows which key signed each request.

use std::fs;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;

use crate::data;
use crate::harness::{s, server_url, Backend, Ctx, S3_ENDPOINT_VAR};
use crate::run::Run;

/// Taken out of every run here: credentials and settings come from the profile.
const REMOVED: &[&str] = &[
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_REGION",
    "AWS_DEFAULT_REGION",
    "AWS_ENDPOINT",
];

/// A TCP proxy to moto that keeps every byte the client sent.
struct Recorder {
    url: String,
    sent: Arc<Mutex<Vec<u8>>>,
}

impl Recorder {
    fn start(upstream: &str) -> Recorder {
        let target = upstream.trim_start_matches("http://").trim_end_matches('/');
        let target = target.to_string();
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind recorder");
        let url = format!("http://{}", listener.local_addr().expect("address"));
        let sent = Arc::new(Mutex::new(Vec::new()));
        let log = sent.clone();
        thread::spawn(move || {
            for client in listener.incoming() {
                let (Ok(client), Ok(server)) = (client, TcpStream::connect(&target)) else {
                    continue;
                };
                let (c2, s2) = (
                    client.try_clone().expect("clone"),
                    server.try_clone().expect("clone"),
                );
                let log = log.clone();
                thread::spawn(move || pipe(client, server, Some(log)));
                thread::spawn(move || pipe(s2, c2, None));
            }
        });
        Recorder { url, sent }
    }

    /// The access key ids that signed requests for `service` (`s3`, `sts`), in order.
    fn signers(&self, service: &str) -> Vec<String> {
        let sent = self.sent.lock().expect("recorder lock");
        let text = String::from_utf8_lossy(&sent);
        text.split("Credential=")
            .skip(1)
            .filter_map(|rest| {
                let scope = rest.split([',', ' ', '\r', '&']).next()?;
                let fields: Vec<&str> = scope.split('/').collect();
                (fields.len() == 5 && fields[3] == service).then(|| fields[0].to_string())
            })
            .collect()
    }

    /// The regions the S3 requests were signed for.
    fn s3_regions(&self) -> Vec<String> {
        let sent = self.sent.lock().expect("recorder lock");
        let text = String::from_utf8_lossy(&sent);
        text.split("Credential=")
            .skip(1)
            .filter_map(|rest| {
                let scope = rest.split([',', ' ', '\r', '&']).next()?;
                let fields: Vec<&str> = scope.split('/').collect();
                (fields.len() == 5 && fields[3] == "s3").then(|| fields[2].to_string())
            })
            .collect()
    }

    fn saw(&self, needle: &str) -> bool {
        let sent = self.sent.lock().expect("recorder lock");
        String::from_utf8_lossy(&sent).contains(needle)
    }
}

fn pipe(mut from: TcpStream, mut to: TcpStream, log: Option<Arc<Mutex<Vec<u8>>>>) {
    let mut buf = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if let Some(log) = &log {
            log.lock()
                .expect("recorder lock")
                .extend_from_slice(&buf[..n]);
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}

/// A test's AWS config and credentials files, and the environment that selects them.
struct Profiles {
    config: PathBuf,
    credentials: PathBuf,
}

impl Profiles {
    fn write(ctx: &Ctx, config: &str, credentials: &str) -> Profiles {
        let dir = ctx.dir("aws");
        let p = Profiles {
            config: dir.join("config"),
            credentials: dir.join("credentials"),
        };
        fs::write(&p.config, config).expect("write config");
        fs::write(&p.credentials, credentials).expect("write credentials");
        p
    }

    /// Runs ferry with profile `profile` of these files, S3 and STS both at `endpoint`.
    fn run(&self, ctx: &Ctx, profile: &str, endpoint: &str, args: &[&str]) -> Run {
        ctx.ferry().run_without(
            args,
            REMOVED,
            &[
                ("AWS_PROFILE", profile),
                ("AWS_CONFIG_FILE", s(&self.config)),
                ("AWS_SHARED_CREDENTIALS_FILE", s(&self.credentials)),
                ("AWS_ENDPOINT_URL", endpoint),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        )
    }
}

/// Pushes a small tree to a new S3 repository and restores it, with `profile`; returns the
/// proxy that saw the requests.
fn push_and_restore(ctx: &Ctx, profiles: &Profiles, profile: &str) -> Recorder {
    let moto = server_url(S3_ENDPOINT_VAR).expect("checked by Ctx::new");
    let recorder = Recorder::start(&moto);
    let src = ctx.dir("src");
    data::random_tree(&src, 14, 3, 64 * 1024);
    let repo = ctx.location(Backend::S3);
    let push = profiles.run(
        ctx,
        profile,
        &recorder.url,
        &["push", s(&src), &repo.url, "--name", "p"],
    );
    push.json();
    let dest = ctx.path("restore");
    let restore = profiles.run(
        ctx,
        profile,
        &recorder.url,
        &["restore", &repo.url, "p", s(&dest)],
    );
    restore.json();
    data::assert_same_tree(&src, &dest);
    assert!(!repo.raw.list("").is_empty(), "nothing reached moto");
    recorder
}

#[test]
fn a_profile_file_alone_pushes_and_restores() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let profiles = Profiles::write(
        &ctx,
        "[profile dev]\nregion = eu-west-3\n",
        "[dev]\naws_access_key_id = AKIDPROFILEDEV\naws_secret_access_key = profile-secret\n",
    );
    let seen = push_and_restore(&ctx, &profiles, "dev");
    let signers = seen.signers("s3");
    assert!(!signers.is_empty(), "no signed S3 request seen");
    assert!(signers.iter().all(|k| k == "AKIDPROFILEDEV"), "{signers:?}");
    // The region comes from the profile (no AWS_REGION in the environment).
    assert!(
        seen.s3_regions().iter().all(|r| r == "eu-west-3"),
        "{:?}",
        seen.s3_regions()
    );
}

#[test]
fn role_arn_with_source_profile_assumes_the_role_through_sts() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let profiles = Profiles::write(
        &ctx,
        "[profile trainer]\nrole_arn = arn:aws:iam::123456789012:role/ferry-writer\n\
         source_profile = base\nregion = us-east-1\n\n[profile base]\nregion = us-east-1\n",
        "[base]\naws_access_key_id = AKIDSOURCEBASE\naws_secret_access_key = base-secret\n",
    );
    let seen = push_and_restore(&ctx, &profiles, "trainer");
    // STS was asked, signed with the source profile's key, to assume the role...
    assert!(seen.saw("Action=AssumeRole"), "no AssumeRole call seen");
    assert!(
        seen.signers("sts").iter().any(|k| k == "AKIDSOURCEBASE"),
        "{:?}",
        seen.signers("sts")
    );
    // ...and every S3 request was signed with the role's temporary key, not the source's.
    let s3 = seen.signers("s3");
    assert!(!s3.is_empty(), "no signed S3 request seen");
    assert!(
        s3.iter()
            .all(|k| k != "AKIDSOURCEBASE" && k.starts_with("ASIA")),
        "{s3:?}"
    );
    assert!(seen.saw("x-amz-security-token"), "no session token sent");
}

/// A `credential_process` script printing `json`, or failing when `json` is `None`.
fn credential_script(ctx: &Ctx, json: Option<&str>) -> PathBuf {
    let path = ctx.path("creds.sh");
    let body = match json {
        Some(json) => format!("#!/bin/sh\ncat <<'EOF'\n{json}\nEOF\n"),
        None => "#!/bin/sh\necho 'token expired: run sso-helper login' >&2\nexit 3\n".into(),
    };
    fs::write(&path, body).expect("write script");
    make_executable(&path);
    path
}

fn make_executable(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn credential_process_supplies_the_keys() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let script = credential_script(
        &ctx,
        Some(
            r#"{"Version": 1, "AccessKeyId": "AKIDFROMPROCESS", "SecretAccessKey": "p-secret", "SessionToken": "p-token", "Expiration": "2099-01-01T00:00:00Z"}"#,
        ),
    );
    let profiles = Profiles::write(
        &ctx,
        &format!(
            "[profile proc]\ncredential_process = {}\nregion = us-east-1\n",
            s(&script)
        ),
        "",
    );
    let seen = push_and_restore(&ctx, &profiles, "proc");
    let s3 = seen.signers("s3");
    assert!(!s3.is_empty(), "no signed S3 request seen");
    assert!(s3.iter().all(|k| k == "AKIDFROMPROCESS"), "{s3:?}");
}

/// Each broken profile fails a read with one line that names the profile and the file, and
/// says what to do; nothing hangs, nothing panics.
#[test]
fn a_broken_profile_is_one_line_naming_the_profile_and_file() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let moto = server_url(S3_ENDPOINT_VAR).expect("checked by Ctx::new");
    let failing = credential_script(&ctx, None);
    let profiles = Profiles::write(
        &ctx,
        &format!(
            "[profile orphan]\nrole_arn = arn:aws:iam::123456789012:role/r\n\
             source_profile = nowhere\n\n\
             [profile broken-process]\ncredential_process = {}\n\n\
             [profile empty]\nregion = us-east-1\n",
            s(&failing)
        ),
        "[other]\naws_access_key_id = AKIDOTHER\naws_secret_access_key = x\n",
    );
    let repo = ctx.location(Backend::S3);
    let config = s(&profiles.config).to_string();
    for (profile, says) in [
        ("missing", "no such profile is defined there"),
        ("orphan", "source_profile \"nowhere\" is not defined"),
        ("broken-process", "token expired"),
        ("empty", "it holds no credential settings"),
    ] {
        let run = profiles.run(&ctx, profile, &moto, &["snapshots", &repo.url]);
        let line = run.error_line();
        for needle in [
            format!("{profile:?}"),
            config.clone(),
            says.to_string(),
            "AWS_ACCESS_KEY_ID".into(),
        ] {
            assert!(
                line.contains(&needle),
                "{profile}: {needle:?} missing: {run}"
            );
        }
        assert!(!line.contains("panicked"), "{run}");
    }
    // An unreadable config file (a directory stands in: the tests may run as root).
    let unreadable = Profiles {
        config: ctx.dir("not-a-file"),
        credentials: profiles.credentials.clone(),
    };
    let run = unreadable.run(&ctx, "dev", &moto, &["snapshots", &repo.url]);
    let line = run.error_line();
    assert!(line.contains("\"dev\""), "{run}");
    let cannot_read = format!("{} cannot be read", s(&unreadable.config));
    assert!(line.contains(&cannot_read), "{run}");
}

/// Without any credentials, the instance metadata service is asked briefly: a metadata
/// endpoint that accepts and never answers costs seconds, not minutes, and the error says
/// what to set.
#[test]
fn without_credentials_the_metadata_service_is_asked_briefly() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let metadata = format!("http://{}", silent.local_addr().expect("address"));
    thread::spawn(move || {
        let mut held = Vec::new();
        for conn in silent.incoming() {
            held.push(conn); // accepted, never answered
        }
    });
    let moto = server_url(S3_ENDPOINT_VAR).expect("checked by Ctx::new");
    let repo = ctx.location(Backend::S3);
    let nowhere = ctx.path("no-aws");
    let started = std::time::Instant::now();
    let run = ctx.ferry().run_without(
        &["snapshots", &repo.url],
        REMOVED,
        &[
            ("AWS_CONFIG_FILE", s(&nowhere.join("config"))),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                s(&nowhere.join("credentials")),
            ),
            ("AWS_EC2_METADATA_SERVICE_ENDPOINT", &metadata),
            ("AWS_ENDPOINT_URL", &moto),
        ],
    );
    let took = started.elapsed();
    let line = run.error_line();
    assert!(line.contains("no AWS credentials found"), "{run}");
    assert!(line.contains("AWS_PROFILE"), "{run}");
    assert!(
        took < std::time::Duration::from_secs(20),
        "took {took:?}: {run}"
    );
    // With the metadata service switched off, ferry refuses at once, before any request.
    let started = std::time::Instant::now();
    let run = ctx.ferry().run_without(
        &["snapshots", &repo.url],
        REMOVED,
        &[
            ("AWS_CONFIG_FILE", s(&nowhere.join("config"))),
            (
                "AWS_SHARED_CREDENTIALS_FILE",
                s(&nowhere.join("credentials")),
            ),
            ("AWS_EC2_METADATA_DISABLED", "true"),
            ("AWS_ENDPOINT_URL", &moto),
        ],
    );
    assert!(
        run.error_line().contains("no AWS credentials found"),
        "{run}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(5),
        "{run}"
    );
}

/// `AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY` win: a broken profile named beside them is
/// not consulted.
#[test]
fn explicit_keys_win_over_the_profile() {
    let Some(ctx) = Ctx::new(&[Backend::S3]) else {
        return;
    };
    let profiles = Profiles::write(
        &ctx,
        "[profile dev]\nrole_arn = arn:aws:iam::123456789012:role/r\nsource_profile = nowhere\n",
        "",
    );
    let moto = server_url(S3_ENDPOINT_VAR).expect("checked by Ctx::new");
    let recorder = Recorder::start(&moto);
    let src = ctx.dir("src");
    data::random_tree(&src, 15, 2, 16 * 1024);
    let repo = ctx.location(Backend::S3);
    ctx.ferry()
        .run_without(
            &["push", s(&src), &repo.url, "--name", "k"],
            &["AWS_ENDPOINT"],
            &[
                ("AWS_ACCESS_KEY_ID", "AKIDEXPLICIT"),
                ("AWS_SECRET_ACCESS_KEY", "explicit-secret"),
                ("AWS_PROFILE", "dev"),
                ("AWS_CONFIG_FILE", s(&profiles.config)),
                ("AWS_SHARED_CREDENTIALS_FILE", s(&profiles.credentials)),
                ("AWS_ENDPOINT_URL", &recorder.url),
                ("AWS_EC2_METADATA_DISABLED", "true"),
            ],
        )
        .json();
    let s3 = recorder.signers("s3");
    assert!(!s3.is_empty(), "no signed S3 request seen");
    assert!(s3.iter().all(|k| k == "AKIDEXPLICIT"), "{s3:?}");
    assert!(recorder.signers("sts").is_empty(), "STS was asked");
}
