//! The CLI's commands as library calls: parse URLs, open stores and the local index, run an
//! operation, and render its report for people.

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::chunker::ChunkerParams;
use crate::index::Index;
use crate::ops::push::{ChangeCheck, PushReport};
use crate::ops::replicate::{ReplicaShard, ReplicateReport};
use crate::ops::restore::{Destination, RestoreOptions, RestoreReport};
use crate::ops::shard::{PushMode, ShardReport};
use crate::ops::source::Source;
use crate::ops::sync::sync_index;
use crate::ops::verify::VerifyReport;
use crate::ops::OpError;
use crate::repo::config::{RepoConfig, DEFAULT_PACK_SIZE, PACK_SIZE_RANGE};
use crate::repo::Repository;
use crate::store::{Access, Store, StoreUrl};

/// Shared settings for every command.
pub struct Context {
    index_dir: PathBuf,
    index: std::sync::OnceLock<Index>,
    /// The index of a read-only command while another process holds the local one.
    temporary: std::sync::OnceLock<crate::index::TemporaryIndex>,
    /// Show progress bars (when stderr is a terminal).
    pub progress: bool,
}

impl Context {
    pub fn new(index_dir: PathBuf, progress: bool) -> Self {
        Self {
            index_dir,
            index: std::sync::OnceLock::new(),
            temporary: std::sync::OnceLock::new(),
            progress,
        }
    }

    /// Opens the local index on first use, waiting up to a minute for another process.
    pub fn index(&self) -> Result<&Index, OpError> {
        if let Some(i) = self.index.get() {
            return Ok(i);
        }
        let idx = Index::open(&self.index_dir, Duration::from_secs(60))?;
        Ok(self.index.get_or_init(|| idx))
    }

    /// For commands that only read: the local index, or a temporary one (with a note) when
    /// another process holds it.
    pub fn index_for_reading(&self) -> Result<&Index, OpError> {
        if let Some(i) = self.index.get().or(self.temporary.get().map(|t| &t.index)) {
            return Ok(i);
        }
        match Index::open(&self.index_dir, Duration::ZERO) {
            Ok(idx) => Ok(self.index.get_or_init(|| idx)),
            Err(crate::index::IndexError::Locked { path, holder }) => {
                tracing::warn!(
                    path = %path.display(),
                    %holder,
                    "the local index is in use by another process; using a temporary index for this command"
                );
                let t = crate::index::TemporaryIndex::create()?;
                Ok(&self.temporary.get_or_init(|| t).index)
            }
            Err(e) => Err(e.into()),
        }
    }
}

fn url(s: &str) -> Result<StoreUrl, OpError> {
    Ok(s.parse::<StoreUrl>()
        .map_err(crate::store::StoreError::from)?)
}

async fn open_repo(s: &str) -> Result<Repository, OpError> {
    let store = Store::open(&url(s)?, Access::Read)?;
    Ok(Repository::open(store).await?)
}

/// A config from the CLI's `--chunk-avg` and `--pack-size` (defaults when `None`).
pub fn new_config(chunk_avg: Option<u64>, pack_size: Option<u64>) -> Result<RepoConfig, OpError> {
    let chunker = match chunk_avg {
        Some(avg) => ChunkerParams::with_avg(avg)?,
        None => ChunkerParams::default(),
    };
    let pack_size = pack_size.unwrap_or(DEFAULT_PACK_SIZE);
    if !PACK_SIZE_RANGE.contains(&pack_size) {
        return Err(OpError::PackSizeOutOfRange { size: pack_size });
    }
    Ok(RepoConfig::new(chunker, pack_size))
}

#[derive(Debug, Serialize)]
pub struct InitReport {
    pub repo: String,
    pub id: String,
    pub chunk_avg: u32,
    pub pack_size: u64,
}

pub async fn init(repo: &str, config: RepoConfig) -> Result<InitReport, OpError> {
    let store = Store::open(&url(repo)?, Access::Write)?;
    let r = Repository::init(store, config).await?;
    Ok(InitReport {
        repo: r.url(),
        id: r.id().to_string(),
        chunk_avg: r.config().chunker.avg_size,
        pack_size: r.config().pack_size,
    })
}

pub async fn push(
    ctx: &Context,
    source: &str,
    repos: &[String],
    name: &str,
) -> Result<PushReport, OpError> {
    push_with(ctx, source, repos, name, &PushMode::Replace).await
}

