//! Gathers chunk frames into packs for one repository and uploads them with a bounded number
//! in flight; each pack's index follows its pack, and the local index learns of both after.

use std::collections::HashSet;
use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinSet;

use crate::ids::{ChunkId, PackId};
use crate::index::RepoIndex;
use crate::ops::OpError;
use crate::repo::pack::{PackBuilder, SealedPack};
use crate::repo::{Repository, Sealing};

/// Seals `builder`; if that names a pack a gc marked, seals the same frames rotated (first
/// frame last), for up to one rotation per frame, so the chunks land under a new id. A
/// one-frame pack cannot change: it keeps the marked id until gc deletes or unmarks it.
fn seal_avoiding(builder: PackBuilder, marked: &HashSet<PackId>, sealing: &Sealing) -> SealedPack {
    let mut sealed = builder.seal();
    let n = sealed.entries.len();
    for _ in 1..n {
        if !marked.contains(&sealed.id) {
            break;
        }
        tracing::debug!(pack = %sealed.id, "a gc marked this very pack: sealing its frames in another order");
        let mut again = PackBuilder::new(sealing.clone());
        let bases: std::collections::HashMap<ChunkId, ChunkId> =
            sealed.bases.iter().map(|b| (b.chunk, b.base)).collect();
        for e in sealed.entries.iter().cycle().skip(1).take(n) {
            let start = e.offset as usize;
            let frame = &sealed.data[start..start + e.frame_len as usize];
            again.add(e.chunk, frame, e.raw_len, bases.get(&e.chunk).copied());
        }
        sealed = again.seal();
    }
    sealed
}

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
    /// Packs a gc marked (`gc/<pack id>`). Their chunks are uploaded anew, and when the same
    /// chunks in the same order would make the same pack again, and so the same id, that
    /// marked id would fail the snapshot once more: such a pack is sealed in another order.
    gc_marked: Arc<HashSet<PackId>>,
    /// A dry run: packs are only measured (see [`DryPack`]), nothing is written.
    dry: Option<DryPack>,
}

/// The pack a dry run's uploader would be building: enough to know its sealed sizes.
#[derive(Debug, Default, Clone, Copy)]
struct DryPack {
    frames: usize,
    frame_bytes: u64,
    bases: usize,
}

impl PackUploader {
    /// `in_flight` packs may upload at once (each holds up to a pack size of memory).
    pub fn new(repo: Repository, rindex: RepoIndex, in_flight: usize) -> Self {
        let target = repo.config().pack_size as usize;
        Self {
            builder: PackBuilder::new(repo.sealing().clone()),
            repo,
            rindex,
            target,
            permits: Arc::new(Semaphore::new(in_flight.max(1))),
            tasks: JoinSet::new(),
            stats: UploadStats::default(),
            damaged: Arc::default(),
            gc_marked: Arc::default(),
            dry: None,
        }
    }

    /// A dry run: frames are gathered into packs of the same sizes as a real run's, which
    /// are counted in the stats as if uploaded, but nothing is written to the repository or
    /// the local index.
    pub fn dry_run(mut self, dry: bool) -> Self {
        self.dry = dry.then(DryPack::default);
        self
    }

    /// Adds one frame known only by its length (and whether it is a delta frame): a dry
    /// run's replication, which does not download frames. A real uploader cannot take it.
    pub fn add_measured(&mut self, frame_len: u32, raw_len: u32, delta: bool) {
        self.stats.chunks_new += 1;
        self.stats.bytes_new_logical += raw_len as u64;
        self.measure(frame_len as u64, delta);
    }

    /// A dry run's `add`: the frame joins the measured pack, which is closed at the size a
    /// real run would seal it.
    fn measure(&mut self, frame_len: u64, delta: bool) {
        let Some(p) = &mut self.dry else {
            debug_assert!(false, "measure on a real uploader");
            return;
        };
        p.frames += 1;
        p.frame_bytes += frame_len;
        p.bases += usize::from(delta);
        if crate::repo::pack::builder_len(p.frame_bytes) >= self.target as u64 {
            self.close_measured();
        }
    }

