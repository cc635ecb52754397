//! Reports as text for people: one function per command's report (`--json` prints the
//! reports themselves). Used by the CLI, `ferry status` and the demo; the operations and the
//! application layer never format text for people.

use crate::app::{CommitReport, InitReport};
use crate::ops::egress::{DryRun, PriceBasis};
use crate::ops::push::PushReport;
use crate::ops::replicate::ReplicateReport;
use crate::ops::restore::RestoreReport;
use crate::ops::shard::ShardReport;
use crate::ops::verify::VerifyReport;

pub use crate::listing::{render_ls as ls, render_snapshots as snapshots};
pub use crate::ops::repair::render as repair;

/// `ferry init`.
pub fn init(r: &InitReport) -> String {
    let encrypted = match r.key_ids.as_slice() {
        [] => String::new(),
        ids => format!(
            ", encrypted with {}; opens with key {}",
            r.cipher.unwrap_or("?"),
            ids.join(", key ")
        ),
    };
    format!(
        "initialized {} (chunks ~{}, packs {}{encrypted})",
        r.repo,
        bytes(r.chunk_avg as u64),
        bytes(r.pack_size)
    )
}

/// `ferry key rotate`.
pub fn key_rotated(r: &crate::repo::Rotated) -> String {
    let retired = match r.retired.as_slice() {
        [] => "no other key was there".to_string(),
        ids => format!("retired key {}", ids.join(", key ")),
    };
    format!("{} now opens with key {} only; {retired}", r.repo, r.key_id)
}

fn shard_line(r: &ShardReport) -> String {
    match (&r.committed, &r.shard) {
        (Some(id), _) => format!(
            "run {:?} committed as snapshot {}",
            r.run,
            &id.to_hex()[..12]
        ),
        (None, Some(s)) => format!(
            "shard {}/{} of run {:?} done; waiting for shards {:?}",
            s.index, s.count, r.run, r.missing
        ),
        (None, None) => format!("run {:?} waiting for shards {:?}", r.run, r.missing),
    }
}

/// `ferry commit`.
pub fn commit(r: &CommitReport) -> String {
    let mut s = format!("commit {:?}", r.name);
    for t in &r.targets {
        s.push_str(&format!("\n  {}: {}", t.repo, shard_line(&t.report)));
    }
    s
}

/// `ferry mirror`: each action (the first 50 of a real run), then the summary.
pub fn mirror(r: &crate::mirror::MirrorReport) -> String {
    use crate::mirror::Action;
    /// Beyond this many, a real run prints the summary only (a dry run prints every action).
    const LISTED: usize = 50;
    let mut s = String::new();
    let listed = if r.dry_run { r.actions.len() } else { LISTED };
    for a in r.actions.iter().take(listed) {
        let verb = match a.action {
            Action::Create => "create",
            Action::Update => "update",
            Action::Replace => "replace",
            Action::Adopt => "adopt",
            Action::Delete => "delete",
        };
        s.push_str(&format!(
            "{}{verb:<7} {} ({}, {} sent)",
            if r.dry_run { "would " } else { "" },
            a.path,
            bytes(a.size),
            bytes(a.sent)
        ));
        if let Some(n) = &a.note {
            s.push_str(&format!(": {n}"));
        }
        s.push('\n');
    }
    if r.actions.len() > listed {
        s.push_str(&format!(
            "… and {} more (--json lists every object, --dry-run prints them)\n",
            r.actions.len() - listed
        ));
    }
    s.push_str(&format!(
        "{}mirrored {} → {}: {} files, {} unchanged, {} created, {} updated, {} replaced, {} adopted, {} deleted; {} written, {} sent, {} reused",
        if r.dry_run { "dry run: " } else { "" },
        r.source,
        r.dest,
        r.files,
        r.unchanged,
        r.created,
        r.updated,
        r.replaced,
        r.adopted,
        r.deleted,
        bytes(r.bytes_written),
        bytes(r.bytes_sent),
        bytes(r.bytes_kept)
    ));
    s
}

/// `ferry verify --mirror`.
pub fn verify_mirror(r: &crate::mirror::VerifyMirrorReport) -> String {
    let mut s = format!(
        "{} {} → {}: {} of {} files match",
        if r.ok { "ok" } else { "MISMATCH in" },
        r.source,
        r.dest,
        r.matched,
        r.files
    );
    for m in &r.mismatches {
        s.push_str(&format!("\n  {}: {}", m.path, m.problem));
    }
    s
}

