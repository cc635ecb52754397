//! The application layer under both the CLI and the daemon: typed inputs ([`StoreUrl`],
//! [`RefName`], [`RunId`]) → opened stores and repositories → one operation → its report.
//! Nothing here parses text a caller already parsed, and nothing renders text for people
//! (that is [`crate::cli::render`]).

mod names;
mod serve;
mod settings;

use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

pub use names::{RefName, RunId};
pub use serve::RefWatch;
pub use settings::Settings;

use crate::chunker::ChunkerParams;
use crate::index::{Index, IndexError, TemporaryIndex};
use crate::listing::{LsReport, SnapshotsReport};
use crate::mirror::{MirrorOptions, MirrorReport, VerifyMirrorReport};
use crate::ops::egress::Prices;
use crate::ops::gc::{ForgetReport, GcOptions, GcReport, Retention};
use crate::ops::push::{PushOptions, PushReport};
use crate::ops::repair::RepairReport;
use crate::ops::replicate::{ReplicaShard, ReplicateReport};
use crate::ops::restore::{Destination, RestoreOptions, RestoreReport};
use crate::ops::shard::{PushMode, ShardReport};
use crate::ops::source::Source;
use crate::ops::sync::sync_index;
use crate::ops::verify::VerifyReport;
use crate::ops::OpError;
use crate::progress::Reporter;
use crate::repo::config::{RepoConfig, DEFAULT_PACK_SIZE, PACK_SIZE_RANGE};
use crate::repo::Repository;
use crate::store::{Access, Store, StoreUrl};

/// The data key a repository a push creates shares: the first encrypted target's before it,
/// so one pass names and seals chunks for all of them.
fn shared_data_key(
    targets: &[(Repository, bool)],
) -> Option<std::sync::Arc<crate::crypto::DataKey>> {
    targets
        .iter()
        .find_map(|(t, _)| t.sealing().data_key().cloned())
}

/// How long a command waits for another process to release the local index.
const INDEX_WAIT: Duration = Duration::from_secs(60);

/// The local index and the settings every operation shares. One per process (the CLI's
/// command, or the daemon for its lifetime); the index is opened on first use.
pub struct App {
    index_dir: PathBuf,
    index: tokio::sync::OnceCell<Index>,
    /// The index of a read-only command while another process holds the local one.
    temporary: tokio::sync::OnceCell<TemporaryIndex>,
    /// Store options and mirror settings, resolved once at the edge.
    settings: Settings,
}

impl App {
    /// An application on the local index in `index_dir` (opened on first use). `settings`
    /// (usually [`Settings::from_env`], read once where the process starts) go to every store
    /// and operation. How an operation reports progress is the caller's, given to each call.
    pub fn new(index_dir: PathBuf, settings: Settings) -> Self {
        Self {
            index_dir,
            index: tokio::sync::OnceCell::new(),
            temporary: tokio::sync::OnceCell::new(),
            settings,
        }
    }

    /// The settings every store and operation of this application uses.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Opens the store `url` names with this application's store options. Makes no request.
    pub fn open_store(&self, url: &StoreUrl, access: Access) -> Result<Store, OpError> {
        Ok(Store::open_with(url, access, &self.settings.store)?)
    }

    /// Opens the repository at `url` for reading, with this process's keys.
    pub async fn open_repo(&self, url: &StoreUrl) -> Result<Repository, OpError> {
        Ok(Repository::open(self.open_store(url, Access::Read)?, &self.settings.keys).await?)
    }

    /// The config of a repository this process creates where a push finds an empty location:
    /// encrypted when the process holds a key for that store, `keys` (so a key given for a
    /// store never leads to plain objects there).
    fn new_repo_config(keys: &crate::crypto::Keyring) -> RepoConfig {
        let c = RepoConfig::new(ChunkerParams::default(), DEFAULT_PACK_SIZE);
        if keys.is_empty() {
            c
        } else {
            c.encrypted()
        }
    }

    fn open_source(&self, url: &StoreUrl) -> Result<Source, OpError> {
        Source::open(url, &self.settings.store)
    }

    fn open_mirror_dest(
        &self,
        dest: &StoreUrl,
        access: Access,
    ) -> Result<(Store, NativeStore), OpError> {
        let store = self.open_store(dest, access)?;
        let native = store.delta()?;
        Ok((store, native))
    }

    /// Opens the local index on first use, waiting up to a minute for another process (on a
    /// blocking thread: the wait sleeps).
    pub async fn index(&self) -> Result<&Index, OpError> {
        self.index
            .get_or_try_init(|| async {
                let dir = self.index_dir.clone();
                let idx = tokio::task::spawn_blocking(move || Index::open(&dir, INDEX_WAIT))
                    .await
                    .map_err(OpError::join)??;
                Ok(idx.with_base_cache(self.settings.base_cache))
            })
            .await
    }

