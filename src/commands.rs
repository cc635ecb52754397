//! The CLI adapter: the command line's text (store URLs, ref names, run ids, flags) parsed
//! into typed inputs, then one call to [`crate::app::App`]. The daemon never comes through
//! here; text rendering of the reports is [`crate::cli::render`].

use crate::app::{App, CommitReport, InitReport, RefName, RunId, Settings};
use crate::listing::{LsReport, SnapshotsReport};
use crate::mirror::{MirrorOptions, MirrorReport, VerifyMirrorReport};
use crate::ops::egress::Prices;
use crate::ops::gc::{ForgetReport, GcOptions, GcReport, Retention};
use crate::ops::push::{PushOptions, PushReport};
use crate::ops::repair::RepairReport;
use crate::ops::replicate::{ReplicaShard, ReplicateReport};
use crate::ops::restore::{RestoreOptions, RestoreReport};
use crate::ops::shard::{PushMode, Shard};
use crate::ops::verify::VerifyReport;
use crate::ops::OpError;
use crate::progress::Reporter;
use crate::repo::config::RepoConfig;
use crate::store::StoreUrl;

pub use crate::app::new_config;

/// The application layer the CLI drives, with how its commands report progress (terminal
/// bars, or nothing for `--json`). Derefs to the [`App`].
pub struct Context {
    app: App,
    progress: Reporter,
}

impl Context {
    /// The CLI's application on the local index in `index_dir` (see [`App::new`]), reporting
    /// the progress of its commands to `progress`.
    pub fn new(index_dir: std::path::PathBuf, progress: Reporter, settings: Settings) -> Self {
        Self {
            app: App::new(index_dir, settings),
            progress,
        }
    }
}

impl std::ops::Deref for Context {
    type Target = App;

    fn deref(&self) -> &App {
        &self.app
    }
}

/// A store URL from the command line.
pub fn url(s: &str) -> Result<StoreUrl, OpError> {
    Ok(s.parse::<StoreUrl>()
        .map_err(crate::store::StoreError::from)?)
}

fn urls(list: &[String]) -> Result<Vec<StoreUrl>, OpError> {
    list.iter().map(|s| url(s)).collect()
}

fn ref_name(s: &str) -> Result<RefName, OpError> {
    Ok(RefName::parse(s)?)
}

fn run_id(s: &str) -> Result<RunId, OpError> {
    Ok(RunId::parse(s)?)
}

/// `ferry init`.
pub async fn init(ctx: &Context, repo: &str, config: RepoConfig) -> Result<InitReport, OpError> {
    ctx.init(&url(repo)?, config).await
}

/// `ferry push SOURCE REPO… --name NAME`: a plain push (the tree replaces the ref's).
pub async fn push(
    ctx: &Context,
    source: &str,
    repos: &[String],
    name: &str,
) -> Result<PushReport, OpError> {
    push_checked(
        ctx,
        source,
        repos,
        name,
        &PushMode::Replace,
        PushOptions::default(),
    )
    .await
}

/// What `--merge`, `--shard I/N` and `--run ID` ask of a push.
pub fn push_mode(
    merge: bool,
    shard: Option<Shard>,
    run: Option<&str>,
) -> Result<PushMode, OpError> {
    Ok(match (shard, run) {
        (Some(shard), Some(run)) => PushMode::Shard {
            shard,
            run: run_id(run)?,
        },
        _ if merge => PushMode::Merge,
        _ => PushMode::Replace,
    })
}

/// `ferry push` with its mode, `--rehash` and `--deltas`.
pub async fn push_checked(
    ctx: &Context,
    source: &str,
    repos: &[String],
    name: &str,
    mode: &PushMode,
    opts: PushOptions,
) -> Result<PushReport, OpError> {
    let name = ref_name(name)?;
    ctx.push(
        &url(source)?,
        &urls(repos)?,
        &name,
        mode,
        opts,
        &ctx.progress,
    )
    .await
}

/// `ferry push --dry-run`: the forecast of a plain push, priced.
pub async fn push_dry(
    ctx: &Context,
    source: &str,
    repos: &[String],
    name: &str,
    opts: PushOptions,
    prices: &Prices,
) -> Result<PushReport, OpError> {
    let name = ref_name(name)?;
    let how = (opts, prices);
    ctx.push_dry(&url(source)?, &urls(repos)?, &name, how, &ctx.progress)
        .await
}

