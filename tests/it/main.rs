//! The one integration test binary: every scenario drives the real `ferry` binary, and most run
//! once per backend — a `file://` repository, S3 (moto), Azure Blob (Azurite) and GCS
//! (fake-gcs-server behind `scripts/gcs_server.py`).
//!
//! Server-backed tests read `FERRY_TEST_S3_ENDPOINT` / `FERRY_TEST_AZURITE_URL` /
//! `FERRY_TEST_GCS_URL`; without them
//! they are skipped, unless `FERRY_REQUIRE_SERVERS=1` (set by `scripts/test.sh`) makes that a
//! failure. Run a single backend with e.g. `cargo test --test it -- ::s3`; set
//! `FERRY_TEST_KEEP=1` to keep a failing test's temp dir (sources, restores, file repos).

/// For each scenario `fn name(Backend)` in the invoking module, a module `name` with one
/// `#[test]` per backend: `name::file`, `name::s3`, `name::azure`, `name::gcs`.
macro_rules! per_backend {
    ($($scenario:ident),* $(,)?) => {$(
        mod $scenario {
            use crate::harness::Backend;

            #[test]
            fn file() {
                super::$scenario(Backend::File);
            }

            #[test]
            fn s3() {
                super::$scenario(Backend::S3);
            }

            #[test]
            fn azure() {
                super::$scenario(Backend::Azure);
            }

            #[test]
            fn gcs() {
                super::$scenario(Backend::Gcs);
            }
        }
    )*};
}

mod aws_profiles;
mod badinput;
mod base_cache;
mod browser;
mod bwlimit;
mod changes;
mod checks;
mod concurrent;
mod daemon;
mod daemon_deltas;
mod damage;
mod data;
mod deltas;
mod deltas_depth;
mod deltas_repair;
mod dryrun;
mod edges;
mod encrypted;
mod errors;
mod faults;
mod gc;
mod gcs;
mod harness;
mod hostile;
mod http;
mod keys;
mod mirror;
mod names;
mod native_azure;
mod native_s3;
mod proxy;
mod pull;
mod pull_job;
mod raw;
mod repair;
mod replicate;
mod restoring;
mod retries;
mod roundtrip;
mod run;
mod secrets;
mod service;
mod settling;
mod shards;
mod torture;
