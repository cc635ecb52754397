//! Errors users meet: each exits non-zero with one line on stderr that names what was wrong.

use crate::data;
use crate::harness::{s, Backend, Ctx};

per_backend!(foreign_location_is_refused, unknown_name_is_named);

/// A location that holds objects ferry did not write is not silently turned into a repository.
pub fn foreign_location_is_refused(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let location = ctx.location(backend);
    location
        .raw
        .put("notes/readme.txt", b"somebody else's data\n");
    location.raw.put("data.csv", b"a,b\n1,2\n");
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 8);

    let push = ctx
        .ferry()
        .run(&["push", s(&src), &location.url, "--name", "ckpt"]);
    let error = push.error_line();
    let name = location
        .url
        .rsplit('/')
        .next()
        .expect("url has a last segment");
    assert!(
        error.contains(name),
        "the error does not name the location {}: {push}",
        location.url
    );
    let keys: Vec<String> = location.raw.list("").into_iter().map(|o| o.key).collect();
    assert_eq!(
        keys,
        ["data.csv", "notes/readme.txt"],
        "a refused push wrote into the location"
    );
}

/// Restoring or listing a name the repository does not have names it.
pub fn unknown_name_is_named(backend: Backend) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let repo = ctx.location(backend);
    let src = ctx.dir("src");
    data::checkpoint_tree(&src, 9);
    let ferry = ctx.ferry();
    ferry.json(&["push", s(&src), &repo.url, "--name", "ckpt"]);

    let dest = ctx.path("restore");
    let restore = ferry.run(&["restore", &repo.url, "no-such-ckpt", s(&dest)]);
    assert!(
        restore.error_line().contains("no-such-ckpt"),
        "the error does not name the missing name: {restore}"
    );
    let ls = ferry.run(&["ls", &repo.url, "no-such-ckpt"]);
    assert!(
        ls.error_line().contains("no-such-ckpt"),
        "the error does not name the missing name: {ls}"
    );
}

#[test]
fn unknown_url_scheme_is_named() {
    let Some(ctx) = Ctx::new(&[]) else {
        return;
    };
    let src = ctx.dir("src");
    data::write_file(&src, "a.txt", b"a");
    let ferry = ctx.ferry();
    for args in [
        vec!["push", s(&src), "ftp://x", "--name", "ckpt"],
        vec!["snapshots", "ftp://x"],
    ] {
        let run = ferry.run(&args);
        assert!(
            run.error_line().contains("ftp://x"),
            "the error does not name the URL: {run}"
        );
    }
}

#[test]
fn missing_bucket_is_named() {
    missing_bucket_or_container(
        Backend::S3,
        "s3://no-such-bucket-xyz/p",
        "no-such-bucket-xyz",
    );
}

#[test]
fn missing_container_is_named() {
    missing_bucket_or_container(
        Backend::Azure,
        "az://no-such-container/p",
        "no-such-container",
    );
}

fn missing_bucket_or_container(backend: Backend, url: &str, name: &str) {
    let Some(ctx) = Ctx::new(&[backend]) else {
        return;
    };
    let src = ctx.dir("src");
    data::write_file(&src, "a.txt", b"a");
    let ferry = ctx.ferry();
    for args in [
        vec!["push", s(&src), url, "--name", "ckpt"],
        vec!["snapshots", url],
    ] {
        let run = ferry.run(&args);
        assert!(
            run.error_line().contains(name),
            "the error does not name {name}: {run}"
        );
    }
}
