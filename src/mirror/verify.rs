//! `ferry verify --mirror`: every source file's BLAKE3 against the destination object's, from
//! its `ferry_blake3` metadata (S3, Azure) or its bytes (elsewhere, or with `--read-data`).

use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use serde::Serialize;

use crate::mirror::parts::hash_object;
use crate::mirror::{dest_holds, native_err, FILES_IN_FLIGHT};
use crate::ops::source::{Source, SourceEntry, SourceFile};
use crate::ops::OpError;
use crate::store::delta::{DeltaStore, RemoteObject};
use crate::store::Store;

/// `ferry verify --mirror`: one object that does not match its source.
#[derive(Debug, Clone, Serialize)]
pub struct Mismatch {
    /// The file's path in the source.
    pub path: String,
    /// What does not match.
    pub problem: String,
}

/// What `verify --mirror` found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyMirrorReport {
    /// The source's URL.
    pub source: String,
    /// The destination's URL.
    pub dest: String,
    /// Files in the source.
    pub files: u64,
    /// Objects that match their source file.
    pub matched: u64,
    /// One entry per object that does not.
    pub mismatches: Vec<Mismatch>,
    /// Whether every file matched.
    pub ok: bool,
}

/// Compares every source file's BLAKE3 with the destination object's: the `ferry_blake3`
/// metadata on S3 and Azure (with the size), the object's bytes hashed elsewhere.
///
/// With `read_data`, every object's bytes are read back and hashed as well, so an object
/// whose metadata is right but whose bytes are not is found too.
pub async fn verify_mirror(
    source: &Source,
    dest: &Store,
    native: Option<Arc<dyn DeltaStore>>,
    read_data: bool,
) -> Result<VerifyMirrorReport, OpError> {
    let mut report = VerifyMirrorReport {
        source: source.key(),
        dest: dest.url().to_string(),
        ..Default::default()
    };
    let files: Vec<SourceFile> = source
        .list()
        .await?
        .into_iter()
        .filter_map(|e| match e {
            SourceEntry::File(f) => Some(f),
            _ => None,
        })
        .collect();
    report.files = files.len() as u64;
    let results = futures::stream::iter(files.into_iter().map(|f| {
        let native = native.clone();
        async move {
            let problem = check_file(source, dest, native.as_deref(), &f, read_data).await?;
            Ok::<_, OpError>((f.rel, problem))
        }
    }))
    .buffer_unordered(FILES_IN_FLIGHT)
    .try_collect::<Vec<_>>()
    .await?;
    for (path, problem) in results {
        match problem {
            None => report.matched += 1,
            Some(problem) => report.mismatches.push(Mismatch { path, problem }),
        }
    }
    report.mismatches.sort_by(|a, b| a.path.cmp(&b.path));
    report.ok = report.mismatches.is_empty();
    Ok(report)
}

/// What is wrong with `f`'s object at the destination, if anything.
async fn check_file(
    source: &Source,
    dest: &Store,
    native: Option<&dyn DeltaStore>,
    f: &SourceFile,
    read_data: bool,
) -> Result<Option<String>, OpError> {
    if let Err(e) = dest_holds(dest, &f.rel) {
        return Ok(Some(e.to_string()));
    }
    let want = hash_source(source, f).await?;
    let Some(n) = native else {
        return Ok(match hash_object(dest, &f.rel).await? {
            None => Some("missing at the destination".to_string()),
            Some(have) if have != want => Some(format!("BLAKE3 {have}, source {want}")),
            Some(_) => None,
        });
    };
    Ok(match n.probe(&f.rel).await.map_err(native_err)? {
        None => Some("missing at the destination".to_string()),
        Some(RemoteObject { size, .. }) if size != f.size => {
            Some(format!("size {size}, source {}", f.size))
        }
        Some(RemoteObject { blake3: None, .. }) => {
            Some("no ferry_blake3 metadata (not written by ferry mirror)".into())
        }
        Some(RemoteObject {
            blake3: Some(have), ..
        }) if have != want => Some(format!("BLAKE3 {have}, source {want}")),
        Some(_) if read_data => match hash_object(dest, &f.rel).await? {
            None => Some("missing at the destination".to_string()),
            Some(have) if have != want => Some(format!(
                "its bytes hash to BLAKE3 {have} (its metadata says {want}), source {want}"
            )),
            Some(_) => None,
        },
        Some(_) => None,
    })
}

/// The BLAKE3 (hex) of a source file's bytes, read on a blocking thread.
async fn hash_source(source: &Source, f: &SourceFile) -> Result<String, OpError> {
    let source = source.clone();
    let f = f.clone();
    let rt = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let mut reader = source.reader(&f, &rt)?;
        let mut h = blake3::Hasher::new();
        std::io::copy(&mut reader, &mut h).map_err(|e| OpError::io(source.describe(&f.rel), e))?;
        Ok(h.finalize().to_hex().to_string())
    })
    .await
    .map_err(OpError::join)?
}
