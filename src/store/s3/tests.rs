//! Unit tests of the S3 native client: plan checks, copy sources, endpoints.

use std::ops::Range;

use super::delta::sdk_endpoint;
use super::write::copy_source;
use crate::store::delta::{Limits, Part, PlanError, WriteRequest};

const MIB: u64 = 1 << 20;
const HASH: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";

fn send(r: Range<u64>) -> Part {
    Part::Send {
        block: [0; 32],
        new: r,
    }
}

fn keep(r: Range<u64>) -> Part {
    Part::Keep {
        block: [0; 32],
        old: r,
    }
}

fn check(parts: &[Part], base: Option<&str>) -> Result<(), PlanError> {
    let size = parts
        .iter()
        .map(|p| match p {
            Part::Keep { old: r, .. } | Part::Send { new: r, .. } => r.end.saturating_sub(r.start),
        })
        .fold(0u64, u64::saturating_add);
    let req = WriteRequest {
        key: "ckpt/model.bin",
        parts,
        size,
        base_etag: base,
        blake3: HASH,
    };
    req.check(&Limits::S3)
}

#[test]
fn accepts_a_valid_plan() {
    let parts = [
        keep(0..6 * MIB),
        send(6 * MIB..11 * MIB),
        keep(11 * MIB..12 * MIB),
    ];
    assert_eq!(check(&parts, Some("abc")), Ok(()));
    assert_eq!(check(&[send(0..3)], None), Ok(()));
    assert_eq!(check(&[], None), Ok(()));
}

#[test]
fn refuses_small_parts_but_the_last() {
    let err = check(&[send(0..MIB), send(MIB..7 * MIB)], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("part 1 of 2"), "{err}");
    assert!(err.contains("at least 5242880"), "{err}");
}

#[test]
fn refuses_parts_over_5_gib() {
    let err = check(&[send(0..(5 << 30) + 1)], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("more than"), "{err}");
}

#[test]
fn refuses_too_many_parts() {
    let parts: Vec<Part> = (0..10_001u64)
        .map(|i| send(i * 5 * MIB..(i + 1) * 5 * MIB))
        .collect();
    let err = check(&parts, None).unwrap_err().to_string();
    assert!(err.contains("10001 parts"), "{err}");
}

#[test]
fn refuses_keep_without_base_etag() {
    let err = check(&[keep(0..6 * MIB), send(0..1)], None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no base etag"), "{err}");
}

#[test]
fn refuses_bad_ranges_without_panicking() {
    #[allow(clippy::reversed_empty_ranges)]
    let reversed = send(10..5);
    assert!(check(&[reversed], None)
        .unwrap_err()
        .to_string()
        .contains("reversed"));
    assert!(check(&[send(5..5)], None)
        .unwrap_err()
        .to_string()
        .contains("empty"));
    let huge = [send(0..u64::MAX), send(0..u64::MAX)];
    assert!(check(&huge, None).is_err());
}

#[test]
fn refuses_a_size_that_does_not_match() {
    let parts = [send(0..10)];
    let req = WriteRequest {
        key: "k",
        parts: &parts,
        size: 11,
        base_etag: None,
        blake3: HASH,
    };
    let err = req.check(&Limits::S3).unwrap_err().to_string();
    assert!(err.contains("add up to 10 bytes"), "{err}");
}

#[test]
fn refuses_header_unsafe_values() {
    let parts = [send(0..10)];
    let mut req = WriteRequest {
        key: "k",
        parts: &parts,
        size: 10,
        base_etag: None,
        blake3: "not hex\n",
    };
    assert!(req.check(&Limits::S3).is_err());
    req.blake3 = HASH;
    req.base_etag = Some("\"quoted\"");
    assert!(req.check(&Limits::S3).is_err());
}

#[test]
fn copy_source_encodes_the_key() {
    assert_eq!(copy_source("b", "a/b c+d.bin"), "b/a/b%20c%2Bd.bin");
}

#[test]
fn virtual_hosted_endpoint_loses_the_bucket() {
    assert_eq!(
        sdk_endpoint("https://bkt.s3.example.com", "bkt", true).unwrap(),
        "https://s3.example.com"
    );
    assert_eq!(
        sdk_endpoint("http://127.0.0.1:5000/", "bkt", false).unwrap(),
        "http://127.0.0.1:5000"
    );
    assert!(sdk_endpoint("not a url", "bkt", false).is_err());
}