    /// Counts the measured pack as uploaded and starts another.
    fn close_measured(&mut self) {
        let Some(p) = self.dry.replace(DryPack::default()) else {
            return;
        };
        if p.frames == 0 {
            return;
        }
        let overhead = self.repo.sealing().overhead();
        let (pack, index) =
            crate::repo::pack::sealed_sizes(p.frames, p.frame_bytes, p.bases, overhead);
        self.stats.bytes_uploaded += pack + index;
        self.stats.packs_uploaded += 1;
    }

    /// Tells the uploader which packs a gc marked (see the field).
    pub fn avoiding(mut self, gc_marked: HashSet<PackId>) -> Self {
        self.gc_marked = Arc::new(gc_marked);
        self
    }

    /// Tells the uploader which packs are marked damaged (see the field).
    pub fn repairing(mut self, damaged: HashSet<PackId>) -> Self {
        self.damaged = Arc::new(damaged);
        self
    }

    pub fn repo(&self) -> &Repository {
        &self.repo
    }

    /// Adds one frame as stored (sealed in an encrypted repository; `base`: the chunk a delta
    /// frame applies to); seals and starts uploading the pack once it reaches the target size.
    pub async fn add(
        &mut self,
        chunk: ChunkId,
        frame: &[u8],
        raw_len: u32,
        base: Option<ChunkId>,
    ) -> Result<(), OpError> {
        if self.dry.is_some() {
            self.add_measured(frame.len() as u32, raw_len, base.is_some());
            return Ok(());
        }
        self.reap()?;
        self.builder.add(chunk, frame, raw_len, base);
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
        let sealing = self.repo.sealing().clone();
        let builder = std::mem::replace(&mut self.builder, PackBuilder::new(sealing.clone()));
        let marked = self.gc_marked.clone();
        let sealed = tokio::task::spawn_blocking(move || seal_avoiding(builder, &marked, &sealing))
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
            let index = sealed.index();
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
        self.close_measured();
        self.seal_and_spawn().await?;
        while let Some(done) = self.tasks.join_next().await {
            self.stats.bytes_uploaded += done.map_err(OpError::join)??;
            self.stats.packs_uploaded += 1;
        }
        Ok(self.stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::pack::read_pack_table;

    fn builder(frames: &[&[u8]]) -> PackBuilder {
        let mut b = PackBuilder::default();
        for f in frames {
            b.add(ChunkId::from(blake3::hash(f)), f, f.len() as u32, None);
        }
        b
    }

    /// The chunks of a marked pack, packed again alike, get another id, and the pack still
    /// holds every frame where its table says.
    #[test]
    fn a_pack_a_gc_marked_is_sealed_under_another_id() {
        let frames: [&[u8]; 3] = [b"first frame", b"second", b"third frame!"];
        let plain = builder(&frames).seal();
        let same = seal_avoiding(builder(&frames), &HashSet::new(), &Sealing::PLAIN);
        assert_eq!(same.id, plain.id, "nothing marked: sealed as always");

        let moved = seal_avoiding(
            builder(&frames),
            &HashSet::from([plain.id]),
            &Sealing::PLAIN,
        );
        assert_ne!(moved.id, plain.id);
        assert_eq!(moved.id, PackId::of(&moved.data));
        let table = read_pack_table(&moved.data, &Sealing::PLAIN, "p").expect("a valid pack");
        assert_eq!(table, moved.entries);
        let mut chunks: Vec<ChunkId> = table.iter().map(|e| e.chunk).collect();
        chunks.sort();
        let mut want: Vec<ChunkId> = plain.entries.iter().map(|e| e.chunk).collect();
        want.sort();
        assert_eq!(chunks, want);
        for e in &table {
            let start = e.offset as usize;
            let frame = &moved.data[start..start + e.frame_len as usize];
            assert_eq!(ChunkId::from(blake3::hash(frame)), e.chunk);
        }

        // One frame has one order only.
        let single = builder(&frames[..1]).seal();
        let kept = seal_avoiding(
            builder(&frames[..1]),
            &HashSet::from([single.id]),
            &Sealing::PLAIN,
        );
        assert_eq!(kept.id, single.id);
    }
}
