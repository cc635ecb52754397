//! The operation behind one run: a push (fan-out, then each target alone if it fails; per-file
//! settling's plan when the item has one), a mirror, a replication, or a pull
//! ([`super::pull`]), with one outcome per target.

use super::scan::{self, Fingerprint};
use super::settle::{self, Plan};
use super::state::Job;
use super::Shared;
use crate::app::RefName;
use crate::config::{JobKind, Layout};
use crate::ops::push::PushOptions;
use crate::ops::shard::PushMode;
use crate::ops::OpError;
use crate::progress::Reporter;
use crate::repo::RepoError;
use crate::store::{StoreError, StoreUrl};

/// What one target got from a run.
#[derive(Debug, Clone, Default)]
pub(super) struct Outcome {
    pub(super) snapshot: Option<String>,
    pub(super) unchanged: bool,
    pub(super) bytes_logical: u64,
    pub(super) bytes_sent: u64,
    pub(super) bytes_new: u64,
    /// Push runs: new chunks stored as element deltas (the push's figure, for each target
    /// that got the snapshot); replicate runs: delta frames copied as they are.
    pub(super) chunks_delta: u64,
    /// Push runs: the delta frames' full frames' size minus theirs (what a push without
    /// deltas would have stored more); replicate runs: the replication's estimate
    /// (`ReplicateReport::bytes_saved_by_deltas`).
    pub(super) bytes_saved_by_deltas: u64,
    /// The source changed while it was read: push it again once it is complete.
    pub(super) changed: bool,
    /// Pull jobs: the version, bytes read vs reused, the hooks.
    pub(super) pull: Option<super::pull::PullRun>,
}

/// The operation for one item and some targets: one result per target.
pub(super) async fn execute(
    shared: &Shared,
    job: &Job,
    item: &str,
    targets: &[usize],
    progress: &Reporter,
) -> Vec<(usize, Result<Outcome, OpError>)> {
    match &job.config.kind {
        JobKind::Push {
            source,
            reference,
            layout,
            ..
        } => {
            let src = match (layout, source) {
                (Layout::Steps, StoreUrl::Local(root)) => StoreUrl::Local(root.join(item)),
                _ => source.clone(),
            };
            let (before, plan) = job.with(|l| {
                let p = targets.first().and_then(|t| l.targets[*t].pending(item));
                (
                    p.and_then(|p| p.fingerprint.clone()),
                    p.and_then(|p| p.plan.clone()),
                )
            });
            let seen = Seen {
                fingerprint: before.as_ref(),
                plan: plan.as_deref(),
                progress,
            };
            let res = push(shared, job, &src, reference, targets, seen).await;
            match res {
                Err(e) if targets.len() > 1 => {
                    tracing::warn!(job = %job.config.name, item, error = %e, "fan-out push failed; trying each target alone");
                    let mut out = Vec::new();
                    for &t in targets {
                        let r = push(shared, job, &src, reference, &[t], seen).await;
                        out.push((t, r.map(|mut v| v.remove(0).1)));
                    }
                    out
                }
                Err(e) => vec![(targets[0], Err(e))],
                Ok(v) => v.into_iter().map(|(t, o)| (t, Ok(o))).collect(),
            }
        }
        JobKind::Mirror { source, delete, .. } => {
            mirror_targets(shared, job, source, *delete, targets, progress).await
        }
        JobKind::Pull(pull) => {
            vec![(
                targets[0],
                super::pull::execute(shared, job, pull, item, progress).await,
            )]
        }
        JobKind::Replicate { from, refs } => {
            let mut out = Vec::new();
            for &t in targets {
                let r = replicate(shared, &from.url, &job.target(t).url, refs, progress).await;
                let r = match r {
                    Ok(r) => Ok(Outcome {
                        snapshot: None,
                        unchanged: r.snapshots_copied == 0,
                        bytes_logical: r.upload.bytes_new_logical,
                        bytes_sent: r.upload.bytes_uploaded,
                        bytes_new: r.upload.bytes_new_logical,
                        chunks_delta: r.chunks_delta,
                        bytes_saved_by_deltas: r.bytes_saved_by_deltas,
                        ..Default::default()
                    }),
                    // Nothing to replicate yet: the source repository has not been created.
                    Err(e) if source_missing(&e, &from.url) => {
                        tracing::info!(job = %job.config.name, from = %from.url, "source repository does not exist yet; nothing to replicate");
                        Ok(Outcome {
                            unchanged: true,
                            ..Default::default()
                        })
                    }
                    Err(e) => Err(e),
                };
                out.push((t, r));
            }
            out
        }
    }
}