/// [`push`] that merges into the ref's head or pushes one shard of a run.
pub async fn push_with(
    ctx: &Context,
    source: &str,
    repos: &[String],
    name: &str,
    mode: &PushMode,
) -> Result<PushReport, OpError> {
    push_checked(ctx, source, repos, name, mode, ChangeCheck::Stat).await
}

/// [`push_with`] with a choice of how unchanged files are recognized (`--rehash`).
pub async fn push_checked(
    ctx: &Context,
    source: &str,
    repos: &[String],
    name: &str,
    mode: &PushMode,
    check: ChangeCheck,
) -> Result<PushReport, OpError> {
    crate::repo::check_ref_name(name)?;
    mode.check()?;
    let source = Source::open(&url(source)?)?;
    for r in repos {
        check_outside_source(&source.key(), &url(r)?.to_string())?;
    }
    let mut targets = Vec::new();
    for r in repos {
        let store = Store::open(&url(r)?, Access::Write)?;
        let (repo, created) = Repository::open_or_init(store, || {
            RepoConfig::new(ChunkerParams::default(), DEFAULT_PACK_SIZE)
        })
        .await?;
        targets.push((repo, created));
    }
    crate::ops::push::push_checked(
        &source,
        targets,
        name,
        ctx.index()?,
        ctx.progress,
        mode,
        check,
    )
    .await
}

/// A repository inside its source (or the reverse) would push its own packs.
fn check_outside_source(source: &str, repo: &str) -> Result<(), OpError> {
    let inside =
        |a: &str, b: &str| a == b || a.starts_with(&format!("{}/", b.trim_end_matches('/')));
    if inside(source, repo) || inside(repo, source) {
        return Err(OpError::RepoInsideSource {
            source_url: source.into(),
            repo: repo.into(),
        });
    }
    Ok(())
}

/// `ferry commit`: what combining a sharded run did in each repository.
#[derive(Debug, Serialize)]
pub struct CommitReport {
    pub name: String,
    pub targets: Vec<CommitTarget>,
}

#[derive(Debug, Serialize)]
pub struct CommitTarget {
    pub repo: String,
    #[serde(flatten)]
    pub report: ShardReport,
}

/// Combines a sharded run's partial snapshots and moves the ref, in every repository.
pub async fn commit(repos: &[String], name: &str, run: &str) -> Result<CommitReport, OpError> {
    crate::repo::check_ref_name(name)?;
    let mut targets = Vec::new();
    for r in repos {
        let repo = Repository::open(Store::open(&url(r)?, Access::Write)?).await?;
        let report = crate::ops::shard::commit(&repo, name, run).await?;
        targets.push(CommitTarget {
            repo: repo.url(),
            report,
        });
    }
    Ok(CommitReport {
        name: name.to_string(),
        targets,
    })
}