/// `ferry gc`.
pub fn gc(r: &crate::ops::gc::GcReport) -> String {
    format!(
        "{}gc {}: {} live snapshots; {} snapshots deleted; of {}: {} marked for deletion, {} unmarked, {} deleted ({}), {} rewritten ({} chunks), {} orphans deleted; {} committed sharded runs pruned; {:.1}s",
        if r.dry_run { "[dry run] " } else { "" },
        r.repo,
        r.snapshots_live,
        r.snapshots_deleted,
        count(r.packs_total, "pack"),
        r.packs_marked,
        r.packs_unmarked,
        r.packs_deleted,
        bytes(r.bytes_deleted),
        r.packs_rewritten,
        r.chunks_rewritten,
        r.orphans_deleted,
        r.runs_pruned,
        r.duration_secs
    )
}

/// `ferry forget`.
pub fn forget(r: &crate::ops::gc::ForgetReport) -> String {
    if r.kept.is_empty() {
        return format!(
            "{}deleted ref {:?} in {} ({}); run `ferry gc {}` to reclaim space",
            if r.dry_run { "[dry run] " } else { "" },
            r.name,
            r.repo,
            count(r.forgotten.len() as u64, "entry"),
            r.repo
        );
    }
    format!(
        "{}forget {:?} in {}: kept {}, forgot {:?}; run `ferry gc {}` to reclaim space",
        if r.dry_run { "[dry run] " } else { "" },
        r.name,
        r.repo,
        count(r.kept.len() as u64, "entry"),
        r.forgotten,
        r.repo
    )
}

/// Human-readable byte count (binary units).
pub fn bytes(n: u64) -> String {
    bytesize::ByteSize::b(n).display().iec().to_string()
}

/// `1 pack`, `2 packs`, `3 entries`: a count with its noun in the right number.
pub fn count(n: u64, noun: &str) -> String {
    if n == 1 {
        return format!("1 {noun}");
    }
    match noun.strip_suffix('y') {
        Some(stem) if !stem.ends_with(['a', 'e', 'o', 'u']) => format!("{n} {stem}ies"),
        _ => format!("{n} {noun}s"),
    }
}

/// `ferry push`: the totals, then one line per repository.
pub fn push(r: &PushReport) -> String {
    let mut s = format!(
        "pushed {:?}: {} ({} read, {} unchanged), {} in the tree, {} read\n  {}, {} new ({}); uploaded {} in {}; dedup {:.2}x, compression {:.2}x; {:.1}s",
        r.name,
        count(r.files_total, "file"),
        r.files_read,
        r.files_unchanged,
        bytes(r.bytes_total),
        bytes(r.bytes_read),
        count(r.chunks_total, "chunk"),
        r.chunks_new,
        bytes(r.bytes_new_logical),
        bytes(r.bytes_uploaded),
        count(r.packs_uploaded, "pack"),
        r.dedup_ratio,
        r.compression_ratio,
        r.duration_secs
    );
    if r.chunks_delta > 0 {
        s.push_str(&format!(
            "\n  {} of the new chunks stored as deltas against the ref's previous snapshot, saving {}",
            r.chunks_delta,
            bytes(r.bytes_saved_by_deltas)
        ));
    }
    if r.bytes_read_for_deltas > 0 {
        s.push_str(&format!(
            "\n  read {} back from the repository to encode deltas (bases not in the local base cache)",
            bytes(r.bytes_read_for_deltas)
        ));
    }
    for t in &r.targets {
        let what = if t.unchanged {
            "unchanged, ref stays at"
        } else {
            "snapshot"
        };
        s.push_str(&format!(
            "\n  {}: {what} {} ({} in {})",
            t.repo,
            &t.snapshot.to_hex()[..12],
            bytes(t.stats.bytes_uploaded),
            count(t.stats.packs_uploaded, "pack")
        ));
        if let Some(shard) = &t.shard {
            s.push_str(&format!("; {}", shard_line(shard)));
        }
    }
    match &r.dry_run {
        Some(d) => dry_run(&s, d),
        None => s,
    }
}

/// A dry run's report: its forecast first, then the report the run would have printed.
fn dry_run(report: &str, d: &DryRun) -> String {
    let mut s = String::from("DRY RUN: nothing was written; this is what the run would transfer.");
    for t in &d.targets {
        s.push_str(&format!(
            "\n  {}: {} (packs {}, snapshots {}, refs {}, config {}) ≈ {} at ${}/GiB ({} → {}, {} price)",
            t.repo,
            bytes(t.bytes_total),
            bytes(t.bytes_packs),
            bytes(t.bytes_snapshots),
            bytes(t.bytes_refs),
            bytes(t.bytes_config),
            usd(t.usd),
            t.price.usd_per_gib,
            t.price.from_cloud,
            t.price.to_cloud,
            basis(t.price.basis)
        ));
    }
    s.push_str(&format!(
        "\n  total {} ≈ {}: an estimate from list egress prices, not a bill\nthe run's report, as forecast:\n",
        bytes(d.bytes_total),
        usd(d.usd_total)
    ));
    s.push_str(report);
    s
}

