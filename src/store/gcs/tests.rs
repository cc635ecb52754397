use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};

use super::*;

/// An emulator's service account, as object_store's own tests write it.
const EMULATOR_KEY: &str = r#"{"private_key": "", "private_key_id": "", "client_email": "", "disable_oauth": true, "gcs_base_url": "http://127.0.0.1:4443"}"#;

fn settings(builder: GoogleCloudStorageBuilder) -> GcsSettings {
    GcsSettings::from_builder(
        builder.with_bucket_name("ferry-test"),
        "/runs/a/",
        &StoreOptions::default(),
    )
}

#[test]
fn the_endpoint_comes_from_the_service_account_or_defaults_to_google() {
    let key = GoogleCloudStorageBuilder::new()
        .with_config(GoogleConfigKey::ServiceAccountKey, EMULATOR_KEY);
    assert_eq!(settings(key).endpoint(), "http://127.0.0.1:4443");

    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sa.json");
    std::fs::write(&file, EMULATOR_KEY.replace("4443", "4510")).unwrap();
    let path = GoogleCloudStorageBuilder::new().with_service_account_path(file.to_str().unwrap());
    assert_eq!(settings(path).endpoint(), "http://127.0.0.1:4510");

    let plain = GoogleCloudStorageBuilder::new().with_bearer_token("t");
    assert_eq!(settings(plain).endpoint(), DEFAULT_ENDPOINT);
}

#[test]
fn an_emulator_account_opens_a_store_without_a_request() {
    let key = GoogleCloudStorageBuilder::new()
        .with_config(GoogleConfigKey::ServiceAccountKey, EMULATOR_KEY);
    let store = settings(key).into_store().unwrap();
    assert_eq!(store.url().to_string(), "gs://ferry-test/runs/a");
    assert!(store.delta().unwrap().is_none(), "GCS has no native delta");
}

#[test]
fn an_unreadable_account_file_names_the_variables() {
    let missing =
        GoogleCloudStorageBuilder::new().with_service_account_path("/nonexistent/sa.json");
    let err = settings(missing).into_store().unwrap_err().to_string();
    assert!(
        err.starts_with("cannot open gs://ferry-test/runs/a: "),
        "{err}"
    );
    assert!(err.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{err}");
}

#[test]
fn hints_say_what_to_set() {
    let err = object_store::Error::Generic {
        store: "GCS",
        source: "x".into(),
    };
    let creds = hint(
        "b",
        DEFAULT_ENDPOINT,
        &err,
        "Error getting token: error sending request for url (http://metadata.google.internal/computeMetadata/v1/…)",
    )
    .unwrap();
    assert!(creds.contains("GOOGLE_APPLICATION_CREDENTIALS"), "{creds}");
    let bucket = hint("b", DEFAULT_ENDPOINT, &err, "HTTP 404: NoSuchBucket").unwrap();
    assert!(bucket.contains("bucket \"b\" does not exist"), "{bucket}");
    let down = hint(
        "b",
        "http://127.0.0.1:9",
        &err,
        "error sending request: Connection refused",
    )
    .unwrap();
    assert!(down.contains("cannot reach http://127.0.0.1:9"), "{down}");
}