/// `ferry mirror` to each target in turn.
async fn mirror_targets(
    shared: &Shared,
    job: &Job,
    source: &StoreUrl,
    delete: bool,
    targets: &[usize],
    progress: &Reporter,
) -> Vec<(usize, Result<Outcome, OpError>)> {
    let opts = crate::mirror::MirrorOptions {
        delete,
        dry_run: false,
        rehash: false,
        allow_encrypted_source: false,
    };
    let mut out = Vec::new();
    for &t in targets {
        let r = shared
            .app
            .mirror(source, &job.target(t).url, opts, progress)
            .await
            .map(|r| Outcome {
                snapshot: None,
                unchanged: r.bytes_written == 0 && r.deleted == 0,
                bytes_logical: r.bytes_written,
                bytes_sent: r.bytes_sent,
                bytes_new: r.bytes_sent,
                ..Default::default()
            });
        out.push((t, r));
    }
    out
}

/// One replication; the config's ref names were checked when it was loaded.
async fn replicate(
    shared: &Shared,
    from: &StoreUrl,
    to: &StoreUrl,
    refs: &[String],
    progress: &Reporter,
) -> Result<crate::ops::replicate::ReplicateReport, OpError> {
    let refs = refs
        .iter()
        .map(|r| RefName::parse(r))
        .collect::<Result<Vec<_>, _>>()?;
    shared.app.replicate(from, to, &refs, None, progress).await
}

pub(super) fn source_missing(e: &OpError, from: &StoreUrl) -> bool {
    let from = from.to_string();
    match e {
        OpError::Repo(RepoError::NotARepo { url }) => *url == from,
        OpError::Repo(RepoError::Store(StoreError::NoSuchFolder { url }))
        | OpError::Store(StoreError::NoSuchFolder { url }) => *url == from,
        _ => false,
    }
}

/// What discovery saw of the source when it queued the item.
#[derive(Clone, Copy)]
struct Seen<'a> {
    fingerprint: Option<&'a Fingerprint>,
    /// Per-file settling: the files to read and those that keep the head's version.
    plan: Option<&'a Plan>,
    /// Where the push's byte counts go (the run's counter).
    progress: &'a Reporter,
}

async fn push(
    shared: &Shared,
    job: &Job,
    src: &StoreUrl,
    reference: &str,
    targets: &[usize],
    seen: Seen<'_>,
) -> Result<Vec<(usize, Outcome)>, OpError> {
    let urls: Vec<StoreUrl> = targets.iter().map(|t| job.target(*t).url.clone()).collect();
    let name = RefName::parse(reference)?;
    let merge = matches!(&job.config.kind, JobKind::Push { merge: true, .. });
    let mode = match seen.plan {
        Some(plan) => PushMode::Settled {
            ready: plan.ready.keys().cloned().collect(),
            held: plan.held.clone(),
            merge,
        },
        None if merge => PushMode::Merge,
        None => PushMode::Replace,
    };
    let report = shared
        .app
        .push(
            src,
            &urls,
            &name,
            &mode,
            PushOptions::default(),
            seen.progress,
        )
        .await?;
    // A checkpoint that changed while it was read is pushed again once it settles.
    let changed = match (src, seen.fingerprint, seen.plan) {
        (StoreUrl::Local(path), _, Some(plan)) => {
            let (path, plan) = (path.clone(), plan.clone());
            let same = tokio::task::spawn_blocking(move || settle::unchanged_since(&plan, &path))
                .await
                .map_err(OpError::join)?;
            !same.unwrap_or(false)
        }
        (StoreUrl::Local(path), Some(before), None) => {
            let path = path.clone();
            let after = tokio::task::spawn_blocking(move || scan::fingerprint(&path))
                .await
                .map_err(OpError::join)?
                .ok();
            after.as_ref() != Some(before)
        }
        _ => false,
    };
    if changed {
        tracing::warn!(job = %job.config.name, source = %src, "the source changed during the push");
    }
    Ok(targets
        .iter()
        .zip(report.targets)
        .map(|(t, r)| {
            let logical = if r.unchanged { 0 } else { report.bytes_total };
            // An unchanged target got no frames: nothing was stored, so nothing was saved.
            let (chunks_delta, saved) = if r.unchanged {
                (0, 0)
            } else {
                (report.chunks_delta, report.bytes_saved_by_deltas)
            };
            (
                *t,
                Outcome {
                    snapshot: Some(r.snapshot.to_hex()),
                    unchanged: r.unchanged,
                    bytes_logical: logical,
                    bytes_sent: r.stats.bytes_uploaded,
                    bytes_new: r.stats.bytes_new_logical,
                    chunks_delta,
                    bytes_saved_by_deltas: saved,
                    changed,
                    pull: None,
                },
            )
        })
        .collect())
}