    /// For commands that only read: the local index, or a temporary one (with a note) when
    /// another process holds it.
    pub async fn index_for_reading(&self) -> Result<&Index, OpError> {
        if let Some(i) = self.index.get().or(self.temporary.get().map(|t| &t.index)) {
            return Ok(i);
        }
        let dir = self.index_dir.clone();
        let opened = tokio::task::spawn_blocking(move || Index::open(&dir, Duration::ZERO))
            .await
            .map_err(OpError::join)?;
        match opened {
            Ok(idx) => {
                let idx = idx.with_base_cache(self.settings.base_cache);
                Ok(self.index.get_or_init(|| async { idx }).await)
            }
            Err(IndexError::Locked { path, holder }) => {
                tracing::warn!(
                    path = %path.display(),
                    %holder,
                    "the local index is in use by another process; using a temporary index for this command"
                );
                let t = self
                    .temporary
                    .get_or_try_init(|| async {
                        tokio::task::spawn_blocking(TemporaryIndex::create)
                            .await
                            .map_err(OpError::join)?
                            .map_err(OpError::from)
                    })
                    .await?;
                Ok(&t.index)
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Creates a repository at an empty location.
    pub async fn init(&self, repo: &StoreUrl, config: RepoConfig) -> Result<InitReport, OpError> {
        let keys = &self.settings.keys.for_store(&repo.to_string());
        let r = Repository::init(self.open_store(repo, Access::Write)?, config, keys).await?;
        Ok(InitReport {
            repo: r.url(),
            id: r.id().to_string(),
            encrypted: r.config().is_encrypted(),
            cipher: r.config().cipher().map(|c| c.name()),
            key_ids: if r.config().is_encrypted() {
                keys.ids().iter().map(ToString::to_string).collect()
            } else {
                Vec::new()
            },
            chunk_avg: r.config().chunker.avg_size,
            pack_size: r.config().pack_size,
        })
    }

    /// `ferry key rotate`: the encrypted repository at `repo` (opened with this process's
    /// keys) opens with `new` only from now on.
    pub async fn rotate_key(
        &self,
        repo: &StoreUrl,
        new: &crate::crypto::UserKey,
    ) -> Result<crate::repo::Rotated, OpError> {
        let store = self.open_store(repo, Access::Write)?;
        let repo = Repository::open(store, &self.settings.keys).await?;
        Ok(repo.rotate_key(new).await?)
    }

    /// Pushes `source` into every repository of `repos` (each created when its location is
    /// empty) and moves the ref `name` as `mode` says.
    pub async fn push(
        &self,
        source: &StoreUrl,
        repos: &[StoreUrl],
        name: &RefName,
        mode: &PushMode,
        opts: PushOptions,
        progress: &Reporter,
    ) -> Result<PushReport, OpError> {
        let source = self.open_source(source)?;
        for r in repos {
            check_outside_source(&source.key(), &r.to_string())?;
        }
        let mut targets: Vec<(Repository, bool)> = Vec::new();
        for r in repos {
            let store = self.open_store(r, Access::Write)?;
            let keys = self.settings.keys.for_store(&r.to_string());
            let new = (|| Self::new_repo_config(&keys), shared_data_key(&targets));
            let (repo, created) = Repository::open_or_init(store, &keys, new).await?;
            targets.push((repo, created));
        }
        let index = self.index().await?;
        crate::ops::push::push_checked(&source, targets, name, index, progress, mode, opts).await
    }

    /// A dry run of a plain [`Self::push`]: opens the repositories for reading (one not yet
    /// there is described, not created) and forecasts what the push would send, priced.
    pub async fn push_dry(
        &self,
        source: &StoreUrl,
        repos: &[StoreUrl],
        name: &RefName,
        (opts, prices): (PushOptions, &Prices),
        progress: &Reporter,
    ) -> Result<PushReport, OpError> {
        let source = self.open_source(source)?;
        let mut targets: Vec<(Repository, bool)> = Vec::new();
        for r in repos {
            check_outside_source(&source.key(), &r.to_string())?;
            let store = self.open_store(r, Access::Read)?;
            let keys = self.settings.keys.for_store(&r.to_string());
            let new = (|| Self::new_repo_config(&keys), shared_data_key(&targets));
            targets.push(Repository::open_or_plan(store, &keys, new).await?);
        }
        let index = self.index().await?;
        let how = (opts, prices);
        crate::ops::push::push_dry(&source, targets, name, index, progress, how).await
    }

    /// A dry run of [`Self::replicate`] (not sharded): what it would send, priced.
    pub async fn replicate_dry(
        &self,
        from: &StoreUrl,
        to: &StoreUrl,
        names: &[RefName],
        prices: &Prices,
    ) -> Result<ReplicateReport, OpError> {
        let from = self.open_repo(from).await?;
        let store = self.open_store(to, Access::Read)?;
        let new = (
            || from.config().derived(),
            from.sealing().data_key().cloned(),
        );
        let keys = self.settings.keys.for_store(&to.to_string());
        let (to, created) = Repository::open_or_plan(store, &keys, new).await?;
        let names: Vec<String> = names.iter().map(RefName::to_string).collect();
        let index = self.index().await?;
        crate::ops::replicate_dry::replicate_dry(&from, (&to, created), &names, index, prices).await
    }

    /// Combines a sharded run's partial snapshots and moves the ref, in every repository.
    pub async fn commit(
        &self,
        repos: &[StoreUrl],
        name: &RefName,
        run: &RunId,
    ) -> Result<CommitReport, OpError> {
        let mut targets = Vec::new();
        for r in repos {
            let store = self.open_store(r, Access::Write)?;
            let repo = Repository::open(store, &self.settings.keys).await?;
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

    /// Rebuilds the snapshot `spec` (`NAME`, `NAME@SEQ`, `NAME@ID-PREFIX`) at `dest`.
    /// `ferry pull`: snapshot `spec` of `repo` as a new version in `dir`, published by
    /// swapping `dir/current`.
    pub async fn pull(
        &self,
        repo: &StoreUrl,
        spec: &str,
        dir: &std::path::Path,
        opts: &crate::ops::pull::PullOptions,
        progress: &Reporter,
    ) -> Result<crate::ops::pull::PullReport, OpError> {
        let repo = self.open_repo(repo).await?;
        let rindex = self.index_for_reading().await?.repo(repo.id())?;
        crate::ops::pull::pull(&repo, &rindex, spec, dir, opts, progress).await
    }

    /// `ferry pull --dry-run`: what the pull would read from the store, priced; nothing in
    /// `dir` is created or changed.
    pub async fn pull_dry(
        &self,
        repo: &StoreUrl,
        (spec, dir): (&str, &std::path::Path),
        opts: &crate::ops::pull::PullOptions,
        prices: &Prices,
    ) -> Result<crate::ops::pull::PullReport, OpError> {
        let repo = self.open_repo(repo).await?;
        let rindex = self.index_for_reading().await?.repo(repo.id())?;
        crate::ops::pull::pull_dry(&repo, &rindex, (spec, dir), opts, prices).await
    }

    /// `ferry restore`: the snapshot `spec` names in `repo`, written to `dest` (a folder or an object prefix).
    pub async fn restore(
        &self,
        repo: &StoreUrl,
        spec: &str,
        dest: &StoreUrl,
        opts: RestoreOptions,
        progress: &Reporter,
    ) -> Result<RestoreReport, OpError> {
        let repo = self.open_repo(repo).await?;
        let rindex = self.index_for_reading().await?.repo(repo.id())?;
        sync_index(&repo, &rindex).await?;
        let id = repo.resolve(spec).await?;
        let dest = match dest {
            StoreUrl::Local(p) => {
                let p = p.clone();
                let made = p.clone();
                tokio::task::spawn_blocking(move || std::fs::create_dir_all(&made))
                    .await
                    .map_err(OpError::join)?
                    .map_err(|e| OpError::io(p.display(), e))?;
                Destination::Local(p)
            }
            other => Destination::Objects(self.open_store(other, Access::Write)?),
        };
        crate::ops::restore::restore(&repo, &rindex, id, &dest, opts, progress).await
    }

    /// Copies the refs `names` (all when empty) from one repository to another (created when
    /// its location is empty), or one shard of a sharded replication.
    pub async fn replicate(
        &self,
        from: &StoreUrl,
        to: &StoreUrl,
        names: &[RefName],
        sharded: Option<&ReplicaShard>,
        progress: &Reporter,
    ) -> Result<ReplicateReport, OpError> {
        let from = self.open_repo(from).await?;
        let store = self.open_store(to, Access::Write)?;
        let new = (
            || from.config().derived(),
            from.sealing().data_key().cloned(),
        );
        let keys = self.settings.keys.for_store(&to.to_string());
        let (to, _) = Repository::open_or_init(store, &keys, new).await?;
        let names: Vec<String> = names.iter().map(RefName::to_string).collect();
        let index = self.index().await?;
        crate::ops::replicate::replicate(&from, &to, &names, index, progress, sharded).await
    }

    /// Makes `dest` hold the same plain objects as `source`.
    pub async fn mirror(
        &self,
        source: &StoreUrl,
        dest: &StoreUrl,
        opts: MirrorOptions,
        progress: &Reporter,
    ) -> Result<MirrorReport, OpError> {
        if !opts.allow_encrypted_source
            && Repository::encrypted_at(&self.open_store(source, Access::Read)?).await?
        {
            return Err(OpError::EncryptedMirrorSource {
                location: source.to_string(),
            });
        }
        let source = self.open_source(source)?;
        // Before the destination is opened (which creates a local folder).
        crate::mirror::check_no_overlap(&source.key(), &dest.to_string())?;
        let (store, native) = self.open_mirror_dest(dest, Access::Write)?;
        let index = self.index().await?;
        crate::mirror::mirror_with(
            &source,
            &store,
            native,
            index,
            opts,
            &self.settings.mirror,
            progress,
        )
        .await
    }

    /// Compares a mirror's objects with their source files.
    pub async fn verify_mirror(
        &self,
        source: &StoreUrl,
        dest: &StoreUrl,
        read_data: bool,
    ) -> Result<VerifyMirrorReport, OpError> {
        let source = self.open_source(source)?;
        let (store, native) = self.open_mirror_dest(dest, Access::Read)?;
        crate::mirror::verify_mirror(&source, &store, native, read_data).await
    }

    /// Checks a repository's structure (and with `read_data`, every chunk).
    pub async fn verify(&self, repo: &StoreUrl, read_data: bool) -> Result<VerifyReport, OpError> {
        crate::ops::verify::verify(&self.open_repo(repo).await?, read_data).await
    }

    /// Marks damaged packs so the next push uploads their chunks anew.
    pub async fn repair(&self, repo: &StoreUrl, dry_run: bool) -> Result<RepairReport, OpError> {
        crate::ops::repair::repair(&self.open_repo(repo).await?, dry_run).await
    }

    /// Deletes packs and snapshots no ref needs (two-phase).
    pub async fn gc(&self, repo: &StoreUrl, opts: GcOptions) -> Result<GcReport, OpError> {
        let repo = self.open_repo(repo).await?;
        crate::ops::gc::gc(&repo, self.index().await?, opts).await
    }

    /// Trims the history of the ref `name`.
    pub async fn forget(
        &self,
        repo: &StoreUrl,
        name: &RefName,
        keep: Retention,
        dry_run: bool,
    ) -> Result<ForgetReport, OpError> {
        let repo = self.open_repo(repo).await?;
        crate::ops::gc::forget(&repo, name, keep, dry_run).await
    }

    /// Every ref's snapshots, or one ref's.
    pub async fn snapshots(
        &self,
        repo: &StoreUrl,
        name: Option<&RefName>,
    ) -> Result<SnapshotsReport, OpError> {
        let repo = self.open_repo(repo).await?;
        crate::listing::snapshots(&repo, name).await
    }

    /// A snapshot's entries.
    pub async fn ls(&self, repo: &StoreUrl, spec: &str) -> Result<LsReport, OpError> {
        crate::listing::ls(&self.open_repo(repo).await?, spec).await
    }
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

type NativeStore = Option<std::sync::Arc<dyn crate::store::delta::DeltaStore>>;

/// `ferry init`: the new repository.
#[derive(Debug, Serialize)]
pub struct InitReport {
    /// The repository's URL.
    pub repo: String,
    /// Its random id.
    pub id: String,
    /// Average chunk size, in bytes.
    pub chunk_avg: u32,
    /// Target pack size, in bytes.
    pub pack_size: u64,
    /// Whether it is encrypted.
    pub encrypted: bool,
    /// The AEAD that seals it (encrypted only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cipher: Option<&'static str>,
    /// The ids of the keys that open it (encrypted only).
    pub key_ids: Vec<String>,
}

/// `ferry commit`: what combining a sharded run did in each repository.
#[derive(Debug, Serialize)]
pub struct CommitReport {
    /// The ref committed.
    pub name: String,
    /// One entry per repository, in the order given.
    pub targets: Vec<CommitTarget>,
}

/// One repository's share of `ferry commit`.
#[derive(Debug, Serialize)]
pub struct CommitTarget {
    /// The repository's URL.
    pub repo: String,
    /// What the commit found and did there.
    #[serde(flatten)]
    pub report: ShardReport,
}

#[cfg(test)]
mod tests;
