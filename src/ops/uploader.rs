//! Gathers chunk frames into packs for one repository and uploads them with a bounded number
//! in flight; each pack's index follows its pack, and the local index learns of both after.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::ids::{ChunkId, PackId};
use crate::index::RepoIndex;
use crate::ops::OpError;
use crate::repo::pack::{PackBuilder, PackIndex};
use crate::repo::Repository;

/// What one uploader sent.
#[derive(Debug, Default, Clone, Copy, serde::Serialize)]
pub struct UploadStats {
    pub packs_uploaded: u64,
    /// Stored bytes of packs and pack indexes written.
    pub bytes_uploaded: u64,
    pub chunks_new: u64,
    /// Raw size of the new chunks.
    pub bytes_new_logical: u64,
}

pub struct PackUploader {
    repo: Repository,
    rindex: RepoIndex,
    builder: PackBuilder,
    target: usize,
    permits: Arc<Semaphore>,
    tasks: JoinSet<Result<u64, OpError>>,
    stats: UploadStats,
    /// Packs marked damaged (`bad/<pack id>`): writing one of them again writes its correct
    /// bytes (a pack is named by its content), so its damage mark is removed.
    damaged: Arc<HashSet<PackId>>,
}

impl PackUploader {
    /// `in_flight` packs may upload at once (each holds up to a pack size of memory).
    pub fn new(repo: Repository, rindex: RepoIndex, in_flight: usize) -> Self {
        let target = repo.config().pack_size as usize;
        Self {
            repo,
            rindex,
            builder: PackBuilder::new(),
            target,
            permits: Arc::new(Semaphore::new(in_flight.max(1))),
            tasks: JoinSet::new(),
            stats: UploadStats::default(),
            damaged: Arc::default(),
        }
    }

    /// Tells the uploader which packs are marked damaged (see the field).
    pub fn repairing(mut self, damaged: HashSet<PackId>) -> Self {
        self.damaged = Arc::new(damaged);
        self
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Adds one frame; seals and starts uploading the pack once it reaches the target size.
    pub async fn add(&mut self, chunk: ChunkId, frame: &[u8], raw_len: u32) -> Result<(), OpError> {
        self.reap()?;
        self.builder.add(chunk, frame, raw_len);
        self.stats.chunks_new += 1;
        self.stats.bytes_new_logical += raw_len as u64;
        if self.builder.len() >= self.target {
            self.seal_and_spawn().await?;
        }
        Ok(())
    }

    /// Surfaces the first failed upload early instead of after all data was read.
    fn reap(&mut self) -> Result<(), OpError> {
        while let Some(done) = self.tasks.try_join_next() {
            self.stats.bytes_uploaded += done.map_err(OpError::join)??;
            self.stats.packs_uploaded += 1;
        }
        Ok(())
    }

    async fn seal_and_spawn(&mut self) -> Result<(), OpError> {
        if self.builder.is_empty() {
            return Ok(());
        }
        // The permit is taken before the task exists: at most `in_flight` packs in memory.
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| OpError::Cancelled)?;
        let builder = std::mem::take(&mut self.builder);
        let sealed = tokio::task::spawn_blocking(move || builder.seal())
            .await
            .map_err(OpError::join)?;
        let repo = self.repo.clone();
        let rindex = self.rindex.clone();
        let damaged = self.damaged.clone();
        self.tasks.spawn(async move {
            let _permit = permit;
            let written = repo.write_pack(&sealed).await?;
            if damaged.contains(&sealed.id) {
                // The same chunks in the same order: the damaged object now holds its bytes.
                tracing::info!(pack = %sealed.id, "a damaged pack was written anew, whole");
                repo.clear_bad(&sealed.id).await?;
            }
            let index = PackIndex {
                pack: sealed.id,
                pack_size: sealed.data.len() as u64,
                entries: sealed.entries,
            };
            tokio::task::spawn_blocking(move || rindex.add_pack(&index))
                .await
                .map_err(OpError::join)??;
            tracing::debug!(pack = %sealed.id, bytes = written, "pack uploaded");
            Ok(written)
        });
        Ok(())
    }

    /// Uploads what is left and waits for every upload. Returns what was sent.
    pub async fn finish(mut self) -> Result<UploadStats, OpError> {
        self.seal_and_spawn().await?;
        while let Some(done) = self.tasks.join_next().await {
            self.stats.bytes_uploaded += done.map_err(OpError::join)??;
            self.stats.packs_uploaded += 1;
        }
        Ok(self.stats)
    }
}
