//! GCS specifics: create-only writes (refs) decided by the server, and the errors a user
//! meets first (no credentials, a bad bucket name).

use std::sync::Arc;

use bytes::Bytes;
use ferry::store::gcs::GcsSettings;
use ferry::store::{Store, StoreOptions};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::path::Path;

use crate::data;
use crate::harness::{gcs_account_key, s, server_url, Backend, Ctx, GCS_URL_VAR};
use crate::run::Ferry;

/// The store at `prefix` in the tests' bucket, built from an explicit configuration (this
/// process's environment has no `GOOGLE_*` variables).
fn store(url: &str, prefix: &str) -> Store {
    let builder = GoogleCloudStorageBuilder::new()
        .with_bucket_name("ferry-test")
        .with_config(GoogleConfigKey::ServiceAccountKey, gcs_account_key(url));
    GcsSettings::from_builder(builder, prefix, &StoreOptions::default())
        .into_store()
        .expect("open the GCS store")
}

/// Refs rely on create-only writes (`ifGenerationMatch=0`): of racing creates of one key,
/// exactly one succeeds and its bytes are what is stored. Were the precondition not sent
/// (or not decided atomically), several would "win" and all but one ref would be lost.
#[test]
fn racing_creates_of_one_key_have_one_winner() {
    let Some(_ctx) = Ctx::new(&[Backend::Gcs]) else {
        return;
    };
    let url = server_url(GCS_URL_VAR).expect("checked by Ctx::new");
    let prefix = format!("race-{}", std::process::id());
    let store = Arc::new(store(&url, &prefix));
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        for round in 0..10 {
            let key = Path::from(format!("refs/r{round}"));
            let writers = (0..6).map(|w| {
                let (store, key) = (store.clone(), key.clone());
                tokio::spawn(async move {
                    let data = Bytes::from(format!("writer {w}"));
                    (w, store.put_new(&key, data).await.expect("put_new"))
                })
            });
            let results = futures::future::join_all(writers).await;
            let winners: Vec<usize> = results
                .into_iter()
                .map(|r| r.expect("join"))
                .filter_map(|(w, won)| won.then_some(w))
                .collect();
            assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
            let stored = store.get(&key).await.expect("read the ref");
            assert_eq!(stored, format!("writer {}", winners[0]).as_bytes());
            // A later create of the same key loses too.
            assert!(!store.put_new(&key, Bytes::from("late")).await.unwrap());
        }
        for round in 0..10 {
            store
                .delete(&Path::from(format!("refs/r{round}")))
                .await
                .expect("clean up");
        }
    });
}

/// A bucket that does not exist is named, with what to do.
#[test]
fn a_missing_bucket_is_named() {
    let Some(ctx) = Ctx::new(&[Backend::Gcs]) else {
        return;
    };
    let url = "gs://no-such-bucket-xyz/p";
    let src = ctx.dir("src");
    data::write_file(&src, "a.txt", b"a");
    let ferry = ctx.ferry();
    for args in [
        vec!["push", s(&src), url, "--name", "ckpt"],
        vec!["snapshots", url],
    ] {
        let run = ferry.run(&args);
        assert!(
            run.error_line()
                .contains("bucket \"no-such-bucket-xyz\" does not exist"),
            "{run}"
        );
    }
}

/// Without credentials (and off Google Cloud) ferry refuses at once, naming what to set,
/// rather than asking a metadata server that is not there for minutes.
#[test]
fn missing_credentials_name_the_variable_to_set() {
    let home = tempfile::tempdir().expect("temp dir");
    let out = Ferry::bare_command(&["snapshots", "gs://ferry-test/nowhere"])
        .env_remove("GOOGLE_SERVICE_ACCOUNT_KEY")
        .env("HOME", home.path())
        .output()
        .expect("run ferry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no Google credentials found")
            && stderr.contains("GOOGLE_APPLICATION_CREDENTIALS"),
        "{stderr}"
    );
}

/// A bucket name GCS cannot have is refused before any request, with the rule.
#[test]
fn a_bad_bucket_name_is_refused_with_the_rule() {
    let out = Ferry::bare_command(&["snapshots", "gs://Bad_Bucket/x"])
        .output()
        .expect("run ferry");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("GCS bucket names use"), "{stderr}");
}