/// Dollars: cents, or more digits for less than a cent.
fn usd(x: f64) -> String {
    if x == 0.0 || x >= 0.01 {
        format!("${x:.2}")
    } else {
        format!("${x:.6}")
    }
}

fn basis(b: PriceBasis) -> &'static str {
    match b {
        PriceBasis::Default => "default",
        PriceBasis::Config => "FERRY_EGRESS_PRICES",
        PriceBasis::Flag => "--price-per-gib",
        PriceBasis::Unknown => "no known",
    }
}

/// `ferry restore`: replaced and kept files, then the summary.
pub fn pull(r: &crate::ops::pull::PullReport) -> String {
    let mut s = String::new();
    for v in &r.removed {
        s.push_str(&format!("removed version {v}\n"));
    }
    if r.published {
        s.push_str(&format!(
            "published {}@{} ({}) as {}: {} files, {} read from the store, {} reused locally, {:.1}s\n",
            r.name,
            r.seq,
            &r.snapshot.to_hex()[..12],
            r.version,
            r.files,
            bytes(r.bytes_read_from_store),
            bytes(r.bytes_reused),
            r.duration_secs
        ));
    } else {
        s.push_str(&format!(
            "{}@{} is already current ({}): nothing to do\n",
            r.name, r.seq, r.version
        ));
    }
    match &r.dry_run {
        Some(d) => dry_run(&s, d),
        None => s,
    }
}

/// `ferry restore`'s report as text for people.
pub fn restore(r: &RestoreReport) -> String {
    let mut s = String::new();
    for p in &r.replaced {
        s.push_str(&format!("replaced {p}\n"));
    }
    for p in &r.kept {
        s.push_str(&format!("kept {p} (--overwrite never)\n"));
    }
    s.push_str(&format!(
        "restored snapshot {} to {}: {} ({} unchanged, {} replaced, {} kept), {} written, {} downloaded, {} verified; {:.1}s",
        &r.snapshot.to_hex()[..12],
        r.destination,
        count(r.files, "file"),
        r.unchanged,
        r.replaced.len(),
        r.kept.len(),
        bytes(r.bytes_written),
        bytes(r.bytes_downloaded),
        count(r.chunks_verified, "chunk"),
        r.duration_secs
    ));
    s
}

/// `ferry replicate`.
pub fn replicate(r: &ReplicateReport) -> String {
    let mut s = format!(
        "replicated {} → {}: {}, {} copied ({} read, {} uploaded in {}); {:.1}s",
        r.from,
        r.to,
        count(r.snapshots_copied, "snapshot"),
        count(r.chunks_copied, "chunk"),
        bytes(r.bytes_downloaded),
        bytes(r.upload.bytes_uploaded),
        count(r.upload.packs_uploaded, "pack"),
        r.duration_secs
    );
    if r.resealed {
        s.push_str(
            "\n  re-sealed: the two repositories are encrypted differently (or one is plain), so every chunk was read, named and sealed anew for the target, as full frames",
        );
    }
    if r.chunks_delta > 0 {
        s.push_str(&format!(
            "\n  {} copied as stored deltas, saving about {} against the full frames under them",
            count(r.chunks_delta, "chunk"),
            bytes(r.bytes_saved_by_deltas)
        ));
    }
    if let Some(sh) = &r.shard {
        if sh.committed {
            s.push_str(&format!("; run {:?} committed", sh.run));
        } else {
            s.push_str(&format!(
                "; shard {}/{} of run {:?} done, waiting for shards {:?}",
                sh.shard.index, sh.shard.count, sh.run, sh.missing
            ));
        }
    }
    match &r.dry_run {
        Some(d) => dry_run(&s, d),
        None => s,
    }
}

/// `ferry key generate`.
pub fn key_generated(r: &crate::crypto::KeyFileReport) -> String {
    format!(
        "wrote a new key to {} (key id {}); keep a copy somewhere safe: what it encrypts cannot be read without it",
        r.path, r.key_id
    )
}

/// `ferry verify`: the summary, then each problem and note.
pub fn verify(r: &VerifyReport) -> String {
    let mut s = format!(
        "{} {}: {}, {}, {} re-hashed",
        if r.ok { "ok" } else { "PROBLEMS in" },
        r.repo,
        count(r.packs_checked, "pack"),
        count(r.snapshots_checked, "snapshot"),
        count(r.chunks_checked, "chunk")
    );
    for p in &r.problems {
        s.push_str(&format!("\n  problem: {}: {}", p.object, p.problem));
    }
    for p in &r.notes {
        s.push_str(&format!("\n  note: {}: {}", p.object, p.problem));
    }
    s
}