fn render_shard(r: &ShardReport) -> String {
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

pub fn render_commit(r: &CommitReport) -> String {
    let mut s = format!("commit {:?}", r.name);
    for t in &r.targets {
        s.push_str(&format!("\n  {}: {}", t.repo, render_shard(&t.report)));
    }
    s
}

pub async fn restore(
    ctx: &Context,
    repo: &str,
    spec: &str,
    dest: &str,
    opts: RestoreOptions,
) -> Result<RestoreReport, OpError> {
    let repo = open_repo(repo).await?;
    let rindex = ctx.index_for_reading()?.repo(repo.id())?;
    sync_index(&repo, &rindex).await?;
    let id = repo.resolve(spec).await?;
    let dest = match url(dest)? {
        StoreUrl::Local(p) => {
            std::fs::create_dir_all(&p).map_err(|e| OpError::io(p.display(), e))?;
            Destination::Local(p)
        }
        other => Destination::Objects(Store::open(&other, Access::Write)?),
    };
    crate::ops::restore::restore(&repo, &rindex, id, &dest, opts, ctx.progress).await
}

/// `ferry pull REPO SPEC DIR`.
pub async fn pull(
    ctx: &Context,
    repo: &str,
    spec: &str,
    dir: &std::path::Path,
    opts: &crate::ops::pull::PullOptions,
) -> Result<crate::ops::pull::PullReport, OpError> {
    let repo = open_repo(repo).await?;
    let rindex = ctx.index_for_reading()?.repo(repo.id())?;
    crate::ops::pull::pull(&repo, &rindex, spec, dir, opts, ctx.progress).await
}

pub async fn replicate(
    ctx: &Context,
    from: &str,
    to: &str,
    names: &[String],
) -> Result<ReplicateReport, OpError> {
    replicate_with(ctx, from, to, names, None).await
}

/// [`replicate`] of one shard of a sharded replication.
pub async fn replicate_with(
    ctx: &Context,
    from: &str,
    to: &str,
    names: &[String],
    sharded: Option<&ReplicaShard>,
) -> Result<ReplicateReport, OpError> {
    let from = open_repo(from).await?;
    let store = Store::open(&url(to)?, Access::Write)?;
    let (to, _) = Repository::open_or_init(store, || from.config().derived()).await?;
    crate::ops::replicate::replicate(&from, &to, names, ctx.index()?, ctx.progress, sharded).await
}

/// `ferry mirror`: opens the source, the destination and its native client.
pub async fn mirror(
    ctx: &Context,
    source: &str,
    dest: &str,
    opts: crate::mirror::MirrorOptions,
) -> Result<crate::mirror::MirrorReport, OpError> {
    let source = Source::open(&url(source)?)?;
    // Before the destination is opened (which creates a local folder).
    crate::mirror::check_no_overlap(&source.key(), &url(dest)?.to_string())?;
    let (store, native) = open_mirror_dest(dest, Access::Write)?;
    crate::mirror::mirror(&source, &store, native, ctx.index()?, opts, ctx.progress).await
}

/// `ferry verify --mirror SOURCE DEST`.
pub async fn verify_mirror(
    source: &str,
    dest: &str,
    read_data: bool,
) -> Result<crate::mirror::VerifyMirrorReport, OpError> {
    let source = Source::open(&url(source)?)?;
    let (store, native) = open_mirror_dest(dest, Access::Read)?;
    crate::mirror::verify_mirror(&source, &store, native, read_data).await
}

type NativeStore = Option<std::sync::Arc<dyn crate::store::delta::DeltaStore>>;

fn open_mirror_dest(dest: &str, access: Access) -> Result<(Store, NativeStore), OpError> {
    let dest = url(dest)?;
    let store = Store::open(&dest, access)?;
    let native = store.delta()?;
    Ok((store, native))
}

pub fn render_mirror(r: &crate::mirror::MirrorReport) -> String {
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

pub fn render_verify_mirror(r: &crate::mirror::VerifyMirrorReport) -> String {
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

pub async fn verify(repo: &str, read_data: bool) -> Result<VerifyReport, OpError> {
    let repo = open_repo(repo).await?;
    crate::ops::verify::verify(&repo, read_data).await
}

/// `ferry repair`: marks damaged packs so the next push uploads their chunks anew.
pub async fn repair(
    repo: &str,
    dry_run: bool,
) -> Result<crate::ops::repair::RepairReport, OpError> {
    let repo = open_repo(repo).await?;
    crate::ops::repair::repair(&repo, dry_run).await
}

pub async fn gc(
    ctx: &Context,
    repo: &str,
    opts: crate::ops::gc::GcOptions,
) -> Result<crate::ops::gc::GcReport, OpError> {
    let repo = open_repo(repo).await?;
    crate::ops::gc::gc(&repo, ctx.index()?, opts).await
}

pub async fn forget(
    repo: &str,
    name: &str,
    keep: crate::ops::gc::Retention,
    dry_run: bool,
) -> Result<crate::ops::gc::ForgetReport, OpError> {
    let repo = open_repo(repo).await?;
    crate::ops::gc::forget(&repo, name, keep, dry_run).await
}

pub fn render_gc(r: &crate::ops::gc::GcReport) -> String {
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

pub fn render_forget(r: &crate::ops::gc::ForgetReport) -> String {
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

pub use crate::listing::{render_ls, render_snapshots, LsReport, SnapshotsReport};

/// `ferry snapshots`: every ref's snapshots, or one ref's.
pub async fn snapshots(repo: &str, name: Option<&str>) -> Result<SnapshotsReport, OpError> {
    crate::listing::snapshots(&open_repo(repo).await?, name).await
}

/// `ferry ls`: a snapshot's entries.
pub async fn ls(repo: &str, spec: &str) -> Result<LsReport, OpError> {
    crate::listing::ls(&open_repo(repo).await?, spec).await
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

pub fn render_push(r: &PushReport) -> String {
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
            s.push_str(&format!("; {}", render_shard(shard)));
        }
    }
    s
}

pub fn render_pull(r: &crate::ops::pull::PullReport) -> String {
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
    s
}

pub fn render_restore(r: &RestoreReport) -> String {
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

pub fn render_replicate(r: &ReplicateReport) -> String {
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
    s
}

pub fn render_verify(r: &VerifyReport) -> String {
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