/// `ferry replicate --dry-run`: the forecast of a replication, priced.
pub async fn replicate_dry(
    ctx: &Context,
    from: &str,
    to: &str,
    names: &[String],
    prices: &Prices,
) -> Result<ReplicateReport, OpError> {
    let names = names
        .iter()
        .map(|n| ref_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    ctx.replicate_dry(&url(from)?, &url(to)?, &names, prices)
        .await
}

/// `ferry commit`.
pub async fn commit(
    ctx: &Context,
    repos: &[String],
    name: &str,
    run: &str,
) -> Result<CommitReport, OpError> {
    let name = ref_name(name)?;
    ctx.commit(&urls(repos)?, &name, &run_id(run)?).await
}

/// `ferry restore`.
pub async fn restore(
    ctx: &Context,
    repo: &str,
    spec: &str,
    dest: &str,
    opts: RestoreOptions,
) -> Result<RestoreReport, OpError> {
    let repo = url(repo)?;
    ctx.restore(&repo, spec, &url(dest)?, opts, &ctx.progress)
        .await
}

/// `ferry pull REPO SPEC DIR`.
pub async fn pull(
    ctx: &Context,
    repo: &str,
    spec: &str,
    dir: &std::path::Path,
    opts: &crate::ops::pull::PullOptions,
) -> Result<crate::ops::pull::PullReport, OpError> {
    ctx.pull(&url(repo)?, spec, dir, opts, &ctx.progress).await
}

/// `ferry pull --dry-run`: the forecast of a pull, priced.
pub async fn pull_dry(
    ctx: &Context,
    (repo, spec, dir): (&str, &str, &std::path::Path),
    opts: &crate::ops::pull::PullOptions,
    prices: &Prices,
) -> Result<crate::ops::pull::PullReport, OpError> {
    ctx.pull_dry(&url(repo)?, (spec, dir), opts, prices).await
}

/// `ferry replicate FROM TO [--name NAME…]`.
pub async fn replicate(
    ctx: &Context,
    from: &str,
    to: &str,
    names: &[String],
) -> Result<ReplicateReport, OpError> {
    replicate_with(ctx, from, to, names, None).await
}

/// [`replicate`] of one shard of a sharded replication (`--shard I/N --run ID`).
pub async fn replicate_with(
    ctx: &Context,
    from: &str,
    to: &str,
    names: &[String],
    sharded: Option<(Shard, &str)>,
) -> Result<ReplicateReport, OpError> {
    let (from, to) = (url(from)?, url(to)?);
    let names = names
        .iter()
        .map(|n| ref_name(n))
        .collect::<Result<Vec<_>, _>>()?;
    let sharded = match sharded {
        Some((shard, run)) => Some(ReplicaShard {
            shard,
            run: run_id(run)?,
        }),
        None => None,
    };
    ctx.replicate(&from, &to, &names, sharded.as_ref(), &ctx.progress)
        .await
}

/// `ferry mirror`.
pub async fn mirror(
    ctx: &Context,
    source: &str,
    dest: &str,
    opts: MirrorOptions,
) -> Result<MirrorReport, OpError> {
    let source = url(source)?;
    ctx.mirror(&source, &url(dest)?, opts, &ctx.progress).await
}

/// `ferry verify --mirror SOURCE DEST`.
pub async fn verify_mirror(
    ctx: &Context,
    source: &str,
    dest: &str,
    read_data: bool,
) -> Result<VerifyMirrorReport, OpError> {
    let source = url(source)?;
    ctx.verify_mirror(&source, &url(dest)?, read_data).await
}

/// `ferry verify REPO`.
pub async fn verify(ctx: &Context, repo: &str, read_data: bool) -> Result<VerifyReport, OpError> {
    ctx.verify(&url(repo)?, read_data).await
}

/// `ferry repair`: marks damaged packs so the next push uploads their chunks anew.
pub async fn repair(ctx: &Context, repo: &str, dry_run: bool) -> Result<RepairReport, OpError> {
    ctx.repair(&url(repo)?, dry_run).await
}

/// `ferry gc`.
pub async fn gc(ctx: &Context, repo: &str, opts: GcOptions) -> Result<GcReport, OpError> {
    ctx.gc(&url(repo)?, opts).await
}

/// `ferry key rotate REPO --new-key-file NEW`.
pub async fn rotate_key(
    ctx: &Context,
    repo: &str,
    new_key_file: &std::path::Path,
) -> Result<crate::repo::Rotated, OpError> {
    let new =
        crate::crypto::UserKey::read_file(new_key_file).map_err(|e| OpError::Repo(e.into()))?;
    ctx.rotate_key(&url(repo)?, &new).await
}

/// `ferry forget`.
pub async fn forget(
    ctx: &Context,
    repo: &str,
    name: &str,
    keep: Retention,
    dry_run: bool,
) -> Result<ForgetReport, OpError> {
    let repo = url(repo)?;
    ctx.forget(&repo, &ref_name(name)?, keep, dry_run).await
}

/// `ferry snapshots`: every ref's snapshots, or one ref's.
pub async fn snapshots(
    ctx: &Context,
    repo: &str,
    name: Option<&str>,
) -> Result<SnapshotsReport, OpError> {
    let repo = url(repo)?;
    let name = name.map(ref_name).transpose()?;
    ctx.snapshots(&repo, name.as_ref()).await
}

/// `ferry ls`: a snapshot's entries.
pub async fn ls(ctx: &Context, repo: &str, spec: &str) -> Result<LsReport, OpError> {
    ctx.ls(&url(repo)?, spec).await
}
